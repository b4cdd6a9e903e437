"""What each figure draws, read back from the matplotlib Figure: its lines' points, its labels, its bars and its
heatmap cells, equal to the data they come from; and no legend over a plotting area (issue 28: figures that tell
the truth). `tests/test_plots.py` checks the files and their sizes."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate
from kpbench.report.figures import (
    error_pr_curves_figure,
    keypoint_ap_figure,
    keypoint_breakdown_figure,
    keypoint_threshold_grid,
    keypoint_threshold_heatmap_figure,
    log_tick_above,
    log_tick_below,
    pr_curves,
    pr_curves_figure,
    read_speed_rows,
    speed_figures,
    threshold_curves_figure,
)


def legends(fig: Any) -> list[Any]:
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


def assert_no_legend_over_a_plot(fig: Any) -> None:
    """Every legend lies outside every plotting area (axes with visible axis lines), and every text drawn in a
    plotting area lies outside every legend."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    plots = [ax for ax in fig.axes if ax.axison]
    boxes = [legend.get_window_extent(renderer) for legend in legends(fig)]
    assert boxes, "the figure has no legend"
    for box in boxes:
        for ax in plots:
            assert not box.overlaps(ax.get_window_extent(renderer)), (box, ax.get_title())
    for ax in plots:
        for text in ax.texts:
            if text.get_text():
                assert not any(text.get_window_extent(renderer).overlaps(box) for box in boxes), text.get_text()


def line(ax: Any, label: str) -> Any:
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


# --- speed ----------------------------------------------------------------------------------------------------

SPEED_COLUMNS = ["device_name", "model", "weights", "size", "variant", "scenario", "batch_size", "fps",
                 "ms_per_image", "status", "kp_AP"]


def speed_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, SPEED_COLUMNS)
        writer.writeheader()
        writer.writerows({c: r.get(c, "") for c in SPEED_COLUMNS} for r in rows)
    return path


def speed_row(size: int, fps: float, variant: str = "fp32-bs1", ap: float | str = "", **extra: Any) -> dict[str, Any]:
    return {"device_name": "NVIDIA H100", "model": "keypointrcnn", "weights": "COCO_V1", "size": size,
            "variant": variant, "scenario": "single-stream", "batch_size": 1, "fps": fps, "ms_per_image": 1000 / fps,
            "status": "ok", "kp_AP": ap, **extra}


def test_speed_lines_never_join_rows_of_two_csvs(tmp_path: Path) -> None:
    """Two `kpbench speed` runs of one setting on one GPU, at partly the same sizes: two lines, each through its
    own CSV's rows (before, one line zig-zagged through both, with a vertical segment at 640)."""
    day1 = speed_csv(tmp_path / "day1.csv", [speed_row(480, 40.0, ap=0.55), speed_row(640, 31.0, ap=0.61),
                                             speed_row(800, 24.0, ap=0.65)])
    day2 = speed_csv(tmp_path / "day2.csv", [speed_row(320, 52.0, ap=0.50), speed_row(640, 29.0, ap=0.60),
                                             speed_row(1024, 15.0, ap=0.66)])
    figures = speed_figures(read_speed_rows([day1, day2]))
    ax = figures["speed_fps.png"].axes[0]
    one = line(ax, "NVIDIA H100 | keypointrcnn | fp32-bs1 | day1.csv")
    two = line(ax, "NVIDIA H100 | keypointrcnn | fp32-bs1 | day2.csv")
    assert (list(one.get_xdata()), list(one.get_ydata())) == ([480, 640, 800], [40.0, 31.0, 24.0])
    assert (list(two.get_xdata()), list(two.get_ydata())) == ([320, 640, 1024], [52.0, 29.0, 15.0])
    pareto = figures["speed_pareto.png"].axes[0]
    assert list(line(pareto, "NVIDIA H100 | keypointrcnn | fp32-bs1 | day2.csv").get_ydata()) == [50.0, 60.0, 66.0]
    for fig in figures.values():
        for ln in fig.axes[0].get_lines():
            if ln.get_gid() != "pareto":
                assert np.all(np.diff(np.asarray(ln.get_xdata(), dtype=float)) != 0), ln.get_label()
        assert_no_legend_over_a_plot(fig)


