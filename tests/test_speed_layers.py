"""The speed code and the runtimes keep to the data flow: they import no model adapter (the device and autocast
helpers come from kpbench.engine.device), nothing to their right at module level, and to their right only where a
speed table ends (its accuracy pass and the comparison with eager, lazily, in one module)."""

from __future__ import annotations

import ast
from pathlib import Path

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
