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
    "KpbenchError": "kpbench.errors",
    "KpbenchWarning": "kpbench.errors",
    "evaluate": "kpbench.evaluate",
    "EvalResult": "kpbench.evaluate",
    "compute_oks": "kpbench.oks",
    "keypoint_similarity": "kpbench.oks",
    "load_ground_truth": "kpbench.cocofiles",
    "load_results": "kpbench.cocofiles",
    "build_model": "kpbench.models",
    "set_input_size": "kpbench.models",
    "evaluate_run": "kpbench.runeval",
    "run": "kpbench.runner",
    "sweep_person_thresholds": "kpbench.thresholds",
    "sweep_keypoint_thresholds": "kpbench.thresholds",
    "thresholds_for_run": "kpbench.thresholds",
    "thresholds_for_files": "kpbench.thresholds",
    "run_speed": "kpbench.speed",
    "build_report": "kpbench.report",
    "draw_run_images": "kpbench.draw",
    "draw_image_files": "kpbench.draw",
    "plot_run": "kpbench.plots",
    "plot_speed": "kpbench.plots",
    "keypoints_for_run": "kpbench.keypoint_breakdown",
    "make_synthetic_coco": "kpbench.synthetic",
    "load_config": "kpbench.config",
    "merge_settings": "kpbench.config",
    "RunSettings": "kpbench.config",
    "SpeedSettings": "kpbench.config",
    "ThresholdSettings": "kpbench.config",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kpbench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["__version__", *_EXPORTS]
