"""The package surface: lazy public names resolve, and importing kpbench stays light."""

from __future__ import annotations

import json
import subprocess
import sys

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
    from kpbench.io import render

    rows = [{"keypoint": "nose", "n": 0, "mean_similarity": float("nan")}]
    assert "n/a" in render(rows, "table") and "n/a" in render(rows, "markdown")
    assert render(rows, "csv").splitlines()[1] == "nose,0,nan"
