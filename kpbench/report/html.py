"""One self-contained HTML page per run, or per comparison of runs: `kpbench html RUN [RUN ...] --out report.html`;
a `kpbench sweep` folder stands for its runs and speed tables, with its merged table and cell states.

Everything is inline: CSS, the figures (PNG as data: URIs) and a few lines of plain JavaScript that sort a table
when its header is clicked; the page reads the same without them, and fetches nothing from the network. It is
built from the run directories' files alone (manifest.json, metrics.json, the threshold and per-keypoint tables,
their figures), plus the worst images drawn from the detections cache when the images are on disk. A section whose
data are missing is left out with a line that says how to make it.

Numbers are shown as people read them (AP/AR in percent with one decimal, "n/a" for COCO's -1); each metric cell
also carries the full-precision value in `data-value`, so that a program reading the page gets COCO's fractions.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.io import atomic_write_text, read_csv_rows, read_json

WORST_IMAGES = 6
COMPARE_FILE = "compare.json"  # written by `kpbench compare A B --out A`
# What the tables below show in percent: PERCENT (one decimal, n/a for COCO's -1) or SIGNED (a difference, in signed
# percent points); every other number as it is. `_scale` picks it from the column's name.
PERCENT, SIGNED = "percent", "signed"
# The sweep's merged table (kpbench.report.sweeps) as the page shows it: what was measured first, AP beside speed,
# the long cell names last.
SWEEP_PAGE_COLUMNS = (
    "model", "weights", "device", "size", "dtype", "variant", "fps", "kp_AP", "box_AP", "ms_per_image", "median_ms",
    "p90_ms", "status", "error", "kind", "cell", "ap_from", "ap_note",
)  # fmt: skip
COMPARE_SCALES = {"a": PERCENT, "b": PERCENT, "delta": SIGNED, "low": SIGNED, "high": SIGNED}  # compare.json's rows
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1.5rem;color:#1d1d1f;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 1rem}h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}h3{font-size:1.02rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-variant-numeric:tabular-nums}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e5e5e5;text-align:right}th{background:#f5f5f7;cursor:pointer}
td:first-child,th:first-child{text-align:left}.missing{color:#86868b;font-style:italic}
.kv td{text-align:left}.kv td:first-child{color:#555;white-space:nowrap}img{max-width:100%;height:auto;
border:1px solid #eee}figure{margin:.5rem 0 1rem}figcaption{color:#555;font-size:.9rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:.8rem}
.wide{overflow-x:auto}ul.dev{margin:.2rem 0 .8rem 1.2rem;padding:0}code{font-size:.9em}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.4rem .7rem}details summary{cursor:pointer;color:#555}
@media print{body{max-width:none;padding:0;font-size:11pt}th{cursor:auto}h2{break-after:avoid}
figure,table{break-inside:avoid}}
"""
# Click a header to sort by that column (numbers by data-value when present); the page works without it.
_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function(th,col){th.addEventListener("click",function(){
var body=th.closest("table").tBodies[0],rows=Array.from(body.rows),asc=th.dataset.asc!=="1";th.dataset.asc=asc?"1":"0";
function key(r){var c=r.cells[col],v=c.dataset.value!==undefined?parseFloat(c.dataset.value):parseFloat(c.textContent);
return isNaN(v)?c.textContent:v}rows.sort(function(a,b){var x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*(asc?1:-1)});
rows.forEach(function(r){body.appendChild(r)})})});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def percent_text(value: float) -> str:
    """An AP/AR for people: percent with one decimal; COCO's -1 as "n/a"."""
    return "n/a" if value < 0 else f"{100 * value:.1f}"


