// Region editor for Instruct Identity layout nodes.
//
// Any node with a STRING input named `layout_json` (Region Layout from JSON, and any later layout
// node that stores its regions the same way) gets a canvas at the layout's aspect ratio on which the
// artist draws, moves, resizes and deletes rectangles, a prompt field per region, grid presets, and
// snapping to the 16 px latent grid. The layout itself stays in the `layout_json` widget (hidden
// behind a "JSON" toggle), so it saves with the workflow, reloads exactly and reaches the backend in
// the queued prompt unchanged. JSON form (core/regions.py RegionLayout.to_dict):
//   {"version": 1, "width": W, "height": H, "regions": [{"x", "y", "w", "h", "prompt", ...}],
//    "background": "...", "grid": {"rows", "cols", "gutter"}}
// Keys the editor does not know (caption, color, mask_rle, ...) are kept as they are.

import { app } from "../../scripts/app.js";
import { ensureStyles, el, forwardWheel, regionColor, themeColor, themeKey } from "./ii_dom.js";

const EXT = "InstructIdentity.RegionEditor";
const WIDGET = "layout_json";
export const SNAP = 16;          // FLUX: 8x VAE downscale x 2x2 patches = one image token
const MIN_SIDE = 64;
const MAX_SIDE = 8192;
const PRESETS = [[1, 2], [1, 3], [1, 4], [2, 2], [2, 3], [2, 4], [3, 3], [3, 4], [4, 4]];

const snap = (v) => Math.round(v / SNAP) * SNAP;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

// ------------------------------------------------------------------------------------------------
// Layout document (pure functions; exported for reuse)

export function parseLayout(text) {
  let data = JSON.parse(String(text ?? "").trim() || "{}");
  if (Array.isArray(data)) data = { regions: data };
  if (!data || typeof data !== "object") throw new Error("the layout is not a JSON object");
  if (data.regions === undefined) data.regions = [];
  if (!Array.isArray(data.regions)) throw new Error("'regions' must be a list");
  data.regions.forEach((r, i) => {
    if (!r || typeof r !== "object") throw new Error(`region ${i + 1} is not an object`);
    for (const k of ["x", "y", "w", "h"]) {
      const v = Number(r[k]);
      if (!Number.isFinite(v)) throw new Error(`region ${i + 1} needs a numeric ${k}`);
      r[k] = Math.round(v);
    }
    if (r.prompt === undefined || r.prompt === null) r.prompt = "";
    r.prompt = String(r.prompt);
  });
  const extent = (k, s) => Math.max(0, ...data.regions.map((r) => r[k] + r[s]));
  data.width = Math.round(Number(data.width ?? extent("x", "w")) || 1024);
  data.height = Math.round(Number(data.height ?? extent("y", "h")) || 1024);
  return data;
}

export function serializeLayout(doc) {
  return JSON.stringify(doc, null, 1);
}

/** Equal cells on the 16 px grid separated by `gutter`, the grid centred (on the 16 px grid) on the canvas. */
export function gridCells(width, height, rows, cols, gutter) {
  const g = Math.max(0, snap(gutter));
  const cw = Math.floor((width - (cols - 1) * g) / cols / SNAP) * SNAP;
  const ch = Math.floor((height - (rows - 1) * g) / rows / SNAP) * SNAP;
  if (cw < SNAP || ch < SNAP) return null;
  const ox = Math.floor((width - (cols * cw + (cols - 1) * g)) / 2 / SNAP) * SNAP;
  const oy = Math.floor((height - (rows * ch + (rows - 1) * g)) / 2 / SNAP) * SNAP;
  const cells = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) cells.push({ x: ox + c * (cw + g), y: oy + r * (ch + g), w: cw, h: ch, cell: [r, c] });
  }
  return cells;
}

function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

// ------------------------------------------------------------------------------------------------
// The editor

