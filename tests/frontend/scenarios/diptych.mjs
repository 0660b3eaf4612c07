// The diptych preview on the Reference node, before anything runs: open a workflow, then for each
// case set the node's widgets and read what the preview computed and painted.
import { openWorkflowFile, placeView, setTheme, shootNode } from "../comfy.mjs";

export default async function ({ page, journal, shot }, { workflow, image, cases }) {
  const mark = journal.mark();
  await openWorkflowFile(page, workflow);
  const refId = await page.evaluate((image) => {
    const { app } = window.comfyAPI.app;
    // the reference picture: choose it in the Load Image node's list
    const loader = app.graph.nodes.find((n) => n.type === "LoadImage");
    const w = loader.widgets.find((x) => x.name === "image");
    w.value = image;
    w.callback?.(image);
    const node = app.graph.nodes.find((n) => n.type === "InstructIdentityReference");
    // room for the preview: grow the node and move whatever sits below it
    const below = app.graph.nodes.filter((n) => n !== node && n.pos[1] > node.pos[1] + 40 && Math.abs(n.pos[0] - node.pos[0]) < 200);
    node.setSize([node.size[0], Math.max(node.size[1], 520)]);
    for (const n of below) n.pos[1] = Math.max(n.pos[1], node.pos[1] + node.size[1] + 60);
    app.canvas.setDirty(true, true);
    return node.id;
  }, image);
  const pos = await page.evaluate((id) => [...window.comfyAPI.app.app.graph.getNodeById(id).pos], refId);
  await placeView(page, { x: pos[0] - 420, y: pos[1] - 60, sx: 60, sy: 80, scale: 1 });
  await page.waitForFunction(() => !!document.querySelector("[data-ii-role=diptych]")?.dataset.iiReference, null, { timeout: 15_000 });

  const results = [];
  for (const [i, c] of cases.entries()) {
    await page.evaluate(({ id, c }) => {
      const node = window.comfyAPI.app.app.graph.getNodeById(id);
      for (const [name, value] of Object.entries(c)) {
        if (name === "label") continue;
        const w = node.widgets.find((x) => x.name === name);
        w.value = value;
        w.callback?.(value);
      }
      window.comfyAPI.app.app.canvas.setDirty(true, true);
    }, { id: refId, c });
    await page.waitForTimeout(500);
    const seen = await page.evaluate(() => {
      const root = document.querySelector("[data-ii-role=diptych]");
      const canvas = root.querySelector("canvas");
      const ctx = canvas.getContext("2d");
      const [tw, th] = [Number(root.dataset.iiTargetWidth), Number(root.dataset.iiTargetHeight)];
      const place = root.dataset.iiPlace ? root.dataset.iiPlace.split(",").map(Number) : null;
      // colours at a few points (in target-frame pixels), read back from the painted canvas
      const k = canvas.width / (2 * tw);
      const px = (x, y) => [...ctx.getImageData(Math.floor(x * k), Math.floor(y * k), 1, 1).data].slice(0, 3);
      const samples = { target: px(tw / 2, th / 2) };
      if (place) {
        samples.image = px(tw + place[0] + place[2] / 2, place[1] + place[3] / 2);
        if (place[0] > 8) samples.pad = px(tw + place[0] / 2, th / 2);
        if (place[1] > 8) samples.pad = px(tw + tw / 2, place[1] / 2);
      }
      return { ...root.dataset, caption: root.querySelector("[data-ii-role=diptych-caption]").textContent,
        canvas: [canvas.width, canvas.height], samples };
    });
    const png = shot(`diptych-${c.label ?? i}.png`);
    await shootNode(page, refId, png);
    results.push({ case: c, seen, screenshot: png });
  }
  await setTheme(page, "light");
  await shootNode(page, refId, shot("diptych-light.png"));
  await setTheme(page, "dark");
  return { cases: results, journal: journal.since(mark) };
}
