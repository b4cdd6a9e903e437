"""Settings for the long-running commands, and TOML run configs that hold them.

A config file has one table per command: ``[run]``, ``[speed]`` and ``[thresholds]``. Each key is the option
name with ``-`` written as ``_`` (``--min-size`` is ``min_size``). Precedence, lowest first: the defaults
below, the config file, then options given on the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpbench.core.errors import KpbenchError
from kpbench.core.io import check_regular_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib
    import tomli as tomllib

WEIGHTS_NAMES = ("COCO_V1", "COCO_LEGACY", "none")
DTYPES = ("fp32", "fp16", "bf16")
IOU_TYPES = ("keypoints", "bbox")


MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit seed


def _opt(default: Any, help: str, **checks: Any) -> Any:
    """A dataclass field with its help text and validation rules (choices, min, max) as metadata."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


def _sources_field() -> Any:
    """The `sources` field every settings class ends with: where each value that is not a default came from
    ({key: COMMAND_LINE or the config file's path}), filled by `merge_settings`; None for settings built in Python,
    where a value that differs from its default counts as given (`given_settings`). Not a setting: no config key,
    not in `settings_dict` (so not in manifests, resume checks or `config show`)."""
    return field(default=None, repr=False, compare=False, metadata={"internal": True})


@dataclass
class RunSettings:
    """Everything `kpbench run` needs: data, model, protocol and output."""

    coco_root: str | None = _opt(None, "COCO root holding annotations/ and <split>/ (or $KPBENCH_COCO_ROOT)")
    split: str = _opt("val2017", "COCO split", choices=("val2017", "train2017"))
    images: str = _opt("all", "'all' (the protocol) or 'with-persons'", choices=("all", "with-persons"))
    limit: int | None = _opt(None, "run on the first N selected images only", min=1)
    image_ids: list[int] | None = _opt(None, "run on these image ids only", min=0)
    download: bool = _opt(False, "download whatever is missing from the COCO root first")
    model: str = _opt("keypointrcnn", "the pose model: keypointrcnn, FILE.py:Class, package.module:Class or an "
                      "installed kpbench.models entry point")
    weights: str | None = _opt(None, "the model's weights (keypointrcnn: COCO_V1 when not given, COCO_LEGACY, none "
                               "(random, seeded) or a checkpoint path)")
    min_size: int = _opt(800, "the transform's short side (model default 800)", min=1)
    max_size: int = _opt(1333, "the transform's long-side cap (model default 1333)", min=1)
    box_score_thresh: float = _opt(0.05, "the model's box score threshold (0.05 is the AP setting)", min=0.0, max=1.0)
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    batch_size: int = _opt(1, "images per model call (1 is the protocol)", min=1)
    # On a CPU, decoding in worker processes takes cores from the model itself (YOLO11n-pose on 2 cores: 0.92 of a
    # bare loop's images/s with 2 workers, 1.01 with none); on CUDA it overlaps the GPU.
    workers: int | None = _opt(None, "DataLoader worker processes (default: 2 on CUDA, 0 on a CPU)", min=0)
    dtype: str = _opt("fp32", "fp32, or fp16/bf16 through autocast", choices=DTYPES)
    seed: int = _opt(0, "seed for random weights (--weights none)", min=0, max=MAX_SEED)
    runtime: str = _opt("eager", "the runtime: eager, compile, onnxruntime[:cpu|cuda|tensorrt] or tensorrt")
    out: str | None = _opt(None, "run directory (default results/run-<timestamp>)")
    # Top-down models and post-processing (kpbench.engine.topdown checks them together).
    person_boxes: str | None = _opt(None, "person boxes for a top-down (crop) model: gt, a COCO detections FILE.json, or "
                                    "a model spec whose boxes are used")
    person_box_thresh: float = _opt(0.0, "the person-box source's own score threshold", min=0.0, max=1.0)
    person_box_max: int | None = _opt(None, "at most this many person boxes per image (the highest scoring)", min=1)
    person_box_weights: str | None = _opt(None, "the weights of a detector model given as --person-boxes")
    flip_test: bool = _opt(False, "top-down: also run each crop mirrored and average (the schema's flip pairs)")
    flip_space: str = _opt("auto", "where the flip test averages: auto (heatmaps when the model returns them), "
                           "keypoints or heatmaps", choices=("auto", "keypoints", "heatmaps"))
    box_padding: float = _opt(1.25, "top-down: the crop is the box (fixed to the crop's aspect ratio) times this",
                              min=0.01)
    crop_batch_size: int = _opt(64, "top-down: crops per crop-model call, across the images of a call", min=1)
    rescore: str = _opt("none", "person rescoring: none, or keypoint-mean (box score x mean keypoint score above "
                        "--rescore-thresh)", choices=("none", "keypoint-mean"))
    rescore_thresh: float = _opt(0.2, "keypoint-mean rescoring's keypoint score threshold", min=0.0, max=1.0)
    nms: str = _opt("none", "NMS of each image's persons: none, oks, soft-oks-gaussian or soft-oks-linear",
                    choices=("none", "oks", "soft-oks-gaussian", "soft-oks-linear"))
    nms_thresh: float = _opt(0.9, "OKS-NMS threshold (oks; soft-oks-linear: where the decay starts)", min=0.0, max=1.0)
    nms_sigma: float = _opt(0.5, "soft-oks-gaussian's sigma: scores decay by exp(-OKS^2 / sigma)", min=1e-6)
    sources: dict[str, str] | None = _sources_field()


