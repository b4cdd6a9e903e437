"""What a `kpbench evaluate GT RES` process loads and sets before it evaluates (issue 24: its whole-process cost),
and the small array helpers that keep numpy's slower paths off it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kpbench.core.errors import KpbenchError
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.arrays import in_sorted, sorted_unique

# `kpbench evaluate GT RES --format json` in a fresh interpreter, between a probe's setup and its report line.
EVALUATE = (
    "from kpbench.cli import main\n"
    "sys.argv = ['kpbench', 'evaluate', *sys.argv[1:], '--format', 'json']\n"
    "try:\n"
    "    main()\n"
    "except SystemExit as exc:\n"
    "    assert exc.code in (0, None), exc.code\n"
)

# The modules it loaded and the BLAS thread setting.
PROBE = (
    "import json, os, sys\n"
    + EVALUATE
    + "heavy = ('numpy.ma', 'pandas', 'matplotlib', 'torch', 'torchvision', 'pydantic')\n"
    "print(json.dumps({'loaded': sorted(m for m in heavy if m in sys.modules),\n"
    "                  'blas': os.environ.get('OPENBLAS_NUM_THREADS')}))\n"
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    gt, results = make_synthetic_coco(num_images=6, detections_per_person=2.0, seed=3)
    folder = tmp_path_factory.mktemp("startup")
    gt_path, kp_path, box_path = folder / "gt.json", folder / "kp.json", folder / "box.json"
    gt_path.write_text(json.dumps(gt))
    kp_path.write_text(json.dumps(results))
    box_path.write_text(json.dumps([{"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                                     "bbox": [10.0, 20.0, 30.0 + i, 40.0]} for i, r in enumerate(results)]))
    return gt_path, kp_path, box_path


def probe(*args: str, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_evaluate_loads_nothing_heavy(files: tuple[Path, Path, Path], iou_type: str) -> None:
    """Neither torch, pandas, matplotlib nor numpy.ma (np.unique loads it: 10+ ms) on the default backend's path."""
    gt, kp, box = files
    report = probe(str(gt), str(kp if iou_type == "keypoints" else box), "--iou-type", iou_type)
    assert report["loaded"] == []


def test_evaluate_asks_openblas_for_one_thread(files: tuple[Path, Path, Path]) -> None:
    gt, kp, _ = files
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert probe(str(gt), str(kp), env=env)["blas"] == "1"


def test_evaluate_keeps_the_users_blas_setting(files: tuple[Path, Path, Path]) -> None:
    gt, kp, _ = files
    assert probe(str(gt), str(kp), env={**os.environ, "OPENBLAS_NUM_THREADS": "3"})["blas"] == "3"


@pytest.mark.parametrize("values", [
    [], [7], [3, 3], [5, -1, 5, 2, 2**62, -(2**62), 0, 0, 1], list(range(50, 0, -3)) * 2,
])
def test_sorted_unique_and_in_sorted_are_numpys(values: list[int]) -> None:
    array = np.asarray(values, dtype=np.int64)
    unique = sorted_unique(array)
    assert unique.dtype == np.int64 and np.array_equal(unique, np.unique(array))
    probes = np.asarray([-(2**62), -1, 0, 2, 4, 5, 8, 2**62, 2**63 - 1], dtype=np.int64)
    assert np.array_equal(in_sorted(probes, unique), np.isin(probes, array))


def test_sorted_unique_and_in_sorted_random() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        array = rng.integers(-30, 30, size=rng.integers(0, 60))
        probes = rng.integers(-40, 40, size=25)
        assert np.array_equal(sorted_unique(array), np.unique(array))
        assert np.array_equal(in_sorted(probes, sorted_unique(array)), np.isin(probes, array))


