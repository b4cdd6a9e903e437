"""Top-down machinery as a library: the crop geometry and its exact inverse, the warp's pixel convention, heatmap
decoding and the flip maps, person-box sources and their selection, rescoring, OKS-NMS and soft-OKS-NMS against
brute-force references, and the composite model (an oracle crop model gives back the GT keypoints exactly)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, requires_shared

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import COCO17
from kpbench.engine.postprocess import (
    PostProcessedModel,
    PostProcessSettings,
    oks_nms,
    postprocess_predictions,
    rescore,
    soft_oks_nms,
)
from kpbench.models.base import ModelInfo, Predictions
from kpbench.models.crops import (
    apply_affines,
    crop_affines,
    crop_regions,
    decode_heatmaps,
    flip_permutation,
    invert_affines,
    unflip_heatmaps,
    unflip_keypoints,
    warp_crops,
)
from kpbench.models.person_boxes import BoxSelection, PersonBoxes
from kpbench.models.person_boxes.detections_file import DetectionFileBoxes
from kpbench.models.person_boxes.ground_truth import GroundTruthBoxes
from kpbench.models.person_boxes.model import ModelBoxes
from kpbench.models.topdown import CropBatch, CropOutput, TopDownModel

torch = pytest.importorskip("torch")
FLIP = flip_permutation(17, COCO17.flip_pairs)


# --- geometry ------------------------------------------------------------------------------------------------


def test_region_fixes_the_aspect_ratio_then_pads() -> None:
    # 100 x 100 box into a 192 x 256 crop (aspect 0.75): wider than 0.75, so the height grows to 100 / 0.75.
    (cx, cy, w, h), = crop_regions(np.array([[10.0, 20.0, 110.0, 120.0]]), (192, 256), 1.25)
    assert (cx, cy) == (60.0, 70.0)
    assert w == 125.0 and h == pytest.approx(100 / 0.75 * 1.25, abs=1e-12)
    # 30 x 200: taller than 0.75, so the width grows to 200 * 0.75.
    (_, _, w, h), = crop_regions(np.array([[0.0, 0.0, 30.0, 200.0]]), (192, 256), 1.0)
    assert (w, h) == (150.0, 200.0)


def test_crop_and_inverse_are_exact_to_1e_9_px() -> None:
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(-50, 2000, 200), rng.uniform(-50, 2000, 200)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0.5, 900, 200), y0 + rng.uniform(0.5, 900, 200)], axis=1)
    for size in ((192, 256), (288, 384), (256, 256), (48, 64)):
        regions = crop_regions(boxes, size, 1.25)
        forward = crop_affines(regions, size)
        back = invert_affines(forward)
        points = rng.uniform(-3000, 5000, (200, 17, 2))
        assert np.abs(apply_affines(back, apply_affines(forward, points)) - points).max() < 1e-9
        # The region's corners land on the crop's corners, and the crop's corners map back onto them.
        corners = np.stack([regions[:, :2] - regions[:, 2:] / 2, regions[:, :2] + regions[:, 2:] / 2], axis=1)
        assert np.abs(apply_affines(forward, corners) - np.array([[0, 0], list(size)])).max() < 1e-9
        assert np.abs(apply_affines(back, np.broadcast_to(np.array([[0.0, 0.0], list(size)]), (200, 2, 2)))
                      - corners).max() < 1e-9


def test_a_degenerate_box_cannot_be_cropped() -> None:
    with pytest.raises(KpbenchError, match=r"person box 1: .* has no area"):
        crop_affines(crop_regions(np.array([[0, 0, 10, 10], [5, 5, 5, 5]], float), (192, 256)), (192, 256))


def test_warp_samples_each_crop_pixel_centre_at_its_inverse_image_point() -> None:
    """A linear ramp is reproduced exactly by bilinear sampling, so every crop pixel must equal the ramp at the
    image point its centre maps to: this pins the "centre" convention (centres at i + 0.5)."""
    height, width = 60, 80
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    ramp = lambda x, y: 0.3 * x + 0.7 * y + 5.0  # noqa: E731
    image = torch.from_numpy(np.stack([ramp(jj, ii), 2 * ramp(jj, ii), np.ones_like(jj)])).float()
    boxes = np.array([[20.0, 15.0, 50.0, 40.0], [30.0, 10.0, 42.0, 50.0]])
    affines = crop_affines(crop_regions(boxes, (24, 32), 1.1), (24, 32))
    crops = warp_crops(image, affines, (24, 32), "centre").numpy()
    assert crops.shape == (2, 3, 32, 24)
    u, v = np.meshgrid(np.arange(24) + 0.5, np.arange(32) + 0.5)
    for m in range(2):
        xy = apply_affines(invert_affines(affines[m : m + 1]), np.stack([u, v], -1).reshape(1, -1, 2))[0]
        inside = (xy[:, 0] >= 0.5) & (xy[:, 0] <= width - 0.5) & (xy[:, 1] >= 0.5) & (xy[:, 1] <= height - 0.5)
        assert inside.sum() > 400
        expected = ramp(xy[:, 0], xy[:, 1])
        assert np.abs(crops[m, 0].reshape(-1)[inside] - expected[inside]).max() < 2e-4
        assert np.abs(crops[m, 1].reshape(-1)[inside] - 2 * expected[inside]).max() < 4e-4
    # Outside the image: zeros (the third channel is 1 inside, fading to 0 across the border pixel).
    far = warp_crops(image, crop_affines(np.array([[500.0, 500.0, 10.0, 10.0]]), (4, 4)), (4, 4), "centre")
    assert float(far.abs().max()) == 0.0


def _bilinear_by_hand(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """OpenCV's warpAffine sample (INTER_LINEAR, BORDER_CONSTANT 0) at (x, y), pixel (r, c) sitting at (c, r)."""
    _, height, width = image.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(image.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= xx < width and 0 <= yy < height:
                out += wx * wy * image[:, yy, xx]
    return out


def test_warp_in_the_index_convention_is_hrnets_warp_affine() -> None:
    """The default convention (HRNet's `crop`: cv2.warpAffine with get_affine_transform's matrix, the same affine as
    kpbench's): crop pixel (i, j) is the image at the inverse affine of (j, i), image pixel (r, c) sitting at
    (c, r); compared with a hand-written bilinear sampler on a random image, borders included."""
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 1, (3, 30, 40))
    boxes = np.array([[3.0, 2.0, 30.0, 25.0], [-5.0, 10.0, 20.0, 40.0]])
    affines = crop_affines(crop_regions(boxes, (12, 16), 1.25), (12, 16))
    crops = warp_crops(torch.from_numpy(image), affines, (12, 16)).numpy()
    back = invert_affines(affines)
    expected = np.zeros_like(crops)
    for m in range(2):
        for i in range(16):
            for j in range(12):
                x, y = apply_affines(back[m : m + 1], np.array([[[j, i]]], float))[0, 0]
                expected[m, :, i, j] = _bilinear_by_hand(image, x, y)
    assert np.abs(crops - expected).max() < 1e-12
    # Not the "centre" convention's samples (which differ by about half a pixel).
    assert np.abs(warp_crops(torch.from_numpy(image), affines, (12, 16), "centre").numpy() - expected).max() > 0.05


