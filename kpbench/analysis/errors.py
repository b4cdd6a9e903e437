"""Why AP is lost: keypoint localisation errors, scoring errors and background errors, and what each one costs.

The error diagnosis of Ronchi & Perona, "Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation"
(ICCV 2017; their tool is coco-analyze), written here from the paper and the definitions below.

**Matching.** Detections are matched to the GT persons by COCOeval's own greedy matching (pycocotools'
evaluateImg) at OKS 0.1, area "all", maxDets 20: only each image's top 20 detections by score (COCOeval's stable
order) are analysed, and everything below, the corrections and the re-evaluations included, works on them alone.

**Localisation errors.** For each detection matched to a counted GT g (not crowd, with labelled keypoints) and
each keypoint j labelled in g (v > 0), the keypoint similarity ks = exp(-e), e = d² / ((2σ_j)² · 2 · (area + eps))
(the OKS term, `kpbench.evaluation.oks`), is computed against four references: (a) g's keypoint j; (b) g flipped,
g's keypoint flip(j) (the schema's flip pairs; a keypoint without a partner, such as the nose, is its own);
(c) every other annotation g' of the image, keypoint j, with g''s own area and visibility (an unlabelled reference
keypoint gives ks 0); (d) every other annotation flipped. The best reference (highest ks; a tie goes to (a), then
(b), then the others) labels the keypoint:

    good       best is (a), ks >= 0.85          jitter  best is (a), 0.5 <= ks < 0.85
    inversion  best is (b), ks >= 0.5           swap    best is (c) or (d), ks >= 0.5
    miss       best ks < 0.5

Flipped references use keypoint j's sigma (left/right partners share their sigma in every built-in schema). A
schema without flip pairs has no inversions: references (b) and (d) are not formed, the counts and the gains
have no inversion column or row, and a note says so.

**Corrections** (on copies of the detections; keypoint scores untouched; only keypoints labelled in the matched
GT): a jitter is moved along the line towards g_j until ks = 0.85, a miss until ks = 0.5; an inversion and a swap
are moved onto g_j (ks = 1). Score errors: each analysed detection's score becomes its maximum OKS with the GT
persons of its image that COCOeval counts (not crowd, with labelled keypoints; OKS with a crowd region or an
unlabelled person is a box test, not a pose similarity); a detection without one gets 0. Background errors: the
false positives (detections not matched at OKS 0.1) are removed, and the false negatives (counted GT persons that
no detection matched at OKS 0.1) become ignored. The classification and the background sets come from the
original detections. Each correction is scored alone and cumulatively (miss, + swap, + inversion, + jitter,
+ score, + background FP, + background FN); the score fix of the cumulative sequence rescores the corrected
keypoints. AP, AP50 and AP75 are reported per area range, and the gain over the uncorrected detections.

**Differences from coco-analyze's code**, settled here (`coco_analyze=True` reproduces coco-analyze's numbers):

- Area "all" is COCOeval's [0, 1e10] here; coco-analyze's is [32², 1e10], so its "all" leaves small persons out.
  Medium is [32², 96²] and large [96², 1e10] in both.
- Only each image's top 20 detections are analysed (COCOeval's maxDets), in both.
- Good is ks >= 0.85 here; coco-analyze tests good as ks > 0.85 and jitter as ks < 0.85, so a similarity of
  exactly 0.85 falls in no class there (counted as "unclassified" and left uncorrected in that mode).
- A tie between references goes to the matched person, so the nose (its own partner) is never an inversion.
- A swap is scored against every other annotation of the image, each with its own area and visibility.
- coco-analyze's corrections use σ² where ks uses (2σ)², so they move keypoints further than the stated
  targets: its jitter correction ends at ks 0.85^(1/4) = 0.960 and its miss correction at 0.5^(1/4) = 0.841.
  Here they land exactly on 0.85 and 0.5 (up to the rounding of the geometry).
- coco-analyze's report corrects cumulatively (miss, swap, inversion, jitter, then score, then background);
  here each correction is also scored alone.

Re-evaluation goes through one internal interface, `_Scorer`, which scores arrays of detections against the GT:
by default `kpbench.evaluation.vectorized.KeypointEvaluator` (pycocotools' numbers and matches bit for bit, on
arrays), or pycocotools itself (`evaluator="pycocotools"`, the reference: kpbench.evaluate on in-memory records;
a GT is made ignored by setting its num_keypoints to 0 on a copy, which pycocotools' _prepare turns into ignore
without changing any OKS, while it overwrites any 'ignore' key with iscrowd). Detection areas are what
pycocotools' loadRes sets: the box's w·h when the original results are read as boxes (the first has a 'bbox'),
else the extent of the corrected keypoints.

Hooks: other analyses add JSON-ready sections to `ErrorAnalysis.extra` (name -> data); analyze.json carries them
under their names. A section with a "rows" list (and optional "title", "note", "columns") is a table: it is
written as NAME.csv/.md/.json and printed by `kpbench analyze` (`kpbench.analysis.diagnose` adds the sensitivity
and score-threshold tables this way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import KEYPOINT_MAX_DETS, KeypointSchema
from kpbench.evaluation.oks import paired_keypoint_similarity
from kpbench.evaluation.settings import EvalSettings

if TYPE_CHECKING:
    from kpbench.evaluation.cocoeval import EvalResult
    from kpbench.evaluation.cocofiles import GroundTruth, Results

# --- definitions -------------------------------------------------------------------------------------------------

MATCH_OKS = 0.1
GOOD_KS = 0.85  # jitter's upper bound and its correction target
CORRECT_KS = 0.5  # the lowest ks a keypoint is localised at (miss below it); a miss's correction target

GOOD, JITTER, INVERSION, SWAP, MISS, UNCLASSIFIED = range(6)
NOT_LABELLED = -1  # keypoints the matched GT does not label: never classified, never corrected
ERROR_TYPES: tuple[str, ...] = ("good", "jitter", "inversion", "swap", "miss")
_LABEL_OF = {name: code for code, name in enumerate(ERROR_TYPES)}

LOCALISATION_FIXES: tuple[str, ...] = ("miss", "swap", "inversion", "jitter")  # coco-analyze's order
CORRECTIONS: tuple[str, ...] = (*LOCALISATION_FIXES, "score", "background_fp", "background_fn")
COCO_ANALYZE_AREAS: tuple[tuple[str, float, float], ...] = (
    ("all", 32.0**2, 1e10), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10),
)  # fmt: skip
COCO_AREAS: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e10), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10),
)  # fmt: skip
AREA_LABELS: tuple[str, ...] = ("all", "medium", "large")
# The OKS thresholds of each AP column, among COCOeval's ten (None: all ten, COCO's AP).
AP_COLUMNS: tuple[tuple[str, float | None], ...] = (("AP", None), ("AP50", 0.5), ("AP75", 0.75))
PR_PANELS: tuple[tuple[str, float | None], ...] = (("OKS 0.50", 0.5), ("OKS 0.75", 0.75), ("mean OKS 0.50:0.95", None))

KEYPOINTS_STEM = "errors_keypoints"
GAIN_STEM = "errors_ap_gain"
PR_FILE = "errors_pr_curves.png"
REPORT_FILE = "analyze.json"


@dataclass(frozen=True)
class ErrorMode:
    """kpbench's definitions (the default) or coco-analyze's (`coco_analyze=True`): area ranges, the 0.85
    boundary and how far the jitter and miss corrections move a keypoint."""

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
        return EvalSettings(area_ranges=COCO_ANALYZE_AREAS) if self.coco_analyze else EvalSettings()

    def sigma_factor(self, sigmas: np.ndarray) -> np.ndarray:
        """The per-keypoint variance the corrections solve for: (2σ)², the one ks uses, or coco-analyze's σ²."""
        return sigmas**2 if self.coco_analyze else (sigmas * 2) ** 2

    def to_json(self) -> dict[str, Any]:
        """The definitions in force, as analyze.json records them."""
        return {
            "mode": self.name,
            "match_oks": MATCH_OKS,
            "max_dets": KEYPOINT_MAX_DETS,
            "area_ranges": [list(r) for r in self.area_ranges],
            "good": "ks > 0.85" if self.coco_analyze else "ks >= 0.85",
            "jitter": "0.5 <= ks < 0.85",
            "correction_targets": ({"jitter": GOOD_KS**0.25, "miss": CORRECT_KS**0.25} if self.coco_analyze
                                   else {"jitter": GOOD_KS, "miss": CORRECT_KS}),
        }


