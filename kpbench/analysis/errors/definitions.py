"""The definitions of the error analysis: error classes, corrections, area ranges and OKS thresholds, and the two
modes (kpbench's definitions, coco-analyze's procedure) as one value, `ErrorMode`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kpbench.core.schema import KEYPOINT_MAX_DETS
from kpbench.evaluation.settings import EvalSettings

MATCH_OKS = 0.1
GOOD_KS = 0.85  # jitter's upper bound and its correction target
CORRECT_KS = 0.5  # the lowest ks a keypoint is localised at (miss below it); a miss's correction target

GOOD, JITTER, INVERSION, SWAP, MISS, UNCLASSIFIED = range(6)
NOT_LABELLED = -1  # keypoints the matched GT does not label: never classified, never corrected
ERROR_TYPES: tuple[str, ...] = ("good", "jitter", "inversion", "swap", "miss")
LABEL_OF = {name: code for code, name in enumerate(ERROR_TYPES)}

LOCALISATION_FIXES: tuple[str, ...] = ("miss", "swap", "inversion", "jitter")  # coco-analyze's order
CORRECTIONS: tuple[str, ...] = (*LOCALISATION_FIXES, "score", "background_fp", "background_fn")
COCO_ANALYZE_AREAS: tuple[tuple[str, float, float], ...] = (
    ("all", 32.0**2, 1e10), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10),
)  # fmt: skip
COCO_AREAS: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e10), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10),
)  # fmt: skip
AREA_LABELS: tuple[str, ...] = ("all", "medium", "large")
# coco-analyze's OKS thresholds, its Params.oksThrs literals (COCOeval's are np.linspace(0.5, 0.95, 10)).
COCO_ANALYZE_OKS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
SOFT_NMS_SIGMA = 0.5  # coco-analyze's soft-NMS: a score is multiplied by exp(-OKS² / 0.5)
# The OKS thresholds of each AP column, among COCOeval's ten (None: all ten, COCO's AP).
AP_COLUMNS: tuple[tuple[str, float | None], ...] = (("AP", None), ("AP50", 0.5), ("AP75", 0.75))
PR_PANELS: tuple[tuple[str, float | None], ...] = (("OKS 0.50", 0.5), ("OKS 0.75", 0.75), ("mean OKS 0.50:0.95", None))

KEYPOINTS_STEM = "errors_keypoints"
GAIN_STEM = "errors_ap_gain"
PR_FILE = "errors_pr_curves.png"
REPORT_FILE = "analyze.json"


@dataclass(frozen=True)
class ErrorMode:
    """kpbench's definitions (the default, `kpbench_mode`) or coco-analyze's procedure (`coco_analyze=True`,
    `coco_analyze_mode`)."""

    coco_analyze: bool = False

    @property
    def name(self) -> str:
        """"kpbench" or "coco-analyze" (what the files and notes call the mode)."""
        return "coco-analyze" if self.coco_analyze else "kpbench"

    @property
    def area_ranges(self) -> tuple[tuple[str, float, float], ...]:
        """(label, lo, hi) of all, medium and large."""
        return COCO_ANALYZE_AREAS if self.coco_analyze else COCO_AREAS

    @property
    def eval_settings(self) -> EvalSettings:
        """COCOeval's parameters of the re-evaluations (None: COCO's own, so that stats are pycocotools')."""
        if self.coco_analyze:
            return EvalSettings(area_ranges=COCO_ANALYZE_AREAS, iou_thresholds=COCO_ANALYZE_OKS)
        return EvalSettings()

    def analysis_sigmas(self, sigmas: np.ndarray) -> np.ndarray:
        """The sigmas of ks, the corrections and soft-NMS: the schema's, or in coco-analyze mode each written as
        a short decimal (15 significant digits), as coco-analyze's Params writes COCO's (.026 where pycocotools
        computes .26/10, one ulp apart). The re-evaluations keep the schema's."""
        sigmas = np.asarray(sigmas, dtype=np.float64)
        return np.asarray([float(f"{s:.15g}") for s in sigmas.tolist()]) if self.coco_analyze else sigmas

    def to_json(self) -> dict[str, Any]:
        """The definitions in force, as analyze.json records them."""
        if not self.coco_analyze:
            return {
                "mode": self.name, "match_oks": MATCH_OKS, "max_dets": KEYPOINT_MAX_DETS,
                "area_ranges": [list(r) for r in self.area_ranges], "good": "ks >= 0.85", "jitter": "0.5 <= ks < 0.85",
                "correction_targets": {"jitter": GOOD_KS, "miss": CORRECT_KS, "swap": 1.0, "inversion": 1.0},
                "score": "best OKS with the counted persons of the image",
                "background": f"unmatched at OKS {MATCH_OKS}",
            }
        return {
            "mode": self.name, "match_oks": MATCH_OKS, "max_dets": KEYPOINT_MAX_DETS,
            "area_ranges": [list(r) for r in self.area_ranges], "oks_thresholds": list(COCO_ANALYZE_OKS),
            "good": "ks > 0.85", "jitter": "0.5 <= ks < 0.85",
            "correction_targets": {"jitter": GOOD_KS**0.25, "miss": CORRECT_KS**0.25,
                                   "swap": "ks^(1/4)", "inversion": "ks^(1/4)"},
            "score": "best OKS with the persons counted in the area range, then soft-NMS (exp(-OKS^2/0.5))",
            "background": "unmatched at each OKS threshold, after the corrections before it",
        }


def localisation_fixes(flip: np.ndarray | None) -> tuple[str, ...]:
    """The keypoint corrections of an analysis, in coco-analyze's order: no inversion without flip pairs."""
    return tuple(f for f in LOCALISATION_FIXES if f != "inversion" or flip is not None)