def test_heatmap_decoding_arg_max_quarter_shift_and_pixel_centres() -> None:
    hm = torch.zeros(1, 2, 16, 12)
    hm[0, 0, 5, 7] = 1.0
    hm[0, 0, 5, 8] = 0.5  # right neighbour higher than the left: +0.25 in x
    hm[0, 0, 4, 7] = 0.2  # upper neighbour higher than the lower: -0.25 in y
    hm[0, 1, 0, 11] = 0.9  # on the border: no shift
    points, scores = decode_heatmaps(hm, (48, 64), "centre")  # stride 4
    assert points[0, 0].tolist() == [(7 + 0.25 + 0.5) * 4, (5 - 0.25 + 0.5) * 4]
    assert points[0, 1].tolist() == [(11 + 0.5) * 4, (0 + 0.5) * 4]
    assert scores[0].tolist() == [1.0, pytest.approx(0.9)]
    # The default: HRNet's index convention, heatmap pixel j at crop coordinate j * stride.
    points, _ = decode_heatmaps(hm, (48, 64))
    assert points[0].tolist() == [[(7 + 0.25) * 4, (5 - 0.25) * 4], [11 * 4, 0]]


def _hrnet_decode_by_hand(hm: np.ndarray, stride_x: float, stride_y: float) -> tuple[np.ndarray, np.ndarray]:
    """HRNet's get_max_preds + get_final_preds (POST_PROCESS on), written out: crop coordinates = heatmap ones x
    stride (transform_preds with the heatmap as the output size, then the crop's affine)."""
    m, k, hh, wh = hm.shape
    points, scores = np.zeros((m, k, 2)), np.zeros((m, k))
    for n in range(m):
        for p in range(k):
            flat = hm[n, p].reshape(-1)
            idx = int(np.argmax(flat))
            value = flat[idx]
            px, py = (idx % wh, idx // wh) if value > 0 else (0, 0)
            x, y = float(px), float(py)
            if 1 < px < wh - 1 and 1 < py < hh - 1:
                x += float(np.sign(hm[n, p, py, px + 1] - hm[n, p, py, px - 1])) * 0.25
                y += float(np.sign(hm[n, p, py + 1, px] - hm[n, p, py - 1, px])) * 0.25
            points[n, p], scores[n, p] = (x * stride_x, y * stride_y), value
    return points, scores


def _mmpose_decode_by_hand(hm: np.ndarray, stride_x: float, stride_y: float) -> np.ndarray:
    """mmpose's get_heatmap_maximum + refine_keypoints + scale_factor, written out (keypoints only)."""
    m, k, hh, wh = hm.shape
    points = np.zeros((m, k, 2))
    for n in range(m):
        for p in range(k):
            flat = hm[n, p].reshape(-1)
            idx = int(np.argmax(flat))
            px, py = (idx % wh, idx // wh) if flat[idx] > 0 else (-1, -1)
            dx = hm[n, p, py, px + 1] - hm[n, p, py, px - 1] if (1 < px < wh - 1 and 0 < py < hh) else 0.0
            dy = hm[n, p, py + 1, px] - hm[n, p, py - 1, px] if (1 < py < hh - 1 and 0 < px < wh) else 0.0
            points[n, p] = ((px + float(np.sign(dx)) * 0.25) * stride_x, (py + float(np.sign(dy)) * 0.25) * stride_y)
    return points


def _synthetic_heatmaps(seed: int, hh: int = 16, wh: int = 12) -> np.ndarray:
    """Random maps whose maxima sit everywhere, borders and the pixels next to them included; one map <= 0, one 0,
    one with equal neighbours (no move)."""
    rng = np.random.default_rng(seed)
    cells = [(y, x) for y in (0, 1, 2, hh // 2, hh - 2, hh - 1) for x in (0, 1, 2, wh // 2, wh - 2, wh - 1)]
    hm = rng.uniform(0.0, 0.5, (len(cells) + 3, 1, hh, wh)).astype(np.float32)
    for n, (y, x) in enumerate(cells):
        hm[n, 0, y, x] = 1.0
    hm[-3] = -rng.uniform(0.1, 1.0, (1, hh, wh))
    hm[-2] = 0.0
    hm[-1, 0, 7, 5], hm[-1, 0, 7, 4], hm[-1, 0, 7, 6], hm[-1, 0, 6, 5], hm[-1, 0, 8, 5] = 1.0, 0.6, 0.6, 0.3, 0.7
    return hm


@pytest.mark.parametrize("seed", range(3))
def test_heatmap_decoding_equals_hrnet_and_mmpose_written_out(seed: int) -> None:
    """Numbers exact: the default decode is HRNet's (both axes moved only when 1 < x < W - 1 and 1 < y < H - 1, a
    maximum <= 0 at (0, 0), heatmap pixel j at crop j * stride); "mmpose" its rule (per axis, a maximum <= 0 at -1)."""
    hm = _synthetic_heatmaps(seed)
    crop = (48, 64)  # stride 4 on a 12 x 16 heatmap
    points, scores = decode_heatmaps(torch.from_numpy(hm), crop)
    ref_points, ref_scores = _hrnet_decode_by_hand(hm, 4.0, 4.0)
    assert points.tolist() == ref_points.tolist() and scores.tolist() == ref_scores.tolist()
    mm_points, mm_scores = decode_heatmaps(torch.from_numpy(hm), crop, refinement="mmpose")
    assert mm_points.tolist() == _mmpose_decode_by_hand(hm, 4.0, 4.0).tolist() and mm_scores.tolist() == ref_scores.tolist()
    assert mm_points.tolist() != points.tolist()  # the rules differ at the borders (and for maxima <= 0)
    # A maximum <= 0 is not a location: HRNet (0, 0), mmpose (-1, -1) x stride.
    assert points[-3:-1].tolist() == [[[0.0, 0.0]]] * 2 and mm_points[-3:-1].tolist() == [[[-4.0, -4.0]]] * 2
    assert points[-1, 0].tolist() == [5 * 4.0, (7 + 0.25) * 4.0]  # equal left/right: x stays


def _rendered_heatmaps(points: np.ndarray, crop: tuple[int, int], shape: tuple[int, int], sigma: float = 1.5) -> torch.Tensor:
    """Gaussian heatmaps centred exactly on crop points (M, K, 2), heatmap pixel centres at (j + 0.5) * stride."""
    hh, wh = shape
    sx, sy = crop[0] / wh, crop[1] / hh
    cx = points[..., 0] / sx - 0.5
    cy = points[..., 1] / sy - 0.5
    jj, ii = np.meshgrid(np.arange(wh), np.arange(hh))
    d2 = (jj[None, None] - cx[..., None, None]) ** 2 + (ii[None, None] - cy[..., None, None]) ** 2
    return torch.from_numpy(np.exp(-d2 / (2 * sigma**2)))


def test_mirrored_heatmaps_map_back_onto_the_plain_ones() -> None:
    """The flip maps of heatmaps and keypoints agree with the crop flip (x -> W - x): a model that renders its
    heatmaps exactly on the person gives, on the mirrored crop, heatmaps that unflip onto the plain ones."""
    rng = np.random.default_rng(1)
    crop = (48, 64)
    points = rng.uniform([2, 2], [46, 62], (3, 17, 2))
    mirrored_points = points[:, FLIP].copy()
    mirrored_points[..., 0] = crop[0] - mirrored_points[..., 0]
    plain = _rendered_heatmaps(points, crop, (16, 12))
    mirrored = _rendered_heatmaps(mirrored_points, crop, (16, 12))
    assert torch.allclose(unflip_heatmaps(mirrored, FLIP, "centre"), plain, atol=1e-12)
    assert np.abs(unflip_keypoints(mirrored_points, crop[0], FLIP, "centre") - points).max() < 1e-12


def test_flip_back_in_the_index_convention_is_hrnets() -> None:
    """HRNet's flip_back (columns reversed, left/right channels swapped) then SHIFT_HEATMAP (output[..., 1:] =
    output[..., :-1], column 0 kept), written out, equals unflip_heatmaps' default; a mirrored keypoint maps back by
    x -> W - 1 - x (a pixel's index is its coordinate)."""
    rng = np.random.default_rng(2)
    flipped = rng.uniform(0, 1, (3, 17, 16, 12))
    expected = flipped[:, :, :, ::-1].copy()
    for a, b in COCO17.flip_pairs:
        expected[:, [a, b]] = expected[:, [b, a]]
    expected[:, :, :, 1:] = expected[:, :, :, 0:-1].copy()
    assert unflip_heatmaps(torch.from_numpy(flipped), FLIP).numpy().tolist() == expected.tolist()
    points = rng.uniform(0, 47, (3, 17, 2))
    mirrored = points[:, FLIP].copy()
    mirrored[..., 0] = 48 - 1 - mirrored[..., 0]
    assert np.abs(unflip_keypoints(mirrored, 48, FLIP) - points).max() < 1e-12


# --- person-box sources --------------------------------------------------------------------------------------


def test_selection_threshold_then_highest_first_ties_in_source_order() -> None:
    found = PersonBoxes(np.arange(20, dtype=float).reshape(5, 4), np.array([0.3, 0.9, 0.3, 0.05, 0.6]))
    kept = BoxSelection(0.1, 3).apply(found)
    assert kept.scores.tolist() == [0.9, 0.6, 0.3] and kept.boxes[:, 0].tolist() == [4.0, 16.0, 0.0]
    assert BoxSelection(0.3).apply(found).boxes[:, 0].tolist() == [4.0, 16.0, 0.0, 8.0]  # >= threshold, stable ties
    with pytest.raises(KpbenchError, match="--person-box-max: must be >= 1"):
        BoxSelection(0.0, 0)


def test_gt_source_takes_labelled_non_crowd_persons() -> None:
    gt = {"annotations": [
        {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [1, 2, 3, 4], "keypoints": [0, 0, 0] * 16 + [5, 5, 2]},
        {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [1, 2, 3, 4], "keypoints": [0] * 51},
        {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 9, 9], "keypoints": [5, 5, 2] * 17},
        {"id": 4, "image_id": 7, "category_id": 2, "iscrowd": 0, "bbox": [0, 0, 9, 9], "keypoints": [5, 5, 2] * 17},
        {"id": 5, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 0, 9], "keypoints": [5, 5, 2] * 17},
        {"id": 6, "image_id": 8, "category_id": 1, "iscrowd": 0, "bbox": [10, 20, 30, 40], "keypoints": [5, 5, 1] * 17},
    ]}
    source = GroundTruthBoxes(gt)
    a, b, c = source.boxes([7, 8, 9])
    assert a.boxes.tolist() == [[1, 2, 4, 6]] and b.boxes.tolist() == [[10, 20, 40, 60]] and len(c) == 0
    assert a.scores.tolist() == [1.0] and not source.needs_images


@requires_shared
def test_gt_source_on_the_sample_has_every_labelled_person() -> None:
    gt = json.loads((COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json").read_text())
    ids = [im["id"] for im in gt["images"]]
    total = sum(len(b) for b in GroundTruthBoxes(gt).boxes(ids))
    assert total == 70  # PROVENANCE.md: 70 person annotations with keypoints, none of them crowd


def test_file_source_reads_coco_detections_and_names_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([
        {"image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
        {"image_id": 5, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.9},
        {"image_id": 5, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.7},
        {"image_id": 6, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.1},
    ]))
    source = DetectionFileBoxes(path)
    five, six, none = source.boxes([5, 6, 99])
    assert five.boxes.tolist() == [[1, 2, 4, 6], [0, 0, 10, 10]] and five.scores.tolist() == [0.5, 0.7]
    assert six.scores.tolist() == [0.1] and len(none) == 0
    assert source.describe()["records"] == 4 and source.describe()["category_records"] == 3
    for record, fragment in (({"image_id": 5, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}, "'bbox' must be 4"),
                             ({"image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4]}, "no 'score'"),
                             ({"image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4], "score": "0.5"}, "'score' must be"),
                             ({"image_id": 5.5, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}, "integers"),
                             ({"image_id": 5, "category_id": 1, "bbox": [1, 2, -3, 4], "score": 0.5}, "negative")):
        path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}, record]))
        with pytest.raises(KpbenchError, match=f"{path}: record 1: .*{fragment}"):
            DetectionFileBoxes(path)


class _Detector:
    """A whole-image model that finds fixed boxes, one of another category."""

    schema = COCO17
    input_format = "numpy"

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def info(self) -> ModelInfo:
        return ModelInfo(weights=None, source="test", name="fixed-detector", keypoint_score_kind="probability")

    def predict(self, images: list) -> list[Predictions]:
        self.seen += [im.shape for im in images]
        return [Predictions(boxes=np.array([[1.0, 2, 30, 40], [0, 0, 5, 5]]), scores=np.array([0.8, 0.9]),
                            keypoints=np.zeros((2, 17, 3)), keypoint_scores=np.zeros((2, 17)),
                            keypoint_score_kind="probability", labels=np.array([1, 2])) for _ in images]


def test_model_source_uses_the_detectors_person_boxes() -> None:
    detector = _Detector()
    source = ModelBoxes(detector, "fixed")
    (found,) = source.boxes([3], [torch.rand(3, 20, 30)])
    assert found.boxes.tolist() == [[1, 2, 30, 40]] and found.scores.tolist() == [0.8]
    assert detector.seen == [(20, 30, 3)]  # a numpy model gets uint8 (H, W, 3)
    assert source.describe()["model"]["name"] == "fixed-detector"


@pytest.mark.slow
def test_keypoint_rcnn_as_the_source_gives_its_person_boxes() -> None:
    from kpbench.engine.topdown import TopDownRequest, build_source

    source = build_source(TopDownRequest(person_boxes="keypointrcnn", person_box_weights="none"), 1, None)
    source.model.set_input_size(160)  # small, for the CPU
    calls = []
    predict = source.model.predict
    source.model.predict = lambda images: calls.append(predict(images)) or calls[-1]
    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        (found,) = source.boxes([1], [image])
    ((expected,),) = calls
    keep = expected.labels.cpu().numpy() == 1
    assert len(found) == int(keep.sum()) and len(found) > 0  # random weights: boxes, all of the person class
    assert np.array_equal(found.boxes, expected.boxes.cpu().numpy().astype(np.float64)[keep])
    assert np.array_equal(found.scores, expected.scores.cpu().numpy().astype(np.float64)[keep])
    described = source.describe()
    assert described["kind"] == "model" and described["spec"] == "keypointrcnn" and described["model"]["weights"] == "none"


# --- post-processing -----------------------------------------------------------------------------------------


def test_rescoring_by_hand() -> None:
    scores = np.array([0.8, 0.5, 0.9])
    kp = np.array([[0.1, 0.3, 0.5, 0.2], [0.9, 0.9, 0.0, 0.0], [0.1, 0.2, 0.15, 0.05]])
    # 0.8 * mean(0.3, 0.5) = 0.32 (0.2 is not above 0.2); 0.5 * mean(0.9, 0.9) = 0.45; none above: 0.
    assert rescore(scores, kp, 0.2).tolist() == [0.8 * (0.3 + 0.5) / 2, 0.5 * 0.9, 0.0]
    # Every score above 0 counts (float sums: to the last bit or so).
    assert rescore(scores, kp, 0.0).tolist() == pytest.approx([0.8 * 1.1 / 4, 0.5 * 0.9, 0.9 * 0.5 / 4], rel=1e-15)


def _brute_oks(a: np.ndarray, b: np.ndarray, area_a: float, area_b: float, sigmas: np.ndarray) -> float:
    total = 0.0
    for k in range(len(sigmas)):
        d2 = (a[k, 0] - b[k, 0]) ** 2 + (a[k, 1] - b[k, 1]) ** 2
        total += math.exp(-d2 / (2 * (2 * sigmas[k]) ** 2 * ((area_a + area_b) / 2 + np.spacing(1))))
    return total / len(sigmas)


def _brute_nms(scores, kps, areas, sigmas, thresh):
    alive = list(range(len(scores)))
    keep = []
    while alive:
        best = max(alive, key=lambda i: (scores[i], -i))
        keep.append(best)
        alive = [j for j in alive if j != best and _brute_oks(kps[best], kps[j], areas[best], areas[j], sigmas) <= thresh]
    return keep


def _brute_soft(scores, kps, areas, sigmas, method, thresh, sigma):
    s = [float(v) for v in scores]
    alive = list(range(len(scores)))
    order, final = [], []
    while alive:
        best = max(alive, key=lambda i: (s[i], -i))
        order.append(best)
        final.append(s[best])
        alive.remove(best)
        for j in alive:
            o = _brute_oks(kps[best], kps[j], areas[best], areas[j], sigmas)
            if method == "gaussian":
                s[j] *= math.exp(-o * o / sigma)
            elif o >= thresh:
                s[j] *= 1 - o
    return order, final


def _crowd(seed: int, n: int = 40):
    """Persons in clusters of near-duplicates (so that NMS suppresses), with repeated scores (ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(50, 500, (6, 17, 2))
    which = rng.integers(0, 6, n)
    kps = centres[which] + rng.normal(0, rng.choice([1.0, 4.0, 15.0], n)[:, None, None], (n, 17, 2))
    areas = rng.uniform(400, 9000, n)
    scores = np.round(rng.uniform(0, 1, n), 1)  # ties on purpose
    return scores, kps, areas


@pytest.mark.parametrize("seed", range(5))
def test_oks_nms_equals_a_brute_force_reference(seed: int) -> None:
    scores, kps, areas = _crowd(seed)
    sigmas = COCO17.sigma_array
    for thresh in (0.3, 0.5, 0.9):
        keep = oks_nms(scores, kps, areas, sigmas, thresh)
        assert keep.tolist() == _brute_nms(scores, kps, areas, sigmas, thresh)
        assert 0 < len(keep) < len(scores)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_soft_oks_nms_equals_a_brute_force_reference(seed: int, method: str) -> None:
    scores, kps, areas = _crowd(seed)
    sigmas = COCO17.sigma_array
    order, final = soft_oks_nms(scores, kps, areas, sigmas, method, thresh=0.5, sigma=0.5)
    ref_order, ref_final = _brute_soft(scores, kps, areas, sigmas, method, 0.5, 0.5)
    assert order.tolist() == ref_order
    assert np.allclose(final, ref_final, rtol=1e-12, atol=0)
    assert (final < scores[order]).any()  # something decayed


def test_postprocess_per_label_and_refuses_logits() -> None:
    scores, kps, areas = _crowd(0, 12)
    side = np.sqrt(areas)
    boxes = np.stack([np.full(12, 10.0), np.full(12, 10.0), 10 + side, 10 + side], axis=1)
    keypoints = np.concatenate([kps, np.ones((12, 17, 1))], axis=2)
    labels = np.array([1, 2] * 6)
    pred = Predictions(boxes=boxes, scores=scores, keypoints=keypoints, keypoint_scores=np.full((12, 17), 0.5),
                       keypoint_score_kind="probability", labels=labels)
    out = postprocess_predictions(pred, COCO17.sigma_array, PostProcessSettings(nms="oks", nms_thresh=0.5))
    for label in (1, 2):
        members = np.flatnonzero(labels == label)
        keep = oks_nms(scores[members], keypoints[members], np.asarray(areas)[members] * 0 + side[members] ** 2,
                       COCO17.sigma_array, 0.5)
        assert out.scores[out.labels == label].tolist() == scores[members][keep].tolist()

    class Logits:
        schema = COCO17

        def info(self):
            return ModelInfo(weights=None, source="x", keypoint_score_kind="logit")

        def predict(self, images):
            return []

    with pytest.raises(KpbenchError, match=r"--rescore keypoint-mean: .* logit keypoint scores"):
        PostProcessedModel(Logits(), PostProcessSettings(rescore="keypoint-mean"), "logits")
    with pytest.raises(KpbenchError, match="--nms: must be one of"):
        PostProcessSettings(nms="iou")


# --- the composite -------------------------------------------------------------------------------------------


class Oracle:
    """A crop model that answers each crop with its GT person's keypoints (found by box), in crop pixels."""

    schema = COCO17
    crop_size = (48, 64)
    input_format = "tensor"
    pixel_convention = "index"

    def __init__(self, gt: dict) -> None:
        self.by_box = {}
        for a in gt["annotations"]:
            x, y, w, h = a["bbox"]
            self.by_box[(a["image_id"], x, y, x + w, y + h)] = np.array(a["keypoints"], float).reshape(17, 3)
        self.calls: list[tuple[int, bool, tuple]] = []

    def info(self) -> ModelInfo:
        return ModelInfo(weights=None, source="oracle", name="oracle", keypoint_score_kind="probability")

    def predict_crops(self, batch: CropBatch) -> CropOutput:
        self.calls.append((len(batch), batch.flipped, tuple(batch.images.shape)))
        kps = np.stack([self.by_box[(int(i), *map(float, b))] for i, b in zip(batch.image_ids, batch.boxes)])
        crop = apply_affines(batch.affines, kps[..., :2])
        scores = (kps[..., 2] > 0).astype(float)
        if batch.flipped:  # what a perfect model sees on the mirrored crop
            crop, scores = crop[:, FLIP], scores[:, FLIP]
            crop[..., 0] = self.crop_size[0] - (1.0 if self.pixel_convention == "index" else 0.0) - crop[..., 0]
        return CropOutput(keypoints=crop, keypoint_scores=scores)


def _two_images():
    gt = {"images": [{"id": 1, "width": 80, "height": 60}, {"id": 2, "width": 50, "height": 70}], "annotations": []}
    rng = np.random.default_rng(3)
    for ann_id, (image_id, box) in enumerate([(1, [5, 5, 20, 30]), (1, [40, 10, 25, 40]), (2, [10, 10, 30, 50])], 1):
        x, y, w, h = box
        pts = np.column_stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), np.full(17, 2)])
        pts[3, 2] = 0
        gt["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": box,
                                  "keypoints": pts.reshape(-1).tolist(), "num_keypoints": 16})
    images = [torch.rand(3, 60, 80), torch.rand(3, 70, 50)]
    return gt, images


