// CHARIS results on the nodes: after a run, the CHARIS Score node shows one bar per axis, the
// composite, and the identity axis's per-attribute verdicts (expandable); the CHARIS Filter node
// shows how many items passed and why the others failed.
//
// Data: whatever the node puts in its ui output under "charis" (also accepted: "charis_json", "json",
// "text", "report", "results"): CHARIS PairResult dicts (charis/results.py: {id, prompt, axes: {name:
// {name, value, missing, details}}, composite: {mode, value, axes_used, axes_missing, passed,
// failed}, error}), JSON strings of them, lists of them, or a filter report {passed, total, items}.
// Everything the models wrote (verdicts, reasons, prompts) is set with textContent, never as HTML.

import { app } from "../../scripts/app.js";
import { el, ensureStyles, forwardWheel } from "./ii_dom.js";

const EXT = "InstructIdentity.CharisScores";
const UI_KEYS = ["charis", "charis_json", "charis_report", "json", "text", "report", "results"];
const AXIS_ORDER = ["identity", "prompt", "color", "quality", "diversity", "clip_score",
  "dreambench_cp", "dreambench_pf", "dreambench_cp_debiased", "dreambench_pf_debiased"];
const AXIS_TITLES = { identity: "Identity", prompt: "Prompt", color: "Color", quality: "Quality", diversity: "Diversity",
  clip_score: "CLIP score", dreambench_cp: "CP", dreambench_pf: "PF", dreambench_cp_debiased: "CP (debiased)",
  dreambench_pf_debiased: "PF (debiased)" };
const VERDICT_KEYS = ["verdicts", "attribute_verdicts", "per_attribute", "judgements", "judgments"];

// ------------------------------------------------------------------------------------------------
// Reading the ui output (pure functions; exported for reuse)

function parseMaybeJSON(v) {
  if (typeof v !== "string") return v;
  const s = v.trim();
  if (!s || !"[{".includes(s[0])) return undefined;
  try { return JSON.parse(s); } catch { return undefined; }
}

const ITEM_META = new Set(["id", "charis", "composite", "axes_used", "axes_missing", "passed", "failed", "error",
  "reference", "generated", "seconds", "vlm_calls", "version", "mode"]);  // "prompt" is an axis here
const TITLE_TO_AXIS = Object.fromEntries(Object.entries(AXIS_TITLES).map(([k, v]) => [v.toLowerCase(), k]));

/**
 * The node's plain-text summary (nodes/charis.py `_summary`), read for what the compact ui items do
 * not carry: why an axis is missing and why an item was rejected. Lines look like
 *   "image 0: CHARIS 0.523 PASS", "image 1: partial CHARIS: color, quality 0.523 (missing identity)",
 *   "image 2: CHARIS missing (over color; missing identity) REJECT (identity missing; color 0.41 < 0.60)"
 *   "  Identity: missing (no VLM configured)"
 */
export function parseSummary(text) {
  const out = new Map();
  let current = null;
  for (const line of String(text ?? "").split("\n")) {
    const head = /^(\S.*?): (?:(?:partial|custom) CHARIS: .*? ([-\d.]+)|CHARIS (missing|absent|[-\d.]+))(?: \((?:over (.*?); )?missing (.*?)\))?(?: (PASS|REJECT \((.*)\)))?\s*$/.exec(line);
    if (head) {
      current = { failed: {}, missing: {}, missingAxes: head[5] ? head[5].split(", ") : [] };
      if (head[7]) {
        for (const part of head[7].split("; ")) {
          const m = /^(\S+) (.*)$/.exec(part);
          if (m) current.failed[m[1]] = m[2];
        }
      }
      out.set(head[1], current);
      continue;
    }
    const axis = /^ {2}(.+?): missing \((.*)\)\s*$/.exec(line);
    if (axis && current) current.missing[TITLE_TO_AXIS[axis[1].toLowerCase()] ?? axis[1]] = axis[2];
  }
  return out;
}

/** A compact ui item ({id, charis, axes_used, passed, <axis>: value}) as a PairResult-like object. */
function fromCompact(c, summary) {
  const extra = summary?.get(String(c.id)) ?? { failed: {}, missing: {}, missingAxes: [] };
  const axes = {};
  for (const [k, v] of Object.entries(c)) {
    if (ITEM_META.has(k) || (v !== null && typeof v !== "number")) continue;
    axes[k] = { value: v, missing: v === null ? (extra.missing[k] ?? "could not be computed") : null, details: {} };
  }
  const used = Array.isArray(c.axes_used) ? c.axes_used : [];
  return {
    id: c.id, error: c.error,
    axes,
    composite: {
      value: typeof c.charis === "number" ? c.charis : null,
      axes_used: used,
      axes_missing: extra.missingAxes,
      passed: typeof c.passed === "boolean" ? c.passed : null,
      failed: extra.failed,
    },
  };
}

