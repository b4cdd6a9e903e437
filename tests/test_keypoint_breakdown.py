"""Per-keypoint breakdown: equal to a direct computation on a hand-built case; files; `kpbench keypoints`."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from kpdata import assert_one_line_error, kpbench, make_run_dir, png_size

from kpbench.analysis.breakdown import COLUMNS, keypoint_breakdown, keypoints_for_run, matched_pairs
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import KEYPOINT_NAMES, NUM_KEYPOINTS, SIGMAS
from kpbench.data.synthetic import PERSON_CATEGORY
from kpbench.evaluation.cocoeval import evaluate

ANGLES = np.linspace(0, 2 * np.pi, NUM_KEYPOINTS, endpoint=False)


def gt_person(
    ann_id: int, image_id: int, x: float, y: float, side: float, visibility: list[int] | None = None, **extra: object
) -> dict:
    """A GT person in the box (x, y, side, side) with area side^2 and keypoints on a 4 x 5 grid inside it."""
    grid = np.array([[x + side * (0.2 + 0.15 * (k % 4)), y + side * (0.1 + 0.2 * (k // 4))] for k in range(17)])
    v = np.array(visibility if visibility is not None else [2] * NUM_KEYPOINTS)
    kps = np.concatenate([grid * (v[:, None] > 0), v[:, None]], axis=1)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "num_keypoints": int((v > 0).sum()),
        "bbox": [x, y, side, side],
        "area": side * side,
        "keypoints": kps.reshape(-1).tolist(),
        **extra,
    }


def detection(image_id: int, gt: dict, distances: np.ndarray, score: float, shift: float = 0.0) -> dict:
    """A detection whose keypoint k lies `distances[k]` pixels from the GT keypoint (at angle ANGLES[k])."""
    kps = np.array(gt["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
    if gt["num_keypoints"] == 0:
        kps[:, :2] = [gt["bbox"][0] + gt["bbox"][2] / 2, gt["bbox"][1] + gt["bbox"][3] / 2]
    xy = kps[:, :2] + distances[:, None] * np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1) + shift
    return {
        "image_id": image_id,
        "category_id": 1,
        "score": score,
        "keypoints": np.concatenate([xy, np.ones((NUM_KEYPOINTS, 1))], axis=1).reshape(-1).tolist(),
    }


@pytest.fixture()
def case() -> tuple[dict, list, list[tuple[dict, dict]]]:
    """GT, results and the (GT, detection) pairs COCOeval must match at OKS 0.5.

    Matched: A (area 100^2; keypoint 3 unlabelled, keypoint 4 labelled but hidden, v=1), B (50^2) and F (80^2).
    Not counted: a lower-scored duplicate of A, a detection on a crowd region, one on a GT without labelled
    keypoints, a far-away false positive, and a GT nobody detected.
    """
    vis_a = [2] * NUM_KEYPOINTS
    vis_a[3], vis_a[4] = 0, 1
    a = gt_person(1, 1, 10, 10, 100, vis_a)
    b = gt_person(2, 1, 300, 200, 50)
    crowd = gt_person(3, 2, 0, 0, 120, [0] * NUM_KEYPOINTS, iscrowd=1)
    unlabelled = gt_person(4, 2, 200, 0, 60, [0] * NUM_KEYPOINTS)
    f = gt_person(5, 2, 40, 200, 80)
    missed = gt_person(6, 2, 300, 300, 70)
    gt = {
        "images": [{"id": 1, "width": 400, "height": 400}, {"id": 2, "width": 400, "height": 400}],
        "annotations": [a, b, crowd, unlabelled, f, missed],
        "categories": [PERSON_CATEGORY],
    }
    k = np.arange(NUM_KEYPOINTS, dtype=np.float64)
    det_a = detection(1, a, 0.6 * k, 0.9)
    det_b = detection(1, b, 0.25 * (NUM_KEYPOINTS - k), 0.8)
    det_f = detection(2, f, np.where(k % 2 == 0, 1.0, 3.5), 0.7)
    results = [
        detection(1, a, 2.0 + 0.3 * k, 0.5),  # duplicate of A: A is taken by the 0.9 detection
        det_a,
        detection(2, crowd, np.zeros(NUM_KEYPOINTS), 0.95),
        det_b,
        detection(2, unlabelled, np.zeros(NUM_KEYPOINTS), 0.85),
        det_f,
        detection(1, b, np.zeros(NUM_KEYPOINTS), 0.6, shift=-290.0),  # far from everyone
    ]
    return gt, results, [(a, det_a), (b, det_b), (f, det_f)]


def direct(pairs: list[tuple[dict, dict]]) -> list[dict]:
    """The table computed straight from the definitions, pair by pair, keypoint by keypoint."""
    sims: dict[int, list[float]] = {k: [] for k in range(NUM_KEYPOINTS)}
    errs: dict[int, list[float]] = {k: [] for k in range(NUM_KEYPOINTS)}
    for g, d in pairs:
        for k in range(NUM_KEYPOINTS):
            gx, gy, v = g["keypoints"][3 * k : 3 * k + 3]
            if v <= 0:
                continue
            dx, dy = d["keypoints"][3 * k] - gx, d["keypoints"][3 * k + 1] - gy
            sims[k].append(math.exp(-(dx * dx + dy * dy) / (2 * g["area"] * (2 * SIGMAS[k]) ** 2)))
            errs[k].append(math.hypot(dx, dy) / math.sqrt(g["area"]))

    def row(name: str, s: list[float], e: list[float]) -> dict:
        return {
            "keypoint": name,
            "n": len(s),
            "mean_similarity": sum(s) / len(s),
            "frac_ks_50": sum(x >= 0.5 for x in s) / len(s),
            "frac_ks_75": sum(x >= 0.75 for x in s) / len(s),
            "median_error": float(np.median(e)),
        }

    rows = [row(KEYPOINT_NAMES[k], sims[k], errs[k]) for k in range(NUM_KEYPOINTS)]
    rows.append(row("all", [x for k in sims for x in sims[k]], [x for k in errs for x in errs[k]]))
    return rows


def test_equals_direct_computation(case) -> None:
    gt, results, pairs = case
    result = evaluate(gt, results)
    assert sorted(matched_pairs(result)) == [(2, 1), (4, 2), (6, 5)]  # detection ids are 1-based positions
    rows = keypoint_breakdown(result, gt, results)
    expected = direct(pairs)
    assert [r["keypoint"] for r in rows] == [*KEYPOINT_NAMES, "all"]
    assert [r["n"] for r in rows] == [3, 3, 3, 2, 3, *[3] * 12, 50]
    for got, want in zip(rows, expected):
        assert list(got) == list(COLUMNS)
        for key in COLUMNS[1:]:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), (got["keypoint"], key)
    # The case spreads the values out: a test of a constant would prove little.
    sims = [r["mean_similarity"] for r in rows[:17]]
    assert min(sims) < 0.7 and max(sims) > 0.95
    assert 0 < rows[-1]["frac_ks_75"] < rows[-1]["frac_ks_50"] < 1


def test_no_match_gives_nan_rows(case) -> None:
    gt, results, _ = case
    far = [
        dict(r, keypoints=[v + 1000.0 if i % 3 != 2 else v for i, v in enumerate(r["keypoints"])]) for r in results[:2]
    ]
    rows = keypoint_breakdown(evaluate(gt, far), gt, far)
    assert all(r["n"] == 0 and math.isnan(r["mean_similarity"]) for r in rows)


def test_needs_per_image_matching(case) -> None:
    gt, results, _ = case
    result = dataclasses.replace(evaluate(gt, results), image_evals=None, backend="hotcoco")
    with pytest.raises(KpbenchError, match="--backend vectorized"):
        keypoint_breakdown(result, gt, results)
    with pytest.raises(KpbenchError, match="not the same file"):
        keypoint_breakdown(evaluate(gt, results), gt, results[:3])


def test_run_dir_files_and_cli(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path)
    rows = keypoints_for_run(run.path)
    # Each GT is its detection moved by (3, 3): every error is 3*sqrt(2) / sqrt(area).
    areas = [a["area"] for a in run.gt["annotations"]]
    assert rows[-1]["n"] == 17 * len(areas) == 34
    errors = sorted(3 * math.sqrt(2) / math.sqrt(a) for a in areas)
    assert rows[-1]["median_error"] == pytest.approx(sum(errors) / 2, rel=1e-12)
    assert rows[0]["mean_similarity"] == pytest.approx(
        np.mean([math.exp(-18 / (2 * a * (2 * SIGMAS[0]) ** 2)) for a in areas]), rel=1e-12
    )
    with (run.path / "keypoints.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["keypoint"] for r in table] == [*KEYPOINT_NAMES, "all"]
    assert float(table[-1]["mean_similarity"]) == rows[-1]["mean_similarity"]  # full precision in the CSV
    md = (run.path / "keypoints.md").read_text()
    assert "sqrt(area)" in md and "| left_wrist |" in md
    assert png_size(run.path / "keypoints.png") == (1000, 600)

    # An evaluation without matching (hotcoco's) is redone on the default backend rather than refused.
    no_matches = dataclasses.replace(
        evaluate(run.gt, json.loads((run.path / "keypoints_results.json").read_text())), image_evals=None
    )
    assert keypoints_for_run(run.path, no_matches, write=False) == rows

    proc = kpbench("keypoints", run.path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == rows
    assert_one_line_error(kpbench("keypoints", tmp_path / "missing"), "missing", "run directory not found")
    assert_one_line_error(kpbench("keypoints", tmp_path), str(tmp_path), "not a run directory")


def test_run_dir_is_scored_from_its_cache_and_bad_inputs(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path)
    rows = keypoints_for_run(run.path, write=False)
    # The results are rebuilt from the cache, as `kpbench evaluate --run` does: keypoints_results.json, missing
    # or stale, plays no part.
    (run.path / "keypoints_results.json").unlink()
    assert keypoints_for_run(run.path, write=False) == rows
    (run.path / "keypoints_results.json").write_text('{"not": "a list"}')
    assert keypoints_for_run(run.path, write=False) == rows
    # A bad GT is named in a one-line error.
    (run.path / "ground_truth.json").write_text("{broken")
    with pytest.raises(KpbenchError, match=r"ground_truth\.json: not valid JSON"):
        keypoints_for_run(run.path, write=False)


@pytest.mark.parametrize("damage", ["deleted", "truncated", "shortened"])
def test_incomplete_run_is_refused_like_evaluate_run(tmp_path: Path, run_cli, damage: str) -> None:
    """With the cache deleted or cut short, `kpbench keypoints` used to report from the stale
    keypoints_results.json with exit 0. It now fails as `kpbench evaluate --run` and `kpbench thresholds` do."""
    run = make_run_dir(tmp_path)
    cache = run.path / "detections.jsonl"
    lines = cache.read_text().splitlines(keepends=True)
    if damage == "deleted":
        cache.unlink()
        expected = "run incomplete, 0 of 3 images have detections"
    elif damage == "truncated":  # a torn last line, as a killed run leaves it
        cache.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
        expected = "run incomplete, 2 of 3 images have detections"
    else:
        cache.write_text(lines[0])
        expected = "run incomplete, 1 of 3 images have detections"
    assert (run.path / "keypoints_results.json").is_file()  # the stale file is there, and must not be used
    with pytest.raises(KpbenchError, match=expected):
        keypoints_for_run(run.path, write=False)
    assert_one_line_error(run_cli("keypoints", run.path), str(run.path), expected, "re-run the same `kpbench run`")
    assert_one_line_error(run_cli("evaluate", "--run", run.path), expected)
    assert_one_line_error(run_cli("thresholds", run.path), expected)
    assert not (run.path / "keypoints.csv").exists()


def test_no_matched_person_says_so_in_the_figure(case, tmp_path: Path) -> None:
    """Nothing matched: the figure used to be two empty axes (the right one spanning -0.04 to 0.04)."""
    from kpbench.report.figures import NO_MATCHED_PERSONS, keypoint_breakdown_figure, plot_keypoint_breakdown

    gt, results, _ = case
    far = [dict(r, keypoints=[v + 1000.0 if i % 3 != 2 else v for i, v in enumerate(r["keypoints"])]) for r in results]
    rows = keypoint_breakdown(evaluate(gt, far), gt, far)
    fig = keypoint_breakdown_figure(rows)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sum(NO_MATCHED_PERSONS in t for t in texts) == 2
    assert fig.axes[1].get_xlim() == (0.0, 1.0)
    assert png_size(plot_keypoint_breakdown(rows, tmp_path / "k.png")) == (1000, 600)
    # With matches, no such text.
    matched = keypoint_breakdown_figure(keypoint_breakdown(evaluate(gt, results), gt, results))
    assert not [t for ax in matched.axes for t in ax.texts if NO_MATCHED_PERSONS in t.get_text()]


def test_gt_of_area_zero_has_no_scaled_error(case) -> None:
    gt, results, pairs = case
    gt = json.loads(json.dumps(gt))
    gt["annotations"][1]["area"] = 0.0  # B: only an exact detection still matches it (OKS 1)
    b = gt["annotations"][1]
    results = [*results[:3], detection(1, b, np.zeros(NUM_KEYPOINTS), 0.8), *results[4:]]
    result = evaluate(gt, results)
    assert sorted(matched_pairs(result)) == [(2, 1), (4, 2), (6, 5)]
    rows = keypoint_breakdown(result, gt, results)
    a_f = direct([pairs[0], pairs[2]])  # A and F: B has no scale to divide its errors by
    assert rows[-1]["n"] == 50 and rows[-1]["frac_ks_75"] > a_f[-1]["frac_ks_75"]  # B counts, at similarity 1
    assert rows[-1]["median_error"] == pytest.approx(a_f[-1]["median_error"], rel=1e-12)
    assert all(math.isfinite(r["median_error"]) for r in rows)


def test_frac_ks_in_percent_for_people_fractions_in_csv_and_json(tmp_path: Path, run_cli) -> None:
    """One scale per kind of output: `kpbench keypoints` (table, markdown) and keypoints.md showed frac_ks_* as
    fractions (0.853) while the HTML page showed them in percent; now every table for people shows percent with one
    decimal, and CSV and JSON keep the fractions."""
    run = make_run_dir(tmp_path)
    code, out, err = run_cli("keypoints", run.path, "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    last = rows[-1]
    assert 0 < last["frac_ks_75"] <= last["frac_ks_50"] <= 1  # fractions in JSON

    def shown(row: dict) -> str:
        return (f"{row['keypoint']}  {row['n']}  {row['mean_similarity']:.3f}  {100 * row['frac_ks_50']:.1f}  "
                f"{100 * row['frac_ks_75']:.1f}  {row['median_error']:.3f}")

    code, out, _ = run_cli("keypoints", run.path)
    lines = out.splitlines()
    assert " ".join(lines[-2].split()) == " ".join(shown(last).split())  # the `all` row, in percent
    assert lines[-1] == "frac_ks_* in percent; mean_similarity in [0, 1]; median_error in units of sqrt(GT area)."
    code, md, _ = run_cli("keypoints", run.path, "--format", "markdown")
    assert md == (run.path / "keypoints.md").read_text()
    assert (f"| all | {last['n']} | {last['mean_similarity']:.3f} | {100 * last['frac_ks_50']:.1f} | "
            f"{100 * last['frac_ks_75']:.1f} | {last['median_error']:.3f} |") in md
    code, out, _ = run_cli("keypoints", run.path, "--format", "csv")
    assert out.splitlines()[-1].split(",")[3:5] == [repr(last["frac_ks_50"]), repr(last["frac_ks_75"])]
