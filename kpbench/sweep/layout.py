"""The sweep folder: its layout, the sweep manifest and the lock of the command that changes it.

    SWEEP_DIR/sweep.json              the manifest: the grid it came from, and per cell its command, config,
                                      output, every submission (launcher, job id, time) and the last known state,
                                      node, GPU, elapsed time and error line
    SWEEP_DIR/grid.toml               the grid file as last submitted
    SWEEP_DIR/cells/NAME/cell.toml    the cell's `kpbench run` / `kpbench speed` config ([run] or [speed] table)
    SWEEP_DIR/cells/NAME/run/         a run cell's run directory
    SWEEP_DIR/cells/NAME/speed/       a speed cell's CSV, JSON manifest and Markdown
    SWEEP_DIR/jobs/                   submitit's folder: sbatch scripts, job logs (<job>_0_log.out/.err), results
    SWEEP_DIR/.scheduler.json         the last answer of the scheduler, with its time (polls are rate-limited)
    SWEEP_DIR/.kpbench-sweep.lock     held while `kpbench sweep` submits or updates the manifest

No heavy imports: `kpbench report SWEEP_DIR` reads this without submitit.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kpbench.core.errors import KpbenchError
from kpbench.core.io import read_json, write_json

MANIFEST = "sweep.json"
MANIFEST_KIND = "kpbench-sweep"
FORMAT_VERSION = 1
GRID_COPY = "grid.toml"
CELLS = "cells"
JOBS = "jobs"
SCHEDULER_CACHE = ".scheduler.json"
LOCK = ".kpbench-sweep.lock"
CELL_CONFIG = "cell.toml"
# Where a cell of each kind writes, inside its folder.
OUTPUT_FOLDER = {"run": "run", "speed": "speed"}


def manifest_path(sweep_dir: str | Path) -> Path:
    """SWEEP_DIR/sweep.json"""
    return Path(sweep_dir) / MANIFEST


def is_sweep_dir(path: str | Path) -> bool:
    """Whether `path` is a folder holding a sweep manifest."""
    return manifest_path(path).is_file()


def cell_dir(sweep_dir: str | Path, name: str) -> Path:
    """SWEEP_DIR/cells/NAME"""
    return Path(sweep_dir) / CELLS / name


def cell_output(sweep_dir: str | Path, name: str, kind: str) -> Path:
    """A cell's run directory (run) or speed folder (speed)."""
    return cell_dir(sweep_dir, name) / OUTPUT_FOLDER[kind]


def jobs_dir(sweep_dir: str | Path) -> Path:
    """SWEEP_DIR/jobs, submitit's folder."""
    return Path(sweep_dir) / JOBS


def read_sweep_manifest(sweep_dir: str | Path) -> dict[str, Any]:
    """SWEEP_DIR/sweep.json, checked to be a sweep manifest this kpbench reads."""
    sweep_dir = Path(sweep_dir)
    path = manifest_path(sweep_dir)
    if not path.is_file():
        raise KpbenchError(f"{sweep_dir}: not a sweep folder (no {MANIFEST})")
    manifest = read_json(path, invalid="unreadable sweep manifest", what="sweep manifest")
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise KpbenchError(f"{path}: not a kpbench sweep manifest (no \"kind\": \"{MANIFEST_KIND}\")")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise KpbenchError(f"{path}: sweep format version {manifest.get('format_version')!r}; this kpbench reads "
                           f"version {FORMAT_VERSION}")
    cells = manifest.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in cells):
        raise KpbenchError(f"{path}: 'cells' must be a list of cells, each with a name")
    return manifest


def write_sweep_manifest(sweep_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write SWEEP_DIR/sweep.json atomically, stamped with the time of the update."""
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = manifest_path(sweep_dir)
    write_json(path, manifest)
    return path


def _acquire(sweep_dir: Path) -> tuple[int | None, str]:
    """(fd, "") holding SWEEP_DIR/.kpbench-sweep.lock, or (None, the holder's pid) when another process holds it."""
    import fcntl

    path = sweep_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise KpbenchError(f"{path}: cannot create the sweep's lock ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        return None, holder or "unknown"
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd, ""


@contextlib.contextmanager
def lock_sweep_dir(sweep_dir: str | Path) -> Iterator[None]:
    """Hold SWEEP_DIR/.kpbench-sweep.lock (an flock, which the kernel releases when its process dies) while a
    submission changes the sweep; a second one refuses at once, naming the holder's pid."""
    fd, holder = _acquire(Path(sweep_dir))
    if fd is None:
        raise KpbenchError(f"{sweep_dir}: another `kpbench sweep` (pid {holder}) is submitting to this folder; wait "
                           "for it to finish")
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_lock_sweep_dir(sweep_dir: str | Path) -> Iterator[bool]:
    """The sweep's lock if it is free (yields True), else nothing (yields False): `--status` reads and prints either
    way, and records what it learnt only when it holds the lock."""
    try:
        fd, _ = _acquire(Path(sweep_dir))
    except KpbenchError:  # a folder this user cannot write: read it all the same
        fd = None
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)
