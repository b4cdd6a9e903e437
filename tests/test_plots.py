"""Figures: PR curve data equals COCO's AP, every file is a PNG of the stated size, `kpbench plot` and its errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from kpdata import assert_one_line_error, make_run_dir, png_size

from kpbench.core.errors import KpbenchError
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate
from kpbench.report.figures import plot_pr_curves, plot_speed, pr_curves, read_speed_rows
from kpbench.report.run_outputs import plot_run


@pytest.fixture(scope="module")
def synthetic() -> tuple[dict, list]:
    return make_synthetic_coco(num_images=12, seed=3)


def test_pr_curve_means_are_coco_ap(synthetic) -> None:
    gt, results = synthetic
    result = evaluate(gt, results)
    curves = pr_curves(result)
    assert list(curves) == ["OKS 0.50", "OKS 0.75", "mean OKS 0.50:0.95"]
    for (label, (recall, precision)), stat in zip(curves.items(), ("AP50", "AP75", "AP")):
        assert recall.shape == precision.shape == (101,)
        assert recall[0] == 0.0 and recall[-1] == 1.0
        assert precision.mean() == pytest.approx(result.stats[stat], abs=1e-12), label
    assert 0 < result.stats["AP"] < result.stats["AP50"] < 1  # a curve worth drawing


def test_pr_curves_png_sizes(synthetic, tmp_path: Path) -> None:
    gt, results = synthetic
    kp = evaluate(gt, results)
    boxes = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.8} for a in gt["annotations"]]
    bbox = evaluate(gt, boxes, iou_type="bbox")
    assert png_size(plot_pr_curves(kp, tmp_path / "one.png")) == (500, 465)  # the legend below the panel
    assert png_size(plot_pr_curves({"keypoints": kp, "bbox": bbox}, tmp_path / "two.png")) == (1000, 465)
    assert list(pr_curves(bbox)) == ["IoU 0.50", "IoU 0.75", "mean IoU 0.50:0.95"]
    # No GT at all: empty curves, still a valid file.
    empty = evaluate({**gt, "annotations": []}, results)
    assert all(p.size == 0 for _, p in pr_curves(empty).values())
    assert png_size(plot_pr_curves(empty, tmp_path / "empty.png")) == (500, 465)


def test_plot_run_and_threshold_curves(tmp_path: Path) -> None:
    from kpbench.analysis.thresholds import CURVES_FILE, thresholds_for_run, write_threshold_files

    run = make_run_dir(tmp_path).path
    written = plot_run(run)
    assert written == [run / "pr_curves.png"]
    assert png_size(written[0]) == (1000, 465)
    # With a threshold sweep in the run, its curves are redrawn from the CSV files.
    report = thresholds_for_run(run)
    write_threshold_files(run, report.person, report.keypoint, plot=False)
    written = plot_run(run)
    assert written == [run / "pr_curves.png", run / CURVES_FILE]
    assert png_size(written[1]) == (1560, 600)


def write_speed_csv(path: Path, rows: list[dict]) -> Path:
    columns = ["device_name", "size", "variant", "fps", "median_ms", "status", "kp_AP", "error"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


def speed_rows(device: str, variant: str, fps: list[float], ap: list[float] | None = None) -> list[dict]:
    sizes = [320, 480, 640, 800]
    return [
        {
            "device_name": device,
            "size": s,
            "variant": variant,
            "fps": f,
            "median_ms": 1000 / f,
            "status": "ok",
            "kp_AP": "" if ap is None else ap[i],
        }
        for i, (s, f) in enumerate(zip(sizes, fps))
    ]


def test_plot_speed(tmp_path: Path) -> None:
    h100 = write_speed_csv(
        tmp_path / "h100.csv",
        [
            *speed_rows("NVIDIA H100", "fp32-bs1", [40.0, 31.0, 24.0, 19.0], ap=[0.52, 0.60, 0.63, 0.65]),
            *speed_rows("NVIDIA H100", "fp16-bs1", [70.0, 55.0, 41.0, 33.0]),
            {
                "device_name": "NVIDIA H100",
                "size": 800,
                "variant": "fp32-bs1-compile",
                "fps": "",
                "status": "failed",
                "error": "compile failed",
            },
        ],
    )
    cpu = write_speed_csv(tmp_path / "cpu.csv", speed_rows("AMD EPYC", "fp32-bs1", [2.1, 1.2, 0.8, 0.5]))
    rows = read_speed_rows([h100, cpu])
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}  # the failed row is left out
    assert rows[0]["size"] == 320 and rows[0]["kp_AP"] == 0.52 and rows[4]["kp_AP"] is None
    out = tmp_path / "figs"
    written = plot_speed([h100, cpu], out)
    assert written == [out / "speed_fps.png", out / "speed_pareto.png"]
    # 800 wide; 510 tall plus 19 per legend row: 3 lines in 2 rows, then 1 line and no frontier (1 AP point per
    # size on one device is its own frontier only with 2+ points: here 4, so a frontier line too) in 1 row.
    assert [png_size(p) for p in written] == [(800, 548), (800, 529)]
    # Without any measured AP, only the FPS figure; the default folder is the first CSV's.
    assert plot_speed([cpu]) == [tmp_path / "speed_fps.png"]
    with pytest.raises(KpbenchError, match=r"missing column\(s\) device_name, size, variant, fps"):
        plot_speed([_write(tmp_path / "bad.csv", "a,b\n1,2\n")])
    with pytest.raises(KpbenchError, match="no successful speed rows"):
        plot_speed([write_speed_csv(tmp_path / "failed.csv", [{"device_name": "x", "size": 1, "status": "failed"}])])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_cli_plot(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    code, _, err = run_cli("plot", run)
    assert code == 0, err
    assert png_size(run / "pr_curves.png") == (1000, 465)
    csv_path = write_speed_csv(tmp_path / "s.csv", speed_rows("GPU", "fp32-bs1", [4.0, 3.0, 2.0, 1.0]))
    code, _, err = run_cli("plot", csv_path, "--out", tmp_path / "o")
    assert code == 0, err
    assert png_size(tmp_path / "o" / "speed_fps.png") == (800, 529)
    assert_one_line_error(run_cli("plot", tmp_path / "missing"), "missing", "no such run directory")
    assert_one_line_error(run_cli("plot", run, "--out", tmp_path), "--out")


def test_cli_plot_unusable_out_is_one_line(tmp_path: Path, run_cli) -> None:
    csv_path = write_speed_csv(tmp_path / "s.csv", speed_rows("GPU", "fp32-bs1", [4.0, 3.0, 2.0, 1.0]))
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert_one_line_error(run_cli("plot", csv_path, "--out", a_file), "--out", "a_file", "not a directory")
    assert_one_line_error(run_cli("plot", csv_path, "--out", "/proc/x"), "--out /proc/x", "cannot create")
    assert a_file.read_text() == ""


def test_cli_plot_unreadable_csv_is_one_line(tmp_path: Path, run_cli) -> None:
    binary = tmp_path / "bin.csv"
    binary.write_bytes(bytes(range(256)))
    assert_one_line_error(run_cli("plot", binary), "bin.csv: not a readable CSV (UnicodeDecodeError")
    ragged = write_speed_csv(tmp_path / "r.csv", speed_rows("GPU", "fp32-bs1", [4.0, 3.0]))
    ragged.write_text(ragged.read_text() + "1,2,3," * 40 + "\n")
    assert_one_line_error(run_cli("plot", ragged), "r.csv: row 3: 121 fields, the header has 8 (a half-written row?)")


def test_speed_plot_keeps_12_series_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib's default cycle has 10 colours: series 11 and 12 used to look like series 1 and 2."""
    import kpbench.report.figures
    from kpbench.report.figures import series_styles

    assert len({tuple(s.values()) for s in series_styles(list(range(70))).values()}) == 70
    figures = []
    save = kpbench.report.figures.save_figure
    monkeypatch.setattr(kpbench.report.figures, "save_figure", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    rows = [
        r for i in range(12)
        for r in speed_rows(f"GPU {i:02d}", "fp32-bs1", [40.0 + i, 30.0 + i, 20.0 + i, 10.0 + i], ap=[0.5] * 4)
    ]
    written = plot_speed([write_speed_csv(tmp_path / "many.csv", rows)], tmp_path)
    assert [png_size(p) for p in written] == [(800, 624), (800, 624)]  # 12 legend entries: 6 rows
    for fig in figures:  # speed_fps.png and speed_pareto.png
        lines = [line for line in fig.axes[0].get_lines() if line.get_gid() != "pareto"]
        looks = [(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines]
        assert len(lines) == 12 and len(set(looks)) == 12
    # The same series has the same look in both figures.
    assert [line.get_label() for line in figures[0].axes[0].get_lines()] == [
        line.get_label() for line in figures[1].axes[0].get_lines()
    ]
    assert [(line.get_color(), line.get_marker()) for line in figures[0].axes[0].get_lines()] == [
        (line.get_color(), line.get_marker()) for line in figures[1].axes[0].get_lines()
    ]


def test_no_matplotlib_at_import() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kpbench.report.figures, kpbench.report.draw, kpbench.analysis.breakdown, kpbench.cli.visual\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'PIL') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_speed_series_keep_thresholds_and_synthetic_apart() -> None:
    from kpbench.report.figures import _series

    base = {"device_name": "H100", "variant": "fp32-bs1", "size": 320, "fps": 10.0}
    rows = [
        dict(base, box_score_thresh=0.05, synthetic=False),
        dict(base, box_score_thresh=0.9, synthetic=False),
        dict(base, box_score_thresh=0.05, synthetic=True),
        dict(base, size=480, box_score_thresh=0.05, synthetic=False),
    ]
    series = _series(rows)
    assert sorted(series) == [("H100", "", "fp32-bs1", ""), ("H100", "", "fp32-bs1 synthetic", ""),
                              ("H100", "", "fp32-bs1 thr0.9", "")]  # no model column, no CSV: empty
    assert [r["size"] for r in series["H100", "", "fp32-bs1", ""]] == [320, 480]


def test_pareto_front_by_hand() -> None:
    from kpbench.report.figures import pareto_front

    # (ms, AP): 3 is dominated by 0 (slower, less accurate); 4 ties 1 exactly (the first kept); 2 is the slowest
    # but the most accurate; 5 is as fast as 0 but less accurate.
    points = [(10.0, 50.0), (20.0, 60.0), (40.0, 65.0), (30.0, 55.0), (20.0, 60.0), (10.0, 40.0)]
    assert pareto_front(points) == [0, 1, 2]
    assert pareto_front([]) == [] and pareto_front([(5.0, 1.0)]) == [0]
    assert pareto_front([(1.0, 2.0), (2.0, 2.0)]) == [0]  # equal AP, slower: dominated


def test_pareto_plot_over_two_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """speed_pareto.png: one series per model (AP against ms per image, read from ms_per_image), and the device's
    frontier through the points no other model or size beats on both."""
    import kpbench.report.figures

    columns = ["device_name", "model", "size", "variant", "fps", "ms_per_image", "median_ms", "status", "kp_AP"]
    rows = [
        {"device_name": "GPU", "model": "keypointrcnn", "size": s, "variant": "fp32-bs1", "fps": 1000 / ms,
         "ms_per_image": ms, "median_ms": ms, "status": "ok", "kp_AP": ap}
        for s, ms, ap in ((320, 20.0, 0.50), (640, 40.0, 0.62))
    ] + [
        {"device_name": "GPU", "model": "yolo11n-pose", "size": s, "variant": "fp32-bs1", "fps": 1000 / ms,
         "ms_per_image": ms, "median_ms": ms, "status": "ok", "kp_AP": ap}
        for s, ms, ap in ((320, 5.0, 0.40), (640, 8.0, 0.48), (800, 25.0, 0.49))
    ]  # fmt: skip
    path = tmp_path / "two.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)
    figures = []
    save = kpbench.report.figures.save_figure
    monkeypatch.setattr(kpbench.report.figures, "save_figure", lambda fig, p: (figures.append(fig), save(fig, p))[1])
    written = plot_speed([path], tmp_path)
    assert written == [tmp_path / "speed_fps.png", tmp_path / "speed_pareto.png"]
    assert png_size(written[1]) == (800, 548)  # 2 models and a frontier: 2 legend rows
    lines = {line.get_label(): line for line in figures[1].axes[0].get_lines()}
    assert set(lines) == {"GPU | keypointrcnn | fp32-bs1", "GPU | yolo11n-pose | fp32-bs1", "Pareto frontier (GPU)"}
    assert list(lines["GPU | yolo11n-pose | fp32-bs1"].get_xdata()) == [5.0, 8.0, 25.0]
    assert list(lines["GPU | keypointrcnn | fp32-bs1"].get_ydata()) == [50.0, 62.0]
    front = lines["Pareto frontier (GPU)"]
    # YOLO at 800 (25 ms, 49.0) is beaten by Keypoint R-CNN at 320 (20 ms, 50.0): off the frontier; every other
    # point is more accurate than everything faster.
    assert list(front.get_xdata()) == [5.0, 8.0, 20.0, 40.0] and list(front.get_ydata()) == [40.0, 48.0, 50.0, 62.0]
    assert figures[0].axes[0].get_title() == "keypointrcnn vs yolo11n-pose throughput by input size"
