"""kpbench sweep on a real Slurm cluster: a small grid as one job array (CPU, sample images, a random-weight
Keypoint R-CNN and YOLO11n-pose, a run each and one speed table), one job requeued mid-run, the states read on a
cluster without accounting, and the merged table of `kpbench report SWEEP_DIR`.

It needs a cluster that answers (`.ci/slurm.sh start` makes a single-node one on Debian, as root; `.ci/run` does
it before the tests and stops it after); otherwise it skips, saying why.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from kpdata import COCO_SAMPLE, requires_shared, stored_images

from kpbench.sweep import StatusRequest, sweep_status
from kpbench.sweep.layout import read_sweep_manifest
from kpbench.sweep.state import ACTIVE

pytest.importorskip("submitit", reason="submitit not installed (pip install 'kpbench[sweep]')")
pytest.importorskip("ultralytics", reason="ultralytics not installed (pip install 'kpbench[yolo]')")

START_HINT = ".ci/slurm.sh start makes a single-node cluster (Debian, as root)"


def _slurm(*argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def slurm_partition() -> str:
    """The default partition of a Slurm cluster that answers and has a node that takes jobs; else skip, saying
    why."""
    for tool in ("sinfo", "sbatch", "squeue", "scontrol", "srun"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: Slurm is not installed ({START_HINT})")
    try:
        proc = _slurm("sinfo", "--noheader", "--format=%P %a %T")
    except subprocess.TimeoutExpired:
        pytest.skip(f"Slurm not responding: sinfo timed out ({START_HINT})")
    if proc.returncode != 0:
        pytest.skip(f"Slurm not responding: {' '.join(proc.stderr.split()) or proc.returncode} ({START_HINT})")
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    usable = [r for r in rows if len(r) == 3 and r[1] == "up" and r[2].rstrip("*~#") in ("idle", "mixed", "allocated")]
    if not usable:
        pytest.skip(f"Slurm answers, but no partition has a node that takes jobs: {proc.stdout.strip()!r}")
    default = [r for r in usable if r[0].endswith("*")]
    return (default or usable)[0][0].rstrip("*")


def _wait(predicate, timeout: float, what: str, step: float = 0.2):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@requires_shared
def test_a_grid_runs_as_a_slurm_job_array_and_merges(tmp_path: Path, slurm_partition: str, run_cli) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(f"""
[sweep]
name = "kpbench-test"
max_parallel = 2
poll_interval_s = 2

[resources.cpu]
partition = "{slurm_partition}"
cpus = 1
mem_gb = 2
time_min = 20

[defaults]
coco_root = "{COCO_SAMPLE}"
device = "cpu"

[[run]]
model = "keypointrcnn"
weights = "none"
limit = 6
min_size = 96
max_size = 160
analysis = false

[[run]]
model = "yolo"
limit = 2
analysis = false

