"""TOML run configs: merging, overrides, every bad-config error, and the shipped configs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kpbench.core.config import (
    RunSettings,
    SpeedSettings,
    ThresholdSettings,
    load_config,
    merge_settings,
    parse_list,
    settings_dict,
    to_toml,
)
from kpbench.core.errors import KpbenchError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_protocol() -> None:
    run = merge_settings(RunSettings)
    # No weights given: the model's own (COCO_V1 for keypointrcnn, recorded so in the run's config).
    assert (run.model, run.weights, run.min_size, run.max_size, run.box_score_thresh, run.batch_size, run.dtype) == (
        "keypointrcnn", None, 800, 1333, 0.05, 1, "fp32"
    )
    assert run.images == "all"
    assert merge_settings(SpeedSettings).sizes == [320, 480, 640, 800, 1024]
    assert merge_settings(ThresholdSettings).thresholds[:3] == [0.0, 0.05, 0.1]
    assert len(merge_settings(ThresholdSettings).thresholds) == 20


def test_file_then_command_line_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[run]\nweights = "none"\nmin_size = 512\nmax_size = 853\nlimit = 3\n')
    config = load_config(path)
    merged = merge_settings(RunSettings, config, {"min_size": 320, "limit": None, "dtype": "bf16"})
    assert merged.weights == "none"  # from the file
    assert merged.min_size == 320  # the command line wins
    assert merged.max_size == 853  # file value kept
    assert merged.limit == 3  # None means "option not given"
    assert merged.dtype == "bf16"
    assert merged.box_score_thresh == 0.05  # default
    assert config.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert config.path == str(path)


def test_int_where_float_expected_is_coerced(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[thresholds]\nthresholds = [0, 0.5, 1]\nperson_thresh = 1\n"))
    merged = merge_settings(ThresholdSettings, config)
    assert merged.thresholds == [0.0, 0.5, 1.0] and isinstance(merged.person_thresh, float)


@pytest.mark.parametrize(
    "text,fragments",
    [
        ("[run]\nmin_sise = 3\n", ["unknown key 'min_sise'", "did you mean 'min_size'"]),
        ("[runn]\n", ["unknown table [runn]", "did you mean 'run'"]),
        ('[run]\nmin_size = "big"\n', ["'min_size'", "must be int", "str"]),
        ("[run]\nbatch_size = 0\n", ["'batch_size' must be >= 1"]),
        ("[run]\nbox_score_thresh = 1.5\n", ["'box_score_thresh' must be <= 1.0"]),
        ('[run]\ndtype = "fp8"\n', ["'dtype' must be one of fp32, fp16, bf16"]),
        ("[speed]\nsizes = []\n", ["'sizes' is an empty list"]),
        ("[speed]\nsizes = [320, -1]\n", ["'sizes' must be >= 1"]),
        ("[thresholds]\nthresholds = [0.5, 2.0]\n", ["'thresholds' must be <= 1.0"]),
        ("[run]\ndownload = 1\n", ["'download'", "must be bool"]),
        ("run = 3\n", ["'run' must be a table"]),
        ("[run\n", ["not valid TOML"]),
    ],
)
def test_bad_configs(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(KpbenchError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_bad_override_names_the_option() -> None:
    """A command-line value's error names the option (--min-size), not the config key or "command line"."""
    with pytest.raises(KpbenchError) as info:
        merge_settings(RunSettings, None, {"min_size": 0})
    assert str(info.value) == "--min-size: must be >= 1, got 0"
    with pytest.raises(KpbenchError) as info:
        merge_settings(SpeedSettings, None, {"dtype": ["fp32", "fp64"]})
    assert str(info.value) == "--dtype: must be one of fp32, fp16, bf16, got 'fp64'"
    with pytest.raises(KpbenchError) as info:
        merge_settings(SpeedSettings, None, {"box_score_thresh": 1.5})
    assert str(info.value) == "--box-score-thresh: must be <= 1.0, got 1.5"