/**
 * {items: [PairResult-like], mode?, thresholds?} from a node's ui output, or null if it holds no
 * CHARIS data. Full PairResults (a "charis_report"-style JSON: {mode, thresholds, results: [...]})
 * win over the compact per-item dicts under "charis".
 */
export function readCharisOutput(output) {
  if (!output || typeof output !== "object") return null;
  const full = [], compact = [], report = {};
  const visit = (v, depth = 0) => {
    v = parseMaybeJSON(v);
    if (v === undefined || v === null || depth > 5) return;
    if (Array.isArray(v)) { v.forEach((x) => visit(x, depth + 1)); return; }
    if (typeof v !== "object") return;
    if (v.axes && typeof v.axes === "object") { full.push(v); return; }
    if (v.id !== undefined && ("charis" in v || "axes_used" in v || "error" in v)) { compact.push(v); return; }
    for (const k of ["mode", "thresholds", "weights"]) if (v[k] !== undefined && report[k] === undefined) report[k] = v[k];
    for (const k of ["results", "items", "pairs", "scores"]) if (v[k] !== undefined) visit(v[k], depth + 1);
  };
  for (const key of UI_KEYS) if (key !== "text" && output[key] !== undefined) visit(output[key]);
  const texts = (Array.isArray(output.text) ? output.text : [output.text]).filter((t) => typeof t === "string");
  for (const t of texts) visit(t);  // a JSON text is data too
  const summary = parseSummary(texts.join("\n"));
  const items = full.length ? full : compact.map((c) => fromCompact(c, summary));
  if (!items.length) return null;
  return { items, ...report };
}

function axisValue(a) {
  if (a === null || a === undefined) return { value: null, missing: "not computed" };
  if (typeof a === "number") return { value: a, missing: null, details: {} };
  const value = typeof a.value === "number" && Number.isFinite(a.value) ? a.value : null;
  return { value, missing: value === null ? (a.missing || "not computed") : null, details: a.details || {} };
}

