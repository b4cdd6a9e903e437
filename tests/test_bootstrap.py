"""Bootstrap intervals on COCO stats and the paired comparison of two evaluations: a replicate over the images
themselves is COCOeval's own numbers, replicates are reproducible from the seed, and the interval holds the AP."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from kpdata import pycocotools_eval

from kpbench.analysis.bootstrap import _by_image, _replicate_stats, bootstrap_intervals, compare_results
from kpbench.core.errors import KpbenchError
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate
from kpbench.evaluation.settings import EvalSettings


@pytest.fixture(scope="module")
def scene() -> tuple[dict, list]:
    return make_synthetic_coco(num_images=30, seed=11)


def _pycocotools_stats(gt: dict, results: list) -> list[float]:
    return [float(s) for s in pycocotools_eval(gt, results).stats]


def test_a_replicate_of_each_image_once_is_cocoeval(scene) -> None:
    gt, results = scene
    result = evaluate(gt, results)
    ids = np.asarray(result.params.image_ids)
    assert _replicate_stats(result, _by_image(result, "test"), ids) == result.stats_list()


def test_a_replicate_with_repeated_images_is_cocoeval_on_the_repeated_dataset(scene) -> None:
    """Images drawn twice count twice: the same as pycocotools on a GT and results with those images copied."""
    gt, results = scene
    result = evaluate(gt, results)
    ids = sorted(result.params.image_ids)
    drawn = np.asarray(sorted([ids[0], ids[0], ids[3], ids[5], ids[5], ids[5], ids[9]]))
    ours = _replicate_stats(result, _by_image(result, "test"), drawn)
    # The same multiset built as data: each copy a new image id, annotations and results copied with it.
    images, anns, res = [], [], []
    for copy_number, image_id in enumerate(drawn.tolist()):
        new_id = 1_000_000 + copy_number
        images.append({**next(im for im in gt["images"] if im["id"] == image_id), "id": new_id})
        anns += [{**a, "id": len(anns) + i + 1, "image_id": new_id}
                 for i, a in enumerate(x for x in gt["annotations"] if x["image_id"] == image_id)]
        res += [{**r, "image_id": new_id} for r in results if r["image_id"] == image_id]
    expected = _pycocotools_stats({**gt, "images": images, "annotations": anns}, res)
    assert ours == expected


def test_intervals_are_reproducible_and_hold_the_ap(scene) -> None:
    gt, results = scene
    result = evaluate(gt, results)
    rows = bootstrap_intervals(result, replicates=50, seed=3)
    assert rows == bootstrap_intervals(result, replicates=50, seed=3)
    assert rows != bootstrap_intervals(result, replicates=50, seed=4)
    ap = rows[0]
    assert ap["stat"] == "AP" and ap["value"] == result.stats["AP"]
    assert ap["low"] <= ap["value"] <= ap["high"] and ap["low"] < ap["high"]


def test_paired_comparison_finds_a_real_difference_and_no_difference_with_itself(scene) -> None:
    gt, results = scene
    a = evaluate(gt, results)
    worse = copy.deepcopy(results)
    for r in worse[::2]:
        r["keypoints"] = [v + 8 if i % 3 != 2 else v for i, v in enumerate(r["keypoints"])]
    b = evaluate(gt, worse)
    same = compare_results(a, a, replicates=40, seed=0)
    assert [(r["delta"], r["low"], r["high"]) for r in same.rows[:1]] == [(0.0, 0.0, 0.0)]
    assert same.images == []
    diff = compare_results(a, b, replicates=40, seed=0)
    ap = diff.rows[0]
    assert ap["delta"] == b.stats["AP"] - a.stats["AP"] < 0
    assert ap["high"] < 0 and ap["significant"]
    assert diff.images and diff.images[0]["change"] >= diff.images[-1]["change"]


def test_bootstrap_refuses_what_it_cannot_resample(scene) -> None:
    gt, results = scene
    with pytest.raises(KpbenchError, match="evaluate with COCO's parameters"):
        bootstrap_intervals(evaluate(gt, results, settings=EvalSettings(max_dets=(5,))), replicates=2)
    with pytest.raises(KpbenchError, match="per-image matches"):
        bootstrap_intervals(evaluate(gt, results, backend="hotcoco"), replicates=2)