def test_speed_keys_are_the_option_names(tmp_path: Path) -> None:
    """[speed] keys are the options' names: `dtype` and `batch_size` (lists), as --dtype and --batch-size."""
    config = load_config(write(tmp_path, '[speed]\ndtype = ["fp32", "bf16"]\nbatch_size = [1, 4]\n'))
    merged = merge_settings(SpeedSettings, config)
    assert (merged.dtype, merged.batch_size) == (["fp32", "bf16"], [1, 4])
    assert merge_settings(SpeedSettings, config, {"dtype": ["fp16"]}).dtype == ["fp16"]  # the option wins
    fields = set(settings_dict(merged))
    assert "dtypes" not in fields and "batch_sizes" not in fields
    with pytest.raises(KpbenchError, match=r"unknown key 'dtypes' in \[speed\] \(renamed to 'dtype'"):
        load_config(write(tmp_path, '[speed]\ndtypes = ["fp32"]\n'))


def test_max_size_below_min_size_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KpbenchError) as info:
        merge_settings(RunSettings, None, {"min_size": 512, "max_size": 256})
    assert str(info.value) == ("--max-size 256 is smaller than --min-size 512: the long-side cap must be at least "
                               "the short side")
    path = write(tmp_path, "[run]\nmax_size = 400\n")
    with pytest.raises(KpbenchError) as info:
        merge_settings(RunSettings, load_config(path), {"min_size": 512})
    assert str(info.value).startswith(f"--max-size 400 ('max_size' in {path}) is smaller than --min-size 512")
    with pytest.raises(KpbenchError, match=r"^--max-size 1333 \(the default\) is smaller than --min-size 1400"):
        merge_settings(RunSettings, None, {"min_size": 1400})
    assert merge_settings(RunSettings, None, {"min_size": 512, "max_size": 512}).max_size == 512  # equal is fine


def test_parse_list() -> None:
    assert parse_list("320, 480,640", int, "--sizes") == [320, 480, 640]
    assert parse_list(None, int, "--sizes") is None
    with pytest.raises(KpbenchError, match="--sizes: empty list"):
        parse_list(" , ", int, "--sizes")
    with pytest.raises(KpbenchError, match="--sizes: empty item in '320,,640'"):
        parse_list("320,,640", int, "--sizes")
    with pytest.raises(KpbenchError, match="--sizes: cannot read"):
        parse_list("320,abc", int, "--sizes")


@pytest.mark.parametrize("name", ["reference.toml", "quick.toml", "speed.toml"])
def test_shipped_configs_parse_and_validate(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    assert config.tables
    for section, table in config.tables.items():
        cls = {"run": RunSettings, "speed": SpeedSettings, "thresholds": ThresholdSettings}[section]
        merged = merge_settings(cls, config)
        for key, value in table.items():
            assert getattr(merged, key) == value


def test_reference_config_is_the_protocol() -> None:
    config = load_config(REPO / "configs" / "reference.toml")
    # The file spells out keypointrcnn's default weights, which the settings leave to the model (None).
    defaults = settings_dict(merge_settings(RunSettings, None, {"weights": "COCO_V1"}))
    assert settings_dict(merge_settings(RunSettings, config)) == defaults
    text = (REPO / "configs" / "reference.toml").read_text()
    for key in config.tables["run"]:  # every value carries a comment saying why
        before = text[: text.index(f"\n{key} =")]
        assert before.rstrip().splitlines()[-1].startswith("#"), key


def test_toml_round_trip(tmp_path: Path) -> None:
    out = 'a "b"\\c\nd\te\x01é'  # quotes, a backslash, control characters, non-ASCII
    tables = {"run": settings_dict(merge_settings(RunSettings, None, {"limit": 4, "out": out}))}
    path = write(tmp_path, to_toml(tables))
    merged = merge_settings(RunSettings, load_config(path))
    assert merged.limit == 4 and merged.out == out


def test_config_show_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "[speed]\niters = 7\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kpbench", "config", "show", str(path), "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["speed"]["iters"] == 7 and shown["speed"]["warmup"] == 10
    assert shown["run"]["min_size"] == 800
    assert shown["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    bad = write(tmp_path, "[speed]\niter = 7\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kpbench", "config", "show", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "did you mean 'iters'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("cls", [RunSettings, SpeedSettings])
def test_empty_out_is_refused(cls: type) -> None:
    """--out "" used to fall back to the default folder silently."""
    with pytest.raises(KpbenchError, match="--out: an empty path"):
        merge_settings(cls, None, {"out": ""})
