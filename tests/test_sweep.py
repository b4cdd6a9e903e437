"""kpbench sweep without a cluster: the grid file, the cells' states from every source, rate-limited polling, job
arrays as sbatch gets them (a stand-in sbatch), submitit's local executor capped, and a real grid through the
debug launcher (a run and a speed table of a zero-cost model), resumed and merged by `kpbench report`."""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kpdata import assert_one_line_error

from kpbench.core.errors import KpbenchError
from kpbench.runs.store import scan_store
from kpbench.sweep import StatusRequest
from kpbench.sweep.grid import Resources, load_grid
from kpbench.sweep.layout import read_sweep_manifest, write_sweep_manifest
from kpbench.sweep.state import (
    JobInfo,
    SchedulerView,
    SlurmPoller,
    error_line,
    format_elapsed,
    parse_elapsed,
    resolve_cell,
)

submitit = pytest.importorskip("submitit", reason="submitit not installed (pip install 'kpbench[sweep]')")

ZOO = """
[sweep]
name = "zoo"
max_parallel = 3

[resources.h100]
partition = "gpu"
constraint = "h100"
gpus = 1
cpus = 8
mem_gb = 64
time_min = 60

[resources.a100]
constraint = "a100"
gpus = 1
time_min = 90
setup = ["module load cuda"]
sbatch = { exclusive = true }

[defaults]
coco_root = "/data/coco"

[[run]]
resources = "h100"
model = "keypointrcnn"
weights = "COCO_V1"
analysis = false
vary = { min_size = [640, 800], dtype = ["fp32", "fp16"] }

[[speed]]
resources = ["h100", "a100"]
model = ["keypointrcnn", "yolo"]
weights = ["COCO_V1", "default"]
sizes = [480, 640]
dtype = ["fp32", "fp16"]
"""


def _grid(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ----------------------------------------------------------------------------------------------------------
# The grid file


def test_grid_cells_are_resources_times_the_product_of_the_axes(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path, ZOO), environ={})
    assert grid.sweep.name == "zoo" and grid.sweep.max_parallel == 3 and grid.sweep.poll_interval_s == 30.0
    assert grid.resources["h100"] == Resources(name="h100", time_min=60, partition="gpu", constraint="h100", gpus=1,
                                               cpus=8, mem_gb=64)
    assert grid.resources["a100"] == Resources(name="a100", time_min=90, constraint="a100", gpus=1,
                                               setup=("module load cuda",), sbatch={"exclusive": True})
    runs = [c for c in grid.cells if c.kind == "run"]
    assert [(c.settings["min_size"], c.settings["dtype"]) for c in runs] == [
        (640, "fp32"), (640, "fp16"), (800, "fp32"), (800, "fp16")]
    assert runs[0].settings == {"coco_root": "/data/coco", "model": "keypointrcnn", "weights": "COCO_V1",
                                "min_size": 640, "dtype": "fp32"}
    assert all(c.options == {"analysis": False} and c.resource == "h100" and c.block == "[[run]] 1" for c in runs)
    speeds = [c for c in grid.cells if c.kind == "speed"]
    assert [c.resource for c in speeds] == ["h100", "a100"]  # one speed table per GPU type
    assert speeds[0].settings == {"coco_root": "/data/coco", "model": ["keypointrcnn", "yolo"],
                                  "weights": ["COCO_V1", "default"], "sizes": [480, 640], "dtype": ["fp32", "fp16"]}
    names = [c.name for c in grid.cells]
    assert len(set(names)) == 6
    assert [n.rsplit("-", 1)[0] for n in names] == [
        "run-keypointrcnn-COCO_V1-640-fp32-h100", "run-keypointrcnn-COCO_V1-640-fp16-h100",
        "run-keypointrcnn-COCO_V1-800-fp32-h100", "run-keypointrcnn-COCO_V1-800-fp16-h100",
        "speed-keypointrcnn+yolo-COCO_V1+default-h100", "speed-keypointrcnn+yolo-COCO_V1+default-a100",
    ]  # fmt: skip
    assert all(len(n.rsplit("-", 1)[1]) == 8 for n in names)
    # A longer time limit (after a timeout) keeps every cell; a changed setting makes another cell.
    longer = load_grid(_grid(tmp_path, ZOO.replace("time_min = 90", "time_min = 240"), "longer.toml"), environ={})
    assert [c.name for c in longer.cells] == names
    legacy = load_grid(_grid(tmp_path, ZOO.replace('weights = "COCO_V1"', 'weights = "COCO_LEGACY"'), "l.toml"),
                       environ={})
    assert [c.name for c in legacy.cells][4:] == names[4:] and set(names[:4]).isdisjoint(c.name for c in legacy.cells)


def test_a_cell_is_its_kpbench_command_line_with_its_own_config(tmp_path: Path) -> None:
    from kpbench.core.config import RunSettings, load_config, merge_settings, settings_dict
    from kpbench.sweep.sweep import cell_command, cell_config_text

    cell = load_grid(_grid(tmp_path, ZOO), environ={}).cells[1]
    config = tmp_path / "cell.toml"
    config.write_text(cell_config_text(cell, tmp_path / "out" / "run"))
    settings = merge_settings(RunSettings, load_config(config))  # what `kpbench run --config cell.toml` runs
    assert settings_dict(settings) == settings_dict(RunSettings(
        coco_root="/data/coco", model="keypointrcnn", weights="COCO_V1", min_size=640, dtype="fp16",
        out=str(tmp_path / "out" / "run")))
    assert cell_command("/py", "run", config, cell.options) == [
        "/py", "-m", "kpbench", "run", "--config", str(config), "--no-progress", "--no-analysis"]
    assert cell_command("/py", "speed", config, {}) == ["/py", "-m", "kpbench", "speed", "--config", str(config),
                                                       "--no-progress"]


def test_executor_parameters_per_launcher(tmp_path: Path) -> None:
    from kpbench.sweep.launch import executor_parameters

    resources = load_grid(_grid(tmp_path, ZOO), environ={}).resources
    assert executor_parameters("slurm", "zoo", resources["h100"], 3) == {
        "timeout_min": 60, "name": "zoo-h100", "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64,
        "slurm_array_parallelism": 3, "slurm_partition": "gpu", "slurm_constraint": "h100"}
    assert executor_parameters("slurm", "zoo", resources["a100"], 2) == {
        "timeout_min": 90, "name": "zoo-a100", "gpus_per_node": 1, "slurm_array_parallelism": 2,
        "slurm_constraint": "a100", "slurm_setup": ["module load cuda"],
        "slurm_additional_parameters": {"exclusive": True}}
    # The local executor honours the time limit, the GPUs and the setup lines; a machine is what it is otherwise.
    assert executor_parameters("local", "zoo", resources["a100"], 2) == {
        "timeout_min": 90, "name": "zoo-a100", "gpus_per_node": 1, "local_setup": ["module load cuda"]}


