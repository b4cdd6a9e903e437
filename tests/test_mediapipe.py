"""MediaPipe BlazePose: its 33 landmarks mapped to COCO's 17, tested on landmarks recorded from the real model
(mediapipe 0.10.21 on three images of the real val2017 sample; one of them has no person found). mediapipe pins
numpy < 2, so the real model runs only where it is importable (its own environment: see README)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, pycocotools_eval, requires_shared

from kpbench.core.errors import KpbenchError
from kpbench.models.mediapipe import BLAZEPOSE_TO_COCO, landmarks_to_predictions

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "blazepose_landmarks.json").read_text())


def test_the_mapping_is_cocos_17_by_index() -> None:
    assert BLAZEPOSE_TO_COCO == (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


@pytest.mark.parametrize("record", [r for r in RECORDED["images"] if r["landmarks"] is not None],
                         ids=lambda r: str(r["image_id"]))
def test_recorded_landmarks_become_one_coco_person(record: dict) -> None:
    marks = np.asarray(record["landmarks"])
    w, h = record["width"], record["height"]
    p = landmarks_to_predictions(record["landmarks"], w, h)
    assert p.keypoint_score_kind == "probability" and len(p) == 1
    assert np.array_equal(p.keypoints[0, :, 0], marks[list(BLAZEPOSE_TO_COCO), 0] * w)
    assert np.array_equal(p.keypoints[0, :, 1], marks[list(BLAZEPOSE_TO_COCO), 1] * h)
    assert np.array_equal(p.keypoint_scores[0], marks[list(BLAZEPOSE_TO_COCO), 3])
    assert p.scores[0] == float(marks[list(BLAZEPOSE_TO_COCO), 3].mean())  # person score: mean visibility
    x0, y0, x1, y1 = p.boxes[0]
    assert (x0, y0) == tuple(np.clip((marks[:, :2] * [w, h]).min(axis=0), 0, [w, h]))
    assert (x1, y1) == tuple(np.clip((marks[:, :2] * [w, h]).max(axis=0), 0, [w, h]))


def test_no_person_and_bad_shapes() -> None:
    assert len(landmarks_to_predictions(None, 640, 480)) == 0
    with pytest.raises(KpbenchError, match=r"expected shape \(33, 4\)"):
        landmarks_to_predictions([[0.5, 0.5, 0.0, 1.0]] * 17, 640, 480)


REPLAY = '''
import json
from kpbench.core.schema import COCO17
from kpbench.models.mediapipe import landmarks_to_predictions

class Replay:
    """BlazePose's recorded outputs, found by image size (the recorded images differ in size)."""
    schema = COCO17
    def __init__(self):
        data = json.load(open(%r))
        self.by_size = {(r["height"], r["width"]): r["landmarks"] for r in data["images"]}
    def info(self):
        return {"weights": None, "name": "blazepose-replay", "keypoint_score_kind": "probability"}
    def predict(self, images):
        return [landmarks_to_predictions(self.by_size[im.shape[:2]], im.shape[1], im.shape[0]) for im in images]
'''


@requires_shared
def test_recorded_blazepose_through_a_run_scores_as_bare_pycocotools(tmp_path: Path, run_cli) -> None:
    adapter = tmp_path / "replay.py"
    adapter.write_text(REPLAY % str(Path(__file__).parent / "fixtures" / "blazepose_landmarks.json"))
    ids = ",".join(str(r["image_id"]) for r in RECORDED["images"])
    out = tmp_path / "run"
    code, _, err = run_cli("run", "--model", f"{adapter}:Replay", "--coco-root", COCO_SAMPLE, "--image-ids", ids,
                           "--out", out, "--no-progress", "--device", "cpu")
    assert code == 0, err
    gt = json.loads((out / "ground_truth.json").read_text())
    results = json.loads((out / "keypoints_results.json").read_text())
    assert len(results) == 2  # one person per image where BlazePose found one
    ev = pycocotools_eval(gt, results)
    assert list(json.loads((out / "metrics.json").read_text())["keypoints"].values()) == [float(s) for s in ev.stats]


@requires_shared
@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                    reason="mediapipe not importable (it pins numpy < 2: give it its own environment)")
def test_the_real_model_gives_the_recorded_landmarks() -> None:  # pragma: no cover - needs mediapipe's own venv
    from PIL import Image

    from kpbench.models.mediapipe import MediaPipePoseModel

    model = MediaPipePoseModel()
    for record in RECORDED["images"]:
        with Image.open(COCO_SAMPLE / "val2017" / f"{record['image_id']:012d}.jpg") as im:
            got = model.predict([np.asarray(im.convert("RGB"))])[0]
        expected = landmarks_to_predictions(record["landmarks"], record["width"], record["height"])
        assert np.allclose(got.keypoints, expected.keypoints, atol=1e-3)


class _FakePose:
    """Stands in for mediapipe's Pose: answers one recorded person and remembers what it was given."""

    def __init__(self, landmarks: list) -> None:
        self.landmarks, self.given = landmarks, []

    def process(self, rgb: np.ndarray):
        from types import SimpleNamespace

        self.given.append(rgb.shape)
        points = [SimpleNamespace(x=x, y=y, z=z, visibility=v) for x, y, z, v in self.landmarks]
        return SimpleNamespace(pose_landmarks=SimpleNamespace(landmark=points))


def test_input_size_resizes_the_image_and_keeps_original_coordinates() -> None:
    """speed's sizes: the long side handed to BlazePose; the landmarks land on the original image either way."""
    from kpbench.models.base import record_input_shapes, set_input_size
    from kpbench.models.mediapipe import MediaPipePoseModel, resize_long_side

    record = next(r for r in RECORDED["images"] if r["landmarks"] is not None)
    model = MediaPipePoseModel.__new__(MediaPipePoseModel)  # without mediapipe: its Pose replaced below
    model._pose, model.long_side, model._shapes = _FakePose(record["landmarks"]), None, None
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    plain = model.predict([image])[0]
    set_input_size(model, 256, 427)
    with record_input_shapes(model) as shapes:
        resized = model.predict([image])[0]
    assert model._pose.given == [(480, 640, 3), (192, 256, 3)] and shapes == [(1, 192, 256, 3)]
    assert np.array_equal(plain.keypoints, resized.keypoints) and np.array_equal(plain.boxes, resized.boxes)
    assert np.array_equal(resized.keypoints[0, :, 0], np.asarray(record["landmarks"])[list(BLAZEPOSE_TO_COCO), 0] * 640)
    assert resize_long_side(image, 640) is image  # already that size: no copy
    assert resize_long_side(np.zeros((100, 50, 3), np.uint8), 64).shape == (64, 32, 3)
