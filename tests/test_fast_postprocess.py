"""The fast keypoint post-processing (kpbench.models.keypointrcnn_postprocess) against torchvision's: equal bit for
bit (torch.equal, same dtype, shape and strides) on random heatmaps and boxes of every kind, on ties, NaN and
other dtypes, in a whole Keypoint R-CNN (random weights) with and without the patch, on a real COCO image; the
patch is undone on exit, also after an error; and it reads the box sizes in one host copy whatever the number
of RoIs, where torchvision does two per RoI."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torchvision.models.detection import roi_heads
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints, keypointrcnn_inference

from kpbench.models import keypointrcnn_postprocess as kpp
from kpbench.models.keypointrcnn import FAST_POSTPROCESS, KeypointRCNNModel, build_model
from kpbench.models.keypointrcnn_postprocess import (
    fast_heatmaps_to_keypoints,
    fast_keypointrcnn_inference,
    patched_keypoint_postprocess,
)
from tests.kpdata import COCO_SAMPLE, requires_shared

K, S = 17, 56  # COCO keypoints, torchvision's heatmap size


def make_rois(n: int, seed: int, dtype: torch.dtype = torch.float32, max_side: float = 160.0) -> torch.Tensor:
    """n boxes (x1, y1, x2, y2) with fractional corners (some negative), cycling through the kinds that matter:
    tiny (under 1 px: the clamp to 1), degenerate (x2 < x1), ordinary, large (over 64 x 64 px: the two-stage
    arg-max), pairs of equal boxes and boxes of different sizes that ceil to the same map size (one batch)."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.rand(n, generator=g, dtype=torch.float64) * 500 - 20
    y1 = torch.rand(n, generator=g, dtype=torch.float64) * 400 - 20
    w = 1 + torch.rand(n, generator=g, dtype=torch.float64) * (max_side - 1)
    h = 1 + torch.rand(n, generator=g, dtype=torch.float64) * (max_side - 1)
    for i in range(n):
        kind = i % 7
        if kind == 0:
            w[i], h[i] = w[i] / max_side, h[i] / max_side  # under 1 px
        elif kind == 1:
            w[i] = -w[i] / 10  # x2 < x1
        elif kind == 2 and i >= 2:
            w[i], h[i] = w[i - 1], h[i - 1]  # the same size as the previous box, elsewhere
        elif kind == 3:
            w[i], h[i] = 3 * max_side - 0.25, 2 * max_side + 0.5  # large
        elif kind == 4 and i >= 1:
            w[i], h[i] = math.floor(w[i - 1]) + 0.1, math.floor(h[i - 1]) + 0.7  # another size, the same ceil
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1).to(dtype)


def make_maps(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return (torch.randn(n, K, S, S, generator=g, dtype=torch.float64) * 3).to(dtype)


def assert_same(expected: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor]) -> None:
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype and g.shape == e.shape and g.device == e.device and g.stride() == e.stride()
        assert torch.equal(g, e), (g - e).abs().max()


def test_same_as_torchvision_on_random_maps() -> None:
    """float32 maps, 0 to 100 RoIs of every kind, several seeds."""
    for seed in range(3):
        for n in (0, 1, 2, 7, 50, 100):
            maps, rois = make_maps(n, seed), make_rois(n, seed, max_side=120.0 if n == 100 else 160.0)
            assert_same(heatmaps_to_keypoints(maps, rois), fast_heatmaps_to_keypoints(maps, rois))


