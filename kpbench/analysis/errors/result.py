"""What an error analysis found (`ErrorAnalysis`), built from its evaluated steps: the counts per keypoint and
class, the AP of each correction and its gain, AP and recall per OKS threshold, PR curves and the background sets.

Hooks: other analyses add JSON-ready sections to `ErrorAnalysis.extra` (name -> data); analyze.json carries them
under their names (see `kpbench.analysis.errors.files` for the sections that are tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.analysis.errors.classify import KeypointLabels
from kpbench.analysis.errors.definitions import (
    AP_COLUMNS,
    AREA_LABELS,
    ERROR_TYPES,
    LABEL_OF,
    NOT_LABELLED,
    PR_PANELS,
    UNCLASSIFIED,
    ErrorMode,
)
from kpbench.analysis.errors.inputs import ErrorInputs
from kpbench.analysis.errors.scoring import Scored
from kpbench.core.schema import KeypointSchema

if TYPE_CHECKING:
    from kpbench.evaluation.cocofiles import CheckedDetections, GroundTruth, Results



@dataclass
class ErrorAnalysis:
    """What `analyze_errors` found: keypoint error counts, the AP each correction gains, PR curves, notes."""

    mode: ErrorMode
    schema: KeypointSchema
    counts: list[dict[str, Any]]  # one row per keypoint, then "all"
    ap_gain: list[dict[str, Any]]  # one row per (how, correction, area)
    pr_curves: dict[str, Any]  # {"recall": [...], "curves": {step: {panel: [...]}}}
    baseline: dict[str, float]  # the uncorrected stats (COCOeval's, with the mode's area ranges)
    summary: dict[str, Any]
    notes: list[str]
    labels: KeypointLabels
    pairs: np.ndarray  # (P, 2) analysed detection index, GT index (file order of the GT annotations)
    detections: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) results position of each
    # AP (COCOeval's mean over the recall points) and recall at each OKS threshold, per step and area range:
    # {"oks": [...], "rows": [{"how", "correction", "area", "AP": [...], "recall": [...]}]}.
    ap_by_oks: dict[str, Any] = field(default_factory=dict)
    # Background false positives and false negatives, counted per (how, area, OKS): rows for analyze.json.
    background: list[dict[str, Any]] = field(default_factory=list)
    # The sets behind them, {(how, area): (fp (T, N), fn (T, G))} over the analysed detections and the GT
    # annotations, and the corrected scores of the score steps, {(how, area): (N,)}.
    background_sets: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    optimal_scores: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)
    intervals: list[dict[str, Any]] | None = None  # bootstrap intervals on the plain evaluation's stats
    # Hooks for other analyses (sensitivity tables, the LRP-optimal threshold, ...): JSON-ready sections.
    extra: dict[str, Any] = field(default_factory=dict)
    # The validated inputs, for analyses that add sections.
    inputs: tuple[GroundTruth, Results | CheckedDetections] | None = field(default=None, repr=False)

    @property
    def error_types(self) -> tuple[str, ...]:
        """The error columns of this analysis (no inversion without flip pairs)."""
        return tuple(t for t in ERROR_TYPES if t != "inversion" or self.schema.flip_pairs)

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-ready data (what analyze.json holds)."""
        return {
            "settings": {**self.mode.to_json(), "schema": self.schema.name, "error_types": list(self.error_types)},
            "mode": self.mode.name,
            "notes": list(self.notes),
            "summary": dict(self.summary),
            "baseline": dict(self.baseline),
            "intervals": self.intervals,
            "keypoints": self.counts,
            "ap_gain": self.ap_gain,
            "ap_by_oks": self.ap_by_oks,
            "background": self.background,
            "pr_curves": self.pr_curves,
            **self.extra,
        }


def _mean_valid(values: np.ndarray) -> float:
    """COCOeval summarize()'s mean over the entries that are not -1 (no GT), or -1 when none is."""
    valid = values[values > -1]
    return -1.0 if valid.size == 0 else float(np.mean(valid))


def _area_aps(scored: Scored, thresholds: np.ndarray) -> dict[str, dict[str, float]]:
    """{area: {"AP": ..., "AP50": ..., "AP75": ...}} from the precision array, as summarize() averages it."""
    out = {}
    for a, area in enumerate(AREA_LABELS):
        row = {}
        for name, t in AP_COLUMNS:
            s = scored.precision if t is None else scored.precision[np.where(t == thresholds)[0]]
            row[name] = _mean_valid(s[:, :, a])
        out[area] = row
    return out


def _pr_curves(scored: Scored, thresholds: np.ndarray) -> dict[str, list[float]]:
    """Interpolated precision at each of COCO's 101 recall points, area "all": at OKS 0.5, 0.75, and the mean
    over the ten thresholds (whose mean over recall is AP). Empty where there is no GT."""
    precision = scored.precision[:, :, 0]
    if (precision < 0).all():
        return {label: [] for label, _ in PR_PANELS}
    return {label: (precision.mean(axis=0) if t is None else precision[int(np.flatnonzero(t == thresholds)[0])]).tolist()
            for label, t in PR_PANELS}