def test_speed_offline_line_and_repeated_sizes_and_two_weights(tmp_path: Path) -> None:
    rows = [
        speed_row(480, 120.0, "fp32-bs32-offline", scenario="offline", batch_size=32),
        speed_row(640, 90.0, "fp32-bs16-offline", scenario="offline", batch_size=16),
        speed_row(800, 60.0, "fp32-bs8-offline", scenario="offline", batch_size=8),
        speed_row(480, 40.0), speed_row(640, 31.0), speed_row(480, 41.0),  # 480 twice in one CSV
        speed_row(480, 44.0, weights="COCO_LEGACY"), speed_row(640, 33.0, weights="COCO_LEGACY"),
    ]
    fig = speed_figures(read_speed_rows([speed_csv(tmp_path / "t.csv", rows)]))["speed_fps.png"]
    ax = fig.axes[0]
    labels = sorted(ln.get_label() for ln in ax.get_lines())
    assert labels == [
        "NVIDIA H100 | keypointrcnn (COCO_LEGACY) | fp32-bs1",
        "NVIDIA H100 | keypointrcnn (COCO_V1) | fp32-bs1 | t.csv",
        "NVIDIA H100 | keypointrcnn (COCO_V1) | fp32-bs1 | t.csv #2",
        "NVIDIA H100 | keypointrcnn (COCO_V1) | fp32-offline",
    ]
    offline = line(ax, "NVIDIA H100 | keypointrcnn (COCO_V1) | fp32-offline")
    assert list(offline.get_xdata()) == [480, 640, 800] and list(offline.get_ydata()) == [120.0, 90.0, 60.0]
    assert sorted(t.get_text() for t in ax.texts) == ["bs16", "bs32", "bs8"]
    assert list(line(ax, "NVIDIA H100 | keypointrcnn (COCO_V1) | fp32-bs1 | t.csv #2").get_ydata()) == [41.0]
    assert list(line(ax, "NVIDIA H100 | keypointrcnn (COCO_LEGACY) | fp32-bs1").get_ydata()) == [44.0, 33.0]
    assert ax.get_yscale() == "linear"
    assert_no_legend_over_a_plot(fig)


def test_speed_log_axis_reads_plain_numbers(tmp_path: Path) -> None:
    rows = [speed_row(480, 400.0), speed_row(640, 300.0), speed_row(480, 2.0, device_name="CPU"),
            speed_row(640, 1.5, device_name="CPU")]
    fig = speed_figures(read_speed_rows([speed_csv(tmp_path / "t.csv", rows)]))["speed_fps.png"]
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_yscale() == "log"
    shown = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert "100" in shown and "2" in shown and not any("times" in t or "^" in t for t in shown), shown
    # Every point lies between two labelled ticks, none on the frame; the x ticks are the sizes measured.
    low, high = ax.get_ylim()
    inside = [t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high]
    assert (low, high) == (1.0, 500.0) and inside == ["1", "2", "5", "10", "20", "50", "100", "200", "500"]
    assert list(ax.get_xticks()) == [480, 640] and [t.get_text() for t in ax.get_xticklabels()] == ["480", "640"]
    assert [log_tick_below(v) for v in (1.0, 1.5, 2.0, 38.0, 0.03)] == [0.5, 1.0, 1.0, 20.0, 0.02]
    assert [log_tick_above(v) for v in (1.0, 38.0, 50.0, 400.0, 0.03)] == [2.0, 50.0, 100.0, 500.0, 0.05]


def test_speed_x_ticks_are_the_measured_sizes_up_to_a_dozen(tmp_path: Path) -> None:
    """One size measured: one tick at it (before: ticks 92, 94, ... 100 around a size of 96); many sizes: the
    default ticks."""
    one = speed_figures(read_speed_rows([speed_csv(tmp_path / "a.csv", [speed_row(96, 1.0)])]))["speed_fps.png"]
    assert [t.get_text() for t in one.axes[0].get_xticklabels()] == ["96"]
    many = [speed_row(100 + 50 * i, 100.0 - i) for i in range(13)]
    fig = speed_figures(read_speed_rows([speed_csv(tmp_path / "b.csv", many)]))["speed_fps.png"]
    assert len(fig.axes[0].get_xticks()) < 13


# --- threshold curves and the keypoint heatmap ------------------------------------------------------------------


def person_rows() -> list[dict[str, Any]]:
    rows = []
    for i, t in enumerate(np.round(np.arange(0, 1, 0.05), 2)):
        f1 = 0.8 - abs(t - 0.3)
        rows.append({"threshold": float(t), "AP": 0.5 - 0.4 * t, "precision_50": 0.5 + 0.5 * t,
                     "precision_75": 0.4 + 0.5 * t, "recall_50": 0.9 - 0.8 * t, "recall_75": 0.8 - 0.7 * t,
                     "f1_50": f1, "f1_75": f1 - 0.1, "best_f1": i == 6})
    return rows


