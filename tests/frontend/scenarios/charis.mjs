// CHARIS on the nodes after a real run: build the graph, press Run, wait for the prompt, and read
// the bars, the verdicts and the filter summary back from the page.
import { buildGraph, clickRun, placeView, setTheme, shoot, shootNode, waitForPrompt } from "../comfy.mjs";

const FULL_KEYS = ["charis_report", "charis_json", "report"];

/** What the CHARIS widgets of a node show, read from the DOM. */
export async function readCharis(page, nodeId) {
  return page.evaluate((id) => {
    const node = window.comfyAPI.app.app.graph.getNodeById(id);
    const root = node?.ii_charisRoot;
    if (!root) return null;
    const items = [...root.querySelectorAll(":scope > .ii-item, :scope details .ii-item")].map((item) => ({
      bars: [...item.querySelectorAll("[data-ii-axis]")].map((r) => ({
        axis: r.dataset.iiAxis, value: r.dataset.iiValue === "" ? null : Number(r.dataset.iiValue),
        shown: r.querySelector(".ii-val").textContent, width: r.querySelector(".ii-fill")?.style.width ?? null,
        title: r.title })),
      notes: [...item.querySelectorAll(".ii-note")].map((n) => n.textContent),
      verdicts: [...item.querySelectorAll("[data-ii-role=verdict-text]")].map((v) => v.textContent),
      verdictHTML: [...item.querySelectorAll("[data-ii-role=verdict-text]")].map((v) => v.innerHTML),
      status: item.querySelector(".ii-pass, .ii-fail")?.textContent ?? null,
    }));
    const summary = root.querySelector("[data-ii-role=filter-summary]");
    return {
      items,
      summary: summary ? { text: summary.textContent, passed: Number(summary.dataset.iiPassed), total: Number(summary.dataset.iiTotal) } : null,
      reasons: [...root.querySelectorAll("[data-ii-role=filter-reasons] li")].map((li) => li.textContent),
      images: root.querySelectorAll("img, script, iframe, svg").length,
      text: root.textContent,
      xss: window.__iiXss ?? null,
    };
  }, nodeId);
}

/** Open every <details> in the node's CHARIS widget (a real click on each summary). */
export async function expandAll(page, nodeId) {
  const handles = await page.evaluateHandle((id) => {
    const root = window.comfyAPI.app.app.graph.getNodeById(id).ii_charisRoot;
    return [...root.querySelectorAll("details:not([open]) > summary")];
  }, nodeId);
  const count = await handles.evaluate((a) => a.length);
  for (let i = 0; i < count; i++) {
    const el = await handles.evaluateHandle((a, j) => a[j], i);
    await el.asElement().scrollIntoViewIfNeeded();
    await el.asElement().click();
  }
  await page.waitForTimeout(300);
  return count;
}

export default async function ({ page, journal, shot, url }, { graph, score, filter, reportNode, view }) {
  const mark = journal.mark();
  await buildGraph(page, graph);
  await placeView(page, view);
  const before = { score: await readCharis(page, score), filter: filter ? await readCharis(page, filter) : null };
  const queued = await clickRun(page);
  const promptId = queued.reply?.prompt_id;
  if (!promptId) throw new Error(`the server refused the prompt: ${JSON.stringify(queued.reply)}`);
  const history = await waitForPrompt(url, promptId, 300_000);
  await page.waitForFunction((ids) => ids.every((id) => window.comfyAPI.app.app.graph.getNodeById(id)?.ii_charisRoot?.querySelector("[data-ii-axis], [data-ii-role=filter-summary]")),
    [score, filter].filter(Boolean), { timeout: 20_000 }).catch(() => {});
  await page.waitForTimeout(500);
  const after = { score: await readCharis(page, score), filter: filter ? await readCharis(page, filter) : null };
  await shoot(page, shot("charis-graph.png"));
  await shootNode(page, score, shot("charis-score.png"));
  if (filter) await shootNode(page, filter, shot("charis-filter.png"));

  // Per-attribute verdicts need the full results in the Score node's ui output. Where the node does
  // not send them (yet), the same run's report (its "report" output, shown by a Preview Any node) is
  // delivered to the Score node through the frontend's own 'executed' event, as the node would.
  const ui = history.outputs?.[String(score)] ?? {};
  let delivered = FULL_KEYS.some((k) => k in ui) ? "ui" : null;
  const report = reportNode ? history.outputs?.[String(reportNode)]?.text?.[0] : null;
  if (!delivered && report) {
    await page.evaluate(({ score, output, promptId }) => {
      window.comfyAPI.api.api.dispatchCustomEvent("executed", { node: String(score), display_node: String(score), output, prompt_id: promptId });
    }, { score, output: { ...ui, charis_report: [report] }, promptId });
    await page.waitForTimeout(400);
    delivered = "executed-event";
  }
  const opened = await expandAll(page, score);
  const expanded = await readCharis(page, score);
  if (opened) await shootNode(page, score, shot("charis-score-verdicts.png"));

  // the same widgets in the light palette
  const dark = await page.evaluate((id) => getComputedStyle(window.comfyAPI.app.app.graph.getNodeById(id).ii_charisRoot).color, score);
  await setTheme(page, "light");
  await page.waitForTimeout(500);
  const light = await page.evaluate((id) => getComputedStyle(window.comfyAPI.app.app.graph.getNodeById(id).ii_charisRoot).color, score);
  await shootNode(page, score, shot("charis-score-verdicts-light.png"));
  if (filter) await shootNode(page, filter, shot("charis-filter-light.png"));
  await setTheme(page, "dark");
  const styles = await page.evaluate(() => {
    const sheet = document.getElementById("instruct-identity-styles")?.sheet;
    return sheet ? [...sheet.cssRules].map((r) => r.selectorText ?? r.cssText) : null;
  });
  return { before, after, expanded, opened, delivered, promptId, history, textColor: { dark, light }, styles,
    journal: journal.since(mark) };
}
