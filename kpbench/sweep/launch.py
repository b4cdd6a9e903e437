"""Launchers: how cells become jobs, through submitit. A cell is a kpbench command line, run by submitit's
`CommandFunction`: the job pickles the command (a list of strings), never a Python function, so a job runs the
kpbench that is installed when it starts, and a requeued job runs the same command, which resumes its run
directory through `kpbench run`'s own resume.

- ``slurm``: one job array per resource shape (`AutoExecutor(cluster="slurm").submit_array`), at most
  `max_parallel` of its cells at once (`slurm_array_parallelism`, sbatch's ``--array=0-N%P``). Returns at once.
- ``local``: submitit's local executor, which starts every job it is given at once; so cells are handed to it
  `max_parallel` at a time, and the call returns when all have finished.
- ``debug``: submitit's debug executor: one cell after the other, in this process's turn (the command still runs
  as its own process); returns when all have finished.

submitit is imported inside these functions: `kpbench --help` and `kpbench report` never import it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpbench.core.errors import KpbenchError
from kpbench.sweep.grid import Resources
from kpbench.sweep.state import error_line

LAUNCHERS = ("slurm", "local", "debug")


@dataclass
class CellJob:
    """One cell to launch: its name, its command line, and the folder it runs in."""

    name: str
    command: list[str]
    cwd: str


@dataclass
class Launched:
    """What a launcher did with one cell: the job id, and for launchers that wait (local, debug) the outcome."""

    name: str
    job_id: str
    outcome: dict[str, Any] | None = None  # {"result": "success"|"error", "text", "started", "ended", "node"}


def import_submitit() -> Any:
    """submitit, or the one-line error that says how to get it."""
    try:
        import submitit
    except ImportError:
        from kpbench.core.install import install_hint

        raise KpbenchError("kpbench sweep launches jobs through submitit (not installed): "
                           f"{install_hint('sweep')}") from None
    return submitit


def executor_parameters(launcher: str, sweep_name: str, resources: Resources, max_parallel: int) -> dict[str, Any]:
    """submitit's AutoExecutor parameters for one resource shape. Slurm takes all of them; the local executor
    honours the time limit, the GPUs (CUDA_VISIBLE_DEVICES) and the setup lines, and ignores the rest (a machine
    is what it is)."""
    params: dict[str, Any] = {"timeout_min": resources.time_min, "name": f"{sweep_name}-{resources.name}"}
    if resources.gpus is not None:
        params["gpus_per_node"] = resources.gpus
    if launcher == "slurm":
        if resources.cpus is not None:
            params["cpus_per_task"] = resources.cpus
        if resources.mem_gb is not None:
            params["mem_gb"] = resources.mem_gb
        params["slurm_array_parallelism"] = max_parallel
        for key in ("partition", "constraint", "account", "qos"):
            if getattr(resources, key) is not None:
                params[f"slurm_{key}"] = getattr(resources, key)
        if resources.setup:
            params["slurm_setup"] = list(resources.setup)
        if resources.sbatch:
            params["slurm_additional_parameters"] = dict(resources.sbatch)
    elif launcher == "local" and resources.setup:
        params["local_setup"] = list(resources.setup)
    return params


SLURM_ONLY = ("partition", "constraint", "cpus", "mem_gb", "account", "qos", "sbatch")


def ignored_resources(launcher: str, resources: Resources) -> list[str]:
    """What a launcher does not honour of a resource shape, in words (said to the user, never silently dropped)."""
    if launcher == "slurm":
        return []
    if launcher == "debug":
        return [f"[resources.{resources.name}]: the debug launcher runs cells one by one in the foreground; their "
                "time limit, GPUs and setup lines are not applied"]
    ignored = [key for key in SLURM_ONLY if getattr(resources, key) not in (None, {}, ())]
    notes = []
    if ignored:
        notes.append(f"[resources.{resources.name}]: {', '.join(ignored)} apply on Slurm only; the local launcher "
                     "runs on this machine as it is")
    if resources.gpus is None:
        notes.append(f"[resources.{resources.name}]: no 'gpus': its cells see no GPU (CUDA_VISIBLE_DEVICES is "
                     "empty), as on Slurm")
    return notes


def _executor(submitit: Any, launcher: str, folder: Path, python: str | None) -> Any:
    import shlex

    kwargs: dict[str, Any] = {}
    if python is not None and launcher in ("slurm", "local"):
        kwargs[f"{launcher}_python"] = shlex.quote(python)  # submitit puts it into a shell line as it is
    try:
        return submitit.AutoExecutor(folder=folder, cluster=launcher, **kwargs)
    except RuntimeError as exc:  # "Could not detect srun, are you indeed on a slurm cluster?"
        raise KpbenchError(f"--launcher {launcher}: {exc} (use --launcher local on a machine without Slurm)") from None


def _command_function(submitit: Any, job: CellJob, verbose: bool) -> Any:
    return submitit.helpers.CommandFunction(job.command, verbose=verbose, cwd=job.cwd)


def submit_slurm(folder: Path, sweep_name: str, resources: Resources, jobs: Sequence[CellJob], max_parallel: int,
                 python: str | None) -> list[Launched]:
    """Submit the cells of one resource shape as one Slurm job array; returns their job ids (ARRAYID_INDEX)."""
    submitit = import_submitit()
    executor = _executor(submitit, "slurm", folder, python)
    executor.update_parameters(**executor_parameters("slurm", sweep_name, resources, max_parallel))
    try:
        submitted = executor.submit_array([_command_function(submitit, job, verbose=True) for job in jobs])
    except Exception as exc:  # sbatch's refusal (a partition that does not exist, a limit) comes as an exception
        reason = error_line(str(getattr(exc, "stderr", "") or exc)) or type(exc).__name__
        raise KpbenchError(f"[resources.{resources.name}]: sbatch refused the job array: {reason}") from None
    return [Launched(name=job.name, job_id=str(s.job_id)) for job, s in zip(jobs, submitted, strict=True)]


def _local_outcome(job: Any, started: float) -> dict[str, Any]:
    """The outcome of a finished local job, from submitit's result file (its stdout, or the failure)."""
    import socket

    outcome: dict[str, Any] = {"started": started, "ended": time.time(), "node": socket.gethostname()}
    try:
        outcome["text"] = str(job.result())
        outcome["result"] = "success"
    except Exception as exc:  # the command failed, or the job died without a result
        outcome["text"] = str(exc)
        outcome["result"] = "error"
    return outcome


