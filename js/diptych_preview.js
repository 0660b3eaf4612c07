// Diptych preview on the Instruct Identity Reference node: before anything runs, it shows the
// [target | reference] picture the sampler will work on, computed in the browser from the node's
// widgets (width, height, fit, pad_color) and the reference image's preview (Load Image). With
// references chained through Instruct Identity Add Reference nodes (more_references) it shows every
// panel, [target | ref 1 | ... | ref K], each reference fitted to the target size, with its strength.
//
// The geometry follows nodes/reference.py: a size of 0 means the reference's size; sizes round to
// the nearest multiple of 16 (half up, at least 16); core/images.fit places the reference (pad:
// whole picture centred on pad_color; crop: fill and cut the overflow from the centre; stretch).
// The target half is mid-grey, as in the node's own preview after a run.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { el, ensureStyles, forwardWheel, themeColor, themeKey } from "./ii_dom.js";

const EXT = "InstructIdentity.DiptychPreview";
const NODE = "InstructIdentityReference";
const MULTIPLE = 16;
const MAX_SIDE = 8192;

// ------------------------------------------------------------------------------------------------
// Geometry (pure; exported for reuse)

/** Python's round(): half to even. */
function roundHalfEven(x) {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

export function snapSize(px, multiple = MULTIPLE) {
  return Math.max(multiple, Math.floor(px / multiple + 0.5) * multiple);
}

export function parsePadColor(text) {
  const s = String(text ?? "").trim();
  let m = /^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$/.exec(s);
  if (m) {
    let h = m[1];
    if (h.length === 3) h = [...h].map((c) => c + c).join("");
    return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
  }
  const parts = s.split(",").map((p) => p.trim());
  if (parts.length === 3 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return parts.map(Number);
  return null;
}

/**
 * Where the reference lands in the target frame.
 * Returns {width, height, notes, place: {x, y, w, h} (scaled picture in the frame, may overflow for crop)}.
 */
export function diptychGeometry({ width, height, fit, refWidth, refHeight }) {
  const notes = [];
  const size = (value, ref, name) => {
    const asked = value > 0 ? value : ref;
    if (!(asked > 0)) return null;
    if (asked > MAX_SIDE) { notes.push(`${name} ${asked} px is over ${MAX_SIDE} px`); return null; }
    const s = snapSize(asked);
    if (s !== asked) notes.push(`${name} ${asked} → ${s} px (multiple of ${MULTIPLE})`);
    return s;
  };
  const w = size(Number(width) || 0, refWidth, "width");
  const h = size(Number(height) || 0, refHeight, "height");
  if (!w || !h) return { width: w, height: h, notes, place: null };
  let place = { x: 0, y: 0, w, h };
  if (refWidth > 0 && refHeight > 0 && !(refWidth === w && refHeight === h) && fit !== "stretch") {
    const scale = fit === "crop" ? Math.max(h / refHeight, w / refWidth) : Math.min(h / refHeight, w / refWidth);
    const nh = Math.max(1, roundHalfEven(refHeight * scale)), nw = Math.max(1, roundHalfEven(refWidth * scale));
    if (fit === "crop") place = { x: -Math.floor((nw - w) / 2), y: -Math.floor((nh - h) / 2), w: nw, h: nh };
    else place = { x: Math.floor((w - nw) / 2), y: Math.floor((h - nh) / 2), w: nw, h: nh };
  }
  return { width: w, height: h, notes, place };
}

// ------------------------------------------------------------------------------------------------
// Finding the reference picture upstream

const images = new Map();  // url -> HTMLImageElement

function loadImage(url) {
  let img = images.get(url);
  if (!img) {
    img = new Image();
    img.src = url;
    images.set(url, img);
    img.addEventListener("load", () => app.graph?.setDirtyCanvas(true, true));
  }
  return img;
}

function imageFromWidget(node) {
  const w = node.widgets?.find((x) => x.name === "image");
  if (!w || typeof w.value !== "string" || !w.value) return null;
  let name = w.value.trim(), type = "input";
  const m = /^(.*) \[(input|output|temp)\]$/.exec(name);
  if (m) { name = m[1]; type = m[2]; }
  const cut = name.lastIndexOf("/");
  const subfolder = cut >= 0 ? name.slice(0, cut) : "";
  const filename = cut >= 0 ? name.slice(cut + 1) : name;
  const q = new URLSearchParams({ filename, type, subfolder });
  return loadImage(api.apiURL(`/view?${q}`));
}

function upstream(node, name) {
  const slot = node.inputs?.findIndex((i) => i.name === name);
  if (slot === undefined || slot < 0 || node.inputs[slot].link == null) return { up: null, linked: false };
  let up = node.getInputNode(slot);
  for (let hops = 0; up && hops < 8 && (up.type === "Reroute" || up.constructor?.type === "Reroute"); hops++) up = up.getInputNode(0);
  return { up, linked: true };
}

/** {img, source} for the node's image input ``name``: follows Reroutes to a node that shows an image. */
function referenceImage(node, name = "reference") {
  const { up, linked } = upstream(node, name);
  if (!up) return { img: null, source: null, linked };
  const source = up.title || up.type;
  const shown = up.imgs?.[0];
  if (shown && shown.src) return { img: shown, source, linked: true };
  return { img: imageFromWidget(up), source, linked: true };
}

const ADD_NODE = "InstructIdentityAddReference";
const MAX_REFERENCES = 8;

function widgetValue(node, name, fallback) {
  const v = node.widgets?.find((w) => w.name === name)?.value;
  return v === undefined ? fallback : v;
}

function hasLink(node, name) {
  return node.inputs?.some((i) => i.name === name && i.link != null) ?? false;
}

/** Every reference of the grid, first the node's own: [{img, source, linked, strength, region}]. */
export function referenceChain(node) {
  const first = { ...referenceImage(node), strength: Number(widgetValue(node, "strength", 1)), region: hasLink(node, "region") };
  const added = [];
  let { up } = upstream(node, "more_references");
  for (let hops = 0; up && hops < MAX_REFERENCES; hops++) {
    if (up.type !== ADD_NODE && up.constructor?.type !== ADD_NODE) break;
    added.unshift({ ...referenceImage(up, "image"), strength: Number(widgetValue(up, "strength", 1)), region: hasLink(up, "region") });
    ({ up } = upstream(up, "references"));
  }
  return [first, ...added];
}

// ------------------------------------------------------------------------------------------------
// The preview widget

class DiptychPreview {
  constructor(node) {
    this.node = node;
    ensureStyles();
    this.canvas = el("canvas", { attrs: { "data-ii-role": "diptych-canvas" } });
    this.caption = el("div", { cls: "ii-caption ii-muted", attrs: { "data-ii-role": "diptych-caption" } });
    this.stage = el("div", { cls: "ii-stage" }, [this.canvas]);
    this.root = el("div", { cls: "ii-root ii-diptych", attrs: { "data-ii-role": "diptych" } }, [this.stage, this.caption]);
    this.signature = null;
    this.resizeObserver = new ResizeObserver(() => this.update(true));
    this.resizeObserver.observe(this.root);
  }

  value(name) {
    return this.node.widgets?.find((w) => w.name === name)?.value;
  }

  update(force = false) {
    const refs = referenceChain(this.node);
    const { img, source, linked } = refs[0];
    const ready = !!(img && img.complete && img.naturalWidth > 0);
    const isReady = (r) => !!(r.img && r.img.complete && r.img.naturalWidth > 0);
    this.extra = refs.slice(1).map((r) => ({ ...r, ready: isReady(r) }));
    const state = {
      extra: this.extra.map((r) => [r.ready ? r.img.src : "", r.strength, r.region, r.linked]),
      strength: refs[0].strength, region: refs[0].region,
      width: Number(this.value("width")) || 0, height: Number(this.value("height")) || 0,
      fit: String(this.value("fit") ?? "pad"), pad: String(this.value("pad_color") ?? "#ffffff"),
      refWidth: ready ? img.naturalWidth : 0, refHeight: ready ? img.naturalHeight : 0,
      src: ready ? img.src : "", linked, source,
      masked: this.node.inputs?.some((i) => i.name === "reference_mask" && i.link != null) ?? false,
      box: [this.root.clientWidth, this.root.clientHeight],
      theme: themeKey(),
    };
    const sig = JSON.stringify(state);
    if (!force && sig === this.signature) return;
    this.signature = sig;
    this.draw(state, ready ? img : null);
  }

  draw(s, img) {
    const geo = diptychGeometry({ width: s.width, height: s.height, fit: s.fit, refWidth: s.refWidth, refHeight: s.refHeight });
    const pad = parsePadColor(s.pad);
    const r = this.root;
    r.dataset.iiTargetWidth = geo.width ?? "";
    r.dataset.iiTargetHeight = geo.height ?? "";
    r.dataset.iiPlace = geo.place && img ? [geo.place.x, geo.place.y, geo.place.w, geo.place.h].join(",") : "";
    r.dataset.iiReference = img ? `${s.refWidth}x${s.refHeight}` : "";

    const ctx = this.canvas.getContext("2d");
    const aw = Math.max(40, this.root.clientWidth - 4);
    const ah = Math.max(30, this.root.clientHeight - Math.max(16, this.caption.offsetHeight) - 8);
    const extra = this.extra ?? [];
    const panels = 2 + extra.length;
    const W = geo.width && geo.height ? panels * geo.width : panels, H = geo.width && geo.height ? geo.height : 1;
    r.dataset.iiReferences = String(1 + extra.length);
    const k = Math.min(aw / W, ah / H);
    const cw = Math.max(20, Math.floor(W * k)), ch = Math.max(12, Math.floor(H * k));
    const dpr = window.devicePixelRatio || 1;
    this.canvas.style.width = `${cw}px`;
    this.canvas.style.height = `${ch}px`;
    this.stage.style.height = `${ch}px`;
    this.canvas.width = Math.round(cw * dpr);
    this.canvas.height = Math.round(ch * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const fg = themeColor(r, "--fg-color", "#fff"), line = themeColor(r, "--border-color", "#4e4e4e");

    const pw = cw / panels;   // one panel's width on the canvas
    // target panel: mid-grey, like the node's own preview
    ctx.fillStyle = "rgb(128,128,128)";
    ctx.fillRect(0, 0, pw, ch);
    // reference panels, each fitted to the target size like the node does
    const drawRef = (picture, place, x0) => {
      ctx.fillStyle = pad ? `rgb(${pad.join(",")})` : themeColor(r, "--comfy-input-bg", "#222");
      ctx.fillRect(x0, 0, pw, ch);
      if (!picture || !place) return;
      const kk = pw / geo.width;
      ctx.save();
      ctx.beginPath();
      ctx.rect(x0, 0, pw, ch);
      ctx.clip();
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(picture, x0 + place.x * kk, place.y * kk, place.w * kk, place.h * kk);
      ctx.restore();
    };
    drawRef(img, geo.place, pw);
    extra.forEach((e, i) => {
      const g = e.ready && geo.width && geo.height
        ? diptychGeometry({ width: geo.width, height: geo.height, fit: s.fit, refWidth: e.img.naturalWidth, refHeight: e.img.naturalHeight })
        : null;
      drawRef(e.ready ? e.img : null, g?.place, (2 + i) * pw);
    });
    ctx.strokeStyle = line;
    ctx.lineWidth = 1;
    ctx.strokeRect(0.5, 0.5, cw - 1, ch - 1);
    ctx.beginPath();
    for (let i = 1; i < panels; i++) {
      ctx.moveTo(Math.round(i * pw) + 0.5, 0);
      ctx.lineTo(Math.round(i * pw) + 0.5, ch);
    }
    ctx.stroke();
    // labels
    ctx.font = "600 11px system-ui, sans-serif";
    ctx.textBaseline = "top";
    const label = (text, x) => {
      const w = ctx.measureText(text).width + 8;
      ctx.fillStyle = "rgba(0,0,0,0.55)";
      ctx.fillRect(x, 3, w, 16);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, x + 4, 5);
    };
    const size = geo.width && geo.height ? ` ${geo.width}×${geo.height}` : "";
    label(`target${size}`, 3);
    const tag = (st, region) => (st !== 1 ? ` ×${st}` : "") + (region ? " ▣" : "");
    if (!extra.length) label(`reference${img ? "" : " (not loaded)"}${tag(s.strength, s.region)}`, pw + 3);
    else {
      label(`ref 1${img ? "" : " (not loaded)"}${tag(s.strength, s.region)}`, pw + 3);
      extra.forEach((e, i) => label(`ref ${i + 2}${e.ready ? "" : " (not loaded)"}${tag(e.strength, e.region)}`, (2 + i) * pw + 3));
    }
    ctx.fillStyle = fg;

    // caption: sizes and what the fit does
    const parts = [];
    if (geo.width && geo.height) parts.push(`grid ${panels * geo.width}×${geo.height} px`);
    else parts.push("target size follows the reference (size known once it is loaded)");
    if (img) parts.push(`reference ${s.refWidth}×${s.refHeight} → ${s.fit}`);
    else if (!s.linked) parts.push("connect a reference image");
    else parts.push(`reference from ${s.source ?? "upstream"}: preview after a run`);
    if (img && geo.place && s.fit === "pad") {
      const px = geo.width - geo.place.w, py = geo.height - geo.place.h;
      if (px || py) parts.push(`padding ${px}×${py} px`);
    }
    if (img && geo.place && s.fit === "crop") {
      const cx = geo.place.w - geo.width, cy = geo.place.h - geo.height;
      if (cx || cy) parts.push(`cropping ${cx}×${cy} px`);
    }
    if (!pad) parts.push(`pad_color '${s.pad}' is not a colour`);
    if (s.masked) parts.push("subject mask applied at run time");
    if (extra.length) parts.push(`${1 + extra.length} references`);
    if ([s.region, ...extra.map((e) => e.region)].some(Boolean)) parts.push("▣ bound to a region");
    this.caption.textContent = [...parts, ...geo.notes].join(" · ");
  }

  dispose() {
    this.resizeObserver?.disconnect();
  }
}

app.registerExtension({
  name: EXT,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const preview = new DiptychPreview(this);
      const widget = this.addDOMWidget("diptych_preview", "ii-diptych", preview.root, {
        serialize: false, getValue: () => "", setValue: () => {},
        getMinHeight: () => 150,
      });
      widget.serialize = false;
      this.ii_diptych = preview;
      forwardWheel(preview.root, () => app.canvas);
      this.setSize([Math.max(this.size[0], 360), this.size[1]]);
      return result;
    };
    // Widget values, links and the upstream image all change without one common event: compare a
    // small signature on every redraw of the node and repaint only when it changed.
    const onDrawBackground = nodeType.prototype.onDrawBackground;
    nodeType.prototype.onDrawBackground = function () {
      const result = onDrawBackground?.apply(this, arguments);
      this.ii_diptych?.update();
      return result;
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.ii_diptych?.dispose();
      return onRemoved?.apply(this, arguments);
    };
  },
});