@dataclass
class SpeedSettings:
    """Everything `kpbench speed` needs: sizes, variants, timing loop and output."""

    coco_root: str | None = _opt(None, "COCO root with real images (or $KPBENCH_COCO_ROOT)")
    split: str = _opt("val2017", "COCO split", choices=("val2017", "train2017"))
    num_images: int = _opt(8, "how many images with people to time on (chosen deterministically)", min=1)
    synthetic: bool = _opt(False, "time on random images instead of COCO (flagged in every row)")
    model: str | list[str] = _opt("keypointrcnn", "the pose model, or a list of them (rows per model): keypointrcnn, "
                                  "yolo[:PATH.pt], mediapipe, FILE.py:Class, package.module:Class or an installed "
                                  "kpbench.models entry point")
    weights: str | list[str] | None = _opt(None, "the model's weights (keypointrcnn: COCO_V1 when not given, "
                                           "COCO_LEGACY, none (random, seeded) or a checkpoint path); with several "
                                           "models, one per model")
    seed: int = _opt(0, "seed for random weights and synthetic images", min=0, max=MAX_SEED)
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    sizes: list[int] = _opt([320, 480, 640, 800, 1024], "short sides; max_size = round(s*1333/800)", min=1)
    warmup: int = _opt(10, "untimed calls before timing, per size and variant", min=0)
    iters: int = _opt(50, "timed calls per size and variant", min=1)
    dtype: list[str] = _opt(["fp32"], "dtype variants (fp16/bf16 through autocast)", choices=DTYPES)
    batch_size: list[int] = _opt([1], "batch-size variants", min=1)
    channels_last: bool = _opt(False, "add a channels-last variant")
    cudnn_benchmark: bool = _opt(False, "add a cudnn.benchmark variant")
    compile: bool = _opt(False, "add the compile runtime (torch.compile), as runtime = [..., \"compile\"] does")
    runtime: list[str] = _opt(["eager"], "runtimes to time: eager, compile, onnxruntime[:cpu|cuda|tensorrt], tensorrt")
    export_shapes: str = _opt("dynamic", "ONNX exports with dynamic image shapes, or static squares of each size",
                              choices=("dynamic", "static"))
    opset: int = _opt(17, "ONNX opset of the exports", min=11)
    runtime_cache: str | None = _opt(None, "folder of cached exports and engines (default ~/.cache/kpbench/runtimes)")
    bootstrap: int = _opt(1000, "paired bootstrap replicates of each runtime row's ΔAP interval (0: no interval)",
                          min=0)
    fast_postprocess: bool = _opt(False, "add a variant with kpbench's exact keypoint post-processing (Keypoint R-CNN)")
    offline: bool = _opt(False, "add offline-throughput rows: the largest batch that fits, per dtype and size")
    offline_max_batch: int = _opt(32, "the largest batch --offline tries (doubling from 1)", min=1)
    stages: bool = _opt(True, "measure the stage split in a separate pass per row")
    flops: bool = _opt(True, "count FLOPs per image (torch.utils.flop_counter) in a separate pass per row")
    box_score_thresh: float = _opt(0.05, "the model's box score threshold (0.9 is the tutorial's)", min=0.0, max=1.0)
    accuracy: int = _opt(0, "also evaluate AP on this many images per size and variant (0: off)", min=0)
    out: str = _opt("results/speed", "folder for <device-slug>-<timestamp>.csv and its manifest")
    # Top-down rows (kpbench.engine.topdown_speed): a crop model on person boxes.
    person_boxes: str | None = _opt(None, "time a top-down (crop) model on these person boxes: gt, a COCO detections "
                                    "FILE.json, or a detector model spec")
    person_box_thresh: float = _opt(0.0, "the person-box source's own score threshold", min=0.0, max=1.0)
    person_box_max: int | None = _opt(None, "at most this many person boxes per image", min=1)
    person_box_weights: str | None = _opt(None, "the weights of a detector model given as --person-boxes")
    flip_test: bool = _opt(False, "top-down: also run each crop mirrored")
    flip_space: str = _opt("auto", "where the flip test averages: auto (heatmaps when the model returns them), "
                           "keypoints or heatmaps", choices=("auto", "keypoints", "heatmaps"))
    box_padding: float = _opt(1.25, "top-down: the crop is the box (fixed to the crop's aspect ratio) times this",
                              min=0.01)
    crop_batch_size: list[int] = _opt([1, 8, 32], "top-down: crops per crop-model call, one row each", min=1)
    persons: list[int] = _opt([1, 2, 4, 8, 16], "top-down: persons per image for the cost-growth rows", min=1)
    rescore: str = _opt("none", "top-down rows: person rescoring, none or keypoint-mean (timed in the image rows)",
                        choices=("none", "keypoint-mean"))
    rescore_thresh: float = _opt(0.2, "keypoint-mean rescoring's keypoint score threshold", min=0.0, max=1.0)
    nms: str = _opt("none", "top-down rows: NMS of each image's persons, none, oks, soft-oks-gaussian or "
                    "soft-oks-linear (timed in the image rows)",
                    choices=("none", "oks", "soft-oks-gaussian", "soft-oks-linear"))
    nms_thresh: float = _opt(0.9, "OKS-NMS threshold (oks; soft-oks-linear: where the decay starts)", min=0.0, max=1.0)
    nms_sigma: float = _opt(0.5, "soft-oks-gaussian's sigma: scores decay by exp(-OKS^2 / sigma)", min=1e-6)
    sources: dict[str, str] | None = _sources_field()


