"""The state of each cell of a sweep, from everything that can tell it.

A cell's state comes from, in this order of trust:

1. **Its own output.** A run directory whose manifest says "complete" and that holds metrics.json, or a speed
   table whose manifest says complete with at least one row timed, is COMPLETED whatever else is said. A run
   manifest that says "failed" gives the error line it recorded.
2. **The scheduler, while it remembers the job.** `squeue --states=all` (live jobs, and finished ones for
   Slurm's MinJobAge, 300 s by default) and `sacct` where the cluster keeps accounting. A cluster without
   accounting answers nothing through sacct; that is remembered and sacct is not asked again.
3. **The job's own files** in SWEEP_DIR/jobs: Slurm's lines in the job's stderr (`*** JOB 12 ... CANCELLED ... DUE
   TO TIME LIMIT ***`), and submitit's result file (success, or the failure with kpbench's `error:` line).
4. **The output again**, for what the job left: a run manifest that says "interrupted" or still "running" after
   its job is gone.

Polling is rate-limited: the scheduler's answer is kept in SWEEP_DIR/.scheduler.json with its time, and asked
again only after `poll_interval_s` (one squeue call for every job of the sweep, and one sacct call).

States use Slurm's words: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL,
PREEMPTED (and Slurm's other live states), plus NOT_SUBMITTED, INTERRUPTED (the output stopped and the job is
gone), LOST (submitted, but neither the scheduler nor any file knows of it: a job purged before it wrote
anything) and UNKNOWN (the scheduler could not be asked and the files do not tell).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kpbench.core.errors import KpbenchError
from kpbench.core.io import write_json
from kpbench.sweep.layout import SCHEDULER_CACHE, cell_output, jobs_dir

COMPLETED = "COMPLETED"
# Slurm's states of a job that is still in the queue or running: such a cell is left alone.
ACTIVE = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
    "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD", "STOPPED",
})  # fmt: skip
# States after which a new `kpbench sweep` submits the cell again.
RESUBMIT = frozenset({
    "NOT_SUBMITTED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "SPECIAL_EXIT", "REVOKED", "INTERRUPTED", "LOST",
})  # fmt: skip
# Slurm's own lines in a job's stderr when it ends it (slurmstepd), and the state each means.
SLURM_END_LINES = (
    (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT"), "TIMEOUT"),
    (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO PREEMPTION"), "PREEMPTED"),
    (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO NODE FAILURE"), "NODE_FAIL"),
    (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT"), "CANCELLED"),
    (re.compile(r"oom[-_ ]kill|Exceeded job memory limit|Out Of Memory", re.IGNORECASE), "OUT_OF_MEMORY"),
)
# submitit's words when a job was stopped at its time limit and could not be requeued.
SUBMITIT_TIMEOUT = "timed-out and not checkpointable"
_LOG_START = re.compile(r"^submitit INFO \((?P<time>[\d-]+ [\d:,]+)\) - Starting with JobEnvironment\((?P<env>.*)\)",
                        re.MULTILINE)


# ----------------------------------------------------------------------------------------------------------
# The scheduler


@dataclass
class JobInfo:
    """What the scheduler says about one job."""

    state: str
    node: str | None = None
    elapsed_s: float | None = None
    reason: str | None = None


@dataclass
class SchedulerView:
    """The scheduler's answer for a sweep's jobs: `jobs` by id, whether it could be asked at all (`reachable`), and
    the time of the answer (`polled_at`; an older answer is reused within the poll interval)."""

    jobs: dict[str, JobInfo] = field(default_factory=dict)
    reachable: bool = False
    polled_at: float | None = None
    notes: list[str] = field(default_factory=list)


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def parse_elapsed(text: str) -> float | None:
    """Slurm's elapsed time ("1-02:03:04", "02:03:04", "3:04") in seconds; None when it is not one."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _parse_squeue(text: str) -> dict[str, JobInfo]:
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        job_id, state, node, elapsed = parts[:4]
        jobs[job_id] = JobInfo(state=state.split()[0], node=node or None, elapsed_s=parse_elapsed(elapsed),
                               reason=parts[4] if len(parts) > 4 and parts[4] not in ("", "None") else None)
    return jobs


