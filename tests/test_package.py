"""The package surface: lazy public names resolve, and importing kpbench stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import kpbench


def test_every_public_name_resolves() -> None:
    for name in kpbench.__all__:
        assert getattr(kpbench, name) is not None, name


def test_import_is_light() -> None:
    code = "import sys, json, kpbench; print(json.dumps([m for m in ('torch', 'matplotlib', 'pandas') if m in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_version_matches_metadata() -> None:
    from importlib.metadata import version

    assert kpbench.__version__ == version("kpbench")


def test_undefined_values_read_n_a_for_people_and_nan_for_programs() -> None:
    from kpbench.core.io import render

    rows = [{"keypoint": "nose", "n": 0, "mean_similarity": float("nan")}]
    assert "n/a" in render(rows, "table") and "n/a" in render(rows, "markdown")
    assert render(rows, "csv").splitlines()[1] == "nose,0,nan"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--limit", "abc"], "Invalid value for '--limit'"),
        (["evaluate", "--bogus"], "No such option: --bogus"),
        (["nosuch"], "No such command 'nosuch'"),
        (["speed", "--iters", "x"], "Invalid value for '--iters'"),
    ],
)
def test_click_usage_errors_are_one_line(run_cli, args: list[str], fragment: str) -> None:
    """click's own errors (a wrong option, a value of the wrong type) read like kpbench's: one line, exit 2."""
    code, out, err = run_cli(*args)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: ") and fragment in err and "--help)" in err


def test_help_version_and_no_arguments(run_cli) -> None:
    code, out, _ = run_cli("--help")
    assert code == 0 and out.startswith("Usage: ") and "kpbench" in out.splitlines()[0]
    code, out, _ = run_cli("--version")
    assert code == 0 and out == f"kpbench {kpbench.__version__}\n"
    code, out, err = run_cli()
    assert code == 2 and "Usage: " in out + err and "COMMAND" in out + err  # the help, as click shows it


def test_atomic_write_files_names_the_file_that_failed(tmp_path) -> None:
    from kpbench.core.errors import KpbenchError
    from kpbench.core.io import atomic_write_files

    (tmp_path / "first.txt").write_text("old")
    (tmp_path / "second.txt").mkdir()
    with pytest.raises(KpbenchError, match=r"second\.txt: cannot write \(Is a directory\)"):
        atomic_write_files({tmp_path / "first.txt": "new", tmp_path / "second.txt": "new"})
    assert (tmp_path / "first.txt").read_text() == "old"  # nothing replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.txt", "second.txt"]  # no temporary file left
    # A temporary file that cannot be made beside its target (tests run as root, so /proc stands in for a
    # read-only folder): the message names the target, not the temporary file.
    with pytest.raises(KpbenchError, match=r"^/proc/kpbench-test\.txt: cannot write \("):
        atomic_write_files({"/proc/kpbench-test.txt": "x"})


def _fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_from_kpbench_import_evaluate_gives_the_function_in_a_fresh_interpreter() -> None:
    """The documented first line of the Python API: a function, which evaluates (not a module: TypeError)."""
    code = (
        "import json, types\n"
        "from kpbench import evaluate\n"
        "from kpbench.data.synthetic import make_synthetic_coco\n"
        "assert isinstance(evaluate, types.FunctionType), type(evaluate)\n"
        "gt, results = make_synthetic_coco(num_images=4, seed=0)\n"
        "exact = [{**r, 'keypoints': a['keypoints'], 'score': 1.0} for a in gt['annotations'] if a['num_keypoints']"
        " and not a['iscrowd'] for r in [{'image_id': a['image_id'], 'category_id': 1}]]\n"
        "print(json.dumps(evaluate(gt, exact).stats['AP']))\n"
    )
    proc = _fresh(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == 1.0  # GT keypoints as detections: a perfect score


def test_public_names_stay_what_they_are_after_every_submodule_import() -> None:
    """`kpbench.evaluate` must not flip to a module once a submodule is imported (it used to, after the first
    import of kpbench.evaluate the module). Every public name, before and after importing every submodule, is the
    object its module defines, and none is a module."""
    code = (
        "import importlib, json, pkgutil, types\n"
        "import kpbench\n"
        "def names():\n"
        "    out = {}\n"
        "    for name, module in kpbench._EXPORTS.items():\n"
        "        value = getattr(kpbench, name)\n"
        "        ok = value is getattr(importlib.import_module(module), name) and not isinstance(value, types.ModuleType)\n"
        "        out[name] = ok\n"
        "    return out\n"
        "before = names()\n"
        "imported = []\n"
        "for info in pkgutil.walk_packages(kpbench.__path__, 'kpbench.'):\n"
        "    if info.name != 'kpbench.__main__':\n"
        "        try:\n"
        "            importlib.import_module(info.name)\n"
        "        except ModuleNotFoundError as exc:  # an extra not installed (fastcheck needs msgspec)\n"
        "            if exc.name.split('.')[0] not in ('msgspec', 'hotcoco', 'torch', 'torchvision'):\n"
        "                raise\n"
        "        else:\n"
        "            imported.append(info.name)\n"
        "from kpbench import evaluate\n"
        "print(json.dumps({'before': before, 'after': names(), 'imported': imported,\n"
        "                  'evaluate': [evaluate is kpbench.evaluate, evaluate.__module__]}))\n"
    )
    proc = _fresh(code)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["before"] == report["after"] == dict.fromkeys(kpbench._EXPORTS, True)
    assert {"kpbench.evaluation.cocoeval", "kpbench.cli.evaluate", "kpbench.engine.runner", "kpbench.cli.run"} <= set(
        report["imported"]
    )
    assert report["evaluate"] == [True, "kpbench.evaluation.cocoeval"]


def test_atomic_writes_sync_the_folder_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename is durable only once its folder is synced: both atomic writers fsync the file, rename it, then fsync
    the folder (before a merge deletes the files the new store replaces)."""
    import os
    import stat

    from kpbench.core import io

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src: str, dst: object) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    io.atomic_write_chunks(tmp_path / "a.bin", [b"x", b"y"])
    assert events == ["file", "rename", "dir"] and (tmp_path / "a.bin").read_bytes() == b"xy"
    events.clear()
    io.atomic_write_files({tmp_path / "b.txt": "b", tmp_path / "sub" / "c.txt": "c"})
    assert events == ["file", "file", "rename", "rename", "dir", "dir"]