class RegionEditor {
  constructor(node, jsonWidget) {
    this.node = node;
    this.jsonWidget = jsonWidget;
    this.doc = null;
    this.error = null;
    this.lastText = null;
    this.selected = -1;
    this.drag = null;
    this.rows = [];
    this.build();
    this.syncFromWidget(true);
  }

  // ---- DOM ----
  build() {
    ensureStyles();
    const num = (title, min, max, step) => el("input", { attrs: { type: "number", min, max, step, title } });
    this.wInput = num("Canvas width in px (multiple of 16)", MIN_SIDE, MAX_SIDE, SNAP);
    this.hInput = num("Canvas height in px (multiple of 16)", MIN_SIDE, MAX_SIDE, SNAP);
    this.preset = el("select", { attrs: { title: "Start from a grid of rows x columns (keeps the prompts in order)" } },
      [el("option", { text: "Grid…", attrs: { value: "" } }),
        ...PRESETS.map(([r, c]) => el("option", { text: `${r} × ${c}`, attrs: { value: `${r}x${c}` } }))]);
    this.gutter = num("Gap between grid cells in px (multiple of 16)", 0, 512, SNAP);
    this.gutter.value = "16";
    this.clearBtn = el("button", { text: "Clear", attrs: { title: "Remove every region" } });
    this.jsonBtn = el("button", { text: "JSON", attrs: { title: "Show or hide the layout as JSON text" } });
    this.toolbar = el("div", { cls: "ii-toolbar" }, [
      el("label", { text: "W" }, [this.wInput]), el("label", { text: "H" }, [this.hInput]),
      el("span", { cls: "ii-sep" }), this.preset, el("label", { text: "gap" }, [this.gutter]),
      el("span", { cls: "ii-sep" }), this.clearBtn, this.jsonBtn,
    ]);
    this.canvas = el("canvas", { attrs: { tabindex: "0", "data-ii-role": "region-canvas",
      "aria-label": "Region canvas: drag to draw a region, drag a region to move it, drag its edges to resize, Delete removes it" } });
    this.stage = el("div", { cls: "ii-stage" }, [this.canvas]);
    this.list = el("div", { cls: "ii-list", attrs: { "data-ii-role": "region-list" } });
    this.hint = el("div", { cls: "ii-hint ii-muted" });
    this.root = el("div", { cls: "ii-root ii-region-editor", attrs: { "data-ii-role": "region-editor" } },
      [this.toolbar, this.stage, this.list, this.hint]);

    this.wInput.addEventListener("change", () => this.resizeCanvas());
    this.hInput.addEventListener("change", () => this.resizeCanvas());
    this.preset.addEventListener("change", () => {
      const [r, c] = this.preset.value.split("x").map(Number);
      this.preset.value = "";
      if (r && c) this.applyGrid(r, c, Number(this.gutter.value) || 0);
    });
    this.clearBtn.addEventListener("click", () => this.edit(() => { this.doc.regions = []; delete this.doc.grid; this.selected = -1; }));
    this.jsonBtn.addEventListener("click", () => {
      this.jsonWidget.hidden = !this.jsonWidget.hidden;
      this.node.setSize([this.node.size[0], Math.max(this.node.size[1], this.node.computeSize()[1])]);
      this.node.setDirtyCanvas(true, true);
    });
    for (const input of [this.wInput, this.hInput, this.gutter]) this.guardKeys(input);

    this.canvas.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onPointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onPointerUp(e));
    this.canvas.addEventListener("pointercancel", (e) => this.onPointerUp(e));
    this.canvas.addEventListener("keydown", (e) => this.onKey(e));
    this.resizeObserver = new ResizeObserver(() => this.draw());
    this.resizeObserver.observe(this.root);
  }

  /** Keep typing in our inputs from reaching ComfyUI's canvas shortcuts (Delete removes nodes). */
  guardKeys(input) {
    input.addEventListener("keydown", (e) => {
      if (!(e.ctrlKey || e.metaKey || e.altKey)) e.stopPropagation();
    });
  }

  get readOnly() {
    const slot = this.node.inputs?.find((i) => i.widget?.name === WIDGET);
    return slot?.link != null;
  }

  // ---- value <-> document ----
  syncFromWidget(force = false) {
    const text = String(this.jsonWidget.value ?? "");
    const theme = themeKey();
    if (theme !== this.lastTheme) { this.lastTheme = theme; if (!force && text === this.lastText) this.draw(); }
    if (!force && text === this.lastText) return;
    this.lastText = text;
    try {
      this.doc = parseLayout(text);
      this.error = null;
    } catch (e) {
      this.doc = null;
      this.error = e.message;
    }
    if (this.selected >= (this.doc?.regions.length ?? 0)) this.selected = -1;
    this.render();
  }

  commit() {
    const text = serializeLayout(this.doc);
    this.lastText = text;
    this.jsonWidget.value = text;           // the DOM widget's setter also runs its callback
    this.node.graph?.setDirtyCanvas?.(true, true);
  }

  /** Apply a change to the document, write it to the widget and redraw. */
  edit(fn, { list = true } = {}) {
    if (!this.doc || this.readOnly) return;
    fn();
    this.commit();
    if (list) this.render(); else this.draw();
  }

  resizeCanvas() {
    if (!this.doc) return;
    const W = clamp(snap(Number(this.wInput.value) || this.doc.width), MIN_SIDE, MAX_SIDE);
    const H = clamp(snap(Number(this.hInput.value) || this.doc.height), MIN_SIDE, MAX_SIDE);
    if (W === this.doc.width && H === this.doc.height) { this.render(); return; }
    if (this.doc.regions.some((r) => r.mask_rle)) {
      this.flash("This layout has mask regions (mask_rle) made at its size; make it again at the new size instead.");
      this.render();
      return;
    }
    this.edit(() => {
      const sx = W / this.doc.width, sy = H / this.doc.height;
      for (const r of this.doc.regions) {
        const x0 = clamp(snap(r.x * sx), 0, W), y0 = clamp(snap(r.y * sy), 0, H);
        const x1 = clamp(snap((r.x + r.w) * sx), 0, W), y1 = clamp(snap((r.y + r.h) * sy), 0, H);
        Object.assign(r, { x: x0, y: y0, w: Math.max(SNAP, x1 - x0), h: Math.max(SNAP, y1 - y0) });
      }
      this.doc.width = W;
      this.doc.height = H;
      if (this.doc.grid) {
        const cells = gridCells(W, H, this.doc.grid.rows, this.doc.grid.cols, this.doc.grid.gutter ?? 0);
        if (cells && cells.length === this.doc.regions.length) cells.forEach((c, i) => Object.assign(this.doc.regions[i], c));
        else delete this.doc.grid;
      }
    });
  }

  applyGrid(rows, cols, gutter) {
    if (!this.doc) return;
    const cells = gridCells(this.doc.width, this.doc.height, rows, cols, gutter);
    if (!cells) { this.flash(`A ${this.doc.width}×${this.doc.height} canvas has no room for ${rows}×${cols} cells with a ${gutter} px gap.`); return; }
    this.edit(() => {
      const old = this.doc.regions;
      this.doc.regions = cells.map((c, i) => {
        const keep = old[i] ? { ...old[i] } : { prompt: "" };
        delete keep.mask_rle;
        return { ...keep, x: c.x, y: c.y, w: c.w, h: c.h, prompt: keep.prompt ?? "", cell: c.cell };
      });
      this.doc.grid = { rows, cols, gutter: Math.max(0, snap(gutter)) };
      this.selected = -1;
    });
  }

  /** Geometry was edited by hand: the layout is no longer a pure grid. */
  ungrid(region) {
    delete this.doc.grid;
    if (region) { delete region.cell; delete region.mask_rle; }
  }

  flash(message) {
    this.flashMessage = message;
    this.renderHint();
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => { this.flashMessage = null; this.renderHint(); }, 5000);
  }

  // ---- rendering ----
  render() {
    if (this.doc) {
      if (document.activeElement !== this.wInput) this.wInput.value = String(this.doc.width);
      if (document.activeElement !== this.hInput) this.hInput.value = String(this.doc.height);
    }
    const disabled = !this.doc || this.readOnly;
    for (const c of [this.wInput, this.hInput, this.preset, this.gutter, this.clearBtn]) c.disabled = disabled;
    this.renderList();
    this.renderHint();
    this.draw();
  }

  renderList() {
    const regions = this.doc?.regions ?? [];
    // Rebuild only when the number of rows changes, so typing keeps its focus and caret.
    if (this.rows.length !== regions.length + (this.doc ? 1 : 0)) {
      this.list.replaceChildren();
      this.rows = [];
      regions.forEach((_, i) => this.rows.push(this.makeRow(i)));
      if (this.doc) this.rows.push(this.makeBackgroundRow());
      for (const row of this.rows) this.list.appendChild(row.element);
    }
    regions.forEach((r, i) => {
      const row = this.rows[i];
      row.badge.textContent = String(i + 1);
      row.badge.style.background = regionColor(i, regions.length);
      if (document.activeElement !== row.input) row.input.value = r.prompt;
      row.input.disabled = this.readOnly;
      row.remove.disabled = this.readOnly;
      row.geom.textContent = `${r.x},${r.y} ${r.w}×${r.h}`;
      row.element.classList.toggle("ii-selected", i === this.selected);
    });
    if (this.doc) {
      const bg = this.rows[this.rows.length - 1];
      if (document.activeElement !== bg.input) bg.input.value = this.doc.background ?? "";
      bg.input.disabled = this.readOnly;
    }
  }

  makeRow(i) {
    const badge = el("span", { cls: "ii-badge" });
    const input = el("input", { cls: "ii-prompt", attrs: { type: "text", placeholder: `prompt of region ${i + 1}`,
      "data-ii-role": "region-prompt", "data-index": i, spellcheck: "false" } });
    const geom = el("span", { cls: "ii-geom ii-muted" });
    const remove = el("button", { text: "×", attrs: { title: `Delete region ${i + 1}`, "data-ii-role": "region-delete" } });
    const element = el("div", { cls: "ii-row", attrs: { "data-index": i } }, [badge, input, geom, remove]);
    input.addEventListener("input", () => this.edit(() => { this.doc.regions[i].prompt = input.value; }, { list: false }));
    input.addEventListener("focus", () => { this.selected = i; this.renderList(); this.draw(); });
    this.guardKeys(input);
    remove.addEventListener("click", () => this.deleteRegion(i));
    return { element, badge, input, geom, remove };
  }

  makeBackgroundRow() {
    const input = el("input", { cls: "ii-prompt", attrs: { type: "text", "data-ii-role": "background-prompt", spellcheck: "false",
      placeholder: "background prompt (pixels no region covers; optional)" } });
    input.addEventListener("input", () => this.edit(() => {
      if (input.value) this.doc.background = input.value; else delete this.doc.background;
    }, { list: false }));
    this.guardKeys(input);
    const element = el("div", { cls: "ii-row" }, [el("span", { cls: "ii-badge ii-muted", text: "bg", attrs: { title: "background" } }), input]);
    return { element, input };
  }

  renderHint() {
    this.hint.classList.remove("ii-error");
    if (this.error) {
      this.hint.classList.add("ii-error");
      this.hint.textContent = `layout_json is not a valid layout (${this.error}). Fix it in the JSON view.`;
      return;
    }
    if (this.flashMessage) { this.hint.classList.add("ii-error"); this.hint.textContent = this.flashMessage; return; }
    if (this.readOnly) { this.hint.textContent = "The layout comes from a link; disconnect it to edit here."; return; }
    const regions = this.doc?.regions ?? [];
    let overlap = false;
    for (let i = 0; i < regions.length && !overlap; i++) for (let j = i + 1; j < regions.length; j++) if (overlaps(regions[i], regions[j])) { overlap = true; break; }
    const parts = [`${regions.length} region${regions.length === 1 ? "" : "s"}`, `${this.doc?.width ?? "?"}×${this.doc?.height ?? "?"} px`,
      "drag to draw · drag to move · edges resize · Del deletes · snaps to 16 px"];
    if (overlap) parts.splice(2, 0, "overlaps go to the lower number");
    this.hint.textContent = parts.join(" · ");
  }

  /** Canvas CSS size: the layout's aspect ratio in the room the toolbar, list and hint leave. */
  fitCanvas() {
    const W = this.doc?.width ?? 1, H = this.doc?.height ?? 1;
    const gap = 4 * 4;
    const fixed = this.toolbar.offsetHeight + this.list.offsetHeight + this.hint.offsetHeight + gap;
    const aw = Math.max(40, this.root.clientWidth - 2), ah = Math.max(60, this.root.clientHeight - fixed - 2);
    const s = Math.min(aw / W, ah / H);
    const cw = Math.max(20, Math.floor(W * s)), ch = Math.max(20, Math.floor(H * s));
    const dpr = window.devicePixelRatio || 1;
    if (this.canvas.style.width !== `${cw}px`) this.canvas.style.width = `${cw}px`;
    if (this.canvas.style.height !== `${ch}px`) this.canvas.style.height = `${ch}px`;
    if (this.canvas.width !== Math.round(cw * dpr)) this.canvas.width = Math.round(cw * dpr);
    if (this.canvas.height !== Math.round(ch * dpr)) this.canvas.height = Math.round(ch * dpr);
    if (this.stage.style.height !== `${ch + 2}px`) this.stage.style.height = `${ch + 2}px`;
    return { cw, ch, dpr, scale: s };
  }

  draw() {
    const { cw, ch, dpr } = this.fitCanvas();
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const bg = themeColor(this.root, "--comfy-input-bg", "#222");
    const fg = themeColor(this.root, "--fg-color", "#fff");
    const line = themeColor(this.root, "--border-color", "#4e4e4e");
    ctx.fillStyle = bg;
    ctx.fillRect(0, 0, cw, ch);
    if (!this.doc) return;
    const W = this.doc.width, H = this.doc.height, k = cw / W;
    // latent grid: every 16 px when it is at least 6 screen px apart, else every 64 / 256 px
    const step = [SNAP, 64, 256, 1024].find((s) => s * k >= 6) ?? 1024;
    ctx.strokeStyle = line;
    ctx.globalAlpha = 0.45;
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let x = step; x < W; x += step) { ctx.moveTo(Math.round(x * k) + 0.5, 0); ctx.lineTo(Math.round(x * k) + 0.5, ch); }
    for (let y = step; y < H; y += step) { ctx.moveTo(0, Math.round(y * k) + 0.5); ctx.lineTo(cw, Math.round(y * k) + 0.5); }
    ctx.stroke();
    ctx.globalAlpha = 1;

    const regions = this.doc.regions;
    const n = regions.length;
    const shown = regions.map((r, i) => (this.drag && this.drag.index === i && this.drag.rect ? { ...r, ...this.drag.rect } : r));
    // earlier regions win overlaps in the backend, so they are drawn last (on top)
    for (let i = n - 1; i >= 0; i--) {
      const r = shown[i];
      const x = r.x * k, y = r.y * k, w = r.w * k, h = r.h * k;
      ctx.fillStyle = regionColor(i, n, i === this.selected ? 0.5 : 0.32);
      ctx.fillRect(x, y, w, h);
      ctx.strokeStyle = regionColor(i, n, 1);
      ctx.lineWidth = i === this.selected ? 2.5 : 1.5;
      if (r.mask_rle) ctx.setLineDash([4, 3]);
      ctx.strokeRect(x + 0.75, y + 0.75, Math.max(0, w - 1.5), Math.max(0, h - 1.5));
      ctx.setLineDash([]);
      this.drawLabel(ctx, i, n, r, k, fg);
    }
    if (this.selected >= 0 && this.selected < n) {
      const r = shown[this.selected];
      ctx.fillStyle = fg;
      ctx.strokeStyle = bg;
      for (const [hx, hy] of this.handlePoints(r)) {
        ctx.fillRect(hx * k - 3.5, hy * k - 3.5, 7, 7);
        ctx.strokeRect(hx * k - 3.5, hy * k - 3.5, 7, 7);
      }
    }
    if (this.drag?.mode === "new" && this.drag.rect) {
      const r = this.drag.rect;
      ctx.setLineDash([5, 4]);
      ctx.strokeStyle = fg;
      ctx.lineWidth = 1.5;
      ctx.strokeRect(r.x * k, r.y * k, r.w * k, r.h * k);
      ctx.setLineDash([]);
    }
  }

  drawLabel(ctx, i, n, r, k, fg) {
    const x = r.x * k + 4, y = r.y * k + 4, maxW = r.w * k - 8;
    if (maxW < 10 || r.h * k < 16) return;
    ctx.font = "600 11px system-ui, sans-serif";
    const idx = String(i + 1);
    const bw = ctx.measureText(idx).width + 8;
    ctx.fillStyle = regionColor(i, n, 1);
    ctx.fillRect(x, y, bw, 15);
    ctx.fillStyle = "#111";
    ctx.textBaseline = "middle";
    ctx.fillText(idx, x + 4, y + 8);
    const prompt = r.prompt || "(no prompt)";
    ctx.font = `${r.prompt ? "" : "italic "}11px system-ui, sans-serif`;
    ctx.fillStyle = fg;
    ctx.shadowColor = "rgba(0,0,0,0.55)";
    ctx.shadowBlur = 2;
    let text = prompt;
    const room = maxW - bw - 4;
    if (room < 12) { ctx.shadowBlur = 0; return; }
    if (ctx.measureText(text).width > room) {
      while (text.length > 1 && ctx.measureText(text + "…").width > room) text = text.slice(0, -1);
      text += "…";
    }
    ctx.fillText(text, x + bw + 4, y + 8);
    ctx.shadowBlur = 0;
  }

  handlePoints(r) {
    const xs = [r.x, r.x + r.w / 2, r.x + r.w], ys = [r.y, r.y + r.h / 2, r.y + r.h];
    const pts = [];
    for (const hx of xs) for (const hy of ys) if (!(hx === xs[1] && hy === ys[1])) pts.push([hx, hy]);
    return pts;
  }

  // ---- mouse ----
  toLayout(e) {
    const rect = this.canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - rect.left) / rect.width) * this.doc.width,
      y: ((e.clientY - rect.top) / rect.height) * this.doc.height,
      tol: (7 / rect.width) * this.doc.width,
    };
  }

  /** {index, mode} under the pointer: mode is "move" or a set of edges ("l", "tr", ...). */
  hitTest(p) {
    const regions = this.doc.regions;
    const order = this.selected >= 0 ? [this.selected, ...regions.keys()] : [...regions.keys()];
    for (const i of order) {
      const r = regions[i];
      if (!r) continue;
      const inX = p.x >= r.x - p.tol && p.x <= r.x + r.w + p.tol;
      const inY = p.y >= r.y - p.tol && p.y <= r.y + r.h + p.tol;
      if (!inX || !inY) continue;
      let edges = "";
      if (Math.abs(p.y - r.y) <= p.tol) edges += "t";
      if (Math.abs(p.y - (r.y + r.h)) <= p.tol) edges += "b";
      if (Math.abs(p.x - r.x) <= p.tol) edges += "l";
      if (Math.abs(p.x - (r.x + r.w)) <= p.tol) edges += "r";
      if (edges && !r.mask_rle) return { index: i, mode: edges };
      if (p.x >= r.x && p.x <= r.x + r.w && p.y >= r.y && p.y <= r.y + r.h) return { index: i, mode: r.mask_rle ? "select" : "move" };
    }
    return null;
  }

  cursorFor(hit) {
    if (!hit) return "crosshair";
    if (hit.mode === "move") return "move";
    if (hit.mode === "select") return "pointer";
    const m = hit.mode;
    const v = m.includes("t") || m.includes("b"), h = m.includes("l") || m.includes("r");
    if (v && h) return (m.includes("t") && m.includes("l")) || (m.includes("b") && m.includes("r")) ? "nwse-resize" : "nesw-resize";
    return v ? "ns-resize" : "ew-resize";
  }

  onPointerDown(e) {
    if (e.button !== 0 || !this.doc || this.readOnly) return;
    e.preventDefault();
    e.stopPropagation();
    this.canvas.focus({ preventScroll: true });
    this.canvas.setPointerCapture(e.pointerId);
    const p = this.toLayout(e);
    const hit = this.hitTest(p);
    if (hit) {
      this.selected = hit.index;
      const r = this.doc.regions[hit.index];
      this.drag = { mode: hit.mode, index: hit.index, start: p, orig: { x: r.x, y: r.y, w: r.w, h: r.h }, rect: null };
    } else {
      this.selected = -1;
      const sx = clamp(snap(p.x), 0, this.doc.width), sy = clamp(snap(p.y), 0, this.doc.height);
      this.drag = { mode: "new", index: -1, start: { x: sx, y: sy }, rect: null };
    }
    this.renderList();
    this.draw();
  }

  onPointerMove(e) {
    if (!this.doc) return;
    const p = this.toLayout(e);
    if (!this.drag) {
      this.canvas.style.cursor = this.readOnly ? "default" : this.cursorFor(this.hitTest(p));
      return;
    }
    e.preventDefault();
    const W = this.doc.width, H = this.doc.height, d = this.drag;
    if (d.mode === "new") {
      const x = clamp(snap(p.x), 0, W), y = clamp(snap(p.y), 0, H);
      d.rect = { x: Math.min(d.start.x, x), y: Math.min(d.start.y, y), w: Math.abs(x - d.start.x), h: Math.abs(y - d.start.y) };
    } else if (d.mode === "move") {
      const o = d.orig;
      d.rect = { x: clamp(snap(o.x + p.x - d.start.x), 0, Math.max(0, W - o.w)), y: clamp(snap(o.y + p.y - d.start.y), 0, Math.max(0, H - o.h)), w: o.w, h: o.h };
    } else if (d.mode !== "select") {
      const o = d.orig;
      let x0 = o.x, y0 = o.y, x1 = o.x + o.w, y1 = o.y + o.h;
      if (d.mode.includes("l")) x0 = clamp(snap(o.x + p.x - d.start.x), 0, x1 - SNAP);
      if (d.mode.includes("r")) x1 = clamp(snap(o.x + o.w + p.x - d.start.x), x0 + SNAP, W);
      if (d.mode.includes("t")) y0 = clamp(snap(o.y + p.y - d.start.y), 0, y1 - SNAP);
      if (d.mode.includes("b")) y1 = clamp(snap(o.y + o.h + p.y - d.start.y), y0 + SNAP, H);
      d.rect = { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
    }
    this.draw();
  }

  onPointerUp(e) {
    const d = this.drag;
    if (!d) return;
    this.drag = null;
    if (this.canvas.hasPointerCapture?.(e.pointerId)) this.canvas.releasePointerCapture(e.pointerId);
    if (d.mode === "new") {
      if (d.rect && d.rect.w >= SNAP && d.rect.h >= SNAP) {
        this.edit(() => {
          this.doc.regions.push({ x: d.rect.x, y: d.rect.y, w: d.rect.w, h: d.rect.h, prompt: "" });
          this.ungrid(null);
          this.selected = this.doc.regions.length - 1;
        });
        this.rows[this.selected]?.input.focus({ preventScroll: true });
        return;
      }
    } else if (d.rect && (d.rect.x !== d.orig.x || d.rect.y !== d.orig.y || d.rect.w !== d.orig.w || d.rect.h !== d.orig.h)) {
      this.edit(() => {
        const r = this.doc.regions[d.index];
        Object.assign(r, d.rect);
        this.ungrid(r);
      });
      return;
    }
    this.renderList();
    this.draw();
  }

  onKey(e) {
    if (!this.doc || this.readOnly || e.ctrlKey || e.metaKey || e.altKey) return;
    const i = this.selected;
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if ((e.key === "Delete" || e.key === "Backspace") && i >= 0) {
      this.deleteRegion(i);
    } else if (e.key === "Escape") {
      this.selected = -1;
      this.render();
    } else if (moves[e.key] && i >= 0 && !this.doc.regions[i].mask_rle) {
      const [dx, dy] = moves[e.key];
      this.edit(() => {
        const r = this.doc.regions[i];
        if (e.shiftKey) {  // Shift+arrow resizes from the bottom-right corner
          r.w = clamp(r.w + dx * SNAP, SNAP, this.doc.width - r.x);
          r.h = clamp(r.h + dy * SNAP, SNAP, this.doc.height - r.y);
        } else {
          r.x = clamp(r.x + dx * SNAP, 0, this.doc.width - r.w);
          r.y = clamp(r.y + dy * SNAP, 0, this.doc.height - r.h);
        }
        this.ungrid(r);
      });
    } else {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
  }

  deleteRegion(i) {
    this.edit(() => {
      this.doc.regions.splice(i, 1);
      this.ungrid(null);
      this.doc.regions.forEach((r) => delete r.cell);
      this.selected = -1;
    });
  }

  dispose() {
    this.resizeObserver?.disconnect();
    clearTimeout(this.flashTimer);
  }
}

// ------------------------------------------------------------------------------------------------
// Registration

function layoutInput(nodeData) {
  for (const section of ["required", "optional"]) {
    const spec = nodeData?.input?.[section]?.[WIDGET];
    if (spec && (spec[0] === "STRING" || spec === "STRING")) return true;
  }
  return false;
}

/** Let `widget.hidden` also give back the widget's space (litegraph still lays out hidden DOM widgets). */
function hideable(widget) {
  const computeLayoutSize = widget.computeLayoutSize;
  if (!computeLayoutSize) return;
  widget.computeLayoutSize = function (node) {
    if (this.hidden) return { minHeight: 0, maxHeight: 0, minWidth: 0 };
    return computeLayoutSize.call(this, node);
  };
}

app.registerExtension({
  name: EXT,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!layoutInput(nodeData)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const jsonWidget = this.widgets?.find((w) => w.name === WIDGET);
      if (!jsonWidget) return result;
      const editor = new RegionEditor(this, jsonWidget);
      hideable(jsonWidget);
      jsonWidget.hidden = true;
      const widget = this.addDOMWidget("region_editor", "ii-region-editor", editor.root, {
        serialize: false,                 // the layout lives in layout_json; this widget has no value of its own
        getValue: () => "",
        setValue: () => {},
        getMinHeight: () => 300,
      });
      widget.serialize = false;
      widget.ii_editor = editor;
      forwardWheel(editor.root, () => app.canvas);
      this.ii_regionEditor = editor;
      const chained = jsonWidget.callback;
      jsonWidget.callback = function (v) {
        const r = chained?.apply(this, arguments);
        editor.syncFromWidget();
        return r;
      };
      this.setSize([Math.max(this.size[0], 480), Math.max(this.size[1], 560)]);
      return result;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      this.ii_regionEditor?.syncFromWidget(true);
      return result;
    };

    // Values can also change without a callback (undo, paste, other extensions): re-read on redraw.
    const onDrawBackground = nodeType.prototype.onDrawBackground;
    nodeType.prototype.onDrawBackground = function () {
      const result = onDrawBackground?.apply(this, arguments);
      this.ii_regionEditor?.syncFromWidget();
      return result;
    };

    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const result = onConnectionsChange?.apply(this, arguments);
      this.ii_regionEditor?.render();
      return result;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.ii_regionEditor?.dispose();
      return onRemoved?.apply(this, arguments);
    };
  },
});
