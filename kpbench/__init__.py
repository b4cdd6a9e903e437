"""kpbench: evaluate and benchmark COCO keypoint (human pose) models.

The library is importable without torch. Heavy modules are loaded on first use, so `from kpbench import
evaluate` is as cheap as the evaluation itself.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names and the module that defines each; resolved lazily (PEP 562).
_EXPORTS: dict[str, str] = {
    "KpbenchError": "kpbench.core.errors",
    "KpbenchWarning": "kpbench.core.errors",
    "evaluate": "kpbench.evaluation.cocoeval",
    "EvalResult": "kpbench.evaluation.cocoeval",
    "compute_oks": "kpbench.evaluation.oks",
    "keypoint_similarity": "kpbench.evaluation.oks",
    "load_ground_truth": "kpbench.evaluation.cocofiles",
    "load_results": "kpbench.evaluation.cocofiles",
    "build_model": "kpbench.models.keypointrcnn",
    "set_input_size": "kpbench.models.keypointrcnn",
    "evaluate_run": "kpbench.evaluation.runeval",
    "run": "kpbench.engine.runner",
    "read_run_arrays": "kpbench.runs.arrays",
    "write_coco_results": "kpbench.runs.results",
    "export_run": "kpbench.runs.results",
    "sweep_person_thresholds": "kpbench.analysis.thresholds",
    "sweep_keypoint_thresholds": "kpbench.analysis.thresholds",
    "thresholds_for_run": "kpbench.analysis.thresholds",
    "thresholds_for_files": "kpbench.analysis.thresholds",
    "run_speed": "kpbench.engine.speed",
    "build_report": "kpbench.report.tables",
    "draw_run_images": "kpbench.report.draw",
    "draw_image_files": "kpbench.report.draw",
    "plot_run": "kpbench.report.run_outputs",
    "analyse_run": "kpbench.report.run_outputs",
    "plot_speed": "kpbench.report.figures",
    "keypoints_for_run": "kpbench.analysis.breakdown",
    "make_synthetic_coco": "kpbench.data.synthetic",
    "load_config": "kpbench.core.config",
    "merge_settings": "kpbench.core.config",
    "RunSettings": "kpbench.core.config",
    "SpeedSettings": "kpbench.core.config",
    "ThresholdSettings": "kpbench.core.config",
    "KeypointSchema": "kpbench.core.schema",
    "COCO17": "kpbench.core.schema",
    "get_schema": "kpbench.core.schema",
    "EvalSettings": "kpbench.evaluation.settings",
    "evaluate_wholebody": "kpbench.evaluation.wholebody",
    "bootstrap_intervals": "kpbench.analysis.bootstrap",
    "analyze_errors": "kpbench.analysis.errors",
    "analyze_run_errors": "kpbench.analysis.errors",
    "diagnose": "kpbench.analysis.diagnose",
    "diagnose_run": "kpbench.analysis.diagnose",
    "compare_runs": "kpbench.analysis.bootstrap",
    "write_html": "kpbench.report.html",
    "run_from_results": "kpbench.engine.from_results",
    "PoseModel": "kpbench.models.base",
    "Predictions": "kpbench.models.base",
    "load_model": "kpbench.models.registry",
    "keypoint_ap": "kpbench.analysis.keypoint_ap",
    "run_demo": "kpbench.demo",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kpbench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["__version__", *_EXPORTS]