BASE = """
[resources.cpu]
time_min = 10
[defaults]
coco_root = "/data/coco"
"""
TWO = BASE + "[resources.gpu]\ntime_min = 10\ngpus = 1\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[sweeep]\n" + BASE + "[[run]]\n", "unknown table [sweeep] (did you mean 'sweep'?)"),
        ("[[run]]\nmodel = 'keypointrcnn'\n", "no [resources.NAME] table: say where cells run"),
        ("[resources.cpu]\ncpus = 2\n[[run]]\n", "[resources.cpu]: 'time_min' is required"),
        ("[resources.cpu]\ntime_min = 10\ngpus = -1\n[[run]]\n", "[resources.cpu]: 'gpus' must be >= 0, got -1"),
        ("[resources.cpu]\ntime_min = 10\ncpus = true\n[[run]]\n", "'cpus' must be an integer, got bool True"),
        ("[resources.cpu]\ntime_min = 10\npartiton = 'a'\n[[run]]\n", "unknown key 'partiton' (did you mean 'partition'?)"),
        ("[sweep]\nmax_parallel = 0\n" + BASE + "[[run]]\n", "[sweep]: 'max_parallel' must be >= 1, got 0"),
        (BASE, "no cells: add a [[run]] or [[speed]] block"),
        (BASE + "[run]\nmin_size = 3\n", "'run' must be blocks written [[run]]"),
        (BASE + "[[run]]\nmin_sise = 5\n", "[[run]] 1: unknown key 'min_sise' (did you mean 'min_size'?)"),
        (BASE + "[[run]]\nmin_size = 0\n", "[[run]] 1: [run]: 'min_size' must be >= 1, got 0"),
        (BASE + "[[run]]\ndtype = 'fp8'\n", "'dtype' must be one of fp32, fp16, bf16, got 'fp8'"),
        (BASE + "[[run]]\nmin_size = 900\nmax_size = 800\n", "[[run]] 1: --max-size 800 ('max_size' in this block) is smaller than"),
        (BASE + "[[run]]\nvary = { min_size = 640 }\n", "vary: 'min_size' must be a non-empty list of values"),
        (BASE + "[[run]]\nvary = { min_size = [640, 0] }\n", "[[run]] 1 with min_size = 0: [run]: 'min_size' must be >= 1"),
        (BASE + "[[run]]\nmin_size = 640\nvary = { min_size = [800] }\n", "'min_size' is both set and in vary"),
        (BASE + "[[run]]\nvary = { min_sise = [1] }\n", "vary: unknown key 'min_sise' (did you mean 'min_size'?)"),
        (BASE + "[[run]]\nout = 'x'\n", "[[run]] 1: 'out' cannot be set: each cell writes into the sweep folder"),
        (BASE + "[[run]]\ndownload = true\n", "'download' cannot be true in a sweep"),
        (BASE + "[[run]]\nresources = 'v100'\n", "'resources': no [resources.v100] table"),
        (TWO + "[[run]]\n", "'resources' is required when there are several [resources.NAME] tables (cpu, gpu)"),
        (BASE + "[[run]]\n[[run]]\n", "[[run]] 1 and [[run]] 2 give the same cell (run-keypointrcnn-cpu-"),
        (BASE + "[[speed]]\nbackend = 'hotcoco'\n", "[[speed]] 1: unknown key 'backend'"),
        (BASE + "[[run]]\nbackend = 'cocoeval'\n", "'backend' must be one of vectorized, pycocotools, hotcoco"),
        ("[resources.cpu]\ntime_min = 10\n[[run]]\n", "[[run]] 1: no 'coco_root' (and $KPBENCH_COCO_ROOT is not set)"),
        (BASE + "[defaults]\nmin_sise = 1\n", "not valid TOML"),  # a table given twice
        ("[resources.cpu]\ntime_min = 10\n[defaults]\nmin_sise = 1\n[[run]]\ncoco_root = 'x'\n",
         "[defaults]: unknown key 'min_sise' (did you mean 'min_size'?)"),
    ],
)
def test_grid_mistakes_are_one_line_naming_file_block_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = _grid(tmp_path, text)
    with pytest.raises(KpbenchError) as info:
        load_grid(path, environ={})
    message = str(info.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message, message


@pytest.mark.parametrize("backend", ["vectorized", "pycocotools", "hotcoco"])
def test_every_evaluation_backend_is_a_run_blocks_backend(tmp_path: Path, backend: str) -> None:
    """Round 5, item 2: the grid takes the evaluation's own list of backends (the default, vectorized, too), and the
    cell's command line passes it on."""
    from kpbench.evaluation.backends import BACKENDS
    from kpbench.sweep.sweep import cell_command

    assert backend in BACKENDS  # the list this test walks is the evaluation's, not a third copy
    (cell,) = load_grid(_grid(tmp_path, BASE + f"[[run]]\nbackend = '{backend}'\n"), environ={}).cells
    assert cell.options == {"backend": backend}
    assert cell_command("/py", "run", tmp_path / "c.toml", cell.options)[-2:] == ["--backend", backend]


def test_runtimes_are_a_setting_like_any_other(tmp_path: Path) -> None:
    """Issue 27, item 1: runtimes where they exist. A run block varies its runtime (a cell each, named by it); a
    speed block's list of runtimes stays inside one table; a runtime that does not exist is one line."""
    grid = load_grid(_grid(tmp_path, BASE + """
[[run]]
model = "yolo"
vary = { runtime = ["eager", "onnxruntime:cpu"] }
[[speed]]
synthetic = true
runtime = ["eager", "compile", "onnxruntime"]
"""), environ={})
    runs, (speed,) = grid.cells[:2], grid.cells[2:]
    assert [(c.settings["runtime"], c.name.rsplit("-", 1)[0]) for c in runs] == [
        ("eager", "run-yolo-eager-cpu"), ("onnxruntime:cpu", "run-yolo-onnxruntime_cpu-cpu")]
    assert speed.settings == {"coco_root": "/data/coco", "synthetic": True, "runtime": ["eager", "compile", "onnxruntime"]}
    with pytest.raises(KpbenchError, match=r"\[\[run\]\] 1 with runtime = \"tflite\": --runtime tflite: unknown runtime; choose eager, .* \('runtime' in this block\)$"):
        load_grid(_grid(tmp_path, BASE + '[[run]]\nvary = { runtime = ["tflite"] }\n', "bad.toml"), environ={})
    with pytest.raises(KpbenchError, match=r"\[\[speed\]\] 1: --runtime eager:cuda: only onnxruntime takes"):
        load_grid(_grid(tmp_path, BASE + '[[speed]]\nruntime = ["eager:cuda"]\n', "bad2.toml"), environ={})


def test_speed_on_synthetic_images_needs_no_coco_root(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path, "[resources.cpu]\ntime_min = 5\n[[speed]]\nsynthetic = true\n"), environ={})
    assert [c.settings for c in grid.cells] == [{"synthetic": True}]
    with_env = load_grid(_grid(tmp_path, "[resources.cpu]\ntime_min = 5\n[[run]]\n", "b.toml"),
                         environ={"KPBENCH_COCO_ROOT": "/data/coco"})
    assert with_env.cells[0].settings == {}  # the job reads $KPBENCH_COCO_ROOT itself


