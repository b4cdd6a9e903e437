"""Skeleton overlays: pass/fail rules, pixels, file sizes, the `kpbench draw` command and its errors.

Every image here is generated (no COCO photo). `make_run_dir` builds a small run directory by hand, as `kpbench
run` would leave it; the plot and keypoint tests use it too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpbench.detections import ImageDetections, append_detections, to_coco_results
from kpbench.draw import (
    draw_run_images,
    draw_skeletons,
    keypoint_radius,
    limb_scores,
    line_width,
    passing,
    top_images,
)
from kpbench.errors import KpbenchError
from kpbench.rundir import RUN_VERSION
from kpbench.schema import LIMBS, NUM_KEYPOINTS
from kpbench.synthetic import PERSON_CATEGORY

BACKGROUND = (90, 110, 130)
# A person drawn on a 200 x 160 image lives in x, y within [20, 90] x [20, 140]; x >= 120 stays empty.
_TEMPLATE = np.array(
    [[55, 25], [50, 22], [60, 22], [45, 25], [65, 25], [40, 45], [70, 45], [32, 70], [78, 70], [28, 90],
     [82, 90], [45, 95], [65, 95], [45, 115], [65, 115], [45, 135], [65, 135]], dtype=np.float64,
)  # fmt: skip


def kpbench(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kpbench", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def person(offset: tuple[float, float] = (0.0, 0.0), low: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (17, 3) of the template person shifted by `offset`, and logits (17,) with `low` below 2."""
    xy = _TEMPLATE + np.asarray(offset)
    logits = np.full(NUM_KEYPOINTS, 6.0)
    logits[list(low)] = 0.5
    return np.concatenate([xy, np.ones((NUM_KEYPOINTS, 1))], axis=1), logits


def detections(image_id: int, persons: list[tuple[np.ndarray, np.ndarray, float]]) -> ImageDetections:
    kps = np.array([p[0] for p in persons]).reshape(-1, NUM_KEYPOINTS, 3)
    boxes = np.array([[*p[0][:, :2].min(0) - 5, *p[0][:, :2].max(0) + 5] for p in persons]).reshape(-1, 4)
    return ImageDetections(
        image_id=image_id,
        boxes=boxes,
        scores=np.array([p[2] for p in persons], dtype=np.float64),
        labels=np.ones(len(persons), dtype=np.int64),
        keypoints=kps,
        keypoint_scores=np.array([p[1] for p in persons]).reshape(-1, NUM_KEYPOINTS),
    )


@dataclass
class RunDir:
    path: Path
    images: dict[int, Path]  # image id -> source file
    dets: dict[int, ImageDetections]
    gt: dict