[[speed]]
synthetic = true
model = ["keypointrcnn", "yolo"]
weights = ["none", "default"]
sizes = [96]
warmup = 1
iters = 2
num_images = 1
stages = false
flops = false
""")
    out = tmp_path / "sweep"
    code, stdout, err = run_cli("sweep", grid, "--out", out, "--format", "json")
    assert code == 0, err
    actions = json.loads(stdout)
    array = actions[0]["job"].split("_")[0]
    try:
        assert [(a["action"], a["job"]) for a in actions] == [("submitted", f"{array}_{i}") for i in range(3)]
        assert "#SBATCH --array=0-2%2" in (out / "jobs" / f"{array}_submission.sh").read_text().splitlines()
        manifest = read_sweep_manifest(out)
        krcnn, yolo, speed = manifest["cells"]
        cache = Path(krcnn["output"])

        # Requeue the Keypoint R-CNN run once it has cached an image: Slurm stops it (SIGTERM) and starts the same
        # job again, which runs the same command; `kpbench run` resumes its run directory.
        _wait(lambda: stored_images(cache) >= 1, 600, "the first cached image",
              step=0.05)
        job = f"{array}_0"
        requeue = _slurm("scontrol", "requeue", job)
        assert requeue.returncode == 0, requeue.stderr
        # A requeued job waits about two minutes (pending, reason BeginTime) before it may start again: start it now.
        def restarted() -> bool:
            state = _slurm("squeue", "--noheader", f"--jobs={job}", "--format=%T|%r").stdout.strip()
            if state == "PENDING|BeginTime":
                _slurm("scontrol", "update", f"JobId={job}", "StartTime=now")
            return state.startswith("RUNNING") or (state.startswith("PENDING") and not state.endswith("BeginTime"))

        _wait(restarted, 120, "the requeued job to start again", step=0.5)

        def finished():  # type: ignore[no-untyped-def]
            status = sweep_status(StatusRequest(out, poll_interval_s=2))
            return status if not any(c.state in ACTIVE for c in status.cells) else None

        status = _wait(finished, 900, "the job array to finish", step=2)
        # A cell is COMPLETED as soon as its output is; its job still prints its last lines and exits.
        def exited() -> bool:
            states = _slurm("squeue", "--states=all", "--array", "--noheader", f"--jobs={array}", "--format=%T")
            return states.stdout.split() == ["COMPLETED"] * 3

        _wait(exited, 120, "the jobs to exit", step=0.5)
    except BaseException:
        _slurm("scancel", array)  # leave nothing running behind a failed test
        raise
    assert [(c.state, c.source) for c in status.cells] == [("COMPLETED", "output")] * 3, status.cells
    assert all(c.node == "localhost" and c.gpu == "none (CPU)" and c.attempts == 1 for c in status.cells)
    assert [c.job_id for c in status.cells] == [f"{array}_{i}" for i in range(3)]
    # This cluster keeps no accounting: sacct says nothing, and the states came from squeue and the outputs.
    sacct = _slurm("sacct", "-j", array)
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stderr.lower()
    # The requeued job started twice and resumed: its images were run once in all.
    log_out = (out / "jobs" / f"{array}_0_0_log.out").read_text()
    log_err = (out / "jobs" / f"{array}_0_0_log.err").read_text()
    assert log_out.count("Starting with JobEnvironment") == 2, log_out
    assert "DUE TO JOB REQUEUE" in log_err and "images were already cached" in log_err, log_err
    assert stored_images(cache) == 6
    assert json.loads((Path(krcnn["output"]) / "manifest.json").read_text())["status"] == "complete"

    # `kpbench report SWEEP_DIR`: one table. The Keypoint R-CNN run scored 6 of the 35 images (--limit 6), which is
    # not the model's AP: the speed row of the same model, weights and size says so instead of taking it.
    code, stdout, err = run_cli("report", out, "--format", "json")
    assert code == 0, err
    report = json.loads(stdout)
    krcnn_metrics = json.loads((Path(krcnn["output"]) / "metrics.json").read_text())
    yolo_metrics = json.loads((Path(yolo["output"]) / "metrics.json").read_text())
    (speed_csv,) = Path(speed["output"]).glob("*.csv")
    speed_rows = {row["model"]: row for row in csv.DictReader(speed_csv.open())}
    table = {(r["model"], r["kind"], r["size"]): r for r in report["table"]}
    assert sorted(table) == [("keypointrcnn_resnet50_fpn", "run", 96), ("keypointrcnn_resnet50_fpn", "speed", 96),
                             ("yolo11n-pose", "run", 640), ("yolo11n-pose", "speed", 96)]
    row = table[("keypointrcnn_resnet50_fpn", "speed", 96)]
    assert (row["cell"], row["weights"], row["dtype"], row["status"]) == (speed["name"], "none", "fp32", "ok")
    assert row["fps"] == float(speed_rows["keypointrcnn_resnet50_fpn"]["fps"])
    assert (row["kp_AP"], row["box_AP"], row["ap_from"], row["ap_note"]) == (
        None, None, None, f"no AP: {krcnn['name']}: image subset: 6 of 35 images (--limit 6)")
    krcnn_run = table[("keypointrcnn_resnet50_fpn", "run", 96)]  # it keeps its own row
    assert (krcnn_run["kp_AP"], krcnn_run["box_AP"]) == (krcnn_metrics["keypoints"]["AP"], krcnn_metrics["bbox"]["AP"])
    yolo_speed = table[("yolo11n-pose", "speed", 96)]  # no YOLO run at 96: no AP beside it
    assert yolo_speed["fps"] == float(speed_rows["yolo11n-pose"]["fps"]) and yolo_speed["kp_AP"] is None
    yolo_run = table[("yolo11n-pose", "run", 640)]
    assert (yolo_run["cell"], yolo_run["kp_AP"], yolo_run["box_AP"], yolo_run["fps"]) == (
        yolo["name"], yolo_metrics["keypoints"]["AP"], yolo_metrics["bbox"]["AP"], None)
    assert yolo_metrics["keypoints"]["AP"] > 0  # real weights on real images
    assert [(c["state"], c["node"]) for c in report["cells"]] == [("COMPLETED", "localhost")] * 3
    assert {r["run"] for r in report["runs"]} == {krcnn["name"], yolo["name"]}

    # `kpbench html SWEEP_DIR`: the same merged table on one page, then both runs, named by their cells.
    from test_html import _columns

    page = tmp_path / "sweep.html"
    code, _, err = run_cli("html", out, "--out", page, "--no-images")
    assert code == 0, err
    text = page.read_text()
    assert f"<h1>{krcnn['name']}</h1>" in text and f"<h1>{yolo['name']}</h1>" in text
    merged = _columns(text, "Every run and speed row")
    assert [cell for _, cell in merged["cell"]] == [r["cell"] for r in report["table"]]
    assert [value for value, _ in merged["kp_AP"]] == [None if r["kp_AP"] is None else repr(r["kp_AP"])
                                                       for r in report["table"]]
    assert [state for _, state in _columns(text, "Cells")["state"]] == ["COMPLETED"] * 3

    # Again: everything finished, nothing is submitted.
    code, stdout, err = run_cli("sweep", grid, "--out", out, "--format", "json")
    assert code == 0, err
    assert [a["action"] for a in json.loads(stdout)] == ["skipped"] * 3
    assert [len(c["attempts"]) for c in read_sweep_manifest(out)["cells"]] == [1, 1, 1]
    assert not (out / "jobs" / f"{int(array) + 1}_submission.sh").exists() and os.listdir(out / "jobs")
