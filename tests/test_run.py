"""`kpbench run` end to end with random weights on a few small images: the run directory, resume after SIGKILL,
a 2-process torchrun run, and every error message. Each model call takes about a second on one CPU thread."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from kpdata import (
    COCO_SAMPLE,
    assert_one_line_error,
    cache_lines,
    interrupt_on_call,
    load,
    pycocotools_eval,
    requires_shared,
    stored_images,
)

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import BBOX_STAT_NAMES, KEYPOINT_STAT_NAMES
from kpbench.runs import directory as rundir

RunCli = Callable[..., tuple[int, str, str]]  # the run_cli fixture (conftest.py)
# Small and fast: 160 px short side, and a high box threshold so that few boxes reach the keypoint head.
FAST = ["--weights", "none", "--min-size", "160", "--max-size", "267", "--box-score-thresh", "0.3", "--no-progress"]
RESULT_FILES = ("keypoints_results.json", "bbox_results.json", "detections.bin", "ground_truth.json", "metrics.json")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # same thread count in every process: same floating-point sums


def kpbench_proc(*args: object, launcher: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    command = [*launcher, "-m", "kpbench", *map(str, args)] if launcher else [sys.executable, "-m", "kpbench", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


# --- in process: the run directory of a run on the real sample ------------------------------------------------


@requires_shared
def test_run_directory_on_the_real_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[run]\nweights = "none"\nmin_size = 320\nmax_size = 533\nbox_score_thresh = 0.3\nworkers = 0\n')
    out = tmp_path / "run"
    code, stdout, err = run_cli("run", "--config", config, "--coco-root", COCO_SAMPLE,
                            "--image-ids", "802,139", "--out", out, "--no-progress")
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*(set(rundir.RUN_FILES) - {rundir.DETECTIONS}), *rundir.ANALYSIS_FILES])
    person_rows = (out / "thresholds_person.csv").read_text().splitlines()
    assert person_rows[0].startswith("threshold,AP,AP50") and len(person_rows) == 1 + 20
    assert (out / "keypoints.csv").read_text().splitlines()[-1].startswith("all,")
    assert all((out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in rundir.ANALYSIS_FILES
               if name.endswith(".png"))

    # The store: one record per image, in id order, the model's raw output (float32, as the model gave it).
    from kpbench.runs.store import scan_store

    index = scan_store(out / "detections.bin")
    assert index.image_ids.tolist() == [139, 802] and not index.torn and set(index.flags.tolist()) == {4}
    assert (out / "detections.bin").stat().st_size == 16 + sum(48 + 296 * n for n in index.counts.tolist())
    cache = cache_lines(out)
    assert [r["image_id"] for r in cache] == [139, 802]
    n = sum(len(r["scores"]) for r in cache)
    assert n > 0 and all(s >= 0.3 for r in cache for s in r["scores"])
    assert all(len(k) == 17 and len(k[0]) == 3 for r in cache for k in r["keypoints"])
    assert all(len(s) == 17 for r in cache for s in r["keypoint_scores"])

    # The results files: COCO results format, image-id order, keypoint results with the box score and no bbox.
    kp = load(out / "keypoints_results.json")
    box = load(out / "bbox_results.json")
    assert len(kp) == len(box) == n
    assert [r["image_id"] for r in kp] == sorted(r["image_id"] for r in kp)
    assert all(set(r) == {"image_id", "category_id", "keypoints", "score"} and len(r["keypoints"]) == 51 for r in kp)
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} and r["bbox"][2] >= 0 and r["bbox"][3] >= 0
               for r in box)
    assert [r["score"] for r in kp] == [r["score"] for r in box] == [s for r in cache for s in r["scores"]]
    x1, y1, x2, y2 = cache[0]["boxes"][0]
    assert box[0]["bbox"] == [x1, y1, x2 - x1, y2 - y1]

    # ground_truth.json: exactly the two images and their annotations.
    gt = load(out / "ground_truth.json")
    assert [img["id"] for img in gt["images"]] == [139, 802]
    assert {a["image_id"] for a in gt["annotations"]} == {139} and len(gt["annotations"]) == 2

    # Metrics: both iou types, equal to a bare pycocotools run on the written files.
    metrics = load(out / "metrics.json")
    assert list(metrics["keypoints"]) == list(KEYPOINT_STAT_NAMES) and list(metrics["bbox"]) == list(BBOX_STAT_NAMES)
    for iou_type, results in (("keypoints", kp), ("bbox", box)):
        direct = pycocotools_eval(gt, results, iou_type)
        assert list(metrics[iou_type].values()) == [float(s) for s in direct.stats]
    assert (out / "metrics.csv").read_text().splitlines()[0] == "iou_type,stat,value"

    # The manifest.
    m = rundir.read_manifest(out)
    assert m["status"] == "complete" and m["kpbench_run_version"] == m["format_version"] == 3
    assert m["image_ids"] == [139, 802] and m["num_images"] == 2 and m["split"] == "val2017"
    assert m["coco_root"] == str(COCO_SAMPLE.resolve())
    assert m["config"]["min_size"] == 320 and m["config"]["image_ids"] == [802, 139] and m["config"]["workers"] == 0
    assert m["config_file"]["path"] == str(config) and len(m["config_file"]["sha256"]) == 64
    assert m["command_line"].startswith("kpbench run --config ")
    assert m["model"]["source"] == "random" and m["model"]["seed"] == 0
    assert m["published"] is None
    assert m["deviations"] == [
        "image subset: 2 of 35 images (--image-ids)",
        "the annotation file lists 35 images, not the 5000 of val2017",
        "min_size 320 (published: 800)",
        "max_size 533 (published: 1333)",
        "box_score_thresh 0.3 (published: 0.05)",
        "no weights: random initialisation (--weights none, seed 0)",
    ]
    env = m["environment"]
    assert env["torch"] and env["torchvision"] and env["python"] and env["device"] == "cpu" and env["cpu"]
    t = m["timings"]
    assert t["images"] == 2 and 0 < t["model_s"] <= t["loop_s"] <= t["total_s"]
    assert t["per_image_s"] == pytest.approx(t["loop_s"] / 2, rel=1e-3)
    # 640x426 -> 320x480 (a multiple of 32 already); 424x640 -> 483x320 -> padded to 512x320
    assert m["backbone_shapes"]["distinct"] == [{"shape": [1, 3, 320, 480], "calls": 1},
                                                {"shape": [1, 3, 512, 320], "calls": 1}]
    assert m["evaluation"]["stats"] == metrics

    # The printed summary lists the deviations instead of comparing with the published AP.
    assert stdout.startswith(f"run {out}: 2 images, weights none, device cpu")
    assert "No published AP to compare with" in stdout and "  - min_size 320 (published: 800)" in stdout

    # Re-running the finished run re-evaluates from the cache (no model) and writes identical files.
    before = {name: (out / name).read_bytes() for name in RESULT_FILES}
    code, _, err = run_cli("run", "--config", config, "--coco-root", COCO_SAMPLE,
                       "--image-ids", "802,139", "--out", out, "--no-progress", "--workers", "2")
    assert code == 0 and "resumed: 2 images were already cached, 0 run now" in err
    assert {name: (out / name).read_bytes() for name in RESULT_FILES} == before

    # Another config refuses to resume; --overwrite starts again.
    code, _, err = run_cli("run", "--config", config, "--coco-root", COCO_SAMPLE,
                       "--image-ids", "802", "--out", out, "--no-progress")
    assert code == 2
    assert err == (f"error: {out}: made with a different config (image_ids: [139, 802] there, [802] now); "
                   "use another --out, or pass --overwrite to start it again\n")
    code, _, err = run_cli("run", "--config", config, "--coco-root", COCO_SAMPLE,
                       "--image-ids", "802", "--out", out, "--no-progress", "--overwrite")
    assert code == 0, err
    assert rundir.read_manifest(out)["image_ids"] == [802]
    assert [line["image_id"] for line in cache_lines(out)] == [802]


# --- subprocesses: SIGKILL and resume, torchrun -----------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_run(synthetic_coco_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted single-process run over the first 3 synthetic images (in this process: one torch import
    less; one thread, like the OMP_NUM_THREADS=1 subprocesses, so that the sums are the same)."""
    import torch

    from kpbench.core.config import RunSettings, merge_settings
    from kpbench.engine.runner import run

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    overrides = {"coco_root": str(synthetic_coco_root), "weights": "none", "min_size": 160, "max_size": 267,
                 "box_score_thresh": 0.3, "limit": 3, "workers": 0, "out": str(out)}
    outcome = run(merge_settings(RunSettings, None, overrides), progress=False)
    assert outcome.processed == 3 and outcome.results is not None
    return out


