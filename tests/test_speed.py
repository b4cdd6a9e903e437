"""`kpbench speed`: the timing loop, variants, rows, files and the command line.

Real Keypoint R-CNN runs use random weights, tiny sizes and few calls (CPU). Accuracy plumbing is checked with
an "oracle" model that answers each image with its own ground truth, so AP must come out exactly 1.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from kpdata import COCO_SAMPLE, requires_shared

from kpbench.core.config import SpeedSettings, settings_dict
from kpbench.core.environment import device_slug
from kpbench.core.errors import KpbenchError
from kpbench.engine.speed import (
    SPEED_COLUMNS,
    TIMING_DEFINITION,
    Variant,
    build_variants,
    format_shapes,
    make_batches,
    run_speed,
    select_person_images,
    summarize_ms,
    time_model,
)
from kpbench.models.base import Predictions
from kpbench.models.keypointrcnn import KeypointRCNNModel, ModelInfo

RunCli = Callable[..., tuple[int, str, str]]  # the run_cli fixture (conftest.py)
CPU = torch.device("cpu")


# --------------------------------------------------------------------------------------------------------------
# Helpers: a tiny COCO root, an oracle model, CSV reading


def _person(ann_id: int, image_id: int, box: list[float], num_keypoints: int = 17, iscrowd: int = 0) -> dict[str, Any]:
    x, y, w, h = box
    kps: list[float] = []
    for k in range(17):
        if num_keypoints:
            kps += [x + w * ((k % 4) + 0.5) / 4, y + h * ((k // 4) + 0.5) / 5, 2]
        else:
            kps += [0, 0, 0]
    return {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd,
        "num_keypoints": num_keypoints if not iscrowd else 0, "bbox": box, "area": w * h, "keypoints": kps,
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
    }  # fmt: skip


def make_coco_root(root: Path) -> Path:
    """5 PNG images of different sizes; only ids 10 and 30 have a non-crowd person with keypoints."""
    from torchvision.io import write_png

    from kpbench.core.schema import COCO_SKELETON, KEYPOINT_NAMES

    # (id, height, width): listed out of id order on purpose.
    images = [(30, 60, 80), (10, 80, 60), (20, 50, 90), (40, 70, 70), (5, 64, 64)]
    annotations = [
        _person(1, 30, [10.0, 5.0, 40.0, 50.0]),
        _person(2, 10, [5.0, 10.0, 30.0, 60.0]),
        _person(3, 10, [40.0, 40.0, 10.0, 20.0], num_keypoints=0),
        _person(4, 40, [0.0, 0.0, 60.0, 60.0], iscrowd=1),
        _person(5, 5, [5.0, 5.0, 20.0, 20.0], num_keypoints=0),
    ]
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    gen = torch.Generator().manual_seed(0)
    records = []
    for image_id, h, w in images:
        name = f"{image_id:012d}.png"
        write_png(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8), str(root / "val2017" / name))
        records.append({"id": image_id, "file_name": name, "height": h, "width": w})
    gt = {
        "images": records,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINT_NAMES),
                        "skeleton": [list(p) for p in COCO_SKELETON]}],
    }  # fmt: skip
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(gt))
    return root


class OracleModel(torch.nn.Module):
    """Keypoint R-CNN's interface (transform, backbone, output dicts) answering each image with its GT.

    Images are recognised by their (height, width). Persons with keypoints score 1.0, those without 0.5, so in
    keypoint evaluation they rank below every true match and AP stays 1; unknown images get no detection.
    """

    def __init__(self, gt: dict[str, Any]) -> None:
        super().__init__()
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        self.transform = GeneralizedRCNNTransform(800, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        self.backbone = torch.nn.Identity()
        self.by_hw = {(im["height"], im["width"]): im["id"] for im in gt["images"]}
        self.anns = [a for a in gt["annotations"] if not a["iscrowd"]]
        self.calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        batch, _ = self.transform(images)
        self.backbone(batch.tensors)
        outputs = []
        for image in images:
            image_id = self.by_hw.get(tuple(image.shape[-2:]))
            anns = [a for a in self.anns if a["image_id"] == image_id]
            boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
            outputs.append(
                {
                    "boxes": boxes,
                    "scores": torch.tensor([1.0 if a["num_keypoints"] else 0.5 for a in anns]),
                    "labels": torch.ones(len(anns), dtype=torch.int64),
                    "keypoints": torch.tensor([a["keypoints"] for a in anns]).reshape(-1, 17, 3),
                    "keypoints_scores": torch.zeros(len(anns), 17),
                }
            )
        return outputs


def use_oracle(monkeypatch: pytest.MonkeyPatch, gt: dict[str, Any]) -> OracleModel:
    model = OracleModel(gt)
    monkeypatch.setattr("kpbench.models.keypointrcnn.build_model", lambda weights, **kw: (model, ModelInfo("oracle", "test")))
    return model


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


TIMING_COLUMNS = ("cold_ms", "mean_ms", "std_ms", "median_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "fps")


def check_ok_row(row: dict[str, str]) -> None:
    """Every timing column of an ok CPU row is a consistent positive number; CUDA-only columns are empty."""
    assert row["status"] == "ok" and row["error"] == ""
    v = {c: float(row[c]) for c in TIMING_COLUMNS}
    assert all(math.isfinite(x) and x >= 0 for x in v.values())
    assert v["min_ms"] <= v["median_ms"] <= v["p90_ms"] <= v["p99_ms"] <= v["max_ms"]
    assert v["min_ms"] <= v["mean_ms"] <= v["max_ms"] and v["cold_ms"] > 0
    assert v["fps"] == pytest.approx(int(row["batch_size"]) * 1000 / v["mean_ms"])
    assert float(row["preprocess_ms"]) > 0 and float(row["dets_per_image"]) >= 0
    assert float(row["peak_rss_mib"]) > 50 and row["rss_scope"] in ("row", "process")
    assert row["gpu_mean_ms"] == row["gpu_median_ms"] == row["peak_mem_allocated_mib"] == ""
    assert int(row["max_size"]) == round(int(row["size"]) * 1333 / 800)


# --------------------------------------------------------------------------------------------------------------
# Units


def test_summarize_ms_exact() -> None:
    s = summarize_ms([4.0, 1.0, 10.0, 2.0, 3.0])
    assert s["mean_ms"] == 4.0 and s["median_ms"] == 3.0 and s["min_ms"] == 1.0 and s["max_ms"] == 10.0
    assert s["std_ms"] == pytest.approx(math.sqrt(12.5))  # sample std: sum of squares 50 over n-1 = 4
    assert s["p90_ms"] == pytest.approx(7.6) and s["p99_ms"] == pytest.approx(9.76)  # linear interpolation
    assert summarize_ms([5.0])["std_ms"] == 0.0
    # IQR of 1, 2, 3, 4, 10 (linear interpolation): p25 = 2, p75 = 4; relative to the median 3.
    assert (s["n"], s["iqr_ms"], s["iqr_over_median"], s["unstable"]) == (5, 2.0, 2.0 / 3.0, True)
    steady = summarize_ms([10.0, 10.1, 10.2, 10.3])
    assert steady["iqr_over_median"] == pytest.approx(0.15 / 10.15) and steady["unstable"] is False


def test_variants_grid_and_labels() -> None:
    vs = build_variants(["fp32", "fp16"], [1, 4], channels_last=True, runtimes=["eager", "compile"])
    labels = [v.label for v in vs]
    assert labels[:4] == ["fp32-bs1", "fp32-bs4", "fp16-bs1", "fp16-bs4"]
    assert labels[4:8] == ["fp32-bs1-channels_last", "fp32-bs4-channels_last", "fp16-bs1-channels_last",
                           "fp16-bs4-channels_last"]  # fmt: skip
    assert labels[8:] == ["fp32-bs1-compile", "fp32-bs4-compile", "fp16-bs1-compile", "fp16-bs4-compile"]
    assert len(set(labels)) == 12
    assert [v.label for v in build_variants(["fp32"], [1])] == ["fp32-bs1"]
    # Runtimes after eager and its options; without eager, only the runtime's grid (options apply to eager only).
    assert [v.label for v in build_variants(["fp32"], [1], runtimes=["onnxruntime:cpu", "eager"])] == [
        "fp32-bs1", "fp32-bs1-onnxruntime:cpu"]
    assert [v.label for v in build_variants(["fp32"], [1], runtimes=["tensorrt"], channels_last=True)] == [
        "fp32-bs1-channels_last", "fp32-bs1-tensorrt"]


def test_batches_cycle_through_every_image() -> None:
    assert make_batches(["a", "b", "c"], 2) == [["a", "b"], ["c", "a"], ["b", "c"]]
    assert make_batches(["a", "b", "c", "d"], 2) == [["a", "b"], ["c", "d"]]
    assert format_shapes([(1, 3, 64, 96), (1, 3, 96, 64), (1, 3, 64, 96)]) == "1x3x64x96;1x3x96x64"


class SlowWarmupModel:
    """Sleeps 60 ms on its first `slow_calls` calls; call k returns k detections per image."""

    def __init__(self, slow_calls: int) -> None:
        self.slow_calls = slow_calls
        self.calls = 0

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        if self.calls <= self.slow_calls:
            time.sleep(0.06)
        n = self.calls
        return [Predictions(torch.zeros(n, 4), torch.zeros(n), torch.zeros(n, 17, 3), torch.zeros(n, 17)) for _ in images]


def test_warmup_and_cold_calls_are_not_in_the_stats() -> None:
    model = SlowWarmupModel(slow_calls=1 + 3)  # the cold call and the 3 warm-up calls are slow
    batches = [[torch.zeros(3, 4, 4), torch.zeros(3, 4, 4)]]
    result = time_model(model, batches, CPU, warmup=3, iters=4)
    assert model.calls == result.calls == 1 + 3 + 4
    assert len(result.times_ms) == 4 and result.gpu_times_ms is None
    assert result.cold_ms >= 60
    assert max(result.times_ms) < 30  # any warm-up call in the stats would be >= 60 ms
    # Detections are counted over the timed calls 5..8 only, 2 images each.
    assert result.images_timed == 8 and result.detections_timed == 2 * (5 + 6 + 7 + 8)


def test_select_person_images_is_deterministic(tmp_path: Path) -> None:
    gt = json.loads((make_coco_root(tmp_path / "coco") / "annotations" / "person_keypoints_val2017.json").read_text())
    assert [im["id"] for im in select_person_images(gt, 5)] == [10, 30]  # no crowd-only, kp-less or empty image
    assert [im["id"] for im in select_person_images(gt, 1)] == [10]


# --------------------------------------------------------------------------------------------------------------
# Real Keypoint R-CNN (random weights)


def test_real_model_rows_shapes_variants_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.models.keypointrcnn as models

    backbone_calls: list[tuple[int, ...]] = []
    real_build = models.build_model

    def counting_build(*args: Any, **kwargs: Any) -> Any:
        model, info = real_build(*args, **kwargs)
        model.backbone.register_forward_pre_hook(lambda _m, a: backbone_calls.append(tuple(a[0].shape)))
        return model, info

    class CompilerMissing(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> None:
            raise RuntimeError("inductor: no working C++ compiler found")

    monkeypatch.setattr(models, "build_model", counting_build)
    monkeypatch.setattr(torch, "compile", lambda module, **kw: CompilerMissing())
    settings = SpeedSettings(
        synthetic=True, num_images=1, weights="none", sizes=[64, 96], warmup=0, iters=2, box_score_thresh=0.9,
        channels_last=True, cudnn_benchmark=True, compile=True, out=str(tmp_path / "speed"),
    )  # fmt: skip
    result = run_speed(settings, progress=False)

    # Each working row made exactly 1 cold + 2 timed backbone calls, then 2 in the stage pass (min(iters, 10)) and
    # 1 in the FLOP pass (each image once); the failing compiled backbone never reached the real one.
    assert len(backbone_calls) == 2 * 2 * (1 + 2 + 2 + 1)
    header, rows = read_csv(result.csv_path)
    assert header == list(SPEED_COLUMNS)
    assert [(r["variant"], r["size"], r["status"]) for r in rows] == [
        ("fp32-bs1", "64", "ok"), ("fp32-bs1", "96", "ok"),
        ("fp32-bs1-channels_last", "64", "ok"), ("fp32-bs1-channels_last", "96", "ok"),
        ("fp32-bs1-cudnn_benchmark", "64", "skipped"), ("fp32-bs1-cudnn_benchmark", "96", "skipped"),
        ("fp32-bs1-compile", "64", "failed"), ("fp32-bs1-compile", "96", "failed"),
    ]  # fmt: skip
    for r in rows:
        assert r["synthetic"] == "True" and r["device"] == "cpu" and int(r["torch_threads"]) >= 1
        assert r["warmup"] == "0" and r["iters"] == "2" and r["box_score_thresh"] == "0.9"
        if r["status"] == "ok":
            check_ok_row(r)
    # The transform really resized: a 480x640 image at short side 64 is 64x85 (padded 64x96), at 96 it is 96x128.
    assert [r["padded_shapes"] for r in rows[:4]] == ["1x3x64x96", "1x3x96x128"] * 2
    assert sorted(set(backbone_calls)) == [(1, 3, 64, 96), (1, 3, 96, 128)]
    assert rows[4]["error"] == "cudnn.benchmark applies to CUDA devices only" and rows[4]["mean_ms"] == ""
    assert rows[6]["error"] == "RuntimeError: inductor: no working C++ compiler found" and rows[6]["fps"] == ""

    manifest = json.loads(result.manifest_path.read_text())
    # --compile is the compile runtime: the manifest's settings say so.
    assert manifest["kind"] == "kpbench-speed"
    assert manifest["settings"] == settings_dict(dataclasses.replace(settings, runtime=["eager", "compile"]))
    assert manifest["images"]["source"] == "synthetic" and manifest["model"]["source"] == "random"
    env = manifest["environment"]
    for key in ("device_name", "gpus", "gpu_count", "cuda", "cudnn", "torch", "torchvision", "python", "kpbench",
                "cpu", "torch_threads", "os"):  # fmt: skip
        assert key in env
    assert re.fullmatch(re.escape(device_slug(env["device_name"])) + r"-\d{8}T\d{6}Z\.csv", result.csv_path.name)
    assert result.csv_path.with_suffix(".json") == result.manifest_path
    md = result.markdown_path.read_text()
    assert TIMING_DEFINITION in md and "synthetic" in md and "| fp32-bs1-compile | 96 |" in md


@requires_shared
def test_real_coco_images_and_accuracy(tmp_path: Path) -> None:
    gt = json.loads((COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json").read_text())
    expected = sorted(
        {a["image_id"] for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0}
    )[:2]
    settings = SpeedSettings(
        coco_root=str(COCO_SAMPLE), num_images=2, weights="none", sizes=[64], warmup=0, iters=2,
        box_score_thresh=0.3, accuracy=1, out=str(tmp_path),
    )  # fmt: skip
    result = run_speed(settings, progress=False)
    assert result.manifest["images"]["image_ids"] == expected == [139, 785]
    assert result.manifest["images"]["accuracy_image_ids"] == [139]
    (row,) = read_csv(result.csv_path)[1]
    check_ok_row(row)
    assert row["synthetic"] == "False" and row["num_images"] == "2" and row["accuracy_images"] == "1"
    assert row["padded_shapes"] == "1x3x64x96"  # 426x640 and 425x640 both give 64x96 at short side 64
    assert 0.0 <= float(row["kp_AP"]) <= 1.0 and 0.0 <= float(row["box_AP"]) <= 1.0


# --------------------------------------------------------------------------------------------------------------
# Accuracy and the command line, with the oracle model


def test_accuracy_columns_are_real_ap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_coco_root(tmp_path / "coco")
    gt = json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())
    oracle = use_oracle(monkeypatch, gt)
    settings = SpeedSettings(
        coco_root=str(root), num_images=2, weights="none", sizes=[64, 128], warmup=2, iters=3, accuracy=2,
        batch_size=[1, 2], out=str(tmp_path / "speed"),
    )  # fmt: skip
    result = run_speed(settings, progress=False)
    # Per row: 1 cold + 2 warm-up + 3 timed calls, the stage pass (3 calls), the FLOP pass (each of the 2 images
    # once, in batches), then the accuracy pass over 2 images in batches.
    assert oracle.calls == 2 * (6 + 3 + 2 + 2) + 2 * (6 + 3 + 1 + 1)
    _, rows = read_csv(result.csv_path)
    assert [(r["variant"], r["size"]) for r in rows] == [
        ("fp32-bs1", "64"), ("fp32-bs1", "128"), ("fp32-bs2", "64"), ("fp32-bs2", "128"),
    ]
    for r in rows:
        check_ok_row(r)
        assert float(r["kp_AP"]) == 1.0 and float(r["box_AP"]) == 1.0 and r["accuracy_images"] == "2"
    # Image 10 (80x60) then 30 (60x80); at 64 they become 85x64 and 64x85, padded to multiples of 32.
    assert rows[0]["padded_shapes"] == "1x3x96x64;1x3x64x96"
    assert rows[1]["padded_shapes"] == "1x3x192x128;1x3x128x192"
    assert rows[2]["padded_shapes"] == "2x3x96x96"  # a batch pads both images to the larger size
    # dets per image: image 10 has 2 persons, image 30 has 1 (the crowd region is not a detection).
    # Calls alternate 10, 30, 10, ...: the timed calls (4th to 6th) see 30, 10, 30.
    assert float(rows[0]["dets_per_image"]) == pytest.approx((1 + 2 + 1) / 3)
    assert float(rows[2]["dets_per_image"]) == pytest.approx(1.5)


def test_cli_speed_with_config_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    root = make_coco_root(tmp_path / "coco")
    use_oracle(monkeypatch, json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text()))
    config = tmp_path / "speed.toml"
    config.write_text(f'[speed]\ncoco_root = "{root}"\nsizes = [64, 96]\niters = 5\nwarmup = 3\nnum_images = 2\n')
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "speed", "--config", str(config), "--sizes", "96,64", "--warmup", "0",
        "--batch-size", "1,2", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0, stderr
    (csv_path,) = out.glob("*.csv")
    manifest = json.loads(csv_path.with_suffix(".json").read_text())
    assert manifest["config_path"] == str(config)
    assert manifest["config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    s = manifest["settings"]
    assert (s["sizes"], s["warmup"], s["iters"], s["batch_size"]) == ([96, 64], 0, 5, [1, 2])  # CLI wins
    _, rows = read_csv(csv_path)
    assert [(r["variant"], r["size"]) for r in rows] == [
        ("fp32-bs1", "96"), ("fp32-bs1", "64"), ("fp32-bs2", "96"), ("fp32-bs2", "64"),
    ]
    assert "fp32-bs2" in stdout and "median_ms" in stdout and f"wrote {csv_path}" in stderr
    assert manifest["complete"] is True and manifest["rows"] == manifest["rows_planned"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "64,abc"], "--sizes: cannot read '64,abc'"),
        (["--dtype", "fp8"], "error: --dtype: must be one of fp32, fp16, bf16, got 'fp8'\n"),
        (["--dtype", "fp32,fp64"], "error: --dtype: must be one of fp32, fp16, bf16, got 'fp64'\n"),
        (["--batch-size", "1,0"], "error: --batch-size: must be >= 1, got 0\n"),
        (["--weights", "/nonexistent/w.pth"], "error: /nonexistent/w.pth: checkpoint file not found"),
        (["--synthetic", "--accuracy", "2"], "--accuracy: needs real COCO images"),
        (["--num-images", "3"], "--num-images 3: "),
        (["--accuracy", "4", "--num-images", "1"], "--accuracy 4: "),
        (["--coco-root", "/nonexistent/coco"], "/nonexistent/coco: COCO root not found"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_cli_speed_user_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, args: list[str],
    message: str,
) -> None:
    root = make_coco_root(tmp_path / "coco")
    use_oracle(monkeypatch, {"images": [], "annotations": []})
    code, _, stderr = run_cli("speed", "--coco-root", str(root), *args, "--out", str(tmp_path))
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr and "Traceback" not in stderr
    assert not list(tmp_path.glob("*.csv"))


def test_ctrl_c_keeps_the_finished_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> None:
    """Ctrl-C in the third row: the two finished rows are written (CSV, manifest with "complete": false, Markdown),
    one line says so, and the exit code is 130."""
    import kpbench.engine.speed as speed

    root = make_coco_root(tmp_path / "coco")
    use_oracle(monkeypatch, json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text()))
    real_measure = speed.ModelTable.measure
    calls = 0

    def interrupt_third(*args: Any, **kwargs: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(speed.ModelTable, "measure", interrupt_third)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("speed", "--coco-root", root, "--num-images", "1", "--sizes", "64,96",
                                   "--batch-size", "1,2", "--warmup", "0", "--iters", "1", "--out", out,
                                   "--no-progress")  # fmt: skip
    (csv_path,) = out.glob("*.csv")
    assert code == 130
    assert stderr == f"interrupted: 2 of 4 rows finished (written to {csv_path})\n"
    _, rows = read_csv(csv_path)
    assert [(r["variant"], r["size"], r["status"]) for r in rows] == [("fp32-bs1", "64", "ok"), ("fp32-bs1", "96", "ok")]
    manifest = json.loads(csv_path.with_suffix(".json").read_text())
    assert (manifest["complete"], manifest["rows"], manifest["rows_planned"]) == (False, 2, 4)
    assert csv_path.with_suffix(".md").is_file() and "fp32-bs1" in stdout


@pytest.mark.parametrize("target", ["file", "proc"])
def test_unusable_out_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, target: str) -> None:
    root = make_coco_root(tmp_path / "coco")
    oracle = use_oracle(monkeypatch, {"images": [], "annotations": []})
    out = tmp_path / "a-file" if target == "file" else Path("/proc/kpbench-x")
    if target == "file":
        out.write_text("")
    code, _, stderr = run_cli("speed", "--coco-root", root, "--num-images", "1", "--out", out, "--no-progress")
    reason = "exists and is not a directory" if target == "file" else "cannot create the folder"
    assert code == 2 and stderr.startswith(f"error: --out {out}: {reason}") and stderr.count("\n") == 1, stderr
    assert oracle.calls == 0


def test_bad_weights_fail_before_the_images_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    import kpbench.engine.speed as speed

    loads: list[Any] = []
    monkeypatch.setattr(speed, "load_images", lambda *a, **kw: loads.append(a))
    root = make_coco_root(tmp_path / "coco")
    code, _, stderr = run_cli("speed", "--coco-root", root, "--weights", tmp_path, "--out", tmp_path / "out")
    assert code == 2 and stderr == (f"error: {tmp_path}: is a directory, expected a checkpoint file (--weights takes "
                                    "COCO_V1, COCO_LEGACY, none or a path)\n")  # fmt: skip
    assert loads == [] and not (tmp_path / "out").exists()


def test_missing_accuracy_image_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_coco_root(tmp_path / "coco")
    (root / "val2017" / "000000000030.png").unlink()
    use_oracle(monkeypatch, {"images": [], "annotations": []})
    settings = SpeedSettings(coco_root=str(root), num_images=1, accuracy=2, out=str(tmp_path / "speed"))
    with pytest.raises(KpbenchError, match=r"--accuracy 2: .*000000000030\.png: image file not found \(1 missing\)"):
        run_speed(settings, progress=False)


def test_unwritable_out_fails_before_timing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_coco_root(tmp_path / "coco")
    oracle = use_oracle(monkeypatch, {"images": [], "annotations": []})
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "speed"
    with pytest.raises(KpbenchError, match=rf"^--out {re.escape(str(out))}: cannot create the folder \(Not a directory\)$"):
        run_speed(SpeedSettings(coco_root=str(root), num_images=1, out=str(out)), progress=False)
    assert oracle.calls == 0


def test_failed_variant_does_not_stop_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_coco_root(tmp_path / "coco")
    gt = json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())
    use_oracle(monkeypatch, gt)
    real_autocast = torch.autocast

    def no_fp16(device_type: str, dtype: torch.dtype, **kw: Any) -> Any:
        if dtype == torch.float16:
            raise RuntimeError("fp16 autocast is not supported on this device")
        return real_autocast(device_type, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "autocast", no_fp16)
    settings = SpeedSettings(
        coco_root=str(root), num_images=1, weights="none", sizes=[64], warmup=0, iters=1, dtype=["fp16", "bf16"],
        out=str(tmp_path / "speed"),
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"^--dtype fp16 on a CPU: float16 autocast is very slow there"):
        rows = run_speed(settings, progress=False).rows
    assert [(r["variant"], r["status"]) for r in rows] == [("fp16-bs1", "failed"), ("bf16-bs1", "ok")]
    assert rows[0]["error"] == "RuntimeError: fp16 autocast is not supported on this device"
    assert rows[0]["mean_ms"] is None and rows[1]["mean_ms"] > 0


def test_variant_label_and_missing_annotations(tmp_path: Path) -> None:
    assert Variant("bf16", 4, channels_last=True, cudnn_benchmark=True).label == "bf16-bs4-channels_last-cudnn_benchmark"
    (tmp_path / "coco").mkdir()
    ann = tmp_path / "coco" / "annotations" / "person_keypoints_val2017.json"
    with pytest.raises(KpbenchError, match=rf"^{re.escape(str(ann))}: annotation file not found \(`kpbench data download"):
        run_speed(SpeedSettings(coco_root=str(tmp_path / "coco"), out=str(tmp_path / "speed")), progress=False)
    assert not (tmp_path / "speed").exists()


# --------------------------------------------------------------------------------------------------------------
# The CUDA paths, with torch.cuda replaced by recorders (the development machine has no GPU)


def test_cuda_timing_order_events_and_memory_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """synchronize -> clock -> event -> model -> event -> synchronize -> clock, events on the stream of the
    model's own GPU (cuda:1 here, which is not the current device), memory statistics of that GPU."""
    import types

    import kpbench.engine.speed as speed
    import kpbench.engine.timing as timing

    log: list[Any] = []
    device = torch.device("cuda", 1)

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            assert enable_timing

        def record(self, stream: Any = None) -> None:
            log.append(("record", stream))

        def elapsed_time(self, end: Event) -> float:
            return 2.5

    def model(images: list[torch.Tensor]) -> list[Predictions]:
        log.append("model")
        return [Predictions(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, 17, 3), torch.zeros(3, 17)) for _ in images]

    clock = iter(range(1000))
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: log.append("clock") or next(clock)))
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda dev=None: f"stream of {dev}")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: log.append(("sync", dev)))
    result = time_model(model, [[torch.zeros(3, 4, 4)]], device, warmup=1, iters=2)

    cold = [("sync", device), "clock", "model", ("sync", device), "clock"]
    warmup = ["model", ("sync", device)]
    timed = [("sync", device), "clock", ("record", "stream of cuda:1"), "model", ("record", "stream of cuda:1"),
             ("sync", device), "clock"]  # fmt: skip
    assert log == cold + warmup + timed + timed
    assert result.gpu_times_ms == [2.5, 2.5] and result.times_ms == [1000.0, 1000.0]
    assert result.detections_timed == 6 and result.images_timed == 2

    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda dev=None: calls.append(("reset", dev)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda dev=None: calls.append(("allocated", dev)) or 2**21)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda dev=None: calls.append(("reserved", dev)) or 2**22)
    assert speed.peak_memory(device, speed.reset_peak_memory(device)) == {
        "peak_mem_allocated_mib": 2.0, "peak_mem_reserved_mib": 4.0,
    }  # fmt: skip
    assert calls == [("reset", device), ("allocated", device), ("reserved", device)]