# --- GT and detections as arrays ---------------------------------------------------------------------------------


@dataclass
class _Data:
    """The validated inputs as arrays: GT persons (G) and the analysed detections (N, each image's top 20)."""

    gt: GroundTruth
    schema: KeypointSchema
    gt_ids: np.ndarray  # (G,)
    gt_image: np.ndarray  # (G,)
    gt_keypoints: np.ndarray  # (G, K, 3)
    gt_boxes: np.ndarray  # (G, 4)
    gt_areas: np.ndarray  # (G,)
    gt_counted: np.ndarray  # (G,) not crowd and num_keypoints > 0: what COCOeval does not ignore by itself
    records: list[dict[str, Any]]  # (N,) the analysed result records, in results order
    dt_image: np.ndarray  # (N,)
    dt_keypoints: np.ndarray  # (N, K, 3)
    dt_scores: np.ndarray  # (N,)
    # Each analysed detection's area as pycocotools' loadRes sets it when it reads the results as boxes (the
    # first result has a 'bbox'), else None: areas then come from the (corrected) keypoints' extent.
    box_areas: np.ndarray | None
    num_results: int
    crowded_images: int  # images with more than maxDets detections


def _top_detections(image: np.ndarray, scores: np.ndarray, max_dets: int) -> np.ndarray:
    """Positions (ascending) of each image's top `max_dets` detections in COCOeval's order: by descending score,
    equal scores in results order (its stable mergesort on -score)."""
    order = np.lexsort((-scores, image))  # lexsort is stable: equal keys keep results order
    sorted_image = image[order]
    first = np.searchsorted(sorted_image, sorted_image, side="left")
    rank = np.arange(len(order)) - first
    return np.sort(order[rank < max_dets])


def _prepare(gt: GroundTruth, res: Results) -> _Data:
    from kpbench.evaluation.cocofiles import loadres_takes_box

    schema = gt.schema
    if schema is None:  # load_ground_truth for keypoints always sets one
        raise KpbenchError(f"{gt.source}: no keypoint schema")
    if schema.protocol != "coco":
        raise KpbenchError(f"the {schema.name} schema's own protocol ({schema.protocol}) is not COCOeval's: the "
                           "error analysis follows COCOeval's keypoint matching only")
    categories = gt.dataset["categories"]
    if len(categories) != 1:
        raise KpbenchError(f"{gt.source}: {len(categories)} categories; the error analysis scores one keypoint "
                           "category (evaluate each category's GT on its own)")
    k = schema.num_keypoints
    anns = gt.dataset["annotations"]
    gt_keypoints = np.asarray([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), k, 3)
    records = res.results
    scores = np.asarray([r["score"] for r in records], dtype=np.float64)
    image = np.asarray([r["image_id"] for r in records], dtype=np.int64)
    kept = _top_detections(image, scores, KEYPOINT_MAX_DETS)
    counts = np.bincount(np.unique(image, return_inverse=True)[1]) if len(image) else np.zeros(0, np.int64)
    kept_records = [records[i] for i in kept.tolist()]
    return _Data(
        gt=gt,
        schema=schema,
        gt_ids=np.asarray([a["id"] for a in anns], dtype=np.int64),
        gt_image=np.asarray([a["image_id"] for a in anns], dtype=np.int64),
        gt_keypoints=gt_keypoints,
        gt_boxes=np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(len(anns), 4),
        gt_areas=np.asarray([a["area"] for a in anns], dtype=np.float64),
        # pycocotools' _prepare: ignore = iscrowd, then for keypoints num_keypoints == 0 or ignore.
        gt_counted=np.asarray([not a["iscrowd"] and a["num_keypoints"] != 0 for a in anns], dtype=bool),
        records=kept_records,
        dt_image=image[kept],
        dt_keypoints=np.asarray([r["keypoints"] for r in kept_records], dtype=np.float64).reshape(len(kept), k, 3),
        dt_scores=scores[kept],
        box_areas=(np.asarray([float(r["bbox"][2]) * float(r["bbox"][3]) for r in kept_records], dtype=np.float64)
                   if records and loadres_takes_box(records[0]) else None),
        num_results=len(records),
        crowded_images=int((counts > KEYPOINT_MAX_DETS).sum()),
    )


