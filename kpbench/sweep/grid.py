"""The grid file of `kpbench sweep`: what varies, and where each cell runs (TOML), read into cells.

A grid file has:

- ``[sweep]`` (optional): ``name`` (Slurm job names; default the file's stem), ``max_parallel`` (how many cells of
  one job array run at once, Slurm's ``--array=...%N``; with the local launcher, how many run at once in all;
  default 4), ``python`` (the interpreter a job runs kpbench with; default the one submitting),
  ``poll_interval_s`` (the least time between two questions to the scheduler; default 30).
- ``[resources.NAME]``, one per job shape: ``partition`` and/or ``constraint`` (the GPU type), ``gpus``,
  ``cpus``, ``mem_gb``, ``time_min`` (the time limit; required), ``account``, ``qos``, ``setup`` (shell lines run
  before the cell, such as ``module load cuda``) and ``sbatch`` (more ``#SBATCH`` options, ``{ "exclusive" = true }``).
- ``[defaults]`` (optional): settings given to every block whose command has them (``coco_root``, say).
- ``[[run]]`` and ``[[speed]]`` blocks. A block's keys are the settings of `kpbench run` or `kpbench speed` (the
  keys of a ``--config`` table, `kpbench.core.config`), plus ``resources`` (a name or a list of names) and, for
  runs, ``analysis`` and ``backend``; its ``vary`` table gives the axes: ``vary = { min_size = [640, 800] }``. A
  block gives one cell per resource × every combination of its axes.

A cell is one `kpbench run` or `kpbench speed` command line with its own config file and output folder. Its name
says what it is and ends with a hash of its settings, so that changing a setting makes a new cell (a run directory
refuses to resume under another config) while changing its resources (a longer time limit after a timeout) does
not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpbench.core.config import (
    LoadedConfig,
    RunSettings,
    SpeedSettings,
    _suggest,
    merge_settings,
    setting_fields,
    settings_dict,
    tomllib,
    validate_table,
)
from kpbench.core.errors import KpbenchError
from kpbench.core.io import read_file_bytes

KINDS = ("run", "speed")
SETTINGS = {"run": RunSettings, "speed": SpeedSettings}
TABLES = ("sweep", "resources", "defaults", "run", "speed")
DEFAULT_MAX_PARALLEL = 4
DEFAULT_POLL_INTERVAL_S = 30.0
# Keys of a block that are not settings: where it runs, its axes, and run's options outside its settings.
BLOCK_KEYS = {"run": ("resources", "vary", "analysis", "backend"), "speed": ("resources", "vary")}
# Settings a cell may not take from the grid: the sweep decides where each cell writes, and many jobs downloading
# into one COCO root at once would tear its files.
SWEEP_OWNED = {"out": "each cell writes into the sweep folder (cells/NAME/)"}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Resources:
    """Where and with what one cell runs: a Slurm job's shape (the local launcher uses time_min, gpus, setup)."""

    name: str
    time_min: int
    partition: str | None = None
    constraint: str | None = None
    gpus: int | None = None
    cpus: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()
    sbatch: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The shape as the sweep manifest records it."""
        out = dataclasses.asdict(self)
        out["setup"] = list(self.setup)
        return out


@dataclass(frozen=True)
class SweepOptions:
    """The grid's [sweep] table."""

    name: str
    max_parallel: int = DEFAULT_MAX_PARALLEL
    python: str | None = None
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S


@dataclass(frozen=True)
class CellSpec:
    """One cell of the grid: a `kpbench run` or `kpbench speed` with its settings, on one resource shape."""

    name: str
    kind: str
    resource: str
    settings: dict[str, Any]  # the command's --config table, without `out` (the sweep sets it)
    options: dict[str, Any]  # command-line options outside the settings (run: analysis, backend)
    block: str  # "[[run]] 2": where in the grid file it comes from
    axes: dict[str, Any]  # the values of the block's `vary` axes for this cell

    def identity(self) -> dict[str, Any]:
        """What makes a cell this cell: its kind, settings, options and resource name (not the resource's shape)."""
        return {"kind": self.kind, "settings": self.settings, "options": self.options, "resource": self.resource}


@dataclass(frozen=True)
class Grid:
    """A parsed and validated grid file."""

    path: Path
    sha256: str
    text: str
    sweep: SweepOptions
    resources: dict[str, Resources]
    cells: list[CellSpec]


# ----------------------------------------------------------------------------------------------------------
# Reading