def test_apply_variant_sets_and_restores_the_model() -> None:
    """channels_last converts the weights and the backbone's input; compile swaps the backbone; all undone after."""
    from kpbench.engine.speed import VariantSkipped, apply_variant

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.nn.Conv2d(3, 4, 3)

    module = Tiny()
    model = KeypointRCNNModel.from_module(module, ModelInfo("tiny", "test"))
    seen: list[bool] = []
    module.backbone.register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.zeros(1, 3, 8, 8)
    model_module = model
    model = module  # what the variants change: the wrapped torchvision-like module
    channels_last = torch.channels_last
    with apply_variant(model_module, Variant(channels_last=True), CPU):
        assert model.backbone.weight.is_contiguous(memory_format=channels_last)
        model.backbone(x)
    model.backbone(x)
    assert seen == [True, False]
    assert model.backbone.weight.is_contiguous() and not model.backbone.weight.is_contiguous(memory_format=channels_last)

    # compile is a runtime now (kpbench.runtimes.compile): loading it swaps the backbone, closing it restores it.
    from kpbench.runtimes import BuildCache, ExportRequest, get_runtime

    backbone = model.backbone
    runtime = get_runtime("compile")
    on_runtime = runtime.load(model_module, runtime.build(model_module, ExportRequest(64, 107), BuildCache()), CPU)
    assert model.backbone is not backbone and on_runtime.runtime == "compile" and on_runtime.speed_variant("x") is None
    runtime.close()
    assert model.backbone is backbone

    before = torch.backends.cudnn.benchmark
    with pytest.raises(VariantSkipped, match="CUDA devices only"), apply_variant(model_module, Variant(cudnn_benchmark=True), CPU):
        pass
    assert torch.backends.cudnn.benchmark == before

    class NoVariants:  # a PoseModel without the speed_variant hook
        pass

    with pytest.raises(VariantSkipped, match=r"^NoVariants has no channels_last variant$"), apply_variant(
        NoVariants(), Variant(channels_last=True), CPU
    ):
        pass

