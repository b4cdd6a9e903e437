"""The sweep's merged table (`kpbench report SWEEP_DIR`) puts a run's AP beside a speed row only when that one run
ran what the row timed: the same weights file (by sha256, not by its name), and every setting that changes AP."""

from __future__ import annotations

from typing import Any

import pytest

from kpbench.core.config import RunSettings, settings_dict
from kpbench.engine.speed_table import SPEED_COLUMNS, default_max_size
from kpbench.models.base import ModelInfo
from kpbench.report.sweeps import merged_table, run_settings

pd = pytest.importorskip("pandas")

SHA_A, SHA_B = "a" * 64, "b" * 64


def _run(cell: str, kp_ap: float, *, weights: str = "runs/a/best.pt", sha: str | None = SHA_A,
         num_images: int = 5000, file_images: int = 5000, **config: Any) -> dict[str, Any]:
    """A run cell as the report reads it: its `run_row` and the settings of its manifest (`run_settings`)."""
    settings = settings_dict(RunSettings(model="keypointrcnn", weights=weights, **config))
    info = ModelInfo(weights=weights, source="checkpoint", checkpoint_path=f"/abs/{weights}", checkpoint_sha256=sha,
                     name="keypointrcnn_resnet50_fpn")
    manifest = {
        "config": settings, "model": info.to_json(), "split": settings["split"], "num_images": num_images,
        "annotation_file": {"path": "person_keypoints_val2017.json", "images": file_images},
        "protocol": {"split": settings["split"], "limit": settings["limit"], "num_images": num_images,
                     "annotation_file_images": file_images},
    }  # fmt: skip
    return {
        "run": cell, "model": "keypointrcnn_resnet50_fpn", "weights": weights, "device_name": "NVIDIA H100",
        "size": settings["min_size"], "max_size": settings["max_size"], "dtype": settings["dtype"],
        "batch_size": settings["batch_size"], "box_score_thresh": settings["box_score_thresh"],
        "kp_AP": kp_ap, "box_AP": kp_ap / 2, "status": "ok", "timed": run_settings(manifest),
    }  # fmt: skip


def _speed(*rows: dict[str, Any]) -> pd.DataFrame:
    """Speed rows as `read_speed_files` gives them (every CSV column, and the cell), of Keypoint R-CNN at 800 px."""
    records = []
    for changes in rows:
        row: dict[str, Any] = dict.fromkeys(SPEED_COLUMNS)
        size = changes.get("size", 800)
        row.update(cell="speed-h100", device_name="NVIDIA H100", model="keypointrcnn_resnet50_fpn",
                   weights="runs/a/best.pt", weights_sha256=SHA_A, size=size, max_size=default_max_size(size),
                   variant="fp32-bs1", dtype="fp32", batch_size=1, channels_last=False, cudnn_benchmark=False,
                   fast_postprocess=False, runtime="eager", box_score_thresh=0.05, fps=20.0, ms_per_image=50.0,
                   median_ms=49.0, p90_ms=52.0, accuracy_images=0, status="ok")
        row.update(changes)
        records.append(row)
    return pd.DataFrame(records)


def _ap(table: pd.DataFrame) -> dict[str, tuple[Any, Any, Any]]:
    """{variant: (kp_AP, ap_from, ap_note)} of the speed rows."""
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return {r["variant"]: (r["kp_AP"], r["ap_from"], r["ap_note"]) for r in rows if r["kind"] == "speed"}


def _own_rows(table: pd.DataFrame) -> list[tuple[str, float]]:
    """(cell, kp_AP) of the run cells that kept their own row."""
    return [(r["cell"], r["kp_AP"]) for r in table.to_dict("records") if r["kind"] == "run"]


def test_two_checkpoints_named_best_pt_in_two_folders_are_two_weights() -> None:
    runs = [_run("run-a", 0.61), _run("run-b", 0.42, weights="runs/b/best.pt", sha=SHA_B)]
    speed = _speed({"variant": "fp32-bs1"},
                   {"variant": "fp32-bs1-b", "weights": "runs/b/best.pt", "weights_sha256": SHA_B})
    table = merged_table(speed, runs)
    assert _ap(table) == {"fp32-bs1": (0.61, "run-a", None), "fp32-bs1-b": (0.42, "run-b", None)}
    assert _own_rows(table) == []
    # Without a sha256 on either side, the weights as given (folder included) tell them apart.
    runs = [_run("run-a", 0.61, sha=None), _run("run-b", 0.42, weights="runs/b/best.pt", sha=None)]
    table = merged_table(_speed({"weights": "runs/b/best.pt", "weights_sha256": None}), runs)
    assert _ap(table) == {"fp32-bs1": (0.42, "run-b", None)} and _own_rows(table) == [("run-a", 0.61)]