def _same_files(a: Path, b: Path) -> None:
    for name in RESULT_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_sigkill_then_resume_gives_identical_results(
    reference_run: Path, synthetic_coco_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    out = tmp_path / "run"
    args = ("run", "--coco-root", synthetic_coco_root, *FAST, "--limit", "3", "--workers", "1", "--out", out)
    proc = kpbench_proc(*args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if stored_images(out) >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    lines = stored_images(out)
    assert 1 <= lines < 3 and rundir.read_manifest(out)["status"] == "running"
    assert not (out / "keypoints_results.json").exists()
    # The killed run's lock file stays, with its pid; the kernel released the lock itself, so it blocks nothing.
    assert (out / rundir.LOCK).read_text() == f"{proc.pid}\n"

    code, _, err = run_cli(*args)  # resumed in this process (one torch import less)
    assert code == 0, err
    assert f"resumed: {lines} images were already cached, {3 - lines} run now" in err
    _same_files(reference_run, out)
    m = rundir.read_manifest(out)
    assert m["status"] == "complete" and m["timings"]["sessions"][-1]["images_cached_before"] == lines
    assert m["backbone_shapes"] == rundir.read_manifest(reference_run)["backbone_shapes"]  # kept through SIGKILL
    assert not (out / rundir.LOCK).exists()


def test_second_run_on_the_same_out_is_refused_and_sigterm_interrupts(
    reference_run: Path, synthetic_coco_root: Path, tmp_path: Path, run_cli: RunCli
) -> None:
    """A second run on a run directory in use refuses at once, naming the first one's pid, and changes nothing
    (two runs used to replace each other's cache and lose images). SIGTERM then stops the first run as Ctrl-C
    does, and the resumed run gives the uninterrupted results, byte for byte."""
    out = tmp_path / "run"
    args = ("run", "--coco-root", synthetic_coco_root, *FAST, "--limit", "3", "--workers", "0", "--out", out)
    proc = kpbench_proc(*args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if stored_images(out) >= 1:
            proc.send_signal(signal.SIGSTOP)  # holds the lock, and stays where it is while the second run tries
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be stopped"
    try:
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        code, stdout, err = run_cli(*args)
        assert_one_line_error((code, stdout, err), f"error: {out}: in use by another `kpbench run` (pid {proc.pid}); "
                              "wait for it to finish (or stop it), or use another --out")
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        proc.send_signal(signal.SIGTERM)
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    lines = stored_images(out)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.splitlines()[-1] == f"interrupted: {lines} of 3 images cached in {out}; run the same command again to resume"
    assert rundir.read_manifest(out)["status"] == "interrupted" and not (out / rundir.LOCK).exists()

    code, _, err = run_cli(*args)
    assert code == 0, err
    _same_files(reference_run, out)
    assert rundir.read_manifest(out)["status"] == "complete"


def test_ctrl_c_marks_the_run_interrupted_and_resumes(
    reference_run: Path, synthetic_coco_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    """Ctrl-C after the first image: one line says how far it got, exit 130, the manifest says "interrupted";
    the same command resumes to the uninterrupted results. (`--weights NONE` is recorded as "none", so the
    resume with "none" matches it.)"""
    out = tmp_path / "run"
    args = ("run", "--coco-root", synthetic_coco_root, *FAST, "--limit", "3", "--workers", "0", "--out", out)
    interrupt_on_call(monkeypatch, 2)
    code, stdout, err = run_cli(*args, "--weights", "NONE")
    assert code == 130 and stdout == ""
    assert err == f"interrupted: 1 of 3 images cached in {out}; run the same command again to resume\n"
    m = rundir.read_manifest(out)
    assert m["status"] == "interrupted" and m["config"]["weights"] == "none"
    assert stored_images(out) == 1

    monkeypatch.undo()
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "resumed: 1 images were already cached, 2 run now" in err
    _same_files(reference_run, out)
    assert rundir.read_manifest(out)["status"] == "complete"
    # The shape of the image cached before Ctrl-C is kept in its cache line, so the record is complete.
    shapes = rundir.read_manifest(out)["backbone_shapes"]
    assert shapes == rundir.read_manifest(reference_run)["backbone_shapes"] and shapes["calls"] == 3


def test_ctrl_c_while_a_new_run_is_set_up_leaves_no_half_run(
    synthetic_coco_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    """Ctrl-C after the cache and GT files of a new run are written but before its manifest: they are removed
    with the folder, so that the same command starts afresh instead of refusing a folder without a manifest."""
    import kpbench.engine.runner

    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "runs" / "run"
    args = ("run", "--coco-root", synthetic_coco_root, *FAST, "--limit", "1", "--workers", "0", "--out", out)
    monkeypatch.setattr(kpbench.engine.runner, "write_manifest", interrupt)
    code, _, _ = run_cli(*args)
    assert code == 130
    assert not (tmp_path / "runs").exists()  # the folders the run created went too
    monkeypatch.undo()
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert rundir.read_manifest(out)["status"] == "complete"


def test_unreadable_image_in_a_worker_is_one_line(synthetic_coco_root: Path, tmp_path: Path, run_cli: RunCli) -> None:
    """A DataLoader worker that cannot decode an image would raise inside its own traceback; the item carries the
    one-line message to the main process instead."""
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(synthetic_coco_root, root)
    (root / "val2017" / "000000000785.jpg").write_bytes(b"x")
    code, _, err = run_cli("run", "--coco-root", root, *FAST, "--limit", "2", "--workers", "2", "--out", tmp_path / "run")
    assert_one_line_error((code, "", err), "000000000785.jpg: cannot decode image")
    # The manifest says why the run stopped, instead of "running" forever.
    manifest = rundir.read_manifest(tmp_path / "run")
    assert (manifest["status"], manifest["error"]) == ("failed", err[len("error: "):].rstrip("\n"))


def test_full_disk_during_the_loop_marks_the_run_failed_and_is_resumable(
    synthetic_coco_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    """The disk fills while the store is written: one line, and the manifest says "failed" with that line, although
    the disk is full for the manifest too (its atomic rewrite needs a new file: it is rewritten in place, in the
    room a running manifest keeps). The same command then resumes."""
    import kpbench.core.io
    import kpbench.runs.store

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    def disk_full(fd: int, data: object) -> None:  # from the first record on, nothing new can be written
        monkeypatch.setattr(kpbench.core.io.tempfile, "mkstemp", no_space)
        no_space()

    out = tmp_path / "run"
    args = ("run", "--coco-root", synthetic_coco_root, *FAST, "--limit", "2", "--workers", "0", "--out", out)
    monkeypatch.setattr(kpbench.runs.store, "_write_all", disk_full)
    code, _, err = run_cli(*args)
    assert_one_line_error((code, "", err), f"{out / 'detections.bin'}: cannot write the detections store (No space left")
    with pytest.raises(KpbenchError, match="No space left"):
        kpbench.core.io.atomic_write_text(out / "x.json", "{}")  # the disk is still full
    manifest = rundir.read_manifest(out)
    assert (manifest["status"], manifest["error"]) == ("failed", err[len("error: "):].rstrip("\n"))
    text = (out / "manifest.json").read_text()
    assert text.endswith(" \n") and json.loads(text) == manifest  # rewritten in place, its spaces left over
    monkeypatch.undo()
    code, _, err = run_cli(*args)
    assert code == 0, err
    manifest = rundir.read_manifest(out)
    assert manifest["status"] == "complete" and "error" not in manifest


BROKEN_MODEL = """
import os

import numpy as np

from kpbench.core.schema import COCO17
from kpbench.models.base import ModelInfo, Predictions


class Broken:
    schema = COCO17

    def __init__(self, **kwargs):
        self.calls = 0

    def info(self):
        return ModelInfo(weights=None, source="test", keypoint_score_kind="probability")

    def predict(self, images):
        self.calls += 1
        if self.calls == 2 and os.environ.get("KPBENCH_TEST_BREAK") == "1":
            raise ValueError("boom: no second image today")
        return [Predictions(np.array([[1.0, 2.0, 30.0, 40.0]]), np.array([0.9]), np.ones((1, 17, 3)),
                            np.full((1, 17), 0.5), "probability") for _ in images]
"""


def test_a_model_whose_predict_raises_shows_its_traceback_then_one_line(
    synthetic_coco_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    """A user model that raises: its traceback (it points at the model's own code), then one `error:` line naming
    the model, the image and the run directory, which is marked failed; the images before it are kept and the
    same command resumes once the model is fixed."""
    model = tmp_path / "broken.py"
    model.write_text(BROKEN_MODEL)
    spec = f"{model}:Broken"
    out = tmp_path / "run"
    args = ("run", "--model", spec, "--coco-root", synthetic_coco_root, "--limit", "3", "--workers", "0",
            "--device", "cpu", "--out", out, "--no-progress", "--no-analysis")
    monkeypatch.setenv("KPBENCH_TEST_BREAK", "1")
    code, stdout, err = run_cli(*args)
    line = (f"error: model {spec}: Broken.predict raised ValueError (boom: no second image today) on image 785; "
            f"run directory {out} marked failed (1 of 3 images cached are kept: fix the model and run the same "
            "command to resume)")
    assert code == 2 and stdout == ""
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):" and lines[-1] == line
    assert f'  File "{model}", line 22, in predict' in lines
    assert '    raise ValueError("boom: no second image today")' in lines
    assert lines[-2] == "ValueError: boom: no second image today" and err.count("error:") == 1
    manifest = rundir.read_manifest(out)
    assert (manifest["status"], manifest["error"]) == ("failed", line[len("error: "):])
    assert stored_images(out) == 1

    monkeypatch.delenv("KPBENCH_TEST_BREAK")
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert "resumed: 1 images were already cached, 2 run now" in err
    assert rundir.read_manifest(out)["status"] == "complete" and len(cache_lines(out)) == 3


def test_on_a_cpu_without_workers_images_are_decoded_on_the_main_thread(
    synthetic_coco_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: RunCli
) -> None:
    """On a CPU with --workers 0 the batches are decoded where the model runs (a decode thread only costs the
    main thread GIL hand-offs there; see kpbench.engine.loop), and the store writer is the one other thread."""
    import kpbench.data.coco
    import kpbench.engine.inference

    decoded_on: list[str] = []
    real_item = kpbench.data.coco.CocoImages.__getitem__

    def recording(self: object, index: int) -> object:
        decoded_on.append(threading.current_thread().name)
        return real_item(self, index)  # type: ignore[arg-type]

    threads_seen: set[str] = set()
    real_host = kpbench.engine.inference.predictions_to_host

    def host(*args: object, **kwargs: object) -> object:
        threads_seen.update(t.name for t in threading.enumerate())
        return real_host(*args, **kwargs)

    monkeypatch.setattr(kpbench.data.coco.CocoImages, "__getitem__", recording)
    monkeypatch.setattr(kpbench.engine.inference, "predictions_to_host", host)
    model = tmp_path / "model.py"
    model.write_text(BROKEN_MODEL)
    code, _, err = run_cli("run", "--model", f"{model}:Broken", "--coco-root", synthetic_coco_root, "--limit", "3",
                           "--workers", "0", "--device", "cpu", "--out", tmp_path / "run", "--no-progress",
                           "--no-analysis")
    assert code == 0, err
    assert decoded_on == ["MainThread"] * 3
    assert "kpbench-decode" not in threads_seen and "kpbench-store-writer" in threads_seen


def test_torchrun_two_processes_equal_single_process(reference_run: Path, synthetic_coco_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    proc = kpbench_proc("run", "--coco-root", synthetic_coco_root, *FAST, "--limit", "3", "--workers", "0", "--out", out,
                        launcher=torchrun)
    stdout, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert stdout.count("run directory:") == 1  # only rank 0 reports
    _same_files(reference_run, out)
    assert not list(out.glob("detections.rank*"))
    m = rundir.read_manifest(out)
    assert m["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert m["command_line"].startswith("torchrun --nproc_per_node=2 -m kpbench run --coco-root ")
    session = m["timings"]["sessions"][-1]
    assert [r["images"] for r in session["per_rank"]] == [2, 1] and session["images"] == 3


# --- error messages (exit 2, one line, no traceback) ---------------------------------------------------------


def test_error_messages(monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, tmp_path: Path, synthetic_coco_root: Path) -> None:
    monkeypatch.delenv("KPBENCH_COCO_ROOT", raising=False)
    out = tmp_path / "out"

    def error(*args: object) -> str:
        code, _, err = run_cli("run", *FAST, "--out", out, *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        return err[len("error: ") : -1]

    assert error() == ("no COCO root given: pass --coco-root DIR or set KPBENCH_COCO_ROOT "
                       "(`kpbench data download --coco-root DIR` fetches val2017)")
    missing = tmp_path / "nowhere"
    assert error("--coco-root", missing) == (f"{missing}: COCO root not found (`kpbench data download --coco-root {missing}` "
                                             "fetches val2017, or add --download to `kpbench run`)")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error("--coco-root", empty) == (
        f"{empty}/annotations/person_keypoints_val2017.json: annotation file not found "
        f"(`kpbench data download --coco-root {empty}` or `kpbench run --download` fetches it)"
    )
    partial = tmp_path / "partial"
    (partial / "val2017").mkdir(parents=True)
    (partial / "annotations").symlink_to(synthetic_coco_root / "annotations")
    (partial / "val2017" / "000000000139.jpg").symlink_to(synthetic_coco_root / "val2017" / "000000000139.jpg")
    assert error("--coco-root", partial) == (
        f"{partial}/val2017/000000000785.jpg: image file not found and 2 more "
        f"(`kpbench data download --coco-root {partial}` or `kpbench run --download` extracts the missing images again "
        "from val2017.zip)"
    )
    root = ("--coco-root", synthetic_coco_root)
    assert error(*root, "--image-ids", "139,5") == "--image-ids: 5 not in the annotation file"
    assert error(*root, "--image-ids", "13x") == "--image-ids: cannot read '13x' as a comma-separated list of int"
    assert error(*root, "--images", "people") == "--images: must be one of all, with-persons, got 'people'"
    assert error(*root, "--min-size", "512", "--max-size", "256") == (
        "--max-size 256 is smaller than --min-size 512: the long-side cap must be at least the short side"
    )
    assert error(*root, "--device", "tpu") == "--device: unknown device 'tpu' (auto, cpu, cuda or cuda:N)"
    assert error(*root, "--backend", "coco") == "--backend: must be one of vectorized, pycocotools, hotcoco, got 'coco'"
    assert error(*root, "--weights", tmp_path / "w.pth") == (
        f"{tmp_path / 'w.pth'}: checkpoint file not found (--weights takes COCO_V1, COCO_LEGACY, none or a path)"
    )
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    assert error(*root, "--weights", tmp_path / "bad.pth") == (
        f"{tmp_path / 'bad.pth'}: not a PyTorch checkpoint (torch.save writes a zip or pickle file)"
    )
    (tmp_path / "empty.pth").write_bytes(b"")
    assert error(*root, "--weights", tmp_path / "empty.pth") == f"{tmp_path / 'empty.pth'}: empty file, not a checkpoint"
    assert error(*root, "--weights", tmp_path) == (
        f"{tmp_path}: is a directory, expected a checkpoint file (--weights takes COCO_V1, COCO_LEGACY, none or a path)"
    )
    assert error(*root, "--weights", "COCO_V2") == (
        "COCO_V2: checkpoint file not found; did you mean COCO_V1? (--weights takes COCO_V1, COCO_LEGACY, none or a "
        "path)"
    )
    # The weights are checked first, before the COCO root is even looked at (a bad path fails at once).
    assert error("--coco-root", missing, "--weights", tmp_path / "empty.pth").endswith("empty file, not a checkpoint")
    # An unusable --out is one line too (and nothing is left behind).
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    code, _, err = run_cli("run", *FAST, *root, "--out", blocker)
    assert code == 2 and err == f"error: --out {blocker}: exists and is not a directory\n"
    code, _, err = run_cli("run", *FAST, *root, "--out", "/proc/kpbench-x")
    assert code == 2 and err.startswith("error: --out /proc/kpbench-x: cannot create the folder (") and err.count("\n") == 1
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    (not_a_run / "a.txt").write_text("x")
    code, _, err = run_cli("run", *FAST, *root, "--out", not_a_run)
    assert code == 2 and err == (f"error: {not_a_run}: exists and is not a kpbench run directory (no manifest.json); "
                                 "choose another --out, or pass --overwrite to write the run files into it\n")
    import torch

    def no_bf16(device_type: str, dtype: torch.dtype, **kwargs: object) -> None:
        raise RuntimeError("Current CUDA Device does not support bfloat16. Please switch dtype to float16.")

    monkeypatch.setattr(torch, "autocast", no_bf16)
    assert error(*root, "--dtype", "bf16") == ("--dtype bf16: not available on cpu (Current CUDA Device does not "
                                               "support bfloat16. Please switch dtype to float16.)")
    assert not out.exists()  # nothing is written before the checks pass


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (lambda gt: gt["images"][0].update(id="x"), ("images entry 0: 'id' must be an integer id, got 'x'",)),
        (lambda gt: gt["annotations"][0].pop("image_id"), ("annotations entry 0: 'image_id' must be an integer id",)),
        (lambda gt: gt["annotations"][0].pop("num_keypoints"), ("annotation 0", "has no 'num_keypoints'")),
    ],
)
def test_bad_annotation_file_fails_before_the_model_runs(
    synthetic_coco_root: Path, tmp_path: Path, run_cli: RunCli, change: Callable, fragments: tuple[str, ...]
) -> None:
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(synthetic_coco_root, root)
    ann = root / "annotations" / "person_keypoints_val2017.json"
    gt = json.loads(ann.read_text())
    change(gt)
    ann.write_text(json.dumps(gt))
    code, _, err = run_cli("run", "--coco-root", root, *FAST, "--workers", "0", "--out", tmp_path / "run")
    assert_one_line_error((code, "", err), str(ann), *fragments)
    assert not (tmp_path / "run").exists()


def test_named_weights_offline_error(monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, tmp_path: Path, synthetic_coco_root: Path) -> None:
    import urllib.error

    import torch.hub

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    # An empty cache and no network, even on machines that have one (torch.hub downloads through its urlopen).
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    # Named weights match case-insensitively: coco_v1 is COCO_V1.
    code, _, err = run_cli("run", "--coco-root", synthetic_coco_root, "--weights", "coco_v1",
                       "--out", tmp_path / "out" / "run", "--no-progress")
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "keypointrcnn_resnet50_fpn_coco-fc266e95.pth"
    assert code == 2
    assert f"error: cannot load COCO_V1 weights: {expected} is not cached" in err
    assert err.rstrip().endswith("put the file there, or pass a local checkpoint with --weights PATH")
    assert not (tmp_path / "out").exists()  # the folders planning made for --out are removed again


def test_download_option_calls_the_downloader(monkeypatch: pytest.MonkeyPatch, run_cli: RunCli, tmp_path: Path) -> None:
    import kpbench.data.download
    from kpbench.core.errors import KpbenchError

    calls = []

    def fake_ensure_coco(root: Path, split: str = "val2017", base_url: str | None = None) -> None:
        calls.append((root, split))
        raise KpbenchError("download stopped by the test")

    monkeypatch.setattr(kpbench.data.download, "ensure_coco", fake_ensure_coco)
    code, _, err = run_cli("run", *FAST, "--download", "--coco-root", tmp_path / "coco", "--out",
                       tmp_path / "out")
    assert code == 2 and err == "error: download stopped by the test\n"
    assert calls == [(tmp_path / "coco", "val2017")]
    monkeypatch.delenv("KPBENCH_COCO_ROOT", raising=False)
    code, _, err = run_cli("run", *FAST, "--download", "--out", tmp_path / "out")
    assert err == "error: --download: needs --coco-root DIR (or $KPBENCH_COCO_ROOT) to download into\n"


def test_evaluate_run_dir_without_the_model(reference_run: Path, tmp_path: Path) -> None:
    """`kpbench evaluate --run DIR` re-scores the cache: same metrics, same files, and torch is never imported."""
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(reference_run, run_dir)
    metrics_before = (run_dir / "metrics.json").read_bytes()
    (run_dir / "keypoints_results.json").unlink()  # rebuilt from the cache
    code = (
        "import sys\n"
        "from kpbench.cli import main\n"
        f"sys.argv = ['kpbench', 'evaluate', '--run', {str(run_dir)!r}, '--format', 'json']\n"
        "try:\n    main()\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "NO-TORCH"
    printed = json.loads("\n".join(lines[:-1]))
    assert printed == json.loads(metrics_before)
    assert (run_dir / "metrics.json").read_bytes() == metrics_before
    assert (run_dir / "keypoints_results.json").read_bytes() == (reference_run / "keypoints_results.json").read_bytes()


# --- the model: named weights, checkpoints, input size, device (no model call) -----------------------------------


def test_published_constants_match_torchvision() -> None:
    """The AP and file hashes kpbench keeps (to stay torch-free where it reads them) are torchvision's own."""
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    from kpbench.models.keypointrcnn import NAMED_WEIGHTS, NAMED_WEIGHTS_SHA_PREFIX, PUBLISHED_AP, weights_cache_path

    for name in NAMED_WEIGHTS:
        weights = KeypointRCNN_ResNet50_FPN_Weights[name]
        metrics = weights.meta["_metrics"]["COCO-val2017"]
        assert PUBLISHED_AP[name] == {"box_AP": metrics["box_map"], "kp_AP": metrics["kp_map"]}
        assert weights.url.endswith(f"-{NAMED_WEIGHTS_SHA_PREFIX[name]}.pth")
        assert weights_cache_path(name).name == weights.url.rsplit("/", 1)[1]


def test_checkpoint_file_and_coco_v1_recognised_by_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A {"model": state_dict} checkpoint loads exactly, with FrozenBatchNorm; when its sha256 is COCO_V1's the
    eps becomes 0 as torchvision's builder does, and the run compares with COCO_V1's published AP."""
    import torch
    from torchvision.ops.misc import FrozenBatchNorm2d

    import kpbench.models.keypointrcnn as models
    from kpbench.models.keypointrcnn import build_model, file_sha256, published_weights_name

    with torch.device("meta"):  # the layout only: no weight initialisation
        layout = models._frozen_bn_model().state_dict()
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in layout.items()}
    marker = "roi_heads.keypoint_predictor.kps_score_lowres.bias"
    state[marker] = torch.arange(17, dtype=torch.float32)
    path = tmp_path / "checkpoint.pth"
    # Saved as torchvision's references/detection/train.py does: its argparse.Namespace of arguments included.
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 0.02, "params": [0]}]},
                "lr_scheduler": {"milestones": __import__("collections").Counter({36: 1}), "last_epoch": 25},
                "args": __import__("argparse").Namespace(model="keypointrcnn_resnet50_fpn", lr=0.02, amp=False),
                "epoch": 25}, path)  # fmt: skip
    sha = file_sha256(path)
    monkeypatch.setattr(models, "_COCO_V1_SHA_PREFIX", sha[:8])
    monkeypatch.setitem(models.NAMED_WEIGHTS_SHA_PREFIX, "COCO_V1", sha[:8])

    model, info = build_model(str(path), min_size=320, max_size=533, box_score_thresh=0.3)
    assert torch.equal(model.state_dict()[marker], state[marker]) and not model.training
    assert (info.source, info.checkpoint_sha256, info.frozen_bn_eps) == ("checkpoint", sha, 0.0)
    frozen = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and all(m.eps == 0.0 for m in frozen)
    assert published_weights_name(info) == "COCO_V1"
    assert (model.transform.min_size, model.transform.max_size, model.roi_heads.score_thresh) == ((320,), 533, 0.3)

    # Another model's state dict: one short line, not torch's list of hundreds of keys.
    other = {"module.backbone.weight": torch.zeros(1), "roi_heads.keypoint_predictor.kps_score_lowres.bias": torch.zeros(3)}
    with pytest.raises(KpbenchError) as info:
        models._load_state(model, other, path)
    assert str(info.value) == (f"{path}: not a Keypoint R-CNN ResNet-50-FPN checkpoint (size mismatch for "
                               f"{marker}: copying a param with shape torch.Size([3]) from checkpoint, the shape in "
                               "current model is torch.Size([17]).)")
    del other[marker]
    with pytest.raises(KpbenchError, match=rf"^{re.escape(str(path))}: not a Keypoint R-CNN ResNet-50-FPN checkpoint "
                                           rf"\(\d+ missing key\(s\), such as 'backbone\.body\.conv1\.weight'; 1 unexpected "
                                           r"key\(s\), such as 'module\.backbone\.weight'\)$"):
        models._load_state(model, other, path)
    with pytest.raises(KpbenchError, match=r"not a state dict nor a checkpoint dict"):
        models.load_checkpoint_state(_save(tmp_path / "list.pth", [1, 2]))
    with pytest.raises(KpbenchError, match=r"not a state dict nor a checkpoint dict"):
        models.load_checkpoint_state(_save(tmp_path / "opt.pth", {"optimizer": {"lr": 0.1}}))


def _save(path: Path, obj: object) -> Path:
    import torch

    torch.save(obj, path)
    return path


def test_input_size_and_device() -> None:
    import torch

    from kpbench.engine.device import resolve_device
    from kpbench.models.keypointrcnn import default_max_size, set_input_size

    assert [default_max_size(s) for s in (800, 320, 512, 160)] == [1333, 533, 853, 267]
    model = SimpleNamespace(transform=SimpleNamespace(min_size=(800,), max_size=1333))
    set_input_size(model, 480)  # type: ignore[arg-type]
    assert (model.transform.min_size, model.transform.max_size) == ((480,), 800)
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").index == torch.cuda.current_device()  # always an explicit GPU
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(KpbenchError, match=r"^--device cuda: CUDA is not available on this machine"):
            resolve_device("cuda")


def test_replaced_checkpoint_is_refused_on_a_finished_run(tmp_path: Path, synthetic_coco_root: Path) -> None:
    """Re-running a finished run only re-evaluates; a checkpoint replaced at the same path must not pass for the
    one whose detections are cached."""
    import torch

    import kpbench.models.keypointrcnn as models
    from kpbench.core.config import RunSettings, merge_settings
    from kpbench.engine.runner import run

    with torch.device("meta"):
        layout = models._frozen_bn_model().state_dict()
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in layout.items()}
    path = tmp_path / "model.pth"
    torch.save(state, path)
    overrides = {"coco_root": str(synthetic_coco_root), "weights": str(path), "min_size": 96, "max_size": 160,
                 "limit": 1, "workers": 0, "out": str(tmp_path / "run")}
    settings = merge_settings(RunSettings, None, overrides)
    assert run(settings, progress=False).processed == 1
    assert run(settings, progress=False).processed == 0  # finished: re-evaluated from the cache only
    state["roi_heads.keypoint_predictor.kps_score_lowres.bias"] += 1.0
    torch.save(state, path)
    with pytest.raises(KpbenchError, match=r"model\.pth: the checkpoint changed since this run was made"):
        run(settings, progress=False)


def test_resume_fingerprint_ignores_the_order_of_image_ids() -> None:
    from kpbench.engine.runner import resume_fingerprint

    a = resume_fingerprint({"image_ids": [802, 139], "min_size": 320}, "/coco", "cpu")
    assert a == resume_fingerprint({"image_ids": [139, 802, 139], "min_size": 320}, "/coco", "cpu")
    assert a != resume_fingerprint({"image_ids": [139], "min_size": 320}, "/coco", "cpu")


@pytest.mark.parametrize("command", ["run", "speed"])
def test_missing_coco_root_is_reported_before_torch_is_imported(tmp_path: Path, command: str) -> None:
    code = (
        "import sys\n"
        "from kpbench.cli import main\n"
        f"sys.argv = ['kpbench', {command!r}, '--coco-root', {str(tmp_path / 'nowhere')!r}, '--weights', 'none']\n"
        "try:\n    main()\n"
        "except SystemExit as e:\n    assert e.code == 2, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.stdout == "NO-TORCH\n", proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path / 'nowhere'}: COCO root not found")


@requires_shared
@pytest.mark.parametrize(
    ("change", "image_ids", "expected"),
    [
        (lambda gt: gt["annotations"][60]["keypoints"].__setitem__(4, float("nan")), "214753",
         "annotation 60 (id 186932): 'keypoints' holds NaN or infinity"),
        (lambda gt: gt["images"].append(dict(gt["images"][1])), "785",
         "image 35: duplicate image id 785 (also image 1); ids must be unique"),
    ],
)
def test_bad_gt_record_is_named_by_its_place_in_the_file(
    tmp_path: Path, run_cli: RunCli, change: Callable, image_ids: str, expected: str
) -> None:
    """run checks only the selected images' GT, but names the records as the file has them (it used to give their
    index in the selection: "annotation 0", "image 1")."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").symlink_to(COCO_SAMPLE / "val2017")
    gt = load(COCO_SAMPLE / "annotations" / "person_keypoints_val2017.json")
    change(gt)
    ann = root / "annotations" / "person_keypoints_val2017.json"
    ann.write_text(json.dumps(gt))
    code, _, err = run_cli("run", "--coco-root", root, *FAST, "--image-ids", image_ids, "--out", tmp_path / "run")
    assert_one_line_error((code, "", err))
    assert err == f"error: {ann}: {expected}\n"