def load_grid(path: str | Path, environ: dict[str, str] | None = None) -> Grid:
    """Read and validate a grid file. Every mistake is one KpbenchError naming the file, the table or block, and
    the key. `environ` (default os.environ) tells whether $KPBENCH_COCO_ROOT stands in for a missing coco_root."""
    path = Path(path)
    raw = read_file_bytes(path, "grid file")
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KpbenchError(f"{path}: not valid TOML ({exc})") from None
    for key in data:
        if key not in TABLES:
            raise KpbenchError(f"{path}: unknown table [{key}]{_suggest(key, TABLES)}; expected "
                               "[sweep], [resources.NAME], [defaults], [[run]] and [[speed]]")
    sweep = _sweep_options(path, data.get("sweep", {}))
    resources = _resources(path, data.get("resources"))
    defaults = _table(path, "defaults", data.get("defaults", {}))
    cells: list[CellSpec] = []
    for kind in KINDS:
        blocks = data.get(kind, [])
        if isinstance(blocks, dict) or not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise KpbenchError(f"{path}: '{kind}' must be blocks written [[{kind}]] (one per model or setting)")
        for number, block in enumerate(blocks, start=1):
            cells += _block_cells(path, kind, number, block, defaults, resources, environ)
    _check_defaults_used(path, defaults)
    if not cells:
        raise KpbenchError(f"{path}: no cells: add a [[run]] or [[speed]] block")
    seen: dict[str, CellSpec] = {}
    for cell in cells:
        if cell.name in seen:
            raise KpbenchError(f"{path}: {seen[cell.name].block} and {cell.block} give the same cell ({cell.name})")
        seen[cell.name] = cell
    return Grid(path=path, sha256=hashlib.sha256(raw).hexdigest(), text=text, sweep=sweep, resources=resources,
                cells=cells)


def _table(path: Path, name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise KpbenchError(f"{path}: '{name}' must be a table like [{name}]")
    return value


def _check_key_type(where: str, key: str, value: Any, kind: type | tuple[type, ...], text: str) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # TOML's true is a Python int too: a bool is only right where a bool is expected.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise KpbenchError(f"{where}: '{key}' must be {text}, got {type(value).__name__} {value!r}")


def _sweep_options(path: Path, table: Any) -> SweepOptions:
    table = _table(path, "sweep", table)
    where = f"{path}: [sweep]"
    known = ("name", "max_parallel", "python", "poll_interval_s")
    for key in table:
        if key not in known:
            raise KpbenchError(f"{where}: unknown key '{key}'{_suggest(key, known)}; expected {', '.join(known)}")
    name = table.get("name", path.stem)
    _check_key_type(where, "name", name, str, "a string")
    if not NAME_RE.fullmatch(name):
        raise KpbenchError(f"{where}: 'name' must be letters, digits, '-', '_' and '.', got {name!r}")
    max_parallel = table.get("max_parallel", DEFAULT_MAX_PARALLEL)
    _check_key_type(where, "max_parallel", max_parallel, int, "an integer")
    if max_parallel < 1:
        raise KpbenchError(f"{where}: 'max_parallel' must be >= 1, got {max_parallel}")
    python = table.get("python")
    if python is not None:
        _check_key_type(where, "python", python, str, "a string (the interpreter's path)")
    poll = table.get("poll_interval_s", DEFAULT_POLL_INTERVAL_S)
    _check_key_type(where, "poll_interval_s", poll, (int, float), "a number of seconds")
    if not poll >= 0:
        raise KpbenchError(f"{where}: 'poll_interval_s' must be >= 0, got {poll}")
    return SweepOptions(name=name, max_parallel=max_parallel, python=python, poll_interval_s=float(poll))


RESOURCE_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "partition": (str, "a string"),
    "constraint": (str, "a string"),
    "gpus": (int, "an integer"),
    "cpus": (int, "an integer"),
    "mem_gb": ((int, float), "a number"),
    "time_min": (int, "an integer (minutes)"),
    "account": (str, "a string"),
    "qos": (str, "a string"),
    "setup": (list, "a list of shell lines"),
    "sbatch": (dict, "a table of #SBATCH options"),
}
RESOURCE_MIN = {"gpus": 0, "cpus": 1, "time_min": 1}


