"""One command-line vocabulary: a concept has one option name (and one help text) in every command that has it,
old spellings still work as hidden aliases, and evaluate and thresholds take their inputs the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from kpdata import XTCOCO, assert_one_line_error, make_run_dir, requires_shared

from kpbench.cli import app
from kpbench.cli.options import REPEAT_NOTE


def _commands() -> dict[str, Any]:
    """{"evaluate": click command, "data download": ..., ...} of the whole app."""
    import typer.main

    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = command

    walk(typer.main.get_command(app), "")
    return found


def _options(command: Any) -> dict[str, Any]:
    """{"--name": click option} of a command, visible and hidden."""
    return {name: param for param in command.params for name in getattr(param, "opts", ()) if name.startswith("--")}


# The shared concepts and the commands that have them (README's "Command-line options" table).
SHARED = {
    "--coco-root": ("run", "speed", "data download"),
    "--split": ("run", "speed", "data download"),
    "--image-ids": ("run", "draw"),
    "--weights": ("run", "speed", "draw"),
    "--min-size": ("run", "draw"),
    "--max-size": ("run", "draw"),
    "--box-score-thresh": ("run", "speed"),
    "--person-thresh": ("thresholds", "draw"),
    "--kp-thresh": ("draw",),
    "--device": ("run", "speed", "draw", "demo"),
    "--backend": ("run", "evaluate"),
    "--iou-type": ("evaluate", "thresholds"),
    "--progress": ("run", "speed", "data download", "demo"),
    "--config": ("run", "speed", "thresholds"),
    "--format": ("evaluate", "thresholds", "keypoints", "report", "config show", "analyze"),
    "--out": ("run", "speed", "evaluate", "thresholds", "draw", "plot", "report", "analyze", "demo"),
    "--bootstrap": ("evaluate", "analyze"),
    "--bootstrap-seed": ("evaluate", "compare", "analyze"),
    "--schema": ("evaluate", "analyze"),
    "--sigmas": ("evaluate", "analyze"),
    "--groups": ("evaluate", "analyze"),
}
# Options whose help says what this command does with them (where the output goes, which formats).
PER_COMMAND_HELP = {"--out", "--format", "--config", "--iou-type", "--split", "--coco-root", "--seed"}
OLD_SPELLINGS = {
    "data download": {"--root"},
    "draw": {"--score-thresh"},
    "evaluate": {"--run", "--gt", "--results"},
    "thresholds": {"--run", "--gt", "--results"},
    "analyze": {"--gt", "--results"},
}


def test_each_shared_concept_has_one_name_and_one_definition() -> None:
    commands = _commands()
    for option, names in SHARED.items():
        helps = set()
        for name in names:
            params = _options(commands[name])
            assert option in params, f"{name} has no {option}"
            assert not params[option].hidden, (name, option)
            helps.add(params[option].help.removesuffix(REPEAT_NOTE))  # speed takes several models
        if option not in PER_COMMAND_HELP:
            assert len(helps) == 1, (option, helps)  # the same definition (kpbench.cli.options) everywhere


def test_old_spellings_are_hidden_aliases_only() -> None:
    commands = _commands()
    for name, command in commands.items():
        options = _options(command)
        hidden = {opt for opt, param in options.items() if param.hidden}
        assert hidden == OLD_SPELLINGS.get(name, set()), name
    # The old names are gone from every command's visible options (draw's --gt flag, a GT panel, and run's
    # --results, results made elsewhere as the model, are other things).
    visible = {(name, opt) for name, command in commands.items() for opt, p in _options(command).items() if not p.hidden}
    assert {opt for _, opt in visible} & {"--root", "--score-thresh", "--gt", "--results", "--run"} == {"--gt", "--results"}
    assert [name for name, opt in visible if opt == "--gt"] == ["draw"]
    assert [name for name, opt in visible if opt == "--results"] == ["run"]


def test_help_shows_the_inputs_the_same_way(run_cli) -> None:
    for command in ("evaluate", "thresholds", "analyze"):
        code, out, _ = run_cli(command, "--help")
        usage = " ".join(out.split("\n\n")[0].split())  # unwrapped
        assert code == 0 and usage.endswith(f"kpbench {command} [OPTIONS] [RUN_DIR|GT_JSON] [RESULTS_JSON]"), usage
        assert "--gt" not in out and "--run" not in out and "--results" not in out


@requires_shared
def test_evaluate_and_thresholds_take_gt_and_results_as_arguments(run_cli) -> None:
    gt, res = XTCOCO / "example_coco_val.json", XTCOCO / "example_coco_preds.json"
    new = run_cli("thresholds", gt, res, "--format", "json", "--thresholds", "0.5,0.9")
    old = run_cli("thresholds", "--gt", gt, "--results", res, "--format", "json", "--thresholds", "0.5,0.9")
    assert new[0] == 0 and new == old
    assert [row["threshold"] for row in json.loads(new[1])["person"]] == [0.5, 0.9]
    evaluated = run_cli("evaluate", gt, res, "--format", "json")
    assert evaluated[0] == 0 and evaluated == run_cli("evaluate", "--gt", gt, "--results", res, "--format", "json")
    assert json.loads(evaluated[1])["AP"] == pytest.approx(0.8608896054440609, abs=0)


def test_evaluate_and_thresholds_take_a_run_directory_as_argument(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    new = run_cli("evaluate", run, "--format", "json")
    old = run_cli("evaluate", "--run", run, "--format", "json")
    assert new[0] == 0 and new[1] == old[1]
    assert list(json.loads(new[1])) == ["keypoints", "bbox"]
    code, out, _ = run_cli("thresholds", run, "--format", "csv", "--table", "keypoint", "--kp-thresholds", "0")
    assert code == 0 and out.startswith("threshold,keypoint,")


@pytest.mark.parametrize("command", ["evaluate", "thresholds"])
def test_inputs_are_checked_the_same_way(tmp_path: Path, run_cli, command: str) -> None:
    run = make_run_dir(tmp_path).path
    gt = run / "ground_truth.json"
    res = run / "keypoints_results.json"
    assert_one_line_error(run_cli(command), f"error: {command} needs RUN_DIR, or GT_JSON RESULTS_JSON")
    assert_one_line_error(run_cli(command, tmp_path / "nope"), f"{tmp_path / 'nope'}: run directory not found")
    assert_one_line_error(run_cli(command, gt), f"{gt}: not a directory (for a results file, give GT_JSON RESULTS_JSON)")
    assert_one_line_error(run_cli(command, run, res), f"{run}: a directory, expected a JSON file")
    assert_one_line_error(run_cli(command, gt, res, "--run", run), f"{command}: give either RUN_DIR or GT_JSON RESULTS_JSON, not both")
    assert_one_line_error(run_cli(command, run, "--gt", gt, "--results", res), "not both")
    assert_one_line_error(run_cli(command, "--gt", gt), f"{command}: --gt and --results go together")
    old = run_cli(command, "--gt", gt, "--results", res, "--format", "json")
    assert old[0] == 0 and old == run_cli(command, gt, res, "--format", "json")  # the old spelling still works


def test_draw_person_thresh_and_its_old_name(tmp_path: Path, run_cli) -> None:
    run = make_run_dir(tmp_path).path
    new = run_cli("draw", run, "--image-ids", "42", "--person-thresh", "0.4", "--out", tmp_path / "new")
    old = run_cli("draw", run, "--image-ids", "42", "--score-thresh", "0.4", "--out", tmp_path / "old")
    assert new[0] == old[0] == 0
    assert (tmp_path / "new" / "42.png").read_bytes() == (tmp_path / "old" / "42.png").read_bytes()
    # An error names the option as it was given.
    assert_one_line_error(run_cli("draw", run, "--person-thresh", "2"), "error: --person-thresh: 2.0 is outside [0, 1]")
    assert_one_line_error(run_cli("draw", run, "--score-thresh", "2"), "error: --score-thresh: 2.0 is outside [0, 1]")
    assert_one_line_error(
        run_cli("draw", run, "--person-thresh", "0.5", "--score-thresh", "0.5"),
        "error: --score-thresh: the old name of --person-thresh; give one of them",
    )


def test_data_download_takes_coco_root(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KPBENCH_COCO_ROOT", raising=False)
    assert_one_line_error(run_cli("data", "download"), "error: no COCO root given: pass --coco-root DIR or set KPBENCH_COCO_ROOT")
    assert_one_line_error(
        run_cli("data", "download", "--coco-root", tmp_path / "a", "--root", tmp_path / "b"),
        "error: --root: the old name of --coco-root; give one of them",
    )
    # Both names reach the download with the same root (stopped before any network access).
    import kpbench.data.download as download

    seen: list[Path] = []
    monkeypatch.setattr(download, "ensure_coco", lambda root, *a, **k: seen.append(root))
    for option in ("--coco-root", "--root"):
        assert run_cli("data", "download", option, tmp_path / "coco")[0] == 0
    monkeypatch.setenv("KPBENCH_COCO_ROOT", os.fspath(tmp_path / "env"))
    assert run_cli("data", "download")[0] == 0
    assert seen == [tmp_path / "coco", tmp_path / "coco", tmp_path / "env"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ([], "error: report needs PATHS: the speed CSVs of `kpbench speed`, or folders holding them (e.g. kpbench report results/speed)"),
        (["--kind", "run"], "error: report needs PATHS: run directories, or a folder holding them (e.g. kpbench report --kind run results)"),
    ],
)
def test_report_without_a_path_says_what_to_give(run_cli, kind: list[str], expected: str) -> None:
    code, out, err = run_cli("report", *kind)
    assert (code, out, err) == (2, "", expected + "\n")