class _ImageIndex:
    """Each image's GT persons (a subset of them, by mask), as slots: slot s of a query is the s-th GT of its
    image, so that a loop over slots (at most the largest number of persons per image) is vectorised over all
    queries and keypoints."""

    def __init__(self, gt_image: np.ndarray, mask: np.ndarray | None = None) -> None:
        members = np.flatnonzero(mask) if mask is not None else np.arange(len(gt_image))
        self.order = members[np.argsort(gt_image[members], kind="stable")]
        self.sorted_image = gt_image[self.order]

    def slots(self, query_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) into `order` for each query's image."""
        start = np.searchsorted(self.sorted_image, query_image, side="left")
        end = np.searchsorted(self.sorted_image, query_image, side="right")
        return start, end - start


def _flip_index(schema: KeypointSchema) -> np.ndarray | None:
    """flip(j) for every keypoint (a keypoint without a partner is its own), or None without flip pairs."""
    if not schema.flip_pairs:
        return None
    flip = np.arange(schema.num_keypoints)
    for a, b in schema.flip_pairs:
        flip[a], flip[b] = b, a
    return flip


def _labelled_similarity(ref: np.ndarray, boxes: np.ndarray, areas: np.ndarray, dt: np.ndarray,
                         sigmas: np.ndarray) -> np.ndarray:
    """ks (P, K) of detections against aligned reference persons; 0 where the reference keypoint is unlabelled."""
    ks, _ = paired_keypoint_similarity(ref, boxes, areas, dt, sigmas)
    return np.where(ref[..., 2] > 0, ks, 0.0)


# --- classification ----------------------------------------------------------------------------------------------


@dataclass
class KeypointLabels:
    """The class of every keypoint of every matched pair, and the similarities it was decided by."""

    labels: np.ndarray  # (P, K) int8: GOOD ... MISS, UNCLASSIFIED, NOT_LABELLED
    ks_matched: np.ndarray  # (P, K) ks to the matched GT's own keypoint (reference a)
    ks_best: np.ndarray  # (P, K) ks to the best reference
    best_reference: np.ndarray  # (P, K) 0: matched (a), 1: matched flipped (b), 2: another person (c or d)


def classify_keypoints(
    dt_keypoints: np.ndarray,
    matched: np.ndarray,
    gt_keypoints: np.ndarray,
    gt_boxes: np.ndarray,
    gt_areas: np.ndarray,
    gt_image: np.ndarray,
    sigmas: np.ndarray,
    flip: np.ndarray | None,
    strict_good: bool = False,
) -> KeypointLabels:
    """Label each keypoint of P detections (P, K, 3), detection p matched to GT `matched[p]` (an index into the
    G GT arrays, all annotations of the images), as good, jitter, inversion, swap or miss (module docstring).

    `flip` is flip(j) per keypoint (None: no inversions). `strict_good` is coco-analyze's boundary: good is
    ks > 0.85, and ks exactly 0.85 is UNCLASSIFIED.
    """
    matched = np.asarray(matched, dtype=np.int64)
    ref = gt_keypoints[matched]
    boxes, areas = gt_boxes[matched], gt_areas[matched]
    labelled = ref[..., 2] > 0
    ks_a = _labelled_similarity(ref, boxes, areas, dt_keypoints, sigmas)
    ks_b = (_labelled_similarity(ref[:, flip], boxes, areas, dt_keypoints, sigmas) if flip is not None
            else np.full(ks_a.shape, -np.inf))
    ks_other = np.full(ks_a.shape, -np.inf)
    index = _ImageIndex(gt_image)
    image = gt_image[matched]
    start, count = index.slots(image)
    for s in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > s)
        others = index.order[start[rows] + s]
        rows, others = rows[others != matched[rows]], others[others != matched[rows]]
        if not len(rows):
            continue
        other_ref = gt_keypoints[others]
        for candidate in (other_ref, other_ref[:, flip]) if flip is not None else (other_ref,):
            ks = _labelled_similarity(candidate, gt_boxes[others], gt_areas[others], dt_keypoints[rows], sigmas)
            ks_other[rows] = np.maximum(ks_other[rows], ks)
    is_a = (ks_a >= ks_b) & (ks_a >= ks_other)  # ties to the matched person
    is_b = ~is_a & (ks_b >= ks_other)  # then to its flip
    best = np.where(is_a, ks_a, np.where(is_b, ks_b, ks_other))
    reference = np.where(is_a, 0, np.where(is_b, 1, 2)).astype(np.int8)
    labels = np.full(ks_a.shape, SWAP, dtype=np.int8)
    labels[is_b] = INVERSION
    good = ks_a > GOOD_KS if strict_good else ks_a >= GOOD_KS
    labels[is_a & good] = GOOD
    labels[is_a & (ks_a < GOOD_KS)] = JITTER
    if strict_good:
        labels[is_a & (ks_a == GOOD_KS)] = UNCLASSIFIED
    labels[best < CORRECT_KS] = MISS
    labels[~labelled] = NOT_LABELLED
    return KeypointLabels(labels=labels, ks_matched=ks_a, ks_best=best, best_reference=reference)


# --- corrections --------------------------------------------------------------------------------------------------


