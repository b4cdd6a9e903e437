"""Small faults found when kpbench was tried as a new user would (issue 23, item 14): a GT file given to `keypoints`,
a JSON file given as a speed CSV, the speed report's definition of a size for every model, `kpbench --help` grouped
by job, and a missing-torch hint that names an install that works."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from kpdata import COCO_SAMPLE, assert_one_line_error, make_run_dir, requires_shared
from test_report import speed_row, write_device

from kpbench.core import install

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RESULTS = ROOT / "tests" / "fixtures" / "yolo11n_pose_coco_sample_results.json"


def test_keypoints_given_a_json_file_says_it_needs_a_run_directory(tmp_path: Path, run_cli) -> None:
    """Before: "gt.json: run directory not found", about a file that is there."""
    gt = tmp_path / "gt.json"
    gt.write_text("{}")
    assert_one_line_error(run_cli("keypoints", gt),
                          f"error: {gt}: a file, not a run directory; `kpbench keypoints` breaks down a run made by "
                          "`kpbench run` (for a results file: kpbench run --results RESULTS_JSON --coco-root ROOT")
    assert_one_line_error(run_cli("keypoints", tmp_path / "nope"), f"error: {tmp_path / 'nope'}: run directory not found")


def test_a_json_file_given_as_a_speed_csv_is_named_json(tmp_path: Path, run_cli) -> None:
    """Before: "row 1: 2 fields, the header has 1 (a half-written row?)"."""
    csv_path = write_device(tmp_path / "speed", "NVIDIA A10G", [speed_row("NVIDIA A10G", 640, "fp32-bs1", 16.0)])
    manifest = csv_path.with_suffix(".json")
    assert_one_line_error(run_cli("report", manifest, "--kind", "speed"),
                          f"error: {manifest}: a JSON file, not a CSV: the manifest of a speed table; give {csv_path}")
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "score": 0.5}]))
    assert_one_line_error(run_cli("plot", results), f"error: {results}: a JSON file, not a CSV")
    assert_one_line_error(run_cli("report", results, "--kind", "speed"), f"error: {results}: a JSON file, not a CSV")


def test_what_was_timed_defines_the_size_of_every_model_of_the_table(tmp_path: Path, run_cli) -> None:
    """Before: "Size = the short side given to the model's own transform" under YOLO's and MediaPipe's rows too."""
    from kpbench.engine.speed import SpeedRun, write_speed_files

    rows = [speed_row("NVIDIA A10G", 640, "fp32-bs1", 16.0, model="keypointrcnn_resnet50_fpn"),
            speed_row("NVIDIA A10G", 640, "fp32-bs1", 90.0, model="yolo11n-pose"),
            speed_row("NVIDIA A10G", 640, "fp32-bs1", 50.0, model="mine")]
    models = [{"spec": {"spec": s}, "info": {"name": n, "input_size_definition": d}} for s, n, d in (
        ("keypointrcnn", "keypointrcnn_resnet50_fpn", "the short side given to torchvision's transform"),
        ("yolo", "yolo11n-pose", "imgsz = s, the long side"),
        ("mine.py:Mine", "mine", None))]
    manifest = {"kind": "kpbench-speed", "version": 1, "created": "2026-01-01T00:00:00Z", "settings": {"weights": "x"},
                "environment": {"device_name": "NVIDIA A10G", "device": "cuda:0"}, "images": {"source": "coco"},
                "models": models}
    write_speed_files(tmp_path / "speed", SpeedRun(rows=rows, manifest=manifest), device_name="NVIDIA A10G")
    code, out, err = run_cli("report", tmp_path / "speed", "--kind", "speed", "--format", "markdown")
    assert code == 0, err
    timed = out.split("## What was timed\n\n", 1)[1]
    assert timed.startswith(
        "- **Size** = each model's own input size (its `set_input_size` hook); images are not resized beforehand, "
        "and `padded_shapes` are the tensors that reached the network:\n"
        "  - `keypointrcnn_resnet50_fpn`: the short side given to torchvision's transform.\n"
        "  - `mine`: not recorded with this table; for the built-in models: Keypoint R-CNN's short side (max_size = "
        "round(s*1333/800)), YOLO's imgsz (the long side), MediaPipe's long side before BlazePose.\n"
        "  - `yolo11n-pose`: imgsz = s, the long side.\n"
        "- **Model time**")
    assert timed.count("**Size**") == 1
    # A table of CSVs without model names (older kpbench) gets the one generic line.
    code, out, _ = run_cli("report", write_device(tmp_path / "old", "NVIDIA A10G",
                                                  [speed_row("NVIDIA A10G", 640, "fp32-bs1", 16.0)]),
                           "--kind", "speed", "--format", "markdown")
    assert "- **Size** = the model's input size, set through its `set_input_size` hook: not recorded" in out


def test_the_adapters_define_their_size_and_the_model_info_carries_it() -> None:
    from kpbench.models.base import ModelInfo, model_info
    from kpbench.models.keypointrcnn import KeypointRCNNModel
    from kpbench.models.mediapipe import MediaPipePoseModel
    from kpbench.models.yolo import YoloPoseModel

    assert "short side" in KeypointRCNNModel.input_size_definition
    assert YoloPoseModel.input_size_definition.startswith("imgsz = s, the long side")
    assert MediaPipePoseModel.input_size_definition.startswith("the long side the image is resized to")

    class Mine:
        input_size_definition = "the square side"

        def info(self) -> ModelInfo:
            return ModelInfo(weights=None, source="test")

    assert model_info(Mine()).input_size_definition == "the square side"


def test_help_lists_the_commands_by_job_in_the_order_of_the_work(run_cli) -> None:
    """Before: compare, html, analyze, evaluate, run, speed, ... in the order the modules were imported."""
    code, out, _ = run_cli("--help")
    assert code == 0
    sections = [line.rstrip(":") for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert sections == ["Options", "Data and settings", "Run models", "Score results", "Analyse", "Report"]
    names = [line.split()[0] for line in out.split("Data and settings:", 1)[1].splitlines() if line.startswith("  ")]
    assert names == ["data", "demo", "config", "run", "speed", "sweep", "export", "evaluate", "thresholds", "keypoints",
                     "analyze", "compare", "report", "html", "plot", "draw"]
    # Every command's help line starts in the same column, across groups.
    starts = {line.index(line.split()[1]) for line in out.split("Data and settings:", 1)[1].splitlines()
              if line.startswith("  ")}
    assert len(starts) == 1
    code, out, _ = run_cli("data", "--help")  # a sub-group keeps one plain list
    assert code == 0 and "Commands:\n  download" in out


def test_a_command_in_no_group_is_listed_under_other_commands(monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    import typer

    from kpbench.cli.app import app

    monkeypatch.setattr(app, "registered_commands", list(app.registered_commands))

    @app.command("newthing", help="Something new.")
    def newthing() -> None:
        pass

    @app.command("paneled", help="Says its own group.", rich_help_panel="Report")
    def paneled() -> None:
        pass

    code, out, _ = run_cli("--help")
    assert code == 0 and out.rstrip().endswith("Other commands:\n  newthing    Something new.")
    report = out.split("Report:\n", 1)[1].split("\n\n", 1)[0]
    assert report.splitlines()[-1].split() == ["paneled", "Says", "its", "own", "group."]
    assert typer  # the app is typer's


def test_the_missing_torch_hint_names_an_install_that_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: pip install 'kpbench[torch]', which no index a source checkout has serves."""
    from kpbench.cli.app import missing_torch_message

    # This checkout (kpbench imported from it, as in CI's editable install): its own path, from any folder.
    assert install.source_checkout() == ROOT
    assert missing_torch_message("kpbench run") == ("kpbench run runs a model, which needs torch and torchvision (not "
                                                    f"installed): pip install -e {shlex.quote(f'{ROOT}[torch]')}")

    class Wheel:  # an install from a wheel: no direct_url.json, requirements from its metadata
        requires = ('numpy>=1.24', 'torch>=2.3; extra == "torch"', 'torchvision>=0.18; extra == "torch"',
                    'kpbench[torch]; extra == "yolo"', 'ultralytics>=8.1; extra == "yolo"')

        def read_text(self, name: str) -> None:
            return None

    monkeypatch.setattr(install, "source_checkout", lambda: None)
    assert install.install_hint("torch", Wheel()) == ("pip install 'torch>=2.3' 'torchvision>=0.18' (kpbench's torch "
                                                      'extra; or pip install -e ".[torch]" in a kpbench source checkout)')
    assert install.install_hint("yolo", Wheel()).startswith("pip install 'ultralytics>=8.1' 'torch>=2.3' "
                                                            "'torchvision>=0.18' (kpbench's yolo extra;")

    class Editable(Wheel):
        def read_text(self, name: str) -> str:
            return json.dumps({"dir_info": {"editable": True}, "url": "file:///src/kp%20bench"})

    assert install.install_hint("torch", Editable()) == "pip install -e '/src/kp bench[torch]'"