def _metric_cell(value: Any, run: str, iou_type: str, stat: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "<td>n/a</td>"
    return (f'<td class="metric" data-run="{_e(run)}" data-iou-type="{_e(iou_type)}" data-stat="{_e(stat)}" '
            f'data-value="{value!r}">{percent_text(float(value))}</td>')


def _scale(column: str) -> str | None:
    """How a column is shown: AP/AR stats (AP, kp_AP50, published_box_AP, ...), fractions (frac_*) and rates
    (precision, recall, F1) in percent, AP gains (gain_*) in signed percent points; None: as it is."""
    from kpbench.report.tables import is_ap_column, is_rate_column

    if column.startswith("gain_"):
        return SIGNED
    if is_ap_column(column) or is_rate_column(column) or column.startswith("frac_"):
        return PERCENT
    return None


def _plain_cell(value: Any, column: str = "", scale: str | None = None) -> str:
    """A table cell; numbers shown on `scale` (else the column's own, `_scale`) keep the full value in data-value."""
    scale = scale or _scale(column)
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if scale == PERCENT and number:
        return f'<td data-value="{value!r}">{percent_text(float(value))}</td>'
    if scale == SIGNED and number:
        return f'<td data-value="{value!r}">{100 * float(value):+.1f}</td>'
    if scale is not None and value is None:
        return "<td>n/a</td>"
    if isinstance(value, float):
        shown = "" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
        return f'<td data-value="{value!r}">{shown}</td>'
    if value is None:
        return "<td></td>"
    return f"<td>{_e(value)}</td>"


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
           scales: dict[str, str] | None = None) -> str:
    """A sortable table; `scales` overrides the scale of columns whose names do not say it (`_scale`)."""
    if not rows:
        return ""
    columns = list(columns or rows[0])
    scales = scales or {}
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_plain_cell(r.get(c), c, scales.get(c)) for c in columns) + "</tr>" for r in rows)
    return (f'<div class="wide"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


@dataclass
class PageInputs:
    """What one page shows: run directories with the name the page gives each, speed CSVs, and sweep folders."""

    runs: list[tuple[Path, str]] = field(default_factory=list)
    speed_csvs: list[Path] = field(default_factory=list)
    sweeps: list[Path] = field(default_factory=list)


def split_inputs(paths: Sequence[str | Path], speed_csvs: Sequence[str | Path] = ()) -> PageInputs:
    """The run directories, speed CSVs and sweep folders among `kpbench html`'s arguments.

    - A .csv file is a speed CSV: the shell expands `--speed results/speed/*.csv` to `--speed a.csv b.csv`, and
      every CSV after the first arrives as an argument of its own.
    - A `kpbench sweep` folder (sweep.json) gives every run cell that made a run directory (named by its cell) and
      every speed cell's newest table, and the page gets the sweep's merged table and cell states.
    - Any other folder is a run directory; any other file is an error that says what the command takes.
    """
    from kpbench.sweep.layout import is_sweep_dir

    inputs = PageInputs(speed_csvs=[Path(p) for p in speed_csvs])
    sweep_runs: list[tuple[Path, str, Path]] = []  # (run directory, cell, sweep folder)
    for path in map(Path, paths):
        if path.suffix.lower() == ".csv" and not path.is_dir():
            inputs.speed_csvs.append(path)
        elif path.is_file():
            raise KpbenchError(f"{path}: a file, not a run directory (html takes run directories, sweep folders, "
                               "and speed CSVs after --speed)")
        elif path.is_dir() and is_sweep_dir(path):
            from kpbench.report.sweeps import sweep_outputs

            runs, speeds = sweep_outputs(path)
            sweep_runs += [(run_dir, cell, path) for cell, run_dir in runs]
            inputs.speed_csvs += [csv_path for _, csv_path in speeds]
            inputs.sweeps.append(path)
        else:
            inputs.runs.append((path, path.name))
    # A cell's name says what it is; two sweeps may hold cells of one name: then the sweep folder's name goes first.
    cells = [cell for _, cell, _ in sweep_runs]
    inputs.runs += [(run_dir, cell if cells.count(cell) == 1 else f"{sweep.name}/{cell}")
                    for run_dir, cell, sweep in sweep_runs]
    inputs.speed_csvs = list(dict.fromkeys(inputs.speed_csvs))
    inputs.sweeps = list(dict.fromkeys(inputs.sweeps))
    return inputs


def _read_run(run_dir: Path, name: str | None = None) -> dict[str, Any]:
    from kpbench.runs.directory import read_manifest

    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    manifest = read_manifest(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.is_file() else None
    if metrics is not None and not isinstance(metrics, dict):
        raise KpbenchError(f"{metrics_path}: expected a JSON object of metrics by iou type")
    return {"dir": run_dir, "name": name or run_dir.name, "manifest": manifest, "metrics": metrics}


def _annotation_path(manifest: dict[str, Any]) -> str:
    annotations = manifest.get("annotation_file")
    return str(annotations.get("path", "")) if isinstance(annotations, dict) else str(annotations or "")


def _input_size(protocol: dict[str, Any]) -> str:
    own = protocol.get("model_protocol")
    if isinstance(own, dict) and "imgsz" in own:
        return f"imgsz {own['imgsz']}"
    return f"{protocol.get('min_size', '')} / {protocol.get('max_size', '')}"


def _protocol_text(manifest: dict[str, Any]) -> str:
    """Whole image, or top-down with its person boxes, their own box AP and post-processing."""
    from kpbench.evaluation.person_boxes import person_box_line

    return person_box_line(manifest) or "whole image (the model finds the persons itself)"


def _model_section(run: dict[str, Any]) -> str:
    m = run["manifest"]
    model = m.get("model") if isinstance(m.get("model"), dict) else {}
    protocol = m.get("protocol") if isinstance(m.get("protocol"), dict) else {}
    rows = [
        ("model", model.get("name") or model.get("spec") or "Keypoint R-CNN (torchvision)"),
        ("weights", model.get("weights")),
        ("weights sha256", model.get("checkpoint_sha256") or model.get("weights_sha256")),
        ("dataset", f"{_annotation_path(m)} ({m.get('num_images', '?')} images)"),
        ("input size", _input_size(protocol)),
        ("protocol", _protocol_text(m)),
        ("status", m.get("status")),
        ("created", m.get("created_at")),
    ]
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows if v not in (None, "", " / "))
    deviations = m.get("deviations") or []
    dev = ("<h3>Deviations from the published protocol</h3><ul class=\"dev\">"
           + "".join(f"<li>{_e(d)}</li>" for d in deviations) + "</ul>") if deviations else \
        "<p>The published protocol, without deviations.</p>"
    from kpbench.report.html_sections import random_weights_note

    return f'<table class="kv"><tbody>{body}</tbody></table>{random_weights_note(m)}{dev}'


def _metrics_section(run: dict[str, Any]) -> str:
    metrics = run["metrics"]
    if not metrics:
        return _missing(f"No metrics.json: run `kpbench evaluate --run {run['dir']}` to score the run.")
    published = run["manifest"].get("published") if isinstance(run["manifest"].get("published"), dict) else {}
    parts = []
    for iou_type, stats in metrics.items():
        if not isinstance(stats, dict) or iou_type == "params":
            continue
        head = "".join(f"<th>{_e(s)}</th>" for s in stats)
        row = "".join(_metric_cell(v, run["name"], iou_type, s) for s, v in stats.items())
        ref = published.get("kp_AP" if iou_type == "keypoints" else "box_AP") if published else None
        source = (run["manifest"].get("protocol") or {}).get("published_protocol") or "torchvision's published AP"
        ref_line = (f"<p>Published AP for these weights: {float(ref):.1f} ({_e(source)}).</p>"
                    if isinstance(ref, (int, float)) else "")
        parts.append(f"<h3>{_e(iou_type)}</h3><table><thead><tr>{head}</tr></thead><tbody><tr>{row}</tr></tbody>"
                     f"</table>{ref_line}")
    return "".join(parts) + f"<p>{_e(PERCENT_NOTE)}</p>"


# What the numbers of each table are, under it, where the column names do not say it all.
PERCENT_NOTE = "AP and AR in percent; n/a where COCO has no ground truth in that range."
TABLE_NOTES = {
    "thresholds_person": "AP, AR, precision, recall and F1 in percent (n/a: no ground truth in that range, or a "
                         "ratio of 0/0), as `kpbench thresholds` prints them.",
    "keypoints": "frac_* in percent; mean similarity in [0, 1]; median error divided by sqrt(GT area).",
    "errors_ap_gain": "AP in percent; gain_* in percent points over the uncorrected detections.",
    "errors_keypoints": "Counts of labelled keypoints; frac_* in percent of them.",
    "sensitivity": PERCENT_NOTE,
    "score_threshold": "LRP, loc, fp, fn and F1 in percent; the thresholds are person scores.",
}
# Columns whose names do not say their scale, per table: score_threshold's LRP components are ratios in [0, 1].
TABLE_SCALES = {"score_threshold": {"lrp": PERCENT, "loc": PERCENT, "fp": PERCENT, "fn": PERCENT}}


def _note(stem: str) -> str:
    return f"<p>{_e(TABLE_NOTES[stem])}</p>" if stem in TABLE_NOTES else ""


def _csv_section(run_dir: Path, stem: str, figure: str, caption: str, how: str) -> str:
    path = run_dir / f"{stem}.csv"
    if not path.is_file():
        return _missing(how)
    out = _table(read_csv_rows(path)) + _note(stem)
    if (run_dir / figure).is_file():
        out += _image(run_dir / figure, caption)
    return out


# What `kpbench analyze RUN_DIR` writes, in the order the page shows it: (CSV stem, heading).
ANALYSIS_TABLES: tuple[tuple[str, str], ...] = (
    ("errors_ap_gain", "AP gained by correcting each error"),
    ("errors_keypoints", "Keypoint localisation errors"),
    ("sensitivity", "AP by visible keypoints and by overlap"),
    ("score_threshold", "LRP-optimal and best-F1 person-score thresholds"),
)


def _analysis_section(run_dir: Path) -> str:
    found = [(stem, title) for stem, title in ANALYSIS_TABLES if (run_dir / f"{stem}.csv").is_file()]
    if not found:
        return _missing(f"No error analysis: run `kpbench analyze {run_dir}`.")
    out = "".join(f"<h3>{_e(title)}</h3>{_table(read_csv_rows(run_dir / f'{stem}.csv'), scales=TABLE_SCALES.get(stem))}"
                  f"{_note(stem)}" for stem, title in found)
    if (run_dir / "errors_pr_curves.png").is_file():
        out += _image(run_dir / "errors_pr_curves.png", "PR curves after each cumulative correction")
    return out


def worst_images(run_dir: Path, n: int = WORST_IMAGES) -> list[tuple[int, int, int]]:
    """(image id, missed GT, unmatched confident detections) of the `n` images that lose the most at OKS 0.5:
    GT persons COCOeval left unmatched plus detections scored above 0.5 it matched to nobody (area "all")."""
    from kpbench.evaluation.cocoeval import iou_threshold_index
    from kpbench.evaluation.runeval import evaluate_run

    result = evaluate_run(run_dir, write=False)["keypoints"]
    table = result.table_matches()  # the default backend's match arrays, read as they are (no ImageEval is built)
    if table is None:
        raise KpbenchError("the run's evaluation exposes no per-image matches (its protocol is not COCOeval's own)")
    t = iou_threshold_index(result, 0.5)
    a = result.params.area_labels.index("all")
    images = len(table.image_ids)
    missed = np.bincount(table.gt_unit[(table.gt_dt[a, t] < 0) & ~table.gt_ignore[a]] % images, minlength=images)
    spurious_rows = ~table.counted()[a, t] & ~table.dt_ignore[a, t] & (table.dt_scores > 0.5)
    spurious = np.bincount(table.dt_unit[spurious_rows] % images, minlength=images)
    losses = [(int(table.image_ids[i]), int(missed[i]), int(spurious[i]))
              for i in np.flatnonzero(missed + spurious).tolist()]
    losses.sort(key=lambda x: (-(x[1] + x[2]), x[0]))
    return losses[:n]


def _worst_section(run: dict[str, Any]) -> str:
    from kpbench.report.draw import draw_run_images
    from kpbench.report.html_sections import image_credit

    run_dir = run["dir"]
    try:
        worst = worst_images(run_dir)
    except KpbenchError as exc:
        return _missing(f"Worst images left out: {exc}")
    if not worst:
        return _missing("No image loses a person or has a confident false positive at OKS 0.5.")
    import tempfile

    from kpbench.data.images import read_image_pil  # not PIL.Image.open, which ultralytics patches

    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            paths = draw_run_images(run_dir, image_ids=[w[0] for w in worst], gt=True, out=tmp, score_thresh=0.5)
        except KpbenchError as exc:
            return _missing(f"Worst images left out: {exc}")
        for (image_id, missed, spurious), path in zip(worst, paths):
            with read_image_pil(path) as im:
                im.thumbnail((900, 900))
                data = base64.b64encode(_png_bytes(im)).decode("ascii")
            credit = image_credit(run_dir, image_id)
            figures.append(f'<figure><img alt="image {image_id}" src="data:image/png;base64,{data}"><figcaption>'
                           f"image {image_id}: {missed} missed, {spurious} false positive(s) above 0.5"
                           f"{'<br>' + _e(credit) if credit else ''}</figcaption></figure>")
    return ("<p>Detections scored above 0.5 (left) beside the ground truth (right), for the images that lose most "
            "at OKS 0.5.</p>" + '<div class="grid">' + "".join(figures) + "</div>")


def _speed_section(speed_csvs: Sequence[Path]) -> str:
    if not speed_csvs:
        return _missing("No speed table given: add `--speed results/speed/*.csv` (from `kpbench speed`).")
    from kpbench.report.tables import speed_report

    tables = speed_report(list(speed_csvs))
    table, topdown = tables.get("table"), tables.get("topdown")
    if (table is None or table.empty) and (topdown is None or topdown.empty):
        return _missing("The speed files hold no rows.")
    runtimes = tables.get("runtimes")  # the runtime x size table (kpbench.report.runtimes), when there is one
    extra = "" if runtimes is None else ("<h3>Runtimes: ΔAP against eager, 95% paired bootstrap interval in points"
                                         "</h3>" + _table(runtimes.to_dict("records")))
    if topdown is not None and not topdown.empty:  # kpbench speed --person-boxes: per crop, image and person
        extra += "<h3>Top-down: per crop pass, per image and per person</h3>" + _table(topdown.to_dict("records"))
    return ("" if table is None or table.empty else _table(table.to_dict("records"))) + extra


def _comparison_section(runs: Sequence[dict[str, Any]]) -> str:
    stats = [("keypoints", s) for s in ("AP", "AP50", "AP75", "AR")] + [("bbox", s) for s in ("AP", "AP50")]
    head = "<th>run</th>" + "".join(f"<th>{_e(t)} {_e(s)}</th>" for t, s in stats)
    rows = []
    for run in runs:
        metrics = run["metrics"] or {}
        cells = "".join(_metric_cell((metrics.get(t) or {}).get(s), run["name"], t, s) for t, s in stats)
        rows.append(f"<tr><td>{_e(run['name'])}</td>{cells}</tr>")
    table = f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return table + _intervals_section(runs)


def _intervals_section(runs: Sequence[dict[str, Any]]) -> str:
    """The ΔAP intervals of `kpbench compare A B --out A` (A/compare.json) between the runs shown."""
    names = {str(r["dir"]) for r in runs} | {r["name"] for r in runs}
    parts = []
    for run in runs:
        path = run["dir"] / COMPARE_FILE
        if not path.is_file():
            continue
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("stats"), list):
            continue
        other = str(data.get("run_b", ""))
        if other not in names and Path(other).name not in names:
            continue
        rows = [{k: r.get(k) for k in ("stat", "a", "b", "delta", "low", "high", "significant")}
                for r in data["stats"] if isinstance(r, dict)]
        level = next((r.get("level") for r in data["stats"] if isinstance(r, dict) and r.get("level")), None)
        parts.append(f"<h3>ΔAP: {_e(Path(other).name)} − {_e(run['name'])} ({_e(data.get('iou_type', ''))}, paired "
                     f"bootstrap{f', {100 * level:.0f}% interval' if level else ''})</h3>"
                     + _table(rows, scales=COMPARE_SCALES)
                     + "<p>a and b in percent; delta, low and high in percent points.</p>")
    if not parts:
        first, second = (runs[0]["dir"], runs[1]["dir"]) if len(runs) > 1 else (runs[0]["dir"], "RUN_B")
        return _missing(f"ΔAP confidence intervals: run `kpbench compare {first} {second} --out {first}` to add them.")
    return "".join(parts)


