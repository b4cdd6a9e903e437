"""matplotlib figures: PR curves of a run, its threshold curves, and speed against size and accuracy.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas: no pyplot, no global backend switch (a
notebook's backend stays as it is), and nothing opens a window. Every figure has a fixed size in pixels (a fixed
figsize at `DPI`, saved without "tight" cropping), so files are comparable between runs. Writes are atomic.
matplotlib is imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

import csv
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
SPEED_AP_FILE = "speed_ap_fps.png"
_MEASURE = {"keypoints": "OKS", "bbox": "IoU"}
_TITLE = {"keypoints": "keypoints", "bbox": "boxes"}


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
    person category; the mean of a curve over its recall points is COCO's AP50, AP75 or AP. A curve is empty
    when the evaluation had no GT (COCO's -1).
    """
    p = result.params
    k = p.category_ids.index(1) if 1 in p.category_ids else 0
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


def _parse_cell(value: str) -> Any:
    """CSV text to int, float, bool or None (empty), else the string unchanged."""
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def read_csv_rows(path: str | Path) -> list[dict[str, Any]]:
    """A CSV file as a list of dicts, numbers parsed (empty cells become None)."""
    path = Path(path)
    if not path.is_file():
        raise KpbenchError(f"{path}: file not found")
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for number, row in enumerate(csv.DictReader(fh), start=2):
                if None in row:  # DictReader puts the cells beyond the header under the key None
                    raise KpbenchError(f"{path}: line {number} has more cells than the header")
                rows.append({k: _parse_cell(v or "") for k, v in row.items()})
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KpbenchError(f"{path}: not a readable CSV file ({exc})") from None
    return rows


def plot_threshold_file(run_dir: str | Path) -> Path | None:
    """Redraw RUN_DIR/threshold_curves.png from the sweep files `kpbench thresholds` wrote
    (thresholds_person.csv, and thresholds_keypoint.csv when present); None when the run has no sweep."""
    from kpbench.analysis.thresholds import CURVES_FILE, KEYPOINT_STEM, PERSON_STEM, plot_threshold_curves

    run_dir = Path(run_dir)
    person_csv, keypoint_csv = run_dir / f"{PERSON_STEM}.csv", run_dir / f"{KEYPOINT_STEM}.csv"
    if not person_csv.is_file():
        return None
    person_rows = read_csv_rows(person_csv)
    if not person_rows:
        return None
    keypoint_rows = read_csv_rows(keypoint_csv) if keypoint_csv.is_file() else None
    return Path(plot_threshold_curves(person_rows, run_dir / CURVES_FILE, keypoint_rows or None))


def plot_run(run_dir: str | Path, results: Mapping[str, EvalResult] | None = None) -> list[Path]:
    """Every figure of a run directory: RUN_DIR/pr_curves.png (keypoints and boxes), and the threshold curves
    when the run has a threshold sweep. `results` ({"keypoints": ..., "bbox": ...}) saves evaluating again."""
    from kpbench.engine.rundir import read_manifest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    read_manifest(run_dir)  # a clear error for a folder that is not a run
    if results is None:
        from kpbench.evaluation.runeval import evaluate_run

        results = evaluate_run(run_dir, write=False)
    written = [plot_pr_curves(results, run_dir / PR_FILE)]
    thresholds = plot_threshold_file(run_dir)
    if thresholds is not None:
        written.append(thresholds)
    return written


def analyse_run(run_dir: str | Path, results: Mapping[str, EvalResult] | None = None) -> list[Path]:
    """Everything `kpbench run` writes after its metrics, from the run directory alone: the threshold sweep
    (thresholds_*.csv/.md, threshold_curves.png), the per-keypoint breakdown (keypoints.csv/.md/.png) and the
    PR curves (pr_curves.png). `results` is the run's evaluation, to save evaluating again."""
    from kpbench.analysis.breakdown import keypoints_for_run
    from kpbench.analysis.thresholds import thresholds_for_run, write_threshold_files

    run_dir = Path(run_dir)
    report = thresholds_for_run(run_dir, results=results)
    written = write_threshold_files(run_dir, report.person, report.keypoint, plot=False)
    keypoints_for_run(run_dir, results.get("keypoints") if results else None)
    written += [run_dir / f"keypoints.{ext}" for ext in ("csv", "md", "png")]
    return written + plot_run(run_dir, results)


SPEED_REQUIRED = ("device_name", "size", "variant", "fps")


