"""`kpbench sweep`: a grid of runs and speed tables as jobs (Slurm job arrays, or here), resumed, and its status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options
from kpbench.cli.app import app, echo_err

STATUS_COLUMNS = ("cell", "state", "elapsed", "node", "gpu", "job", "progress", "error")
ACTION_COLUMNS = ("cell", "action", "reason", "job")


@app.command("sweep")
def sweep_command(
    target: Annotated[
        Path,
        typer.Argument(metavar="GRID.toml|SWEEP_DIR", help="GRID.toml to submit (with --out), or SWEEP_DIR with --status.", show_default=False),
    ],
    out: Annotated[
        Path | None,
        options.out_option("The sweep folder the cells write into; running the same command again resumes it "
                           "(finished cells are skipped, failed ones submitted again)."),
    ] = None,
    launcher: Annotated[
        str | None,
        typer.Option("--launcher", help="slurm (job arrays, returns at once), local (this machine, at most "
                     "max_parallel cells at once, waits) or debug (one cell after the other, waits) [default: slurm].",
                     show_default=False),
    ] = None,
    max_parallel: Annotated[
        int | None,
        typer.Option("--max-parallel", help="Cells of one job array that run at once (local: in all) [default: the "
                     "grid's [sweep] max_parallel, or 4].", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be submitted, with each cell's command; write nothing.")
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="Print the cells of SWEEP_DIR: state, elapsed time, node, GPU, progress "
                           "and the error line of a failed cell.")
    ] = False,
    poll_interval: Annotated[
        float | None,
        typer.Option("--poll-interval", help="--status: ask the scheduler at most once per this many seconds (its "
                     "last answer is reused until then) [default: the grid's poll_interval_s, or 30].",
                     show_default=False),
    ] = None,
    watch: Annotated[
        float | None,
        typer.Option("--watch", help="--status: print again every this many seconds until no cell is queued or "
                     "running.", show_default=False),
    ] = None,
    fmt: Annotated[str, options.format_option("table, json, csv or markdown.")] = "table",
) -> None:
    """Run a grid of `kpbench run` and `kpbench speed` cells as jobs, and follow them.

    `kpbench sweep GRID.toml --out SWEEP_DIR` submits every cell of the grid (one Slurm job array per resource
    shape, through submitit; each job runs the kpbench command line). Running it again skips finished cells,
    leaves queued and running ones alone, and submits failed, cancelled and timed-out ones again (a run resumes
    its run directory). `kpbench sweep SWEEP_DIR --status` prints where each cell stands; `kpbench report
    SWEEP_DIR` merges the results.
    """
    from kpbench.core.errors import KpbenchError
    from kpbench.core.io import check_format

    check_format(fmt)
    if status:
        given = {"--out": out, "--launcher": launcher, "--max-parallel": max_parallel, "--dry-run": dry_run or None}
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise KpbenchError(f"--status: {', '.join(extra)} do(es) not apply: --status only reads SWEEP_DIR")
        _status(target, poll_interval, watch, fmt)
        return
    if poll_interval is not None or watch is not None:
        raise KpbenchError("--poll-interval and --watch apply to --status (kpbench sweep SWEEP_DIR --status)")
    _submit(target, out, launcher or "slurm", max_parallel, dry_run, fmt)


def _submit(grid: Path, out: Path | None, launcher: str, max_parallel: int | None, dry_run: bool, fmt: str) -> None:
    from kpbench.core.io import render
    from kpbench.sweep import SweepRequest, submit_sweep

    request = SweepRequest(grid=grid, out=out, launcher=launcher, max_parallel=max_parallel, dry_run=dry_run)
    try:
        outcome = submit_sweep(request, log=echo_err)
    except KeyboardInterrupt:  # local/debug: the running cells were stopped; their run directories resume
        echo_err(f"interrupted: the running cells were stopped; kpbench sweep {grid} --out {out} goes on from here")
        raise typer.Exit(130) from None
    for note in outcome.notes:
        echo_err(f"note: {note}")
    if dry_run or launcher == "slurm":
        rows = [{"cell": a.name, "action": a.action, "reason": a.reason, "job": a.job_id or ""}
                for a in outcome.actions]
        typer.echo(render(rows, fmt, ACTION_COLUMNS), nl=False)
    else:
        typer.echo(render([c.row() for c in outcome.cells], fmt, STATUS_COLUMNS), nl=False)
    if dry_run:
        return
    echo_err(f"sweep folder: {outcome.sweep_dir} (kpbench sweep {out} --status; kpbench report {out})")
    if launcher != "slurm" and outcome.failed:
        echo_err(f"{len(outcome.failed)} of {len(outcome.cells)} cells did not complete: kpbench sweep {out} "
                 "--status shows why; running the same command again submits them again")
        raise typer.Exit(1)


def _status(sweep_dir: Path, poll_interval: float | None, watch: float | None, fmt: str) -> None:
    import time

    from kpbench.core.errors import KpbenchError
    from kpbench.core.io import render
    from kpbench.sweep import StatusRequest, SweepStatus, sweep_status, watch_sweep

    if watch is not None and not watch > 0:
        raise KpbenchError(f"--watch: must be > 0 seconds, got {watch}")
    request = StatusRequest(sweep_dir, poll_interval_s=poll_interval)

    def show(current: SweepStatus) -> None:
        typer.echo(render([c.row() for c in current.cells], fmt, STATUS_COLUMNS), nl=False)
        counts = ", ".join(f"{n} {state}" for state, n in sorted(current.counts().items()))
        age = f"; scheduler asked {time.time() - current.polled_at:.0f} s ago" if current.polled_at else ""
        echo_err(f"{len(current.cells)} cells: {counts}{age}")
        for note in current.notes:
            echo_err(f"note: {note}")

    if watch is None:
        show(sweep_status(request))
    else:
        watch_sweep(request, watch, show)