def _parse_sacct(text: str) -> dict[str, JobInfo]:
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0] or "." in parts[0]:
            continue
        job_id, state, node, elapsed = parts[:4]
        node = None if node in ("", "None assigned") else node
        jobs[job_id] = JobInfo(state=state.split()[0] if state else "UNKNOWN", node=node,
                               elapsed_s=float(elapsed) if elapsed.isdigit() else None)
    return jobs


class SlurmPoller:
    """Asks Slurm about a sweep's jobs, at most once per `min_interval_s` (the answer is kept in
    SWEEP_DIR/.scheduler.json and reused until then): one `squeue` call for all of them, and one `sacct` call
    unless the cluster has said it keeps no accounting."""

    def __init__(self, sweep_dir: str | Path, min_interval_s: float, runner: Runner | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cache_path = Path(sweep_dir) / SCHEDULER_CACHE
        self.min_interval_s = min_interval_s
        self.runner = runner or _run
        self.clock = clock

    def _cached(self) -> dict[str, Any]:
        try:
            data = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def forget(self) -> None:
        """Drop the kept answer (after a submission: new jobs must be asked about at once)."""
        cached = self._cached()
        if cached:
            cached["polled_at"] = None
            write_json(self.cache_path, cached)

    def poll(self, job_ids: Sequence[str], force: bool = False) -> SchedulerView:
        """The scheduler's view of `job_ids`: the kept answer when it is younger than the interval and covers them,
        else a new one (written back for the next caller)."""
        job_ids = sorted(set(job_ids))
        cached = self._cached()
        now = self.clock()
        polled_at = cached.get("polled_at")
        if (not force and isinstance(polled_at, (int, float)) and now - polled_at < self.min_interval_s
                and set(job_ids) <= set(cached.get("asked", []))):
            return SchedulerView(jobs={k: JobInfo(**v) for k, v in cached.get("jobs", {}).items()},
                                 reachable=bool(cached.get("reachable")), polled_at=polled_at,
                                 notes=list(cached.get("notes", [])))
        view = self._ask(job_ids, sacct_disabled=bool(cached.get("sacct_disabled")))
        view.polled_at = now
        with contextlib.suppress(KpbenchError):  # a read-only sweep folder: the answer is still good for this call
            write_json(self.cache_path, {
                "polled_at": now, "asked": job_ids, "reachable": view.reachable, "notes": view.notes,
                "sacct_disabled": self._sacct_disabled, "jobs": {k: vars(v) for k, v in view.jobs.items()},
            })
        return view

    def _ask(self, job_ids: list[str], sacct_disabled: bool) -> SchedulerView:
        view = SchedulerView()
        self._sacct_disabled = sacct_disabled
        if not job_ids:
            view.reachable = True
            return view
        if shutil.which("squeue") is None:
            view.notes.append("squeue not found: states come from the cells' files only")
            return view
        ids = ",".join(job_ids)
        try:
            proc = self.runner(["squeue", "--states=all", "--array", "--noheader", "--format=%i|%T|%N|%M|%r",
                                f"--jobs={ids}"])
        except (OSError, subprocess.SubprocessError) as exc:
            view.notes.append(f"squeue failed ({exc}): states come from the cells' files only")
            return view
        if proc.returncode == 0:
            view.reachable = True
            view.jobs.update(_parse_squeue(proc.stdout))
        elif "Invalid job id" in proc.stderr:  # none of them is still known to the controller
            view.reachable = True
        else:
            message = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
            view.notes.append(f"squeue: {message}: states come from the cells' files only")
            return view
        missing = [j for j in job_ids if j not in view.jobs]
        if missing and not sacct_disabled and shutil.which("sacct") is not None:
            bases = ",".join(sorted({j.split("_")[0] for j in missing}))
            try:
                proc = self.runner(["sacct", "-X", "--noheader", "--parsable2",
                                    "--format=JobID,State,NodeList,ElapsedRaw", f"--jobs={bases}"])
            except (OSError, subprocess.SubprocessError):
                return view
            if proc.returncode == 0:
                found = _parse_sacct(proc.stdout)
                view.jobs.update({j: found[j] for j in missing if j in found})
            elif "accounting storage is disabled" in proc.stderr.lower():
                self._sacct_disabled = True
                view.notes.append("sacct: this cluster keeps no accounting; finished jobs are read from their files")
        return view


class LocalPoller:
    """The local launcher's jobs are processes on this machine (the job id is the controller's pid)."""

    def poll(self, job_ids: Sequence[str], force: bool = False) -> SchedulerView:
        """RUNNING for each job whose controller process is alive; the others are not known (their files tell)."""
        view = SchedulerView(reachable=True, polled_at=time.time())
        for job_id in job_ids:
            if job_id.isdigit() and _is_submitit_process(int(job_id)):
                view.jobs[job_id] = JobInfo(state="RUNNING")
        return view


def _is_submitit_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return b"submitit" in cmdline


# ----------------------------------------------------------------------------------------------------------
# The job's files


class _NoGlobals(pickle.Unpickler):
    """Reads submitit's result file, a pickled (outcome, text) tuple, and nothing that would run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a job result")


@dataclass
class JobFiles:
    """What a job left in SWEEP_DIR/jobs: its outcome ("success", "error" or None while it runs), the text
    (kpbench's stdout, or the failure), the node its log names, when it started and ended, and Slurm's verdict
    from its stderr."""

    outcome: str | None = None
    text: str = ""
    node: str | None = None
    started: float | None = None
    ended: float | None = None
    slurm_state: str | None = None
    slurm_line: str | None = None
    last_write: float | None = None  # the newest of its logs' modification times


def _tail(path: Path, size: int = 1 << 16) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def read_job_files(sweep_dir: str | Path, job_id: str) -> JobFiles:
    """The files of one submitit job (task 0) in SWEEP_DIR/jobs."""
    folder = jobs_dir(sweep_dir)
    found = JobFiles()
    result = folder / f"{job_id}_0_result.pkl"
    if result.is_file():
        try:
            with result.open("rb") as fh:
                outcome, text = _NoGlobals(fh).load()
            found.outcome, found.text = str(outcome), str(text)
        except Exception as exc:  # a torn or foreign file: say so rather than guess
            found.outcome, found.text = "error", f"unreadable job result {result.name} ({type(exc).__name__})"
        found.ended = result.stat().st_mtime
    log = folder / f"{job_id}_0_log.out"
    writes = [p.stat().st_mtime for p in (log, folder / f"{job_id}_0_log.err") if p.is_file()]
    found.last_write = max(writes) if writes else None
    starts = list(_LOG_START.finditer(_tail(log)))
    if starts:  # the last start: a requeued job appends to the same log
        last = starts[-1]
        host = re.search(r"hostname=([^,)]+)", last.group("env"))
        found.node = host.group(1) if host else None
        with contextlib.suppress(ValueError):
            found.started = datetime.strptime(last.group("time"), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    # The last line in which Slurm ended the job says how; a requeue ends an attempt, not the job.
    for line in _tail(folder / f"{job_id}_0_log.err").splitlines():
        if "DUE TO JOB REQUEUE" in line:
            found.slurm_state = found.slurm_line = None
            continue
        state = next((state for pattern, state in SLURM_END_LINES if pattern.search(line)), None)
        if state is not None:
            found.slurm_state, found.slurm_line = state, line.strip()
    return found


_KPBENCH_ERROR = re.compile(r"(?:^|Error: )(error: .+)$")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt): ")


def error_line(text: str) -> str | None:
    """The line that says why a cell failed: kpbench's last `error:` line, else the last exception line of a
    traceback (`ValueError: ...`), else the last line of the text."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):  # (submitit puts the command's stderr after "FailedJobError: ")
        match = _KPBENCH_ERROR.search(line)
        if match:
            return match.group(1)
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    return lines[-1] if lines else None


# ----------------------------------------------------------------------------------------------------------
# The cell's output


@dataclass
class OutputView:
    """What a cell's output says: `state` COMPLETED/FAILED/INTERRUPTED (None: no verdict, such as a run still
    "running" or not started), the error line, the GPU it ran on, and how far it got."""

    state: str | None = None
    error: str | None = None
    gpu: str | None = None
    started: bool = False
    progress: str | None = None
    files: list[str] = field(default_factory=list)


def _gpu(environment: Any) -> str | None:
    if not isinstance(environment, dict):
        return None
    if str(environment.get("device", "")).startswith("cuda"):
        return str(environment.get("device_name") or "cuda")
    return "none (CPU)" if environment.get("device") else None


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return 0


def read_run_output(run_dir: Path) -> OutputView:
    """A run cell's verdict from its run directory's manifest (written by `kpbench run`)."""
    view = OutputView()
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return view
    if not isinstance(manifest, dict):
        return view
    view.started = True
    view.gpu = _gpu(manifest.get("environment"))
    total = manifest.get("num_images")
    cached = _count_lines(run_dir / "detections.jsonl") + sum(
        _count_lines(p) for p in run_dir.glob("detections.rank*.jsonl"))
    view.progress = f"{cached}/{total} images" if isinstance(total, int) else f"{cached} images"
    status = manifest.get("status")
    if status == "complete" and (run_dir / "metrics.json").is_file():
        view.state = COMPLETED
        view.files = [str(run_dir)]
    elif status == "failed":
        view.state, view.error = "FAILED", f"error: {manifest.get('error') or 'no reason recorded'}"
    elif status == "interrupted":
        view.state, view.error = "INTERRUPTED", f"interrupted with {view.progress} cached"
    return view


def read_speed_output(speed_dir: Path) -> OutputView:
    """A speed cell's verdict from the newest speed table in its folder (written by `kpbench speed`)."""
    view = OutputView()
    manifests = []
    for path in speed_dir.glob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("kind") == "kpbench-speed":
            manifests.append((path.stat().st_mtime, path.name, path, data))
    if not manifests:
        return view
    _, _, path, manifest = max(manifests, key=lambda m: m[:2])
    view.started = True
    view.gpu = _gpu(manifest.get("environment"))
    csv_path = path.with_suffix(".csv")
    try:
        rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error):
        rows = []
    ok = sum(row.get("status") == "ok" for row in rows)
    view.progress = f"{len(rows)}/{manifest.get('rows_planned', '?')} rows, {ok} ok"
    if not manifest.get("complete"):
        view.state, view.error = "INTERRUPTED", f"interrupted with {view.progress}"
    elif ok:
        view.state = COMPLETED
        view.files = [str(csv_path)]
    else:
        first = rows[0] if rows else {}
        view.state = "FAILED"
        view.error = f"error: no row succeeded (first: {first.get('error') or 'no rows'})"
    return view


def read_output(sweep_dir: str | Path, name: str, kind: str) -> OutputView:
    """The verdict of a cell's output folder."""
    folder = cell_output(sweep_dir, name, kind)
    return read_run_output(folder) if kind == "run" else read_speed_output(folder)


# ----------------------------------------------------------------------------------------------------------
# All of it together


@dataclass
class CellStatus:
    """One line of `kpbench sweep SWEEP_DIR --status`."""

    name: str
    kind: str
    resource: str
    state: str
    job_id: str | None = None
    launcher: str | None = None
    node: str | None = None
    gpu: str | None = None
    elapsed_s: float | None = None
    progress: str | None = None
    error: str | None = None
    attempts: int = 0
    source: str = ""  # what the state was read from: output, squeue, sacct, job log, job result, ...

    def row(self) -> dict[str, Any]:
        """The status as a table row (elapsed as h:mm:ss)."""
        return {
            "cell": self.name, "kind": self.kind, "resource": self.resource, "state": self.state,
            "elapsed": format_elapsed(self.elapsed_s), "node": self.node or "", "gpu": self.gpu or "",
            "job": self.job_id or "", "attempts": self.attempts, "progress": self.progress or "",
            "error": self.error or "",
        }


def format_elapsed(seconds: float | None) -> str:
    """h:mm:ss (or d-hh:mm:ss), Slurm's way; empty when unknown."""
    if seconds is None:
        return ""
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}" if days else f"{hours}:{minutes:02d}:{secs:02d}"


