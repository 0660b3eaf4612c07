// The preview with several references: open the multi-view template, give every Load Image the
// reference picture, and read what the preview shows (panels, sizes, colours) before anything runs.
import { openWorkflowFile, placeView, shootNode } from "../comfy.mjs";

export default async function ({ page, journal, shot }, { workflow, image }) {
  const mark = journal.mark();
  await openWorkflowFile(page, workflow);
  const refId = await page.evaluate((image) => {
    const { app } = window.comfyAPI.app;
    for (const loader of app.graph.nodes.filter((n) => n.type === "LoadImage")) {
      const w = loader.widgets.find((x) => x.name === "image");
      w.value = image;
      w.callback?.(image);
    }
    const node = app.graph.nodes.find((n) => n.type === "InstructIdentityReference");
    node.setSize([Math.max(node.size[0], 600), Math.max(node.size[1], 560)]);
    const strength = app.graph.nodes.find((n) => n.type === "InstructIdentityAddReference").widgets.find((w) => w.name === "strength");
    strength.value = 1.5;
    strength.callback?.(1.5);
    app.canvas.setDirty(true, true);
    return node.id;
  }, image);
  const pos = await page.evaluate((id) => [...window.comfyAPI.app.app.graph.getNodeById(id).pos], refId);
  await placeView(page, { x: pos[0] - 420, y: pos[1] - 60, sx: 60, sy: 80, scale: 1 });
  await page.waitForFunction(() => document.querySelector("[data-ii-role=diptych]")?.dataset.iiReferences === "3"
    && !!document.querySelector("[data-ii-role=diptych]")?.dataset.iiReference, null, { timeout: 15_000 });
  await page.waitForTimeout(800);
  const seen = await page.evaluate(() => {
    const root = document.querySelector("[data-ii-role=diptych]");
    const canvas = root.querySelector("canvas");
    const ctx = canvas.getContext("2d");
    const [tw, th] = [Number(root.dataset.iiTargetWidth), Number(root.dataset.iiTargetHeight)];
    const k = canvas.width / (4 * tw);
    const px = (x, y) => [...ctx.getImageData(Math.floor(x * k), Math.floor(y * k), 1, 1).data].slice(0, 3);
    return { ...root.dataset, caption: root.querySelector("[data-ii-role=diptych-caption]").textContent,
      canvas: [canvas.width, canvas.height],
      centres: [0, 1, 2, 3].map((i) => px(i * tw + tw / 2, th / 2)) };
  });
  const png = shot("diptych-multi.png");
  await shootNode(page, refId, png);
  return { seen, screenshot: png, journal: journal.since(mark) };
}
