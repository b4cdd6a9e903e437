"""Every matplotlib figure kpbench draws: PR curves, threshold curves, the keypoint-threshold heatmap, the
per-keypoint breakdown, AP per keypoint and group, and speed against size and accuracy. A leaf module: it takes
rows and arrays, and imports nothing from the stages.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas: no pyplot, no global backend switch (a
notebook's backend stays as it is), and nothing opens a window. Every figure has a fixed width in pixels and a
height set by what it shows (a figsize at `DPI`, saved without "tight" cropping): the same data give the same
size, so files are comparable between runs. Legends sit outside the plotting area (below it in a space of their
own; above the bars of the per-keypoint breakdown), so they never hide a curve, a marker or a label. Each figure has a `*_figure` function that returns the
Figure, so that tests can read what it draws. Writes are atomic. matplotlib is imported inside the functions;
importing this module is cheap.
"""

from __future__ import annotations

import io
import math
import re
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
MAX_SIZE_TICKS = 12  # up to this many measured input sizes, the speed figure's x ticks are exactly those sizes
PR_FILE = "pr_curves.png"
SPEED_FPS_FILE = "speed_fps.png"
SPEED_PARETO_FILE = "speed_pareto.png"
_MEASURE = {"keypoints": "OKS", "bbox": "IoU"}
_TITLE = {"keypoints": "keypoints", "bbox": "boxes"}
CURVES_DPI = 120  # 780 x 540 pixels with one panel, 1560 x 540 with two
NO_MATCHED_PERSONS = "no matched persons"


