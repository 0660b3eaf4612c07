// Helpers for driving the real ComfyUI frontend in Debian's headless Chromium with playwright-core.
// Used by run.mjs (one scenario per process); pytest (test_frontend.py) starts the server and makes
// the assertions on what a scenario reports.

import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.II_CHROMIUM || "/usr/bin/chromium";
// Flags for a machine without a display, GPU or internet (see scripts/setup_browser.sh).
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"];
export const PACK_URL = "/extensions/instruct-identity/";
export const EXTENSIONS = ["InstructIdentity.RegionEditor", "InstructIdentity.CharisScores", "InstructIdentity.DiptychPreview"];

export async function launch() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: run scripts/setup_browser.sh`);
  // launch() gives every run a fresh, empty profile directory of its own
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
}

/** Everything the page reports that could be an error, with where it came from. */
export class Journal {
  constructor(page) {
    this.entries = [];
    page.on("console", (m) => {
      if (m.type() !== "error" && m.type() !== "warning") return;
      const loc = m.location();
      this.entries.push({ kind: `console.${m.type()}`, text: m.text(), url: loc?.url ?? "" });
    });
    page.on("pageerror", (e) => this.entries.push({ kind: "pageerror", text: `${e.name}: ${e.message}`, url: "", stack: e.stack ?? "" }));
    page.on("requestfailed", async (r) => {
      // Chromium reports a fetch whose body nobody read as "aborted" even after a 200: not a failure
      const response = await r.response().catch(() => null);
      if (response && response.status() < 400) return;
      this.entries.push({ kind: "requestfailed", text: r.failure()?.errorText ?? "", url: r.url() });
    });
    page.on("response", (r) => { if (r.status() >= 400) this.entries.push({ kind: "http", text: String(r.status()), url: r.url() }); });
  }
  mark() { return this.entries.length; }
  since(mark) { return this.entries.slice(mark); }
}

export async function openComfy(browser, url, { width = 1500, height = 950 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
  await context.addInitScript(() => {
    try { localStorage.setItem("vueNodesBannerDismissed", "true"); } catch { /* ignore */ }
  });
  const page = await context.newPage();
  const journal = new Journal(page);
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await waitForApp(page);
  return { context, page, journal };
}

export async function waitForApp(page) {
  await page.waitForFunction((names) => {
    const app = window.comfyAPI?.app?.app;
    if (!app?.graph || !app.canvas || !window.LiteGraph) return false;
    const loaded = new Set((app.extensions ?? []).map((e) => e.name));
    return names.every((n) => loaded.has(n));
  }, EXTENSIONS, { timeout: 120_000, polling: 250 });
  await page.waitForTimeout(800);  // let the first workflow restore settle
}

export async function setTheme(page, palette) {
  const saved = page.waitForResponse((r) => r.url().includes("/api/settings/Comfy.ColorPalette"), { timeout: 10_000 }).catch(() => null);
  await page.evaluate(async (p) => {
    await window.comfyAPI.app.app.extensionManager.setting.set("Comfy.ColorPalette", p);
  }, palette);
  await saved;
  await page.waitForTimeout(300);
}

/** Open a workflow file the way a user does: the Open command and the browser's file chooser. */
export async function openWorkflowFile(page, file) {
  const [chooser] = await Promise.all([
    page.waitForEvent("filechooser", { timeout: 15_000 }),
    page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute("Comfy.OpenWorkflow")),
  ]);
  await chooser.setFiles(file);
  await page.waitForFunction(() => (window.comfyAPI.app.app.graph?.nodes?.length ?? 0) > 0, null, { timeout: 30_000 });
  await page.waitForTimeout(1200);
}

/** Nodes whose type the frontend does not know, and the text of any dialog that is open. */
export async function graphProblems(page) {
  return page.evaluate(() => {
    const { app } = window.comfyAPI.app;
    const missing = app.graph.nodes
      .filter((n) => !window.LiteGraph.registered_node_types[n.type] || n.has_errors)
      .map((n) => `${n.id}:${n.type}`);
    const dialogs = [...document.querySelectorAll(".p-dialog")].filter((d) => d.offsetParent !== null)
      .map((d) => d.innerText.slice(0, 500));
    return { missing, dialogs, nodes: app.graph.nodes.length };
  });
}

export async function fitView(page) {
  await page.evaluate(() => {
    const { app } = window.comfyAPI.app;
    app.canvas.deselectAll?.();
    app.canvas.fitViewToSelectionAnimated({ duration: 1 });
  });
  await page.waitForTimeout(400);
}

/** Put graph point (x, y) at screen point (sx, sy) at the given zoom. */
export async function placeView(page, { x, y, sx = 80, sy = 90, scale = 1 }) {
  await page.evaluate(({ x, y, sx, sy, scale }) => {
    const { app } = window.comfyAPI.app;
    const rect = app.canvas.canvas.getBoundingClientRect();
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset[0] = (sx - rect.left) / scale - x;
    app.canvas.ds.offset[1] = (sy - rect.top) / scale - y;
    app.canvas.setDirty(true, true);
  }, { x, y, sx, sy, scale });
  await page.waitForTimeout(400);
}

/** Screenshot of a node (title bar included), padded. */
export async function shootNode(page, nodeId, file, pad = 12) {
  const box = await page.evaluate((id) => {
    const { app } = window.comfyAPI.app;
    const node = app.graph.getNodeById(id);
    const rect = app.canvas.canvas.getBoundingClientRect();
    const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - window.LiteGraph.NODE_TITLE_HEIGHT]);
    const s = app.canvas.ds.scale;
    return { x: rect.left + x, y: rect.top + y, w: node.size[0] * s, h: (node.size[1] + window.LiteGraph.NODE_TITLE_HEIGHT) * s };
  }, nodeId);
  const vp = page.viewportSize();
  const clip = { x: Math.max(0, box.x - pad), y: Math.max(0, box.y - pad) };
  clip.width = Math.min(vp.width - clip.x, box.w + 2 * pad);
  clip.height = Math.min(vp.height - clip.y, box.h + 2 * pad);
  await shoot(page, file, { clip });
}

export async function shoot(page, file, options = {}) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await page.screenshot({ path: file, ...options });
}

/**
 * Build a graph from a compact spec:
 *   [{id, type, pos: [x, y], size?: [w, h], title?, widgets: {name: value}, inputs: {name: [srcId, slot]}}]
 * where slot is an output index, name or type.
 * Returns nothing; node ids are the spec's ids.
 */
export async function buildGraph(page, spec) {
  await page.evaluate((spec) => {
    const { app } = window.comfyAPI.app;
    app.graph.clear();
    const made = {};
    for (const s of spec) {
      const node = window.LiteGraph.createNode(s.type);
      if (!node) throw new Error(`node type ${s.type} is not registered in the frontend`);
      node.id = s.id;
      node.pos = s.pos ?? [0, 0];
      if (s.title) node.title = s.title;
      app.graph.add(node);
      if (s.size) node.setSize(s.size);
      for (const [name, value] of Object.entries(s.widgets ?? {})) {
        const w = node.widgets?.find((x) => x.name === name);
        if (!w) throw new Error(`${s.type} has no widget ${name}`);
        w.value = value;
        w.callback?.(value);
      }
      made[s.id] = node;
    }
    for (const s of spec) {
      for (const [name, [src, slot]] of Object.entries(s.inputs ?? {})) {
        const target = made[s.id];
        const idx = target.inputs.findIndex((i) => i.name === name);
        if (idx < 0) throw new Error(`${s.type} has no input ${name}`);
        const source = made[src];
        const out = typeof slot === "number" ? slot : source.outputs.findIndex((o) => o.name === slot || o.type === slot);
        if (out < 0) throw new Error(`${source.type} has no output ${slot}`);
        source.connect(out, target, idx);
      }
    }
    app.canvas.setDirty(true, true);
  }, spec);
  await page.waitForTimeout(500);
}

/** Click the Run button, return the JSON body the frontend POSTed to /api/prompt and its reply. */
export async function clickRun(page) {
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.url().endsWith("/api/prompt") && r.method() === "POST", { timeout: 30_000 }),
    page.getByRole("button", { name: "Run", exact: true }).first().click(),
  ]);
  const response = await request.response();
  return { body: request.postDataJSON(), reply: response ? await response.json() : null, status: response?.status() ?? 0 };
}

/** The /history entry of a prompt once it has finished (polled from Node, not from the page). */
export async function waitForPrompt(baseUrl, promptId, timeout = 300_000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const h = await (await fetch(`${baseUrl}/api/history/${promptId}`)).json();
    const st = h[promptId]?.status;
    if (st && (st.completed || st.status_str === "error")) return h[promptId];
    await new Promise((r) => setTimeout(r, 400));
  }
  throw new Error(`prompt ${promptId} did not finish in ${timeout / 1000}s`);
}
