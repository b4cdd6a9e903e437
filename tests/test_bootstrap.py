"""Bootstrap intervals on COCO stats and the paired comparison of two evaluations: a replicate over the images
themselves is COCOeval's own numbers, replicates are reproducible from the seed, and the interval holds the AP."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from kpdata import pycocotools_eval

from kpbench.analysis.bootstrap import (
    _by_image,
    _replicate_stats,
    bootstrap_intervals,
    bootstrap_samples,
    compare_results,
)
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


# --- issue 23, item 8: bad bootstrap requests are one line, and memory is estimated before it is allocated --------


def test_a_request_checks_its_bounds() -> None:
    from kpbench.analysis.bootstrap import BootstrapRequest, check_bootstrap

    for kwargs, message in (
        ({"seed": -1}, "--bootstrap-seed: must be between 0 and 2**63 - 1, got -1"),
        ({"seed": 2**63}, f"--bootstrap-seed: must be between 0 and 2**63 - 1, got {2**63}"),
        ({"replicates": 0}, "--bootstrap: needs at least 1 replicate, got 0"),
        ({"replicates": True}, "--bootstrap: must be a whole number, got True"),
        ({"replicates": 2.5}, "--bootstrap: must be a whole number, got 2.5"),
        ({"level": 1.0}, "level: must be in (0, 1), got 1.0"),
    ):
        with pytest.raises(KpbenchError) as info:
            BootstrapRequest(**kwargs)
        assert str(info.value) == message
    assert BootstrapRequest(10, 2**63 - 1).seed == 2**63 - 1
    assert check_bootstrap(None, 0) is None  # no bootstrap asked for
    with pytest.raises(KpbenchError, match="--bootstrap-seed"):
        check_bootstrap(None, -1)  # a seed is checked even so


def test_memory_is_estimated_and_refused_before_anything_is_allocated(scene, monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.analysis.bootstrap as bootstrap

    request = bootstrap.BootstrapRequest(1_000_000_000)
    # The draws (replicates x images, int64) and the stats of each evaluation (float64), plus 64 bytes a replicate.
    assert request.memory_bytes(35, 10) == 1_000_000_000 * (8 * 35 + 8 * 10 + 64)
    assert request.memory_bytes(35, 10, evaluations=2) == 1_000_000_000 * (8 * 35 + 16 * 10 + 64)
    with pytest.raises(KpbenchError) as info:
        request.check_memory(35, 10, available=16 * 2**30)
    assert str(info.value).startswith("--bootstrap 1000000000: 1,000,000,000 replicates of 35 images need about 395 "
                                      "GiB of memory, more than this machine has available (16 GiB); use fewer")
    bootstrap.BootstrapRequest(1000).check_memory(5000, 10, available=16 * 2**30)  # 43 MiB: fine
    with monkeypatch.context() as patch:
        patch.setattr(bootstrap, "available_memory", lambda: None)
        bootstrap.BootstrapRequest(10**30).check_memory(1, 1)  # the system does not say: no check

    gt, results = scene
    result = evaluate(gt, results)

    def never(*args: object) -> None:
        raise AssertionError("the draws were allocated")

    monkeypatch.setattr(bootstrap, "available_memory", lambda: 2**30)
    monkeypatch.setattr(bootstrap, "draw_images", never)
    for call in (lambda: bootstrap.bootstrap_intervals(result, replicates=10**8),
                 lambda: bootstrap.compare_results(result, result, replicates=10**8)):
        with pytest.raises(KpbenchError, match=r"^--bootstrap 100000000: 100,000,000 replicates of 30 images need "):
            call()


@pytest.mark.parametrize("args, message", [
    (("--bootstrap", "5", "--bootstrap-seed", "-1"), "error: --bootstrap-seed: must be between 0 and 2**63 - 1, got -1"),
    (("--bootstrap", "99999999999999999999999"),
     "error: --bootstrap 99999999999999999999999: 99,999,999,999,999,999,999,999 replicates of 35 images need about "),
    (("--bootstrap", "1000000000"), "error: --bootstrap 1000000000: 1,000,000,000 replicates of 35 images need about "
                                    "395 GiB of memory, more than this machine has available (64 GiB)"),
])
def test_evaluate_bootstrap_mistakes_are_one_line(args, message, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a numpy traceback each (a negative seed, a dimension too large), or a 261 GiB allocation."""
    from kpdata import COCO_SAMPLE, assert_one_line_error, requires_shared

    if not COCO_SAMPLE.is_dir():
        pytest.skip(requires_shared.kwargs["reason"])
    import kpbench.analysis.bootstrap as bootstrap

    monkeypatch.setattr(bootstrap, "available_memory", lambda: 64 * 2**30)  # the same answer on any machine
    gt = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
    results = Path(__file__).parent / "fixtures" / "yolo11n_pose_coco_sample_results.json"
    assert_one_line_error(run_cli("evaluate", gt, results, *args), message)


