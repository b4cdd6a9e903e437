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
    (("--schema", "hands"), "unknown keypoint schema 'hands'; built in: ap10k17, coco17, crowdpose14"),
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