def correct_keypoints(
    dt_keypoints: np.ndarray,
    labels: np.ndarray,
    gt_keypoints: np.ndarray,
    gt_areas: np.ndarray,
    sigmas: np.ndarray,
    fixes: Sequence[str],
    mode: ErrorMode | None = None,
) -> np.ndarray:
    """A corrected copy of P matched detections (P, K, 3) for the error types in `fixes` ("miss", "swap",
    "inversion", "jitter"), against the matched GT persons aligned with them (gt_keypoints (P, K, 3), gt_areas
    (P,)). Keypoint scores (the third column) and unlisted keypoints are unchanged.

    A jitter (miss) keypoint moves along the line towards the GT keypoint to the distance r at which
    ks = exp(-r² / (v · 2 · (area + eps))) = 0.85 (0.5), v = (2σ)²; coco-analyze's v = σ² lands at the fourth
    root of the target. An inversion or a swap moves onto the GT keypoint.
    """
    mode = mode or ErrorMode()
    unknown = set(fixes) - set(LOCALISATION_FIXES)
    if unknown:
        raise KpbenchError(f"unknown keypoint correction(s) {sorted(unknown)}; known: {', '.join(LOCALISATION_FIXES)}")
    out = np.array(dt_keypoints, dtype=np.float64, copy=True)
    target_xy = gt_keypoints[..., :2]
    onto = np.isin(labels, [_LABEL_OF[f] for f in fixes if f in ("swap", "inversion")])
    out[..., :2][onto] = target_xy[onto]
    variance = mode.sigma_factor(np.asarray(sigmas, dtype=np.float64))
    for name, target in (("jitter", GOOD_KS), ("miss", CORRECT_KS)):
        if name not in fixes:
            continue
        move = labels == _LABEL_OF[name]
        if not move.any():
            continue
        # The radius at which ks reaches the target, per keypoint of each pair (the same eps as the OKS term).
        radius = np.sqrt(-math.log(target) * variance[None, :] * 2 * (gt_areas[:, None] + np.spacing(1)))
        delta = out[..., :2] - target_xy
        distance = np.hypot(delta[..., 0], delta[..., 1])
        # Only ever closer: a keypoint already within the radius (not possible for these labels) stays put.
        move &= distance > radius
        factor = np.divide(radius, distance, out=np.ones_like(distance), where=move)
        moved = target_xy + delta * factor[..., None]
        out[..., :2][move] = moved[move]
    return out


def optimal_scores(
    dt_keypoints: np.ndarray, dt_image: np.ndarray, gt_keypoints: np.ndarray, gt_boxes: np.ndarray,
    gt_areas: np.ndarray, gt_image: np.ndarray, gt_counted: np.ndarray, sigmas: np.ndarray,
) -> np.ndarray:
    """Optimal rescoring: each detection's maximum OKS with the counted GT persons of its image (0 without one)."""
    best = np.zeros(len(dt_keypoints))
    index = _ImageIndex(gt_image, gt_counted)
    start, count = index.slots(dt_image)
    for s in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > s)
        gts = index.order[start[rows] + s]
        ks, terms = paired_keypoint_similarity(gt_keypoints[gts], gt_boxes[gts], gt_areas[gts], dt_keypoints[rows],
                                               sigmas)
        oks = np.where(terms, ks, 0.0).sum(axis=1) / terms.sum(axis=1)
        best[rows] = np.maximum(best[rows], oks)
    return best


# --- re-evaluation ----------------------------------------------------------------------------------------------


@dataclass
class _Scored:
    """One evaluation of an array of detections: COCOeval's stats and its arrays at the largest maxDet."""

    stats: dict[str, float]
    precision: np.ndarray  # (T, R, A)
    recall: np.ndarray  # (T, A)


@dataclass
class _Matches:
    """COCOeval's matching of the analysed detections at one OKS threshold, area "all"."""

    dt_gt: np.ndarray  # (N,) GT index matched, -1 for none
    dt_ignore: np.ndarray  # (N,) matched to an ignored GT (or outside the area range)
    gt_missed: np.ndarray  # (G,) counted in area "all" and matched by no detection


class _Scorer:
    """Scores arrays of the analysed detections against the GT: the one re-evaluation function of the analysis.

    `score` gives COCOeval's stats and arrays of the detections `keep` with the GTs `gt_ignore` made ignored;
    `match` gives COCOeval's matching at one OKS threshold. Two implementations: `_VectorizedScorer` (the default,
    `kpbench.evaluation.vectorized`, bit for bit pycocotools) and `_PycocotoolsScorer` (the reference).
    """

    name = ""

    def __init__(self, data: _Data, settings: EvalSettings) -> None:
        self.data = data
        self.settings = settings
        self.runs = 0

    def score(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              gt_ignore: np.ndarray | None = None) -> _Scored:
        """COCOeval (the analysis' settings) of the detections `keep` (all by default), `gt_ignore` GTs ignored."""
        raise NotImplementedError

    def match(self, keypoints: np.ndarray, scores: np.ndarray, oks: float) -> _Matches:
        """COCOeval's matching at one OKS threshold (area "all" of the analysis' settings)."""
        raise NotImplementedError

    def _missed(self, gt_matched: np.ndarray) -> np.ndarray:
        """Counted GTs (not crowd, labelled, within area "all") that no detection matched."""
        _, lo, hi = next(r for r in (self.settings.area_ranges or COCO_AREAS) if r[0] == "all")
        areas = self.data.gt_areas
        return self.data.gt_counted & (areas >= lo) & (areas <= hi) & ~gt_matched


