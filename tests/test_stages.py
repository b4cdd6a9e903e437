"""The package keeps to its data flow: data -> models -> runs (the run directory's format) -> engine -> evaluation ->
analysis -> report, with core under everything and the sweep, the demo and the CLI on top. A module imports from
its own stage or a stage to its left; the few imports to the right are listed here, each with its reason, so that a
new one fails this test until it is either removed or argued for in this list."""

from __future__ import annotations

import ast
from pathlib import Path

import kpbench

PACKAGE = Path(kpbench.__file__).parent
# Left to right. `runs` is the run directory's format (layout, store, readers, writers), which the engine writes
# and the evaluation reads; `runtimes` execute a model's network for the engine. The sweep launches kpbench
# commands as jobs and imports only core, runtimes and runs; the report reads its folders (`report.sweeps`).
ORDER = ("core", "data", "models", "runtimes", "runs", "engine", "evaluation", "analysis", "sweep", "report",
         "demo", "cli", "__main__")

# (importing module, imported module prefix): why it may import to its right.
KNOWN_RIGHTWARD = {
    # The generic stage clock lives in the engine (the driver owns timing); adapters mark their stages with it.
    ("models/keypointrcnn_stages.py", "kpbench.engine.stages"): "stage clock",
    ("models/yolo.py", "kpbench.engine.stages"): "stage clock",
    # Names moved to kpbench.engine.device, kept importable from the adapter for old user code (lazy __getattr__).
    ("models/keypointrcnn.py", "kpbench.engine.device"): "moved names",
    # `kpbench run` is one session: the run, then its evaluation (`kpbench.run` returns the stats), as detectron2's
    # driver evaluates after inference; the protocol description and the GT check are the evaluation's own.
    ("engine/runner.py", "kpbench.evaluation.backends"): "session",
    ("engine/runner.py", "kpbench.evaluation.cocoeval"): "session",
    ("engine/runner.py", "kpbench.evaluation.person_boxes"): "session",
    ("engine/runner.py", "kpbench.evaluation.runeval"): "session",
    ("engine/runmanifest.py", "kpbench.evaluation.runeval"): "session",
    ("engine/planning.py", "kpbench.evaluation.cocofiles"): "session",
    ("engine/from_results.py", "kpbench.evaluation.cocofiles"): "session",
    ("engine/from_results.py", "kpbench.evaluation.runeval"): "session",
    # A speed table's `--accuracy` pass ends in an evaluation and the comparison with eager (tests/test_speed_layers).
    ("engine/speed_accuracy.py", "kpbench.evaluation.cocoeval"): "accuracy pass",
    ("engine/speed_accuracy.py", "kpbench.analysis.runtime_accuracy"): "accuracy pass",
    # The analyses' file writers draw their figure when asked (plot=True), lazily.
    ("analysis/breakdown.py", "kpbench.report.figures"): "figure",
    ("analysis/thresholds.py", "kpbench.report.figures"): "figure",
    ("analysis/errors/files.py", "kpbench.report.figures"): "figure",
}


def stage_of(module: str) -> str:
    """The stage of a dotted kpbench module name (its first component below kpbench)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[str]:
    """Every kpbench module the file imports, at any depth (lazy imports inside functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name.startswith("kpbench.")]


def test_no_stage_imports_to_its_right_but_the_listed_ones() -> None:
    rightward = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        own = relative.split("/")[0].removesuffix(".py")
        if own not in ORDER:
            continue  # kpbench/__init__.py: the lazy public names of every stage
        for module in imports(path):
            target = stage_of(module)
            if target in ORDER and ORDER.index(target) > ORDER.index(own):
                rightward.add((relative, module))
    unexplained = {pair for pair in rightward
                   if not any(pair[0] == mod and pair[1].startswith(prefix) for mod, prefix in KNOWN_RIGHTWARD)}
    assert unexplained == set()
    stale = {key for key in KNOWN_RIGHTWARD
             if not any(mod == key[0] and name.startswith(key[1]) for mod, name in rightward)}
    assert stale == set(), "listed imports that are gone: remove them from KNOWN_RIGHTWARD"


def test_no_stage_imports_a_model_adapter() -> None:
    """Only the models, the runtimes (which export a model) and the layers on top (the demo picks a model) name an
    adapter; every other stage goes through the model interfaces: kpbench.models.base, .registry, the top-down
    interface (.topdown, .crops) and the person-box sources (.person_boxes)."""
    interfaces = {"__init__", "base", "registry", "topdown", "crops"}
    adapters = {p.stem for p in (PACKAGE / "models").glob("*.py")} - interfaces
    assert {"keypointrcnn", "yolo", "mediapipe"} <= adapters
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.split("/")[0] in ("models", "runtimes", "demo.py", "cli", "__init__.py"):
            continue
        for module in imports(path):
            parts = module.split(".")
            if parts[:2] == ["kpbench", "models"] and len(parts) > 2 and parts[2] in adapters:
                offenders.append((relative, module))
    assert offenders == []