def test_per_size_division_same_as_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-size division (what a GPU and reduced-precision boxes take) is exact too, checked here on the CPU
    by forcing it for float32 boxes."""
    monkeypatch.setattr(kpp, "_vector_division_is_exact", lambda rois: False)
    for n in (1, 7, 50):
        maps, rois = make_maps(n, 20 + n), make_rois(n, 20 + n)
        assert_same(heatmaps_to_keypoints(maps, rois), fast_heatmaps_to_keypoints(maps, rois))


def test_empty_input_like_torchvision() -> None:
    maps, rois = torch.zeros(0, K, S, S), torch.zeros(0, 4)
    expected, got = heatmaps_to_keypoints(maps, rois), fast_heatmaps_to_keypoints(maps, rois)
    assert_same(expected, got)
    assert got[0].shape == (0, K, 3) and got[1].shape == (0, K)


def test_outputs_are_torchvisions_layout() -> None:
    """(x, y, 1) float32 per keypoint, the score the map's value at the arg-max pixel: known numbers."""
    maps = torch.zeros(1, K, S, S)
    rois = torch.tensor([[10.0, 20.0, 66.0, 76.0]])  # 56 x 56: the upsampling is the identity
    for k in range(K):
        maps[0, k, k + 1, 2 * k] = 5.0 + k  # row k + 1, column 2k
    keypoints, scores = fast_heatmaps_to_keypoints(maps, rois)
    expected_x = torch.tensor([10.0 + 2 * k + 0.5 for k in range(K)])
    expected_y = torch.tensor([20.0 + k + 1 + 0.5 for k in range(K)])
    assert torch.equal(keypoints[0, :, 0], expected_x) and torch.equal(keypoints[0, :, 1], expected_y)
    assert torch.equal(keypoints[0, :, 2], torch.ones(K))
    assert torch.equal(scores[0], torch.tensor([5.0 + k for k in range(K)]))


@pytest.mark.parametrize(
    ("maps_dtype", "rois_dtype"),
    [
        (torch.float64, torch.float64), (torch.float64, torch.float32), (torch.float32, torch.float64),
        (torch.float32, torch.float16), (torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32),
    ],
)  # fmt: skip
def test_same_as_torchvision_in_other_dtypes(maps_dtype: torch.dtype, rois_dtype: torch.dtype) -> None:
    """Outputs are float32 whatever the inputs; a float64 box is rounded to float32 where torchvision does, and
    reduced-precision boxes take the per-size division (a CPU divides by a scalar as by its reciprocal there)."""
    n = 21
    maps, rois = make_maps(n, 5, maps_dtype), make_rois(n, 5, rois_dtype)
    assert_same(heatmaps_to_keypoints(maps, rois), fast_heatmaps_to_keypoints(maps, rois))


@pytest.mark.parametrize("kind", ["constant", "quantised", "plateaus", "nan", "infinities", "signed_zeros"])
def test_argmax_ties_and_specials_like_torchvision(kind: str) -> None:
    """Exact ties go to the first pixel in row-major order, NaN counts as the maximum, -0.0 equals 0.0: in the
    plain and the two-stage arg-max (the large boxes)."""
    n = 14
    g = torch.Generator().manual_seed(7)
    maps = make_maps(n, 7)
    if kind == "constant":
        maps = torch.full_like(maps, 0.25)
    elif kind == "quantised":  # many equal maxima in every upsampled map
        maps = torch.randint(0, 2, maps.shape, generator=g).float()
    elif kind == "plateaus":  # the maximum on a whole block of rows: ties across rows
        maps = torch.zeros_like(maps)
        maps[:, :, 20:40, 10:30] = 1.0
    elif kind == "nan":
        maps[torch.rand(maps.shape, generator=g) < 2e-3] = float("nan")
        maps[3] = float("nan")
    elif kind == "infinities":
        maps[torch.rand(maps.shape, generator=g) < 1e-3] = float("inf")
        maps[4] = float("-inf")
    elif kind == "signed_zeros":
        maps = torch.where(torch.rand(maps.shape, generator=g) < 0.5, torch.tensor(-0.0), torch.tensor(0.0))
        maps[:, :, :3] = -1.0
    rois = make_rois(n, 7)
    expected, got = heatmaps_to_keypoints(maps, rois), fast_heatmaps_to_keypoints(maps, rois)
    # The scores compared by their bits: NaN != NaN, and -0.0 == 0.0 would hide a sign.
    assert_same((expected[0], expected[1].view(torch.int32)), (got[0], got[1].view(torch.int32)))
    if kind == "nan":
        assert got[1][3].isnan().all()