class _PycocotoolsScorer(_Scorer):
    """pycocotools, through `kpbench.evaluate` on in-memory records (the reference)."""

    name = "pycocotools"

    def __init__(self, data: _Data, settings: EvalSettings) -> None:
        super().__init__(data, settings)
        self._gt_index = {int(g): i for i, g in enumerate(data.gt_ids.tolist())}

    def _records(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None) -> list[dict[str, Any]]:
        rows = range(len(scores)) if keep is None else np.flatnonzero(keep).tolist()
        flat = keypoints.reshape(len(keypoints), self.data.schema.result_length)
        out = []
        for i in rows:
            # The original record with new values; its 'bbox' (where pycocotools reads the detection's area
            # from) only when the original results were read that way, whichever record now comes first.
            record = {**self.data.records[i], "keypoints": flat[i].tolist(), "score": float(scores[i])}
            if self.data.box_areas is None:
                record.pop("bbox", None)
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
        return evaluate(self._ground_truth(gt_ignore), results, settings=settings)

    def score(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              gt_ignore: np.ndarray | None = None) -> _Scored:
        r = self._evaluate(keypoints, scores, keep, gt_ignore, self.settings)
        return _Scored(stats=dict(r.stats), precision=r.precision[:, :, 0, :, -1], recall=r.recall[:, 0, :, -1])

    def match(self, keypoints: np.ndarray, scores: np.ndarray, oks: float) -> _Matches:
        import dataclasses

        r = self._evaluate(keypoints, scores, None, None, dataclasses.replace(self.settings, iou_thresholds=(oks,)))
        assert r.image_evals is not None  # pycocotools exposes them
        dt_gt = np.full(len(scores), -1, dtype=np.int64)
        dt_ignore = np.zeros(len(scores), dtype=bool)
        gt_matched = np.zeros(len(self.data.gt_ids), dtype=bool)
        area_all = r.params.area_labels.index("all")
        for e in r.image_evals:
            if e.area_index != area_all:
                continue
            rows = e.dt_ids - 1  # pycocotools' 1-based positions in the records, all of them here
            matched = e.dt_matches[0] != 0
            dt_gt[rows[matched]] = [self._gt_index[int(g)] for g in e.dt_matches[0][matched]]
            dt_ignore[rows] = e.dt_ignore[0]
            gt_matched[[self._gt_index[int(g)] for g in e.gt_ids[e.gt_matches[0] != 0]]] = True
        return _Matches(dt_gt=dt_gt, dt_ignore=dt_ignore, gt_missed=self._missed(gt_matched))


class _VectorizedScorer(_Scorer):
    """`kpbench.evaluation.vectorized.KeypointEvaluator`: pycocotools' numbers and matches, bit for bit, on
    arrays (no records, no re-parsing)."""

    name = "vectorized"

    def __init__(self, data: _Data, settings: EvalSettings) -> None:
        super().__init__(data, settings)
        self._evaluators: dict[tuple[float, ...] | None, Any] = {}
        self._evaluator = self._for(settings)
        # The evaluator's GT order (images by id, then file order) against ours (file order).
        position = {int(g): i for i, g in enumerate(data.gt_ids.tolist())}
        self._to_ours = np.asarray([position[int(g)] for g in self._evaluator.gt_ann_ids], dtype=np.int64)

    def _for(self, settings: EvalSettings) -> Any:
        from kpbench.evaluation.vectorized import KeypointEvaluator

        key = settings.iou_thresholds
        if key not in self._evaluators:
            self._evaluators[key] = KeypointEvaluator(self.data.gt.dataset, self.data.schema.sigma_array, settings,
                                                      category_id=self.data.schema.category_id)
        return self._evaluators[key]

    def _run(self, evaluator: Any, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None,
             gt_ignore: np.ndarray | None) -> Any:
        self.runs += 1
        rows = slice(None) if keep is None else np.flatnonzero(keep)
        areas = None if self.data.box_areas is None else self.data.box_areas[rows]
        ignore = None if gt_ignore is None else gt_ignore[self._to_ours]
        return evaluator.evaluate(self.data.dt_image[rows], keypoints[rows], scores[rows], gt_ignore=ignore,
                                  areas=areas)

    def score(self, keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              gt_ignore: np.ndarray | None = None) -> _Scored:
        r = self._run(self._evaluator, keypoints, scores, keep, gt_ignore)
        return _Scored(stats=dict(r.stats), precision=r.precision[:, :, 0, :, -1], recall=r.recall[:, 0, :, -1])

    def match(self, keypoints: np.ndarray, scores: np.ndarray, oks: float) -> _Matches:
        import dataclasses

        r = self._run(self._for(dataclasses.replace(self.settings, iou_thresholds=(oks,))), keypoints, scores,
                      None, None)
        local = r.dt_matches[0]
        dt_gt = np.full(len(local), -1, dtype=np.int64)
        dt_gt[local >= 0] = self._to_ours[local[local >= 0]]
        gt_matched = np.zeros(len(self.data.gt_ids), dtype=bool)
        gt_matched[self._to_ours[r.gt_matches[0] >= 0]] = True
        return _Matches(dt_gt=dt_gt, dt_ignore=r.dt_ignore[0].copy(), gt_missed=self._missed(gt_matched))


EVALUATORS: tuple[str, ...] = ("vectorized", "pycocotools")


def _scorer(name: str, data: _Data, settings: EvalSettings) -> _Scorer:
    if name == "vectorized":
        return _VectorizedScorer(data, settings)
    if name == "pycocotools":
        return _PycocotoolsScorer(data, settings)
    raise KpbenchError(f"evaluator: must be one of {', '.join(EVALUATORS)}, got {name!r}")


def _mean_valid(values: np.ndarray) -> float:
    """COCOeval summarize()'s mean over the entries that are not -1 (no GT), or -1 when none is."""
    valid = values[values > -1]
    return -1.0 if valid.size == 0 else float(np.mean(valid))


def _area_aps(scored: _Scored, thresholds: np.ndarray) -> dict[str, dict[str, float]]:
    """{area: {"AP": ..., "AP50": ..., "AP75": ...}} from the precision array, as summarize() averages it."""
    out = {}
    for a, area in enumerate(AREA_LABELS):
        row = {}
        for name, t in AP_COLUMNS:
            s = scored.precision if t is None else scored.precision[np.where(t == thresholds)[0]]
            row[name] = _mean_valid(s[:, :, a])
        out[area] = row
    return out


def _pr_curves(scored: _Scored, thresholds: np.ndarray) -> dict[str, list[float]]:
    """Interpolated precision at each of COCO's 101 recall points, area "all": at OKS 0.5, 0.75, and the mean
    over the ten thresholds (whose mean over recall is AP). Empty where there is no GT."""
    precision = scored.precision[:, :, 0]
    if (precision < 0).all():
        return {label: [] for label, _ in PR_PANELS}
    return {label: (precision.mean(axis=0) if t is None else precision[int(np.flatnonzero(t == thresholds)[0])]).tolist()
            for label, t in PR_PANELS}