@dataclass
class ThresholdSettings:
    """Everything `kpbench thresholds` needs besides its inputs."""

    iou_type: str = _opt("keypoints", "keypoints or bbox", choices=IOU_TYPES)
    thresholds: list[float] = _opt(
        [round(i * 0.05, 2) for i in range(20)], "person-score thresholds", min=0.0, max=1.0
    )
    kp_thresholds: list[float] = _opt([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "keypoint-score thresholds (logits)")
    person_thresh: float = _opt(0.9, "person score above which keypoints are analysed", min=0.0, max=1.0)
    sources: dict[str, str] | None = _sources_field()


SECTIONS: dict[str, type] = {"run": RunSettings, "speed": SpeedSettings, "thresholds": ThresholdSettings}


@dataclass
class LoadedConfig:
    """A parsed and validated config file: its tables, path and content hash."""

    path: str | None
    sha256: str | None
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


def _suggest(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _check_type(value: Any, tp: Any) -> bool:
    """Whether a TOML value fits a field type (int is accepted where float is expected)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, arg) for arg in typing.get_args(tp) if arg is not type(None))
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_check_type(v, item) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def option_name(key: str) -> str:
    """The command-line option of a settings key: `min_size` is `--min-size`."""
    return "--" + key.replace("_", "-")


# Keys that were renamed so that every key is its option's name; an old config gets a one-line hint.
RENAMED_KEYS: dict[str, dict[str, str]] = {"speed": {"dtypes": "dtype", "batch_sizes": "batch_size"}}


def _check_value(subject: str, value: Any, meta: dict[str, Any]) -> None:
    """Range and choice checks; list values are checked element by element. `subject` starts the message:
    "FILE: [run]: 'min_size'" for a config file, "--min-size:" for the command line."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise KpbenchError(f"{subject} is an empty list")
    for item in items:
        if item is None:
            continue
        if isinstance(item, float) and not math.isfinite(item):
            raise KpbenchError(f"{subject} must be finite, got {item}")
        if "choices" in meta and item not in meta["choices"]:
            raise KpbenchError(f"{subject} must be one of {', '.join(meta['choices'])}, got {item!r}")
        if "min" in meta and item < meta["min"]:
            raise KpbenchError(f"{subject} must be >= {meta['min']}, got {item}")
        if "max" in meta and item > meta["max"]:
            raise KpbenchError(f"{subject} must be <= {meta['max']}, got {item}")


COMMAND_LINE = "command line"


def validate_table(where: str, section: str, table: dict[str, Any]) -> dict[str, Any]:
    """Validate one table of settings for `section`; returns the values, floats coerced where ints were given.

    `where` is the config file's path, or COMMAND_LINE for options given on the command line: their errors
    then name the option (`--dtype: must be one of ...`) instead of the config key.
    """
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in setting_fields(cls)}
    cli = where == COMMAND_LINE
    clean: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            renamed = RENAMED_KEYS.get(section, {}).get(key)
            hint = f" (renamed to '{renamed}', the option's name)" if renamed else _suggest(key, fields)
            raise KpbenchError(f"{where}: unknown key '{key}' in [{section}]{hint}")
        tp = hints[key]
        subject = f"{option_name(key)}:" if cli else f"{where}: [{section}]: '{key}'"
        if not _check_type(value, tp):
            raise KpbenchError(f"{subject} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
        _check_value(subject, value, dict(fields[key].metadata))
        if isinstance(value, int) and not isinstance(value, bool) and float in (*typing.get_args(tp), tp):
            value = float(value)
        if isinstance(value, list) and typing.get_args(tp) and typing.get_args(tp)[0] is float:
            value = [float(v) for v in value]
        clean[key] = value
    return clean


def check_settings(settings: Any, sources: dict[str, str] | None = None) -> None:
    """Checks across settings (each value alone was checked by `validate_table`): max_size >= min_size, and
    an --out that is not empty.

    `sources` maps a key to where its value came from ("command line", a config path); a key not in it is
    a default. Without `sources` (settings built in Python) the message names only the options.
    """
    if getattr(settings, "out", None) == "":
        raise KpbenchError("--out: an empty path (leave it out for the default folder)")
    if not isinstance(settings, RunSettings) or settings.max_size >= settings.min_size:
        return

    def name(key: str) -> str:
        value = getattr(settings, key)
        where = sources.get(key, "") if sources is not None else COMMAND_LINE
        if where == COMMAND_LINE:
            return f"{option_name(key)} {value}"
        if where:
            return f"{option_name(key)} {value} ('{key}' in {where})"
        return f"{option_name(key)} {value} (the default)"

    raise KpbenchError(
        f"{name('max_size')} is smaller than {name('min_size')}: the long-side cap must be at least the short side"
    )


def load_config(path: str | Path | None) -> LoadedConfig:
    """Read and validate a TOML config; `None` gives an empty config (defaults only)."""
    if path is None:
        return LoadedConfig(path=None, sha256=None)
    p = Path(path)
    if p.exists():
        check_regular_file(p, "config file")  # before reading: a FIFO would block, /dev/zero never end
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise KpbenchError(f"{p}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KpbenchError(f"{p}: not valid TOML ({exc})") from None
    tables: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in SECTIONS and not isinstance(table, dict):  # a key above every table
            homes = [name for name, cls in SECTIONS.items() if section in {f.name for f in setting_fields(cls)}]
            tables = [f"[{name}]" for name in homes or SECTIONS]
            where = " or ".join([", ".join(tables[:-1]), tables[-1]] if len(tables) > 1 else tables)
            raise KpbenchError(f"{p}: '{section}' is outside any table; settings go under a table: {where}")
        if section not in SECTIONS:
            raise KpbenchError(
                f"{p}: unknown table [{section}]{_suggest(section, SECTIONS)}; "
                f"expected {', '.join(f'[{s}]' for s in SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise KpbenchError(f"{p}: '{section}' must be a table like [{section}]")
        tables[section] = validate_table(str(p), section, table)
    return LoadedConfig(path=str(p), sha256=hashlib.sha256(raw).hexdigest(), tables=tables)


T = typing.TypeVar("T")


def merge_settings(cls: type[T], config: LoadedConfig | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults, then the config file's table for this command, then command-line overrides (None = not given).

    Errors in an override name its option (`--min-size: must be >= 1, got 0`)."""
    section = next(name for name, c in SECTIONS.items() if c is cls)
    values: dict[str, Any] = dict(config.tables.get(section, {})) if config else {}
    sources = dict.fromkeys(values, config.path or "the config") if config else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(validate_table(COMMAND_LINE, section, given))
    sources.update(dict.fromkeys(given, COMMAND_LINE))
    settings = cls(**values, sources=sources)
    check_settings(settings, sources)
    return settings


def setting_fields(cls: Any) -> list[dataclasses.Field[Any]]:
    """The fields of a settings class that are settings (not its internal `sources`)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def settings_dict(settings: Any) -> dict[str, Any]:
    """A plain dict of a settings dataclass, for manifests and `config show` (its settings only)."""
    return {f.name: copy.deepcopy(getattr(settings, f.name)) for f in setting_fields(settings)}


def given_settings(settings: Any, keys: typing.Iterable[str]) -> dict[str, Any]:
    """The values among `keys` that the user gave (on the command line or in a config file), by key: a default
    the user did not give is left out. Settings built in Python (no `sources`) count a value as given when it
    differs from its default."""
    sources = getattr(settings, "sources", None)
    fields = {f.name: f for f in setting_fields(settings)}
    given: dict[str, Any] = {}
    for key in keys:
        value = getattr(settings, key)
        if sources is not None:
            if key in sources:
                given[key] = value
            continue
        f = fields[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if value != default:
            given[key] = value
    return given


def setting_source(settings: Any, key: str) -> str:
    """Where a setting's value came from, for messages: "--min-size 512", "--min-size 512 ('min_size' in
    quick.toml)" or "--min-size 800 (the default)"."""
    value = getattr(settings, key)
    sources = getattr(settings, "sources", None)
    where = COMMAND_LINE if sources is None else sources.get(key, "")
    if where == COMMAND_LINE:
        return f"{option_name(key)} {value}"
    if where:
        return f"{option_name(key)} {value} ('{key}' in {where})"
    return f"{option_name(key)} {value} (the default)"


def parse_list(text: str | None, item_type: type, option: str) -> list[Any] | None:
    """Parse a comma-separated option value ("320,480") into a list; None stays None."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise KpbenchError(f"{option}: empty list")
    if not all(parts):
        raise KpbenchError(f"{option}: empty item in {text!r} (write values separated by single commas)")
    try:
        return [item_type(p) for p in parts]
    except ValueError:
        raise KpbenchError(f"{option}: cannot read {text!r} as a comma-separated list of {item_type.__name__}") from None


def to_toml(tables: dict[str, dict[str, Any]]) -> str:
    """Write settings tables as TOML (None values, which TOML cannot hold, become comments)."""
    lines: list[str] = []
    for section, table in tables.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if value is None:
                lines.append(f"# {key} = (not set)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string is a TOML basic string: the same escapes for quotes, backslashes and control characters.
    return json.dumps(str(value), ensure_ascii=False)