def test_compare_and_analyze_bootstrap_mistakes_are_one_line(run_cli, tmp_path: Path) -> None:
    from kpdata import assert_one_line_error

    run = tmp_path / "not-scored"  # the bounds are checked before any run is read
    assert_one_line_error(run_cli("compare", run, run, "--bootstrap-seed", "-1"),
                          "error: --bootstrap-seed: must be between 0 and 2**63 - 1, got -1")
    assert_one_line_error(run_cli("compare", run, run, "--bootstrap", "0"),
                          "error: --bootstrap: needs at least 1 replicate, got 0")
    assert_one_line_error(run_cli("analyze", run, "--bootstrap", "3", "--bootstrap-seed", "-5"),
                          "error: --bootstrap-seed: must be between 0 and 2**63 - 1, got -5")


def test_analyze_refuses_an_impossible_bootstrap_before_any_analysis(tmp_path: Path, run_cli,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: `kpbench analyze --bootstrap N` ran the whole error analysis, then found that N replicates could not
    fit. Now the request is checked as soon as the GT gives the number of images: before the results are read, and
    for a run directory before its store is read."""
    from kpdata import assert_one_line_error, make_run_dir

    import kpbench.analysis.bootstrap as bootstrap
    import kpbench.analysis.errors.analyze as analyze
    import kpbench.evaluation.runeval as runeval

    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("the analysis started")

    run = make_run_dir(tmp_path).path
    monkeypatch.setattr(bootstrap, "available_memory", lambda: 64 * 2**30)  # the same answer on any machine
    monkeypatch.setattr(analyze, "_checked_results", reached)
    monkeypatch.setattr(analyze, "_analyze", reached)
    monkeypatch.setattr(runeval, "finished_run_arrays", reached)
    message = ("error: --bootstrap 1000000000: 1,000,000,000 replicates of 3 images need about 156 GiB of memory, "
               "more than this machine has available (64 GiB)")
    assert_one_line_error(run_cli("analyze", run, "--bootstrap", "1000000000"), message)
    assert_one_line_error(run_cli("analyze", run / "ground_truth.json", run / "keypoints_results.json",
                                  "--bootstrap", "1000000000"), message)
    with pytest.raises(KpbenchError, match=r"^--bootstrap 1000000000: 1,000,000,000 replicates of 3 images"):
        analyze.analyze_run_errors(run, bootstrap=10**9)


# --- the bootstrap reads the evaluator's match arrays as they are ----------------------------------------------


@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_replicates_read_the_match_arrays_with_the_numbers_of_evalimgs(scene, iou_type: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every replicate gathered pycocotools-style ImageEval objects built from the vectorized evaluator's
    arrays. Now the arrays are read directly (no ImageEval is built), with every replicate, interval and compared
    image equal (==) to the evalImgs route, which pycocotools' own matches still take."""
    from kpbench.evaluation.vectorized import MatchTable

    gt, results = scene
    if iou_type == "bbox":
        results = [{**r, "bbox": [min(r["keypoints"][0::3]), min(r["keypoints"][1::3]),
                                  max(r["keypoints"][0::3]) - min(r["keypoints"][0::3]) + 2,
                                  max(r["keypoints"][1::3]) - min(r["keypoints"][1::3]) + 2]} for r in results]
    worse = copy.deepcopy(results)
    for r in worse[::2]:
        r["keypoints"] = [v + 8 if i % 3 != 2 else v for i, v in enumerate(r["keypoints"])]
        if iou_type == "bbox":
            r["bbox"] = [r["bbox"][0] + r["bbox"][2] / 2, *r["bbox"][1:]]  # IoU 1/3 with its own box
    reference = [evaluate(copy.deepcopy(gt), copy.deepcopy(r), iou_type=iou_type, backend="pycocotools")
                 for r in (results, worse)]
    expected = (bootstrap_samples(reference[0], 40, 5), compare_results(*reference, replicates=25, seed=2))

    arrays = [evaluate(copy.deepcopy(gt), copy.deepcopy(r), iou_type=iou_type) for r in (results, worse)]

    def no_image_evals(self: object) -> None:
        raise AssertionError("ImageEval entries were built")

    monkeypatch.setattr(MatchTable, "iter_image_evals", no_image_evals)
    assert arrays[0].table_matches() is not None
    samples = bootstrap_samples(arrays[0], 40, 5)
    assert np.array_equal(samples, expected[0]) and samples.shape == (40, len(arrays[0].stats))
    comparison = compare_results(*arrays, replicates=25, seed=2)
    assert comparison.rows == expected[1].rows and comparison.images == expected[1].images
    assert comparison.images  # some images differ
