"""The speed code and the runtimes keep to the data flow: they import no model adapter (the device and autocast
helpers come from kpbench.engine.device), nothing to their right at module level, and to their right only where a
speed table ends (its accuracy pass and the comparison with eager, lazily, in one module)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import kpbench

PACKAGE = Path(kpbench.__file__).parent
ENGINE_SPEED = sorted(PACKAGE.glob("engine/speed*.py")) + [
    PACKAGE / "engine" / f"{name}.py" for name in ("timing", "memory", "work", "stages", "device")
]
RUNTIMES = sorted(PACKAGE.glob("runtimes/*.py"))
# What a speed module or a runtime may import: the stages to its left, the model interface (never an adapter).
ALLOWED = ("kpbench.core", "kpbench.data", "kpbench.engine", "kpbench.runtimes", "kpbench.models.base",
           "kpbench.models.registry")
# The only imports to the right, each inside a function: the end of a speed table (`--accuracy`).
LAZY_RIGHTWARD = {
    ("speed_accuracy.py", "kpbench.evaluation.cocoeval"),
    ("speed_accuracy.py", "kpbench.runs.detections"),
    ("speed_accuracy.py", "kpbench.analysis.runtime_accuracy"),
}


def kpbench_imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) of every `from kpbench... import` and `import kpbench...` in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            if name.startswith("kpbench"):
                found.append((name, id(node) in top))
    return found


def test_speed_modules_and_runtimes_import_no_adapter_and_nothing_to_their_right() -> None:
    assert len(ENGINE_SPEED) >= 10 and len(RUNTIMES) >= 7
    rightward = set()
    for path in ENGINE_SPEED + RUNTIMES:
        for module, top_level in kpbench_imports(path):
            if module.startswith(ALLOWED):
                continue
            assert not top_level, f"{path.name} imports {module} at module level"
            rightward.add((path.name, module))
    assert rightward == LAZY_RIGHTWARD


def test_the_table_s_columns_are_the_engine_s() -> None:
    """The columns the comparison with eager fills are named by the engine; the analysis module uses the same
    tuple (it imports it from the engine, to its left)."""
    from kpbench.analysis import runtime_accuracy
    from kpbench.engine import speed_accuracy, speed_table

    assert runtime_accuracy.RUNTIME_ACCURACY_COLUMNS is speed_accuracy.RUNTIME_ACCURACY_COLUMNS
    assert set(speed_accuracy.RUNTIME_ACCURACY_COLUMNS) <= set(speed_table.SPEED_COLUMNS)


def test_the_runtimes_import_none_of_their_libraries_until_used() -> None:
    """Importing the speed code and every runtime (and parsing runtimes) imports no torch, onnx, onnxruntime,
    tensorrt or ultralytics: they are optional extras, imported by the runtime that uses them."""
    code = (
        "import sys, json\n"
        "import kpbench.engine.speed, kpbench.runtimes.onnxruntime, kpbench.runtimes.tensorrt\n"
        "import kpbench.runtimes.compile, kpbench.runtimes.eager, kpbench.report.runtimes\n"
        "from kpbench.runtimes import get_runtime, parse_runtimes\n"
        "[get_runtime(s) for s in parse_runtimes(['eager', 'compile', 'onnxruntime:cuda', 'tensorrt'])]\n"
        "heavy = ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'ultralytics', 'pandas')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_onnxruntime_missing_skips_with_the_install_command(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Without onnxruntime (or onnx), its runtime says so with the command that installs the onnx extra."""
    from kpbench.core.install import install_hint
    from kpbench.runtimes import get_runtime
    from kpbench.runtimes.base import RuntimeUnavailable

    monkeypatch.setitem(sys.modules, module, None)  # `import onnxruntime` raises ImportError
    with pytest.raises(RuntimeUnavailable) as caught:
        get_runtime("onnxruntime:cpu").check(object(), "cpu")
    assert str(caught.value) == f"{module} is not installed ({install_hint('onnx')})"