def _run_sections(run: dict[str, Any], with_images: bool) -> str:
    from kpbench.report import html_sections

    d = run["dir"]
    kind = str(run["manifest"].get("keypoint_score_kind") or "logit")
    sections = [
        ("Model, data and protocol", _model_section(run)),
        ("Metrics", _metrics_section(run)),
        ("AP per keypoint and per keypoint group", html_sections.keypoint_ap_section(d)),
        ("Person-score thresholds", _csv_section(d, "thresholds_person", "threshold_curves.png", "threshold curves",
                                                 f"No threshold sweep: run `kpbench thresholds {d}`.")),
        ("Keypoint-score thresholds", html_sections.keypoint_threshold_section(d, kind)),
        ("Per-keypoint breakdown", _csv_section(d, "keypoints", "keypoints.png", "per-keypoint accuracy",
                                                f"No breakdown: run `kpbench keypoints {d}`.")),
        ("PR curves", _image(d / "pr_curves.png", "precision-recall curves") if (d / "pr_curves.png").is_file()
         else _missing(f"No PR curves: run `kpbench plot {d}`.")),
        ("Error analysis", _analysis_section(d)),
    ]
    if with_images:
        sections.append(("Worst images", _worst_section(run)))
    credits = html_sections.image_credits_section(d)
    if credits:
        sections.append(("Images: credits and licences", credits))
    return "".join(f"<section><h2>{_e(title)}</h2>{body}</section>" for title, body in sections)


