// Shared DOM helpers for the Instruct Identity extensions (no ComfyUI imports here).
//
// Rules every extension in this folder follows:
// - all CSS lives in one <style> element and every selector starts with an `.ii-` root class, so
//   nothing leaks onto ComfyUI's own elements;
// - colours come from ComfyUI's theme variables (--fg-color, --comfy-input-bg, ...), so light and
//   dark palettes both work;
// - text that comes from users or models (prompts, VLM verdicts, file names) is only ever set with
//   textContent / value, never innerHTML.

const STYLE_ID = "instruct-identity-styles";

const CSS = `
.ii-root { box-sizing: border-box; font: 12px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--input-text, #ddd); background: transparent; overflow: hidden; }
.ii-root *, .ii-root *::before, .ii-root *::after { box-sizing: border-box; }
.ii-root input, .ii-root button, .ii-root select { font: inherit; color: var(--input-text, #ddd);
  background: var(--comfy-input-bg, #222); border: 1px solid var(--border-color, #4e4e4e); border-radius: 4px; }
.ii-root input { padding: 2px 4px; min-width: 0; }
.ii-root input:focus { outline: 1px solid var(--fg-color, #fff); outline-offset: -1px; }
.ii-root button { padding: 2px 7px; cursor: pointer; white-space: nowrap; }
.ii-root button:hover { background: var(--content-hover-bg, #333); color: var(--content-hover-fg, #fff); }
.ii-root .ii-muted { color: var(--descrip-text, #999); }
.ii-root .ii-error { color: var(--error-text, #f44); }

/* region editor */
.ii-region-editor { display: flex; flex-direction: column; gap: 4px; height: 100%; padding: 2px 0; }
.ii-region-editor .ii-toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 4px; }
.ii-region-editor .ii-toolbar label { display: inline-flex; align-items: center; gap: 3px; }
.ii-region-editor .ii-toolbar input[type=number] { width: 58px; }
.ii-region-editor .ii-toolbar .ii-sep { width: 1px; align-self: stretch; background: var(--border-color, #4e4e4e); margin: 0 2px; }
.ii-region-editor .ii-stage { flex: 0 0 auto; position: relative; display: flex; align-items: flex-start;
  justify-content: center; }
.ii-region-editor canvas { display: block; touch-action: none; cursor: crosshair;
  border: 1px solid var(--border-color, #4e4e4e); outline: none; }
.ii-region-editor canvas:focus { border-color: var(--fg-color, #fff); }
.ii-region-editor .ii-list { flex: 0 1 auto; max-height: 45%; overflow-y: auto; display: flex; flex-direction: column; gap: 2px; }
.ii-region-editor .ii-row { display: flex; align-items: center; gap: 4px; padding: 1px 2px; border-radius: 4px; }
.ii-region-editor .ii-row.ii-selected { background: var(--comfy-menu-secondary-bg, #303030); }
.ii-region-editor .ii-badge { flex: 0 0 auto; min-width: 22px; text-align: center; border-radius: 3px; color: #111;
  font-weight: 600; padding: 1px 3px; }
.ii-region-editor .ii-row input.ii-prompt { flex: 1 1 auto; }
.ii-region-editor .ii-row .ii-geom { flex: 0 0 auto; font-variant-numeric: tabular-nums; }
.ii-region-editor .ii-hint { flex: 0 0 auto; font-size: 11px; }

/* CHARIS */
.ii-charis { display: flex; flex-direction: column; gap: 3px; padding: 2px 2px 4px; height: 100%; overflow-y: auto; }
.ii-charis .ii-empty { font-style: italic; }
.ii-charis .ii-item + .ii-item { border-top: 1px solid var(--border-color, #4e4e4e); padding-top: 4px; }
.ii-charis .ii-axis { display: grid; grid-template-columns: 74px 1fr 44px; align-items: center; gap: 6px; }
.ii-charis .ii-axis .ii-name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.ii-charis .ii-track { height: 10px; border-radius: 3px; background: var(--comfy-input-bg, #222);
  border: 1px solid var(--border-color, #4e4e4e); overflow: hidden; }
.ii-charis .ii-fill { height: 100%; background: hsl(var(--ii-hue, 120) 65% 45%); }
.ii-charis .ii-val { text-align: right; font-variant-numeric: tabular-nums; }
.ii-charis .ii-axis.ii-missing .ii-track { background: repeating-linear-gradient(45deg, transparent 0 4px,
  var(--border-color, #4e4e4e) 4px 6px); }
.ii-charis .ii-axis.ii-composite { font-weight: 700; }
.ii-charis .ii-axis.ii-composite .ii-track { height: 13px; }
.ii-charis .ii-note { font-size: 11px; }
.ii-charis details { margin-top: 2px; }
.ii-charis summary { cursor: pointer; user-select: none; }
.ii-charis .ii-verdicts { display: flex; flex-direction: column; gap: 3px; margin: 3px 0 0 4px; }
.ii-charis .ii-verdict { display: grid; grid-template-columns: 18px 1fr; gap: 4px; }
.ii-charis .ii-verdict .ii-mark { font-weight: 700; text-align: center; }
.ii-charis .ii-verdict.ii-kept .ii-mark { color: hsl(120 55% 45%); }
.ii-charis .ii-verdict.ii-lost .ii-mark { color: var(--error-text, #f44); }
.ii-charis .ii-verdict.ii-partial .ii-mark { color: hsl(40 80% 50%); }
.ii-charis .ii-verdict .ii-attr { font-weight: 600; }
.ii-charis .ii-verdict .ii-why { white-space: pre-wrap; overflow-wrap: anywhere; }
.ii-charis .ii-summary { font-weight: 700; }
.ii-charis .ii-pass { color: hsl(120 55% 45%); }
.ii-charis .ii-fail { color: var(--error-text, #f44); }
.ii-charis ul.ii-reasons { margin: 2px 0 0; padding-left: 16px; }

/* diptych preview */
.ii-diptych { display: flex; flex-direction: column; gap: 2px; height: 100%; }
.ii-diptych .ii-stage { flex: 0 0 auto; display: flex; align-items: flex-start; justify-content: center; }
.ii-diptych canvas { display: block; }
.ii-diptych .ii-caption { flex: 0 0 auto; font-size: 11px; text-align: center; overflow-wrap: anywhere; }
`;

