"""The command lines of the new analyses: evaluate's schema, sigmas, COCOeval options and bootstrap; compare; html.
Each checks the printed numbers against the library's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kpdata import XTCOCO, assert_one_line_error, make_run_dir, requires_shared

from kpbench.analysis.bootstrap import bootstrap_intervals
from kpbench.evaluation.cocoeval import evaluate
from kpbench.evaluation.settings import EvalSettings

GT, RES = XTCOCO / "example_coco_val.json", XTCOCO / "example_coco_preds.json"


@requires_shared
def test_evaluate_options_reach_the_library(run_cli) -> None:
    code, out, _ = run_cli("evaluate", GT, RES, "--max-dets", "5", "--format", "json")
    assert code == 0 and json.loads(out) == evaluate(GT, RES, settings=EvalSettings(max_dets=(5,))).stats
    code, out, _ = run_cli("evaluate", GT, RES, "--bootstrap", "20", "--bootstrap-seed", "2", "--format", "json")
    assert code == 0
    payload = json.loads(out)
    assert payload["stats"] == evaluate(GT, RES).stats
    assert payload["intervals"]["keypoints"] == bootstrap_intervals(evaluate(GT, RES), 20, 2)
    sigmas = ",".join(["0.05"] * 17)
    code, out, _ = run_cli("evaluate", GT, RES, "--sigmas", sigmas, "--format", "json")
    assert code == 0 and json.loads(out) == evaluate(GT, RES, sigmas=[0.05] * 17).stats != evaluate(GT, RES).stats
    code, out, _ = run_cli("evaluate", GT, RES, "--schema", "coco17", "--format", "json")
    assert code == 0 and json.loads(out) == evaluate(GT, RES).stats


@requires_shared
@pytest.mark.parametrize(("args", "message"), [
    (("--sigmas", "0.1,0.2"), f"{GT}: category 1 has 17 keypoints, but 2 sigmas were given"),
    (("--schema", "hands"), "--schema: unknown keypoint schema 'hands'; built in: ap10k17, coco17, crowdpose14"),
    (("--max-dets", "20,5"), "--max-dets: positive integers in ascending order"),
    (("--bootstrap", "0"), "--bootstrap: needs at least 1 replicate, got 0"),
])
def test_evaluate_option_errors_are_one_line(run_cli, args: tuple[str, ...], message: str) -> None:
    assert_one_line_error(run_cli("evaluate", GT, RES, *args), f"error: {message}")


def test_compare_and_html_from_run_directories(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    run_cli("evaluate", run)
    code, out, err = run_cli("compare", run, run, "--bootstrap", "10", "--format", "json")
    assert code == 0, err
    payload = json.loads(out)
    assert [r["delta"] for r in payload["stats"]][:3] == [0.0, 0.0, 0.0] and payload["images"] == []
    code, _, err = run_cli("html", run, "--out", tmp_path / "page.html", "--no-images")
    assert code == 0 and err.strip() == f"wrote {tmp_path / 'page.html'}"
    assert "<h2>Metrics</h2>" in (tmp_path / "page.html").read_text()
    assert_one_line_error(run_cli("html", tmp_path / "nope"), f"error: {tmp_path / 'nope'}: run directory not found")


# --- issue 23, item 10: one scale per kind of output (tables for people in percent, CSV and JSON in fractions) -----


def _table_rows(text: str) -> dict[str, list[str]]:
    """A whitespace-aligned table as {first cell: the other cells}."""
    lines = [line.split() for line in text.strip().splitlines()]
    return {cells[0]: cells[1:] for cells in lines[1:]}


@requires_shared
def test_evaluate_bootstrap_intervals_are_in_percent_beside_the_percent_stats(run_cli) -> None:
    """Before: the stats in percent, then the intervals in fractions (0.634 under 63.4)."""
    from kpbench.evaluation.cocoeval import percent

    rows = bootstrap_intervals(evaluate(GT, RES), 20, 2)
    code, out, err = run_cli("evaluate", GT, RES, "--bootstrap", "20", "--bootstrap-seed", "2")
    assert code == 0 and "95% percentile intervals (percent)" in err
    shown = [line.split() for line in out.splitlines() if line.startswith("keypoints ") and "(" not in line]
    assert shown == [["keypoints", r["stat"], percent(r["value"]), percent(r["low"]), percent(r["high"])] for r in rows]
    code, out, _ = run_cli("evaluate", GT, RES, "--bootstrap", "20", "--bootstrap-seed", "2", "--format", "markdown")
    assert f"| keypoints | AP | {percent(rows[0]['value'])} | {percent(rows[0]['low'])} | {percent(rows[0]['high'])} |" in out
    code, out, _ = run_cli("evaluate", GT, RES, "--bootstrap", "20", "--bootstrap-seed", "2", "--format", "csv")
    assert f"keypoints,AP,{rows[0]['value']!r},{rows[0]['low']!r},{rows[0]['high']!r}" in out  # CSV: fractions


def test_compare_prints_percent_and_percent_points_for_people(tmp_path: Path, run_cli) -> None:
    """Before: table and markdown printed fractions (0.472) where every other table for people shows 47.2."""
    import shutil

    from kpbench.analysis.bootstrap import compare_runs
    from kpbench.evaluation.cocoeval import percent

    run = make_run_dir(tmp_path / "a").path
    other = tmp_path / "b"
    shutil.copytree(run, other)
    cache = [json.loads(line) for line in (other / "detections.jsonl").read_text().splitlines()]
    for record in cache:
        record["scores"] = [0.5 * s for s in record["scores"]][::-1]  # b: scores halved and reversed
    (other / "detections.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cache))
    rows = compare_runs(run, other, replicates=30, seed=1)["keypoints"].rows
    code, out, err = run_cli("compare", run, other, "--bootstrap", "30", "--bootstrap-seed", "1")
    assert code == 0, err
    assert "compare: B - A in percent points" in err
    table = _table_rows(out.split("\n\n")[0])

    def signed(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:+.1f}"

    for r in rows:
        assert table[r["stat"]][:5] == [percent(r["a"]), percent(r["b"]), signed(r["delta"]), signed(r["low"]),
                                        signed(r["high"])]
    assert any(r["delta"] for r in rows)  # the two runs differ
    code, out, _ = run_cli("compare", run, other, "--bootstrap", "30", "--bootstrap-seed", "1", "--format", "markdown")
    ap = rows[0]
    assert out.startswith("| stat | a | b | delta | low | high | significant |\n|---|---|---|---|---|---|---|\n"
                          f"| AP | {percent(ap['a'])} | {percent(ap['b'])} | {signed(ap['delta'])} | {signed(ap['low'])} "
                          f"| {signed(ap['high'])} | {ap['significant']} |")
    code, out, _ = run_cli("compare", run, other, "--bootstrap", "30", "--bootstrap-seed", "1", "--format", "csv")
    assert out.splitlines()[1].startswith(f"AP,{ap['a']!r},{ap['b']!r},{ap['delta']!r},")  # CSV: fractions


def test_analyze_bootstrap_intervals_are_in_percent(tmp_path: Path, run_cli) -> None:
    from kpbench.analysis.errors import analyze_errors
    from kpbench.evaluation.cocoeval import percent

    run = make_run_dir(tmp_path).path
    code, out, err = run_cli("analyze", run, "--bootstrap", "10", "--bootstrap-seed", "4")
    assert code == 0, err
    gt = json.loads((run / "ground_truth.json").read_text())
    results = json.loads((run / "keypoints_results.json").read_text())
    intervals = analyze_errors(gt, results, bootstrap=10, seed=4).intervals
    block = out.split("Bootstrap intervals (percent):\n", 1)[1].split("\n\n", 1)[0]
    table = _table_rows(block)
    for r in intervals:
        assert table[r["stat"]] == [percent(r["value"]), percent(r["low"]), percent(r["high"])]