def test_a_run_over_a_subset_of_the_images_is_not_the_models_ap() -> None:
    full, limited = _run("run-full", 0.65), _run("run-limit", 0.9, limit=10, num_images=10)
    table = merged_table(_speed({}), [limited, full])
    assert _ap(table) == {"fp32-bs1": (0.65, "run-full", None)}
    assert _own_rows(table) == [("run-limit", 0.9)]  # the subset run keeps its own row
    assert _ap(merged_table(_speed({}), [limited])) == {
        "fp32-bs1": (None, None, "no AP: run-limit: image subset: 10 of 5000 images (--limit 10)")}
    persons = _run("run-persons", 0.7, images="with-persons", num_images=2693)
    assert _ap(merged_table(_speed({}), [persons]))["fp32-bs1"][2] == (
        "no AP: run-persons: image subset: 2693 of 5000 images (--images with-persons)")
    ids = _run("run-ids", 0.7, image_ids=[139, 785], num_images=2)
    assert _ap(merged_table(_speed({}), [ids]))["fp32-bs1"][2] == (
        "no AP: run-ids: image subset: 2 of 5000 images (--image-ids)")


def test_top_down_runs_on_gt_or_detector_boxes_are_not_the_whole_image_model_timed() -> None:
    gt = _run("run-gt", 0.72, person_boxes="gt")
    detected = _run("run-det", 0.66, person_boxes="dets.json", flip_test=True)
    whole = _run("run-whole", 0.65)
    table = merged_table(_speed({}), [gt, detected, whole])
    assert _ap(table) == {"fp32-bs1": (0.65, "run-whole", None)}
    assert _own_rows(table) == [("run-gt", 0.72), ("run-det", 0.66)]
    assert _ap(merged_table(_speed({}), [gt, detected])) == {"fp32-bs1": (None, None, (
        "no AP: run-gt: top-down on person boxes gt (timed: the whole image); "
        "run-det: top-down on person boxes dets.json, flip test (timed: the whole image)"))}
    nms = _run("run-nms", 0.66, nms="oks", rescore="keypoint-mean")
    assert _ap(merged_table(_speed({}), [nms]))["fp32-bs1"][2] == (
        "no AP: run-nms: rescore keypoint-mean (not timed), nms oks (not timed)")


def test_two_runs_that_both_qualify_fill_nothing_and_say_so() -> None:
    table = merged_table(_speed({}), [_run("run-first", 0.65), _run("run-again", 0.64)])
    assert _ap(table) == {"fp32-bs1": (None, None, "no AP: 2 runs ran what this row timed (run-first, run-again), "
                                                   "and nothing tells which one's AP belongs here")}
    assert _own_rows(table) == [("run-first", 0.65), ("run-again", 0.64)]


def test_every_setting_the_speed_row_timed_must_be_the_runs() -> None:
    run = _run("run-640", 0.6, min_size=640)  # max_size left at 1333: the speed table times 640 with 1066
    speed = _speed({"size": 640}, {"size": 640, "variant": "fp32-bs4", "batch_size": 4},
                   {"size": 640, "variant": "fp32-bs1-channels_last", "channels_last": True},
                   {"size": 640, "variant": "fp32-bs1-onnxruntime:cpu", "runtime": "onnxruntime:cpu"},
                   {"size": 640, "box_score_thresh": 0.9, "variant": "fp32-bs1-t"})
    assert {v: note for v, (_, _, note) in _ap(merged_table(speed, [run])).items()} == {
        "fp32-bs1": "no AP: run-640: max_size 1333 (timed: 1066)",
        "fp32-bs4": "no AP: run-640: max_size 1333 (timed: 1066), batch_size 1 (timed: 4)",
        "fp32-bs1-channels_last": "no AP: run-640: max_size 1333 (timed: 1066), the speed row is the channels_last variant",
        "fp32-bs1-onnxruntime:cpu": "no AP: run-640: max_size 1333 (timed: 1066), runtime eager (timed: onnxruntime:cpu)",
        "fp32-bs1-t": "no AP: run-640: max_size 1333 (timed: 1066), box_score_thresh 0.05 (timed: 0.9)",
    }
    matching = merged_table(speed, [_run("run-640", 0.6, min_size=640, max_size=1066)])
    assert _ap(matching)["fp32-bs1"] == (0.6, "run-640", None) and _ap(matching)["fp32-bs4"][:2] == (None, None)
    # A row that measured AP itself (`kpbench speed --accuracy`) keeps its own; a failed run is never taken.
    assert _ap(merged_table(_speed({"kp_AP": 0.5, "accuracy_images": 100}), [_run("run-a", 0.6)])) == {
        "fp32-bs1": (0.5, "speed", None)}
    failed = {**_run("run-a", 0.6), "status": "incomplete (running: 3 of 5000 images cached)"}
    assert _ap(merged_table(_speed({}), [failed]))["fp32-bs1"][2] == (
        "no AP: run-a: status incomplete (running: 3 of 5000 images cached)")