# --- the analysis ---------------------------------------------------------------------------------------------


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
    pairs: np.ndarray  # (P, 2) analysed detection index, GT index
    intervals: list[dict[str, Any]] | None = None  # bootstrap intervals on the plain evaluation's stats
    # Hooks for other analyses (sensitivity tables, the LRP-optimal threshold, ...): JSON-ready sections.
    extra: dict[str, Any] = field(default_factory=dict)
    # The validated inputs, for analyses that add sections.
    inputs: tuple[GroundTruth, Results] | None = field(default=None, repr=False)

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
            "pr_curves": self.pr_curves,
            **self.extra,
        }


def _count_rows(labels: np.ndarray, schema: KeypointSchema, types: Sequence[str], unclassified: bool) -> list[dict[str, Any]]:
    columns = [*types, *(("unclassified",) if unclassified else ())]
    codes = [_LABEL_OF.get(t, UNCLASSIFIED) for t in columns]

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


def _gain_rows(steps: list[tuple[str, str, dict[str, dict[str, float]]]],
               base: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for how, name, aps in steps:
        for area in AREA_LABELS:
            row: dict[str, Any] = {"how": how, "correction": name, "area": area}
            for column, _ in AP_COLUMNS:
                value, before = aps[area][column], base[area][column]
                row[column] = value
                row[f"gain_{column}"] = value - before if value > -1 and before > -1 else None
            rows.append(row)
    return rows


def analyze_errors(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results,
    schema: KeypointSchema | None = None,
    sigmas: Sequence[float] | None = None,
    coco_analyze: bool = False,
    bootstrap: int | None = None,
    seed: int = 0,
    evaluator: str = "vectorized",
) -> ErrorAnalysis:
    """The error diagnosis of keypoint results (module docstring): counts per error type and keypoint, and the
    AP gained by each correction alone and cumulatively, per area range, with the PR curves after each
    cumulative step.

    `gt` and `results` are paths, parsed data or validated objects; `schema`/`sigmas` as for `evaluate`.
    `coco_analyze` reproduces coco-analyze's numbers (its area ranges, strict 0.85 boundary and σ² corrections).
    `bootstrap` replicates (seeded) put percentile intervals on every stat of the plain evaluation
    (`kpbench.evaluate` with COCO's parameters, pycocotools). `evaluator` re-evaluates the corrected detections:
    "vectorized" (`kpbench.evaluation.vectorized`, the default) or "pycocotools" (the reference, much slower);
    both give the same numbers bit for bit.
    """
    import warnings

    from kpbench.evaluation.cocofiles import load_ground_truth, load_results

    if sigmas is not None and schema is not None:
        raise KpbenchError("give a schema or sigmas, not both (--schema / --sigmas)")
    if bootstrap is not None and bootstrap < 1:
        raise KpbenchError(f"--bootstrap: needs at least 1 replicate, got {bootstrap}")
    if evaluator not in EVALUATORS:
        raise KpbenchError(f"evaluator: must be one of {', '.join(EVALUATORS)}, got {evaluator!r}")
    gt_data = load_ground_truth(gt, "keypoints", schema, sigmas)
    res = load_results(results, gt_data, "keypoints")
    mode = ErrorMode(coco_analyze)
    data = _prepare(gt_data, res)
    schema = data.schema
    scorer = _scorer(evaluator, data, mode.eval_settings)
    # The analysis words the maxDets cut itself (with how many detections it keeps).
    from kpbench.evaluation.cocofiles import crowded_images_note

    crowded = crowded_images_note(data.crowded_images) if data.crowded_images else None
    notes = [*gt_data.notes, *(n for n in res.notes if n != crowded)]
    with warnings.catch_warnings():
        # The inputs were checked (and warned about) once above; the re-evaluations see the same records.
        warnings.simplefilter("ignore")
        analysis = _analyze(data, scorer, mode, notes)
        if bootstrap is not None:
            from kpbench.analysis.bootstrap import bootstrap_intervals
            from kpbench.evaluation.cocoeval import evaluate

            analysis.intervals = bootstrap_intervals(evaluate(gt_data, res), bootstrap, seed)
    analysis.inputs = (gt_data, res)
    return analysis


def _analyze(data: _Data, scorer: _Scorer, mode: ErrorMode, notes: list[str]) -> ErrorAnalysis:
    schema, sigmas = data.schema, data.schema.sigma_array
    flip = _flip_index(schema)
    kps0, scores0 = data.dt_keypoints, data.dt_scores
    thresholds = np.asarray(scorer.settings.iou_thresholds or np.linspace(0.5, 0.95, 10), dtype=np.float64)

    matches = scorer.match(kps0, scores0, MATCH_OKS)
    counted = data.gt_counted
    matched = (matches.dt_gt >= 0) & ~matches.dt_ignore  # a match to an ignored GT sets dtIgnore
    pair_dt = np.flatnonzero(matched)
    pair_gt = matches.dt_gt[pair_dt]
    # Unmatched and counted (an unmatched detection outside the area range is ignored in every range anyway).
    background_fp = (matches.dt_gt < 0) & ~matches.dt_ignore
    background_fn = matches.gt_missed
    labels = classify_keypoints(kps0[pair_dt], pair_gt, data.gt_keypoints, data.gt_boxes, data.gt_areas,
                                data.gt_image, sigmas, flip, strict_good=mode.coco_analyze)

    def corrected(fixes: Sequence[str]) -> np.ndarray:
        out = kps0.copy()
        out[pair_dt] = correct_keypoints(kps0[pair_dt], labels.labels, data.gt_keypoints[pair_gt],
                                         data.gt_areas[pair_gt], sigmas, fixes, mode)
        return out

    def rescored(keypoints: np.ndarray) -> np.ndarray:
        return optimal_scores(keypoints, data.dt_image, data.gt_keypoints, data.gt_boxes, data.gt_areas,
                              data.gt_image, counted, sigmas)

    fixes = [f for f in LOCALISATION_FIXES if f != "inversion" or flip is not None]
    present = {f: bool((labels.labels == _LABEL_OF[f]).any()) for f in fixes}
    cache: dict[tuple[Any, ...], _Scored] = {}

    def score(key: tuple[Any, ...], keypoints: np.ndarray, scores: np.ndarray, keep: np.ndarray | None = None,
              ignore: np.ndarray | None = None) -> _Scored:
        # The same detections give the same evaluation: a correction that changes nothing is not re-run.
        if key not in cache:
            cache[key] = scorer.score(keypoints, scores, keep, ignore)
        return cache[key]

    no_fix: tuple[str, ...] = ()
    base = score((no_fix, False, False, False), kps0, scores0)
    steps_alone: list[tuple[str, _Scored]] = []
    for f in fixes:
        steps_alone.append((f, score(((f,) if present[f] else no_fix, False, False, False), corrected([f]), scores0)))
    steps_alone.append(("score", score((no_fix, True, False, False), kps0, rescored(kps0))))
    steps_alone.append(("background_fp", score((no_fix, False, bool(background_fp.any()), False), kps0, scores0,
                                               keep=~background_fp)))
    steps_alone.append(("background_fn", score((no_fix, False, False, bool(background_fn.any())), kps0, scores0,
                                               ignore=background_fn)))
    steps_cumulative: list[tuple[str, _Scored]] = []
    done: list[str] = []
    for f in fixes:
        if present[f]:
            done.append(f)
        steps_cumulative.append((f, score((tuple(done), False, False, False), corrected(done), scores0)))
    kps_all = corrected(done)
    scores_all = rescored(kps_all)
    steps_cumulative.append(("score", score((tuple(done), True, False, False), kps_all, scores_all)))
    fp_key = bool(background_fp.any())
    steps_cumulative.append(("background_fp", score((tuple(done), True, fp_key, False), kps_all, scores_all,
                                                    keep=~background_fp)))
    steps_cumulative.append(("background_fn", score((tuple(done), True, fp_key, bool(background_fn.any())), kps_all,
                                                    scores_all, keep=~background_fp, ignore=background_fn)))

    base_aps = _area_aps(base, thresholds)
    gain = _gain_rows([("baseline", "none", base_aps)]
                      + [("alone", n, _area_aps(s, thresholds)) for n, s in steps_alone]
                      + [("cumulative", n, _area_aps(s, thresholds)) for n, s in steps_cumulative], base_aps)
    recall = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)  # COCOeval's recThrs
    curves = {"original": _pr_curves(base, thresholds),
              **{n: _pr_curves(s, thresholds) for n, s in steps_cumulative}}

    types = tuple(t for t in ERROR_TYPES if t != "inversion" or flip is not None)
    unclassified = int((labels.labels == UNCLASSIFIED).sum())
    if mode.coco_analyze:
        notes.append("coco-analyze mode: area 'all' is [32², 1e10] (small persons left out), medium [32², 96²], "
                     "large [96², 1e10]; good is ks > 0.85; the jitter and miss corrections use σ² and land at "
                     f"ks {GOOD_KS**0.25:.3f} and {CORRECT_KS**0.25:.3f}")
        if unclassified:
            notes.append(f"{unclassified} keypoint(s) with ks exactly 0.85 fall in no class (coco-analyze's strict "
                         "boundaries): counted as unclassified and left uncorrected")
    if flip is None:
        notes.append(f"the {schema.name} schema has no flip pairs: inversions are not measured (no inversion "
                     "column or correction)")
    if data.crowded_images:
        notes.append(f"{data.crowded_images} image(s) have more than {KEYPOINT_MAX_DETS} detections: only each "
                     f"image's top {KEYPOINT_MAX_DETS} by score are analysed ({len(scores0)} of {data.num_results})")
    notes.append("optimal rescoring: each detection's score becomes its maximum OKS with the counted GT persons (not "
                 "crowd, with labelled keypoints) of its image")
    notes.append(f"{scorer.runs} COCOeval passes with the {scorer.name} evaluator (one per distinct correction, and "
                 f"the matching at OKS {MATCH_OKS})")
    summary = {
        "num_images": len(data.gt.dataset["images"]),
        "num_gt": int(counted.sum()),
        "num_results": data.num_results,
        "num_analysed": len(scores0),
        "num_matched": len(pair_dt),
        "num_keypoints": int((labels.labels != NOT_LABELLED).sum()),
        "num_background_fp": int(background_fp.sum()),
        "num_background_fn": int(background_fn.sum()),
        "evaluator": scorer.name,
        "evaluations": scorer.runs,
    }
    return ErrorAnalysis(
        mode=mode, schema=schema, counts=_count_rows(labels.labels, schema, types, mode.coco_analyze),
        ap_gain=gain, pr_curves={"recall": recall.tolist(), "panels": [p for p, _ in PR_PANELS], "curves": curves},
        baseline=dict(base.stats), summary=summary, notes=list(dict.fromkeys(notes)), labels=labels,
        pairs=np.stack([pair_dt, pair_gt], axis=1) if len(pair_dt) else np.zeros((0, 2), np.int64),
    )


