"""`kpbench evaluate` end to end: outputs, files, and one test per bad input (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kpdata import FCE, assert_one_line_error, kpbench, load, make_run_dir, requires_shared

from kpbench.core.schema import KEYPOINT_STAT_NAMES
from kpbench.data.synthetic import make_synthetic_coco


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path, dict, list]:
    gt, results = make_synthetic_coco(num_images=8, seed=0)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path, gt, results


def test_json_output_is_exact(files) -> None:
    from kpbench.evaluation.cocoeval import evaluate

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
    assert md.stdout == (out / "metrics.md").read_text()  # --format markdown prints metrics.md
    assert md.stdout.startswith("### keypoints (vectorized)\n\n| AP | AP50 |")
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


@pytest.mark.parametrize("backend", ["vectorized", "pycocotools", "hotcoco"])
def test_no_validate_gives_the_same_numbers(files, backend: str) -> None:
    from kpbench.evaluation.cocoeval import evaluate

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
    assert_one_line_error(proc, "dict.json", "vectorized failed on the unchecked input", "without --no-validate")
    proc = kpbench("evaluate", gt_path, res_path, "--no-validate", "--backend", "pycocotools")
    assert_one_line_error(proc, "dict.json", "pycocotools failed on the unchecked input", "without --no-validate")


def bad(tmp_path: Path, gt: object, results: object) -> subprocess.CompletedProcess[str]:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(gt if isinstance(gt, str) else json.dumps(gt))
    res_path.write_text(results if isinstance(results, str) else json.dumps(results))
    return kpbench("evaluate", gt_path, res_path)


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


def test_hotcoco_backend_words_bad_input_the_same(tmp_path: Path, good) -> None:
    """With --backend hotcoco the files are checked without Python dicts (kpbench.evaluation.fastcheck) and read by hotcoco;
    what it cannot prove clean, or hotcoco refuses, gets the same one-line message as the default backend."""
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(good[0]))
    for results, fragments in [
        ([dict(good[1][0], keypoints=good[1][0]["keypoints"][:48])], ("result 0", "'keypoints' has 48 values")),
        ([dict(good[1][0], keypoints=["5", *good[1][0]["keypoints"][1:]])], ("result 0", "holds a non-number ('5')")),
    ]:
        res_path.write_text(json.dumps(results))
        assert_one_line_error(kpbench("evaluate", gt_path, res_path, "--backend", "hotcoco"), *fragments)


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


# --- fixes of the QA pass ---------------------------------------------------------------------------------------


def test_unusable_out_is_one_line(files, tmp_path: Path, run_cli) -> None:
    gt_path, res_path, *_ = files
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    assert_one_line_error(run_cli("evaluate", gt_path, res_path, "--out", a_file), "--out", "exists and is not a directory")
    assert_one_line_error(run_cli("evaluate", gt_path, res_path, "--out", "/proc/x"), "--out /proc/x", "cannot create")
    assert a_file.read_text() == "keep me"


def test_out_files_are_written_together_or_not_at_all(files, tmp_path: Path, run_cli) -> None:
    """A folder where metrics.md should go: one line naming it, and metrics.csv is left as it was (the three
    files are staged first and replaced together)."""
    gt_path, res_path, *_ = files
    out = tmp_path / "out"
    (out / "metrics.md").mkdir(parents=True)
    (out / "metrics.csv").write_text("old")
    assert_one_line_error(run_cli("evaluate", gt_path, res_path, "--out", out), "metrics.md", "Is a directory")
    assert (out / "metrics.csv").read_text() == "old" and not (out / "metrics.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.md"]  # no temporary file left


def test_one_ap_scale_per_kind_of_output(files, tmp_path: Path, run_cli) -> None:
    """Percent with one decimal and n/a for -1 where people read (table, markdown); COCO's fractions, -1 kept,
    where programs read (json, csv)."""
    from kpbench.evaluation.cocoeval import evaluate

    gt_path, res_path, gt, results = files
    gt = json.loads(json.dumps(gt))
    for ann in gt["annotations"]:
        ann["area"] = max(ann["area"], 96.0**2 + 1)  # every person large: APm and ARm are COCO's -1
    gt_path.write_text(json.dumps(gt))
    stats = evaluate(gt, results).stats
    assert stats["APm"] == -1.0 and 0 < stats["AP"] < 1
    code, out, err = run_cli("evaluate", gt_path, res_path, "--format", "json")
    assert code == 0, err
    assert json.loads(out) == stats  # fractions, full precision, -1 kept
    code, out, _ = run_cli("evaluate", gt_path, res_path, "--format", "csv")
    assert code == 0
    assert f"keypoints,AP,{stats['AP']!r}" in out.splitlines() and "keypoints,APm,-1.0" in out.splitlines()
    code, out, _ = run_cli("evaluate", gt_path, res_path)
    header, values = out.splitlines()[1:3]
    cells = dict(zip(header.split(), values.split()))
    assert cells["AP"] == f"{100 * stats['AP']:.1f}" and cells["APm"] == "n/a" and "-1" not in out
    assert "percent" in out
    code, out, _ = run_cli("evaluate", gt_path, res_path, "--format", "markdown")
    assert code == 0
    assert f"| {100 * stats['AP']:.1f} |" in out and "| n/a |" in out and "-1" not in out


def test_run_dir_prints_what_it_rewrites_and_help_says_so(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    cache = run / "detections.jsonl"
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    records[2] = {"image_id": 1000, **{k: [] for k in ("boxes", "scores", "labels", "keypoints", "keypoint_scores")}}
    cache.write_text("".join(json.dumps(r) + "\n" for r in records))  # an image without detections is fine
    code, out, err = run_cli("evaluate", "--run", run, "--format", "json")
    assert code == 0, err
    assert len(json.loads((run / "bbox_results.json").read_text())) == 3
    wrote = [line.removeprefix("wrote ") for line in err.splitlines() if line.startswith("wrote ")]
    names = ["keypoints_results.json", "bbox_results.json", "metrics.csv", "metrics.md", "metrics.json", "manifest.json"]
    assert wrote == [str(run / name) for name in names]
    assert json.loads(out) == json.loads((run / "metrics.json").read_text())  # both iou types, nested
    code, out, _ = run_cli("evaluate", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "rewrites the run's keypoints_results.json, bbox_results.json, metrics.csv/.md/.json" in flat
    assert "nested by iou type" in flat and "flat object" in flat


def test_run_dir_iou_type_picks_what_is_shown(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    code, out, err = run_cli("evaluate", "--run", run, "--iou-type", "bbox", "--format", "json")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert json.loads(out) == metrics["bbox"]  # flat, as for files
    assert set(metrics) == {"keypoints", "bbox"}  # the run's metrics still hold both
    code, out, _ = run_cli("evaluate", "--run", run, "--iou-type", "keypoints", "--format", "csv")
    assert {line.split(",")[0] for line in out.splitlines()[1:]} == {"keypoints"}
    code, out, _ = run_cli("evaluate", "--run", run, "--iou-type", "bbox")
    lines = out.splitlines()
    assert any(line.split()[:1] == ["bbox"] for line in lines)
    assert not any(line.split()[:1] == ["keypoints"] for line in lines)
    code, out, _ = run_cli("evaluate", "--run", run)
    assert {"keypoints", "bbox"} <= {line.split()[0] for line in out.splitlines() if line.split()}
    assert_one_line_error(run_cli("evaluate", "--run", run, "--iou-type", "segm"), "--iou-type")


def test_run_dir_with_nan_in_the_cache_is_one_line_and_writes_nothing(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    cache = run / "detections.jsonl"
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["image_id"] for r in records] == [7, 42, 1000]
    records[1]["keypoints"][1][3][0] = float("nan")  # image 42, detection 1: result 2 of the rebuilt results
    cache.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, out, err = run_cli("evaluate", "--run", run)
    assert_one_line_error(
        (code, out, err), str(cache), "image 42, detection 1 (result 2 of the rebuilt results): 'keypoints' holds NaN"
    )
    assert "wrote" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        ("bad utf-8", ("detections.jsonl: line 2 is not a valid detections record", "utf-8")),
        ("huge label", ("detections.jsonl: line 2 is not a valid detections record",)),
        ("cache is a folder", ("detections.jsonl: is a directory",)),
        ("gt is a folder", ("ground_truth.json: is a directory",)),
    ],
)
def test_damaged_run_dir_is_one_line(tmp_path: Path, run_cli, damage: str, fragments: tuple[str, ...]) -> None:
    run = make_run_dir(tmp_path).path
    cache, gt = run / "detections.jsonl", run / "ground_truth.json"
    lines = cache.read_bytes().splitlines(keepends=True)
    if damage == "bad utf-8":
        cache.write_bytes(lines[0] + b'{"image_id": "\xff"}\n' + b"".join(lines[1:]))
    elif damage == "huge label":
        record = json.loads(lines[1])
        record["labels"][0] = 2**70
        cache.write_bytes(lines[0] + json.dumps(record).encode() + b"\n" + lines[2])
    else:
        target = cache if damage == "cache is a folder" else gt
        target.unlink()
        target.mkdir()
    for command in (("evaluate", "--run", run), ("thresholds", run), ("keypoints", run)):
        assert_one_line_error(run_cli(*command), *fragments)


def test_no_validate_is_refused_with_run(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    for args in ((run,), ("--run", run)):  # RUN_DIR, and its old spelling
        assert_one_line_error(run_cli("evaluate", *args, "--no-validate"), "--no-validate: not for a run directory")


def test_unknown_or_missing_backend_fails_before_the_work(tmp_path: Path, run_cli, monkeypatch) -> None:
    run = make_run_dir(tmp_path).path
    before = (run / "manifest.json").read_bytes()
    monkeypatch.setitem(sys.modules, "hotcoco", None)
    assert_one_line_error(run_cli("evaluate", "--run", run, "--backend", "hotcoco"), "hotcoco is not installed")
    assert_one_line_error(run_cli("evaluate", "--run", run, "--backend", "x"), "--backend: must be one of")
    assert (run / "manifest.json").read_bytes() == before


# --- issue 12: input that used to crash or hang ----------------------------------------------------------------

HUGE = "9" * 5001  # over Python's 4300-digit limit for int <-> str


@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
def test_huge_integer_ids_are_one_line(tmp_path: Path, good, run_cli, backend: str) -> None:
    """A 5001-digit id is refused; its message shows its length (formatting the value itself would crash)."""
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    image_id = good[0]["images"][0]["id"]
    gt_path.write_text(json.dumps(good[0]))
    res_path.write_text(json.dumps([dict(good[1][0], image_id=-1)]).replace('"image_id": -1', f'"image_id": {HUGE}'))
    assert_one_line_error(run_cli("evaluate", gt_path, res_path, "--backend", backend),
                          f"error: {res_path}: result 0: image_id an integer of 5001 digits is not in the ground truth")
    res_path.write_text(json.dumps(good[1]))
    gt_path.write_text(json.dumps(good[0]).replace(f'"id": {image_id},', f'"id": {HUGE},', 1))
    assert_one_line_error(run_cli("evaluate", gt_path, res_path, "--backend", backend),
                          f"error: {gt_path}: image 0: 'id' must be an integer (as COCO ids are) below 2**53, got an "
                          "integer of 5001 digits")


@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
@pytest.mark.parametrize("validate", ["--validate", "--no-validate"])
def test_fifo_device_and_directory_are_refused_before_reading(
    tmp_path: Path, good, run_cli, backend: str, validate: str
) -> None:
    """A FIFO with no writer would block forever and /dev/zero never end: both are refused before any read."""
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(good[0]))
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "is a FIFO (named pipe), not a regular file"), (Path("/dev/zero"), "is a character device, not a regular file"), (tmp_path, "a directory, expected a JSON file (a run directory comes alone: evaluate RUN_DIR)")):
        assert_one_line_error(run_cli("evaluate", gt_path, path, "--backend", backend, validate),
                              f"error: {path}: {kind}")
        assert_one_line_error(run_cli("evaluate", path, gt_path, "--backend", backend, validate),
                              f"error: {path}: {kind}")


def test_file_too_large_for_memory_is_one_line(tmp_path: Path, good) -> None:
    """Under a 2 GB address-space limit, a 3 GB (sparse) file ends in one line naming it and its size."""
    import resource

    gt_path, big = tmp_path / "gt.json", tmp_path / "big.json"
    gt_path.write_text(json.dumps(good[0]))
    with big.open("wb") as fh:
        fh.truncate(3 * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 10**9, 2 * 10**9))

    for args in ((big, gt_path), (gt_path, big)):
        proc = subprocess.run([sys.executable, "-m", "kpbench", "evaluate", *map(str, args)], capture_output=True,
                              text=True, timeout=120, preexec_fn=limit)
        assert_one_line_error(proc, f"error: {big}: not enough memory to read this 3,221,225,472-byte file")