def _sweep_section(sweeps: Sequence[Path]) -> str:
    """The sweeps' merged table (every speed row and run cell, AP beside speed: `kpbench report SWEEP_DIR`) and
    their cells' states."""
    from kpbench.report.sweeps import sweep_report

    tables = sweep_report(list(sweeps))
    merged = _records(tables["table"])
    columns = [c for c in SWEEP_PAGE_COLUMNS if any(r.get(c) not in (None, "") for r in merged)]
    cells = _records(tables["cells"])
    cell_columns = [c for c in tables["cells"].columns if c != "sweep" or len(sweeps) > 1]
    merged_html = (_table(merged, columns) if merged
                   else _missing("No cell has a result yet: `kpbench sweep SWEEP_DIR --status` says where they are."))
    return ("<h3>Every run and speed row, AP beside speed</h3><p>A speed row that measured no AP itself carries the "
            "AP of the one run of the sweep that ran what it timed (<code>ap_from</code>: same model and weights file, "
            "and the settings that change AP); <code>ap_note</code> says why a row has none; AP in "
            "percent; columns empty in every row are left out.</p>" + merged_html + "<h3>Cells</h3>"
            + _table(cells, cell_columns))


def _records(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows as dicts, with None where pandas has NaN."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def build_html(run_dirs: Sequence[str | Path], speed_csvs: Sequence[str | Path] = (), images: bool = True) -> str:
    """The report page for one or more run directories, `kpbench sweep` folders and `kpbench speed` CSVs, as one
    HTML string. A .csv among `run_dirs` is taken as a speed CSV, a sweep folder as its runs, speed tables, merged
    table and cell states (`split_inputs`)."""
    inputs = split_inputs(run_dirs, speed_csvs)
    if not inputs.runs and not inputs.sweeps:
        raise KpbenchError("html: give at least one run directory (made by `kpbench run`) or sweep folder (made by "
                           "`kpbench sweep`)")
    runs = [_read_run(d, name) for d, name in inputs.runs]
    if inputs.sweeps:
        names = ", ".join(sweep.name for sweep in inputs.sweeps)
        title = f"kpbench: sweep{'s' if len(inputs.sweeps) > 1 else ''} {names}"
    else:
        title = f"kpbench: {runs[0]['name']}" if len(runs) == 1 else f"kpbench: {len(runs)} runs compared"
    parts = [f"<h1>{_e(title)}</h1>"]
    if inputs.sweeps:
        parts.append(f"<section><h2>Sweep</h2>{_sweep_section(inputs.sweeps)}</section>")
    if len(runs) > 1:
        parts.append(f"<section><h2>Comparison</h2>{_comparison_section(runs)}</section>")
    for run in runs:
        if len(runs) > 1 or inputs.sweeps:
            parts.append(f"<h1>{_e(run['name'])}</h1>")
        parts.append(_run_sections(run, images))
    parts.append(f"<section><h2>Speed</h2>{_speed_section(inputs.speed_csvs)}</section>")
    from kpbench import __version__

    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{''.join(parts)}"
            f"<footer><p class=\"missing\">Made by kpbench {_e(__version__)} from the run directories' files.</p>"
            f"</footer><script>{_SORT_JS}</script></body></html>\n")


def write_html(
    run_dirs: Sequence[str | Path], out: str | Path, speed_csvs: Sequence[str | Path] = (), images: bool = True
) -> Path:
    """Write the report page (`build_html`) atomically; returns its path."""
    out = Path(out)
    if out.is_dir():
        raise KpbenchError(f"{out}: is a folder; --out takes the HTML file to write")
    page = build_html(run_dirs, speed_csvs, images)
    atomic_write_text(out, page)
    return out
