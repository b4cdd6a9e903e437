"""Every matplotlib figure kpbench draws: PR curves, threshold curves, the per-keypoint breakdown, and speed
against size and accuracy. A leaf module: it takes rows and arrays, and imports nothing from the stages.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas: no pyplot, no global backend switch (a
notebook's backend stays as it is), and nothing opens a window. Every figure has a fixed size in pixels (a fixed
figsize at `DPI`, saved without "tight" cropping), so files are comparable between runs. Writes are atomic.
matplotlib is imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.io import atomic_write_bytes, ensure_output_dir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kpbench.evaluation.cocoeval import EvalResult

DPI = 100
PR_PANEL_SIZE = (5.0, 4.0)  # inches per panel: 500 x 400 pixels
SPEED_SIZE = (8.0, 5.0)  # 800 x 500 pixels
PR_FILE = "pr_curves.png"
SPEED_FPS_FILE = "speed_fps.png"
SPEED_PARETO_FILE = "speed_pareto.png"
_MEASURE = {"keypoints": "OKS", "bbox": "IoU"}
_TITLE = {"keypoints": "keypoints", "bbox": "boxes"}
CURVES_DPI = 120  # 780 x 540 pixels with one panel, 1560 x 540 with two
NO_MATCHED_PERSONS = "no matched persons"


def new_figure(width_in: float, height_in: float) -> Figure:
    """A Figure with an Agg canvas attached, `width_in * DPI` x `height_in * DPI` pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG atomically (never `bbox_inches="tight"`: the size in pixels stays fixed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def pr_curves(result: EvalResult) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{label: (recall, precision)} at IoU/OKS 0.50, 0.75 and the mean over all thresholds (0.50:0.95).

    Taken from COCOeval's interpolated precision [T, R, K, A, M] at area "all", the largest maxDets and the
    schema's category; the mean of a curve over its recall points is COCO's AP50, AP75 or AP. A curve is empty
    when the evaluation had no GT (COCO's -1).
    """
    p = result.params
    # The keypoint category the schema names; for boxes, the first category (a person GT has only that one).
    category = result.schema.category_id if result.schema is not None else None
    k = p.category_ids.index(category) if category in p.category_ids else 0
    a = p.area_labels.index("all")
    precision = np.asarray(result.precision)[:, :, k, a, -1]  # (T, R)
    recall = np.asarray(p.recall_thresholds, dtype=np.float64)
    measure = _MEASURE.get(result.iou_type, "IoU")
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for thr in (0.5, 0.75):
        hits = np.flatnonzero(np.isclose(p.iou_thresholds, thr))
        if len(hits):
            curves[f"{measure} {thr:.2f}"] = (recall, precision[hits[0]])
    lo, hi = float(p.iou_thresholds[0]), float(p.iou_thresholds[-1])
    curves[f"mean {measure} {lo:.2f}:{hi:.2f}"] = (recall, precision.mean(axis=0))
    if (precision < 0).all():  # no GT: nothing to draw
        return {label: (recall[:0], curve[:0]) for label, (_, curve) in curves.items()}
    return curves


def plot_pr_curves(results: EvalResult | Mapping[str, EvalResult], path: str | Path) -> Path:
    """PR curves (one panel per evaluation: keypoints, boxes) with each curve's AP in the legend; a PNG of
    500 x 400 pixels per panel."""
    evals = {results.iou_type: results} if not isinstance(results, Mapping) else dict(results)
    if not evals:
        raise KpbenchError("plot_pr_curves: no evaluation given")
    fig = new_figure(PR_PANEL_SIZE[0] * len(evals), PR_PANEL_SIZE[1])
    axes = np.atleast_1d(fig.subplots(1, len(evals)))
    for ax, (iou_type, result) in zip(axes, evals.items()):
        for (label, (recall, precision)), style in zip(pr_curves(result).items(), ("-", "--", ":")):
            ap = float(precision.mean()) if precision.size else math.nan
            ax.plot(recall, precision, style, linewidth=2, label=f"{label}: AP {100 * ap:.1f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(
            f"{_TITLE.get(iou_type, iou_type)} ({result.num_gt} GT, {result.num_results} detections)", fontsize=10
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


SPEED_REQUIRED = ("device_name", "size", "variant", "fps")


def read_speed_rows(csv_paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The plottable rows of `kpbench speed` CSV files, read by the one speed-CSV reader
    (`kpbench.report.tables.read_speed_files`): status ok (or none) with a numeric fps and size."""
    from kpbench.report.tables import read_speed_files

    if not csv_paths:
        raise KpbenchError("plot: no speed CSV files given")
    table = read_speed_files(csv_paths, SPEED_REQUIRED)
    rows: list[dict[str, Any]] = []
    for record in table.to_dict("records"):
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
        if row.get("status") not in (None, "ok"):
            continue
        if not isinstance(row.get("fps"), (int, float)) or not isinstance(row.get("size"), (int, float)):
            continue
        rows.append(row)
    if not rows:
        raise KpbenchError(f"{', '.join(map(str, csv_paths))}: no successful speed rows to plot")
    return rows


def _variant_label(row: dict[str, Any]) -> str:
    """The variant, plus what else changes the timing: a non-default box threshold, synthetic images."""
    label = str(row["variant"])
    threshold = row.get("box_score_thresh")
    if isinstance(threshold, (int, float)) and threshold != 0.05:
        label += f" thr{threshold:g}"
    if row.get("synthetic") in (True, "True", "true", 1):
        label += " synthetic"
    return label


def _model_label(row: dict[str, Any]) -> str:
    model = row.get("model")
    return "" if model is None or (isinstance(model, float) and math.isnan(model)) else str(model)


def _series(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Rows grouped by (device, model, variant label), each group sorted by size."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault((str(row["device_name"]), _model_label(row), _variant_label(row)), []).append(row)
    return {key: sorted(group, key=lambda r: r["size"]) for key, group in sorted(out.items())}


def _series_label(key: tuple[str, str, str]) -> str:
    return " | ".join(part for part in key if part)


def ms_per_image(row: dict[str, Any]) -> float:
    """A speed row's model time per image: its `ms_per_image` column, else 1000 / fps (CSVs from before it)."""
    value = row.get("ms_per_image")
    if isinstance(value, (int, float)) and not math.isnan(value):
        return float(value)
    return 1000.0 / float(row["fps"])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, value) that no other point dominates (cost <= and value >=, one of them
    strictly), in ascending cost: the fastest way to each accuracy. Of identical points the first is kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:  # strictly more accurate than everything cheaper or as cheap
            front.append(i)
            best = points[i][1]
    return front


# Line styles for many series: colour i % 10 with marker i % 7 (7 and 10 are coprime, so the pair repeats only
# after 70 series) and the line style changing every 10 series, so that 12 or more lines stay distinguishable.
_COLORS = tuple(f"C{i}" for i in range(10))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LINESTYLES = ("-", "--", "-.", ":")


def series_styles(keys: Sequence[Any]) -> dict[Any, dict[str, str]]:
    """A distinct {color, marker, linestyle} per series key, in the order given (unique for up to 70 series)."""
    return {
        key: {"color": _COLORS[i % 10], "marker": _MARKERS[i % 7], "linestyle": _LINESTYLES[(i // 10) % 4]}
        for i, key in enumerate(keys)
    }


def plot_speed(csv_paths: Sequence[str | Path], out_dir: str | Path | None = None) -> list[Path]:
    """From `kpbench speed` CSVs: speed_fps.png (FPS against input size, one line per device, model and variant)
    and, where accuracy was measured, speed_pareto.png (keypoint AP against ms per image over models and sizes,
    points labelled by size, with each device's Pareto frontier: `pareto_front`).

    Both are 800 x 500 PNGs in `out_dir` (default: the first CSV's folder). Failed and skipped rows are left out.
    Each series gets its own colour, marker and line style (`series_styles`), the same in both.
    """
    rows = read_speed_rows(csv_paths)
    if out_dir is not None:
        out = ensure_output_dir(out_dir, "--out")
    else:
        out = ensure_output_dir(Path(csv_paths[0]).parent, "output folder")
    series = _series(rows)
    written = []
    models = sorted({key[1] for key in series if key[1]})

    fig = new_figure(*SPEED_SIZE)
    ax = fig.subplots()
    style = series_styles(list(series))  # the same series, the same style in both figures
    for key, group in series.items():
        ax.plot([r["size"] for r in group], [r["fps"] for r in group], label=_series_label(key), **style[key])
    ax.set_xlabel("input size (pixels: Keypoint R-CNN's short side, YOLO's and MediaPipe's long side)")
    ax.set_ylabel("images per second")
    fps = [r["fps"] for r in rows if r["fps"] > 0]
    if fps and max(fps) > 10 * min(fps):
        ax.set_yscale("log")  # a CPU and a GPU in one figure: on a linear axis the CPU line would lie flat at 0
        ax.set_ylabel("images per second (log scale)")
    else:
        ax.set_ylim(bottom=0)
    ax.set_title(f"{' vs '.join(models) if models else 'Model'} throughput by input size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    written.append(save_figure(fig, out / SPEED_FPS_FILE))

    measured = {key: [r for r in group if isinstance(r.get("kp_AP"), (int, float))] for key, group in series.items()}
    measured = {key: group for key, group in measured.items() if group}
    if measured:
        fig = new_figure(*SPEED_SIZE)
        ax = fig.subplots()
        for key, group in measured.items():
            ms = [ms_per_image(r) for r in group]
            ap = [100 * r["kp_AP"] for r in group]  # kpbench stores AP as a fraction; percent reads like COCO's
            ax.plot(ms, ap, label=_series_label(key), **style[key])
            for x, y, r in zip(ms, ap, group):
                ax.annotate(str(r["size"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        # One frontier per device: times on different devices are not one trade-off.
        for device in sorted({key[0] for key in measured}):
            points = [(ms_per_image(r), 100 * r["kp_AP"]) for key, group in measured.items() if key[0] == device
                      for r in group]
            front = [points[i] for i in pareto_front(points)]
            if len(front) > 1:
                ax.plot([p[0] for p in front], [p[1] for p in front], color="0.5", linestyle=":", linewidth=2,
                        alpha=0.7, zorder=0, gid="pareto", label=f"Pareto frontier ({device})")
        ms_all = [ms_per_image(r) for group in measured.values() for r in group]
        if min(ms_all) > 0 and max(ms_all) > 10 * min(ms_all):
            ax.set_xscale("log")
        ax.set_xlabel("model time per image (ms; lower is faster)")
        ax.set_ylabel("keypoint AP (%)")
        ax.set_title("Accuracy against speed over models and sizes (points labelled by input size)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        written.append(save_figure(fig, out / SPEED_PARETO_FILE))
    return written


# Per-keypoint breakdown


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def keypoint_breakdown_figure(
    rows: Sequence[dict[str, Any]], title: str | None = None, match_oks: float = 0.5
) -> Figure:
    """The figure of `plot_keypoint_breakdown` (1000x600 pixels, Agg canvas)."""
    body = [r for r in rows if r["keypoint"] != "all"]
    pooled = next((r for r in rows if r["keypoint"] == "all"), None)
    n = int(pooled["n"]) if pooled is not None else sum(int(r["n"]) for r in body)
    names = [r["keypoint"].replace("_", " ") for r in body]
    y = np.arange(len(body))
    fig = new_figure(10, 6)
    left, right = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    height = 0.27
    for offset, key, label, color in (
        (-height, "mean_similarity", "mean similarity", "#1f77b4"),
        (0.0, "frac_ks_50", "similarity >= 0.50", "#2ca02c"),
        (height, "frac_ks_75", "similarity >= 0.75", "#ff7f0e"),
    ):
        left.barh(y + offset, [_num(r[key]) for r in body], height=height, label=label, color=color)
        if pooled is not None and not math.isnan(_num(pooled[key])):
            left.axvline(_num(pooled[key]), color=color, linestyle="--", linewidth=1)
    left.set_xlim(0, 1)
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlabel("keypoint similarity (dashed: all keypoints)")
    left.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize=8, frameon=False)
    right.barh(y, [_num(r["median_error"]) for r in body], color="#d62728")
    if pooled is not None and not math.isnan(_num(pooled["median_error"])):
        right.axvline(_num(pooled["median_error"]), color="black", linestyle="--", linewidth=1)
    right.set_xlabel("median error / sqrt(GT area)")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    if n == 0:
        # Nothing matched at OKS >= 0.5: every bar is NaN. Say so instead of leaving two empty axes.
        right.set_xlim(0, 1)
        for ax in (left, right):
            ax.text(0.5, 0.5, f"{NO_MATCHED_PERSONS}\n(OKS >= {match_oks:g})", transform=ax.transAxes, ha="center",
                    va="center", fontsize=12, color="0.35")
    fig.suptitle(title or f"Per-keypoint accuracy of matched detections (OKS >= 0.5, {n} GT keypoints)")
    fig.tight_layout()
    return fig


def plot_keypoint_breakdown(
    rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None, match_oks: float = 0.5
) -> Path:
    """A bar chart of the breakdown (similarity and fractions left, median normalised error right); 1000x600 PNG.
    With no matched keypoint at all, both panels say "no matched persons"."""
    return save_figure(keypoint_breakdown_figure(rows, title, match_oks), path)


# Threshold sweeps


def threshold_curves_figure(
    rows: Sequence[dict[str, Any]],
    keypoint_rows: Sequence[dict[str, Any]] | None = None,
    match_oks: float = 0.5,
    keypoint_score_kind: str = "logit",
) -> Figure:
    """The figure of `plot_threshold_curves`, on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def values(key: str, source: Sequence[dict[str, Any]]) -> list[float]:
        return [math.nan if r[key] is None else float(r[key]) for r in source]

    panels = 2 if keypoint_rows else 1
    fig = Figure(figsize=(6.5 * panels, 4.5), dpi=CURVES_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)
    ax = axes[0][0]
    ts = values("threshold", rows)
    ap = values("AP", rows)
    ax.plot(ts, [math.nan if v < 0 else v for v in ap], "k-o", ms=3, label="AP")
    for key, color in (("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green")):
        ax.plot(ts, values(f"{key}_50", rows), "-", color=color, label=f"{key} @0.50")
        ax.plot(ts, values(f"{key}_75", rows), "--", color=color, label=f"{key} @0.75")
    best = [r for r in rows if r.get("best_f1")]
    if best:
        ax.axvline(best[0]["threshold"], color="tab:green", lw=0.8, alpha=0.6)
        ax.annotate(f"best F1 @ {best[0]['threshold']:g}", (best[0]["threshold"], 0.02), fontsize=8, rotation=90,
                    ha="right", va="bottom")
    ax.set(xlabel="person-score threshold", ylabel="value", ylim=(0, 1.02), title="Person-score thresholds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if keypoint_rows:
        kx = axes[0][1]
        overall = [r for r in keypoint_rows if r["keypoint"] == "all"]
        kts = values("threshold", overall)
        kx.set(xlabel=f"keypoint-score threshold ({keypoint_score_kind})", ylabel="value", ylim=(0, 1.02),
               title="Keypoint-score thresholds (all keypoints)")
        if kts and min(kts) < max(kts):
            kx.set_xlim(min(kts), max(kts))
        kx.grid(alpha=0.3)
        if all(not r["visible"] for r in overall):
            # No person matched at OKS >= 0.5 above the person threshold: say so instead of an empty axis.
            kx.text(0.5, 0.5, f"{NO_MATCHED_PERSONS}\n(at OKS >= {match_oks} with a score above --person-thresh)",
                    transform=kx.transAxes, ha="center", va="center", fontsize=11, color="0.35")
        else:
            kx.plot(kts, values("precision", overall), "-o", color="tab:blue", ms=3, label="precision")
            kx.plot(kts, values("recall", overall), "-o", color="tab:orange", ms=3, label="recall")
            kx.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_threshold_curves(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    keypoint_rows: Sequence[dict[str, Any]] | None = None,
    match_oks: float = 0.5,
    keypoint_score_kind: str = "logit",
) -> Path:
    """threshold_curves.png: AP, precision, recall and F1 (at OKS/IoU 0.50, dashed at 0.75) against the person-score
    threshold, the best-F1 threshold marked (when there is one); with keypoint rows, a second panel for the "all"
    keypoint row, or the words "no matched persons" when no person was matched."""
    # A Figure on its own Agg canvas: no pyplot, so the caller's matplotlib backend and figures are left alone.
    fig = threshold_curves_figure(rows, keypoint_rows, match_oks, keypoint_score_kind)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CURVES_DPI)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


# Error diagnosis (kpbench.analysis.errors)

ERROR_STEP_LABELS: dict[str, str] = {
    "original": "original detections", "miss": "miss fixed", "swap": "+ swap", "inversion": "+ inversion",
    "jitter": "+ jitter", "score": "+ optimal score", "background_fp": "+ background FP removed",
    "background_fn": "+ background FN ignored",
}  # fmt: skip


def error_pr_curves_figure(pr_curves: Mapping[str, Any], mode: str = "kpbench") -> Figure:
    """The figure of `plot_error_pr_curves`: one 500x400 panel per OKS panel (0.50, 0.75, mean 0.50:0.95)."""
    recall = np.asarray(pr_curves["recall"], dtype=np.float64)
    panels = list(pr_curves["panels"])
    fig = new_figure(PR_PANEL_SIZE[0] * len(panels), PR_PANEL_SIZE[1] + 0.6)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    steps = list(pr_curves["curves"])
    styles = series_styles(steps)
    for ax, panel in zip(axes, panels):
        drawn = False
        for step in steps:
            precision = np.asarray(pr_curves["curves"][step][panel], dtype=np.float64)
            if not precision.size:
                continue
            drawn = True
            style = styles[step]
            ax.plot(recall, precision, color=style["color"], linestyle=style["linestyle"], linewidth=1.6,
                    label=f"[{100 * float(precision.mean()):.1f}] {ERROR_STEP_LABELS.get(step, step)}")
        if drawn:
            ax.legend(loc="lower left", fontsize=7)
        else:
            ax.text(0.5, 0.5, "no GT", transform=ax.transAxes, ha="center", va="center", color="0.35")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"PR curves after each cumulative correction (area all, {mode} mode; [AP] in the legend)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_error_pr_curves(pr_curves: Mapping[str, Any], path: str | Path, mode: str = "kpbench") -> Path:
    """PR curves of the error diagnosis ({"recall", "panels", "curves": {step: {panel: precision}}}, as
    `ErrorAnalysis.pr_curves` holds them); a PNG of 500 x 460 pixels per panel."""
    return save_figure(error_pr_curves_figure(pr_curves, mode), path)