def make_run_dir(root: Path) -> RunDir:
    """A finished run over 3 generated images (ids 7, 42, 1000), with GT, cache, results and manifest.

    Image 42 (200 x 160 PNG): a person at 0.98 (left and right wrist logits below 2) and one at 0.5 (not drawn).
    Image 7 (240 x 180 JPEG): one person at 0.95, shifted by (100, 20). Image 1000 (180 x 120 PNG): one at 0.3.
    """
    coco_root, split = root / "coco", "val2017"
    (coco_root / split).mkdir(parents=True)
    run = root / "run"
    run.mkdir()
    specs = {
        42: ((200, 160), "png", [(*person(low=(9, 10)), 0.98), (*person(offset=(100, 0)), 0.5)]),
        7: ((240, 180), "jpg", [(*person(offset=(100, 20)), 0.95)]),
        1000: ((180, 120), "png", [(*person(offset=(60, -20)), 0.3)]),
    }
    images, dets, records, annotations = {}, {}, [], []
    for image_id, ((width, height), ext, persons) in specs.items():
        name = f"{image_id:012d}.{ext}"
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[:] = BACKGROUND
        pixels[:, : width // 2, 0] = 60  # two tones, so that a drawn pixel is compared with a real background
        Image.fromarray(pixels, "RGB").save(coco_root / split / name)
        images[image_id] = coco_root / split / name
        records.append({"id": image_id, "file_name": name, "width": width, "height": height})
        dets[image_id] = detections(image_id, persons)
        for kps, _, score in persons:
            if score < 0.9:
                continue
            gt_kps = kps.copy()
            gt_kps[:, :2] += 3.0  # GT a few pixels off the detection
            gt_kps[:, 2] = 2
            x0, y0 = gt_kps[:, :2].min(0) - 5
            x1, y1 = gt_kps[:, :2].max(0) + 5
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "num_keypoints": NUM_KEYPOINTS,
                    "keypoints": gt_kps.reshape(-1).tolist(),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float((x1 - x0) * (y1 - y0) * 0.6),
                }
            )
    gt = {"images": sorted(records, key=lambda r: r["id"]), "annotations": annotations, "categories": [PERSON_CATEGORY]}
    (run / "ground_truth.json").write_text(json.dumps(gt))
    ids = sorted(specs)
    with (run / "detections.jsonl").open("w") as fh:
        for image_id in ids:
            append_detections(fh, dets[image_id])
    keypoint_results, bbox_results = to_coco_results(dets[i] for i in ids)
    (run / "keypoints_results.json").write_text(json.dumps(keypoint_results))
    (run / "bbox_results.json").write_text(json.dumps(bbox_results))
    manifest = {
        "kpbench_run_version": RUN_VERSION,
        "coco_root": str(coco_root),
        "split": split,
        "image_ids": ids,
        "config": {"weights": "none", "min_size": 800, "max_size": 1333},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return RunDir(run, images, dets, gt)


@pytest.fixture()
def run_dir(tmp_path: Path) -> RunDir:
    return make_run_dir(tmp_path)


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


# --- rules ------------------------------------------------------------------------------------------------


def test_limb_score_is_the_lower_end_and_needs_both_ends() -> None:
    rng = np.random.default_rng(0)
    kp_scores = rng.normal(2.0, 2.0, (5, NUM_KEYPOINTS))
    kp_scores[0, 0] = 2.0  # exactly at the threshold: not "above"
    scores = np.array([0.95, 0.91, 0.9, 0.5, 0.99])
    persons, keypoints, limbs = passing(kp_scores, scores, score_thresh=0.9, kp_thresh=2.0)
    assert persons.tolist() == [True, True, False, False, True]
    assert not keypoints[0, 0]
    for n in range(5):
        for i, (a, b) in enumerate(LIMBS):
            assert limb_scores(kp_scores)[n, i] == min(kp_scores[n, a], kp_scores[n, b])
            assert limbs[n, i] == (persons[n] and kp_scores[n, a] > 2.0 and kp_scores[n, b] > 2.0)
            assert keypoints[n, a] == (persons[n] and kp_scores[n, a] > 2.0)


def test_widths_scale_with_the_image() -> None:
    assert [line_width(h, w) for h, w in ((100, 100), (480, 640), (1080, 1920), (4000, 3000))] == [1, 2, 5, 15]
    assert keypoint_radius(480, 640) == 4


def test_a_limb_is_drawn_only_when_both_ends_pass() -> None:
    canvas = np.full((400, 400, 3), 128, dtype=np.uint8)
    kps = np.zeros((1, NUM_KEYPOINTS, 3))
    kps[0, :, :2] = [350, 350]  # every other keypoint fails, parked in a corner
    kps[0, 5, :2] = [100, 60]  # left shoulder: passes
    kps[0, 7, :2] = [100, 180]  # left elbow: passes
    kps[0, 9, :2] = [100, 300]  # left wrist: fails (limbs shoulder-elbow and elbow-wrist exist in COCO's skeleton)
    assert (5, 7) in LIMBS and (7, 9) in LIMBS
    logits = np.full((1, NUM_KEYPOINTS), -3.0)
    logits[0, [5, 7]] = 4.0
    logits[0, 9] = 1.9
    out = draw_skeletons(canvas, kps, logits, np.array([0.99])).astype(np.int16)
    changed = (out != 128).any(axis=2)
    assert out.shape == canvas.shape
    assert changed[120, 100]  # mid shoulder-elbow: drawn
    assert not changed[240, 100]  # mid elbow-wrist: not drawn
    assert not changed[300, 100] and not changed[350, 350]  # failing keypoints: not drawn
    assert changed[60, 100] and changed[180, 100]
    # Nothing else: every changed pixel is within the dot radius of the one limb's segment.
    ys, xs = np.nonzero(changed)
    assert xs.min() >= 100 - 5 and xs.max() <= 100 + 5 and ys.min() >= 60 - 5 and ys.max() <= 180 + 5


def test_torch_tensor_in_torch_tensor_out() -> None:
    torch = pytest.importorskip("torch")
    image = torch.full((3, 50, 80), 200, dtype=torch.uint8)
    kps, logits = person()
    out = draw_skeletons(image, kps[None] * 0.5, logits[None], np.array([0.99]))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 50, 80) and out.dtype == torch.uint8
    assert (out != 200).any() and (image == 200).all()  # the input is not modified


def test_top_images_rank_by_best_score(run_dir: RunDir) -> None:
    assert top_images(run_dir.dets, 2) == [42, 7]
    assert top_images(run_dir.dets, 10) == [42, 7, 1000]


# --- run directories -----------------------------------------------------------------------------------------


