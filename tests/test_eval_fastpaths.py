"""The default backend's fast paths give what their slow paths give, exactly (issue 24).

- Matching: units where no detection qualifies for two GTs are matched in closed form
  (`vectorized._match_one_candidate`); the others by COCOeval's scan. Forcing every unit through the scan must not
  change one array.
- OKS is computed only for pairs that can reach the lowest threshold (`CocoEvaluator._within_reach`): the pairs
  it leaves out have OKS below it, and computing every pair changes no array.
- Parsing: keypoint lists are read from their JSON text (`jsonnumbers.number_lists`) into the doubles json's
  float() gives, bit for bit, on awkward, random and near-halfway numbers, with the same refusals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_UP, Decimal, localcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kpdata import COCO_SAMPLE, XTCOCO, jittered_detections, load, requires_shared
from test_fastcheck import CASES, ArrayChecker
from test_vectorized_backend import box_results, box_scene

from kpbench.core.schema import COCO17
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation import fastparse, jsonnumbers, vectorized
from kpbench.evaluation.arrays import detections_from_records, ground_truth_arrays, keypoint_extents
from kpbench.evaluation.settings import EvalSettings
from kpbench.evaluation.vectorized import CocoEvaluator, VectorizedResult

# --- matching in closed form ------------------------------------------------------------------------------------


def evaluate_arrays(gt: dict, results: list[dict], iou_type: str, settings: EvalSettings | None = None
                    ) -> VectorizedResult:
    k = COCO17.num_keypoints if iou_type == "keypoints" else None
    detections = detections_from_records(results, iou_type, k or 0)
    evaluator = CocoEvaluator(ground_truth_arrays(gt, "gt", k), iou_type,
                              COCO17.sigma_array if iou_type == "keypoints" else None, settings)
    geometry = detections.keypoints if iou_type == "keypoints" else detections.boxes
    return evaluator.evaluate(detections.image_ids, detections.category_ids, detections.scores, geometry)


def assert_same_result(a: VectorizedResult, b: VectorizedResult) -> None:
    assert a.stats == b.stats
    for name in ("precision", "recall", "scores", "dt_matches", "dt_ignore", "gt_matches", "dt_kept"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("dt_index", "dt_unit", "dt_rank", "dt_scores", "dt_gt", "dt_ignore", "gt_ids", "gt_unit",
                 "gt_ignore", "gt_dt"):
        assert np.array_equal(getattr(a.matches, name), getattr(b.matches, name)), name


def with_and_without_closed_form(monkeypatch: pytest.MonkeyPatch, gt: dict, results: list[dict], iou_type: str,
                                 settings: EvalSettings | None = None, scans: bool = True
                                 ) -> tuple[VectorizedResult, VectorizedResult]:
    """The evaluation as it runs (some units in closed form; with `scans`, some by the scan too), and with every
    unit scanned."""
    scan_counts: list[tuple[int, int]] = []
    choose = vectorized._units_to_scan
    monkeypatch.setattr(vectorized, "_match_units", None)  # numpy's matching (the compiled loop has no closed form)

    def counting(*args: Any) -> np.ndarray:
        scanned = choose(*args)
        scan_counts.append((int(scanned.sum()), len(scanned)))
        return scanned

    monkeypatch.setattr(vectorized, "_units_to_scan", counting)
    fast = evaluate_arrays(gt, results, iou_type, settings)
    scanned, units = scan_counts[-1]
    assert scanned < units and (scanned > 0) == scans
    monkeypatch.setattr(vectorized, "_units_to_scan", lambda sim, *rest: np.ones(rest[-2], dtype=bool))
    return fast, evaluate_arrays(gt, results, iou_type, settings)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_matching_is_the_scan_keypoints(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    gt, results = make_synthetic_coco(num_images=60, crowd_fraction=0.08, detections_per_person=5.0,
                                      score_decimals=1 + seed % 2, seed=seed)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, results, "keypoints"))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_closed_form_matching_is_the_scan_boxes(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Several categories, crowd regions holding many detections, zero-size boxes, score ties (few detections
    qualify for two GTs here: in one scene, none)."""
    gt, results = box_scene(seed)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, results, "bbox", scans=seed == 3))