export function ensureStyles() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  document.head.appendChild(style);
}

/** Create an element; `text` is set with textContent (never parsed as HTML). */
export function el(tag, { cls, text, attrs, style } = {}, children = []) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (attrs) for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (style) Object.assign(node.style, style);
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

/** A theme colour (ComfyUI CSS variable) as the canvas needs it, read at draw time. */
export function themeColor(element, name, fallback) {
  const v = getComputedStyle(element).getPropertyValue(name).trim();
  return v || fallback;
}

/** The colour of region i of n, as core/regions.py preview() paints it (HSV, s 0.65, v 0.95). */
export function regionColor(i, n, alpha = 1) {
  const hue = (n > 0 ? i / n : 0) * 360;
  // HSV(s=.65, v=.95) -> HSL
  const v = 0.95, s = 0.65;
  const l = v * (1 - s / 2);
  const sl = l === 0 || l === 1 ? 0 : (v - l) / Math.min(l, 1 - l);
  return `hsla(${hue.toFixed(1)}, ${(sl * 100).toFixed(1)}%, ${(l * 100).toFixed(1)}%, ${alpha})`;
}

/**
 * Let the mouse wheel over a widget zoom the graph, as it does over ComfyUI's own widgets, unless it
 * is over something of ours that can still scroll.
 */
export function forwardWheel(element, getCanvas) {
  element.addEventListener("wheel", (event) => {
    for (let n = event.target; n && n !== element.parentElement; n = n.parentElement) {
      if (n.scrollHeight > n.clientHeight + 1 && /(auto|scroll)/.test(getComputedStyle(n).overflowY)) return;
    }
    const canvas = getCanvas();
    if (!canvas?.processMouseWheel) return;
    event.preventDefault();
    canvas.processMouseWheel(event);
  }, { passive: false });
}

/** Changes whenever ComfyUI switches palettes (it sets its colours as variables on <html>). */
export function themeKey() {
  const s = document.documentElement.style;
  return `${s.getPropertyValue("--comfy-input-bg")}|${s.getPropertyValue("--fg-color")}|${s.getPropertyValue("--border-color")}`;
}