def test_the_hint_from_outside_the_checkout_is_the_same(tmp_path: Path) -> None:
    """The checkout's path, not ".": it works from the folder the user is in."""
    code = "from kpbench.cli.app import missing_torch_message as m; print(m('x'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert out.strip().endswith(f"pip install -e {shlex.quote(f'{ROOT}[torch]')}")


def test_compare_refuses_a_file_in_one_line(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    gt = run / "ground_truth.json"
    assert_one_line_error(run_cli("compare", gt, run), f"error: {gt}: not a run directory")


def test_draw_given_a_json_file_stops_before_building_the_model(tmp_path: Path, run_cli) -> None:
    """Before: it built the model (COCO_V1 weights: a download) and only then failed to decode the file."""
    gt = tmp_path / "gt.json"
    gt.write_text("{}")
    assert_one_line_error(run_cli("draw", gt, "--weights", "none", "--out", tmp_path / "out"),
                          f"error: {gt}: a JSON file, not an image; draw takes a run directory, or image files")
    assert not (tmp_path / "out").exists()


# --- README's commands walked with bad --groups: one line naming --groups (or its file), before any work -----------

COCO17_NAMES = ("nose, left_eye, right_eye, left_ear, right_ear, left_shoulder, right_shoulder, left_elbow, right_elbow, "
                "left_wrist, right_wrist, left_hip, right_hip, left_knee, right_knee, left_ankle, right_ankle")


@requires_shared
@pytest.mark.parametrize(("groups", "line"), [
    ("face:nose,foo", f"error: --groups: group 'face': 'foo' is not a keypoint of the coco17 schema ({COCO17_NAMES}; "
                      "or 0-based indices)"),
    ("face:99", "error: --groups: group 'face' has a keypoint outside 0..16"),
    ("face:0;face:1", "error: --groups: two groups are named 'face'"),
])  # fmt: skip
def test_evaluate_with_groups_the_schema_lacks_is_one_line_naming_groups(groups: str, line: str, run_cli) -> None:
    """Before: the sample's notes were printed, then "error: keypoint groups: ..." (or "keypoint schema 'coco17':
    ..."), which named no option."""
    code, out, err = run_cli("evaluate", COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json", SAMPLE_RESULTS,
                             "--groups", groups)
    assert (code, out, err) == (2, "", line + "\n")


def test_a_groups_file_is_named_and_a_library_caller_keeps_its_message(tmp_path: Path, run_cli) -> None:
    from kpbench.core.errors import KpbenchError
    from kpbench.core.schema import COCO17, parse_groups, resolve_groups
    from kpbench.data.synthetic import make_synthetic_coco

    gt, results = make_synthetic_coco(num_images=4, seed=2)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    path = tmp_path / "groups.json"
    path.write_text(json.dumps({"face": ["nose", "beak"]}))
    code, out, err = run_cli("evaluate", tmp_path / "gt.json", tmp_path / "res.json", "--groups", path)
    assert (code, out) == (2, "")
    assert err == f"error: {path}: group 'face': 'beak' is not a keypoint of the coco17 schema ({COCO17_NAMES}; or " \
                  "0-based indices)\n"
    assert parse_groups(str(path)).source == str(path) and parse_groups("a:1").source == "--groups"
    with pytest.raises(KpbenchError, match=r"^keypoint groups: group 'face': 'beak' is not a keypoint"):
        resolve_groups([("face", ["beak"])], COCO17)  # plain pairs from Python: the library's own words
    with pytest.raises(KpbenchError, match=r"^keypoint schema 'coco17': group 'face' has a keypoint outside 0\.\.16$"):
        resolve_groups([("face", [17])], COCO17)


def test_analyze_checks_groups_before_the_analysis(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the whole error analysis ran (minutes on val2017), then --groups was refused."""
    import kpbench.analysis.diagnose
    import kpbench.evaluation.runeval
    from kpbench.data.synthetic import make_synthetic_coco

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("analysed or evaluated before --groups was checked")

    monkeypatch.setattr(kpbench.analysis.diagnose, "analyze_errors", never)
    monkeypatch.setattr(kpbench.analysis.diagnose, "analyze_run_errors", never)
    monkeypatch.setattr(kpbench.evaluation.runeval, "evaluate_run", never)
    gt, results = make_synthetic_coco(num_images=4, seed=2)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    run = make_run_dir(tmp_path / "r").path
    line = "error: --groups: group 'legs' has a keypoint outside 0..16\n"
    for args in (("analyze", tmp_path / "gt.json", tmp_path / "res.json"), ("analyze", run), ("evaluate", run)):
        assert run_cli(*args, "--groups", "legs:13,17") == (2, "", line), args
    assert not (run / "keypoint_ap.json").exists()


def test_a_config_key_above_every_table_says_where_it_goes(tmp_path: Path, run_cli) -> None:
    """Before: `model = "yolo"` at the top of a config was "unknown table [model]", about a key."""
    config = tmp_path / "c.toml"
    for text, where in (('model = "yolo"\n', "[run] or [speed]"), ("min_size = 3\n", "[run]"),
                        ("zzz = 1\n", "[run], [speed] or [thresholds]")):
        config.write_text(text)
        key = text.split(" ")[0]
        line = f"error: {config}: '{key}' is outside any table; settings go under a table: {where}\n"
        assert run_cli("config", "show", config) == (2, "", line)
    config.write_text("[runn]\n")  # a table kpbench does not know is still named as one
    assert run_cli("config", "show", config)[2].startswith(f"error: {config}: unknown table [runn] (did you mean")


def test_draw_top_0_and_an_unknown_schema_are_one_line_naming_the_option(tmp_path: Path, run_cli) -> None:
    """Before: draw printed its person-threshold line, then refused --top 0; --schema nope named no option."""
    run = make_run_dir(tmp_path / "r").path
    assert run_cli("draw", run, "--top", "0") == (2, "", "error: --top: must be >= 1, got 0\n")
    assert not (run / "draw").exists()
    gt, res = run / "ground_truth.json", run / "keypoints_results.json"
    line = "error: --schema: unknown keypoint schema 'nope'; built in: ap10k17, coco17, crowdpose14\n"
    for command in ("evaluate", "analyze"):
        assert run_cli(command, gt, res, "--schema", "nope") == (2, "", line), command