@pytest.mark.parametrize("kind", ["ties", "nan", "signed_zeros", "random"])
def test_first_max_two_stage_is_the_flat_argmax(kind: str) -> None:
    """`_first_max` on large maps (the row-by-row search) is flat argmax and the value there, bit for bit."""
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(12, 80, 70, generator=g)
    if kind == "ties":
        maps = torch.randint(0, 3, maps.shape, generator=g).float()
        maps[1] = 2.0
        maps[2, 40:, :] = 9.0
        maps[3, :, 69] = 9.0  # the last column of every row
    elif kind == "nan":
        maps[torch.rand(maps.shape, generator=g) < 1e-3] = float("nan")
        maps[5, 79, 69] = float("nan")  # the last pixel only
    elif kind == "signed_zeros":
        maps = torch.where(torch.rand(maps.shape, generator=g) < 0.5, torch.tensor(-0.0), torch.tensor(0.0))
    assert kpp._TWO_STAGE_MIN_PIXELS <= 80 * 70
    pos, values = kpp._first_max(maps)
    flat = maps.reshape(12, -1)
    expected = flat.argmax(dim=1)
    assert torch.equal(pos, expected)
    assert torch.equal(values.view(torch.int32), flat.gather(1, expected[:, None])[:, 0].view(torch.int32))


def test_same_as_torchvision_on_strided_maps() -> None:
    """channels-last and non-contiguous logits (as a channels-last model may give them)."""
    n = 9
    rois = make_rois(n, 4)
    for maps in (make_maps(n, 4).contiguous(memory_format=torch.channels_last), make_maps(n, 4).transpose(2, 3)):
        assert_same(heatmaps_to_keypoints(maps, rois), fast_heatmaps_to_keypoints(maps, rois))


def test_invalid_sizes_raise_like_torchvision() -> None:
    """A NaN or infinite box size fails as torchvision's int(x.item()) does."""
    maps = make_maps(3, 0)
    for bad, error in ((float("nan"), ValueError), (float("inf"), OverflowError)):
        rois = make_rois(3, 0)
        rois[1, 2] = bad
        for fn in (heatmaps_to_keypoints, fast_heatmaps_to_keypoints):
            with pytest.raises(error):
                fn(maps, rois)


def test_inference_drop_in_per_image() -> None:
    """fast_keypointrcnn_inference splits per image as torchvision's, an image without boxes included."""
    counts = [5, 0, 9, 1]
    boxes = [make_rois(c, 10 + i) for i, c in enumerate(counts)]
    x = make_maps(sum(counts), 10)
    expected, got = keypointrcnn_inference(x, boxes), fast_keypointrcnn_inference(x, boxes)
    assert len(got[0]) == len(got[1]) == len(counts)
    for e_list, g_list in zip(expected, got):
        for e, g in zip(e_list, g_list):
            assert g.shape == e.shape and torch.equal(g, e)
    assert fast_keypointrcnn_inference(torch.zeros(0, K, S, S), []) == ([], [])
    with pytest.raises(RuntimeError):  # more logits than boxes: torch's split error, as in torchvision
        fast_keypointrcnn_inference(make_maps(4, 0), [make_rois(3, 0)])


def _count_host_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the Tensor methods that copy values to the host (each a device sync on a GPU)."""
    counts: dict[str, int] = {}
    for name in ("item", "tolist", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, _name: str = name, _original: Callable = original, **kw: Any):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def test_one_host_read_per_call_whatever_the_number_of_rois(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision reads two sizes per RoI (.item()), 100 for 50 RoIs; the fast one reads all the sizes with
    one .tolist(), for 1 RoI as for 50."""
    small = {"maps": make_maps(1, 0), "rois": make_rois(1, 0, max_side=40.0)}
    large = {"maps": make_maps(50, 1), "rois": make_rois(50, 1, max_side=40.0)}
    counts = _count_host_reads(monkeypatch)
    heatmaps_to_keypoints(**large)
    assert counts == {"item": 100}
    for case in (small, large):
        counts.clear()
        fast_heatmaps_to_keypoints(**case)
        assert counts == {"tolist": 1}
    counts.clear()
    fast_keypointrcnn_inference(large["maps"], [large["rois"][:20], large["rois"][20:]])
    assert counts == {"tolist": 1}  # one for the whole batch, not one per image


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_same_as_torchvision_and_one_sync() -> None:
    """On a GPU: equal to torchvision bit for bit (the per-size division there), and one synchronisation per call
    (torch.cuda's sync debug mode warns on each), where torchvision syncs twice per RoI."""
    import warnings

    device = torch.device("cuda")
    results = {}
    for n in (10, 50):
        maps, rois = make_maps(n, n).to(device), make_rois(n, n).to(device)
        assert_same(heatmaps_to_keypoints(maps, rois), fast_heatmaps_to_keypoints(maps, rois))
        for fn in (heatmaps_to_keypoints, fast_heatmaps_to_keypoints):
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    fn(maps, rois)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            results[fn.__name__, n] = sum("synchroniz" in str(w.message) for w in caught)
    assert results["fast_heatmaps_to_keypoints", 10] == results["fast_heatmaps_to_keypoints", 50] == 1
    assert results["heatmaps_to_keypoints", 50] >= 100