def resolve_cell(sweep_dir: str | Path, cell: dict[str, Any], view: SchedulerView | None,
                 now: float | None = None) -> CellStatus:
    """A cell's status from its output, the scheduler's view (None: not asked) and its job's files."""
    now = time.time() if now is None else now
    attempts = cell.get("attempts") or []
    last = attempts[-1] if attempts else {}
    job_id = last.get("job_id")
    status = CellStatus(name=cell["name"], kind=cell["kind"], resource=cell.get("resource", ""), state="NOT_SUBMITTED",
                        job_id=job_id, launcher=last.get("launcher"), attempts=len(attempts))
    output = read_output(sweep_dir, cell["name"], cell["kind"])
    status.gpu, status.progress = output.gpu, output.progress
    files = read_job_files(sweep_dir, job_id) if job_id and last.get("launcher") != "debug" else JobFiles()
    # The debug launcher runs cells in the submitting process and records what happened in the manifest.
    recorded = last.get("outcome")
    if recorded:
        files = JobFiles(outcome=recorded.get("result"), text=recorded.get("text", ""), node=recorded.get("node"),
                         started=recorded.get("started"), ended=recorded.get("ended"))
    info = view.jobs.get(job_id) if view is not None and job_id else None
    # The scheduler's node name while it knows the job; else the one recorded when it did; else the log's host.
    status.node = (info.node if info else None) or cell.get("node") or files.node or last.get("node")
    if info is not None and info.elapsed_s is not None:
        status.elapsed_s = info.elapsed_s
    elif files.started is not None:  # from the job's log: its start, to its result, its last log line, or now
        live = info is not None and info.state in ACTIVE
        end = files.ended or (now if live else files.last_write) or now
        status.elapsed_s = max(0.0, end - files.started)

    if output.state == COMPLETED:
        status.state, status.source = COMPLETED, "output"
        return status
    if not job_id:
        status.state, status.source = ("FAILED", "output") if output.state else ("NOT_SUBMITTED", "sweep manifest")
        status.error = output.error or last.get("error")
        return status
    if info is not None and info.state in ACTIVE:
        status.state, status.source = info.state, "scheduler"
        if info.state == "PENDING" and info.reason:
            status.error = f"pending: {info.reason}"
        return status
    job_error = error_line(files.text) if files.outcome == "error" else None
    if info is not None:  # a finished job the scheduler still remembers
        state = info.state
        if state == COMPLETED:  # the job ended well, but the output is not complete
            state = output.state or "FAILED"
            status.error = output.error or job_error or "the job ended but its output is not complete"
        else:
            status.error = files.slurm_line or job_error or output.error or f"{state.lower()} (said the scheduler)"
        status.state, status.source = state, "scheduler"
        return status
    if files.slurm_state:
        status.state, status.source, status.error = files.slurm_state, "job log", files.slurm_line
        return status
    if files.outcome == "error":
        timed_out = SUBMITIT_TIMEOUT in files.text
        status.state, status.source = ("TIMEOUT" if timed_out else "FAILED"), "job result"
        status.error = output.error or job_error
        return status
    if files.outcome == "success":
        status.state, status.source = output.state or "FAILED", "job result"
        status.error = output.error or "the job ended but its output is not complete"
        return status
    if output.state:  # FAILED or INTERRUPTED, and no job to say more
        status.state, status.source, status.error = output.state, "output", output.error
        return status
    if view is not None and view.reachable:
        status.state, status.source = "LOST", "scheduler"
        status.error = "the scheduler no longer knows the job, and it left no result"
        return status
    status.state, status.source = "UNKNOWN", "none"
    status.error = "; ".join(view.notes) if view is not None and view.notes else "the scheduler was not asked"
    return status