def new_figure(width_in: float, height_in: float, dpi: int = DPI, constrained: bool = False) -> Figure:
    """A Figure with an Agg canvas attached, `width_in * dpi` x `height_in * dpi` pixels (`constrained`: matplotlib's
    constrained layout, which makes room for legends and labels outside the axes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


LEGEND_ROW_IN = 0.19  # inches per legend row at font size 7-8


def legend_rows(entries: int, columns: int) -> int:
    """Rows a legend of `entries` takes in `columns` columns."""
    return max(1, -(-entries // columns))


def legend_below(ax: Any, legend_ax: Any, columns: int, fontsize: float = 7) -> Any:
    """`ax`'s legend drawn in `legend_ax`, an axes of its own below it (its frame and ticks hidden): the legend
    covers nothing of `ax`. Returns the legend (None when `ax` has no labelled artist)."""
    legend_ax.axis("off")
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    return legend_ax.legend(handles, labels, loc="upper center", ncols=columns, fontsize=fontsize, frameon=False,
                            borderaxespad=0.0)


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


PR_LEGEND_IN = 0.65  # the three-entry legend below each PR panel


def pr_curves_figure(results: EvalResult | Mapping[str, EvalResult]) -> Figure:
    """The figure of `plot_pr_curves`: one 500 x 465 pixel panel per evaluation, each curve's AP in the legend
    below its panel."""
    evals = {results.iou_type: results} if not isinstance(results, Mapping) else dict(results)
    if not evals:
        raise KpbenchError("plot_pr_curves: no evaluation given")
    fig = new_figure(PR_PANEL_SIZE[0] * len(evals), PR_PANEL_SIZE[1] + PR_LEGEND_IN, constrained=True)
    grid = fig.subplots(2, len(evals), squeeze=False,
                        gridspec_kw={"height_ratios": [PR_PANEL_SIZE[1] - 0.4, PR_LEGEND_IN]})
    for column, (iou_type, result) in enumerate(evals.items()):
        ax = grid[0][column]
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
        legend_below(ax, grid[1][column], columns=1, fontsize=8)
    return fig


def plot_pr_curves(results: EvalResult | Mapping[str, EvalResult], path: str | Path) -> Path:
    """PR curves (one panel per evaluation: keypoints, boxes) with each curve's AP in the legend below its
    panel; a PNG of 500 x 465 pixels per panel."""
    return save_figure(pr_curves_figure(results), path)


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


_BATCH = re.compile(r"-bs\d+")


def _variant_label(row: dict[str, Any]) -> str:
    """The variant, plus what else changes the timing: a non-default box threshold, synthetic images. An offline
    row's batch is the largest that fit at its size, so it leaves the label ("fp32-offline") and marks the point."""
    label = str(row["variant"])
    if row.get("scenario") == "offline" or label.endswith("-offline"):
        label = _BATCH.sub("", label)
    threshold = row.get("box_score_thresh")
    if isinstance(threshold, (int, float)) and threshold != 0.05:
        label += f" thr{threshold:g}"
    if row.get("synthetic") in (True, "True", "true", 1):
        label += " synthetic"
    return label


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _model_labels(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each row's model name, with its weights where one name comes with several weights (told apart by sha256
    where rows have it, shown by name: a file by its file name): those are two models, never one line."""
    def identity(row: dict[str, Any]) -> str:
        return _text(row.get("weights_sha256")) or _text(row.get("weights"))

    weights_of: dict[str, set[str]] = {}
    for row in rows:
        weights_of.setdefault(_text(row.get("model")), set()).add(identity(row))
    labels = []
    for row in rows:
        name = _text(row.get("model"))
        if len(weights_of[name]) > 1:
            shown = _text(row.get("weights"))
            shown = Path(shown).name if ("/" in shown or "\\" in shown) else shown
            name = f"{name} ({shown or identity(row)[:12]})"
        labels.append(name)
    return labels


SeriesKey = tuple[str, str, str, str]  # (device, model, variant label, source CSV)


def _series(rows: Sequence[dict[str, Any]]) -> dict[SeriesKey, list[dict[str, Any]]]:
    """Rows grouped into lines: one per (device, model, variant label) and source CSV, each sorted by size. Rows
    of different CSVs are never one line (two runs of one setting are two measurements, not a trend); a size that
    repeats within one CSV starts another line ("#2") rather than a vertical segment."""
    groups: dict[SeriesKey, list[dict[str, Any]]] = {}
    for row, model in zip(rows, _model_labels(rows)):
        key = (str(row["device_name"]), model, _variant_label(row), _text(row.get("source")))
        lines = [k for k in groups if k[:3] == key[:3] and k[3].split(" #")[0] == key[3]]
        for line in lines:  # the first line of this setting without this size
            if all(r["size"] != row["size"] for r in groups[line]):
                groups[line].append(row)
                break
        else:
            groups[key if not lines else (*key[:3], f"{key[3]} #{len(lines) + 1}")] = [row]
    return {key: sorted(group, key=lambda r: r["size"]) for key, group in sorted(groups.items())}


def _series_labels(keys: Sequence[SeriesKey]) -> dict[SeriesKey, str]:
    """"device | model | variant", with the CSV named where two lines would otherwise read the same."""
    plain = [" | ".join(part for part in key[:3] if part) for key in keys]
    return {key: label + (f" | {key[3]}" if plain.count(label) > 1 and key[3] else "")
            for key, label in zip(keys, plain)}


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


def _plain_log_ticks(axis: Any) -> None:
    """Tick labels of a log axis as plain numbers (30, 300) rather than 3 × 10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _log_ticks_near(value: float) -> list[float]:
    exponent = math.floor(math.log10(value))
    return [m * 10.0**k for k in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5)]


def log_tick_below(value: float) -> float:
    """The largest tick of `_plain_log_ticks` (1, 2 or 5 times a power of ten) strictly below a positive value, so
    that a point is never drawn on the frame."""
    return max(t for t in _log_ticks_near(value) if t < value)


def log_tick_above(value: float) -> float:
    """The smallest tick of `_plain_log_ticks` (1, 2 or 5 times a power of ten) strictly above a positive value."""
    return min(t for t in _log_ticks_near(value) if t > value)


def _batch_marks(ax: Any, xs: Sequence[float], ys: Sequence[float], group: Sequence[dict[str, Any]]) -> None:
    """Mark each point of an offline line with its batch size (it changes along the line)."""
    for x, y, r in zip(xs, ys, group):
        if r.get("scenario") == "offline" or str(r.get("variant", "")).endswith("-offline"):
            ax.annotate(f"bs{_text(r.get('batch_size')) or '?'}", (x, y), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)


def _speed_layout(entries: int) -> tuple[Figure, Any, Any, int]:
    """An 800-pixel-wide figure, 510 pixels plus 19 per legend row (two columns) tall: the legend below the plot."""
    columns = 2
    rows = legend_rows(entries, columns)
    legend_in = rows * LEGEND_ROW_IN + 0.1
    fig = new_figure(SPEED_SIZE[0], SPEED_SIZE[1] + legend_in, constrained=True)
    ax, legend_ax = fig.subplots(2, 1, gridspec_kw={"height_ratios": [SPEED_SIZE[1] - 0.4, legend_in]})
    return fig, ax, legend_ax, columns


