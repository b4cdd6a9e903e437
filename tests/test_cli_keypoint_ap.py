"""AP per keypoint and per keypoint group on the command line: `kpbench evaluate --per-keypoint/--groups` (GT and
results, or a run directory) and `kpbench analyze` (its keypoint_ap section), each equal to the library's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kpdata import assert_one_line_error, make_run_dir

from kpbench.analysis.keypoint_ap import keypoint_ap
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    gt, results = make_synthetic_coco(num_images=8, seed=1)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path


def test_evaluate_per_keypoint_json_csv_and_files(files, tmp_path: Path, run_cli) -> None:
    gt, res = files
    expected = keypoint_ap(gt, res)
    code, out, err = run_cli("evaluate", gt, res, "--per-keypoint", "--format", "json", "--out", tmp_path / "o")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["stats"] == evaluate(gt, res).stats
    assert payload["keypoint_ap"] == json.loads(json.dumps(expected.rows()))
    assert [r["name"] for r in payload["keypoint_ap"]][:5] == ["all", "head", "arms", "torso", "legs"]
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert written == ["keypoint_ap.csv", "keypoint_ap.json", "keypoint_ap.md", "metrics.csv", "metrics.json",
                       "metrics.md"]
    assert json.loads((tmp_path / "o" / "keypoint_ap.json").read_text())["rows"] == payload["keypoint_ap"]
    code, out, _ = run_cli("evaluate", gt, res, "--per-keypoint", "--format", "csv")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "kind,name,num_gt,AP,AP50,AP75,APm,APl,AR,keypoints"
    assert lines[2].startswith(f"group,head,{expected['head'].num_gt},{expected['head'].stats['AP']!r},")
    assert len(lines) == 1 + 1 + 4 + 17


def test_evaluate_groups_option_and_people_tables(files, run_cli) -> None:
    gt, res = files
    code, out, err = run_cli("evaluate", gt, res, "--groups", "face:nose,left_eye,right_eye;feet:15,16")
    assert code == 0, err
    expected = keypoint_ap(gt, res, groups=[("face", ["nose", "left_eye", "right_eye"]), ("feet", [15, 16])])
    row = next(line for line in out.splitlines() if line.split()[:2] == ["group", "face"])
    assert row.split()[2:4] == [str(expected["face"].num_gt), f"{100 * expected['face'].stats['AP']:.1f}"]
    assert row.split()[-1] == "nose,left_eye,right_eye"
    assert "AP per keypoint and per keypoint group (coco17; percent, n/a: no GT):" in out
    code, out, _ = run_cli("evaluate", gt, res, "--per-keypoint", "--format", "markdown")
    assert code == 0 and "| keypoint | left_ankle |" in out and out.startswith("### keypoints (vectorized)")


@pytest.mark.parametrize(("args", "message"), [
    (("--groups", "face:nose,beak"), "'beak' is not a keypoint of the coco17 schema"),
    (("--groups", "face"), "--groups: 'face' is not NAME:KEYPOINT"),
    (("--per-keypoint", "--iou-type", "bbox"), "--per-keypoint and --groups are for keypoints"),
])  # fmt: skip
def test_evaluate_per_keypoint_errors_are_one_line(files, run_cli, args: tuple[str, ...], message: str) -> None:
    gt, res = files
    assert_one_line_error(run_cli("evaluate", gt, res, *args), message)


def test_evaluate_run_dir_writes_keypoint_ap_into_it(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    code, out, err = run_cli("evaluate", run, "--per-keypoint", "--format", "json")
    assert code == 0, err
    assert f"wrote {run / 'keypoint_ap.json'}" in err
    rows = json.loads((run / "keypoint_ap.json").read_text())["rows"]
    assert rows == json.loads(out)["keypoint_ap"]
    assert rows == json.loads(json.dumps(keypoint_ap(run / "ground_truth.json", run / "keypoints_results.json").rows()))


def test_analyze_has_the_keypoint_ap_section(files, tmp_path: Path, run_cli) -> None:
    gt, res = files
    code, out, err = run_cli("analyze", gt, res, "--groups", "upper:5,6,7,8,9,10", "--out", tmp_path,
                             "--format", "json")
    assert code == 0, err
    section = json.loads(out)["keypoint_ap"]
    expected = keypoint_ap(gt, res, groups=[("upper", [5, 6, 7, 8, 9, 10])])
    assert section["rows"] == json.loads(json.dumps(expected.rows()))
    assert [r["name"] for r in section["rows"]][:2] == ["all", "upper"]
    assert json.loads((tmp_path / "keypoint_ap.json").read_text()) == section
    code, out, _ = run_cli("analyze", gt, res, "--format", "csv", "--table", "keypoint_ap")
    assert code == 0 and out.splitlines()[0] == "kind,name,num_gt,AP,AP50,AP75,APm,APl,AR,keypoints"
    assert out.splitlines()[2].split(",")[:2] == ["group", "head"]  # the schema's groups without --groups