export function axisEntries(item) {
  const axes = item.axes || {};
  const names = Object.keys(axes).sort((a, b) => {
    const ia = AXIS_ORDER.indexOf(a), ib = AXIS_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  return names.map((name) => ({ name, ...axisValue(axes[name]) }));
}

/**
 * The identity axis's per-attribute verdicts, normalised to {attribute, value, region, status, score,
 * reason}. charis/scoring.py keeps `attributes` [{attribute, value, region}] (what the VLM listed on
 * the reference) and `verdicts` [{attribute, verdict: match|partial|mismatch|not_visible, note}].
 */
export function identityVerdicts(item) {
  const details = axisValue(item.axes?.identity).details || {};
  const str = (v) => (v === undefined || v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const listed = Array.isArray(details.attributes) ? details.attributes.filter((a) => a && typeof a === "object") : [];
  let list = null;
  for (const k of VERDICT_KEYS) if (Array.isArray(details[k])) { list = details[k]; break; }
  if (!list) list = listed;  // attributes without verdicts (the judging step failed)
  const byName = new Map(listed.map((a) => [str(a.attribute ?? a.name).toLowerCase(), a]));
  return list.filter((v) => v && typeof v === "object").map((v) => {
    const attribute = str(v.attribute ?? v.name ?? v.attr ?? v.key);
    const known = byName.get(attribute.toLowerCase()) || {};
    const score = [v.score, v.rating, v.points].find((x) => typeof x === "number");
    const flag = [v.present, v.preserved, v.kept, v.match, v.matches, v.ok, v.passed].find((x) => typeof x === "boolean");
    const verdict = typeof v.verdict === "string" ? v.verdict.toLowerCase() : "";
    let status = "unknown";
    if (flag !== undefined) status = flag ? "kept" : "lost";
    else if (verdict) {
      if (/not.?visible|hidden|occluded|unknown/.test(verdict)) status = "hidden";
      else if (/^(match|yes|kept|present|preserved|pass)/.test(verdict)) status = "kept";
      else if (/^partial/.test(verdict)) status = "partial";
      else if (/^(mismatch|no\b|lost|absent|missing|changed|fail)/.test(verdict)) status = "lost";
    } else if (typeof score === "number") status = score >= 3 ? "kept" : score <= 1 ? "lost" : "partial";
    return {
      attribute,
      value: str(v.value ?? known.value ?? v.expected ?? v.reference),
      region: str(v.region ?? known.region ?? v.body_region ?? v.part),
      observed: str(v.observed ?? v.generated ?? v.found),
      verdict: str(v.verdict),
      reason: str(v.note ?? v.reason ?? v.explanation ?? v.comment ?? v.evidence ?? v.rationale),
      score, status,
    };
  });
}

export function failureReasons(item) {
  if (item.error) return [String(item.error)];
  const failed = item.composite?.failed;
  if (!failed || typeof failed !== "object") return [];
  return Object.entries(failed).map(([axis, why]) => `${AXIS_TITLES[axis] || axis}: ${String(why)}`);
}

function itemPassed(item) {
  if (item.error) return false;
  const p = item.composite?.passed;
  return typeof p === "boolean" ? p : null;
}

// ------------------------------------------------------------------------------------------------
// Rendering

const fmt = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(3));

function bar(name, title, value, { missing = null, composite = false } = {}) {
  const row = el("div", { cls: `ii-axis${composite ? " ii-composite" : ""}${value === null ? " ii-missing" : ""}`,
    attrs: { "data-ii-axis": name, "data-ii-value": value === null ? "" : String(value) } });
  const track = el("div", { cls: "ii-track" });
  if (value !== null) {
    const v = Math.max(0, Math.min(1, value));
    const fill = el("div", { cls: "ii-fill", style: { width: `${(v * 100).toFixed(1)}%` } });
    fill.style.setProperty("--ii-hue", String(Math.round(v * 120)));
    track.appendChild(fill);
  }
  row.append(el("span", { cls: "ii-name", text: title, attrs: { title } }), track, el("span", { cls: "ii-val", text: fmt(value) }));
  if (missing) row.title = `${title}: ${missing}`;
  return row;
}

function renderVerdicts(item) {
  const verdicts = identityVerdicts(item);
  if (!verdicts.length) return null;
  const kept = verdicts.filter((v) => v.status === "kept").length;
  const judged = verdicts.some((v) => v.status !== "unknown");
  const details = el("details", { attrs: { "data-ii-role": "verdicts" } });
  details.appendChild(el("summary", { text: judged ? `Identity attributes: ${kept} of ${verdicts.length} kept`
    : `Identity attributes: ${verdicts.length} listed, not judged` }));
  const list = el("div", { cls: "ii-verdicts" });
  for (const v of verdicts) {
    const mark = { kept: "✓", lost: "✗", partial: "~", hidden: "–", unknown: "?" }[v.status];
    const head = el("div", {}, [
      el("span", { cls: "ii-attr", text: v.attribute || "attribute" }),
      v.value ? el("span", { text: `: ${v.value}` }) : null,
      v.region ? el("span", { cls: "ii-muted", text: ` (${v.region})` }) : null,
      typeof v.score === "number" ? el("span", { cls: "ii-muted", text: ` ${v.score}/4` }) : null,
      v.verdict ? el("span", { cls: "ii-muted", text: ` — ${v.verdict.replace(/_/g, " ")}` }) : null,
    ]);
    const body = el("div", {}, [head,
      v.observed ? el("div", { cls: "ii-why ii-muted", text: `seen: ${v.observed}` }) : null,
      v.reason ? el("div", { cls: "ii-why", text: v.reason, attrs: { "data-ii-role": "verdict-text" } }) : null]);
    list.appendChild(el("div", { cls: `ii-verdict ii-${v.status}` }, [el("span", { cls: "ii-mark", text: mark }), body]));
  }
  details.appendChild(list);
  return details;
}

function renderItem(item, index, count) {
  const box = el("div", { cls: "ii-item", attrs: { "data-ii-item": index } });
  const mode = item.composite?.mode;
  if (count > 1 || item.id || mode) {
    const label = [count > 1 ? `#${index + 1}` : null, item.id, mode ? `${mode} mode` : null].filter(Boolean).join(" · ");
    box.appendChild(el("div", { cls: "ii-muted ii-note", text: label }));
  }
  if (item.error) {
    box.appendChild(el("div", { cls: "ii-error", text: `failed: ${item.error}` }));
    return box;
  }
  const c = item.composite;
  if (c) {
    const value = typeof c.value === "number" ? c.value : null;
    // the label says which axes the number covers: "CHARIS", "partial CHARIS: color, quality", ...
    box.appendChild(bar("composite", typeof c.label === "string" && c.label ? c.label : "CHARIS", value,
      { composite: true, missing: value === null ? (c.reason || "no composite: axes missing") : null }));
    const missing = Array.isArray(c.axes_missing) ? c.axes_missing : [];
    if (missing.length && Array.isArray(c.axes_used)) {
      box.appendChild(el("div", { cls: "ii-note ii-muted",
        text: `over ${c.axes_used.join(", ") || "no axes"}; missing: ${missing.join(", ")}` }));
    }
  }
  for (const a of axisEntries(item)) box.appendChild(bar(a.name, AXIS_TITLES[a.name] || a.name, a.value, { missing: a.missing }));
  const missingNotes = axisEntries(item).filter((a) => a.value === null && a.missing);
  for (const a of missingNotes) box.appendChild(el("div", { cls: "ii-note ii-muted", text: `${AXIS_TITLES[a.name] || a.name}: ${a.missing}` }));
  const verdicts = renderVerdicts(item);
  if (verdicts) box.appendChild(verdicts);
  const passed = itemPassed(item);
  if (passed !== null) {
    box.appendChild(el("div", { cls: passed ? "ii-pass" : "ii-fail", text: passed ? "passes the filter" : `fails: ${failureReasons(item).join("; ")}` }));
  }
  return box;
}

function renderScore(root, data) {
  root.replaceChildren();
  if (!data || !data.items.length) {
    root.appendChild(el("div", { cls: "ii-empty ii-muted", text: "Scores appear here after a run." }));
    return;
  }
  data.items.forEach((item, i) => root.appendChild(renderItem(item, i, data.items.length)));
}

function renderFilter(root, data) {
  root.replaceChildren();
  if (!data) {
    root.appendChild(el("div", { cls: "ii-empty ii-muted", text: "The filter result appears here after a run." }));
    return;
  }
  const items = data.items || [];
  const total = items.length;
  const passed = items.map(itemPassed).filter((p) => p === true).length;
  const summary = el("div", { cls: `ii-summary ${passed === total ? "ii-pass" : "ii-fail"}`,
    attrs: { "data-ii-role": "filter-summary", "data-ii-passed": passed, "data-ii-total": total },
    text: `${passed} of ${total} passed` });
  root.appendChild(summary);
  const failures = items.map((item, i) => ({ item, i })).filter(({ item }) => itemPassed(item) === false);
  if (failures.length) {
    const ul = el("ul", { cls: "ii-reasons", attrs: { "data-ii-role": "filter-reasons" } });
    for (const { item, i } of failures) {
      const comp = typeof item.composite?.value === "number" ? ` (CHARIS ${fmt(item.composite.value)})` : "";
      ul.appendChild(el("li", { text: `#${i + 1}${item.id ? ` ${item.id}` : ""}${comp}: ${failureReasons(item).join("; ") || "below the thresholds"}` }));
    }
    root.appendChild(ul);
  }
  const detail = el("details", {}, [el("summary", { text: "Scores of every item" })]);
  const inner = el("div", { cls: "ii-charis-inner" });
  items.forEach((item, i) => inner.appendChild(renderItem(item, i, items.length)));
  detail.appendChild(inner);
  if (items.length) root.appendChild(detail);
}

// ------------------------------------------------------------------------------------------------
// Registration

function kindOf(nodeData) {
  const id = `${nodeData?.name ?? ""} ${nodeData?.display_name ?? ""}`;
  if (!/charis/i.test(id)) return null;
  if (/filter/i.test(id)) return "filter";
  if (/score/i.test(id)) return "score";
  return null;
}

app.registerExtension({
  name: EXT,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const kind = kindOf(nodeData);
    if (!kind) return;
    const render = kind === "filter" ? renderFilter : renderScore;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      ensureStyles();
      const root = el("div", { cls: `ii-root ii-charis ii-charis-${kind}`, attrs: { "data-ii-role": `charis-${kind}` } });
      render(root, null);
      const widget = this.addDOMWidget("charis_display", "ii-charis", root, {
        serialize: false, getValue: () => "", setValue: () => {},
        getMinHeight: () => Math.min(360, Math.max(40, this.ii_charisHeight ?? 40)),
      });
      widget.serialize = false;
      this.ii_charisRoot = root;
      forwardWheel(root, () => app.canvas);
      // opening the verdicts grows the node to show them
      root.addEventListener("toggle", () => {
        this.ii_charisHeight = root.scrollHeight + 8;
        this.setSize([this.size[0], Math.max(this.size[1], this.computeSize()[1])]);
        this.setDirtyCanvas(true, true);
      }, true);
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      const data = readCharisOutput(output);
      if (data && this.ii_charisRoot) {
        render(this.ii_charisRoot, data);
        // grow the node to the content (up to a limit; the widget scrolls beyond it)
        this.ii_charisHeight = this.ii_charisRoot.scrollHeight + 8;
        this.setSize([this.size[0], Math.max(this.size[1], this.computeSize()[1])]);
        this.setDirtyCanvas(true, true);
      }
      return result;
    };
  },
});