def count_rows(labels: np.ndarray, schema: KeypointSchema, types: Sequence[str],
               unclassified: bool) -> list[dict[str, Any]]:
    """One row per keypoint, then "all": the count of each class (`types`, and "unclassified" when asked) among
    the labelled keypoints, and its fraction (None where no such keypoint is labelled)."""
    columns = [*types, *(("unclassified",) if unclassified else ())]
    codes = [LABEL_OF.get(t, UNCLASSIFIED) for t in columns]

    def row(name: str, values: np.ndarray) -> dict[str, Any]:
        n = int((values != NOT_LABELLED).sum())
        out: dict[str, Any] = {"keypoint": name, "n": n}
        for column, code in zip(columns, codes):
            out[column] = int((values == code).sum())
        for column in columns:
            out[f"frac_{column}"] = out[column] / n if n else None  # no such keypoint labelled
        return out

    rows = [row(name, labels[:, j]) for j, name in enumerate(schema.keypoint_names)]
    rows.append(row("all", labels))
    return rows


def _gain_rows(steps: Sequence[Step], base: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per step and area range: AP, AP50, AP75 and the gain over the baseline (or the step's own
    reference)."""
    rows = []
    for step in steps:
        reference = step.reference_aps or base
        for area in AREA_LABELS:
            row: dict[str, Any] = {"how": step.how, "correction": step.name, "area": area}
            for column, _ in AP_COLUMNS:
                value, before = step.aps[area][column], reference[area][column]
                row[column] = value
                row[f"gain_{column}"] = value - before if value > -1 and before > -1 else None
            rows.append(row)
    return rows


@dataclass
class Step:
    """One evaluated correction: its precision (T, R, A) and recall (T, A) over AREA_LABELS."""

    how: str  # "baseline", "alone" or "cumulative"
    name: str
    scored: Scored
    thresholds: np.ndarray
    reference: Step | None = None  # the step its gain is measured from (None: the baseline)

    @property
    def aps(self) -> dict[str, dict[str, float]]:
        return _area_aps(self.scored, self.thresholds)

    @property
    def reference_aps(self) -> dict[str, dict[str, float]] | None:
        return None if self.reference is None else self.reference.aps


def _ap_by_oks(steps: Sequence[Step], thresholds: np.ndarray) -> dict[str, Any]:
    """AP (the mean of the valid interpolated precisions) and recall at each threshold, per step and area."""
    rows = []
    for step in steps:
        for a, area in enumerate(AREA_LABELS):
            rows.append({"how": step.how, "correction": step.name, "area": area,
                         "AP": [_mean_valid(step.scored.precision[t, :, a]) for t in range(len(thresholds))],
                         "recall": [float(v) for v in step.scored.recall[:, a]]})
    return {"oks": [float(t) for t in thresholds], "rows": rows}


def _background_rows(sets: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
                     thresholds: Sequence[float]) -> list[dict[str, Any]]:
    return [{"how": how, "area": area, "oks": float(t), "fp": int(fp[i].sum()), "fn": int(fn[i].sum())}
            for (how, area), (fp, fn) in sets.items() for i, t in enumerate(thresholds)]


def build_analysis(data: ErrorInputs, steps: list[Step], thresholds: np.ndarray, labels: KeypointLabels,
                   pair_dt: np.ndarray, pair_gt: np.ndarray, background_fp: int, background_fn: int,
                   background_sets: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
                   background_oks: Sequence[float], optimal_scores: dict[tuple[str, str], np.ndarray]) -> ErrorAnalysis:
    """The analysis from its evaluated steps (the first is the baseline); `analyze_errors` fills in the mode, the
    notes, the counts and the summary."""
    base = steps[0]
    recall = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)  # COCOeval's recThrs
    curves = {"original": _pr_curves(base.scored, thresholds),
              **{s.name: _pr_curves(s.scored, thresholds) for s in steps if s.how == "cumulative"}}
    return ErrorAnalysis(
        mode=ErrorMode(), schema=data.schema, counts=[], ap_gain=_gain_rows(steps, base.aps),
        pr_curves={"recall": recall.tolist(), "panels": [p for p, _ in PR_PANELS], "curves": curves},
        baseline=dict(base.scored.stats), summary={"num_background_fp": background_fp,
                                                   "num_background_fn": background_fn},
        notes=[], labels=labels,
        pairs=np.stack([pair_dt, pair_gt], axis=1) if len(pair_dt) else np.zeros((0, 2), np.int64),
        ap_by_oks=_ap_by_oks(steps, thresholds), background=_background_rows(background_sets, background_oks),
        background_sets=background_sets, optimal_scores=optimal_scores, detections=data.dt_result,
    )