# --------------------------------------------------------------------------------------------------------------
# issue 12: where it writes is checked before timing; a table with no successful row fails; progress per call


def test_full_disk_at_out_fails_before_timing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.access says a full disk is writable: a small real write finds it, before the table is timed (and lost)."""
    import kpbench.core.io

    root = make_coco_root(tmp_path / "coco")
    oracle = use_oracle(monkeypatch, {"images": [], "annotations": []})

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kpbench.core.io.tempfile, "mkstemp", full)
    out = tmp_path / "speed"
    with pytest.raises(KpbenchError) as info:
        run_speed(SpeedSettings(coco_root=str(root), num_images=1, sizes=[64], warmup=0, iters=1, out=str(out)),
                  progress=False)
    assert str(info.value) == f"--out {out}: cannot write into the folder (No space left on device)"
    assert oracle.calls == 0


def test_no_successful_row_is_an_error_after_writing_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    root = make_coco_root(tmp_path / "coco")
    use_oracle(monkeypatch, json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text()))
    real_autocast = torch.autocast

    def no_fp16(device_type: str, dtype: torch.dtype, **kw: Any) -> Any:
        if dtype == torch.float16:
            raise RuntimeError("fp16 autocast is not supported on this device")
        return real_autocast(device_type, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "autocast", no_fp16)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("speed", "--coco-root", root, "--num-images", "1", "--sizes", "64,96", "--dtype",
                                   "fp16", "--warmup", "0", "--iters", "1", "--out", out, "--no-progress")
    (csv_path,) = out.glob("*.csv")
    assert code == 2 and stdout == ""
    assert stderr.splitlines() == [
        "warning: --dtype fp16 on a CPU: float16 autocast is very slow there (hundreds of times slower than fp32); "
        "use fp32, or bf16 on a CPU that supports it",
        "warning: fp16-bs1 size 64: failed: RuntimeError: fp16 autocast is not supported on this device",
        "warning: fp16-bs1 size 96: failed: RuntimeError: fp16 autocast is not supported on this device",
        "error: no row succeeded: all 2 failed or were skipped (first: fp16-bs1 size 64: RuntimeError: fp16 autocast "
        f"is not supported on this device); the rows were written to {csv_path}",
    ]
    assert [r["status"] for r in read_csv(csv_path)[1]] == ["failed", "failed"]


def test_progress_bar_moves_per_model_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar counts calls (cold + warm-up + timed) of every row, so that a long row shows progress too."""
    import tqdm as tqdm_module

    root = make_coco_root(tmp_path / "coco")
    oracle = use_oracle(monkeypatch, json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text()))
    bars: list[dict[str, Any]] = []

    class Bar:
        def __init__(self, *args: Any, total: int = 0, **kwargs: Any) -> None:
            self.n, self.seen = 0, []
            bars.append({"total": total, "calls_when_updated": self.seen})

        def update(self, n: int = 1) -> None:
            self.n += n
            self.seen.append((oracle.calls, self.n))

        def set_postfix_str(self, text: str) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(tqdm_module, "tqdm", Bar)
    settings = SpeedSettings(coco_root=str(root), num_images=1, sizes=[64, 96], warmup=1, iters=2,
                             out=str(tmp_path / "speed"))
    run_speed(settings, progress=True)
    (bar,) = bars
    # Per row: 1 cold + 1 warm-up + 2 timed calls, 2 in the stage pass and 1 in the FLOP pass.
    assert bar["total"] == 2 * (1 + 1 + 2 + 2 + 1)
    # One step per call, as it is made; at the end of each row, a step of 0 (of what a failed row did not make).
    steps = [(c, c) for c in range(1, 8)]
    assert bar["calls_when_updated"] == [*steps, (7, 7), *((c + 7, c + 7) for c in range(1, 8)), (14, 14)]
