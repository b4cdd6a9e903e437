"""Why AP is lost: keypoint localisation errors, scoring errors and background errors, and what each one costs.

The error diagnosis of Ronchi & Perona, "Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation"
(ICCV 2017; their tool is coco-analyze), written from the paper, and coco-analyze's own procedure as a mode that
reproduces its numbers. `analyze_errors` (results) and `analyze_run_errors` (a run directory) are the entry points;
`write_error_files` writes what they found. The package, by role:

- `definitions`: the error classes, corrections, area ranges and thresholds, and the two modes (`ErrorMode`);
- `inputs`: the GT and the analysed detections as arrays (each image's top 20), and their loadRes areas;
- `classify`: each matched keypoint's class (good, jitter, inversion, swap, miss), by its best reference;
- `corrections`: the keypoints corrected, the optimal scores and coco-analyze's soft-NMS;
- `scoring`: the re-evaluations behind one interface (the vectorized evaluator, or pycocotools, the reference);
- `kpbench_mode` and `coco_analyze_mode`: the two procedures, from the matching to the evaluated steps;
- `result`: what an analysis found (`ErrorAnalysis`): counts, AP gains, AP per OKS threshold, PR curves;
- `analyze`: the entry points, notes and summary;
- `files`: the tables for people and the files written (and the table sections other analyses add).

Every name below is importable from `kpbench.analysis.errors`.
"""

from __future__ import annotations

from kpbench.analysis.errors.analyze import analyze_errors, analyze_run_errors
from kpbench.analysis.errors.classify import KeypointLabels, classify_keypoints
from kpbench.analysis.errors.corrections import correct_keypoints, optimal_scores, soft_nms_scores
from kpbench.analysis.errors.definitions import (
    AP_COLUMNS,
    AREA_LABELS,
    COCO_ANALYZE_AREAS,
    COCO_ANALYZE_OKS,
    COCO_AREAS,
    CORRECT_KS,
    CORRECTIONS,
    ERROR_TYPES,
    GAIN_STEM,
    GOOD,
    GOOD_KS,
    INVERSION,
    JITTER,
    KEYPOINTS_STEM,
    LOCALISATION_FIXES,
    MATCH_OKS,
    MISS,
    NOT_LABELLED,
    PR_FILE,
    PR_PANELS,
    REPORT_FILE,
    SOFT_NMS_SIGMA,
    SWAP,
    UNCLASSIFIED,
    ErrorMode,
)
from kpbench.analysis.errors.files import (
    COCO_ANALYZE_GAIN_NOTE,
    COCO_ANALYZE_KEYPOINTS_NOTE,
    GAIN_COLUMNS,
    GAIN_NOTE,
    KEYPOINTS_NOTE,
    count_columns,
    count_rows_percent,
    gain_rows_percent,
    section_files,
    section_rows_percent,
    table_sections,
    write_error_files,
)
from kpbench.analysis.errors.result import ErrorAnalysis
from kpbench.analysis.errors.scoring import EVALUATORS

__all__ = [
    "AP_COLUMNS", "AREA_LABELS", "COCO_ANALYZE_AREAS", "COCO_ANALYZE_GAIN_NOTE", "COCO_ANALYZE_KEYPOINTS_NOTE",
    "COCO_ANALYZE_OKS", "COCO_AREAS", "CORRECTIONS", "CORRECT_KS", "ERROR_TYPES", "EVALUATORS", "GAIN_COLUMNS",
    "GAIN_NOTE", "GAIN_STEM", "GOOD", "GOOD_KS", "INVERSION", "JITTER", "KEYPOINTS_NOTE", "KEYPOINTS_STEM",
    "LOCALISATION_FIXES", "MATCH_OKS", "MISS", "NOT_LABELLED", "PR_FILE", "PR_PANELS", "REPORT_FILE",
    "SOFT_NMS_SIGMA", "SWAP", "UNCLASSIFIED", "ErrorAnalysis", "ErrorMode", "KeypointLabels", "analyze_errors",
    "analyze_run_errors", "classify_keypoints", "correct_keypoints", "count_columns", "count_rows_percent",
    "gain_rows_percent", "optimal_scores", "section_files", "section_rows_percent", "soft_nms_scores",
    "table_sections", "write_error_files",
]  # fmt: skip
