"""`kpbench evaluate` end to end: outputs, files, and one test per bad input (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kpdata import FCE, load, requires_shared

from kpbench.schema import KEYPOINT_STAT_NAMES
from kpbench.synthetic import make_synthetic_coco


def kpbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kpbench", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path, dict, list]:
    gt, results = make_synthetic_coco(num_images=8, seed=0)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path, gt, results


def test_json_output_is_exact(files) -> None:
    from kpbench.evaluate import evaluate

    gt_path, res_path, gt, results = files
    proc = kpbench("evaluate", gt_path, res_path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert list(payload) == list(KEYPOINT_STAT_NAMES)
    assert payload == evaluate(gt, results).stats  # full precision survives the JSON round trip


def test_out_dir_files_and_formats(files, tmp_path: Path) -> None:
    gt_path, res_path, *_ = files
    out = tmp_path / "out"
    proc = kpbench("evaluate", gt_path, res_path, "--out", out, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "iou_type,stat,value"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.json", "metrics.md"]
    metrics = json.loads((out / "metrics.json").read_text())["keypoints"]
    assert set(metrics) == set(KEYPOINT_STAT_NAMES)
    md = kpbench("evaluate", gt_path, res_path, "--format", "markdown")
    assert md.stdout.startswith("| iou_type | stat | value |")
    table = kpbench("evaluate", gt_path, res_path)
    assert "AP50" in table.stdout and table.returncode == 0


@requires_shared
def test_cli_matches_published_fce() -> None:
    proc = kpbench("evaluate", FCE / "gt_dataset.json", FCE / "dt_dataset.json", "--format", "json")
    assert proc.returncode == 0
    assert list(json.loads(proc.stdout).values()) == load(FCE / "expected_stats.json")["published_expected_stats"]
    assert "warning:" in proc.stderr and "area from the box" in proc.stderr


def test_bbox_iou_type(tmp_path: Path) -> None:
    gt, _ = make_synthetic_coco(num_images=4, seed=1)
    boxes = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9} for a in gt["annotations"]]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "b.json").write_text(json.dumps(boxes))
    proc = kpbench("evaluate", tmp_path / "gt.json", tmp_path / "b.json", "--iou-type", "bbox", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert list(stats)[:3] == ["AP", "AP50", "AP75"] and "AR100" in stats
    assert stats["AP"] == 1.0  # perfect boxes (crowd regions are ignored)


@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_no_validate_gives_the_same_numbers(files, backend: str) -> None:
    from kpbench.evaluate import evaluate

    gt_path, res_path, gt, results = files
    proc = kpbench("evaluate", gt_path, res_path, "--format", "json", "--no-validate", "--backend", backend)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == evaluate(gt, results).stats  # exact
    assert "note: input checks skipped" in proc.stderr


def test_no_validate_bad_file_is_one_line(files, tmp_path: Path) -> None:
    gt_path, *_ = files
    res_path = tmp_path / "dict.json"
    res_path.write_text(json.dumps({"image_id": 1}))
    proc = kpbench("evaluate", gt_path, res_path, "--no-validate")
    assert_one_line_error(proc, "dict.json", "pycocotools failed on the unchecked input", "without --no-validate")


def bad(tmp_path: Path, gt: object, results: object) -> subprocess.CompletedProcess[str]:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(gt if isinstance(gt, str) else json.dumps(gt))
    res_path.write_text(results if isinstance(results, str) else json.dumps(results))
    return kpbench("evaluate", gt_path, res_path)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture()
def good() -> tuple[dict, list]:
    return make_synthetic_coco(num_images=3, seed=2)


def test_not_json(tmp_path: Path, good) -> None:
    assert_one_line_error(bad(tmp_path, good[0], "[{not json"), "res.json", "not valid JSON")


def test_wrong_top_level_type(tmp_path: Path, good) -> None:
    assert_one_line_error(bad(tmp_path, good[0], {"a": 1}), "res.json", "must be a JSON list")
    assert_one_line_error(bad(tmp_path, [1, 2], good[1]), "gt.json", "must be a JSON object")


def test_unknown_image_id(tmp_path: Path, good) -> None:
    results = [dict(good[1][0], image_id=999999)]
    assert_one_line_error(bad(tmp_path, good[0], results), "res.json", "result 0", "image_id 999999")


def test_unknown_category(tmp_path: Path, good) -> None:
    results = [dict(good[1][0], category_id=7)]
    assert_one_line_error(bad(tmp_path, good[0], results), "res.json", "category_id 7")


def test_wrong_keypoint_count(tmp_path: Path, good) -> None:
    results = [dict(r) for r in good[1]]
    results[1]["keypoints"] = results[1]["keypoints"][:48]
    assert_one_line_error(bad(tmp_path, good[0], results), "result 1", "'keypoints' has 48 values, expected 51")


def test_nan_and_infinity(tmp_path: Path, good) -> None:
    results = [dict(r) for r in good[1]]
    results[2]["keypoints"] = [*results[2]["keypoints"][:-1], float("nan")]
    assert_one_line_error(bad(tmp_path, good[0], results), "result 2", "'keypoints' holds NaN or infinity")
    results = [dict(r) for r in good[1]]
    results[0]["score"] = float("inf")
    assert_one_line_error(bad(tmp_path, good[0], results), "result 0", "'score' holds NaN or infinity")


def test_missing_score(tmp_path: Path, good) -> None:
    results = [dict(r) for r in good[1]]
    del results[1]["score"]
    assert_one_line_error(bad(tmp_path, good[0], results), "res.json", "result 1", "has no 'score'")


@pytest.mark.parametrize("field", ["num_keypoints", "area", "iscrowd"])
def test_gt_missing_field(tmp_path: Path, good, field: str) -> None:
    gt = json.loads(json.dumps(good[0]))
    del gt["annotations"][0][field]
    assert_one_line_error(bad(tmp_path, gt, good[1]), "gt.json", "annotation 0", f"has no '{field}'")


def test_string_score(tmp_path: Path, good) -> None:
    results = [dict(r) for r in good[1]]
    results[2]["score"] = "0.75"
    assert_one_line_error(bad(tmp_path, good[0], results), "res.json", "result 2", "'score' must be a number")


def test_gt_ids_and_flags_must_be_numbers(tmp_path: Path, good) -> None:
    gt = json.loads(json.dumps(good[0]))
    gt["annotations"][1]["id"] = "a1"
    assert_one_line_error(bad(tmp_path, gt, good[1]), "gt.json", "annotation 1", "'id' must be an integer")
    gt = json.loads(json.dumps(good[0]))
    gt["annotations"][0]["iscrowd"] = None
    assert_one_line_error(bad(tmp_path, gt, good[1]), "gt.json", "annotation 0", "'iscrowd' must be a number")


def test_gt_id_zero_warns_and_succeeds(tmp_path: Path, good) -> None:
    gt = json.loads(json.dumps(good[0]))
    gt["annotations"][0]["id"] = 0
    proc = bad(tmp_path, gt, good[1])
    assert proc.returncode == 0
    assert "warning:" in proc.stderr and "annotation id 0 renumbered" in proc.stderr


def test_empty_results(tmp_path: Path, good) -> None:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(good[0]))
    res_path.write_text("[]")
    proc = kpbench("evaluate", gt_path, res_path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["AP"] == 0.0 and stats["AR"] == 0.0
    assert "no detections" in proc.stderr


def test_bbox_field_warning(tmp_path: Path, good) -> None:
    results = [dict(r, bbox=[0, 0, 10, 10]) for r in good[1]]
    proc = bad(tmp_path, good[0], results)
    assert proc.returncode == 0
    assert "warning:" in proc.stderr and "APm and APl" in proc.stderr


def test_missing_file(tmp_path: Path, good) -> None:
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(good[0]))
    assert_one_line_error(kpbench("evaluate", gt_path, tmp_path / "nope.json"), "nope.json", "file not found")


def test_bad_option_values(tmp_path: Path, good) -> None:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(good[0]))
    res_path.write_text(json.dumps(good[1]))
    assert_one_line_error(kpbench("evaluate", gt_path, res_path, "--backend", "x"), "--backend")
    assert_one_line_error(kpbench("evaluate", gt_path, res_path, "--format", "xml"), "--format")
    assert_one_line_error(kpbench("evaluate", gt_path, res_path, "--iou-type", "segm"), "--iou-type")


def test_light_imports() -> None:
    """`kpbench --help` and `kpbench evaluate` must not import torch (or matplotlib)."""
    code = (
        "import sys, json, runpy\n"
        "from kpbench.cli import app\n"
        "import kpbench.cli\n"
        "for args in (['--help'], ['evaluate', '--help']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_evaluate_run_does_not_import_torch(files) -> None:
    gt_path, res_path, *_ = files
    code = (
        "import sys\n"
        "from kpbench.cli import app\n"
        f"try:\n    app(['evaluate', {str(gt_path)!r}, {str(res_path)!r}, '--format', 'json'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH"


def test_console_script_and_module_help() -> None:
    proc = kpbench("--help")
    assert proc.returncode == 0 and "evaluate" in proc.stdout