@pytest.mark.parametrize("seed", [0, 1])
def test_closed_form_matching_is_the_scan_crowded_boxes(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    gt, results = make_synthetic_coco(num_images=60, crowd_fraction=0.1, detections_per_person=8.0, seed=seed)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, box_results(results, seed), "bbox"))


@pytest.mark.parametrize("settings", [
    EvalSettings(use_cats=False),
    EvalSettings(iou_thresholds=(0.1, 0.5, 1.0)),
    EvalSettings(max_dets=(1, 3, 5), area_ranges=(("all", 0.0, 1e10), ("tiny", 0.0, 100.0))),
], ids=["use-cats-0", "thresholds", "max-dets-areas"])
def test_closed_form_matching_is_the_scan_with_parameters(monkeypatch: pytest.MonkeyPatch,
                                                          settings: EvalSettings) -> None:
    gt, results = make_synthetic_coco(num_images=40, crowd_fraction=0.1, detections_per_person=4.0, seed=7)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, box_results(results), "bbox", settings))


@requires_shared
@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_closed_form_matching_is_the_scan_on_the_real_sample(monkeypatch: pytest.MonkeyPatch, iou_type: str) -> None:
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    results = jittered_detections(gt, seed=0)
    if iou_type == "bbox":
        results = box_results(results)
    assert_same_result(*with_and_without_closed_form(monkeypatch, gt, results, iou_type))


# --- OKS only where it can reach the lowest threshold ------------------------------------------------------------


@pytest.mark.parametrize("lowest", [0.5, 0.05, 0.9, 1 - 1e-10])
def test_pairs_out_of_reach_have_oks_below_the_lowest_threshold(lowest: float) -> None:
    gt, results = make_synthetic_coco(num_images=80, crowd_fraction=0.05, detections_per_person=4.0, seed=11)
    arrays = ground_truth_arrays(gt, "gt", 17)
    evaluator = CocoEvaluator(arrays, "keypoints", COCO17.sigma_array)
    keypoints = detections_from_records(results, "keypoints", 17).keypoints
    det = np.repeat(np.arange(len(keypoints)), len(evaluator.gt_ann_ids))
    gt_index = np.tile(np.arange(len(evaluator.gt_ann_ids)), len(keypoints))
    oks = evaluator._pair_oks(keypoints, det, gt_index)
    near = evaluator._within_reach(keypoint_extents(keypoints), det, gt_index, lowest)
    assert (oks[~near] < lowest).all()
    assert near.mean() < 0.8  # pairs of different images are mostly out of reach


@pytest.mark.parametrize("settings", [None, EvalSettings(iou_thresholds=(0.05, 0.5)), EvalSettings(use_cats=False)])
def test_evaluation_is_the_same_with_every_oks_computed(monkeypatch: pytest.MonkeyPatch,
                                                        settings: EvalSettings | None) -> None:
    gt, results = make_synthetic_coco(num_images=60, crowd_fraction=0.08, detections_per_person=5.0, seed=4)
    fast = evaluate_arrays(gt, results, "keypoints", settings)
    monkeypatch.setattr(CocoEvaluator, "_within_reach", lambda self, dt, det, *rest: np.ones(len(det), dtype=bool))
    assert_same_result(fast, evaluate_arrays(gt, results, "keypoints", settings))


# --- JSON number lists into arrays ------------------------------------------------------------------------------