def speed_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Figure]:
    """The figures of `plot_speed` from plottable speed rows (`read_speed_rows`): {SPEED_FPS_FILE: ...} and, where
    some row has a keypoint AP, {SPEED_PARETO_FILE: ...}."""
    series = _series(rows)
    labels = _series_labels(list(series))
    models = sorted({key[1] for key in series if key[1]})
    style = series_styles(list(series))  # the same series, the same style in both figures
    figures: dict[str, Figure] = {}

    fig, ax, legend_ax, columns = _speed_layout(len(series))
    for key, group in series.items():
        xs, ys = [r["size"] for r in group], [r["fps"] for r in group]
        ax.plot(xs, ys, label=labels[key], **style[key])
        _batch_marks(ax, xs, ys, group)
    ax.set_xlabel("input size (pixels: Keypoint R-CNN's short side, YOLO's and MediaPipe's long side)")
    ax.set_ylabel("images per second")
    from matplotlib.ticker import NullLocator

    sizes = sorted({r["size"] for r in rows})
    if len(sizes) <= MAX_SIZE_TICKS:  # the sizes measured, not a range of in-between numbers nobody timed
        ax.set_xticks(sizes, [f"{size:g}" for size in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
    fps = [r["fps"] for r in rows if r["fps"] > 0]
    if fps and max(fps) > 10 * min(fps):
        ax.set_yscale("log")  # a CPU and a GPU in one figure: on a linear axis the CPU line would lie flat at 0
        ax.set_ylabel("images per second (log scale)")
        _plain_log_ticks(ax.yaxis)
        ax.set_ylim(log_tick_below(min(fps)), log_tick_above(max(fps)))  # every point between two labelled ticks
    else:
        ax.set_ylim(bottom=0)
    ax.set_title(f"{' vs '.join(models) if models else 'Model'} throughput by input size")
    ax.grid(alpha=0.3)
    legend_below(ax, legend_ax, columns)
    figures[SPEED_FPS_FILE] = fig

    measured = {key: [r for r in group if isinstance(r.get("kp_AP"), (int, float))] for key, group in series.items()}
    measured = {key: group for key, group in measured.items() if group}
    if measured:
        # One frontier per device: times on different devices are not one trade-off.
        fronts = {}
        for device in sorted({key[0] for key in measured}):
            points = [(ms_per_image(r), 100 * r["kp_AP"]) for key, group in measured.items() if key[0] == device
                      for r in group]
            front = [points[i] for i in pareto_front(points)]
            if len(front) > 1:
                fronts[device] = front
        fig, ax, legend_ax, columns = _speed_layout(len(measured) + len(fronts))
        for key, group in measured.items():
            ms = [ms_per_image(r) for r in group]
            ap = [100 * r["kp_AP"] for r in group]  # kpbench stores AP as a fraction; percent reads like COCO's
            ax.plot(ms, ap, label=labels[key], **style[key])
            for x, y, r in zip(ms, ap, group):
                ax.annotate(str(r["size"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for device, front in fronts.items():
            ax.plot([p[0] for p in front], [p[1] for p in front], color="0.5", linestyle=":", linewidth=2,
                    alpha=0.7, zorder=0, gid="pareto", label=f"Pareto frontier ({device})")
        ms_all = [ms_per_image(r) for group in measured.values() for r in group]
        if min(ms_all) > 0 and max(ms_all) > 10 * min(ms_all):
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
        ax.set_xlabel("model time per image (ms; lower is faster)")
        ax.set_ylabel("keypoint AP (%)")
        ax.set_title("Accuracy against speed over models and sizes (points labelled by input size)")
        ax.grid(alpha=0.3)
        legend_below(ax, legend_ax, columns)
        figures[SPEED_PARETO_FILE] = fig
    return figures


def plot_speed(csv_paths: Sequence[str | Path], out_dir: str | Path | None = None) -> list[Path]:
    """From `kpbench speed` CSVs: speed_fps.png (FPS against input size, one line per device, model, variant and
    CSV) and, where accuracy was measured, speed_pareto.png (keypoint AP against ms per image over models and
    sizes, points labelled by size, with each device's Pareto frontier: `pareto_front`).

    Both are 800 pixels wide and 510 pixels plus 19 per legend row tall (the plot above a legend of two columns;
    `speed_figures`), in
    `out_dir` (default: the first CSV's folder). Failed and skipped rows are left out. Each series gets its own
    colour, marker and line style (`series_styles`), the same in both. Rows of different CSVs are never joined
    into one line; an offline line's points carry their batch size.
    """
    rows = read_speed_rows(csv_paths)
    if out_dir is not None:
        out = ensure_output_dir(out_dir, "--out")
    else:
        out = ensure_output_dir(Path(csv_paths[0]).parent, "output folder")
    return [save_figure(fig, out / name) for name, fig in speed_figures(rows).items()]


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
    """The figure of `plot_threshold_curves` (780 x 600 pixels per panel at `CURVES_DPI`), its legends below the
    panels."""

    def values(key: str, source: Sequence[dict[str, Any]]) -> list[float]:
        return [math.nan if r[key] is None else float(r[key]) for r in source]

    panels = 2 if keypoint_rows else 1
    legend_in = 0.5  # the person panel's 7 entries in 4 columns: two rows
    fig = new_figure(6.5 * panels, 4.5 + legend_in, dpi=CURVES_DPI, constrained=True)
    grid = fig.subplots(2, panels, squeeze=False, gridspec_kw={"height_ratios": [4.1, legend_in]})
    ax = grid[0][0]
    ts = values("threshold", rows)
    ap = values("AP", rows)
    ax.plot(ts, [math.nan if v < 0 else v for v in ap], "k-o", ms=3, label="AP")
    for key, color in (("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green")):
        ax.plot(ts, values(f"{key}_50", rows), "-", color=color, label=f"{key} @0.50")
        ax.plot(ts, values(f"{key}_75", rows), "--", color=color, label=f"{key} @0.75")
    best = [r for r in rows if r.get("best_f1")]
    if best:
        ax.axvline(best[0]["threshold"], color="tab:green", lw=0.8, alpha=0.6)
        # At the top of the marker line, inside the axes; the legend is below the panel, so nothing covers it.
        ax.annotate(f"best F1 @ {best[0]['threshold']:g}", (best[0]["threshold"], 1.0), xytext=(3, -3),
                    textcoords="offset points", fontsize=8, ha="left", va="top", gid="best_f1",
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set(xlabel="person-score threshold", ylabel="value", ylim=(0, 1.02), title="Person-score thresholds")
    ax.grid(alpha=0.3)
    legend_below(ax, grid[1][0], columns=4)
    if keypoint_rows:
        kx = grid[0][1]
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
            grid[1][1].axis("off")
        else:
            # Solid circles under dashed squares: where the two curves coincide, both stay visible.
            kx.plot(kts, values("precision", overall), "-o", color="tab:blue", ms=5, lw=2.5, label="precision")
            kx.plot(kts, values("recall", overall), "--s", color="tab:orange", ms=3, lw=1.2, label="recall")
            legend_below(kx, grid[1][1], columns=2, fontsize=8)
    return fig


def plot_threshold_curves(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    keypoint_rows: Sequence[dict[str, Any]] | None = None,
    match_oks: float = 0.5,
    keypoint_score_kind: str = "logit",
) -> Path:
    """threshold_curves.png: AP, precision, recall and F1 (at OKS/IoU 0.50, dashed at 0.75) against the person-score
    threshold, the best-F1 threshold marked and labelled (when there is one); with keypoint rows, a second panel
    for the "all" keypoint row, or the words "no matched persons" when no person was matched. 780 x 600 pixels per
    panel, the legends below the panels."""
    # A Figure on its own Agg canvas: no pyplot, so the caller's matplotlib backend and figures are left alone.
    fig = threshold_curves_figure(rows, keypoint_rows, match_oks, keypoint_score_kind)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CURVES_DPI)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


HEATMAP_METRICS = ("recall", "precision")


def keypoint_threshold_grid(
    keypoint_rows: Sequence[dict[str, Any]], metric: str
) -> tuple[list[str], list[float], np.ndarray]:
    """(keypoints in row order, thresholds ascending, values (K, T) with NaN where undefined) of one metric of the
    keypoint-score sweep (`kpbench thresholds`' keypoint rows; "all" last)."""
    names = list(dict.fromkeys(r["keypoint"] for r in keypoint_rows))
    names = [n for n in names if n != "all"] + (["all"] if "all" in names else [])
    thresholds = sorted({float(r["threshold"]) for r in keypoint_rows})
    grid = np.full((len(names), len(thresholds)), np.nan)
    row_of, column_of = {n: i for i, n in enumerate(names)}, {t: j for j, t in enumerate(thresholds)}
    for r in keypoint_rows:
        value = r.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            grid[row_of[r["keypoint"]], column_of[float(r["threshold"])]] = float(value)
    return names, thresholds, grid


def keypoint_threshold_heatmap_figure(
    keypoint_rows: Sequence[dict[str, Any]], keypoint_score_kind: str = "logit", person_thresh: float | None = None,
) -> Figure:
    """Keypoint-score thresholds as two keypoint × threshold heatmaps, recall (shown and correct / labelled) and
    precision (correct / shown), each cell holding its value in percent; grey where undefined (0/0). 1300 pixels
    wide, 0.3 inch per keypoint tall (at `CURVES_DPI`)."""
    from matplotlib.colors import Normalize

    names = keypoint_threshold_grid(keypoint_rows, "recall")[0]
    fig = new_figure(13.0, 1.6 + 0.3 * len(names), dpi=CURVES_DPI, constrained=True)
    axes = fig.subplots(1, len(HEATMAP_METRICS), sharey=True)
    norm = Normalize(0.0, 1.0)
    image = None
    for ax, metric in zip(axes, HEATMAP_METRICS):
        names, thresholds, grid = keypoint_threshold_grid(keypoint_rows, metric)
        masked = np.ma.masked_invalid(grid)
        cmap = _heatmap_cmap()
        image = ax.imshow(masked, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest", gid=metric)
        for (i, j), value in np.ndenumerate(grid):
            text = "–" if math.isnan(value) else f"{100 * value:.0f}"
            dark = not math.isnan(value) and value < 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_xticks(range(len(thresholds)), [f"{t:g}" for t in thresholds], fontsize=8)
        ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
        if "all" in names:
            ax.axhline(len(names) - 1.5, color="white", linewidth=2)
        if np.isnan(grid).all():  # say why every cell is grey rather than leave a blank grid
            ax.text(0.5, 0.5, f"{NO_MATCHED_PERSONS}\n(nothing labelled among matched persons)", transform=ax.transAxes,
                    ha="center", va="center", fontsize=11, color="0.2", gid="empty",
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"})
        ax.set_xlabel(f"keypoint-score threshold ({keypoint_score_kind}): shown when the score is above it")
        ax.set_title({"recall": "recall: shown and correct / labelled (%)",
                      "precision": "precision: correct / shown (%)"}[metric], fontsize=10)
    assert image is not None
    fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.01, label="fraction (grey: undefined)")
    who = f" above person score {person_thresh:g}" if person_thresh is not None else ""
    fig.suptitle(f"Keypoint-score thresholds per keypoint (persons matched at OKS >= 0.5{who}; correct: "
                 "keypoint similarity >= 0.5)", fontsize=10)
    return fig


def _heatmap_cmap() -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="0.85")


def keypoint_ap_figure(rows: Sequence[dict[str, Any]], title: str | None = None) -> Figure:
    """AP per keypoint group and per keypoint (`kpbench.analysis.keypoint_ap` rows): horizontal bars of AP with
    AP50 and AP75 as markers, groups first, the whole set's AP as a dashed line; 1000 pixels wide, 0.28 inch per
    bar tall. A part without GT (COCO's -1) has no bar and says "no GT"."""
    parts = [r for r in rows if r["kind"] != "all"]
    whole = next((r for r in rows if r["kind"] == "all"), None)
    fig = new_figure(10.0, 1.4 + 0.28 * max(len(parts), 1) + 2 * LEGEND_ROW_IN, constrained=True)
    ax = fig.subplots()
    y = np.arange(len(parts))
    colors = ["tab:purple" if r["kind"] == "group" else "tab:blue" for r in parts]

    def percent(row: dict[str, Any], key: str) -> float:
        value = _num(row.get(key))
        return math.nan if math.isnan(value) or value < 0 else 100 * value

    ap = [percent(r, "AP") for r in parts]
    ax.barh(y, [0 if math.isnan(v) else v for v in ap], color=colors, height=0.7, gid="AP")
    # Not clipped: a marker at 100 stays whole on the axis' edge.
    ax.plot([percent(r, "AP50") for r in parts], y, "k|", ms=9, mew=2, label="AP50", gid="AP50", clip_on=False)
    ax.plot([percent(r, "AP75") for r in parts], y, "kx", ms=5, label="AP75", gid="AP75", clip_on=False)
    for i, value in enumerate(ap):  # the value inside its bar (after it when the bar is too short to hold it)
        inside = not math.isnan(value) and value >= 8
        ax.text(1 if inside or math.isnan(value) else value + 1, i, "no GT" if math.isnan(value) else f"{value:.1f}",
                va="center", ha="left", fontsize=7, color="white" if inside else "0.2", gid="ap_value")
    if whole is not None and not math.isnan(percent(whole, "AP")):
        ax.axvline(percent(whole, "AP"), color="black", linestyle="--", linewidth=1,
                   label=f"all keypoints: AP {percent(whole, 'AP'):.1f}")
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles += [Patch(color="tab:purple"), Patch(color="tab:blue")]
    labels += ["AP of a group", "AP of a keypoint"]
    names = [f"{r['name']} ({len(str(r.get('keypoints', '')).split(','))})" if r["kind"] == "group" else r["name"]
             for r in parts]
    ax.set_yticks(y, [n.replace("_", " ") for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("keypoint AP (%; OKS .50:.95 over the part's keypoints)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "AP per keypoint group (with its number of keypoints) and per keypoint", fontsize=10)
    fig.legend(handles, labels, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    return fig


# Error diagnosis (kpbench.analysis.errors)

ERROR_STEP_LABELS: dict[str, str] = {
    "original": "original detections", "miss": "miss fixed", "swap": "+ swap", "inversion": "+ inversion",
    "jitter": "+ jitter", "score": "+ optimal score", "background_fp": "+ background FP removed",
    "background_fn": "+ background FN ignored",
}  # fmt: skip


def error_pr_curves_figure(pr_curves: Mapping[str, Any], mode: str = "kpbench") -> Figure:
    """The figure of `plot_error_pr_curves`: one 500-pixel-wide panel per OKS panel (0.50, 0.75, mean
    0.50:0.95), its legend (two columns, each step's AP in brackets) below it: 516 pixels tall with 8 steps."""
    recall = np.asarray(pr_curves["recall"], dtype=np.float64)
    panels = list(pr_curves["panels"])
    steps = list(pr_curves["curves"])
    legend_in = legend_rows(len(steps), 2) * LEGEND_ROW_IN + 0.1
    fig = new_figure(PR_PANEL_SIZE[0] * len(panels), PR_PANEL_SIZE[1] + 0.3 + legend_in, constrained=True)
    grid = fig.subplots(2, len(panels), squeeze=False,
                        gridspec_kw={"height_ratios": [PR_PANEL_SIZE[1] - 0.1, legend_in]})
    styles = series_styles(steps)
    for column, panel in enumerate(panels):
        ax = grid[0][column]
        drawn = False
        for step in steps:
            precision = np.asarray(pr_curves["curves"][step][panel], dtype=np.float64)
            if not precision.size:
                continue
            drawn = True
            style = styles[step]
            ax.plot(recall, precision, color=style["color"], linestyle=style["linestyle"], linewidth=1.6,
                    label=f"[{100 * float(precision.mean()):.1f}] {ERROR_STEP_LABELS.get(step, step)}")
        if not drawn:
            ax.text(0.5, 0.5, "no GT", transform=ax.transAxes, ha="center", va="center", color="0.35")
        legend_below(ax, grid[1][column], columns=2)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"PR curves after each cumulative correction (area all, {mode} mode; [AP] in the legends)",
                 fontsize=10)
    return fig


def plot_error_pr_curves(pr_curves: Mapping[str, Any], path: str | Path, mode: str = "kpbench") -> Path:
    """PR curves of the error diagnosis ({"recall", "panels", "curves": {step: {panel: precision}}}, as
    `ErrorAnalysis.pr_curves` holds them); a PNG of 500 x 516 pixels per panel with its 8 steps."""
    return save_figure(error_pr_curves_figure(pr_curves, mode), path)