@pytest.mark.parametrize("convention", ["index", "centre"])
@pytest.mark.parametrize("flip", [False, True])
def test_oracle_crops_give_back_the_gt_keypoints(flip: bool, convention: str) -> None:
    gt, images = _two_images()
    oracle = Oracle(gt)
    oracle.pixel_convention = convention
    model = TopDownModel(oracle, GroundTruthBoxes(gt), flip_test=flip, crop_batch_size=2)
    out = model.predict(images, image_ids=[1, 2])
    assert model.describe()["pixel_convention"] == convention and model.describe()["heatmap_refinement"] == "hrnet"
    # Three crops in batches of at most 2, across the two images (and the mirrored pass with the flip test).
    assert [c[:2] for c in oracle.calls] == ([(2, False), (2, True), (1, False), (1, True)] if flip
                                              else [(2, False), (1, False)])
    assert oracle.calls[0][2] == (2, 3, 64, 48)
    got = np.concatenate([p.keypoints for p in out])
    expected = np.stack([np.array(a["keypoints"]).reshape(17, 3)[:, :2] for a in gt["annotations"]])
    assert np.abs(got[..., :2] - expected).max() < 1e-9
    assert got[..., 2].tolist() == np.ones((3, 17)).tolist()
    assert [len(p) for p in out] == [2, 1] and out[0].scores.tolist() == [1.0, 1.0]
    assert out[1].boxes.tolist() == [[10, 10, 40, 60]]
    assert out[0].keypoint_scores[:, 3].tolist() == [0.0, 0.0]  # unlabelled keypoint 3: score 0, flip or not