def keypoint_rows() -> list[dict[str, Any]]:
    rows = []
    for t in (-1.0, 0.0, 2.0, 5.0):
        for j, name in enumerate(("nose", "left_eye", "all")):
            visible = 0 if name == "left_eye" else 10
            shown = max(0, 10 - int(2 * (t + 1)) - j)
            rows.append({"threshold": t, "keypoint": name, "visible": visible, "shown": shown,
                         "correct": min(shown, 8), "precision": (min(shown, 8) / shown) if shown else None,
                         "recall": (min(shown, 8) / visible) if visible else None})
    return rows


def test_threshold_curves_best_f1_label_is_never_under_the_legend() -> None:
    rows = person_rows()
    fig = threshold_curves_figure(rows, keypoint_rows(), keypoint_score_kind="logit")
    ax, kx = fig.axes[0], fig.axes[1]
    assert list(line(ax, "AP").get_ydata()) == [r["AP"] for r in rows]
    assert list(line(ax, "f1 @0.50").get_ydata()) == [r["f1_50"] for r in rows]
    assert list(line(ax, "recall @0.75").get_xdata()) == [r["threshold"] for r in rows]
    best = [t for t in ax.texts if t.get_gid() == "best_f1"]
    assert [t.get_text() for t in best] == ["best F1 @ 0.3"] and best[0].xy == (0.3, 1.0)
    overall = [r for r in keypoint_rows() if r["keypoint"] == "all"]
    for metric in ("precision", "recall"):  # undefined (0/0) is a gap in the line
        expected = [math.nan if r[metric] is None else r[metric] for r in overall]
        np.testing.assert_array_equal(line(kx, metric).get_ydata(), expected)
    assert math.isnan(line(kx, "precision").get_ydata()[-1])
    # Precision and recall may coincide: they differ in line style and marker, so both stay visible.
    looks = {(ln.get_linestyle(), ln.get_marker()) for ln in kx.get_lines()}
    assert len(looks) == 2
    assert_no_legend_over_a_plot(fig)


def test_keypoint_heatmap_cells_are_the_sweep() -> None:
    rows = keypoint_rows()
    names, thresholds, _ = keypoint_threshold_grid(rows, "recall")
    assert names == ["nose", "left_eye", "all"] and thresholds == [-1.0, 0.0, 2.0, 5.0]
    fig = keypoint_threshold_heatmap_figure(rows, "logit", person_thresh=0.9)
    plots = [ax for ax in fig.axes if ax.images and ax.images[0].get_gid() in ("recall", "precision")]
    assert [ax.images[0].get_gid() for ax in plots] == ["recall", "precision"]
    for ax in plots:
        metric = ax.images[0].get_gid()
        data = ax.images[0].get_array()
        for r in rows:
            i, j = names.index(r["keypoint"]), thresholds.index(r["threshold"])
            if r[metric] is None:
                assert data.mask[i, j]  # undefined (0/0): grey, not 0
            else:
                assert not data.mask[i, j] and data[i, j] == r[metric]
        texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
        for r in rows:
            i, j = names.index(r["keypoint"]), thresholds.index(r["threshold"])
            assert texts[i, j] == ("–" if r[metric] is None else f"{100 * r[metric]:.0f}")
        assert [t.get_text() for t in ax.get_xticklabels()] == ["-1", "0", "2", "5"]
    assert [t.get_text() for t in plots[0].get_yticklabels()] == ["nose", "left eye", "all"]  # shared by both
    assert "above person score 0.9" in fig.get_suptitle()
    assert not [t for ax in fig.axes for t in ax.texts if t.get_gid() == "empty"]
    # Nobody matched: every cell undefined, and the panels say so.
    empty = keypoint_threshold_heatmap_figure([dict(r, precision=None, recall=None) for r in rows])
    said = [t.get_text() for ax in empty.axes for t in ax.texts if t.get_gid() == "empty"]
    assert len(said) == 2 and all(t.startswith("no matched persons") for t in said)


# --- PR curves, the error diagnosis, the breakdown, AP per keypoint --------------------------------------------


