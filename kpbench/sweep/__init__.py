"""Sweeps: a grid of `kpbench run` and `kpbench speed` cells as jobs (Slurm job arrays through submitit, or on this
machine), resumable, with their states, and merged by `kpbench report SWEEP_DIR`.

`grid` reads the grid file, `layout` is the sweep folder, `state` tells each cell's state, `launch` hands cells to
submitit (imported only there), `sweep` is the API below, `report` merges a sweep's results.
"""

from kpbench.sweep.sweep import (
    StatusRequest,
    SweepOutcome,
    SweepRequest,
    SweepStatus,
    submit_sweep,
    sweep_status,
    watch_sweep,
)

__all__ = ["StatusRequest", "SweepOutcome", "SweepRequest", "SweepStatus", "submit_sweep", "sweep_status",
           "watch_sweep"]