def analyze_run_errors(
    run_dir: str | Path, coco_analyze: bool = False, bootstrap: int | None = None, seed: int = 0,
    evaluator: str = "vectorized",
) -> ErrorAnalysis:
    """`analyze_errors` for a run directory: its results rebuilt from the detections cache (as `kpbench evaluate
    RUN_DIR` does), its ground_truth.json and the schema its manifest records."""
    from kpbench.evaluation.runeval import finished_run_detections, load_run_ground_truth, run_results
    from kpbench.runs.directory import read_manifest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    manifest = read_manifest(run_dir)
    ordered = finished_run_detections(run_dir, manifest)
    gt = load_run_ground_truth(run_dir, ["keypoints"])
    results = run_results(run_dir, ordered, gt)["keypoints"]
    return analyze_errors(gt["keypoints"], results, coco_analyze=coco_analyze, bootstrap=bootstrap, seed=seed,
                          evaluator=evaluator)


# --- output ---------------------------------------------------------------------------------------------------

KEYPOINTS_NOTE = """\
Detections matched to a GT person by COCOeval at OKS 0.1 (area "all", top 20 per image); per keypoint labelled
in the matched GT, the class of its best reference (the matched person's keypoint, its left/right flip, or
another person's keypoint or flip), by the keypoint similarity ks:
good (matched, ks >= 0.85), jitter (matched, 0.5 <= ks < 0.85), inversion (flip, ks >= 0.5),
swap (another person, ks >= 0.5), miss (best ks < 0.5). The `all` row pools every keypoint.
"""