def run_local(folder: Path, sweep_name: str, shapes: Sequence[tuple[Resources, Sequence[CellJob]]],
              max_parallel: int, python: str | None, on_start: Callable[[Launched], None],
              on_end: Callable[[Launched], None], poll_s: float = 0.2) -> list[Launched]:
    """Run cells with submitit's local executor, at most `max_parallel` at once (the executor itself would start
    them all), and wait for all of them. `on_start` is called with each job id as it starts, `on_end` with each
    outcome as it ends (the caller records them in the manifest). Ctrl-C stops the running cells and re-raises."""
    submitit = import_submitit()
    queue = [(resources, job) for resources, jobs in shapes for job in jobs]
    running: dict[str, tuple[Any, Launched, float]] = {}
    done: list[Launched] = []
    executors: dict[str, Any] = {}
    try:
        while queue or running:
            while queue and len(running) < max_parallel:
                resources, job = queue.pop(0)
                if resources.name not in executors:
                    executors[resources.name] = _executor(submitit, "local", folder, python)
                    executors[resources.name].update_parameters(
                        **executor_parameters("local", sweep_name, resources, max_parallel))
                submitted = executors[resources.name].submit(_command_function(submitit, job, verbose=True))
                launched = Launched(name=job.name, job_id=str(submitted.job_id))
                running[job.name] = (submitted, launched, time.time())
                on_start(launched)
            for name, (submitted, launched, started) in list(running.items()):
                if submitted.done():
                    del running[name]
                    launched.outcome = _local_outcome(submitted, started)
                    done.append(launched)
                    on_end(launched)
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for submitted, _, _ in running.values():
            submitted.cancel(check=False)
        raise
    return done


def run_debug(folder: Path, jobs: Sequence[CellJob], on_start: Callable[[Launched], None],
              on_end: Callable[[Launched], None]) -> list[Launched]:
    """Run cells one after the other with submitit's debug executor, in this process's turn (the command itself is
    a process of its own). Its output goes to FOLDER/<job>_0_log.out and .err, as a Slurm job's does; job ids are
    debug-<time>-<n>. The failure of one cell is recorded and the next one runs (submitit's own `result()` would
    open a debugger on it)."""
    import contextlib
    import socket

    submitit = import_submitit()
    executor = submitit.AutoExecutor(folder=folder, cluster="debug")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    done = []
    for number, job in enumerate(jobs):
        submitted = executor.submit(_command_function(submitit, job, verbose=True))
        launched = Launched(name=job.name, job_id=f"debug-{stamp}-{number}")
        on_start(launched)
        started = time.time()
        outcome: dict[str, Any] = {"started": started, "node": socket.gethostname()}
        with (folder / f"{launched.job_id}_0_log.out").open("w") as out, \
                (folder / f"{launched.job_id}_0_log.err").open("w") as err, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                outcome["text"] = str(submitted.submission().result())
                outcome["result"] = "success"
            except Exception as exc:  # submitit's FailedJobError carries the command's stderr
                outcome["text"] = str(exc)
                outcome["result"] = "error"
        outcome["ended"] = time.time()
        launched.outcome = outcome
        done.append(launched)
        on_end(launched)
    return done