# ----------------------------------------------------------------------------------------------------------
# States


def _sweep(tmp_path: Path, cells: list[dict[str, Any]]) -> Path:
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "jobs").mkdir(parents=True)
    write_sweep_manifest(sweep_dir, {"kind": "kpbench-sweep", "format_version": 1, "cells": cells, "name": "t"})
    return sweep_dir


def _cell(name: str, kind: str = "run", job_id: str | None = "12_0", launcher: str = "slurm") -> dict[str, Any]:
    attempts = [{"launcher": launcher, "job_id": job_id}] if job_id else []
    return {"name": name, "kind": kind, "resource": "cpu", "attempts": attempts}


def _run_output(sweep_dir: Path, name: str, status: str, images: int = 2, metrics: bool = True,
                error: str | None = None, device: str = "cpu") -> Path:
    run = sweep_dir / "cells" / name / "run"
    run.mkdir(parents=True)
    manifest = {"status": status, "num_images": 4, "environment": {"device": device, "device_name": "NVIDIA H100"}}
    if error:
        manifest["error"] = error
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "detections.jsonl").write_text("".join(f'{{"image_id": {i + 1}}}\n' for i in range(images)))
    if metrics:
        (run / "metrics.json").write_text("{}")
    return run


def _result(sweep_dir: Path, job_id: str, outcome: str, text: str) -> None:
    with (sweep_dir / "jobs" / f"{job_id}_0_result.pkl").open("wb") as fh:
        pickle.dump((outcome, text), fh)


def test_a_complete_output_wins_over_everything_else(tmp_path: Path) -> None:
    sweep_dir = _sweep(tmp_path, [])
    _run_output(sweep_dir, "a", "complete", images=4, device="cuda:0")
    view = SchedulerView(jobs={"12_0": JobInfo(state="FAILED", node="gpu7")}, reachable=True)
    status = resolve_cell(sweep_dir, _cell("a"), view)
    assert (status.state, status.source, status.node, status.gpu, status.progress) == (
        "COMPLETED", "output", "gpu7", "NVIDIA H100", "4/4 images")


def test_live_jobs_come_from_the_scheduler(tmp_path: Path) -> None:
    sweep_dir = _sweep(tmp_path, [])
    _run_output(sweep_dir, "a", "running", images=1, metrics=False)
    view = SchedulerView(jobs={"12_0": JobInfo(state="RUNNING", node="gpu7", elapsed_s=75.0),
                               "12_1": JobInfo(state="PENDING", reason="Resources")}, reachable=True)
    running = resolve_cell(sweep_dir, _cell("a"), view)
    assert (running.state, running.node, running.elapsed_s, running.progress, running.gpu) == (
        "RUNNING", "gpu7", 75.0, "1/4 images", "none (CPU)")
    assert running.row()["elapsed"] == "0:01:15"
    pending = resolve_cell(sweep_dir, _cell("b", job_id="12_1"), view)
    assert (pending.state, pending.error) == ("PENDING", "pending: Resources")


def test_without_accounting_states_come_from_the_files(tmp_path: Path) -> None:
    """The controller has forgotten every job (after MinJobAge) and sacct answers nothing: a cluster without
    accounting. What the cells' files say is all there is."""
    sweep_dir = _sweep(tmp_path, [])
    forgotten = SchedulerView(jobs={}, reachable=True)
    # A run that finished: its manifest.
    _run_output(sweep_dir, "done", "complete", images=4)
    assert resolve_cell(sweep_dir, _cell("done", job_id="1_0"), forgotten).state == "COMPLETED"
    # Slurm stopped one at its time limit: its line in the job's stderr.
    _run_output(sweep_dir, "slow", "running", images=3, metrics=False)
    line = "slurmstepd-node1: error: *** JOB 13 ON node1 CANCELLED AT 2026-01-01T10:00:00 DUE TO TIME LIMIT ***"
    (sweep_dir / "jobs" / "13_0_log.err").write_text(f"warming up\n{line}\n")
    (sweep_dir / "jobs" / "13_0_log.out").write_text(
        "submitit INFO (2026-01-01 09:00:00,000) - Starting with JobEnvironment(job_id=13, hostname=node1, "
        "local_rank=0(1), node=0(1), global_rank=0(1))\n")
    ended = datetime(2026, 1, 1, 10, 0, 0).timestamp()  # the logs' last write: an hour after the job started
    for log in ("13_0_log.out", "13_0_log.err"):
        os.utime(sweep_dir / "jobs" / log, (ended, ended))
    slow = resolve_cell(sweep_dir, _cell("slow", job_id="13"), forgotten)
    assert (slow.state, slow.source, slow.error, slow.node, slow.progress, slow.elapsed_s) == (
        "TIMEOUT", "job log", line, "node1", "3/4 images", 3600.0)
    # A requeue ends an attempt, not the job: the line before it does not count.
    (sweep_dir / "jobs" / "14_0_log.err").write_text(
        "slurmstepd: error: *** JOB 14 ON node1 CANCELLED AT 2026-01-01T10:00:00 DUE TO JOB REQUEUE ***\n")
    _run_output(sweep_dir, "requeued", "complete", images=4)
    assert resolve_cell(sweep_dir, _cell("requeued", job_id="14"), forgotten).state == "COMPLETED"
    # kpbench's own error: the run manifest records it, and submitit's result file carries its error line.
    _run_output(sweep_dir, "bad", "failed", images=0, metrics=False, error="/data/x.jpg: cannot decode the image")
    _result(sweep_dir, "15_0", "error", "Traceback (most recent call last):\n  ...\nsubmitit.core.utils."
            "FailedJobError: warning: x\nerror: /data/x.jpg: cannot decode the image\n")
    bad = resolve_cell(sweep_dir, _cell("bad", job_id="15_0"), forgotten)
    assert (bad.state, bad.source, bad.error) == ("FAILED", "job result", "error: /data/x.jpg: cannot decode the image")
    # submitit stopped a job at its time limit and could not requeue it (not checkpointable).
    _result(sweep_dir, "16_0", "error", "submitit.core.utils.UncompletedJobError: Job not requeued because: "
            "timed-out and not checkpointable.")
    assert resolve_cell(sweep_dir, _cell("t", job_id="16_0"), forgotten).state == "TIMEOUT"
    # A job that died without a word: its run manifest still says "running", and nobody knows the job.
    _run_output(sweep_dir, "gone", "running", images=2, metrics=False)
    gone = resolve_cell(sweep_dir, _cell("gone", job_id="17_0"), forgotten)
    assert (gone.state, gone.progress) == ("LOST", "2/4 images")
    # The same when the scheduler cannot be asked at all (squeue missing): not a verdict.
    unreachable = SchedulerView(reachable=False, notes=["squeue not found: states come from the cells' files only"])
    assert resolve_cell(sweep_dir, _cell("gone", job_id="17_0"), unreachable).state == "UNKNOWN"
    # An interrupted run (Ctrl-C, SIGTERM) with no job to say more; a cell never submitted.
    _run_output(sweep_dir, "stop", "interrupted", images=1, metrics=False)
    stop = resolve_cell(sweep_dir, _cell("stop", job_id="18_0"), forgotten)
    assert (stop.state, stop.error) == ("INTERRUPTED", "interrupted with 1/4 images cached")
    assert resolve_cell(sweep_dir, _cell("new", job_id=None), forgotten).state == "NOT_SUBMITTED"