GAIN_NOTE = """\
AP, AP50 and AP75 per area range after each correction, alone and cumulatively (miss, + swap, + inversion,
+ jitter, + score, + background FP, + background FN), and the gain over the uncorrected detections (the
baseline row). Corrections: a jitter moved to ks 0.85, a miss to ks 0.5, an inversion or a swap onto the GT
keypoint; each score replaced by the detection's best OKS; background false positives removed and false
negatives ignored.
"""


def count_columns(analysis: ErrorAnalysis) -> list[str]:
    """The columns of the per-keypoint table."""
    types = [*analysis.error_types, *(("unclassified",) if analysis.mode.coco_analyze else ())]
    return ["keypoint", "n", *types, *(f"frac_{t}" for t in types)]


GAIN_COLUMNS: tuple[str, ...] = ("how", "correction", "area", "AP", "gain_AP", "AP50", "gain_AP50", "AP75",
                                 "gain_AP75")


def gain_rows_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gain table for people: AP in percent with one decimal, n/a for COCO's -1 (no GT in the area range)."""
    from kpbench.evaluation.cocoeval import percent

    out = []
    for row in rows:
        shown = dict(row)
        for column, _ in AP_COLUMNS:
            shown[column] = percent(row[column])
            g = row[f"gain_{column}"]
            shown[f"gain_{column}"] = "n/a" if g is None else f"{100 * g:+.1f}"
        out.append(shown)
    return out


def count_rows_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-keypoint counts for people: fractions in percent with one decimal."""
    return [{k: (v if not k.startswith("frac_") else "n/a" if v is None else f"{100 * v:.1f}") for k, v in row.items()}
            for row in rows]


def table_sections(analysis: ErrorAnalysis) -> dict[str, dict[str, Any]]:
    """The sections of `analysis.extra` that are tables: {"rows": [...]} with optional "title", "note" and
    "columns" (what other analyses add; see `kpbench.analysis.diagnose`)."""
    return {name: section for name, section in analysis.extra.items()
            if isinstance(section, dict) and isinstance(section.get("rows"), list)}


def section_rows_percent(section: dict[str, Any]) -> list[dict[str, Any]]:
    """A table section's rows for people: its "percent" columns in percent with one decimal, n/a for COCO's -1."""
    from kpbench.evaluation.cocoeval import percent

    columns = section.get("percent") or []
    return [{k: (percent(v) if k in columns and v is not None else v) for k, v in row.items()} for row in section["rows"]]


def section_files(out: Path, analysis: ErrorAnalysis) -> dict[Path, str]:
    """NAME.csv, NAME.md and NAME.json for each table section of `analysis.extra`."""
    from kpbench.core.io import json_text, to_csv, to_markdown

    files: dict[Path, str] = {}
    for name, section in table_sections(analysis).items():
        rows, columns = section["rows"], section.get("columns")
        note = f"{section['note']}\n\n" if section.get("note") else ""
        files[out / f"{name}.csv"] = to_csv(rows, columns)
        shown = section_rows_percent(section)
        unit = "\nAP in percent; n/a where the bin has no GT.\n" if section.get("percent") else ""
        files[out / f"{name}.md"] = f"## {section.get('title', name)}\n\n{note}{to_markdown(shown, columns)}{unit}"
        files[out / f"{name}.json"] = json_text(section)
    return files


def write_error_files(out_dir: str | Path, analysis: ErrorAnalysis, plot: bool = True) -> list[Path]:
    """Write errors_keypoints.{csv,md,json}, errors_ap_gain.{csv,md,json}, NAME.{csv,md,json} for each table
    section of `analysis.extra`, errors_pr_curves.png and analyze.json into out_dir (the tables atomically, as one
    set); returns the paths."""
    from kpbench.core.io import atomic_write_files, json_text, to_csv, to_markdown

    out = Path(out_dir)
    columns = count_columns(analysis)
    notes = "".join(f"- {n}\n" for n in analysis.notes)
    payload = analysis.to_json()
    paths = atomic_write_files({
        out / f"{KEYPOINTS_STEM}.csv": to_csv(analysis.counts, columns),
        out / f"{KEYPOINTS_STEM}.md": (f"## Keypoint localisation errors ({analysis.mode.name} mode)\n\n"
                                       + KEYPOINTS_NOTE + "\n" + to_markdown(count_rows_percent(analysis.counts), columns)
                                       + "\nFractions in percent.\n"),
        out / f"{KEYPOINTS_STEM}.json": json_text({"mode": analysis.mode.name, "rows": analysis.counts}),
        out / f"{GAIN_STEM}.csv": to_csv(analysis.ap_gain, GAIN_COLUMNS),
        out / f"{GAIN_STEM}.md": (f"## AP gained by correcting each error ({analysis.mode.name} mode)\n\n" + GAIN_NOTE
                                  + "\n" + to_markdown(gain_rows_percent(analysis.ap_gain), GAIN_COLUMNS)
                                  + "\nAP in percent; n/a where the area range has no GT.\n"
                                  + (f"\nNotes:\n\n{notes}" if notes else "")),
        out / f"{GAIN_STEM}.json": json_text({"mode": analysis.mode.name, "rows": analysis.ap_gain}),
        **section_files(out, analysis),
        out / REPORT_FILE: json_text(payload),
    })
    if plot:
        from kpbench.report.figures import plot_error_pr_curves

        paths.append(plot_error_pr_curves(analysis.pr_curves, out / PR_FILE, analysis.mode.name))
    return paths