# ---------------------------------------------------------------------------------------------------------
# The whole model


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    """A random Keypoint R-CNN (build_model's, seeded) that keeps 100 detections per image down to score 0, with
    a one-layer keypoint head: torchvision's eight 512-channel layers cost seconds per image for 100 RoIs on a
    CPU, and the post-processing sees the same (N, 17, 56, 56) logits either way."""
    from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor

    model, _ = build_model("none", min_size=160, max_size=267, box_score_thresh=0.0, seed=0)
    torch.manual_seed(1)
    model.roi_heads.keypoint_head = KeypointRCNNHeads(256, [32])
    model.roi_heads.keypoint_predictor = KeypointRCNNPredictor(32, K)
    model.rpn._post_nms_top_n["testing"] = 300
    return model.eval()


def _run(model: torch.nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    with torch.no_grad():
        return model(images)


def _assert_same_outputs(expected: list[dict[str, torch.Tensor]], got: list[dict[str, torch.Tensor]]) -> None:
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert set(g) == set(e)
        for key in e:
            assert torch.equal(g[key], e[key]), key


def test_whole_model_same_outputs_and_patch_undone(small_model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 150, 200, generator=g), torch.rand(3, 190, 140, generator=g)]
    original = roi_heads.keypointrcnn_inference
    expected = _run(small_model, images)
    assert [len(o["boxes"]) for o in expected] == [100, 100]
    sizes = torch.cat([o["boxes"][:, 2:] - o["boxes"][:, :2] for o in expected])
    assert sizes.min() < 1  # boxes under a pixel (the clamp) are among them
    calls: list[int] = []

    def spy(x: torch.Tensor, boxes: list[torch.Tensor]) -> Any:
        calls.append(len(boxes))
        return fast_keypointrcnn_inference(x, boxes)

    with patched_keypoint_postprocess():
        assert roi_heads.keypointrcnn_inference is fast_keypointrcnn_inference
        got = _run(small_model, images)
        roi_heads.keypointrcnn_inference = spy  # the name RoIHeads.forward looks up at each call
        _run(small_model, images[:1])
    assert calls == [1]
    assert roi_heads.keypointrcnn_inference is original  # restored, even over the spy put in inside
    _assert_same_outputs(expected, got)

    with pytest.raises(ZeroDivisionError), patched_keypoint_postprocess():
        _ = 1 / 0
    assert roi_heads.keypointrcnn_inference is original


def test_adapter_speed_variant(small_model: torch.nn.Module) -> None:
    """KeypointRCNNModel.speed_variant("fast_postprocess") patches while entered; a module without torchvision's
    keypoint RoI heads has no such variant."""
    from kpbench.models.base import ModelInfo

    model = KeypointRCNNModel.from_module(small_model, ModelInfo(weights="none", source="random", seed=0))
    original = roi_heads.keypointrcnn_inference
    state = model.speed_variant(FAST_POSTPROCESS)
    assert FAST_POSTPROCESS == "fast_postprocess" and state is not None
    with state:
        assert roi_heads.keypointrcnn_inference is fast_keypointrcnn_inference
    assert roi_heads.keypointrcnn_inference is original
    assert KeypointRCNNModel.from_module(torch.nn.Linear(2, 2), model.info()).speed_variant(FAST_POSTPROCESS) is None


@requires_shared
def test_real_image_same_outputs(small_model: torch.nn.Module) -> None:
    from kpbench.data.coco import read_image_rgb

    path = COCO_SAMPLE / "val2017" / "000000000785.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    images = [read_image_rgb(path)]
    expected = _run(small_model, images)
    assert len(expected[0]["boxes"]) == 100
    with patched_keypoint_postprocess():
        got = _run(small_model, images)
    _assert_same_outputs(expected, got)