def test_top_down_refuses_what_it_cannot_do() -> None:
    gt, images = _two_images()
    model = TopDownModel(Oracle(gt), GroundTruthBoxes(gt))
    with pytest.raises(KpbenchError, match="needs each image's id"):
        model.predict(images)
    no_flips = COCO17.__class__(name="pairs-free", keypoint_names=COCO17.keypoint_names, skeleton=(),
                                sigmas=tuple(COCO17.sigma_array))
    oracle = Oracle(gt)
    oracle.schema = no_flips
    with pytest.raises(KpbenchError, match=r"--flip-test: the keypoint set 'pairs-free' .* has no flip pairs"):
        TopDownModel(oracle, GroundTruthBoxes(gt), flip_test=True)
    bad = Oracle(gt)
    bad.crop_size = (48.0, 64)
    with pytest.raises(KpbenchError, match="crop_size must be \\(width, height\\), two positive integers"):
        TopDownModel(bad, GroundTruthBoxes(gt))


def test_heatmap_flip_is_averaged_in_heatmap_space() -> None:
    """A heatmap crop model through the composite: with the flip test, the keypoints are those decoded from the
    mean of the plain heatmaps and the unflipped mirrored ones, mapped back with the inverse affine."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("heatmap_adapter", Path(__file__).parents[1] / "examples" / "heatmap_adapter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net_model = module.HeatmapCropModel(seed=0)
    net_model.crop_size = (48, 64)
    gt, images = _two_images()
    plain = TopDownModel(net_model, GroundTruthBoxes(gt)).predict(images, image_ids=[1, 2])
    flipped = TopDownModel(net_model, GroundTruthBoxes(gt), flip_test=True).predict(images, image_ids=[1, 2])
    by_keypoints = TopDownModel(net_model, GroundTruthBoxes(gt), flip_test=True, flip_space="keypoints").predict(
        images, image_ids=[1, 2])
    # The reference, computed here from the network directly, on the same batch of 3 crops (a convolution's last
    # bits may depend on the batch size, and a random network's heatmaps have near-ties).
    per_image = [np.array([[5, 5, 25, 35], [40, 10, 65, 50]], float), np.array([[10, 10, 40, 60]], float)]
    affines = [crop_affines(crop_regions(b, (48, 64)), (48, 64)) for b in per_image]
    crops = torch.cat([warp_crops(im, a, (48, 64)) for im, a in zip(images, affines)])
    boxes, affines = np.concatenate(per_image), np.concatenate(affines)
    ids = np.array([1, 1, 2])
    with torch.no_grad():
        a = net_model.predict_crops(CropBatch(crops, ids, boxes, affines)).heatmaps
        b = net_model.predict_crops(CropBatch(crops.flip(-1), ids, boxes, affines, True)).heatmaps
    for heatmaps, got in ((a, plain), ((a + unflip_heatmaps(b, FLIP)) / 2, flipped)):
        points, scores = decode_heatmaps(heatmaps, (48, 64))
        kps = np.concatenate([p.keypoints for p in got])
        assert np.abs(kps[..., :2] - apply_affines(invert_affines(affines), points)).max() < 1e-9
        assert np.array_equal(np.concatenate([p.keypoint_scores for p in got]), scores)
    kp_a, sc_a = decode_heatmaps(a, (48, 64))
    kp_b, sc_b = decode_heatmaps(b, (48, 64))
    mean_kp = apply_affines(invert_affines(affines), (kp_a + unflip_keypoints(kp_b, 48, FLIP)) / 2)
    kps = np.concatenate([p.keypoints for p in by_keypoints])
    assert np.abs(kps[..., :2] - mean_kp).max() < 1e-9
    assert np.allclose(np.concatenate([p.keypoint_scores for p in by_keypoints]), (sc_a + sc_b[:, FLIP]) / 2, rtol=0,
                       atol=1e-15)
    assert not np.allclose(plain[0].keypoints, flipped[0].keypoints)  # the flip test changes the answer


@requires_shared
def test_yolo_pose_as_the_source_gives_its_person_boxes() -> None:
    """`--person-boxes yolo`: YOLO11n-pose's own boxes and scores (real weights) on a real image, as its predict gives
    them, every one a person; recorded as a model source."""
    pytest.importorskip("ultralytics")
    from kpbench.data.coco import read_image_rgb
    from kpbench.engine.topdown import TopDownRequest, build_source

    source = build_source(TopDownRequest(person_boxes="yolo"), 1, None)
    calls = []
    predict = source.model.predict
    source.model.predict = lambda images: calls.append(predict(images)) or calls[-1]
    image = read_image_rgb(COCO_SAMPLE / "val2017" / "000000000785.jpg")
    with torch.inference_mode():
        (found,) = source.boxes([785], [image])
    ((expected,),) = calls
    boxes, scores = np.asarray(expected.boxes, dtype=np.float64), np.asarray(expected.scores, dtype=np.float64)
    assert len(found) == len(boxes) >= 1  # the skier
    assert np.array_equal(found.boxes, boxes) and np.array_equal(found.scores, scores)
    described = source.describe()
    assert described["kind"] == "model" and described["spec"] == "yolo"


class _FixedHeatmaps:
    """A crop model that answers every crop with the same heatmaps (M copies)."""

    schema = COCO17
    crop_size = (48, 64)

    def __init__(self, heatmaps: np.ndarray) -> None:
        self.heatmaps = heatmaps

    def info(self) -> ModelInfo:
        return ModelInfo(weights=None, source="test", name="fixed-heatmaps", keypoint_score_kind="probability")

    def predict_crops(self, batch: CropBatch) -> CropOutput:
        return CropOutput(heatmaps=torch.from_numpy(np.repeat(self.heatmaps[None], len(batch), axis=0)))


def test_heatmap_keypoints_in_the_image_are_hrnets_get_final_preds() -> None:
    """The whole path, box to image keypoints, against HRNet written out: _box2cs (centre, aspect fix, x 1.25), then
    get_final_preds, whose transform_preds maps heatmap point p to centre - size / 2 + p * size / heatmap size."""
    rng = np.random.default_rng(5)
    heatmaps = rng.uniform(0, 1, (17, 16, 12)).astype(np.float32)
    gt, images = _two_images()
    out = TopDownModel(_FixedHeatmaps(heatmaps), GroundTruthBoxes(gt)).predict(images, image_ids=[1, 2])
    for pred, boxes in zip(out, ([[5, 5, 20, 30], [40, 10, 25, 40]], [[10, 10, 30, 50]])):
        for row, (x, y, w, h) in enumerate(boxes):
            centre = np.array([x + w * 0.5, y + h * 0.5])
            if w > 0.75 * h:
                h = w / 0.75
            else:
                w = h * 0.75
            size = np.array([w, h]) * 1.25
            coords, maxvals = _hrnet_decode_by_hand(heatmaps[None], 1.0, 1.0)
            expected = centre - size / 2 + coords[0] * size / np.array([12, 16])
            assert np.abs(pred.keypoints[row, :, :2] - expected).max() < 1e-9
            assert pred.keypoint_scores[row].tolist() == maxvals[0].tolist()


def test_a_box_of_no_area_is_refused_naming_the_image_and_the_source() -> None:
    class Boxes:
        needs_images = False

        def boxes(self, image_ids, images=None):
            return [PersonBoxes(np.array([[0.0, 0, 10, 10]]), np.array([0.9])),
                    PersonBoxes(np.array([[1.0, 2, 30, 40], [7.0, 8, 7, 8]]), np.array([0.8, 0.7]))]

        def describe(self):
            return {"kind": "file", "spec": "dets.json", "protocol": "detections"}

    gt, images = _two_images()
    model = TopDownModel(Oracle(gt), Boxes())
    with pytest.raises(KpbenchError, match=r"^image 2: person box 1 \[7\.0, 8\.0, 7\.0, 8\.0\] \(xyxy\) from the "
                                           r"person-box source dets\.json has no area"):
        model.predict(images, image_ids=[1, 2])


def test_oks_nms_of_a_top_down_model_uses_the_crop_regions_areas() -> None:
    """HRNet's validate keeps area = prod(scale * 200), the aspect-fixed, padded region, for oks_nms (mmpose:
    prod(bbox_scales)). Two tall, thin boxes 3 px apart: their OKS is above 0.9 with the regions' areas (one is
    removed) and below it with the boxes' (both would stay); the result equals the brute-force NMS on region areas."""
    from kpbench.engine.postprocess import PostProcessedModel

    boxes = np.array([[10.0, 20, 30, 220], [13.0, 20, 33, 220], [100.0, 30, 160, 90]])

    class Boxes:
        needs_images = False

        def boxes(self, image_ids, images=None):
            return [PersonBoxes(boxes, np.array([0.9, 0.8, 0.7]))]

        def describe(self):
            return {"kind": "test", "spec": "test", "protocol": "test boxes"}

    class Template:
        schema = COCO17
        crop_size = (48, 64)

        def info(self):
            return ModelInfo(weights=None, source="test", name="template", keypoint_score_kind="probability")

        def predict_crops(self, batch):
            grid = np.stack([np.linspace(14, 34, 17), np.linspace(8, 56, 17)], axis=1)
            return CropOutput(keypoints=np.broadcast_to(grid, (len(batch), 17, 2)).copy(),
                              keypoint_scores=np.full((len(batch), 17), 0.9))

    composite = TopDownModel(Template(), Boxes())
    (raw,) = composite.predict([torch.rand(3, 240, 200)], image_ids=[1])
    regions = crop_regions(boxes, (48, 64))
    region_areas = regions[:, 2] * regions[:, 3]
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    kps, sigmas = raw.keypoints, COCO17.sigma_array
    assert _brute_oks(kps[0], kps[1], *region_areas[:2], sigmas) > 0.9 > _brute_oks(kps[0], kps[1], *(widths * heights)[:2], sigmas)
    model = PostProcessedModel(composite, PostProcessSettings(nms="oks", nms_thresh=0.9))
    (out,) = model.predict([torch.rand(3, 240, 200)], image_ids=[1])
    keep = _brute_nms(raw.scores, kps, region_areas, sigmas, 0.9)
    assert keep == [0, 2] and out.scores.tolist() == raw.scores[keep].tolist()
    assert out.boxes.tolist() == boxes[keep].tolist()
    assert model.info().extra["postprocess"]["nms_area"] == "crop region"
    assert composite.describe()["nms_area"].startswith("crop region")
    # A whole-image model's OKS-NMS keeps its boxes' areas, and says so.
    assert PostProcessedModel(_Detector(), PostProcessSettings(nms="oks")).info().extra["postprocess"]["nms_area"] == "person box"
