"""Re-evaluation for the error analysis: one internal interface, `Scorer`, which scores arrays of detections
against the GT.

By default `kpbench.evaluation.vectorized.KeypointEvaluator` (pycocotools' numbers and matches bit for bit, on
arrays), or pycocotools itself (`evaluator="pycocotools"`, the reference: kpbench.evaluate on in-memory records; a
GT is made ignored by setting its num_keypoints to 0 on a copy, which pycocotools' _prepare turns into ignore
without changing any OKS, while it overwrites any 'ignore' key with iscrowd). Detection areas are what
pycocotools' loadRes sets: the box's w·h when the original results are read as boxes (the first has a 'bbox'),
else the extent of the corrected keypoints (coco-analyze mode: of the original ones). coco-analyze's background
step edits COCOeval's dtIgnore and gtIgnore after the matching and accumulates again; `accumulate_flagged` is
that accumulation (COCOeval.accumulate's operations, so the same floats), on the scorer's matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.analysis.errors.inputs import ErrorInputs, keypoint_boxes, top_detections
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import KEYPOINT_MAX_DETS
from kpbench.evaluation.settings import EvalSettings

if TYPE_CHECKING:
    from kpbench.evaluation.cocoeval import EvalResult
    from kpbench.evaluation.cocofiles import GroundTruth



@dataclass
class Scored:
    """One evaluation of an array of detections: COCOeval's arrays at the largest maxDet (areas in the order of
    the settings), and its stats where it was one COCOeval run."""

    precision: np.ndarray  # (T, R, A)
    recall: np.ndarray  # (T, A)
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class Matches:
    """COCOeval's matching of the analysed detections in the first area range of an evaluation (its "all"), at
    each of its T thresholds, in the analysis' indices. A match to a GT whose id is 0 is none (COCOeval's ids)."""

    dt_gt: np.ndarray  # (T, N) GT index matched, -1 for none
    dt_ignore: np.ndarray  # (T, N) COCOeval's dtIgnore
    gt_matched: np.ndarray  # (T, G) matched by some detection


def single_area_settings(area: tuple[str, float, float], thresholds: Sequence[float]) -> EvalSettings:
    """Settings of one area range (labelled "all": the range an evaluation's matches are read in)."""
    return EvalSettings(area_ranges=(("all", area[1], area[2]),), iou_thresholds=tuple(thresholds))


class Scorer:
    """Scores arrays of the analysed detections against the GT: the one re-evaluation function of the analysis.

    `score` gives COCOeval's arrays of the detections `keep` with the GTs `gt_ignore` made ignored; `match` gives
    COCOeval's matching; `max_oks` each detection's best OKS with some GTs. Two implementations:
    `_VectorizedScorer` (the default, `kpbench.evaluation.vectorized`, bit for bit pycocotools) and
    `_PycocotoolsScorer` (the reference). `dt_areas` fixes the detections' areas (what decides whether an
    unmatched detection is ignored in an area range); None: pycocotools' loadRes areas of each evaluation's
    records (their boxes' when the original results have them, else the evaluated keypoints' extent).
    """

    name = ""

    def __init__(self, data: ErrorInputs, settings: EvalSettings, dt_areas: np.ndarray | None = None) -> None:
        self.data = data
        self.settings = settings
        self.dt_areas = dt_areas if dt_areas is not None else data.box_areas
        self.runs = 0
        self._oks: tuple[Any, np.ndarray] | None = None

    def score(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              gt_ignore: np.ndarray | None = None, settings: EvalSettings | None = None) -> Scored:
        """COCOeval (`settings`, default the analysis') of the detections `keep` (all by default), `gt_ignore`
        GTs ignored."""
        raise NotImplementedError

    def match(self, keypoints: np.ndarray, scores: np.ndarray, settings: EvalSettings) -> Matches:
        """COCOeval's matching at every threshold of `settings`, in its first area range."""
        raise NotImplementedError

    def max_oks(self, keypoints: np.ndarray, counted: Sequence[np.ndarray]) -> list[np.ndarray]:
        """For each mask of `counted` ((G,) each), each detection's best OKS (pycocotools' computeOks values, bit
        for bit) with those GTs of its image; 0 where its image has none."""
        from kpbench.evaluation.vectorized import KeypointEvaluator

        if self._oks is None:
            evaluator = KeypointEvaluator(self.data.gt.dataset, self.data.schema.sigma_array,
                                          category_id=self.data.schema.category_id)
            self._oks = (evaluator, gt_positions(self.data, evaluator.gt_ann_ids))
        evaluator, to_ours = self._oks
        best = [np.zeros(len(keypoints)) for _ in counted]
        image = self.data.dt_image
        order = np.argsort(image, kind="stable")
        bounds = np.flatnonzero(np.diff(image[order])) + 1
        for rows in np.split(order, bounds) if len(order) else []:
            image_id = image[rows[0]]
            columns = to_ours[evaluator.image_gt_indices(image_id)]
            uses = [mask[columns] for mask in counted]
            if not any(use.any() for use in uses):
                continue
            oks = evaluator.oks(image_id, keypoints[rows])
            for out, use in zip(best, uses):
                if use.any():
                    out[rows] = oks[:, use].max(axis=1)
        return best


def gt_positions(data: ErrorInputs, gt_ann_ids: np.ndarray) -> np.ndarray:
    """The analysis' GT index (file order) of each GT annotation id of an evaluator's order."""
    position = {int(g): i for i, g in enumerate(data.gt_ids.tolist())}
    return np.asarray([position[int(g)] for g in gt_ann_ids], dtype=np.int64)


class _PycocotoolsScorer(Scorer):
    """pycocotools, through `kpbench.evaluate` on in-memory records (the reference)."""

    name = "pycocotools"

    def __init__(self, data: ErrorInputs, settings: EvalSettings, dt_areas: np.ndarray | None = None) -> None:
        super().__init__(data, settings, dt_areas)
        self._gt_index = {int(g): i for i, g in enumerate(data.gt_ids.tolist())}
        # The 'bbox' each record carries, where pycocotools' loadRes reads the detection's area from: the original
        # one when the original results were read that way (whichever record now comes first); with fixed areas
        # and no boxes in the results, the original keypoints' box, whose w·h is the keypoints' extent; else none.
        self._boxes = (data.dt_boxes if data.dt_boxes is not None
                       else keypoint_boxes(data.dt_keypoints) if dt_areas is not None else None)

    def _records(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None) -> list[dict[str, Any]]:
        """The detections `keep` as COCO keypoint results (made here only: pycocotools reads dicts)."""
        rows = range(len(scores)) if keep is None else np.flatnonzero(keep).tolist()
        flat = keypoints.reshape(len(keypoints), self.data.schema.result_length)
        image, category = self.data.dt_image.tolist(), self.data.dt_category.tolist()
        out = []
        for i in rows:
            record = {"image_id": image[i], "category_id": category[i], "keypoints": flat[i].tolist(),
                      "score": float(scores[i])}
            if self._boxes is not None:
                record["bbox"] = self._boxes[i].tolist()
            out.append(record)
        return out

    def _ground_truth(self, gt_ignore: np.ndarray | None) -> GroundTruth:
        from kpbench.evaluation.cocofiles import GroundTruth

        gt = self.data.gt
        if gt_ignore is None or not gt_ignore.any():
            return gt
        # pycocotools' _prepare overwrites an 'ignore' key with iscrowd, but reads num_keypoints == 0 as ignored;
        # OKS reads the keypoints' visibility, not num_keypoints, so nothing else changes.
        anns = [({**a, "num_keypoints": 0} if ignored else a)
                for a, ignored in zip(gt.dataset["annotations"], gt_ignore.tolist())]
        return GroundTruth(dataset={**gt.dataset, "annotations": anns}, source=gt.source, schema=gt.schema)

    def _evaluate(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None,
                  gt_ignore: np.ndarray | None, settings: EvalSettings) -> EvalResult:
        from kpbench.evaluation.cocoeval import evaluate
        from kpbench.evaluation.cocofiles import Results

        self.runs += 1
        results = Results(self._records(keypoints, scores, keep), source="corrected detections")
        return evaluate(self._ground_truth(gt_ignore), results, settings=settings, backend="pycocotools")

    def score(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              gt_ignore: np.ndarray | None = None, settings: EvalSettings | None = None) -> Scored:
        r = self._evaluate(keypoints, scores, keep, gt_ignore, settings or self.settings)
        return Scored(precision=r.precision[:, :, 0, :, -1], recall=r.recall[:, 0, :, -1], stats=dict(r.stats))

    def match(self, keypoints: np.ndarray, scores: np.ndarray, settings: EvalSettings) -> Matches:
        r = self._evaluate(keypoints, scores, None, None, settings)
        assert r.image_evals is not None  # pycocotools exposes them
        thresholds = len(r.params.iou_thresholds)
        dt_gt = np.full((thresholds, len(scores)), -1, dtype=np.int64)
        dt_ignore = np.ones((thresholds, len(scores)), dtype=bool)  # a detection cut by maxDets never counts
        gt_matched = np.zeros((thresholds, len(self.data.gt_ids)), dtype=bool)
        area = r.params.area_labels.index("all") if "all" in r.params.area_labels else 0
        for e in r.image_evals:
            if e.area_index != area:
                continue
            rows = e.dt_ids - 1  # pycocotools' 1-based positions in the records, all of them here
            for t in range(thresholds):
                matched = e.dt_matches[t] != 0
                dt_gt[t, rows[matched]] = [self._gt_index[int(g)] for g in e.dt_matches[t][matched]]
                dt_ignore[t, rows] = e.dt_ignore[t]
                gt_matched[t, [self._gt_index[int(g)] for g in e.gt_ids[e.gt_matches[t] != 0]]] = True
        return Matches(dt_gt=dt_gt, dt_ignore=dt_ignore, gt_matched=gt_matched)


class _VectorizedScorer(Scorer):
    """`kpbench.evaluation.vectorized.KeypointEvaluator`: pycocotools' numbers and matches, bit for bit, on
    arrays (no records, no re-parsing)."""

    name = "vectorized"

    def __init__(self, data: ErrorInputs, settings: EvalSettings, dt_areas: np.ndarray | None = None) -> None:
        super().__init__(data, settings, dt_areas)
        self._evaluators: dict[EvalSettings, Any] = {}
        # The evaluator's GT order (images by id, then file order) against ours (file order).
        self._to_ours = gt_positions(data, self._for(settings).gt_ann_ids)
        self._zero_id = data.gt_ids == 0

    def _for(self, settings: EvalSettings) -> Any:
        from kpbench.evaluation.vectorized import KeypointEvaluator

        if settings not in self._evaluators:
            self._evaluators[settings] = KeypointEvaluator(self.data.gt.dataset, self.data.schema.sigma_array,
                                                           settings, category_id=self.data.schema.category_id)
        return self._evaluators[settings]

    def _run(self, evaluator: Any, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None,
             gt_ignore: np.ndarray | None) -> Any:
        self.runs += 1
        rows = slice(None) if keep is None else np.flatnonzero(keep)
        areas = None if self.dt_areas is None else self.dt_areas[rows]
        ignore = None if gt_ignore is None else gt_ignore[self._to_ours]
        return evaluator.evaluate(self.data.dt_image[rows], keypoints[rows], scores[rows], gt_ignore=ignore,
                                  areas=areas)

    def score(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              gt_ignore: np.ndarray | None = None, settings: EvalSettings | None = None) -> Scored:
        r = self._run(self._for(settings or self.settings), keypoints, scores, keep, gt_ignore)
        return Scored(precision=r.precision[:, :, 0, :, -1], recall=r.recall[:, 0, :, -1], stats=dict(r.stats))

    def match(self, keypoints: np.ndarray, scores: np.ndarray, settings: EvalSettings) -> Matches:
        r = self._run(self._for(settings), keypoints, scores, None, None)
        local = r.dt_matches
        dt_gt = np.full(local.shape, -1, dtype=np.int64)
        hit = local >= 0
        dt_gt[hit] = self._to_ours[local[hit]]
        hit[hit] = self._zero_id[dt_gt[hit]]
        dt_gt[hit] = -1  # a match to GT id 0 reads as none in COCOeval's id arrays
        gt_matched = np.zeros((len(local), len(self.data.gt_ids)), dtype=bool)
        gt_matched[:, self._to_ours] = r.gt_matches >= 0
        return Matches(dt_gt=dt_gt, dt_ignore=r.dt_ignore.copy(), gt_matched=gt_matched)


EVALUATORS: tuple[str, ...] = ("vectorized", "pycocotools")


def make_scorer(name: str, data: ErrorInputs, settings: EvalSettings, dt_areas: np.ndarray | None = None) -> Scorer:
    if name == "vectorized":
        return _VectorizedScorer(data, settings, dt_areas)
    if name == "pycocotools":
        return _PycocotoolsScorer(data, settings, dt_areas)
    raise KpbenchError(f"evaluator: must be one of {', '.join(EVALUATORS)}, got {name!r}")


def accumulate_flagged(matches: Matches, scores: np.ndarray, dt_image: np.ndarray, gt_ignored: np.ndarray,
                        dt_flagged: np.ndarray, gt_flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate of one area range (precision (T, R), recall (T,)) after its matching, with more
    detections (`dt_flagged` (T, N)) and GTs (`gt_flagged` (T, G)) set ignored per threshold after the matching,
    as coco-analyze's background step edits evalImgs' dtIgnore and gtIgnore and accumulates again.
    `gt_ignored` (G,) is the range's own GT ignore flag (crowd, unlabelled, outside the range)."""
    recall_thresholds = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    thresholds = matches.dt_gt.shape[0]
    precision = -np.ones((thresholds, len(recall_thresholds)))
    recall = -np.ones(thresholds)
    # Evaluated: within each image's first maxDets (the matching's dtIgnore marks the others, never matched).
    evaluated = top_detections(dt_image, scores, KEYPOINT_MAX_DETS)
    if not len(evaluated) and not len(gt_ignored):
        return precision, recall
    # pycocotools' order: images by id, each by descending score, then a stable sort by descending score.
    order = evaluated[np.lexsort((evaluated, dt_image[evaluated], -scores[evaluated]))]
    matched = matches.dt_gt[:, order] >= 0
    ignored = (matches.dt_ignore | dt_flagged)[:, order]
    tp_sum = np.cumsum(matched & ~ignored, axis=1).astype(float)
    fp_sum = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    nd = len(order)
    for t in range(thresholds):
        npig = int(np.count_nonzero(~(gt_ignored | gt_flagged[t])))
        if npig == 0:
            continue
        tp, fp = tp_sum[t], fp_sum[t]
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        recall[t] = rc[-1] if nd else 0
        envelope = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
        inds = np.searchsorted(rc, recall_thresholds, side="left")
        inside = inds < nd
        q = np.zeros(len(recall_thresholds))
        q[inside] = envelope[inds[inside]]
        precision[t] = q
    return precision, recall
