// The built-in demo in the real ComfyUI frontend: open the template from the template browser's
// list (the pack's first entry of /api/workflow_templates), press Run, wait for the picture, screenshot.
//
//   node tests/demo/frontend_demo.mjs <args.json>      args: {url, out, screenshot}
//
// Uses the browser helpers of tests/frontend (Debian's Chromium + playwright-core: scripts/setup_browser.sh).
// Writes {ok, observed | error} to args.out; tests/demo/test_demo_frontend.py makes the assertions.

import fs from "node:fs";
import path from "node:path";
import { clickRun, fitView, launch, openComfy, shoot, waitForPrompt } from "../frontend/comfy.mjs";

const args = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const result = { ok: false };
let browser, ctx;
try {
  browser = await launch();
  ctx = await openComfy(browser, args.url, { width: 1600, height: 900 });
  const { page } = ctx;
  // what the template browser offers for this pack, and the first template loaded the way it does
  const listing = await (await fetch(`${args.url}/api/workflow_templates`)).json();
  const [pack, names] = Object.entries(listing).find(([, v]) => v.includes("instruct_identity_demo_cpu"));
  const first = names[0];
  const graph = await (await fetch(`${args.url}/api/workflow_templates/${pack}/${first}.json`)).json();
  await page.evaluate(async ([g, name]) => {
    await window.comfyAPI.app.app.loadGraphData(g, true, true, name, { openSource: "template" });
  }, [graph, first]);
  await page.waitForTimeout(1000);
  const problems = await page.evaluate(() => window.comfyAPI.app.app.graph.nodes
    .filter((n) => !window.LiteGraph.registered_node_types[n.type]).map((n) => n.type));
  const run = await clickRun(page);
  const entry = await waitForPrompt(args.url, run.reply.prompt_id, 240_000);
  // wait until the Save Image node shows the picture, then frame the graph
  await page.waitForFunction(() => window.comfyAPI.app.app.graph.nodes.some(
    (n) => n.type === "SaveImage" && (n.imgs?.length ?? 0) > 0 && n.imgs[0].complete), null, { timeout: 60_000 });
  await fitView(page);
  await page.waitForTimeout(800);
  if (args.screenshot) await shoot(page, args.screenshot);
  result.observed = { pack, first, missing: problems, status: entry.status?.status_str, outputs: entry.outputs,
    posted_nodes: Object.keys(run.body.prompt).length, journal: ctx.journal.entries };
  result.ok = true;
} catch (e) {
  result.error = `${e?.name ?? "Error"}: ${e?.message ?? e}`;
  result.stack = e?.stack ?? "";
  if (ctx?.page && args.screenshot) {
    try { await ctx.page.screenshot({ path: args.screenshot.replace(/\.png$/, "-failure.png") }); } catch { /* gone */ }
  }
} finally {
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(args.out, JSON.stringify(result, null, 1));
  await browser?.close().catch(() => {});
}
process.exit(result.ok ? 0 : 1);
