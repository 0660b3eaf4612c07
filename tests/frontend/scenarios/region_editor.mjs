// The region editor, with the mouse and keyboard only: grid preset, draw two regions, type their
// prompts, draw a third one and move, resize and delete it; save the workflow (Ctrl+S and the
// filename prompt), reload the page, open the saved file, and queue it with the Run button.
import fs from "node:fs";
import { buildGraph, clickRun, openWorkflowFile, placeView, setTheme, shoot, shootNode, waitForApp, waitForPrompt } from "../comfy.mjs";

const LAYOUT = 1;
const PREVIEW = 2;

async function readEditor(page) {
  return page.evaluate((id) => {
    const { app } = window.comfyAPI.app;
    const node = app.graph.getNodeById(id);
    if (!node) return null;
    const root = document.querySelector("[data-ii-role=region-editor]");
    const value = node.widgets.find((w) => w.name === "layout_json").value;
    const rows = [...root.querySelectorAll("[data-ii-role=region-prompt]")].map((i) => i.value);
    return { type: node.type, value, doc: JSON.parse(value), rows,
      widgetsValues: node.serialize().widgets_values, nodeSize: [...node.size] };
  }, LAYOUT);
}

/** Map layout pixels to screen pixels on the editor canvas. */
async function mapper(page) {
  const canvas = page.locator("[data-ii-role=region-canvas]").first();
  const box = await canvas.boundingBox();
  const doc = (await readEditor(page)).doc;
  return (x, y) => [box.x + (x / doc.width) * box.width, box.y + (y / doc.height) * box.height];
}

async function drag(page, from, to) {
  const at = await mapper(page);
  const [x0, y0] = at(...from), [x1, y1] = at(...to);
  await page.mouse.move(x0, y0);
  await page.mouse.down();
  await page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, { steps: 4 });
  await page.mouse.move(x1, y1, { steps: 4 });
  await page.mouse.up();
  await page.waitForTimeout(150);
}

