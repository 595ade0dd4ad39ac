"""``medvision-eval view RUN_DIR``: one run as a page — tables, plots and a sample gallery.

The gallery shows each sample's slice as the model saw it (the protocol's rendering, before any
model-side resize), the ground-truth box (green) and the predicted box (magenta) drawn over it,
true and predicted values, the exact prompt text (from ``plan.jsonl``; older plans without a
stored prompt say so), the raw answer and the parse status. Cards can be filtered by task,
label, status and error size; the unparsed and the worst samples come first.

The page is static and self-contained (``view/index.html`` + ``view/img/*.png`` +
``view/plots/*.svg``): it opens from ``file://`` without a network.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from .summary import ScoredRun, comparability, comparability_text, family_metrics, family_sets, fmt_interval, fmt_value
from .summary import FAMILY_TITLES, SHORT

GT_COLOUR = "#00e000"
PRED_COLOUR = "#ff00ff"
DISPLAY = 240  # longest side of a gallery image, CSS pixels


def _h(x: Any) -> str:
    return html.escape(str(x), quote=True)


def ensure_scored(run_dir: Path) -> ScoredRun:
    """The run's scored outputs, scoring it first when results.json is missing or stale."""
    from .scoring import cached_results, score_run
    from .store import RUN_CONFIG

    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG).exists():
        raise FileNotFoundError(f"{run_dir / RUN_CONFIG} not found: {run_dir} is not a medvision-eval run directory")
    results = cached_results(run_dir) or score_run(run_dir)
    return ScoredRun.load(run_dir, results)


def open_data(run: ScoredRun, data: str | None):
    """The data directory the run used (or ``data``); the demo data is regenerated when absent."""
    from .data import MedVisionData
    from .data.demo import DEMO_VERSION, demo_dir

    recorded = (run.results.get("selection") or {}).get("data_root") or run.results.get("data_root") or ""
    root = Path(data) if data else Path(str(recorded))
    if not root.exists():
        if root.name == f"demo-{DEMO_VERSION}":
            root = demo_dir()
        else:
            raise FileNotFoundError(f"data directory {root} of {run.path} not found: pass --data DIR")
    return MedVisionData(root)


def prompt_text(entry: dict[str, Any]) -> str:
    prompt = entry.get("prompt")
    if prompt is None:
        return "(this run's plan.jsonl predates stored prompts; only the prompt hash " + str(entry.get("prompt_hash")) + " is known)"
    parts = []
    for message in prompt:
        body = "".join(p.get("text", "") if p.get("type") == "text" else "[image]" for p in message.get("content", []))
        parts.append(f"[{message.get('role', '?')}]\n{body}")
    return "\n\n".join(parts)


def error_size(task: str, row: dict[str, Any]) -> float:
    """What 'worst' means: 1 - IoU for boxes, the relative error for measurements; inf when unparsed."""
    if row.get("status") != "ok":
        return math.inf
    m = row.get("metrics") or {}
    if task == "detection":
        iou = m.get("IoU")
        return 1.0 - iou if iou is not None else math.inf
    mre = m.get("MRE")
    return float(mre) if mre is not None else math.inf


def _box_rect(values: list[float] | None, w: int, h: int, colour: str, name: str) -> str:
    if not values or len(values) < 4 or any(v is None or not math.isfinite(v) for v in values[:4]):
        return ""
    x1, y1, x2, y2 = (float(v) for v in values[:4])
    x, y = min(x1, x2) * w, min(y1, y2) * h
    bw, bh = abs(x2 - x1) * w, abs(y2 - y1) * h
    return (f'<rect class="{name}" x="{x:.3f}" y="{y:.3f}" width="{bw:.3f}" height="{bh:.3f}" fill="none" '
            f'stroke="{colour}" stroke-width="2" vector-effect="non-scaling-stroke"/>')


def _values_text(task: str, row: dict[str, Any]) -> str:
    unit = row.get("unit") or ""
    true = row.get("target") or []
    pred = row.get("values")
    fmt = (lambda v: f"{v:.3f}") if task == "detection" else (lambda v: f"{v:.2f}")
    t = ", ".join(fmt(v) for v in true)
    p = ", ".join(fmt(v) for v in pred) if pred else "—"
    names = {"detection": "box (x1, y1, x2, y2, relative)", "tl_size": f"major, minor diameter ({unit})"}
    what = names.get(task, f"value ({unit})")
    return f"<b>{_h(what)}</b><br>true: {_h(t)}<br>predicted: {_h(p)}"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1f24;background:#fafbfc}