AWKWARD = [
    "0", "-0", "0.0", "-0.0", "1", "-1", "0.1", "-0.1", "0.5", "1.0", "2", "574.79", "-13.02", "100.43",
    "1e308", "-1e308", "1.7976931348623157e308", "5e-324", "-5e-324", "4.9e-324", "2.2250738585072014e-308",
    "2.2250738585072011e-308", "1E5", "1e-05", "-2.5E+3", "1e0", "0e0", "-0e-0", "1E-7", "12.5e3",
    "9007199254740991", "9007199254740992", "9007199254740993", "9007199254740995", "-9007199254740993",
    "18014398509481986", "9223372036854775807", "9223372036854775808", "18446744073709551615",
    "18446744073709551616", "99999999999999999999", "123456789012345678901234567890", "1" + "0" * 300,
    "0.30000000000000004", "0.1000000000000000055511151231257827", "0.99999999999999994448884876874217297881",
    "367.7765197753906", "0.964827835559845", "0.06612017750740051", "0.0029959245584905148",
    "-0.0029959245584905148", "0.000000000000000001", "0.00000000000000000000001", "0.000000000000000000000001",
    "1.00000000000000000000001", "123456789012345678.5", "1234567890123456789", "9999999999999999999",
    "12345678.12345678", "1234567.1", "0.12345678", "99999999.99999999", "4503599627370497.5",
    "900719925474099.35", "9007199254740.9935", "179769313486231570.0", "3.0000000000000004",
]


def reference(texts: list[str], width: int) -> np.ndarray:
    """What the full checks hold: json's values (ints and floats) as float64."""
    return np.asarray([json.loads(t) for t in texts], dtype=np.float64).reshape(len(texts), width)


def assert_bits_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float64
    mismatch = a.view(np.int64) != b.view(np.int64)
    assert not mismatch.any(), list(zip(a[mismatch][:5].tolist(), b[mismatch][:5].tolist()))


def lists_of(tokens: list[str], width: int, separator: str = ", ") -> list[str]:
    return ["[" + separator.join(tokens[i:i + width]) + "]" for i in range(0, len(tokens), width)]


NumberLists = Callable[[list, int], "np.ndarray | None"]


@pytest.fixture(params=["compiled", "numpy"])
def number_lists(request: pytest.FixtureRequest) -> NumberLists:
    """Each of jsonnumbers' two readers: the compiled one (`_numbers.c`, where it was built) and numpy's."""
    if request.param == "numpy":
        return jsonnumbers.number_lists_numpy
    if not jsonnumbers.COMPILED:
        pytest.skip("kpbench.evaluation._numbers was not built (no C compiler at install)")
    return jsonnumbers.number_lists


def test_the_compiled_modules_are_built_where_a_compiler_is() -> None:
    """pip install builds the optional extensions when a C compiler is on PATH (CI has one): an install that
    silently fell back to numpy (the number reader, the matching) is a failed build, not a pass."""
    import shutil

    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler on PATH: the numpy reader is the one in use")
    assert jsonnumbers.COMPILED, "kpbench.evaluation._numbers is missing: re-run pip install -e ."
    assert vectorized._match_units is not None, "kpbench.evaluation._matching is missing: re-run pip install -e ."


