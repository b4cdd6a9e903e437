"""kpbench.analysis.errors is a package split by role: each module stays small, none imports from a stage to its
right, and the names the callers use are importable from the package itself."""

from __future__ import annotations

import ast
from pathlib import Path

import kpbench.analysis.errors as errors

PACKAGE = Path(errors.__file__).parent
MAX_LINES = 500
ROLES = ("definitions", "inputs", "classify", "corrections", "scoring", "kpbench_mode", "coco_analyze_mode",
         "result", "analyze", "files")


def test_each_module_of_the_package_stays_under_500_lines() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == sorted(["__init__.py", *(f"{role}.py" for role in ROLES)])
    lengths = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.glob("*.py")}
    assert max(lengths.values()) <= MAX_LINES, lengths


def test_the_package_imports_no_stage_to_its_right_and_no_adapter() -> None:
    """analysis may import core, evaluation and itself (figures and the bootstrap lazily, for what they draw and
    resample); never the models, the engine or the report's tables."""
    allowed = ("kpbench.core", "kpbench.evaluation", "kpbench.analysis", "kpbench.runs", "kpbench.report.figures")
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kpbench"):
                assert node.module.startswith(allowed), f"{path.name} imports {node.module}"


def test_the_public_names_are_the_package_s() -> None:
    for name in errors.__all__:
        assert getattr(errors, name) is not None
    assert errors.analyze_errors.__module__ == "kpbench.analysis.errors.analyze"
    assert errors.write_error_files.__module__ == "kpbench.analysis.errors.files"