def read_speed_rows(csv_paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The plottable rows of `kpbench speed` CSV files: status ok (or none) with a numeric fps and size."""
    rows: list[dict[str, Any]] = []
    if not csv_paths:
        raise KpbenchError("plot: no speed CSV files given")
    for path in csv_paths:
        file_rows = read_csv_rows(path)
        header = set(file_rows[0]) if file_rows else set()
        missing = [c for c in SPEED_REQUIRED if c not in header]
        if file_rows and missing:
            raise KpbenchError(f"{path}: not a `kpbench speed` CSV (no {', '.join(missing)} column)")
        for row in file_rows:
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


def _series(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault((str(row["device_name"]), _variant_label(row)), []).append(row)
    return {key: sorted(group, key=lambda r: r["size"]) for key, group in sorted(out.items())}


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
    """From `kpbench speed` CSVs: speed_fps.png (FPS against input size, one line per device and variant) and,
    where accuracy was measured, speed_ap_fps.png (keypoint AP against FPS, points labelled by size).

    Both are 800 x 500 PNGs in `out_dir` (default: the first CSV's folder). Failed and skipped rows are left out.
    Each device and variant gets its own colour, marker and line style (`series_styles`), the same in both.
    """
    rows = read_speed_rows(csv_paths)
    if out_dir is not None:
        out = ensure_output_dir(out_dir, "--out")
    else:
        out = ensure_output_dir(Path(csv_paths[0]).parent, "output folder")
    series = _series(rows)
    written = []

    fig = new_figure(*SPEED_SIZE)
    ax = fig.subplots()
    style = series_styles(list(series))  # the same series, the same style in both figures
    for (device, variant), group in series.items():
        ax.plot(
            [r["size"] for r in group],
            [r["fps"] for r in group],
            label=f"{device} | {variant}",
            **style[device, variant],
        )
    ax.set_xlabel("input size (short side, pixels)")
    ax.set_ylabel("images per second")
    fps = [r["fps"] for r in rows if r["fps"] > 0]
    if fps and max(fps) > 10 * min(fps):
        ax.set_yscale("log")  # a CPU and a GPU in one figure: on a linear axis the CPU line would lie flat at 0
        ax.set_ylabel("images per second (log scale)")
    else:
        ax.set_ylim(bottom=0)
    ax.set_title("Keypoint R-CNN throughput by input size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    written.append(save_figure(fig, out / SPEED_FPS_FILE))

    measured = {key: [r for r in group if isinstance(r.get("kp_AP"), (int, float))] for key, group in series.items()}
    measured = {key: group for key, group in measured.items() if group}
    if measured:
        fig = new_figure(*SPEED_SIZE)
        ax = fig.subplots()
        for (device, variant), group in measured.items():
            fps = [r["fps"] for r in group]
            ap = [100 * r["kp_AP"] for r in group]  # kpbench stores AP as a fraction; percent reads like COCO's
            ax.plot(fps, ap, label=f"{device} | {variant}", **style[device, variant])
            for x, y, r in zip(fps, ap, group):
                ax.annotate(str(r["size"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("images per second")
        ax.set_ylabel("keypoint AP (%)")
        ax.set_title("Accuracy against speed (points labelled by input size)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        written.append(save_figure(fig, out / SPEED_AP_FILE))
    return written


def make_readme_figures(out_dir: str | Path = "docs/images", seed: int = 0) -> list[Path]:
    """The README's figures, from synthetic data only (never a COCO photo): PR curves, the per-keypoint
    breakdown and a skeleton overlay on a generated canvas. Deterministic for a given seed.

    python -c "from kpbench.report.figures import make_readme_figures; make_readme_figures('docs/images')"
    """
    from PIL import Image

    from kpbench.analysis.breakdown import keypoint_breakdown, plot_keypoint_breakdown
    from kpbench.data.synthetic import make_synthetic_coco
    from kpbench.evaluation.cocoeval import evaluate
    from kpbench.report.draw import draw_ground_truth, draw_skeletons, side_by_side

    out = Path(out_dir)
    gt, results = make_synthetic_coco(num_images=200, seed=seed)
    kp = evaluate(gt, results, iou_type="keypoints")
    written = [plot_pr_curves(kp, out / "synthetic_pr_curves.png")]
    rows = keypoint_breakdown(kp, gt, results)
    written.append(
        plot_keypoint_breakdown(rows, out / "synthetic_keypoints.png", title="Per-keypoint breakdown (synthetic data)")
    )

    # A skeleton overlay on a plain gradient: the image with the most labelled GT persons.
    image_id = max(
        (img["id"] for img in gt["images"]),
        key=lambda i: sum(a["num_keypoints"] > 0 for a in gt["annotations"] if a["image_id"] == i),
    )
    width, height = gt["images"][0]["width"], gt["images"][0]["height"]
    ramp = np.linspace(90, 200, width, dtype=np.float64)
    canvas = np.stack(
        [np.tile(ramp, (height, 1)), np.full((height, width), 150.0), np.tile(ramp[::-1], (height, 1))], axis=2
    ).astype(np.uint8)
    dets = [r for r in results if r["image_id"] == image_id]
    rng = np.random.default_rng(seed)
    kps = np.array([r["keypoints"] for r in dets], dtype=np.float64).reshape(-1, 17, 3)
    logits = rng.normal(5.0, 2.5, kps.shape[:2])  # synthetic results carry no keypoint scores
    scores = np.array([r["score"] for r in dets], dtype=np.float64)
    left = Image.fromarray(draw_skeletons(canvas, kps, logits, scores, score_thresh=0.7))
    right = Image.fromarray(draw_ground_truth(canvas, [a for a in gt["annotations"] if a["image_id"] == image_id]))
    panel = side_by_side(left, right, labels=("detections (score > 0.7)", "ground truth"))
    buf = io.BytesIO()
    panel.save(buf, format="PNG")
    atomic_write_bytes(out / "synthetic_skeletons.png", buf.getvalue())
    written.append(out / "synthetic_skeletons.png")
    return written
