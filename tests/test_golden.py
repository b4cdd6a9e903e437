"""Golden outputs (see tests/golden/record.py): the model's detections within a stated tolerance of the recorded
ones, on this CPU's kernels and on another code path; everything after the model equal to the recorded files as
text, numbers to 1e-12 relative."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import requires_shared

GOLDEN = Path(__file__).parent / "golden"


def _load_recorder():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("golden_record", GOLDEN / "record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = _load_recorder()


def _recorded_by_image() -> dict[int, list[dict[str, Any]]]:
    by_image: dict[int, list[dict[str, Any]]] = {}
    for r in json.loads(record.RUN_RESULTS.read_text()):
        by_image.setdefault(r["image_id"], []).append(r)
    return by_image


def model_deviation(detections: dict[int, Any], recorded: dict[int, list[dict[str, Any]]]) -> dict[str, float]:
    """How far a run's detections lie from the recorded ones: the largest box and score deviations, the median
    keypoint deviation (px), and the shares of keypoints and of keypoint logits within MODEL_TOLERANCE's bounds.
    Images and detection counts must be the same; within an image each recorded detection is paired with the
    nearest unpaired box (two scores 1e-5 apart may swap places on another CPU, so the order is not compared)."""
    assert sorted(detections) == sorted(recorded)
    box_px, score, keypoint_px, logit = [0.0], [0.0], [], []
    for image_id, rows in recorded.items():
        det = detections[image_id]
        assert len(det) == len(rows), f"image {image_id}: {len(det)} detections, {len(rows)} recorded"
        free = list(range(len(det)))
        for r in rows:
            x, y, w, h = r["bbox"]
            box = np.array([x, y, x + w, y + h])
            i = min(free, key=lambda j: float(np.abs(det.boxes[j] - box).max()))
            free.remove(i)
            kps = np.asarray(r["keypoints"]).reshape(-1, 3)
            assert int(det.labels[i]) == r["category_id"]
            assert np.array_equal(det.keypoints[i][:, 2], kps[:, 2])  # visibility flags
            box_px.append(float(np.abs(det.boxes[i] - box).max()))
            score.append(abs(float(det.scores[i]) - r["score"]))
            keypoint_px.append(np.abs(det.keypoints[i][:, :2] - kps[:, :2]).max(axis=1))
            logit.append(np.abs(det.keypoint_scores[i] - np.asarray(r["keypoint_scores"])))
    keypoints, logits = np.concatenate(keypoint_px), np.concatenate(logit)
    bounds = record.MODEL_TOLERANCE
    return {"box_px": max(box_px), "score": max(score), "keypoint_px_median": float(np.median(keypoints)),
            "keypoint_share": float(np.mean(keypoints <= bounds["keypoint_px"])),
            "logit_share": float(np.mean(logits <= bounds["logit"]))}


def within_tolerance(deviation: dict[str, float]) -> bool:
    """Whether a model_deviation is within MODEL_TOLERANCE."""
    bounds = record.MODEL_TOLERANCE
    return (deviation["box_px"] <= bounds["box_px"] and deviation["score"] <= bounds["score"]
            and deviation["keypoint_px_median"] <= bounds["keypoint_px_median"]
            and min(deviation["keypoint_share"], deviation["logit_share"]) >= bounds["keypoint_share"])


# Another CPU, emulated: oneDNN's SSE4.1 kernels and ATen's non-vectorised ones sum in other orders than this
# machine's AVX2/AVX-512 paths (measured: up to 0.019 px apart).
OTHER_KERNELS = {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}


@requires_shared
@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["native", "sse41"])
def test_model_detections_within_the_stated_tolerance(tmp_path: Path, kernels: str) -> None:
    run_dir = record.model_run(tmp_path, OTHER_KERNELS if kernels == "sse41" else None)
    deviation = model_deviation(record.run_detections(run_dir), _recorded_by_image())
    assert within_tolerance(deviation), deviation


@requires_shared
def test_replayed_detections_and_fixtures_give_the_recorded_files(tmp_path: Path) -> None:
    produced = record.replay_all(tmp_path)
    expected = {p.relative_to(record.EXPECTED).as_posix(): p.read_text()
                for p in sorted(record.EXPECTED.rglob("*")) if p.is_file()}
    assert sorted(produced) == sorted(expected)
    changed = {name: record.text_differences(expected[name], text)[:3] for name, text in produced.items()
               if record.text_differences(expected[name], text)}
    assert changed == {}


def test_the_comparison_sees_a_changed_digit_and_tolerates_an_ulp() -> None:
    ulp = float(np.nextafter(0.4375, 1.0))
    assert record.text_differences("AP 0.4375 of 12 images\n", f"AP {ulp!r} of 12 images\n") == []
    assert record.text_differences("AP 0.4375 of 12\n", "AP 0.4376 of 12\n") == ["0.4375 became 0.4376"]
    assert record.text_differences("AP 0.4375 of 12\n", "AP 0.4375 of 13\n") == ["'12' became '13'"]
    assert record.text_differences("AP 0.4375 of 12\n", "AR 0.4375 of 12\n") == ["'AP ' became 'AR '"]
    assert record.text_differences('{"AP": 0.5, "n": 3}', json.dumps({"AP": ulp + 0.0625, "n": 3})) == []
    assert record.text_differences('{"AP": 0.5, "n": 3}', '{"AP": 0.5, "n": 3.0}') == ["$.n: 3 became 3.0"]


def test_the_model_comparison_fails_beyond_the_tolerance() -> None:
    from kpbench.runs.detections import ImageDetections

    rows = [{"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [10.0, 20.0, 30.0, 40.0],
             "keypoints": [11.0, 21.0, 1.0] * 17, "keypoint_scores": [2.0] * 17}]

    def detection(box_dy: float = 0.0, score: float = 0.5, keypoint_dx: float = 0.0, logit: float = 2.0) -> Any:
        keypoints = np.tile([11.0, 21.0, 1.0], (1, 17, 1))
        keypoints[0, :, 0] += keypoint_dx
        return {1: ImageDetections(1, np.array([[10.0, 20.0, 40.0, 60.0 + box_dy]]), np.array([score]),
                                   np.array([1]), keypoints, np.full((1, 17), logit))}

    assert model_deviation(detection(), {1: rows}) == {"box_px": 0.0, "score": 0.0, "keypoint_px_median": 0.0,
                                                       "keypoint_share": 1.0, "logit_share": 1.0}
    assert within_tolerance(model_deviation(detection(0.05, 0.5005, 0.005, 2.04), {1: rows}))
    assert not within_tolerance(model_deviation(detection(box_dy=0.3), {1: rows}))
    assert not within_tolerance(model_deviation(detection(score=0.502), {1: rows}))
    assert not within_tolerance(model_deviation(detection(keypoint_dx=0.02), {1: rows}))
    assert not within_tolerance(model_deviation(detection(logit=2.1), {1: rows}))