main{max-width:1400px;margin:0 auto;padding:24px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums;background:#fff}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right;white-space:nowrap} th{background:#f0f3f6}
td.l,th.l{text-align:left} .ci{color:#6e7781;font-size:11px;display:block}
img.plot{max-width:100%;background:#fff;border:1px solid #d0d7de;margin:6px 0}
.filters{position:sticky;top:0;background:#fafbfc;padding:8px 0;border-bottom:1px solid #d0d7de;z-index:2}
.filters label{margin-right:14px}
.gallery{display:flex;flex-wrap:wrap;gap:14px;margin-top:12px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px;width:520px;display:flex;gap:10px}
.card.bad{border-color:#cf222e}
.frame{position:relative;flex:none}
.frame img{display:block;image-rendering:pixelated}
.frame svg{position:absolute;left:0;top:0}
.meta{font-size:12px;overflow:hidden;min-width:0}
.meta code{word-break:break-all}
.meta pre{white-space:pre-wrap;background:#f6f8fa;padding:4px;max-height:150px;overflow:auto;margin:4px 0}
.status-ok{color:#1a7f37} .status-bad{color:#cf222e;font-weight:bold}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px -2px 10px}
.hidden{display:none}
"""

SCRIPT = """
(function(){
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var task = document.getElementById('f-task'), label = document.getElementById('f-label');
  var status = document.getElementById('f-status'), minerr = document.getElementById('f-minerr');
  var count = document.getElementById('f-count');
  function apply(){
    var shown = 0, lim = parseFloat(minerr.value);
    cards.forEach(function(c){
      var ok = (!task.value || c.dataset.task === task.value) &&
               (!label.value || c.dataset.label === label.value) &&
               (!status.value || c.dataset.status === status.value) &&
               (isNaN(lim) || parseFloat(c.dataset.err) >= lim);
      c.classList.toggle('hidden', !ok);
      if (ok) { shown += 1; }
    });
    count.textContent = shown + ' of ' + cards.length + ' samples';
  }
  [task, label, status, minerr].forEach(function(el){ el.addEventListener('input', apply); });
  apply();
})();
"""


def build_view(run_dir: Path, out: Path | None = None, *, data: str | None = None, max_samples: int = 200) -> Path:
    """Write the run's page; returns the output directory."""
    from . import plots
    from .protocol import Protocol
    from .schema import Sample

    run = ensure_scored(run_dir)
    out = Path(out) if out else Path(run_dir) / "view"
    (out / "img").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    protocol = Protocol.model_validate(run.results["protocol"])
    dataset = open_data(run, data)

    plot_files = []
    for stem, alt, fn in (("bars", "headline metrics with 95 % intervals", plots.bars),
                          ("box-ratio", "detection R/P/F1 per label against box-to-image ratio",
                           lambda runs, names: plots.box_ratio(runs, names, per_label=True)),
                          ("tl-scatter", "tumour/lesion predicted against true diameter", plots.tl_scatter),
                          ("ad-error", "angle/distance error by measurement", plots.ad_error)):
        (out / "plots" / f"{stem}.svg").write_bytes(fn([run], [run.model]))
        plot_files.append((alt, f"plots/{stem}.svg"))

    cards: list[str] = []
    labels: set[str] = set()
    for task in sorted(run.samples):
        rows = sorted(run.samples[task], key=lambda r: (-error_size(task, r), r["id"]))[:max_samples]
        for i, row in enumerate(rows):
            entry = run.plan.get((task, row["id"]), {})
            sample = entry.get("sample")
            labels.add(row.get("label", ""))
            img_html = '<div class="frame">(image unavailable)</div>'
            if sample:
                try:
                    image = protocol.render_image(dataset, Sample.model_validate(sample))
                except Exception as exc:  # a broken volume shows as text, the page still builds
                    img_html = f'<div class="frame">image unavailable: {_h(exc)}</div>'
                else:
                    name = f"img/{task}-{i:04d}.png"
                    image.save(out / name, format="PNG")
                    w, h = image.size
                    scale = DISPLAY / max(w, h)
                    dw, dh = round(w * scale), round(h * scale)
                    overlay = ""
                    if task == "detection":
                        overlay = (_box_rect(row.get("target"), w, h, GT_COLOUR, "gt")
                                   + _box_rect(row.get("values"), w, h, PRED_COLOUR, "pred"))
                    img_html = (f'<div class="frame" style="width:{dw}px;height:{dh}px">'
                                f'<img src="{name}" width="{dw}" height="{dh}" alt="{_h(row["id"])}">'
                                f'<svg width="{dw}" height="{dh}" viewBox="0 0 {w} {h}" preserveAspectRatio="none" '
                                f'data-image-size="{w},{h}">{overlay}</svg></div>')
            err = error_size(task, row)
            status = row.get("status", "?")
            answer = row.get("response") if row.get("response") is not None else f"(no answer: {row.get('error')})"
            metrics = row.get("metrics") or {}
            mtext = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if v is not None and k != "success")
            cards.append(
                f'<div class="card{" bad" if status != "ok" else ""}" data-task="{_h(task)}" data-label="{_h(row.get("label", ""))}" '
                f'data-status="{_h(status)}" data-err="{err if math.isfinite(err) else 1e308}" data-id="{_h(row["id"])}">'
                f"{img_html}<div class=\"meta\"><b>{_h(task)}</b> · {_h(row.get('label', ''))}<br>"
                f"<code>{_h(row['id'])}</code><br>"
                f"status: <span class=\"{'status-ok' if status == 'ok' else 'status-bad'}\">{_h(status)}</span>"
                f"{(' — ' + _h(row.get('detail'))) if row.get('detail') else ''}<br>"
                f"{_values_text(task, row)}<br>{_h(mtext)}"
                f"<details><summary>prompt</summary><pre>{_h(prompt_text(entry))}</pre></details>"
                f"<div>raw answer:</div><pre>{_h(answer)}</pre></div></div>"
            )

    key = comparability(run.results)
    p = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>{_h(run.model)} — medvision-eval run</title><style>{CSS}</style></head><body><main>"]
    p.append(f"<h1>{_h(run.model)}</h1><p>{_h(comparability_text(key))} · run directory <code>{_h(Path(run_dir))}</code></p>")
    for family, row in run.rows().items():
        sets = family_sets([row], family)
        metrics = family_metrics(family)
        p.append(f"<h2>{_h(FAMILY_TITLES[family])}</h2><table><thead><tr><th class=\"l\">set</th><th>n</th>"
                 + "".join(f"<th>{_h(SHORT.get(m, m))}</th>" for m in metrics) + "</tr></thead><tbody>")
        for s in sets:
            cells = "".join(f"<td>{_h(fmt_value(m, row.cell(s, m).value))}<span class=\"ci\">{_h(fmt_interval(m, row.cell(s, m)))}</span></td>"
                            for m in metrics)
            pooled = " (pooled)" if s in row.pooled else ""
            p.append(f'<tr><td class="l">{_h(s)}{pooled}</td><td>{row.n.get(s, 0)}</td>{cells}</tr>')
        p.append("</tbody></table>")
    p.append("<h2>Plots</h2>" + "".join(f'<img class="plot" src="{_h(rel)}" alt="{_h(alt)}">' for alt, rel in plot_files))
    p.append('<h2 id="gallery">Samples</h2>')
    p.append('<div class="filters">'
             '<label>task <select id="f-task"><option value="">all</option>'
             + "".join(f'<option value="{_h(t)}">{_h(t)}</option>' for t in sorted(run.samples)) + "</select></label>"
             '<label>label <select id="f-label"><option value="">all</option>'
             + "".join(f'<option value="{_h(lab)}">{_h(lab)}</option>' for lab in sorted(labels)) + "</select></label>"
             '<label>status <select id="f-status"><option value="">all</option>'
             + "".join(f'<option value="{s}">{s}</option>' for s in ("ok", "malformed", "missing", "refused", "error"))
             + "</select></label>"
             '<label>error at least <input id="f-minerr" type="number" step="0.05" min="0" placeholder="1-IoU or MRE"></label>'
             '<span id="f-count"></span>'
             f'<span class="legend"><span style="background:{GT_COLOUR}"></span>ground truth'
             f'<span style="background:{PRED_COLOUR}"></span>prediction</span></div>')
    p.append('<p>Unparsed samples first, then the largest errors (1 − IoU for boxes, relative error for measurements).</p>')
    p.append('<div class="gallery">' + "\n".join(cards) + "</div>")
    p.append(f"<script>{SCRIPT}</script></main></body></html>")
    (out / "index.html").write_text("\n".join(p) + "\n", encoding="utf-8")
    (out / "view.json").write_text(json.dumps({"run": str(run_dir), "samples": len(cards)}) + "\n", encoding="utf-8")
    return out
