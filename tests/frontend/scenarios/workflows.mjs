// Load each workflow file through the Open command and report what the frontend complained about.
import path from "node:path";
import { fitView, graphProblems, openWorkflowFile, shoot } from "../comfy.mjs";

export default async function ({ page, journal, shot }, { workflows }) {
  const boot = journal.since(0);
  const results = [];
  for (const file of workflows) {
    const mark = journal.mark();
    await openWorkflowFile(page, file);
    const problems = await graphProblems(page);
    await fitView(page);
    const png = shot(`workflow-${path.basename(file, ".json")}.png`);
    await shoot(page, png);
    results.push({ file, ...problems, journal: journal.since(mark), screenshot: png });
  }
  return { boot, workflows: results };
}
