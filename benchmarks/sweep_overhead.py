"""What `kpbench sweep` costs on top of the command it runs, and what `--status` costs on a large sweep.

1. One cell, the same kpbench command line (a random-weight Keypoint R-CNN `kpbench run` on 2 tiny images), timed
   from the call to the finished output, in interleaved rounds:
   - bare: the command in a subprocess (what a user's own loop does);
   - sweep --launcher debug and --launcher local (submitit's debug and local executors);
   - with a Slurm cluster that answers: a hand-written `sbatch --wrap COMMAND` (a user's own sbatch script), its run
     directory watched every 0.5 s until complete, against `kpbench sweep --launcher slurm` followed by `--status`
     every 0.5 s until the cell is COMPLETED.
   Printed: the median of each, and the ratios sweep / bare (and sweep slurm / sbatch).
2. `sweep_status` of a sweep of N cells (no outputs yet; Slurm job ids the controller does not know): with the
   scheduler asked (one squeue call) and with its kept answer (within the poll interval).

    python benchmarks/sweep_overhead.py [--rounds 3] [--cells 200]

Machines are noisy: the rounds are interleaved and the medians compared; no timing here is a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "coco_val2017_sample"


def _grid(folder: Path, coco_root: Path, partition: str | None) -> Path:
    grid = folder / "grid.toml"
    grid.write_text(f"""
[sweep]
poll_interval_s = 0.5
[resources.here]
time_min = 20
cpus = 1
{f'partition = "{partition}"' if partition else ''}
[[run]]
coco_root = "{coco_root}"
weights = "none"
device = "cpu"
limit = 2
min_size = 64
max_size = 107
analysis = false
""")
    return grid


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "kpbench", "run", "--config", str(config), "--no-progress", "--no-analysis"]


def _bare(folder: Path, coco_root: Path) -> float:
    config = folder / "bare.toml"
    config.write_text(f'[run]\ncoco_root = "{coco_root}"\nweights = "none"\ndevice = "cpu"\nlimit = 2\n'
                      f'min_size = 64\nmax_size = 107\nout = "{folder / "bare-run"}"\n')
    shutil.rmtree(folder / "bare-run", ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(_command(config), check=True, capture_output=True)
    return time.perf_counter() - start


def _sweep(folder: Path, grid: Path, launcher: str) -> float:
    from kpbench.sweep import StatusRequest, SweepRequest, submit_sweep, sweep_status

    out = folder / f"sweep-{launcher}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    submit_sweep(SweepRequest(grid=grid, out=out, launcher=launcher))
    if launcher == "slurm":
        while sweep_status(StatusRequest(out, poll_interval_s=0.5)).cells[0].state != "COMPLETED":
            time.sleep(0.5)
    elapsed = time.perf_counter() - start
    from kpbench.sweep.layout import read_sweep_manifest

    state = read_sweep_manifest(out)["cells"][0].get("state")
    if launcher != "slurm" and state != "COMPLETED":
        raise SystemExit(f"sweep --launcher {launcher}: the cell ended {state}")
    return elapsed


def _sbatch(folder: Path, coco_root: Path, partition: str) -> float:
    """A user's own sbatch script, watched the same way as the sweep: its run directory, every 0.5 s."""
    import json

    config = folder / "sbatch.toml"
    out = folder / "sbatch-run"
    config.write_text(f'[run]\ncoco_root = "{coco_root}"\nweights = "none"\ndevice = "cpu"\nlimit = 2\n'
                      f'min_size = 64\nmax_size = 107\nout = "{out}"\n')
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(["sbatch", f"--partition={partition}", "--cpus-per-task=1", "--time=20",
                    f"--output={folder / 'sbatch.log'}", "--wrap", " ".join(_command(config))],
                   check=True, capture_output=True, cwd=folder)
    while True:
        try:
            if json.loads((out / "manifest.json").read_text()).get("status") == "complete":
                return time.perf_counter() - start
        except (OSError, ValueError):
            pass
        time.sleep(0.5)


def _partition() -> str | None:
    if shutil.which("sinfo") is None:
        return None
    try:
        proc = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    names = proc.stdout.split() if proc.returncode == 0 else []
    default = [n for n in names if n.endswith("*")]
    return (default or names or [None])[0].rstrip("*") if names else None


def _status_cost(folder: Path, cells: int) -> tuple[float, float]:
    from kpbench.sweep import StatusRequest, sweep_status
    from kpbench.sweep.layout import write_sweep_manifest

    sweep_dir = folder / "big"
    (sweep_dir / "jobs").mkdir(parents=True, exist_ok=True)
    write_sweep_manifest(sweep_dir, {
        "kind": "kpbench-sweep", "format_version": 1, "name": "big",
        "cells": [{"name": f"run-{i}", "kind": "run", "resource": "gpu",
                   "attempts": [{"launcher": "slurm", "job_id": f"{900000 + i // 100}_{i % 100}"}]}
                  for i in range(cells)],
    })  # fmt: skip
    start = time.perf_counter()
    sweep_status(StatusRequest(sweep_dir, poll_interval_s=3600, force=True))
    asked = time.perf_counter() - start
    start = time.perf_counter()
    sweep_status(StatusRequest(sweep_dir, poll_interval_s=3600))
    kept = time.perf_counter() - start
    return asked, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", type=int, default=200)
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        raise SystemExit(f"{SAMPLE}: the COCO sample is missing")
    partition = _partition()
    # Under results/ (ignored by git as results/tmp*): a folder the cluster's nodes see, as a sweep's must be.
    (ROOT / "results").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tmp-sweep-bench-", dir=ROOT / "results") as tmp:
        folder = Path(tmp)
        grid = _grid(folder, SAMPLE, partition)
        times: dict[str, list[float]] = {"bare": [], "debug": [], "local": []}
        if partition:
            times.update({"sbatch": [], "slurm": []})
        for number in range(args.rounds):
            times["bare"].append(_bare(folder, SAMPLE))
            times["debug"].append(_sweep(folder, grid, "debug"))
            times["local"].append(_sweep(folder, grid, "local"))
            if partition:
                times["sbatch"].append(_sbatch(folder, SAMPLE, partition))
                times["slurm"].append(_sweep(folder, grid, "slurm"))
            print(f"round {number + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        median = {k: statistics.median(v) for k, v in times.items()}
        print(f"\none cell (kpbench run, random-weight Keypoint R-CNN, 2 images at 64 px), median of {args.rounds} "
              f"interleaved rounds, {os.cpu_count()} CPUs:")
        for key in times:
            print(f"  {key:7s} {median[key]:7.2f} s")
        print(f"  sweep debug / bare = {median['debug'] / median['bare']:.3f}")
        print(f"  sweep local / bare = {median['local'] / median['bare']:.3f}")
        if partition:
            print(f"  sweep slurm / sbatch = {median['slurm'] / median['sbatch']:.3f}")
        else:
            print("  (no Slurm cluster answers: the slurm rows were not timed)")
        asked, kept = _status_cost(folder, args.cells)
        print(f"\nsweep_status of {args.cells} cells: {asked * 1000:.0f} ms asking the scheduler, {kept * 1000:.0f} ms "
              "with its kept answer")


if __name__ == "__main__":
    main()