def test_draw_run_images_pixels_and_sizes(run_dir: RunDir, tmp_path: Path) -> None:
    written = draw_run_images(run_dir.path, image_ids=[42, 7, 1000])
    assert [p.name for p in written] == ["42.png", "7.png", "1000.png"]
    assert all(p.parent == run_dir.path / "draw" for p in written)
    for path, image_id in zip(written, (42, 7, 1000)):
        drawn, source = rgb(path), rgb(run_dir.images[image_id])
        assert drawn.shape == source.shape
    drawn, source = rgb(written[0]), rgb(run_dir.images[42])
    diff = (drawn != source).any(axis=2)
    for k in (0, 5, 16):  # passing keypoints of the 0.98 person
        x, y = _TEMPLATE[k].astype(int)
        assert diff[y, x], k
    for k in (9, 10):  # its wrists (logit 0.5) are not drawn, nor the limbs that end there
        x, y = _TEMPLATE[k].astype(int)
        assert not diff[y, x], k
    assert not diff[:, 120:].any()  # the 0.5 person (x >= 120) is not drawn; nothing else is there
    assert diff.sum() > 200
    # Image 7: its person is shifted by (100, 20); the left part stays as it was.
    diff7 = (rgb(written[1]) != rgb(run_dir.images[7])).any(axis=2)
    assert diff7[25 + 20, 55 + 100] and not diff7[:, :110].any()
    # Image 1000: nobody above 0.9, the file equals the source.
    assert (rgb(written[2]) == rgb(run_dir.images[1000])).all()


def test_draw_run_images_top_n_and_gt_panel(run_dir: RunDir, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    written = draw_run_images(run_dir.path, top_n=1, gt=True, out=out)
    assert written == [out / "42.png"]
    panel, source = rgb(written[0]), rgb(run_dir.images[42])
    gap = 2 * line_width(160, 200)
    assert panel.shape == (160, 2 * 200 + gap, 3)
    assert (panel[:, 200 : 200 + gap] == 255).all()  # the white gap
    right = panel[:, 200 + gap :]
    # The GT person is the detection shifted by 3 px, with all 17 keypoints labelled: the wrists appear.
    x, y = (_TEMPLATE[9] + 3).astype(int)
    assert (right[y, x] != source[y, x]).any()
    assert (right[100:, 150:] == source[100:, 150:]).all()  # bottom right: no person, no label


def test_unknown_image_id_and_missing_run_dir(run_dir: RunDir, tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match=r"image id 123 is not in this run \(it has 3 images\)"):
        draw_run_images(run_dir.path, image_ids=[123])
    with pytest.raises(KpbenchError, match="run directory not found"):
        draw_run_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KpbenchError, match="not a run directory"):
        draw_run_images(tmp_path / "empty")


def test_cli_draw(run_dir: RunDir, tmp_path: Path) -> None:
    proc = kpbench("draw", run_dir.path, "--image-ids", "7,42", "--score-thresh", "0.4", "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["42.png", "7.png"]
    diff = (rgb(tmp_path / "o" / "42.png") != rgb(run_dir.images[42])).any(axis=2)
    assert diff[:, 120:].any()  # with --score-thresh 0.4 the 0.5 person is drawn too
    assert "wrote" in proc.stderr

    assert_one_line_error(
        kpbench("draw", run_dir.path, "--image-ids", "123"),
        str(run_dir.path),
        "image id 123 is not in this run (it has 3 images)",
    )
    assert_one_line_error(kpbench("draw", tmp_path / "missing"), "missing", "no such run directory")
    assert_one_line_error(kpbench("draw", run_dir.path, "--weights", "none"), "--weights")
    assert_one_line_error(kpbench("draw", run_dir.images[42], "--gt"), "--gt", "--annotations")


# --- image files through the model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_draw_image_files_with_random_weights(run_dir: RunDir, tmp_path: Path) -> None:
    """The one test that runs Keypoint R-CNN (random weights, input 128 px): a file of the source's size."""
    from kpbench.draw import draw_image_files

    src = run_dir.images[42]
    written = draw_image_files([src], weights="none", out=tmp_path / "d", min_size=128, max_size=213, device="cpu")
    assert written == [tmp_path / "d" / f"{src.stem}.png"]
    assert rgb(written[0]).shape == rgb(src).shape


def test_draw_image_files_gt_needs_a_matching_record(run_dir: RunDir, tmp_path: Path) -> None:
    """Checked before the model is built: a file missing from --annotations, and a missing file."""
    from kpbench.draw import draw_image_files

    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps({**run_dir.gt, "images": [r for r in run_dir.gt["images"] if r["id"] != 42]}))
    with pytest.raises(KpbenchError, match=r"no image named '000000000042.png' in .*gt.json"):
        draw_image_files([run_dir.images[42]], weights="none", annotations=gt_json)
    with pytest.raises(KpbenchError, match="image file not found"):
        draw_image_files([tmp_path / "nope.jpg"], weights="none")