def _resources(path: Path, tables: Any) -> dict[str, Resources]:
    if tables is None:
        raise KpbenchError(f"{path}: no [resources.NAME] table: say where cells run (partition or constraint, gpus, "
                           "cpus, mem_gb, time_min), e.g. [resources.cpu] with time_min = 30")
    tables = _table(path, "resources", tables)
    if not tables:
        raise KpbenchError(f"{path}: [resources] is empty: add a [resources.NAME] table per job shape")
    out = {}
    for name, table in tables.items():
        where = f"{path}: [resources.{name}]"
        if not NAME_RE.fullmatch(name):
            raise KpbenchError(f"{where}: a resource name must be letters, digits, '-', '_' and '.'")
        if not isinstance(table, dict):
            raise KpbenchError(f"{path}: 'resources.{name}' must be a table like [resources.{name}]")
        for key, value in table.items():
            if key not in RESOURCE_KEYS:
                raise KpbenchError(f"{where}: unknown key '{key}'{_suggest(key, RESOURCE_KEYS)}; expected "
                                   f"{', '.join(RESOURCE_KEYS)}")
            kind, text = RESOURCE_KEYS[key]
            _check_key_type(where, key, value, kind, text)
            if key in RESOURCE_MIN and value < RESOURCE_MIN[key]:
                raise KpbenchError(f"{where}: '{key}' must be >= {RESOURCE_MIN[key]}, got {value}")
            if key == "mem_gb" and not value > 0:
                raise KpbenchError(f"{where}: 'mem_gb' must be > 0, got {value}")
            if key == "setup" and not all(isinstance(line, str) for line in value):
                raise KpbenchError(f"{where}: 'setup' must be a list of shell lines (strings)")
            if key == "sbatch":
                for option, setting in value.items():
                    if not isinstance(setting, (str, int, float, bool)) or setting is False:
                        raise KpbenchError(f"{where}: sbatch option '{option}' must be a string, a number or true, "
                                           f"got {setting!r}")
        if "time_min" not in table:
            raise KpbenchError(f"{where}: 'time_min' is required (the job's time limit in minutes)")
        out[name] = Resources(name=name, **{**table, "setup": tuple(table.get("setup", ()))})
    return out


def _check_defaults_used(path: Path, defaults: dict[str, Any]) -> None:
    fields = {f.name for cls in SETTINGS.values() for f in setting_fields(cls)}  # not their `sources`
    for key in defaults:
        if key in SWEEP_OWNED:
            raise KpbenchError(f"{path}: [defaults]: '{key}' cannot be set: {SWEEP_OWNED[key]}")
        if key not in fields:
            raise KpbenchError(f"{path}: [defaults]: unknown key '{key}'{_suggest(key, fields)}: not a setting of "
                               "kpbench run or kpbench speed")


def _block_cells(
    path: Path, kind: str, number: int, block: dict[str, Any], defaults: dict[str, Any],
    resources: dict[str, Resources], environ: dict[str, str] | None,
) -> list[CellSpec]:
    """Every cell of one [[run]] or [[speed]] block: resources × the product of its `vary` axes."""
    label = f"[[{kind}]] {number}"
    where = f"{path}: {label}"
    cls = SETTINGS[kind]
    fields = {f.name for f in setting_fields(cls)}  # settings only, not `sources`
    for key in block:
        if key in SWEEP_OWNED:
            raise KpbenchError(f"{where}: '{key}' cannot be set: {SWEEP_OWNED[key]}")
        if key not in fields and key not in BLOCK_KEYS[kind]:
            raise KpbenchError(f"{where}: unknown key '{key}'{_suggest(key, [*fields, *BLOCK_KEYS[kind]])}: not a "
                               f"setting of kpbench {kind}")
    names = _block_resources(where, block.get("resources"), resources)
    options = _run_options(where, block) if kind == "run" else {}
    vary = block.get("vary", {})
    if not isinstance(vary, dict):
        raise KpbenchError(f"{where}: 'vary' must be a table of axes, like vary = {{ min_size = [640, 800] }}")
    for key, values in vary.items():
        if key in SWEEP_OWNED:
            raise KpbenchError(f"{where}: vary: '{key}' cannot vary: {SWEEP_OWNED[key]}")
        if key not in fields:
            raise KpbenchError(f"{where}: vary: unknown key '{key}'{_suggest(key, fields)}: not a setting of "
                               f"kpbench {kind}")
        if key in block:
            raise KpbenchError(f"{where}: '{key}' is both set and in vary: give it once")
        if not isinstance(values, list) or not values:
            raise KpbenchError(f"{where}: vary: '{key}' must be a non-empty list of values (one cell each)")
    base = {k: v for k, v in defaults.items() if k in fields and k not in block and k not in vary}
    base.update({k: v for k, v in block.items() if k in fields})
    cells = []
    axes = list(vary)
    for combo in itertools.product(*(vary[k] for k in axes)):
        axis_values = dict(zip(axes, combo))
        table = {**base, **axis_values}
        settings = _checked_settings(f"{where}{' with ' + _axes_text(axis_values) if axes else ''}", kind, table)
        _check_coco_root(where, kind, settings, environ)
        for resource in names:
            cells.append(_cell(kind, resource, settings, options, label, axis_values))
    return cells