def test_pr_curves_draw_cocoeval_precision() -> None:
    gt, results = make_synthetic_coco(num_images=10, seed=2)
    result = evaluate(gt, results)
    fig = pr_curves_figure({"keypoints": result})
    ax = fig.axes[0]
    for label, (recall, precision) in pr_curves(result).items():
        drawn = line(ax, f"{label}: AP {100 * precision.mean():.1f}")
        assert np.array_equal(drawn.get_xdata(), recall) and np.array_equal(drawn.get_ydata(), precision)
    assert line(ax, f"mean OKS 0.50:0.95: AP {100 * result.stats['AP']:.1f}")
    assert_no_legend_over_a_plot(fig)


def test_error_pr_curves_draw_each_step() -> None:
    recall = np.linspace(0, 1, 101)
    curves = {"original": {"OKS 0.50": list(1 - recall), "OKS 0.75": []},
              "miss": {"OKS 0.50": list(np.ones(101)), "OKS 0.75": []}}
    fig = error_pr_curves_figure({"recall": recall.tolist(), "panels": ["OKS 0.50", "OKS 0.75"], "curves": curves})
    ax, empty = fig.axes[0], fig.axes[1]
    assert list(line(ax, "[50.0] original detections").get_ydata()) == curves["original"]["OKS 0.50"]
    assert list(line(ax, "[100.0] miss fixed").get_ydata()) == curves["miss"]["OKS 0.50"]
    assert not empty.get_lines() and [t.get_text() for t in empty.texts] == ["no GT"]
    assert_no_legend_over_a_plot(fig)


def test_breakdown_bars_are_the_rows() -> None:
    rows = [{"keypoint": n, "n": 4, "mean_similarity": 0.1 * (i + 1), "frac_ks_50": 0.5, "frac_ks_75": 0.25,
             "median_error": 0.01 * (i + 1)} for i, n in enumerate(("nose", "left_eye"))]
    rows.append({"keypoint": "all", "n": 8, "mean_similarity": 0.15, "frac_ks_50": 0.5, "frac_ks_75": 0.25,
                 "median_error": 0.015})
    fig = keypoint_breakdown_figure(rows)
    left, right = fig.axes
    mean_bars = left.containers[0]
    assert [b.get_width() for b in mean_bars] == [0.1, 0.2]
    assert [b.get_width() for b in right.containers[0]] == [0.01, 0.02]
    assert [t.get_text() for t in left.get_yticklabels()] == ["nose", "left eye"]
    assert "8 GT keypoints" in fig.get_suptitle()
    assert [line.get_xdata()[0] for line in left.get_lines()] == [0.15, 0.5, 0.25]  # the "all" row, dashed
    assert right.get_lines()[0].get_xdata()[0] == 0.015
    assert_no_legend_over_a_plot(fig)


def test_keypoint_ap_bars_are_the_rows() -> None:
    rows = [
        {"kind": "all", "name": "all", "AP": 0.472, "AP50": 0.739, "AP75": 0.611, "keypoints": "all"},
        {"kind": "group", "name": "legs", "AP": 0.553, "AP50": 0.836, "AP75": 0.649,
         "keypoints": "left_knee,right_knee,left_ankle,right_ankle"},
        {"kind": "keypoint", "name": "left_ear", "AP": 0.05, "AP50": 0.2, "AP75": 0.0, "keypoints": "left_ear"},
        {"kind": "keypoint", "name": "right_ear", "AP": -1.0, "AP50": -1.0, "AP75": -1.0, "keypoints": "right_ear"},
    ]  # fmt: skip
    fig = keypoint_ap_figure(rows)
    ax = fig.axes[0]
    bars = [b.get_width() for b in ax.containers[0]]
    assert bars == [100 * 0.553, 100 * 0.05, 0]  # percent, as the axis reads; no bar without GT
    assert [t.get_text() for t in ax.get_yticklabels()] == ["legs (4)", "left ear", "right ear"]
    ap50 = list(next(ln for ln in ax.get_lines() if ln.get_gid() == "AP50").get_xdata())
    assert ap50[:2] == [100 * 0.836, 100 * 0.2] and math.isnan(ap50[2])
    values = [t.get_text() for t in ax.texts if t.get_gid() == "ap_value"]
    assert values == ["55.3", "5.0", "no GT"]
    whole = [ln for ln in ax.get_lines() if ln.get_label().startswith("all keypoints")]
    assert whole[0].get_label() == "all keypoints: AP 47.2" and list(whole[0].get_xdata()) == [100 * 0.472] * 2
    assert_no_legend_over_a_plot(fig)
