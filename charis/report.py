"""Self-contained HTML report: one row per pair with the reference and generated thumbnails side by
side (embedded as data URLs), the composite and a bar per axis, the VLM's per-attribute verdicts
and reasons, sorted worst first and re-sortable by clicking a column header.

Every piece of text that came from a model, a prompt or a file name is HTML-escaped; the only
script is the fixed sorting code below, which reads numbers from ``data-`` attributes.
"""

from __future__ import annotations

import html
import logging
import math
import time

from .axes import all_axes
from .batch import axis_columns
from .images import data_url, load
from .results import PairResult
from .summary import summarize

log = logging.getLogger(__name__)

THUMB = 192

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} .meta{color:#666;font-size:13px;margin-bottom:16px}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 3px #0002}
th,td{padding:8px;border-bottom:1px solid #eee;vertical-align:top;font-size:13px;text-align:left}
th{background:#f0f0f3;cursor:pointer;user-select:none;position:sticky;top:0;white-space:nowrap}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
.thumbs{display:flex;gap:6px} .thumbs figure{margin:0;text-align:center;font-size:11px;color:#666}
.thumbs img{max-width:192px;max-height:192px;border:1px solid #ddd;background:#fff}
.bar{width:120px;height:10px;background:#eee;border-radius:5px;overflow:hidden;margin-top:3px}
.bar span{display:block;height:100%} .val{font-variant-numeric:tabular-nums}
.missing{color:#b00;font-size:12px} .small{font-size:12px;color:#444}
.verdict-match{color:#080}.verdict-partial{color:#a60}.verdict-mismatch{color:#b00}.verdict-not_visible{color:#888}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #0003;vertical-align:middle;margin-right:2px}
.fail td{background:#fff4f4} details summary{cursor:pointer;color:#345}
.pass{color:#080;font-weight:600}.nopass{color:#b00;font-weight:600}
"""

_JS = """
(function(){
  var table=document.getElementById('charis');
  var heads=table.tHead.rows[0].cells;
  function key(row,i){var v=row.cells[i].getAttribute('data-sort');
    if(v===null)return row.cells[i].textContent.toLowerCase(); var f=parseFloat(v); return isNaN(f)?-1:f;}
  for(var i=0;i<heads.length;i++){(function(i){heads[i].addEventListener('click',function(){
    var asc=!heads[i].classList.contains('sorted-asc');
    for(var j=0;j<heads.length;j++){heads[j].classList.remove('sorted-asc','sorted-desc');}
    heads[i].classList.add(asc?'sorted-asc':'sorted-desc');
    var body=table.tBodies[0]; var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a,i),y=key(b,i); return (x<y?-1:x>y?1:0)*(asc?1:-1);});
    rows.forEach(function(r){body.appendChild(r);});
  });})(i);}
})();
"""


def esc(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _color(v: float) -> str:
    hue = max(0.0, min(1.0, v)) * 120  # red -> green
    return f"hsl({hue:.0f},70%,45%)"


def _bar(v: float | None, missing: str | None) -> str:
    if v is None:
        return f'<div class="missing">missing</div><div class="small">{esc(missing)}</div>'
    return (f'<div class="val">{v:.3f}</div><div class="bar"><span style="width:{max(0, min(1, v)) * 100:.1f}%;'
            f'background:{_color(v)}"></span></div>')


def _thumb(path: str | None, label: str) -> str:
    if not path:
        return f"<figure><div class='missing'>no {esc(label)}</div></figure>"
    try:
        src = data_url(load(path).pil(THUMB), "JPEG", 85)
    except Exception as e:  # noqa: BLE001
        return f"<figure><div class='missing'>{esc(label)}: {esc(type(e).__name__)}</div></figure>"
    return f"<figure><img src='{src}' alt='{esc(label)}'><figcaption>{esc(label)}</figcaption></figure>"


def _details(r: PairResult) -> str:
    parts = []
    ident = r.axes.get("identity")
    if ident and ident.details.get("verdicts"):
        rows = "".join(
            f"<li class='verdict-{esc(v.get('verdict'))}'><b>{esc(v.get('attribute'))}</b>: {esc(v.get('verdict'))}"
            f"{' &mdash; ' + esc(v.get('note')) if v.get('note') else ''}</li>" for v in ident.details["verdicts"])
        parts.append(f"<details><summary>identity verdicts</summary><ul>{rows}</ul></details>")
    elif ident and ident.details.get("attributes"):
        rows = "".join(f"<li><b>{esc(a.get('attribute'))}</b>: {esc(a.get('value'))}</li>"
                       for a in ident.details["attributes"])
        parts.append(f"<details><summary>reference attributes</summary><ul>{rows}</ul></details>")
    if ident and ident.details.get("contradiction"):
        parts.append(f"<div class='small nopass'>identity answer contradicts itself: "
                     f"{esc(ident.details.get('consistency', {}).get('note'))}</div>")
    col = r.axes.get("color")
    if col and col.details.get("reference_regions"):
        def sw(regions):
            return "".join(f"<span class='swatch' style='background:{esc(g.get('hex'))}' "
                           f"title='{esc(g.get('label') or '')} {esc(g.get('hex'))} {g.get('area', 0):.0%}'></span>"
                           for g in regions)
        parts.append(f"<div class='small'>colour regions: ref {sw(col.details['reference_regions'])} "
                     f"gen {sw(col.details.get('generated_regions', []))} "
                     f"({esc(col.details.get('correspondence'))})</div>")
    for name in ("prompt", "diversity"):
        a = r.axes.get(name)
        if not a:
            continue
        d = a.details.get("vlm_details", a.details) if name == "prompt" else a.details
        reason = d.get("reason")
        if reason:
            parts.append(f"<div class='small'><b>{esc(name)}:</b> {esc(reason)}</div>")
    return "".join(parts)


def _composite_cell(c) -> str:
    """The composite with its label: "CHARIS", "partial CHARIS: <axes>" (and what is missing), or
    absent with the reason; pass/reject in filter mode."""
    verdict = ""
    if c is not None and c.passed is not None:
        verdict = ("<div class='pass'>pass</div>" if c.passed else
                   f"<div class='nopass'>reject</div><div class='small'>"
                   f"{esc('; '.join(f'{k}: {v}' for k, v in c.failed.items()))}</div>")
    if c is None or c.value is None:
        reason = c.reason if c is not None else "no axis available"
        return (f"<td data-sort='-1'><div class='missing'>CHARIS absent</div><div class='small'>{esc(reason)}</div>"
                f"{verdict}</td>")
    extra = f"<div class='small'>{esc(c.reason)}</div>" if c.reason else ""
    return (f"<td data-sort='{c.value:.6f}'><div class='small'><b>{esc(c.label)}</b></div>{_bar(c.value, None)}"
            f"{extra}{verdict}</td>")


def render(results: list[PairResult], title: str = "CHARIS report") -> str:
    """The whole report as one HTML string (no external resources)."""
    axes = axis_columns(results)
    meta = all_axes()

    def order(r: PairResult):
        c = r.composite.value if r.composite and r.composite.value is not None else None
        return (0 if r.error else 1, -math.inf if c is None else c)

    rows = []
    for r in sorted(results, key=order):
        c = r.composite
        if r.error:
            comp_cell = (f"<td data-sort='-2'><div class='missing'>failed</div>"
                         f"<div class='small'>{esc(r.error)}</div></td>")
        else:
            comp_cell = _composite_cell(c)
        cells = []
        for a in axes:
            ax = r.axes.get(a)
            v = ax.value if ax else None
            key = -1 if v is None else f"{v:.6f}"
            cells.append(f"<td data-sort='{key}'>{_bar(v, ax.missing if ax else 'not computed')}</td>")
        rows.append(
            f"<tr class='{'fail' if r.error else ''}'><td><div class='thumbs'>{_thumb(r.reference, 'reference')}"
            f"{_thumb(r.generated, 'generated')}</div></td>"
            f"<td><b>{esc(r.id)}</b><div class='small'>{esc(r.prompt)}</div>{_details(r)}</td>"
            f"{comp_cell}{''.join(cells)}</tr>")
    heads = "".join(f"<th title='{esc(meta[a].meaning if a in meta else a)}'>"
                    f"{esc(meta[a].title if a in meta else a)}</th>" for a in axes)
    summary = "<br>".join(esc(line) for line in summarize(results, axes).lines())
    summary += f"<br>generated {esc(time.strftime('%Y-%m-%d %H:%M'))}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{_CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><div class='meta'>{summary}. Worst first; click a column to sort.</div>"
            f"<table id='charis'><thead><tr><th>images</th><th>item</th><th>CHARIS</th>{heads}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table><script>{_JS}</script></body></html>")