def _block_resources(where: str, value: Any, resources: dict[str, Resources]) -> list[str]:
    if value is None:
        if len(resources) == 1:
            return list(resources)
        raise KpbenchError(f"{where}: 'resources' is required when there are several [resources.NAME] tables "
                           f"({', '.join(resources)})")
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise KpbenchError(f"{where}: 'resources' must be a resource name or a list of them, got {value!r}")
    for name in names:
        if name not in resources:
            raise KpbenchError(f"{where}: 'resources': no [resources.{name}] table{_suggest(name, resources)}")
    if len(set(names)) != len(names):
        raise KpbenchError(f"{where}: 'resources' names a resource twice")
    return names


def _run_options(where: str, block: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "analysis" in block:
        _check_key_type(where, "analysis", block["analysis"], bool, "true or false")
        options["analysis"] = block["analysis"]
    if "backend" in block:
        # The evaluation's own list (imported when a block names a backend: it brings numpy), never a copy of it.
        from kpbench.evaluation.backends import BACKENDS

        if block["backend"] not in BACKENDS:
            raise KpbenchError(f"{where}: 'backend' must be one of {', '.join(BACKENDS)}, got {block['backend']!r}")
        options["backend"] = block["backend"]
    return options


def _checked_settings(where: str, kind: str, table: dict[str, Any]) -> dict[str, Any]:
    """The block's settings validated as a `--config` table of the command would be (types, ranges, choices, and
    the checks across settings), in the form the cell's config file holds them."""
    if table.get("download"):
        raise KpbenchError(f"{where}: 'download' cannot be true in a sweep (many jobs would download into one COCO "
                           "root at once): run `kpbench data download --coco-root ROOT` once before")
    clean = validate_table(where, kind, table)
    try:  # the checks across settings (max_size >= min_size), as `kpbench run --config` makes them
        merge_settings(SETTINGS[kind], LoadedConfig(path="this block", sha256=None, tables={kind: clean}))
    except KpbenchError as exc:
        raise KpbenchError(f"{where}: {exc}") from None
    if "runtime" in clean:  # a runtime that does not exist would fail in every job: say so now
        from kpbench.runtimes.base import parse_runtimes

        try:
            parse_runtimes(clean["runtime"])
        except KpbenchError as exc:
            raise KpbenchError(f"{where}: {exc} ('runtime' in this block)") from None
    return clean


def _check_coco_root(where: str, kind: str, settings: dict[str, Any], environ: dict[str, str] | None) -> None:
    """A cell that reads COCO needs a root; find out now rather than in every job."""
    env = os.environ if environ is None else environ
    needs = kind == "run" or not settings.get("synthetic", False)
    if needs and settings.get("coco_root") is None and not env.get("KPBENCH_COCO_ROOT"):
        raise KpbenchError(f"{where}: no 'coco_root' (and $KPBENCH_COCO_ROOT is not set): say where COCO is, in the "
                           "block or in [defaults]" + (", or time on synthetic = true" if kind == "speed" else ""))


def _axes_text(axes: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {json.dumps(v)}" for k, v in axes.items())


def _slug(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(_slug(v) for v in value)
    text = str(value)
    if "/" in text or "\\" in text:  # a weights file: its name
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")[:40] or "x"


def _cell(kind: str, resource: str, settings: dict[str, Any], options: dict[str, Any], block: str,
          axes: dict[str, Any]) -> CellSpec:
    identity = {"kind": kind, "settings": settings, "options": options, "resource": resource}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    model = settings.get("model", settings_dict(SETTINGS[kind]())["model"])
    parts = [kind, _slug(model)]
    if settings.get("weights") is not None:
        parts.append(_slug(settings["weights"]))
    parts += [_slug(v) for k, v in axes.items() if k not in ("model", "weights")]
    parts += [resource, digest]
    return CellSpec(name="-".join(parts), kind=kind, resource=resource, settings=settings, options=options,
                    block=block, axes=axes)
