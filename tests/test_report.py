"""`kpbench report`: merging speed CSVs from several machines, run directories and threshold tables."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kpbench.core.errors import KpbenchError
from kpbench.engine.speed import SPEED_COLUMNS, SpeedRun, write_speed_files
from kpbench.report.tables import build_report, run_table, speed_pivot, speed_report, speed_table, thresholds_table

RunCli = Callable[..., tuple[int, str, str]]  # the run_cli fixture (conftest.py)
H100 = "NVIDIA H100 80GB HBM3"
A10G = "NVIDIA A10G"


def speed_row(device_name: str, size: int, variant: str, fps: float | None, **extra: Any) -> dict[str, Any]:
    """A speed CSV row as `kpbench speed` writes it on CUDA (median = 1000/fps, p90 = 1.1 x median)."""
    row: dict[str, Any] = dict.fromkeys(SPEED_COLUMNS)
    dtype, bs = variant.split("-")[:2]
    row.update(
        timestamp="2026-01-01T00:00:00Z", device="cuda:0", device_name=device_name, gpu_count=1, size=size,
        max_size=round(size * 1333 / 800), variant=variant, dtype=dtype, batch_size=int(bs[2:]), synthetic=False,
        num_images=8, weights="COCO_V1", box_score_thresh=0.05, warmup=10, iters=50, status="ok",
    )  # fmt: skip
    if fps is not None:
        median = 1000.0 / fps
        row.update(fps=fps, mean_ms=median, median_ms=median, p90_ms=median * 1.1, padded_shapes=f"1x3x{size}x{size}",
                   peak_mem_allocated_mib=size * 2.0, peak_mem_reserved_mib=size * 3.0, dets_per_image=4.5)  # fmt: skip
    row.update(extra)
    return row


def write_device(out: Path, device_name: str, rows: list[dict[str, Any]]) -> Path:
    """Write rows as one `kpbench speed` output (CSV + manifest + Markdown) into `out`; returns the CSV."""
    manifest = {"kind": "kpbench-speed", "version": 1, "created": "2026-01-01T00:00:00Z", "settings": {"weights": "x"},
                "environment": {"device_name": device_name, "device": "cuda:0"}, "images": {"source": "coco"}}  # fmt: skip
    result = write_speed_files(out, SpeedRun(rows=rows, manifest=manifest), device_name=device_name)
    assert result.csv_path is not None
    return result.csv_path


@pytest.fixture()
def two_devices(tmp_path: Path) -> tuple[Path, Path]:
    h100 = [
        speed_row(H100, 320, "fp32-bs1", 40.0),
        speed_row(H100, 640, "fp32-bs1", 25.0),
        speed_row(H100, 320, "fp16-bs1", 50.0),
        speed_row(H100, 640, "fp16-bs1", 32.0),
    ]
    a10g = [
        speed_row(A10G, 320, "fp32-bs1", 16.0),
        speed_row(A10G, 640, "fp32-bs1", 8.0),
        speed_row(A10G, 320, "fp16-bs1", 20.0),
        speed_row(A10G, 640, "fp16-bs1", None, status="failed", error="OutOfMemoryError: CUDA out of memory"),
    ]
    return write_device(tmp_path / "machine-a", H100, h100), write_device(tmp_path / "machine-b", A10G, a10g)


# --------------------------------------------------------------------------------------------------------------
# speed


def test_speed_merge_per_gpu_table_and_pivot(two_devices: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_devices
    assert a.name.startswith("nvidia-h100-80gb-hbm3-") and b.name.startswith("nvidia-a10g-")
    tables = speed_report([tmp_path])  # both machines' folders, found through their manifests
    table = tables["table"]
    assert list(table.columns) == [
        "device", "size", "variant", "box_score_thresh", "synthetic", "fps", "median_ms", "p90_ms", "padded_shapes",
        "memory_mib", "memory", "dets_per_image", "status", "error", "source",
    ]  # fmt: skip  (no AP columns: nothing measured them)
    assert list(zip(table["device"], table["variant"], table["size"], strict=True)) == [
        (A10G, "fp16-bs1", 320), (A10G, "fp16-bs1", 640), (A10G, "fp32-bs1", 320), (A10G, "fp32-bs1", 640),
        (H100, "fp16-bs1", 320), (H100, "fp16-bs1", 640), (H100, "fp32-bs1", 320), (H100, "fp32-bs1", 640),
    ]  # fmt: skip
    h100_640 = table[(table["device"] == H100) & (table["size"] == 640) & (table["variant"] == "fp32-bs1")].iloc[0]
    assert h100_640["fps"] == 25.0 and h100_640["median_ms"] == 40.0 and h100_640["p90_ms"] == pytest.approx(44.0)
    assert h100_640["padded_shapes"] == "1x3x640x640" and h100_640["memory_mib"] == 1280.0
    assert h100_640["memory"] == "cuda max allocated" and h100_640["source"] == a.name
    oom = table.iloc[1]
    assert oom["status"] == "failed" and oom["error"] == "OutOfMemoryError: CUDA out of memory"
    assert math.isnan(oom["fps"])

    expected = pd.DataFrame(
        {
            "device": [A10G, A10G, H100, H100],
            "variant": ["fp16-bs1", "fp32-bs1", "fp16-bs1", "fp32-bs1"],
            "box_score_thresh": [0.05] * 4,
            "synthetic": [False] * 4,
            "fps@320": [20.0, 16.0, 50.0, 40.0],
            "fps@640": [float("nan"), 8.0, 32.0, 25.0],
        }
    )
    pd.testing.assert_frame_equal(tables["pivot"], expected)


def test_same_gpu_model_on_two_machines_stays_apart(tmp_path: Path) -> None:
    a = write_device(tmp_path / "a", H100, [speed_row(H100, 320, "fp32-bs1", 40.0)])
    b = write_device(tmp_path / "b", H100, [speed_row(H100, 320, "fp32-bs1", 38.0)])
    pivot = speed_pivot(pd.concat([pd.read_csv(a).assign(source="a.csv"), pd.read_csv(b).assign(source="b.csv")]))
    assert list(pivot["device"]) == [f"{H100} [a.csv]", f"{H100} [b.csv]"]
    assert list(pivot["fps@320"]) == [40.0, 38.0]


def test_ap_columns_appear_when_measured(tmp_path: Path) -> None:
    write_device(tmp_path, H100, [speed_row(H100, 320, "fp32-bs1", 40.0, kp_AP=0.61, box_AP=0.52, accuracy_images=8)])
    table = speed_report([tmp_path])["table"]
    assert table.loc[0, "kp_AP"] == 0.61 and table.loc[0, "box_AP"] == 0.52
    assert "error" not in table.columns  # no row failed


def test_speed_table_from_real_speed_columns_keeps_cpu_memory(tmp_path: Path) -> None:
    row = speed_row("AMD EPYC", 64, "fp32-bs1", 2.0, device="cpu", peak_mem_allocated_mib=None,
                    peak_mem_reserved_mib=None, peak_rss_mib=900.5, rss_scope="row")  # fmt: skip
    table = speed_table(pd.read_csv(write_device(tmp_path, "AMD EPYC", [row])).assign(source="x"))
    assert table.loc[0, "memory_mib"] == 900.5 and table.loc[0, "memory"] == "rss peak (row)"


def test_cpu_rows_name_the_device_not_a_gpu(tmp_path: Path) -> None:
    """On a CPU the table's `device` column is the CPU's name (there is no `gpu` column to mislead)."""
    row = speed_row("AMD EPYC 7R13", 64, "fp32-bs1", 2.0, device="cpu", peak_rss_mib=900.5, rss_scope="row")
    tables = speed_report([write_device(tmp_path, "AMD EPYC 7R13", [row])])
    assert "gpu" not in tables["table"].columns and "gpu" not in tables["pivot"].columns
    assert list(tables["table"]["device"]) == list(tables["pivot"]["device"]) == ["AMD EPYC 7R13"]


def test_speed_csv_without_its_manifest_is_still_found(tmp_path: Path) -> None:
    """A speed CSV copied without its .json (found by its header) is merged; other CSVs in the folder are not."""
    csv_path = write_device(tmp_path / "copied", H100, [speed_row(H100, 320, "fp32-bs1", 40.0)])
    csv_path.with_suffix(".json").unlink()
    write_device(tmp_path / "full", A10G, [speed_row(A10G, 320, "fp32-bs1", 16.0)])
    (tmp_path / "full" / "notes.csv").write_text("size,fps\n320,1.0\n")  # not a speed table
    table = speed_report([tmp_path])["table"]
    assert sorted(table["device"]) == [A10G, H100]
    assert set(table["source"]) == {csv_path.name, next((tmp_path / "full").glob("nvidia-a10g-*.csv")).name}


def test_other_thresholds_and_synthetic_images_are_not_merged(tmp_path: Path) -> None:
    """Rows of one device and variant measured at box_score_thresh 0.05 and 0.9, or on synthetic images, are
    separate rows and pivot lines (they time different amounts of post-processing)."""
    a = write_device(tmp_path / "a", H100, [speed_row(H100, 320, "fp32-bs1", 40.0)])
    b = write_device(tmp_path / "b", H100, [speed_row(H100, 320, "fp32-bs1", 55.0, box_score_thresh=0.9)])
    c = write_device(tmp_path / "c", H100, [speed_row(H100, 320, "fp32-bs1", 60.0, synthetic=True)])
    tables = speed_report([a, b, c])
    pivot = tables["pivot"]
    assert list(pivot["device"]) == [H100] * 3  # told apart by their settings, not by file name
    assert list(zip(pivot["box_score_thresh"], pivot["synthetic"], pivot["fps@320"], strict=True)) == [
        (0.05, False, 40.0), (0.05, True, 60.0), (0.9, False, 55.0),
    ]  # fmt: skip
    table = tables["table"]
    assert list(zip(table["box_score_thresh"], table["synthetic"], table["fps"], strict=True)) == [
        (0.05, False, 40.0), (0.05, True, 60.0), (0.9, False, 55.0),
    ]  # fmt: skip


def test_synthetic_flags_of_old_and_mixed_csvs(tmp_path: Path) -> None:
    """A CSV whose `synthetic` cells are empty (older tables) is real images; "False" is False, "True" True, also
    when the merged column mixes text, booleans and empty cells (no pandas fill-value deprecation on the way: the
    test suite makes those errors for kpbench.report)."""
    rows = [speed_row(H100, 320, "fp32-bs1", 40.0, synthetic=None)]
    a = write_device(tmp_path / "a", H100, rows)
    b = write_device(tmp_path / "b", A10G, [speed_row(A10G, 320, "fp32-bs1", 20.0, synthetic=True),
                                            speed_row(A10G, 640, "fp32-bs1", 10.0, synthetic=False)])
    c = tmp_path / "c.csv"  # hand-edited: text where pandas would read booleans
    c.write_text(a.read_text().replace("NVIDIA H100 80GB HBM3", "CPU X").replace(",,8,", ",False,8,", 1))
    table = speed_report([a, b, c])["table"]
    assert list(zip(table["device"], table["size"], table["synthetic"], strict=True)) == [
        ("CPU X", 320, False), (A10G, 640, False), (A10G, 320, True), (H100, 320, False)]  # synthetic after real
    assert table["synthetic"].dtype == bool


def test_models_are_a_dimension_of_the_table_and_the_pivot(tmp_path: Path) -> None:
    """Rows of several models (one of them with two weights) pivot into model x size -> FPS, and the table keeps
    the new columns (ms per image, spread, stages, FLOPs) where rows have them."""
    work = dict(ms_per_image=25.0, iqr_over_median=0.02, unstable=False, stages="transform=1.0;backbone=20.0",
                stages_add_up=True, gflops_per_image=140.0, achieved_tflops=5.6, peak_fraction=0.01)
    rows = [
        speed_row(H100, 320, "fp32-bs1", 40.0, model="keypointrcnn", weights="COCO_V1", **work),
        speed_row(H100, 640, "fp32-bs1", 25.0, model="keypointrcnn", weights="COCO_V1", **work),
        speed_row(H100, 320, "fp32-bs1", 41.0, model="keypointrcnn", weights="COCO_LEGACY"),
        speed_row(H100, 320, "fp32-bs1", 300.0, model="yolo11n-pose", weights="yolo11n-pose.pt"),
        speed_row(H100, 640, "fp32-bs1", 200.0, model="yolo11n-pose", weights="yolo11n-pose.pt"),
    ]
    tables = speed_report([write_device(tmp_path, H100, rows)])
    expected = pd.DataFrame({
        "model": ["keypointrcnn (COCO_LEGACY)", "keypointrcnn (COCO_V1)", "yolo11n-pose"],
        "device": [H100] * 3, "variant": ["fp32-bs1"] * 3, "box_score_thresh": [0.05] * 3, "synthetic": [False] * 3,
        "fps@320": [41.0, 40.0, 300.0], "fps@640": [float("nan"), 25.0, 200.0],
    })  # fmt: skip
    pd.testing.assert_frame_equal(tables["pivot"], expected)
    table = tables["table"]
    assert list(table.columns) == [
        "model", "device", "size", "variant", "box_score_thresh", "synthetic", "fps", "ms_per_image", "median_ms",
        "p90_ms", "iqr_over_median", "unstable", "padded_shapes", "stages", "stages_add_up", "gflops_per_image",
        "achieved_tflops", "peak_fraction", "memory_mib", "memory", "dets_per_image", "status", "source",
    ]  # fmt: skip
    assert list(zip(table["model"], table["size"], table["fps"], strict=True)) == [
        ("keypointrcnn (COCO_LEGACY)", 320, 41.0), ("keypointrcnn (COCO_V1)", 320, 40.0),
        ("keypointrcnn (COCO_V1)", 640, 25.0), ("yolo11n-pose", 320, 300.0), ("yolo11n-pose", 640, 200.0),
    ]  # fmt: skip
    assert table.loc[1, "stages"] == "transform=1.0;backbone=20.0" and table.loc[1, "gflops_per_image"] == 140.0


def test_the_same_weights_on_two_machines_are_one_model(tmp_path: Path) -> None:
    """YOLO's weights column is a path: the same file (same sha256) at two paths is one model; a row without
    weights does not make a model look like it has several."""
    a = write_device(tmp_path / "a", H100, [speed_row(H100, 320, "fp32-bs1", 300.0, model="yolo11n-pose",
                                                      weights="/venv/a/yolo11n-pose.pt", weights_sha256="abc")])
    b = write_device(tmp_path / "b", A10G, [speed_row(A10G, 320, "fp32-bs1", 150.0, model="yolo11n-pose",
                                                      weights="/home/b/yolo11n-pose.pt", weights_sha256="abc")])
    c = write_device(tmp_path / "c", A10G, [speed_row(A10G, 320, "fp32-bs1", 9.0, model="keypointrcnn", weights=None)])
    pivot = speed_report([a, b, c])["pivot"]
    assert list(zip(pivot["model"], pivot["device"], pivot["fps@320"], strict=True)) == [
        ("keypointrcnn", A10G, 9.0), ("yolo11n-pose", A10G, 150.0), ("yolo11n-pose", H100, 300.0),
    ]  # fmt: skip
    d = write_device(tmp_path / "d", A10G, [speed_row(A10G, 320, "fp32-bs1", 140.0, model="yolo11n-pose",
                                                      weights="/x/other.pt", weights_sha256="def")])
    assert sorted(speed_report([a, d])["pivot"]["model"]) == ["yolo11n-pose (other.pt)", "yolo11n-pose (yolo11n-pose.pt)"]


@pytest.mark.parametrize("target", ["file-parent", "directory", "proc"])
def test_cli_report_unusable_out_is_one_line(
    two_devices: tuple[Path, Path], tmp_path: Path, run_cli: RunCli, target: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    out = {"file-parent": blocker / "report.md", "directory": tmp_path, "proc": Path("/proc/kpbench-x/report.md")}[target]
    code, stdout, err = run_cli("report", str(tmp_path), "--out", str(out))
    assert code == 2 and stdout == "" and err.count("\n") == 1 and err.startswith(f"error: --out {out}: "), err
    expected = {"file-parent": "exists and is not a directory", "directory": "is a directory, expected a file name",
                "proc": "cannot create the folder"}[target]  # fmt: skip
    assert expected in err


def test_cli_report_speed_formats_and_out(
    two_devices: tuple[Path, Path], tmp_path: Path, run_cli: RunCli
) -> None:
    a, b = two_devices
    code, out, err = run_cli("report", str(a), str(b), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"table", "pivot"} and len(doc["table"]) == 8
    assert doc["pivot"][0] == {"device": A10G, "variant": "fp16-bs1", "box_score_thresh": 0.05, "synthetic": False,
                               "fps@320": 20.0, "fps@640": None}  # fmt: skip

    code, out, err = run_cli("report", str(a), str(b))
    assert code == 0 and "## Speed: FPS (images/s) per model, device and size" in out and "## What was timed" in out
    assert f"| {H100} | fp32-bs1 | 0.050 | False | 40.000 | 25.000 |" in out

    merged = a.parent / "merged.csv"  # written beside a speed file: must not be read back as one
    code, out, err = run_cli("report", str(tmp_path), "--format", "csv", "--out", str(merged))
    assert code == 0 and out == "" and f"wrote {merged}" in err
    with merged.open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 8
    pivot_lines = (a.parent / "merged.pivot.csv").read_text().splitlines()
    assert pivot_lines[0] == "device,variant,box_score_thresh,synthetic,fps@320,fps@640"
    assert pivot_lines[1] == f"{A10G},fp16-bs1,0.05,False,20.0,"
    code, out, err = run_cli("report", str(tmp_path), "--format", "json")
    assert len(json.loads(out)["table"]) == 8


# --------------------------------------------------------------------------------------------------------------
# run


def write_run(path: Path, weights: str, min_size: int, kp: dict[str, float] | None, deviations: list[str],
              published: dict[str, float] | None, cached: int | None = None) -> Path:  # fmt: skip
    """A run directory: manifest, metrics (when `kp`), and a cache of `cached` images (default: all 5000 when
    evaluated, 12 when still running)."""
    path.mkdir(parents=True)
    manifest = {
        "config": {"weights": weights, "min_size": min_size, "max_size": round(min_size * 1333 / 800), "dtype": "fp32",
                   "batch_size": 1, "box_score_thresh": 0.05},
        "model": {"weights": weights}, "environment": {"device_name": H100}, "num_images": 5000,
        "deviations": deviations, "published": published, "status": "complete" if kp else "running",
    }  # fmt: skip
    (path / "manifest.json").write_text(json.dumps(manifest))
    lines = cached if cached is not None else 5000 if kp else 12  # one image each (an image counts once)
    (path / "detections.jsonl").write_text("".join(f'{{"image_id": {i + 1}}}\n' for i in range(lines)))
    if kp is not None:
        box = {"AP": kp["AP"] - 0.1, "AP50": 0.8}
        (path / "metrics.json").write_text(json.dumps({"keypoints": kp, "bbox": box}))
    return path


def test_run_table_rows(tmp_path: Path) -> None:
    kp = {"AP": 0.652, "AP50": 0.86, "AP75": 0.71, "APm": 0.6, "APl": 0.74, "AR": 0.71}
    write_run(tmp_path / "run-a", "COCO_V1", 800, kp, [], {"kp_AP": 65.0, "box_AP": 54.6})
    write_run(tmp_path / "run-b", "COCO_LEGACY", 640, {**kp, "AP": 0.58}, ["min_size 640 (published: 800)"], None)
    write_run(tmp_path / "run-c", "none", 800, None, ["no weights"], None)
    table = run_table([tmp_path])
    assert list(table["run"]) == ["run-a", "run-b", "run-c"]
    a, b, c = (table.iloc[i] for i in range(3))
    assert (a["weights"], a["size"], a["max_size"], a["dtype"], a["device_name"]) == ("COCO_V1", 800, 1333, "fp32", H100)
    assert (a["kp_AP"], a["kp_AP50"], a["kp_AR"], a["box_AP"]) == (0.652, 0.86, 0.71, pytest.approx(0.552))
    assert a["published_kp_AP"] == pytest.approx(0.65) and a["published_box_AP"] == pytest.approx(0.546)
    assert a["deviations"] == "none" and a["status"] == "ok"
    assert b["size"] == 640 and b["kp_AP"] == 0.58 and b["deviations"] == "min_size 640 (published: 800)"
    assert b["published_kp_AP"] is None or math.isnan(b["published_kp_AP"])
    assert c["status"] == "incomplete (running: 12 of 5000 images cached)"
    assert c["kp_AP"] is None or math.isnan(c["kp_AP"])


def test_run_whose_cache_is_gone_or_short_is_not_ok(tmp_path: Path) -> None:
    """An evaluated run whose detections.jsonl was deleted (or lost images) is listed as incomplete, not ok."""
    kp = {"AP": 0.652, "AP50": 0.86, "AP75": 0.71, "AR": 0.71}
    gone = write_run(tmp_path / "run-gone", "COCO_V1", 800, kp, [], None)
    (gone / "detections.jsonl").unlink()
    write_run(tmp_path / "run-short", "COCO_V1", 800, kp, [], None, cached=4999)
    unevaluated = write_run(tmp_path / "run-uneval", "COCO_V1", 800, kp, [], None)
    (unevaluated / "metrics.json").unlink()
    interrupted = write_run(tmp_path / "run-int", "COCO_V1", 800, None, [], None, cached=7)
    manifest = json.loads((interrupted / "manifest.json").read_text())
    (interrupted / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    table = run_table([tmp_path]).set_index("run")
    assert table.loc["run-gone", "status"] == "incomplete (detections.jsonl missing)"
    assert table.loc["run-gone", "kp_AP"] == 0.652  # the metrics it had are still shown
    assert table.loc["run-short", "status"] == "incomplete (detections.jsonl has 4999 of 5000 images)"
    assert table.loc["run-uneval", "status"] == "not evaluated (no metrics.json)"
    assert table.loc["run-int", "status"] == "incomplete (interrupted: 7 of 5000 images cached)"


def test_cli_report_run_markdown(tmp_path: Path, run_cli: RunCli) -> None:
    kp = {"AP": 0.652, "AP50": 0.86, "AP75": 0.71, "AR": 0.71}
    run = write_run(tmp_path / "run-a", "COCO_V1", 800, kp, [], {"kp_AP": 65.0, "box_AP": 54.6})
    code, out, err = run_cli("report", str(run), "--kind", "run")
    assert code == 0, err
    assert out.startswith("## Runs\n") and f"| run-a | keypointrcnn | COCO_V1 | {H100} | 800 | 1333 | fp32 | 1 | 0.050 |" in out
    # People read AP/AR in percent in Markdown (the published AP, stored 0-1, too); CSV keeps fractions.
    assert "| 65.2 | 86.0 | 71.0 | 71.0 |" in out and "| 65.0 | 54.6 |" in out
    assert "AP and AR in percent" in out
    code, out, err = run_cli("report", str(run), "--kind", "run", "--format", "csv")
    assert code == 0 and ",0.652,0.86,0.71,0.71," in out


# --------------------------------------------------------------------------------------------------------------
# thresholds

THRESHOLD_COLUMNS = ["threshold", "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl", "kept"]
THRESHOLD_COLUMNS += [f"{m}_{t}" for t in (50, 75) for m in ("tp", "fp", "fn", "precision", "recall", "f1")]
THRESHOLD_COLUMNS += ["best_f1"]


def write_thresholds(run_dir: Path, thresholds: list[float], ap: list[float]) -> Path:
    run_dir.mkdir(parents=True)
    rows = []
    for t, a in zip(thresholds, ap, strict=True):
        row = dict.fromkeys(THRESHOLD_COLUMNS, 0.5)
        row.update(threshold=t, AP=a, AR=a + 0.1, kept=round(1000 * (1 - t)), f1_50=a / 2, best_f1=False)
        rows.append(row)
    path = run_dir / "thresholds_person.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, THRESHOLD_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_thresholds_side_by_side(tmp_path: Path, run_cli: RunCli) -> None:
    write_thresholds(tmp_path / "run-a", [0.0, 0.1 + 0.2, 0.5], [0.65, 0.64, 0.60])  # 0.30000000000000004
    write_thresholds(tmp_path / "run-b", [0.0, 0.3, 0.9], [0.58, 0.57, 0.40])
    table = thresholds_table([tmp_path], stats=["AP", "kept"])
    assert list(table.columns) == ["threshold", "run-a:AP", "run-a:kept", "run-b:AP", "run-b:kept"]
    assert list(table["threshold"]) == [0.0, 0.3, 0.5, 0.9]
    assert list(table["run-a:AP"].fillna(-1)) == [0.65, 0.64, 0.60, -1]
    assert list(table["run-b:AP"].fillna(-1)) == [0.58, 0.57, -1, 0.40]
    assert list(table["run-b:kept"].fillna(-1)) == [1000, 700, -1, 100]
    assert str(table["run-b:kept"].dtype) == "Int64"  # counts stay integers where a run lacks a threshold

    default = thresholds_table([tmp_path / "run-a" / "thresholds_person.csv", tmp_path / "run-b"])
    assert list(default.columns[1:7]) == [f"run-a:{s}" for s in ("AP", "AR", "precision_50", "recall_50", "f1_50", "kept")]
    code, out, err = run_cli("report", str(tmp_path), "--kind", "thresholds", "--columns", "AP",
                             "--format", "csv")  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == ["threshold,run-a:AP,run-b:AP", "0.0,0.65,0.58", "0.3,0.64,0.57", "0.5,0.6,", "0.9,,0.4"]
    code, out, err = run_cli("report", str(tmp_path), "--kind", "thresholds", "--columns", "kept",
                             "--format", "json")  # fmt: skip
    assert json.loads(out)["table"][3] == {"threshold": 0.9, "run-a:kept": None, "run-b:kept": 100}

    # A box sweep has AR1/AR10/AR100 instead of AR: the defaults it lacks are left out, not an error.
    box = tmp_path / "box" / "thresholds_person.csv"
    box.parent.mkdir()
    pd.read_csv(tmp_path / "run-b" / "thresholds_person.csv").drop(columns=["AR"]).to_csv(box, index=False)
    mixed = thresholds_table([tmp_path / "run-a", box])
    assert [c for c in mixed.columns if c.startswith("box:")] == [
        f"box:{s}" for s in ("AP", "precision_50", "recall_50", "f1_50", "kept")
    ]


# --------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/speed"], "/nonexistent/speed: no such file or directory"),
        (["--kind", "plots"], "--kind: must be one of speed, run, thresholds"),
        (["--format", "xlsx"], "--format: must be one of markdown, csv, json"),
        (["--columns", "AP"], "--columns: only applies to --kind thresholds"),
    ],
)
def test_cli_report_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, args: list[str], message: str
) -> None:
    write_device(tmp_path, H100, [speed_row(H100, 320, "fp32-bs1", 40.0)])
    monkeypatch.chdir(tmp_path)
    paths = [] if args[0].startswith("/") else [str(tmp_path)]
    code, _, err = run_cli("report", *paths, *args)
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_inputs_are_user_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(KpbenchError, match=r"bad.csv: missing column\(s\) device_name, size"):
        build_report("speed", [bad])
    (tmp_path / "empty").mkdir()
    with pytest.raises(KpbenchError, match="no speed CSV found"):
        build_report("speed", [tmp_path / "empty"])
    with pytest.raises(KpbenchError, match="no run directory found"):
        build_report("run", [tmp_path / "empty"])
    thr = write_thresholds(tmp_path / "r", [0.1], [0.5])
    with pytest.raises(KpbenchError, match="missing column"):
        thresholds_table([thr], stats=["AP", "nope"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    with pytest.raises(KpbenchError, match=r"manifest\.json: not readable JSON"):
        run_table([tmp_path / "broken"])


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        ("manifest.json", {"environment": [1]}, "'environment' must be a JSON object, got list"),
        ("manifest.json", {"published": {"kp_AP": "65"}}, "'published.kp_AP' must be a number, got '65'"),
        ("manifest.json", {"deviations": "abc"}, "'deviations' must be a list of strings"),
        ("manifest.json", {"image_ids": 5, "num_images": None}, "'image_ids' must be a list"),
        ("metrics.json", {"keypoints": [1]}, "metrics.json: 'keypoints' must be a JSON object, got list"),
    ],
)
def test_edited_run_files_are_user_errors(tmp_path: Path, file: str, change: dict, message: str) -> None:
    run = write_run(tmp_path / "run", "COCO_V1", 800, {"AP": 0.6}, [], None)
    path = run / file
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    if change.get("num_images", 0) is None:
        data = json.loads(path.read_text())
        del data["num_images"]
        path.write_text(json.dumps(data))
    with pytest.raises(KpbenchError, match=re.escape(message)):
        run_table([run])


@pytest.mark.parametrize("size", ["", "big"])
def test_speed_csv_with_a_bad_size_is_a_user_error(tmp_path: Path, size: str) -> None:
    csv = write_device(tmp_path, H100, [speed_row(H100, 320, "fp32-bs1", 40.0), speed_row(H100, 640, "fp32-bs1", 20.0)])
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index("size")] = size
    csv.write_text("\n".join([*lines[:2], ",".join(cells)]) + "\n")
    with pytest.raises(KpbenchError, match=r"row 2: 'size' must be a positive number"):
        build_report("speed", [csv])  # named: an error (found in a folder, it is left out with a warning)


def test_thresholds_warns_about_runs_without_a_sweep(tmp_path: Path, run_cli: RunCli) -> None:
    write_thresholds(tmp_path / "run-a", [0.0, 0.5], [0.65, 0.60])
    (tmp_path / "run-b").mkdir()  # a run made with --no-analysis: no thresholds_person.csv
    with pytest.warns(UserWarning, match=r"run-b: no thresholds_person\.csv found .*left out"):
        table = thresholds_table([tmp_path / "run-a", tmp_path / "run-b"], stats=["AP"])
    assert list(table.columns) == ["threshold", "run-a:AP"]
    code, out, err = run_cli("report", str(tmp_path / "run-a"), str(tmp_path / "run-b"), "--kind", "thresholds")
    assert code == 0 and "run-a:AP" in out and "warning:" in err and "run-b: no thresholds_person.csv found" in err


# --------------------------------------------------------------------------------------------------------------
# damaged files: named, an error; found in a folder, a warning naming it, and the rest is reported (issue 12)


def test_damaged_speed_csvs_in_a_folder_are_warnings_and_named_ones_errors(tmp_path: Path, run_cli: RunCli) -> None:
    good = write_device(tmp_path / "a", H100, [speed_row(H100, 320, "fp32-bs1", 40.0)])
    torn = write_device(tmp_path / "b", A10G, [speed_row(A10G, 320, "fp32-bs1", 16.0), speed_row(A10G, 640, "fp32-bs1", 8.0)])
    text = torn.read_text()
    torn.write_text(text[: text.rindex(",ok,")])  # cut short while the last row was written
    empty, binary = tmp_path / "empty.csv", tmp_path / "binary.csv"
    empty.write_bytes(b"")
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    code, out, err = run_cli("report", tmp_path, "--format", "json")
    assert code == 0 and "Traceback" not in err
    assert [r["device"] for r in json.loads(out)["table"]] == [H100]  # the rest is reported
    assert sorted(err.splitlines()) == sorted([
        f"warning: {binary}: not a readable CSV (UnicodeDecodeError: 'utf-8' codec can't decode byte 0x89 in "
        "position 0: invalid start byte); left out",
        f"warning: {empty}: empty file, not a CSV; left out",
        f"warning: {torn}: row 2: no end of line (a half-written row?); left out",
    ])
    assert_one_line(run_cli("report", torn), f"error: {torn}: row 2: no end of line (a half-written row?)")
    assert_one_line(run_cli("report", empty), f"error: {empty}: empty file, not a CSV")
    # A row with fewer fields than the header is never a row either (it used to become a row of blanks).
    torn.write_text(text[: text.rindex(",ok,")] + "\n")
    assert_one_line(run_cli("report", torn), f"error: {torn}: row 2: ")
    assert "(a half-written row?)" in run_cli("report", torn)[2]
    assert good.is_file()


def test_a_broken_manifest_in_a_folder_is_a_warning_and_a_failed_run_shows_why(tmp_path: Path, run_cli: RunCli) -> None:
    kp = {"AP": 0.652, "AP50": 0.86, "AP75": 0.71, "AR": 0.71}
    write_run(tmp_path / "run-a", "COCO_V1", 800, kp, [], None)
    failed = write_run(tmp_path / "run-f", "COCO_V1", 800, None, [], None, cached=3)
    manifest = json.loads((failed / "manifest.json").read_text())
    reason = "/coco/val2017/000000000785.jpg: cannot decode image (empty file)"
    (failed / "manifest.json").write_text(json.dumps({**manifest, "status": "failed", "error": reason}))
    broken = tmp_path / "run-x" / "manifest.json"
    broken.parent.mkdir()
    broken.write_text('{"config": {')
    code, out, err = run_cli("report", tmp_path, "--kind", "run", "--format", "json")
    assert code == 0
    rows = json.loads(out)["table"]
    assert [(r["run"], r["status"]) for r in rows] == [
        ("run-a", "ok"), ("run-f", f"failed ({reason}; 3 of 5000 images cached)"),
    ]
    assert err == (f"warning: {broken}: not readable JSON (Expecting property name enclosed in double quotes: "
                   "line 1 column 13 (char 12)); left out\n")
    assert_one_line(run_cli("report", broken.parent, "--kind", "run"), f"error: {broken}: not readable JSON")
    (tmp_path / "run-a" / "manifest.json").unlink()
    (failed / "manifest.json").unlink()
    code, _, err = run_cli("report", tmp_path, "--kind", "run")
    assert code == 2 and err.splitlines() == [
        f"warning: {broken}: not readable JSON (Expecting property name enclosed in double quotes: line 1 column 13 "
        "(char 12)); left out",
        f"error: {tmp_path}: no readable run directory (1 left out, see the warnings)",
    ]


def test_a_half_written_threshold_table_in_a_folder_is_a_warning(tmp_path: Path, run_cli: RunCli) -> None:
    write_thresholds(tmp_path / "run-a", [0.0, 0.5], [0.65, 0.60])
    torn = write_thresholds(tmp_path / "run-b", [0.0, 0.5], [0.58, 0.50])
    torn.write_text(torn.read_text()[:-40])
    code, out, err = run_cli("report", tmp_path, "--kind", "thresholds", "--columns", "AP", "--format", "csv")
    assert code == 0 and out.splitlines() == ["threshold,run-a:AP", "0.0,0.65", "0.5,0.6"]
    assert err == f"warning: {torn}: row 2: no end of line (a half-written row?); left out\n"
    assert_one_line(run_cli("report", torn, "--kind", "thresholds"), f"error: {torn}: row 2: no end of line")


def assert_one_line(result: tuple[int, str, str], start: str) -> None:
    code, _, err = result
    assert code == 2 and err.startswith(start) and err.count("\n") == 1 and "Traceback" not in err, err


def test_thresholds_side_by_side_show_rates_in_percent_for_people(tmp_path: Path, run_cli: RunCli) -> None:
    """The markdown report showed AP in percent and precision, recall and F1 as fractions in the same row; now both
    in percent, and CSV keeps the fractions."""
    write_thresholds(tmp_path / "run-a", [0.0, 0.5], [0.65, 0.60])
    code, out, err = run_cli("report", str(tmp_path), "--kind", "thresholds", "--format", "markdown")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[2] == "| threshold | run-a:AP | run-a:AR | run-a:precision_50 | run-a:recall_50 | run-a:f1_50 | run-a:kept |"
    assert lines[4] == "| 0.000 | 65.0 | 75.0 | 50.0 | 50.0 | 32.5 | 1000 |"
    assert "AP, AR, precision, recall and F1 in percent (n/a: no ground truth in that range)." in lines
    code, out, _ = run_cli("report", str(tmp_path), "--kind", "thresholds", "--format", "csv")
    assert out.splitlines()[1] == "0.0,0.65,0.75,0.5,0.5,0.325,1000"
