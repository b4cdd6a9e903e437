"""`kpbench sweep`: submit a grid of runs and speed tables, resume it, and say where each cell stands.

    from kpbench.sweep import SweepRequest, StatusRequest, submit_sweep, sweep_status
    outcome = submit_sweep(SweepRequest(grid="zoo.toml", out="results/zoo", launcher="slurm"))
    for cell in sweep_status(StatusRequest("results/zoo")).cells: print(cell.name, cell.state)

Submitting a grid to a sweep folder that already holds it submits only what is not finished: finished cells are
skipped, cells whose job is queued or running are left alone, and failed, cancelled, timed-out, interrupted and
lost ones are submitted again (a run cell resumes its run directory). Cells the grid no longer has are kept on
disk and listed under "retired" in the manifest.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpbench.core.config import to_toml
from kpbench.core.errors import KpbenchError
from kpbench.core.io import atomic_write_text, ensure_output_dir
from kpbench.sweep.grid import CellSpec, Grid, load_grid
from kpbench.sweep.launch import LAUNCHERS, CellJob, Launched
from kpbench.sweep.layout import (
    CELL_CONFIG,
    FORMAT_VERSION,
    GRID_COPY,
    MANIFEST_KIND,
    cell_dir,
    cell_output,
    is_sweep_dir,
    jobs_dir,
    lock_sweep_dir,
    read_sweep_manifest,
    try_lock_sweep_dir,
    write_sweep_manifest,
)
from kpbench.sweep.state import (
    ACTIVE,
    COMPLETED,
    RESUBMIT,
    CellStatus,
    LocalPoller,
    SchedulerView,
    SlurmPoller,
    resolve_cell,
)

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class SweepRequest:
    """Submit (or resume) the grid file `grid` into the sweep folder `out` with `launcher` (slurm, local, debug).
    `max_parallel` overrides the grid's [sweep] max_parallel; `dry_run` plans without writing or submitting."""

    grid: str | Path
    out: str | Path | None
    launcher: str = "slurm"
    max_parallel: int | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise KpbenchError(f"--launcher: must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.out is None or str(self.out) == "":
            raise KpbenchError("--out SWEEP_DIR is required: the folder the sweep's cells write into (running the "
                               "same command again resumes it)")
        if is_sweep_dir(self.grid):
            raise KpbenchError(f"{self.grid}: a sweep folder, not a grid file: kpbench sweep {self.grid} --status "
                               f"shows its cells; kpbench sweep GRID.toml --out {self.grid} resumes it")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise KpbenchError(f"--max-parallel: must be >= 1, got {self.max_parallel}")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise KpbenchError(f"--out {out}: exists and is not a directory")
        if out.is_dir() and not is_sweep_dir(out) and any(out.iterdir()):
            raise KpbenchError(f"--out {out}: a folder that is neither empty nor a sweep folder (no sweep.json); "
                               "give a new or empty folder")


@dataclass(frozen=True)
class StatusRequest:
    """Say where each cell of the sweep folder `sweep_dir` stands. The scheduler is asked at most once per
    `poll_interval_s` (default: the grid's, 30 s); `force` asks it now."""

    sweep_dir: str | Path
    poll_interval_s: float | None = None
    force: bool = False

    def __post_init__(self) -> None:
        path = Path(self.sweep_dir)
        if not path.exists():
            raise KpbenchError(f"{path}: no such sweep folder")
        if path.is_file():
            raise KpbenchError(f"{path}: a file; --status reads a sweep folder (kpbench sweep SWEEP_DIR --status)")
        if not is_sweep_dir(path):
            raise KpbenchError(f"{path}: not a sweep folder (no sweep.json)")
        if self.poll_interval_s is not None and not self.poll_interval_s >= 0:
            raise KpbenchError(f"--poll-interval: must be >= 0, got {self.poll_interval_s}")


@dataclass
class CellAction:
    """What a submission did with one cell: "submitted", "resubmitted", "skipped" (finished) or "left" (queued
    or running, or its state unknown), and why."""

    name: str
    action: str
    reason: str
    job_id: str | None = None


@dataclass
class SweepOutcome:
    """What `submit_sweep` did: the action per cell, and each cell's status afterwards (after a local or debug
    launch, the final one)."""

    sweep_dir: Path
    launcher: str
    actions: list[CellAction] = field(default_factory=list)
    cells: list[CellStatus] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def failed(self) -> list[CellStatus]:
        """Cells that ended in a state other than COMPLETED (queued and running ones do not count)."""
        return [c for c in self.cells if c.state != COMPLETED and c.state not in ACTIVE and c.state != "UNKNOWN"]


@dataclass
class SweepStatus:
    """Every cell's status, and what the scheduler said (notes; the time of its answer)."""

    sweep_dir: Path
    cells: list[CellStatus]
    notes: list[str] = field(default_factory=list)
    polled_at: float | None = None

    def counts(self) -> dict[str, int]:
        """How many cells are in each state."""
        out: dict[str, int] = {}
        for cell in self.cells:
            out[cell.state] = out.get(cell.state, 0) + 1
        return out


# ----------------------------------------------------------------------------------------------------------
# Cells and commands


def cell_command(python: str, kind: str, config: Path, options: dict[str, Any]) -> list[str]:
    """The kpbench command line of a cell: `python -m kpbench run|speed --config CELL.toml --no-progress`, plus
    run's options outside its settings."""
    command = [python, "-m", "kpbench", kind, "--config", str(config), "--no-progress"]
    if kind == "run":
        if "analysis" in options:
            command.append("--analysis" if options["analysis"] else "--no-analysis")
        if "backend" in options:
            command += ["--backend", options["backend"]]
    return command


def _cell_entry(sweep_dir: Path, spec: CellSpec, grid: Grid, python: str, old: dict[str, Any] | None) -> dict[str, Any]:
    config = cell_dir(sweep_dir, spec.name) / CELL_CONFIG
    output = cell_output(sweep_dir, spec.name, spec.kind)
    entry = dict(old or {})
    entry.update({
        "name": spec.name, "kind": spec.kind, "resource": spec.resource, "block": spec.block, "axes": spec.axes,
        "settings": spec.settings, "options": spec.options, "resources": grid.resources[spec.resource].to_json(),
        "config": str(config), "output": str(output),
        "command": cell_command(python, spec.kind, config, spec.options),
    })  # fmt: skip
    entry.setdefault("attempts", [])
    return entry


def cell_config_text(spec: CellSpec, output: Path) -> str:
    """The cell's config file: its settings as a [run] or [speed] table, with `out` its output folder."""
    header = (f"# kpbench sweep cell {spec.name} ({spec.block}); written by kpbench sweep, do not edit: a changed "
              "setting makes another cell\n")
    return header + to_toml({spec.kind: {**spec.settings, "out": str(output)}})


def _new_manifest(grid: Grid, cwd: str, python: str) -> dict[str, Any]:
    from kpbench import __version__

    return {
        "kind": MANIFEST_KIND, "format_version": FORMAT_VERSION, "kpbench": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "name": grid.sweep.name, "cwd": cwd, "python": python,
        "cells": [], "retired": [],
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# States


def _views(sweep_dir: Path, cells: list[dict[str, Any]], poll_interval_s: float,
           force: bool = False) -> dict[str, SchedulerView]:
    """The scheduler's view per launcher that has jobs in the sweep (the debug launcher needs none: it records
    every outcome itself)."""
    ids: dict[str, list[str]] = {}
    for cell in cells:
        attempts = cell.get("attempts") or []
        if attempts and attempts[-1].get("job_id"):
            ids.setdefault(attempts[-1].get("launcher", "slurm"), []).append(str(attempts[-1]["job_id"]))
    views = {}
    if "slurm" in ids:
        views["slurm"] = SlurmPoller(sweep_dir, poll_interval_s).poll(ids["slurm"], force=force)
    if "local" in ids:
        views["local"] = LocalPoller().poll(ids["local"])
    return views


def _statuses(sweep_dir: Path, cells: list[dict[str, Any]], views: dict[str, SchedulerView]) -> list[CellStatus]:
    out = []
    for cell in cells:
        attempts = cell.get("attempts") or []
        launcher = attempts[-1].get("launcher") if attempts else None
        out.append(resolve_cell(sweep_dir, cell, views.get(launcher) if launcher else None))
    return out


def _record(cell: dict[str, Any], status: CellStatus) -> None:
    """Keep the last known status in the manifest's cell."""
    cell.update(state=status.state, node=status.node, gpu=status.gpu, elapsed_s=status.elapsed_s,
                error=status.error, progress=status.progress, checked=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


# ----------------------------------------------------------------------------------------------------------
# Submitting


def submit_sweep(request: SweepRequest, log: Log = _quiet) -> SweepOutcome:
    """Submit the grid's unfinished cells (see the module's docstring); `log` gets one line per event."""
    grid = load_grid(request.grid)
    sweep_dir = Path(request.out).absolute()  # type: ignore[arg-type]
    max_parallel = request.max_parallel or grid.sweep.max_parallel
    python = grid.sweep.python or sys.executable
    cwd = os.getcwd()
    existing = read_sweep_manifest(sweep_dir) if is_sweep_dir(sweep_dir) else None
    outcome = SweepOutcome(sweep_dir=sweep_dir, launcher=request.launcher, dry_run=request.dry_run)
    if request.dry_run:
        manifest = existing or _new_manifest(grid, cwd, python)
        _plan(sweep_dir, grid, manifest, python, outcome, request, log)
        return outcome
    ensure_output_dir(sweep_dir)
    with lock_sweep_dir(sweep_dir):
        existing = read_sweep_manifest(sweep_dir) if is_sweep_dir(sweep_dir) else None
        manifest = existing or _new_manifest(grid, cwd, python)
        if existing and existing.get("cwd") != cwd:
            outcome.notes.append(f"the sweep was first submitted from {existing.get('cwd')}; relative paths in the "
                                 f"grid now resolve from {cwd}")
        manifest["cwd"], manifest["python"] = cwd, python
        to_submit = _plan(sweep_dir, grid, manifest, python, outcome, request, log)
        manifest["grid"] = {"path": str(Path(request.grid).absolute()), "sha256": grid.sha256, "copy": GRID_COPY}
        atomic_write_text(sweep_dir / GRID_COPY, grid.text)
        by_name = {c["name"]: c for c in manifest["cells"]}
        for name in to_submit:
            spec = next(s for s in grid.cells if s.name == name)
            atomic_write_text(Path(by_name[name]["config"]), cell_config_text(spec, Path(by_name[name]["output"])))
        write_sweep_manifest(sweep_dir, manifest)
        if to_submit:
            _launch(sweep_dir, grid, manifest, [by_name[n] for n in to_submit], request.launcher, max_parallel,
                    python, cwd, outcome, log)
        views = _views(sweep_dir, manifest["cells"], grid.sweep.poll_interval_s, force=request.launcher == "slurm")
        outcome.cells = _statuses(sweep_dir, manifest["cells"], views)
        for cell, status in zip(manifest["cells"], outcome.cells, strict=True):
            _record(cell, status)
        for view in views.values():
            outcome.notes += [n for n in view.notes if n not in outcome.notes]
        write_sweep_manifest(sweep_dir, manifest)
    return outcome


def _plan(sweep_dir: Path, grid: Grid, manifest: dict[str, Any], python: str, outcome: SweepOutcome,
          request: SweepRequest, log: Log) -> list[str]:
    """Put the grid's cells into the manifest (retiring those it no longer has), find each one's state, and say
    what to do with it; returns the names to submit."""
    # A cell that comes back into the grid gets its history back from the retired ones.
    old = {c["name"]: c for c in [*manifest.get("retired", []), *manifest.get("cells", [])]}
    current = {c["name"] for c in manifest.get("cells", [])}
    manifest["cells"] = [_cell_entry(sweep_dir, spec, grid, python, old.get(spec.name)) for spec in grid.cells]
    names = {spec.name for spec in grid.cells}
    retired = [c for name, c in old.items() if name not in names and name in current]
    manifest["retired"] = [c for c in manifest.get("retired", []) if c["name"] not in names] + retired
    if retired:
        outcome.notes.append(f"{len(retired)} cell(s) of an earlier grid are not in this one: kept on disk, listed "
                             "under 'retired' in sweep.json, left out of the status and the report")
    known = [c for c in manifest["cells"] if c.get("attempts")]
    views = _views(sweep_dir, known, grid.sweep.poll_interval_s, force=True) if known else {}
    for view in views.values():
        outcome.notes += [n for n in view.notes if n not in outcome.notes]
    statuses = {s.name: s for s in _statuses(sweep_dir, manifest["cells"], views)}
    to_submit = []
    for cell in manifest["cells"]:
        status = statuses[cell["name"]]
        if status.state == COMPLETED:
            action = CellAction(cell["name"], "skipped", "completed", status.job_id)
        elif status.state in RESUBMIT:
            verb = "resubmitted" if cell.get("attempts") else "submitted"
            why = "new" if status.state == "NOT_SUBMITTED" else f"was {status.state}"
            action = CellAction(cell["name"], verb, why)
            to_submit.append(cell["name"])
        else:  # queued or running, or a state nobody can tell now: submitting again could run it twice
            reason = status.state.lower() if status.state in ACTIVE else f"state {status.state}: {status.error}"
            action = CellAction(cell["name"], "left", reason, status.job_id)
        outcome.actions.append(action)
        if request.dry_run:
            log(f"would {'submit' if action.action.endswith('submitted') else 'leave'} {cell['name']} "
                f"({action.reason}): {' '.join(cell['command'])}")
    if not request.dry_run:
        counts: dict[str, int] = {}
        for action in outcome.actions:
            counts[action.action] = counts.get(action.action, 0) + 1
        if counts.get("skipped") or counts.get("left"):
            log(f"{counts.get('skipped', 0)} cell(s) completed (skipped), {counts.get('left', 0)} queued, running or "
                f"unknown (left alone), {len(to_submit)} to submit")
    return to_submit


def _launch(sweep_dir: Path, grid: Grid, manifest: dict[str, Any], cells: list[dict[str, Any]], launcher: str,
            max_parallel: int, python: str, cwd: str, outcome: SweepOutcome, log: Log) -> None:
    """Hand the cells to the launcher, one job array per resource shape, recording every job id in the manifest
    as soon as it exists (a crash later loses no job)."""
    from kpbench.sweep import launch

    folder = jobs_dir(sweep_dir)
    shapes: dict[str, list[CellJob]] = {}
    for cell in cells:
        shapes.setdefault(cell["resource"], []).append(CellJob(cell["name"], cell["command"], cwd))
    for resource in shapes:
        outcome.notes += launch.ignored_resources(launcher, grid.resources[resource])
    by_name = {c["name"]: c for c in manifest["cells"]}
    actions = {a.name: a for a in outcome.actions}

    def started(job: Launched) -> None:
        by_name[job.name]["attempts"].append({
            "launcher": launcher, "job_id": job.job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "resources": by_name[job.name]["resources"],
        })  # fmt: skip
        actions[job.name].job_id = job.job_id
        for key in ("state", "node", "gpu", "elapsed_s", "error", "progress"):  # the last attempt's, no longer true
            by_name[job.name].pop(key, None)
        write_sweep_manifest(sweep_dir, manifest)

    def ended(job: Launched) -> None:
        attempt = by_name[job.name]["attempts"][-1]
        attempt["outcome"] = job.outcome
        status = resolve_cell(sweep_dir, by_name[job.name], None)
        _record(by_name[job.name], status)
        write_sweep_manifest(sweep_dir, manifest)
        log(f"{status.state.lower()}: {job.name}" + (f" ({status.error})" if status.error else ""))

    if launcher == "slurm":
        for resource, jobs in shapes.items():
            launched = launch.submit_slurm(folder, grid.sweep.name, grid.resources[resource], jobs, max_parallel,
                                           python)
            for job in launched:
                started(job)
            array = launched[0].job_id.split("_")[0]
            log(f"submitted {len(jobs)} cell(s) on [resources.{resource}] as Slurm job "
                f"{'array ' if len(jobs) > 1 else ''}{array}"
                + (f" (at most {max_parallel} at once)" if len(jobs) > 1 else ""))
        SlurmPoller(sweep_dir, grid.sweep.poll_interval_s).forget()
    elif launcher == "local":
        log(f"running {len(cells)} cell(s) here, at most {max_parallel} at once")
        launch.run_local(folder, grid.sweep.name, [(grid.resources[r], jobs) for r, jobs in shapes.items()],
                         max_parallel, python, started, ended)
    else:
        log(f"running {len(cells)} cell(s) here, one after the other (debug)")
        launch.run_debug(folder, [job for jobs in shapes.values() for job in jobs], started, ended)


# ----------------------------------------------------------------------------------------------------------
# Status


def sweep_status(request: StatusRequest) -> SweepStatus:
    """Every cell's status, read from its output, the scheduler (rate-limited) and its job's files; recorded in the
    manifest when no submission holds the sweep's lock."""
    sweep_dir = Path(request.sweep_dir).absolute()
    manifest = read_sweep_manifest(sweep_dir)
    interval = request.poll_interval_s
    if interval is None:
        interval = _grid_poll_interval(sweep_dir)
    views = _views(sweep_dir, manifest["cells"], interval, force=request.force)
    cells = _statuses(sweep_dir, manifest["cells"], views)
    notes = [n for view in views.values() for n in view.notes]
    polled = [v.polled_at for v in views.values() if v.polled_at is not None]
    with try_lock_sweep_dir(sweep_dir) as held:
        if held:
            manifest = read_sweep_manifest(sweep_dir)  # as it is now, under the lock
            by_name = {s.name: s for s in cells}
            for cell in manifest["cells"]:
                if cell["name"] in by_name:
                    _record(cell, by_name[cell["name"]])
            with contextlib.suppress(KpbenchError):  # a read-only sweep folder: the status is still right
                write_sweep_manifest(sweep_dir, manifest)
    return SweepStatus(sweep_dir=sweep_dir, cells=cells, notes=notes, polled_at=min(polled) if polled else None)


def _grid_poll_interval(sweep_dir: Path) -> float:
    """The [sweep] poll_interval_s of the grid copy in the sweep folder (the default when it cannot be read)."""
    from kpbench.sweep.grid import DEFAULT_POLL_INTERVAL_S

    copy = sweep_dir / GRID_COPY
    try:
        from kpbench.core.config import tomllib

        value = tomllib.loads(copy.read_text(encoding="utf-8")).get("sweep", {}).get("poll_interval_s")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_POLL_INTERVAL_S
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else DEFAULT_POLL_INTERVAL_S


def watch_sweep(request: StatusRequest, every_s: float, on_status: Callable[[SweepStatus], None],
                sleep: Callable[[float], None] = time.sleep, max_rounds: int | None = None) -> SweepStatus:
    """Call `on_status` with the sweep's status every `every_s` seconds (never more often than the poll interval
    lets the scheduler be asked) until no cell is queued or running; returns the last status."""
    rounds = 0
    while True:
        status = sweep_status(request)
        on_status(status)
        rounds += 1
        if not any(c.state in ACTIVE for c in status.cells) or (max_rounds is not None and rounds >= max_rounds):
            return status
        sleep(every_s)