def test_speed_cell_states(tmp_path: Path) -> None:
    sweep_dir = _sweep(tmp_path, [])
    folder = sweep_dir / "cells" / "s" / "speed"
    folder.mkdir(parents=True)
    header = "model,size,status,error\n"
    (folder / "cpu-1.csv").write_text(header + "m,64,failed,out of memory\nm,96,skipped,no cudnn\n")
    (folder / "cpu-1.json").write_text(json.dumps({"kind": "kpbench-speed", "complete": True, "rows_planned": 2,
                                                   "environment": {"device": "cpu"}}))
    view = SchedulerView(reachable=True)
    failed = resolve_cell(sweep_dir, _cell("s", kind="speed"), view)
    assert (failed.state, failed.error, failed.progress) == (
        "FAILED", "error: no row succeeded (first: out of memory)", "2/2 rows, 0 ok")
    os.utime(folder / "cpu-1.json", (1, 1))  # older than the next table
    (folder / "cpu-2.csv").write_text(header + "m,64,ok,\nm,96,failed,boom\n")
    (folder / "cpu-2.json").write_text(json.dumps({"kind": "kpbench-speed", "complete": True, "rows_planned": 2}))
    done = resolve_cell(sweep_dir, _cell("s", kind="speed"), view)
    assert (done.state, done.progress) == ("COMPLETED", "2/2 rows, 1 ok")


def test_small_helpers() -> None:
    assert [parse_elapsed(t) for t in ("0:05", "12:34", "1:02:03", "2-01:00:00", "INVALID")] == [
        5.0, 754.0, 3723.0, 176400.0, None]
    assert [format_elapsed(s) for s in (None, 5, 3723.4, 176400)] == ["", "0:00:05", "1:02:03", "2-01:00:00"]
    assert error_line("warning: a\nerror: first\nerror: last\nTraceback\n") == "error: last"
    assert error_line("Traceback (most recent call last):\n  File x\nValueError: bad value\n\n") == "ValueError: bad value"
    assert error_line("x\nsubmitit.core.utils.FailedJobError: error: bad\n") == "error: bad"
    assert error_line("") is None


# ----------------------------------------------------------------------------------------------------------
# The scheduler, through stand-ins for squeue, sacct, sbatch and srun