export default async function ({ page, journal, shot, url }, { layoutNode, saveName, steps }) {
  const mark = journal.mark();
  const obs = { steps: {} };
  await buildGraph(page, [
    { id: LAYOUT, type: layoutNode, pos: [0, 0], size: [560, 660] },
    { id: PREVIEW, type: "PreviewImage", pos: [620, 0], size: [440, 330], inputs: { images: [LAYOUT, "IMAGE"] } },
  ]);
  await placeView(page, { x: 0, y: -40, sx: 90, sy: 100, scale: 1 });
  const editor = page.locator("[data-ii-role=region-editor]").first();
  obs.steps.initial = await readEditor(page);

  // canvas size from the toolbar
  const [wInput, hInput] = await editor.locator(".ii-toolbar input[type=number]").all();
  await wInput.fill(String(steps.width));
  await wInput.press("Enter");
  await hInput.fill(String(steps.height));
  await hInput.press("Enter");
  // a grid preset, then start over
  await editor.locator("select").selectOption(steps.preset);
  obs.steps.preset = await readEditor(page);
  await shootNode(page, LAYOUT, shot("region-editor-grid-preset.png"));
  await editor.getByRole("button", { name: "Clear" }).click();
  obs.steps.cleared = await readEditor(page);

  // two regions drawn with the mouse, prompts typed
  const [a, b] = steps.regions;
  await drag(page, [a.x + 1, a.y + 1], [a.x + a.w + 1, a.y + a.h + 1]);
  await page.keyboard.type(a.prompt);          // the new region's prompt field has the focus
  await drag(page, [b.x + 1, b.y + 1], [b.x + b.w + 1, b.y + b.h + 1]);
  await editor.locator("[data-ii-role=region-prompt]").nth(1).click();
  await page.keyboard.type(b.prompt);
  obs.steps.drawn = await readEditor(page);
  await shootNode(page, LAYOUT, shot("region-editor-two-regions.png"));
  await setTheme(page, "light");
  await shootNode(page, LAYOUT, shot("region-editor-two-regions-light.png"));
  await setTheme(page, "dark");

  // a third one: move it, resize it from its bottom edge, delete it with the Delete key
  const c = steps.third;
  await drag(page, [c.x + 1, c.y + 1], [c.x + c.w + 1, c.y + c.h + 1]);
  obs.steps.third = await readEditor(page);
  await drag(page, [c.x + c.w / 2, c.y + c.h / 2], [c.x + c.w / 2 + c.move[0], c.y + c.h / 2 + c.move[1]]);
  obs.steps.moved = await readEditor(page);
  const m = obs.steps.moved.doc.regions[2];
  await drag(page, [m.x + m.w / 2, m.y + m.h], [m.x + m.w / 2, m.y + m.h + c.grow]);
  obs.steps.resized = await readEditor(page);
  await page.keyboard.press("Delete");
  await page.waitForTimeout(200);
  obs.steps.deleted = await readEditor(page);
  obs.nodesAfterDelete = await page.evaluate(() => window.comfyAPI.app.app.graph.nodes.length);
  // the JSON view: the raw widget, two-way
  const original = obs.steps.deleted.value;
  await editor.getByRole("button", { name: "JSON" }).click();
  await page.evaluate((id) => window.comfyAPI.app.app.graph.getNodeById(id).widgets
    .find((w) => w.name === "layout_json").element.setAttribute("data-test", "layout-json"), LAYOUT);
  const textarea = page.locator("textarea[data-test=layout-json]");
  await textarea.waitFor({ state: "visible", timeout: 5_000 });
  const edited = JSON.parse(original);
  edited.regions[1].prompt = "changed in the JSON view";
  await textarea.fill(JSON.stringify(edited, null, 1));
  await page.waitForTimeout(300);
  obs.steps.jsonEdited = await readEditor(page);
  await textarea.fill(original);
  await page.waitForTimeout(300);
  await editor.getByRole("button", { name: "JSON" }).click();
  await page.waitForTimeout(300);
  obs.steps.jsonRestored = await readEditor(page);
  obs.jsonHiddenAgain = !(await textarea.isVisible());

  // the wheel over the editor zooms the graph, as over ComfyUI's own widgets
  const box = await page.locator("[data-ii-role=region-canvas]").first().boundingBox();
  const scale = () => page.evaluate(() => window.comfyAPI.app.app.canvas.ds.scale);
  obs.wheel = { before: await scale() };
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.wheel(0, -240);
  await page.waitForTimeout(300);
  obs.wheel.after = await scale();
  obs.steps.afterWheel = await readEditor(page);
  await placeView(page, { x: 0, y: -40, sx: 90, sy: 100, scale: 1 });
  await shoot(page, shot("region-editor-graph.png"));

  // save through the UI: Ctrl+S asks for a file name
  await page.mouse.click(page.viewportSize().width - 60, page.viewportSize().height - 160);
  await page.keyboard.press("Control+s");
  const nameInput = page.locator(".p-dialog input").first();
  await nameInput.waitFor({ timeout: 10_000 });
  await nameInput.fill(saveName);
  await nameInput.press("Enter");
  const savedUrl = `${url}/api/userdata/${encodeURIComponent(`workflows/${saveName}.json`)}`;
  let saved = null;
  for (let i = 0; i < 50 && !saved; i++) {
    const r = await fetch(savedUrl);
    if (r.ok) saved = await r.text(); else await page.waitForTimeout(200);
  }
  if (!saved) throw new Error(`the workflow was not saved to ${savedUrl}`);
  obs.savedFile = JSON.parse(saved);

  // reload: the frontend restores the open workflow
  await page.reload({ waitUntil: "domcontentloaded" });
  await waitForApp(page);
  await placeView(page, { x: 0, y: -40, sx: 90, sy: 100, scale: 1 });
  obs.steps.reloaded = await readEditor(page);
  await shootNode(page, LAYOUT, shot("region-editor-after-reload.png"));

  // and the saved file, opened from disk into an empty graph
  const local = shot(`${saveName}.json`);
  fs.writeFileSync(local, saved);
  await page.evaluate(() => window.comfyAPI.app.app.graph.clear());
  await openWorkflowFile(page, local);
  await placeView(page, { x: 0, y: -40, sx: 90, sy: 100, scale: 1 });
  obs.steps.opened = await readEditor(page);

  // queue it with the Run button; the backend's preview shows the regions it parsed
  obs.queued = await clickRun(page);
  const promptId = obs.queued.reply?.prompt_id;
  if (!promptId) throw new Error(`the server refused the prompt: ${JSON.stringify(obs.queued.reply)}`);
  obs.history = await waitForPrompt(url, promptId, 120_000);
  await page.waitForTimeout(800);
  await placeView(page, { x: 0, y: -40, sx: 90, sy: 100, scale: 0.8 });
  await shoot(page, shot("region-editor-queued.png"));
  obs.journal = journal.since(mark);
  return obs;
}