def test_evaluate_asks_glibc_to_keep_freed_memory(files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    """Large temporaries reuse freed heap memory instead of fresh pages (a third of the CPU time at val2017 scale
    went to page faults): the evaluate command sets glibc's mmap and trim thresholds before it reads anything."""
    import ctypes

    from kpbench.cli import app
    from kpbench.cli import evaluate as command

    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, parameter: int, value: int) -> int:
            calls.append((parameter, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    gt, kp, _ = files
    try:
        app(["evaluate", str(gt), str(kp), "--format", "json"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert calls == [(-3, 32 << 20), (-1, 2**31 - 1), (-2, 64 << 20)] == list(command._MALLOC_SETTINGS)


def test_keep_freed_memory_without_mallopt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A C library without mallopt (musl, macOS' libSystem has none by that name) is left alone, silently."""
    import ctypes

    from kpbench.cli import evaluate as command

    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())
    command._keep_freed_memory()


def test_only_the_command_run_is_built() -> None:
    """typer builds a click command for every registered command on each call; main() gives it the one named."""
    from kpbench.cli import _app_for, app

    evaluate_app = _app_for(["evaluate", "gt.json", "res.json"])
    assert [info.name for info in evaluate_app.registered_commands] == ["evaluate"]
    assert evaluate_app.registered_groups == [] and evaluate_app.registered_callback is app.registered_callback
    assert len(app.registered_commands) > 1 and app.registered_groups  # the app itself is untouched
    for args in ([], ["--help"], ["--version"], ["data", "download"], ["evaluat"], ["config", "show"]):
        assert _app_for(args) is app


@pytest.mark.parametrize("args", [
    ["evaluate", "--help"], ["evaluate", "--bogus"], ["evaluate", "--max-dets", "abc", "a.json", "b.json"],
    ["thresholds", "--help"], ["evaluate"],
])
def test_the_command_alone_says_what_the_whole_app_says(args: list[str]) -> None:
    from typer.testing import CliRunner

    from kpbench.cli import _app_for, app

    whole, alone = CliRunner().invoke(app, args), CliRunner().invoke(_app_for(args), args)
    assert (alone.exit_code, alone.output, repr(alone.exception)) == (
        whole.exit_code, whole.output, repr(whole.exception))
    assert whole.output.strip() or isinstance(whole.exception, KpbenchError)


GC_PROBE = (
    "import gc, json, sys\n"
    "collections = []\n"
    "gc.callbacks.append(lambda phase, info: collections.append(info['generation']) if phase == 'stop' else None)\n"
    + EVALUATE
    + "print(json.dumps({'collections': len(collections), 'frozen': gc.get_freeze_count()}))\n"
)


def test_evaluate_loads_its_modules_without_garbage_collections(files: tuple[Path, Path, Path]) -> None:
    """Loading typer, click, numpy and msgspec started ~60 cyclic collections per `kpbench evaluate` (~10-20 ms of
    walking the same long-lived objects); the CLI and the evaluate command load them with the collector paused and
    freeze what they made. A few collections remain (before the CLI's modules, and on the way out)."""
    gt, kp, _ = files
    proc = subprocess.run([sys.executable, "-c", GC_PROBE, str(gt), str(kp)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["collections"] <= 5, report
    assert report["frozen"] > 20_000, report  # typer's, click's, numpy's objects: out of every later collection


def test_cocofiles_iou_types_are_the_configs() -> None:
    """cocofiles keeps its own copy (kpbench.core.config costs start-up); the two must not drift."""
    from kpbench.core.config import IOU_TYPES
    from kpbench.evaluation import cocofiles

    assert cocofiles.IOU_TYPES == IOU_TYPES


def test_evaluate_loads_no_module_it_does_not_use(files: tuple[Path, Path, Path]) -> None:
    """Without --bootstrap, the bootstrap module; the config module (tomllib, dataclasses: ~5 ms); hashlib (it
    loads OpenSSL: ~3 ms; kpbench.core.io hashes files only when asked)."""
    gt, kp, _ = files
    code = PROBE.replace("heavy = (", "heavy = ('kpbench.analysis.bootstrap', 'kpbench.core.config', 'hashlib', ")
    proc = subprocess.run([sys.executable, "-c", code, str(gt), str(kp)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["loaded"] == []


def test_read_ahead_gives_the_bytes_once_and_only_of_the_same_file(tmp_path: Path) -> None:
    """`read_ahead` reads on a thread; `take_read_ahead` hands the bytes over once, and only while the file is the
    one that was read: rewritten (another size or modification time) or replaced, it is read again as usual."""
    from kpbench.core.io import read_ahead, take_read_ahead

    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_bytes(b"[1, 2, 3]")
    b.write_bytes(b"[4]")
    c.write_bytes(b"[5]")
    read_ahead(a, b, c, tmp_path / "missing.json", tmp_path)
    assert take_read_ahead(Path(os.path.relpath(a))) == b"[1, 2, 3]"  # any spelling of the same path
    assert take_read_ahead(a) is None  # once
    assert take_read_ahead(tmp_path / "never.json") is None
    assert take_read_ahead(tmp_path / "missing.json") is None and take_read_ahead(tmp_path) is None
    b.write_bytes(b"[4, 44]")  # rewritten after the read-ahead: another size
    assert take_read_ahead(b) is None
    replacement = tmp_path / "new.json"
    replacement.write_bytes(b"[6]")
    os.utime(replacement, ns=(1, 1))
    os.replace(replacement, c)  # the same size, another file (inode, time)
    assert take_read_ahead(c) is None


def test_evaluate_reads_its_two_files_while_its_modules_load(files: tuple[Path, Path, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The default route (vectorized, checked, two files) starts reading both files before it imports the
    evaluation modules, and the parser takes what was read; the other routes read nothing ahead."""
    import kpbench.core.io as io
    from kpbench.cli import app

    asked: list[tuple[str, ...]] = []
    taken: list[bool] = []
    real_read_ahead, real_take = io.read_ahead, io.take_read_ahead
    monkeypatch.setattr(io, "read_ahead", lambda *paths: asked.append(tuple(map(str, paths))) or real_read_ahead(*paths))
    monkeypatch.setattr("kpbench.evaluation.fastparse.take_read_ahead",
                        lambda path: taken.append(io._READ_AHEAD.get(os.path.abspath(path)) is not None)
                        or real_take(path))
    gt, kp, _ = files
    for extra in ([], ["--backend", "pycocotools"], ["--no-validate"]):
        try:
            app(["evaluate", str(gt), str(kp), "--format", "json", *extra])
        except SystemExit as exc:
            assert exc.code in (0, None)
    assert asked == [(str(gt), str(kp))] and taken == [True, True]
    assert not io._READ_AHEAD  # taken, and the rest discarded: nothing held