@pytest.fixture()
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """squeue, sacct, sbatch and srun stand-ins on PATH. Each appends its argv to CALLS/<tool>; squeue prints
    CALLS/squeue.out, sacct fails as on a cluster without accounting, sbatch answers "Submitted batch job 77"
    (then 78, ...)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    (calls / "squeue.out").write_text("")
    (calls / "next_job").write_text("77")
    scripts = {
        "squeue": f'echo "$@" >> {calls}/squeue\ncat {calls}/squeue.out',
        "sacct": f'echo "$@" >> {calls}/sacct\necho "Slurm accounting storage is disabled" >&2\nexit 1',
        "sbatch": (f'echo "$@" >> {calls}/sbatch\nn=$(cat {calls}/next_job)\necho $((n + 1)) > {calls}/next_job\n'
                   'echo "Submitted batch job $n"'),
        "srun": "exit 0",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def _calls(calls: Path, tool: str) -> list[str]:
    path = calls / tool
    return path.read_text().splitlines() if path.exists() else []


def test_polling_is_rate_limited_and_sacct_asked_once(tmp_path: Path, fake_slurm: Path) -> None:
    sweep_dir = _sweep(tmp_path, [])
    (fake_slurm / "squeue.out").write_text("12_0|RUNNING|node3|1:02:03|None\n12_1|PENDING||0:00|Priority\n")
    now = [1000.0]
    poller = SlurmPoller(sweep_dir, 30.0, clock=lambda: now[0])
    first = poller.poll(["12_0", "12_1", "12_2"])
    assert first.jobs == {"12_0": JobInfo("RUNNING", "node3", 3723.0, None),
                          "12_1": JobInfo("PENDING", None, 0.0, "Priority")}
    assert _calls(fake_slurm, "squeue") == [
        "--states=all --array --noheader --format=%i|%T|%N|%M|%r --jobs=12_0,12_1,12_2"]
    assert _calls(fake_slurm, "sacct") == [  # 12_2 is not in the queue: accounting is asked once...
        "-X --noheader --parsable2 --format=JobID,State,NodeList,ElapsedRaw --jobs=12"]
    assert first.notes == ["sacct: this cluster keeps no accounting; finished jobs are read from their files"]
    now[0] += 29.0  # within the interval: the kept answer, even from another poller (another `--status`)
    again = SlurmPoller(sweep_dir, 30.0, clock=lambda: now[0]).poll(["12_1", "12_0"])
    assert again.jobs == first.jobs and again.polled_at == 1000.0 and len(_calls(fake_slurm, "squeue")) == 1
    now[0] += 2.0  # past it: asked again, and sacct, which said it keeps no accounting, is not asked again
    (fake_slurm / "squeue.out").write_text("12_0|COMPLETED|node3|1:05:00|None\n")
    later = poller.poll(["12_0", "12_1", "12_2"])
    assert later.jobs == {"12_0": JobInfo("COMPLETED", "node3", 3900.0, None)} and later.polled_at == 1031.0
    assert len(_calls(fake_slurm, "squeue")) == 2 and len(_calls(fake_slurm, "sacct")) == 1
    now[0] += 1.0  # a job the kept answer never asked about (just submitted) is asked about at once
    poller.poll(["12_0", "13_0"])
    assert len(_calls(fake_slurm, "squeue")) == 3


def test_status_cli_reads_squeue_once_per_interval(tmp_path: Path, fake_slurm: Path, run_cli) -> None:
    sweep_dir = _sweep(tmp_path, [_cell("a", job_id="40_0"), _cell("b", job_id="40_1")])
    (sweep_dir / "grid.toml").write_text("[sweep]\npoll_interval_s = 600\n")
    _run_output(sweep_dir, "b", "complete", images=4)
    (fake_slurm / "squeue.out").write_text("40_0|RUNNING|node9|0:42|None\n40_1|COMPLETED|node9|1:00|None\n")
    code, out, err = run_cli("sweep", sweep_dir, "--status", "--format", "json")
    assert code == 0, err
    rows = {r["cell"]: r for r in json.loads(out)}
    assert {k: rows["a"][k] for k in ("state", "node", "elapsed", "job")} == {
        "state": "RUNNING", "node": "node9", "elapsed": "0:00:42", "job": "40_0"}
    assert rows["b"]["state"] == "COMPLETED" and rows["b"]["progress"] == "4/4 images"
    assert "2 cells: 1 COMPLETED, 1 RUNNING" in err
    assert run_cli("sweep", sweep_dir, "--status")[0] == 0
    assert len(_calls(fake_slurm, "squeue")) == 1  # the grid's poll_interval_s = 600: the kept answer
    assert run_cli("sweep", sweep_dir, "--status", "--poll-interval", "0")[0] == 0
    assert len(_calls(fake_slurm, "squeue")) == 2
    manifest = read_sweep_manifest(sweep_dir)  # the status is recorded in the manifest
    assert [(c["state"], c["node"]) for c in manifest["cells"]] == [("RUNNING", "node9"), ("COMPLETED", "node9")]


def test_resubmission_skips_finished_leaves_running_and_submits_failed_as_one_array(
    tmp_path: Path, fake_slurm: Path, run_cli
) -> None:
    """Three runs on one resource shape: submitted as one job array; then one finished, one still running and one
    failed: the second submission sends only the failed one, with the same command (its run directory resumes)."""
    grid = _grid(tmp_path, """
        [sweep]
        name = "t"
        max_parallel = 2
        [resources.gpu]
        partition = "debug"
        constraint = "h100"
        gpus = 1
        cpus = 4
        mem_gb = 16
        time_min = 30
        [[run]]
        coco_root = "/data/coco"
        vary = { min_size = [320, 480, 640] }
    """)
    out = tmp_path / "zoo"
    code, stdout, err = run_cli("sweep", grid, "--out", out, "--format", "json")
    assert code == 0, err
    actions = json.loads(stdout)
    assert [(a["action"], a["reason"], a["job"]) for a in actions] == [
        ("submitted", "new", "77_0"), ("submitted", "new", "77_1"), ("submitted", "new", "77_2")]
    assert "submitted 3 cell(s) on [resources.gpu] as Slurm job array 77 (at most 2 at once)" in err
    script = (out / "jobs" / "77_submission.sh").read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=debug", "#SBATCH --constraint=h100",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "#SBATCH --time=30",
                 "#SBATCH --job-name=t-gpu"):
        assert line in script.splitlines(), (line, script)
    manifest = read_sweep_manifest(out)
    names = [c["name"] for c in manifest["cells"]]
    assert [c["attempts"][-1]["job_id"] for c in manifest["cells"]] == ["77_0", "77_1", "77_2"]
    # What each job runs: the kpbench command line, pickled as submitit's CommandFunction (strings only).
    with (out / "jobs" / "77_1_submitted.pkl").open("rb") as fh:
        delayed = pickle.load(fh)
    assert type(delayed.function).__name__ == "CommandFunction"
    assert delayed.function.command == manifest["cells"][1]["command"] == [
        sys.executable, "-m", "kpbench", "run", "--config", str(out.absolute() / "cells" / names[1] / "cell.toml"),
        "--no-progress"]
    assert delayed.function.cwd == os.getcwd()
    # Later: 77_0 finished, 77_1 runs, 77_2 failed.
    _run_output(out, names[0], "complete", images=4)
    _run_output(out, names[2], "failed", images=1, metrics=False, error="out of memory")
    (fake_slurm / "squeue.out").write_text("77_0|COMPLETED|n1|5:00|None\n77_1|RUNNING|n2|4:00|None\n"
                                           "77_2|FAILED|n1|0:30|None\n")
    code, stdout, err = run_cli("sweep", grid, "--out", out, "--format", "json")
    assert code == 0, err
    assert [(a["action"], a["reason"], a["job"]) for a in json.loads(stdout)] == [
        ("skipped", "completed", "77_0"), ("left", "running", "77_1"), ("resubmitted", "was FAILED", "78")]
    assert len(_calls(fake_slurm, "sbatch")) == 2
    single = (out / "jobs" / "78_submission.sh").read_text()
    assert "#SBATCH --array" not in single  # one cell: a plain job
    again = read_sweep_manifest(out)
    assert [len(c["attempts"]) for c in again["cells"]] == [1, 1, 2]
    assert again["cells"][2]["command"] == manifest["cells"][2]["command"]


@pytest.mark.parametrize(("state", "action", "reason"), [
    ("CANCELLED", "resubmitted", "was CANCELLED"), ("TIMEOUT", "resubmitted", "was TIMEOUT"),
    ("OUT_OF_MEMORY", "resubmitted", "was OUT_OF_MEMORY"), ("PREEMPTED", "resubmitted", "was PREEMPTED"),
    ("NODE_FAIL", "resubmitted", "was NODE_FAIL"), ("PENDING", "left", "pending"), ("RUNNING", "left", "running"),
    ("REQUEUED", "left", "requeued"),
])
def test_which_scheduler_states_are_submitted_again(tmp_path: Path, fake_slurm: Path, run_cli, state: str,
                                                    action: str, reason: str) -> None:
    """Issue 27, item 3: failed, cancelled and timed-out cells (and the other ends Slurm gives) go out again with
    the same command; queued, running and requeued ones are left alone (submitting them again would run them
    twice)."""
    grid = _grid(tmp_path, "[resources.cpu]\ntime_min = 5\n[[speed]]\nsynthetic = true\n")
    out = tmp_path / "s"
    assert run_cli("sweep", grid, "--out", out)[0] == 0
    (fake_slurm / "squeue.out").write_text(f"77|{state}|n1|0:30|None\n")
    code, stdout, err = run_cli("sweep", grid, "--out", out, "--format", "json")
    assert code == 0, err
    job = "78" if action == "resubmitted" else "77"
    assert [(a["action"], a["reason"], a["job"]) for a in json.loads(stdout)] == [(action, reason, job)]
    (cell,) = read_sweep_manifest(out)["cells"]
    assert [a["job_id"] for a in cell["attempts"]] == ["77", "78"][: 2 if action == "resubmitted" else 1]
    assert len(_calls(fake_slurm, "sbatch")) == (2 if action == "resubmitted" else 1)


def test_sbatch_refusal_is_one_line(tmp_path: Path, fake_slurm: Path, run_cli) -> None:
    (tmp_path / "bin" / "sbatch").write_text('#!/bin/sh\necho "sbatch: error: invalid partition specified: h200" >&2'
                                             "\nexit 1\n")
    grid = _grid(tmp_path, "[resources.big]\npartition = 'h200'\ntime_min = 5\n[[speed]]\nsynthetic = true\n")
    assert_one_line_error(run_cli("sweep", grid, "--out", tmp_path / "s"),
                          "[resources.big]: sbatch refused the job array: sbatch: error: invalid partition specified")


# ----------------------------------------------------------------------------------------------------------
# The command line's option checks


def test_command_line_mistakes(tmp_path: Path, run_cli) -> None:
    grid = _grid(tmp_path, "[resources.cpu]\ntime_min = 5\n[[speed]]\nsynthetic = true\n")
    assert_one_line_error(run_cli("sweep", grid), "--out SWEEP_DIR is required")
    assert_one_line_error(run_cli("sweep", grid, "--out", tmp_path / "s", "--launcher", "pbs"),
                          "--launcher: must be one of slurm, local, debug, got 'pbs'")
    assert_one_line_error(run_cli("sweep", grid, "--status"), f"{grid}: a file; --status reads a sweep folder")
    assert_one_line_error(run_cli("sweep", tmp_path, "--status"), f"{tmp_path}: not a sweep folder (no sweep.json)")
    assert_one_line_error(run_cli("sweep", grid, "--out", tmp_path / "s", "--watch", "5"),
                          "--poll-interval and --watch apply to --status")
    sweep_dir = _sweep(tmp_path, [])
    assert_one_line_error(run_cli("sweep", sweep_dir, "--status", "--out", tmp_path / "x", "--launcher", "local"),
                          "--status: --out, --launcher do(es) not apply")
    assert_one_line_error(run_cli("sweep", sweep_dir, "--out", tmp_path / "x"), f"{sweep_dir}: a sweep folder, not a "
                          "grid file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    assert_one_line_error(run_cli("sweep", grid, "--out", tmp_path / "full"),
                          "neither empty nor a sweep folder (no sweep.json)")
    assert_one_line_error(run_cli("sweep", grid, "--out", tmp_path / "s", "--max-parallel", "0"),
                          "--max-parallel: must be >= 1, got 0")


def test_dry_run_writes_nothing(tmp_path: Path, run_cli) -> None:
    grid = _grid(tmp_path, ZOO)
    code, out, err = run_cli("sweep", grid, "--out", tmp_path / "zoo", "--dry-run", "--format", "csv")
    assert code == 0, err
    assert out.splitlines()[0] == "cell,action,reason,job" and len(out.splitlines()) == 7
    assert all(line.split(",")[1:3] == ["submitted", "new"] for line in out.splitlines()[1:])
    assert err.count("would submit") == 6 and f"{sys.executable} -m kpbench speed --config" in err
    assert not (tmp_path / "zoo").exists()


def test_help_and_report_do_not_import_submitit_or_torch(tmp_path: Path) -> None:
    sweep_dir = _sweep(tmp_path, [_cell("a", job_id=None)])
    code = ("import sys, json\nfrom kpbench.cli import main\n"
            "for argv in (['--help'], ['sweep', '--help'], ['report', sys.argv[1], '--format', 'json']):\n"
            "    sys.argv = ['kpbench', *argv]\n"
            "    try:\n        main()\n    except SystemExit as exc:\n        assert not exc.code, exc.code\n"
            "print(json.dumps(sorted(m for m in ('submitit', 'torch') if m in sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(sweep_dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


# ----------------------------------------------------------------------------------------------------------
# submitit's local executor, capped (cells of a stand-in kpbench that only sleeps)

FAKE_KPBENCH = '''#!{python}
"""A stand-in interpreter: `-m kpbench run --config CELL.toml ...` sleeps, logs its start and end, and writes a
finished run directory (or fails when the cell's min_size is 13); anything else is handed to the real Python."""
import json, os, sys, time
if sys.argv[1:3] != ["-m", "kpbench"]:
    os.execv({python!r}, [{python!r}, *sys.argv[1:]])
import tomllib
config = tomllib.loads(open(sys.argv[sys.argv.index("--config") + 1]).read())["run"]
log = os.environ["FAKE_LOG"]
with open(log, "a") as fh:
    fh.write(f"start {{config['min_size']}} {{time.time()}}\\n")
time.sleep(1.5)
with open(log, "a") as fh:
    fh.write(f"end {{config['min_size']}} {{time.time()}}\\n")
if config["min_size"] == 13:
    print("error: no such image: 13.jpg", file=sys.stderr)
    sys.exit(2)
os.makedirs(config["out"], exist_ok=True)
with open(os.path.join(config["out"], "manifest.json"), "w") as fh:
    json.dump({{"status": "complete", "num_images": 1, "environment": {{"device": "cpu"}}}}, fh)
open(os.path.join(config["out"], "metrics.json"), "w").write("{{}}")
open(os.path.join(config["out"], "detections.jsonl"), "w").write('{{"image_id": 1}}\\n')
'''


def test_local_launcher_caps_how_many_cells_run_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        run_cli) -> None:
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_KPBENCH.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "cells.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    grid = _grid(tmp_path, f"""
        [sweep]
        max_parallel = 2
        python = "{fake}"
        [resources.here]
        time_min = 5
        [[run]]
        coco_root = "/nowhere"
        vary = {{ min_size = [11, 12, 13, 14] }}
    """)
    code, out, err = run_cli("sweep", grid, "--out", tmp_path / "s", "--launcher", "local", "--format", "json")
    assert code == 1, err  # one cell failed
    assert "1 of 4 cells did not complete" in err and "running 4 cell(s) here, at most 2 at once" in err
    assert ("note: [resources.here]: no 'gpus': its cells see no GPU (CUDA_VISIBLE_DEVICES is empty), as on Slurm"
            in err.splitlines())
    events = [line.split() for line in log.read_text().splitlines()]
    spans = {size: [float(t) for kind, s, t in events if s == size] for size in ("11", "12", "13", "14")}
    assert all(len(span) == 2 for span in spans.values())  # every cell ran once
    # The local executor would start all four at once; the launcher hands it two at a time.
    overlap = max(sum(1 for a, b in spans.values() if a <= start < b) for start, _ in spans.values())
    assert overlap <= 2
    rows = {r["cell"].split("-")[2]: r for r in json.loads(out)}
    assert {size: rows[size]["state"] for size in rows} == {
        "11": "COMPLETED", "12": "COMPLETED", "13": "FAILED", "14": "COMPLETED"}
    assert rows["13"]["error"] == "error: no such image: 13.jpg"
    assert rows["11"]["node"] == os.uname().nodename and rows["11"]["gpu"] == "none (CPU)"
    manifest = read_sweep_manifest(tmp_path / "s")
    job_ids = [c["attempts"][0]["job_id"] for c in manifest["cells"]]
    assert all(j.isdigit() for j in job_ids) and len(set(job_ids)) == 4  # the local controllers' pids
    # Again: the three finished cells are skipped, the failed one runs again (and fails again).
    log.unlink()
    code, out, err = run_cli("sweep", grid, "--out", tmp_path / "s", "--launcher", "local")
    assert code == 1 and [line.split()[:2] for line in log.read_text().splitlines()] == [["start", "13"], ["end", "13"]]
    assert [len(c["attempts"]) for c in read_sweep_manifest(tmp_path / "s")["cells"]] == [1, 1, 2, 1]


# ----------------------------------------------------------------------------------------------------------
# A real grid through the debug launcher: a run and a speed table of a model that costs nothing (the point is the
# orchestration: real `kpbench run` and `kpbench speed` processes, failure, resume, merge; the Slurm test runs real
# models), resumed and merged.

# A pose model (`--model FILE.py:Oracle`) that answers with the ground truth of the synthetic root, found by image
# size (each of its images has its own), person score 0.9 and keypoint probability 0.8: AP 1.0, at no cost.
ORACLE = """
import json, os
import numpy as np
from kpbench.core.schema import COCO17
from kpbench.models.base import ModelInfo, Predictions


class Oracle:
    schema = COCO17
    input_format = "numpy"

    def __init__(self, min_size=None, max_size=None):  # takes --min-size, as a real model would, and ignores it
        gt = json.load(open(os.environ["ORACLE_GT"]))
        shape = {r["id"]: (r["height"], r["width"]) for r in gt["images"]}
        self.people = {}
        for a in gt["annotations"]:
            self.people.setdefault(shape[a["image_id"]], []).append(a)

    def info(self):
        return ModelInfo(weights=None, source="test", name="oracle", keypoint_score_kind="probability")

    def set_input_size(self, min_size, max_size):
        pass

    def predict(self, images):
        out = []
        for image in images:
            people = self.people.get(tuple(image.shape[:2]), [])
            n = len(people)
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in people)]).reshape(n, 4)
            keypoints = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(n, 17, 3)
            out.append(Predictions(boxes=boxes, scores=np.full(n, 0.9), keypoints=keypoints,
                                   keypoint_scores=np.full((n, 17), 0.8), keypoint_score_kind="probability"))
        return out
"""


def test_debug_sweep_runs_resumes_and_merges(tmp_path: Path, synthetic_coco_root: Path, run_cli,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    coco = tmp_path / "coco"
    coco.mkdir()  # empty at first: the run cell fails, and is submitted again once the data is there
    oracle = tmp_path / "oracle.py"
    oracle.write_text(ORACLE)
    monkeypatch.setenv("ORACLE_GT", str(synthetic_coco_root / "annotations" / "person_keypoints_val2017.json"))
    grid = _grid(tmp_path, f"""
        [sweep]
        name = "tiny"
        [resources.here]
        time_min = 20
        [defaults]
        device = "cpu"
        model = "{oracle}:Oracle"
        [[run]]
        coco_root = "{coco}"
        min_size = 64
        max_size = 107  # what the speed table times at size 64 (round(64 * 1333 / 800)): the run's AP stands beside it
        analysis = false
        [[speed]]
        synthetic = true
        sizes = [64]
        warmup = 0
        iters = 2
        num_images = 1
        stages = false
        flops = false
    """)
    out = tmp_path / "s"
    code, stdout, err = run_cli("sweep", grid, "--out", out, "--launcher", "debug", "--format", "json")
    assert code == 1
    first = {r["kind"]: r for r in json.loads(stdout)}
    assert first["run"]["state"] == "FAILED" and first["speed"]["state"] == "COMPLETED"
    assert first["run"]["error"].startswith("error: ") and "annotation" in first["run"]["error"], first["run"]["error"]
    assert ("note: [resources.here]: the debug launcher runs cells one by one in the foreground; their time limit, "
            "GPUs and setup lines are not applied") in err.splitlines()
    # The data arrives; the same command submits the failed cell again, and skips the finished one.
    shutil.copytree(synthetic_coco_root, coco, dirs_exist_ok=True)
    code, stdout, err = run_cli("sweep", grid, "--out", out, "--launcher", "debug", "--format", "json")
    assert code == 0, err
    assert [r["state"] for r in json.loads(stdout)] == ["COMPLETED", "COMPLETED"]
    manifest = read_sweep_manifest(out)
    run_cell, speed_cell = manifest["cells"]
    assert [len(c["attempts"]) for c in manifest["cells"]] == [2, 1]
    assert run_cell["gpu"] == speed_cell["gpu"] == "none (CPU)" and run_cell["node"] == os.uname().nodename
    run_dir = Path(run_cell["output"])
    store = run_dir / "detections.bin"
    detections = store.read_bytes()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["keypoints"]["AP"] == metrics["bbox"]["AP"] == 1.0  # the oracle's answers are the ground truth
    index = scan_store(store)
    assert len(index) == 4  # every image of the root
    # Killed after two images (as SIGKILL leaves it): the cell is submitted again and `kpbench run` resumes.
    store.write_bytes(detections[: int(index.offsets[2])])
    run_manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**run_manifest, "status": "running"}))
    (run_dir / "metrics.json").unlink()
    code, stdout, err = run_cli("sweep", grid, "--out", out, "--launcher", "debug", "--format", "json")
    assert code == 0, err
    assert "completed: run-oracle-here-" in err
    job = read_sweep_manifest(out)["cells"][0]["attempts"][-1]["job_id"]
    assert "resumed: 2 images were already cached, 2 run now" in (out / "jobs" / f"{job}_0_log.err").read_text()
    assert store.read_bytes() == detections  # byte-identical, through kpbench's resume
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    # Nothing left to do: a fourth call submits nothing.
    code, stdout, err = run_cli("sweep", grid, "--out", out, "--launcher", "debug", "--format", "json")
    assert code == 0 and "one after the other" not in err
    assert "2 cell(s) completed (skipped), 0 queued, running or unknown (left alone), 0 to submit" in err
    assert [len(c["attempts"]) for c in read_sweep_manifest(out)["cells"]] == [3, 1]
    # The report merges both: the speed row carries the run's AP (it ran what the row timed).
    code, stdout, err = run_cli("report", out, "--format", "json")
    assert code == 0, err
    report = json.loads(stdout)
    assert list(report) == ["table", "cells", "speed", "pivot", "runs"]
    (speed_row,) = report["table"]
    speed_csv = next((Path(speed_cell["output"])).glob("*.csv"))
    (csv_row,) = list(csv.DictReader(speed_csv.open()))
    assert speed_row == {
        "cell": speed_cell["name"], "kind": "speed", "model": "oracle", "weights": "",
        "device": csv_row["device_name"], "size": 64, "dtype": "fp32", "variant": "fp32-bs1",
        "fps": float(csv_row["fps"]), "ms_per_image": float(csv_row["ms_per_image"]),
        "median_ms": float(csv_row["median_ms"]), "p90_ms": float(csv_row["p90_ms"]),
        "kp_AP": metrics["keypoints"]["AP"], "box_AP": metrics["bbox"]["AP"], "ap_from": run_cell["name"],
        "ap_note": None, "status": "ok", "error": None,
    }  # fmt: skip
    assert [(c["cell"], c["state"]) for c in report["cells"]] == [(run_cell["name"], "COMPLETED"),
                                                                 (speed_cell["name"], "COMPLETED")]
    assert report["runs"][0]["run"] == run_cell["name"] and report["runs"][0]["kp_AP"] == metrics["keypoints"]["AP"]
    assert report["pivot"][0]["fps@64"] == float(csv_row["fps"])
    # `kpbench html SWEEP_DIR`: one page with the merged table, the cells, the run (named by its cell) and the speed
    # rows of the sweep's tables.
    from test_html import _columns

    page = tmp_path / "sweep.html"
    code, _, err = run_cli("html", out, "--out", page, "--no-images")
    assert code == 0, err
    text = page.read_text()
    assert "<title>kpbench: sweep s</title>" in text and f"<h1>{run_cell['name']}</h1>" in text
    merged = _columns(text, "Every run and speed row")
    assert merged["cell"] == [(None, speed_cell["name"])] and merged["ap_from"] == [(None, run_cell["name"])]
    assert [value for value, _ in merged["fps"]] == [repr(float(csv_row["fps"]))]  # the CSV's full value
    assert merged["kp_AP"] == merged["box_AP"] == [("1.0", "100.0")]  # the run's AP, in percent
    cells = _columns(text, "Cells")
    assert [text for _, text in cells["cell"]] == [run_cell["name"], speed_cell["name"]]
    assert [text for _, text in cells["state"]] == ["COMPLETED", "COMPLETED"]
    metrics_cells = re.findall(r'data-run="([^"]+)" data-iou-type="keypoints" data-stat="AP" data-value="([^"]+)"', text)
    assert metrics_cells == [(run_cell["name"], "1.0")]
    speed_part = text.split("<h2>Speed</h2>", 1)[1]
    assert f'<td data-value="{float(csv_row["fps"])!r}">' in speed_part and "oracle" in speed_part
    # `kpbench plot SWEEP_DIR`: the run cell's figures in its run directory (what `plot RUN_DIR` writes) and the
    # speed cells' figures in the sweep folder (what `plot CSV --out SWEEP_DIR` writes), the same bytes.
    code, _, err = run_cli("plot", out)
    assert code == 0, err
    wrote = [Path(line[len("wrote "):]) for line in err.splitlines() if line.startswith("wrote ")]
    from_sweep = {p: p.read_bytes() for p in wrote}
    code, _, err_run = run_cli("plot", run_dir)
    code_csv, _, err_csv = run_cli("plot", speed_csv, "--out", out)
    assert code == code_csv == 0
    alone = [Path(line[len("wrote "):]) for line in (err_run + err_csv).splitlines() if line.startswith("wrote ")]
    assert wrote == alone and {p: p.read_bytes() for p in alone} == from_sweep
    assert out / "speed_fps.png" in wrote and any(p.parent == run_dir for p in wrote)


def test_plot_of_a_sweep_with_nothing_finished_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.report.sweeps

    monkeypatch.setattr(kpbench.report.sweeps, "sweep_outputs", lambda sweep_dir: ([], []))
    with pytest.raises(KpbenchError, match=r"no cell of this sweep has a run directory or a speed table yet"):
        kpbench.report.sweeps.plot_sweep(tmp_path)


def test_watch_prints_until_nothing_is_queued_or_running(tmp_path: Path, fake_slurm: Path) -> None:
    from kpbench.sweep import watch_sweep

    sweep_dir = _sweep(tmp_path, [_cell("a", job_id="50_0"), _cell("b", job_id="50_1")])
    (fake_slurm / "squeue.out").write_text("50_0|RUNNING|n1|0:10|None\n50_1|PENDING||0:00|Priority\n")
    seen: list[list[str]] = []
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # time passes; the jobs move on
        sleeps.append(seconds)
        if len(sleeps) == 1:
            (fake_slurm / "squeue.out").write_text("50_0|RUNNING|n1|0:20|None\n50_1|RUNNING|n2|0:05|None\n")
        else:
            (fake_slurm / "squeue.out").write_text("50_0|FAILED|n1|0:30|None\n50_1|TIMEOUT|n2|0:40|None\n")

    last = watch_sweep(StatusRequest(sweep_dir, poll_interval_s=0), 5.0,
                       lambda status: seen.append([c.state for c in status.cells]), sleep=sleep)
    assert seen == [["RUNNING", "PENDING"], ["RUNNING", "RUNNING"], ["FAILED", "TIMEOUT"]]
    assert sleeps == [5.0, 5.0] and last.counts() == {"FAILED": 1, "TIMEOUT": 1}


def test_a_changed_grid_retires_cells_and_one_submission_at_a_time(tmp_path: Path, fake_slurm: Path, run_cli) -> None:
    from kpbench.sweep.layout import lock_sweep_dir

    text = "[resources.cpu]\ntime_min = 5\n[[speed]]\nsynthetic = true\nvary = {{ sizes = [{}] }}\n"
    first = _grid(tmp_path, text.format("[320], [480]"), "a.toml")
    out = tmp_path / "s"
    (fake_slurm / "squeue.out").write_text("77_0|RUNNING|n1|0:10|None\n77_1|RUNNING|n1|0:10|None\n")
    assert run_cli("sweep", first, "--out", out)[0] == 0
    kept, dropped = read_sweep_manifest(out)["cells"]
    # While one submission holds the folder, a second one refuses; --status still reads it.
    with lock_sweep_dir(out):
        assert_one_line_error(run_cli("sweep", first, "--out", out),
                              f"{out.absolute()}: another `kpbench sweep` (pid {os.getpid()}) is submitting")
        code, stdout, _ = run_cli("sweep", out, "--status", "--format", "json")
        assert code == 0 and [r["state"] for r in json.loads(stdout)] == ["RUNNING", "RUNNING"]
    # The grid changes: 480 goes, 640 comes. The running cell is left alone, the new one submitted.
    second = _grid(tmp_path, text.format("[320], [640]"), "b.toml")
    code, stdout, err = run_cli("sweep", second, "--out", out, "--format", "json")
    assert code == 0, err
    assert [(a["action"], a["reason"], a["job"]) for a in json.loads(stdout)] == [
        ("left", "running", "77_0"), ("submitted", "new", "78")]
    assert "note: 1 cell(s) of an earlier grid are not in this one: kept on disk" in err
    assert "0 cell(s) completed (skipped), 1 queued, running or unknown (left alone), 1 to submit" in err
    manifest = read_sweep_manifest(out)
    assert [c["name"] for c in manifest["retired"]] == [dropped["name"]]
    assert manifest["cells"][0]["name"] == kept["name"] and manifest["cells"][1]["settings"] == {
        "synthetic": True, "sizes": [640]}
    assert manifest["grid"]["path"] == str(second.absolute()) and (out / "grid.toml").read_text() == second.read_text()
    # Back to the first grid: the retired cell returns with its history (its job), the other one retires.
    (fake_slurm / "squeue.out").write_text("77_0|RUNNING|n1|0:10|None\n77_1|RUNNING|n1|0:10|None\n"
                                           "78|RUNNING|n1|0:10|None\n")
    code, stdout, err = run_cli("sweep", first, "--out", out, "--format", "json")
    assert [(a["action"], a["job"]) for a in json.loads(stdout)] == [("left", "77_0"), ("left", "77_1")]
    manifest = read_sweep_manifest(out)
    assert [c["name"] for c in manifest["cells"]] == [kept["name"], dropped["name"]]
    assert [c["settings"]["sizes"] for c in manifest["retired"]] == [[640]]


def test_status_reads_a_folder_it_cannot_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep folder this user may only read (a colleague's): --status works, and records nothing."""
    import kpbench.sweep.layout as layout
    from kpbench.sweep import sweep_status

    sweep_dir = _sweep(tmp_path, [_cell("a", job_id=None)])
    _run_output(sweep_dir, "a", "complete", images=4)
    before = (sweep_dir / "sweep.json").read_bytes()

    def refuse(path: Path) -> None:
        raise KpbenchError(f"{path / layout.LOCK}: cannot create the sweep's lock (Permission denied)")

    monkeypatch.setattr(layout, "_acquire", refuse)
    assert [c.state for c in sweep_status(StatusRequest(sweep_dir)).cells] == ["COMPLETED"]
    assert (sweep_dir / "sweep.json").read_bytes() == before