@pytest.mark.parametrize("width", [1, 3, 51])
def test_number_lists_awkward_numbers(number_lists: NumberLists, width: int) -> None:
    tokens = AWKWARD * width
    texts = lists_of(tokens[: len(tokens) // width * width], width)
    assert_bits_equal(number_lists([t.encode() for t in texts], width), reference(texts, width))


def test_number_lists_signs_of_zero_follow_json(number_lists: NumberLists) -> None:
    """json reads "-0" as the int 0 (+0.0) and "-0.0" as the float -0.0."""
    values = number_lists([b"[-0, -0.0, 0, 0.0, -0e0]"], 5)
    assert values is not None
    assert np.signbit(values[0]).tolist() == [False, True, False, False, True]


def _near_halfway(rng: np.random.Generator, count: int) -> list[str]:
    """Decimals within a hair of the midpoint between two neighbouring doubles (where reading through a wider
    format then rounding would go wrong), with 15 to 19 significant digits and the '.' anywhere."""
    out = []
    for _ in range(count):
        d = float(rng.uniform(0.5, 2.0) * 10.0 ** int(rng.integers(-8, 14)))
        mid = (Decimal(d) + Decimal(float(np.nextafter(d, np.inf)))) / 2
        digits = int(rng.integers(15, 20))
        for rounding in (ROUND_DOWN, ROUND_UP):
            with localcontext() as ctx:
                ctx.prec, ctx.rounding = digits, rounding
                text = format(+mid, "f")
            out.append(text if "." in text else text + ".0")
    return out


def test_number_lists_random_and_near_halfway_numbers(number_lists: NumberLists) -> None:
    rng = np.random.default_rng(24)
    doubles = np.concatenate([rng.uniform(-700, 700, 3000), rng.random(2000) ** 5,
                              rng.random(1000).astype(np.float32).astype(np.float64) * 640,
                              np.round(rng.uniform(0, 640, 3000), 2), rng.integers(-10**6, 10**6, 1000)])
    tokens = [repr(float(v)) for v in doubles] + [str(int(v)) for v in rng.integers(2**53, 2**63, 500)]
    tokens += _near_halfway(rng, 3000)
    tokens += [f"{v:.{int(p)}f}" for v, p in zip(rng.uniform(0, 10**6, 2000), rng.integers(0, 19, 2000))]
    rng.shuffle(tokens)
    tokens = tokens[: len(tokens) // 17 * 17]
    texts = lists_of(tokens, 17, separator=",")
    assert_bits_equal(number_lists([t.encode() for t in texts], 17), reference(texts, 17))


def test_number_lists_every_json_number_form_and_whitespace(number_lists: NumberLists) -> None:
    """Exponents of both cases and signs, integers of every size, fractions with leading zeros, json.dumps'
    own reprs (1e-05, 1e+16), and JSON whitespace anywhere between the tokens: json's values, bit for bit."""
    rng = np.random.default_rng(66)
    tokens: list[str] = []
    for _ in range(6000):
        kind = int(rng.integers(0, 6))
        if kind == 0:
            tokens.append(repr(float(rng.standard_normal() * 10.0 ** int(rng.integers(-30, 30)))))
        elif kind == 1:
            mantissa = f"{rng.uniform(-10, 10):.{int(rng.integers(0, 18))}f}"
            tokens.append(f"{mantissa}{rng.choice(['e', 'E'])}{rng.choice(['', '+', '-'])}{int(rng.integers(0, 330))}")
        elif kind == 2:
            tokens.append(str(int(rng.integers(-(2**62), 2**62)) * int(rng.integers(1, 1000))))
        elif kind == 3:
            tokens.append(f"{'-' if rng.random() < 0.5 else ''}0.{'0' * int(rng.integers(0, 25))}{int(rng.integers(1, 10**9))}")
        elif kind == 4:
            tokens.append(repr(float(np.float32(rng.uniform(-2000, 2000)))))
        else:
            tokens.append(str(int(rng.integers(-(10**6), 10**6))))
    tokens = [t for t in tokens if np.isfinite(float(t))]
    tokens = tokens[: len(tokens) // 6 * 6]
    spaces = [" ", "\n", "\t", "\r\n  ", ""]
    texts = []
    for i in range(0, len(tokens), 6):
        pad = [spaces[int(j)] for j in rng.integers(0, len(spaces), 14)]
        body = ",".join(f"{pad[2 * j]}{t}{pad[2 * j + 1]}" for j, t in enumerate(tokens[i:i + 6]))
        texts.append(f"[{pad[12]}{body}{pad[13]}]" if rng.random() < 0.5 else f"[{body}]")
    assert_bits_equal(number_lists([t.encode() for t in texts], 6), reference(texts, 6))


def test_the_compiled_reader_reads_in_shares_on_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several threads the compiled reader parses a share of the lists each, the GIL released (tokens for
    Python's float() take it back): the same bits as one thread, and a bad list in any share refuses the whole."""
    if not jsonnumbers.COMPILED:
        pytest.skip("kpbench.evaluation._numbers was not built (no C compiler at install)")
    monkeypatch.setenv("KPBENCH_THREADS", "3")
    monkeypatch.setattr(jsonnumbers, "_MIN_SHARE", 16)
    shares: list[int] = []
    real = jsonnumbers._compiled
    monkeypatch.setattr(jsonnumbers, "_compiled", lambda texts, width, out: shares.append(len(texts)) or real(texts, width, out))
    tokens = AWKWARD * 6 + [repr(float(np.float32(v))) for v in np.random.default_rng(3).uniform(-900, 900, 3000)]
    tokens = tokens[: len(tokens) // 6 * 6]
    texts = lists_of(tokens, 6)
    assert_bits_equal(jsonnumbers.number_lists([t.encode() for t in texts], 6), reference(texts, 6))
    assert len(shares) == 3 and sum(shares) == len(texts)
    assert jsonnumbers.number_lists([t.encode() for t in texts[:-1]] + [b"[1, 2, 3, 4, 5, 1e999]"], 6) is None
    assert jsonnumbers.number_lists([b"[1, 2, 3, 4, 5, [6]]"] + [t.encode() for t in texts[1:]], 6) is None


def test_number_lists_one_word_path_random_short_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where every token has at most 8 characters after its sign (rounded coordinates, visibility flags), the
    one-word path reads them (the '.' removed, one division): json's values bit for bit, signs of zero included,
    with exponents among them left to Python."""
    from kpbench.evaluation import jsonnumbers

    calls = []
    one_word = jsonnumbers._one_word
    monkeypatch.setattr(jsonnumbers, "_one_word", lambda *args: calls.append(1) or one_word(*args))
    rng = np.random.default_rng(8)
    tokens: list[str] = []
    while len(tokens) < 60000:
        places = int(rng.integers(0, 8))
        value = rng.uniform(-(10.0 ** (8 - max(places, 1))), 10.0 ** (8 - max(places, 1)))
        token = f"{value:.{places}f}" if places else str(int(value))
        if len(token.lstrip("-")) <= 8:
            tokens.append(token)
    tokens += ["0", "-0", "0.0", "-0.0", "1.0", "-1e5", "1E-5", "2e+3", "-0e0", "99999999", "-9999999", "9.999999",
               "0.000001", "0.1", "12345678", "123456.5", "-0.000001"] * 17
    rng.shuffle(tokens)
    tokens = tokens[: len(tokens) // 17 * 17]
    texts = lists_of(tokens, 17)
    assert_bits_equal(jsonnumbers.number_lists_numpy([t.encode() for t in texts], 17), reference(texts, 17))
    assert calls  # the path under test ran


@pytest.mark.parametrize("text", [
    "[1, 2]", "[1, 2, 3, 4]", "[]", "[[1, 2, 3]]", "[1, [2], 3]", '[1, "2", 3]', "[1, null, 3]", "[1, true, 3]",
    "[1, false, 3]", '[1, {"a": 2}, 3]', "5", "null", '"1, 2, 3"', "[1, 2, 1e999]", "[1, 2, -1e999]",
    "[1, 2, " + "9" * 400 + "]", "[1, 2, 0." + "0" * 99999 + "1e1000005]",
])
def test_number_lists_refuses_what_the_full_checks_refuse(number_lists: NumberLists, text: str) -> None:
    """Another length, nesting, non-numbers, a value out of float range: None (the full checks then word it),
    wherever the bad list stands among good ones."""
    good = "[1.5, -2, 3e2]"
    for texts in ([text], [good, text], [text, good, good]):
        assert number_lists([t.encode() for t in texts], 3) is None


def test_number_lists_whitespace_and_raw_texts(number_lists: NumberLists) -> None:
    """msgspec's Raw texts of a file written with indentation, as they come to fastparse."""
    import msgspec

    records = [{"k": [round(i * 0.37, 2), -i, i / 3]} for i in range(40)]
    data = json.dumps(records, indent=2).encode()
    raws = [r["k"] for r in msgspec.json.decode(data, type=list[dict[str, msgspec.Raw]])]
    assert_bits_equal(number_lists(raws, 3), np.asarray([r["k"] for r in json.loads(data)], dtype=np.float64))
    assert number_lists([], 3).shape == (0, 3)


# --- fastparse's two readers of keypoint lists -------------------------------------------------------------------


def float32_results(results: list[dict], seed: int = 0) -> list[dict]:
    """Results as a float32 model writes them: 17-digit coordinates, confidences down to 1e-6 (exponents)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in results:
        kps = np.asarray(r["keypoints"], dtype=np.float32)
        kps[2::3] = rng.random(len(kps) // 3).astype(np.float32) ** 4
        out.append(dict(r, keypoints=[float(v) for v in kps], score=float(np.float32(r["score"]))))
    return out


def parsed_both_ways(monkeypatch: pytest.MonkeyPatch, gt_path: Path, results_path: Path) -> list[Any]:
    out = []
    for short in (0.0, float("inf")):  # every list as floats; every list as text
        monkeypatch.setattr(fastparse, "_SHORT_NUMBER", short)
        out.append(fastparse.parse_files(gt_path, results_path))
    return out


def assert_same_parse(a: fastparse.ParsedFiles, b: fastparse.ParsedFiles) -> None:
    assert a.notes == b.notes and a.schema == b.schema
    for name in ("image_ids", "category_ids", "ann_ids", "ann_image", "ann_category", "boxes", "areas", "iscrowd",
                 "crowd", "no_keypoints", "keypoints"):
        x, y = getattr(a.ground_truth, name), getattr(b.ground_truth, name)
        assert x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8)), name
    for name in ("image_ids", "category_ids", "scores", "keypoints"):
        x, y = getattr(a.detections, name), getattr(b.detections, name)
        assert x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8)), name


@pytest.mark.parametrize("kind", ["rounded", "float32"])
def test_both_readers_give_the_same_arrays(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str) -> None:
    gt, results = make_synthetic_coco(num_images=120, crowd_fraction=0.05, detections_per_person=3.0, seed=5)
    if kind == "float32":
        results = float32_results(results)
    gt_path, results_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results, indent=1 if kind == "float32" else None))
    floats, text = parsed_both_ways(monkeypatch, gt_path, results_path)
    assert floats is not None and text is not None
    assert_same_parse(floats, text)
    reference = np.asarray([r["keypoints"] for r in json.loads(results_path.read_text())], dtype=np.float64)
    assert np.array_equal(text.detections.keypoints.reshape(len(results), -1).view(np.int64), reference.view(np.int64))


@pytest.mark.parametrize("bad", [None, [1, 2, -3, 4], [1, 2, 3, -0.5], [1, 2, 3], [1, 2, 3, 4, 5], [1, "2", 3, 4],
                                 [1, 2, [3], 4], "box", [1e999, 2, 3, 4]])
def test_result_boxes_as_text_or_floats_give_the_same_arrays_and_verdicts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bad: Any
) -> None:
    """Result boxes are read as text by the compiled reader (a non-negative width and height checked after) or as
    msgspec's typed floats: the same doubles for a clean file (-0.0, integers and exponents among them), and the
    same refusal (None: the full checks then word it) for a box either would refuse, wherever it stands."""
    if not jsonnumbers.COMPILED:
        pytest.skip("kpbench.evaluation._numbers was not built (no C compiler at install)")
    gt, results = make_synthetic_coco(num_images=40, detections_per_person=2.0, seed=9)
    rng = np.random.default_rng(9)
    boxes = [{"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
              "bbox": [float(v) for v in rng.uniform(0, 300, 4)]} for r in results]
    boxes[0]["bbox"], boxes[1]["bbox"], boxes[2]["bbox"] = [-0.0, 5, 0, 7], [1e-7, 2e5, 0.0, 3], [1, 2, 3, 4]
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    if bad is not None:
        boxes[len(boxes) // 2]["bbox"] = bad
    res_path.write_text(json.dumps(boxes).replace("Infinity", "1e999"))
    parsed = []
    for as_text in (True, False):
        monkeypatch.setattr(fastparse, "_BOXES_AS_TEXT", as_text)
        parsed.append(fastparse.parse_files(gt_path, res_path, "bbox"))
    text, floats = parsed
    if bad is not None:
        assert text is None and floats is None
        return
    assert text is not None and floats is not None
    reference = np.asarray([b["bbox"] for b in json.loads(res_path.read_text())], dtype=np.float64)
    for got in (text, floats):
        assert np.array_equal(got.detections.boxes.view(np.int64), reference.view(np.int64))


@requires_shared
def test_both_readers_give_the_same_arrays_on_real_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sample = COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json"
    jittered = tmp_path / "jittered.json"
    jittered.write_text(json.dumps(jittered_detections(load(sample))))
    yolo = tmp_path / "yolo.json"  # the sample's YOLO11n-pose results, float32 values
    yolo.write_text(json.dumps(float32_results(jittered_detections(load(sample), seed=1))))
    for gt_path, results_path in ((sample, jittered), (sample, yolo),
                                  (XTCOCO / "example_coco_val.json", XTCOCO / "example_coco_preds.json")):
        floats, text = parsed_both_ways(monkeypatch, gt_path, results_path)
        assert floats is not None and text is not None, results_path
        assert_same_parse(floats, text)


@pytest.mark.parametrize("short", [0.0, float("inf")], ids=["floats", "text"])
@pytest.mark.parametrize("field", [{"bbox": None}, {"bbox": [1, 2, 3, 4]}, {"segmentation": [[1, 2, 3, 4, 5, 6]]},
                                   {"caption": "a person"}, {"caption": None}])
def test_a_later_keypoint_result_with_a_box_field_goes_to_the_full_checks(
    field: dict, short: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bbox, segmentation or caption on any keypoint result, whatever its value (null included), fails msgspec's
    decode (typed UnsetType), so the full checks decide; without one the file is parsed here."""
    monkeypatch.setattr(fastparse, "_SHORT_NUMBER", short)
    gt, results = make_synthetic_coco(num_images=6, detections_per_person=2.5, seed=3)
    gt_path, results_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))
    assert fastparse.parse_files(gt_path, results_path) is not None
    results[3].update(field)
    results_path.write_text(json.dumps(results))
    assert fastparse.parse_files(gt_path, results_path) is None


@pytest.fixture(scope="module")
def case_scene() -> tuple[dict, list]:
    return make_synthetic_coco(num_images=6, detections_per_person=2.5, seed=3)  # test_fastcheck's scene


@pytest.mark.parametrize("short", [0.0, float("inf")], ids=["floats", "text"])
@pytest.mark.parametrize("name", list(CASES))
def test_both_readers_give_the_full_checks_outcome(
    name: str, short: float, case_scene: tuple[dict, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Every case of test_fastcheck (bad numbers, lengths, nesting, types, fields) read each way."""
    checker = ArrayChecker(monkeypatch, capfd)
    monkeypatch.setattr(fastparse, "_SHORT_NUMBER", short)
    make, way, _ = CASES[name]
    gt, results = make(*case_scene)
    checker.same_as_full_checks(tmp_path, gt, results, "fast" if way == "fast" else "full")
