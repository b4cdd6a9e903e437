"""COCOeval backends behind one interface: vectorized (the default), pycocotools (the reference) and hotcoco.

A backend takes one evaluation's inputs (`EvalInputs`: the ground truth and the results in whatever forms exist,
each other form made on first use), the iou type, the schema's sigmas and the COCOeval parameters, and returns
COCOeval's accumulated arrays, its stats where it computed them, and the per-image matches when it exposes them.

- `vectorized` (`kpbench.evaluation.vectorized`): COCOeval restated over arrays, pycocotools' numbers bit for bit
  (tested with `==` on every stat and array, and on every per-image match), many times faster; it honours
  useCats=0 for keypoints too (as hotcoco does). Its matches come as arrays (`MatchTable`).
- `pycocotools`: the reference; its numbers are returned unchanged. Its summarize() is called only with COCO's
  parameters, which it hard-codes (maxDets 20 for keypoints, 1/10/100 for boxes): with others it would read
  past the maxDets list (a crash) or report -1, and kpbench summarizes the arrays itself.
- `hotcoco`: a Rust port; it parses files itself and exposes no per-image matches.

The sigmas are always set on the backend (pycocotools' `params.kpt_oks_sigmas`, hotcoco's too) rather than left to
its built-in COCO ones, so a keypoint set other than COCO's is scored with its own. Printing is silenced by
redirecting stdout, never by patching the backend.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from kpbench.core.arrays import DetectionArrays
from kpbench.core.errors import KpbenchError
from kpbench.evaluation.arrays import (
    GroundTruthArrays,
    detections_from_records,
    ground_truth_arrays,
    records_from_detections,
)
from kpbench.evaluation.settings import EvalSettings, same_as_coco
from kpbench.evaluation.vectorized import ImageEval, LazyImageEvals, MatchTable

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "BackendOutput", "EvalInputs", "EvalParams", "EvaluationBackend",
           "ImageEval", "check_backend", "get_backend"]

DEFAULT_BACKEND = "vectorized"


def hotcoco_missing() -> str:
    """--backend hotcoco without hotcoco: the install command of the fast extra that works for this install
    (`kpbench.core.install`; 'kpbench[fast]' is on no index a source checkout has)."""
    from kpbench.core.install import install_hint

    return f"--backend hotcoco: hotcoco is not installed ({install_hint('fast')})"


@dataclass
class EvalParams:
    """The COCOeval parameters the arrays are indexed by."""

    iou_type: str
    iou_thresholds: np.ndarray  # (T,)
    recall_thresholds: np.ndarray  # (R,)
    area_ranges: list[list[float]]  # (A,) [lo, hi]
    area_labels: list[str]  # (A,)
    max_dets: list[int]  # (M,)
    image_ids: list[int]
    category_ids: list[int]  # (K,) the precision array's categories (p.catIds; [-1] with useCats=0 pooled)


@dataclass
class EvalInputs:
    """One evaluation's ground truth and results, in the forms a backend may read; a missing form is made from
    another on first use (a file is parsed, dicts become arrays, arrays become dicts).

    `detection_areas` (N,) are the areas pycocotools' loadRes gives keypoint results it reads as box results (the
    first record has a 'bbox'); None: areas from the keypoints' extent (boxes: w * h). `owned_records`: the result
    records are kpbench's own (parsed here), so pycocotools may add its keys to them without a copy.
    """

    iou_type: str
    num_keypoints: int = 0
    gt_path: Path | None = None
    gt_dataset: dict[str, Any] | None = None
    gt_arrays: GroundTruthArrays | None = None
    gt_source: str = "ground truth"
    results_path: Path | None = None
    records: list[dict[str, Any]] | None = None
    detections: DetectionArrays | None = None
    detection_areas: np.ndarray | None = None
    owned_records: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def dataset(self) -> dict[str, Any]:
        """The GT as a parsed COCO dict."""
        if self.gt_dataset is None:
            from kpbench.core.io import read_json

            if self.gt_path is None:
                raise KpbenchError(f"{self.gt_source}: this backend needs the ground truth as COCO JSON")
            self.gt_dataset = read_json(self.gt_path)
        return self.gt_dataset

    def ground_truth_arrays(self) -> GroundTruthArrays:
        """The GT as arrays (keypoints included for a keypoint evaluation)."""
        if self.gt_arrays is None:
            keypoints = self.num_keypoints if self.iou_type == "keypoints" else None
            self.gt_arrays = ground_truth_arrays(self.dataset(), self.gt_source, keypoints)
        return self.gt_arrays

    def result_records(self) -> list[dict[str, Any]]:
        """The results as COCO results dicts (row i of the arrays is record i)."""
        if self.records is None:
            if self.detections is not None:
                self.records = records_from_detections(self.detections, self.iou_type)
                self.owned_records = True
            elif self.results_path is not None:
                from kpbench.core.io import read_json

                self.records = read_json(self.results_path)
                self.owned_records = True
            else:
                raise KpbenchError("results: none given")
        return self.records  # type: ignore[return-value]

    def detection_arrays(self) -> DetectionArrays:
        """The results as DetectionArrays."""
        if self.detections is None:
            self.detections = detections_from_records(self.result_records(), self.iou_type, self.num_keypoints)
        return self.detections


@dataclass
class BackendOutput:
    """What one backend's COCOeval produced."""

    precision: np.ndarray  # (T, R, K, A, M); -1 where there is no GT
    recall: np.ndarray  # (T, K, A, M)
    scores: np.ndarray  # (T, R, K, A, M)
    params: EvalParams
    stats: list[float] | None  # the backend's own summarize(), with COCO's parameters only
    image_evals: Sequence[ImageEval] | None  # None for backends that do not expose their matching
    num_gt: int
    num_results: int
    matches: MatchTable | None = None  # the vectorized backend's matches as arrays


class EvaluationBackend(Protocol):
    """One COCOeval implementation."""

    name: ClassVar[str]
    # Whether `run` returns COCOeval's per-image matches (threshold sweeps and the breakdown need them).
    provides_matches: ClassVar[bool]
    # Whether `run` reads file paths itself (hotcoco parses them in Rust).
    parses_files: ClassVar[bool]

    def available(self) -> bool:
        """Whether the backend's package is installed (looked up, not imported)."""
        ...

    def missing_message(self) -> str:
        """The error when it is not installed."""
        ...

    def run(self, inputs: EvalInputs, sigmas: np.ndarray | None, settings: EvalSettings | None = None) -> BackendOutput:
        """COCOeval's evaluate and accumulate (and its summarize with COCO's parameters) on `inputs`."""
        ...


def _params(iou_type: str, p: Any) -> EvalParams:
    return EvalParams(
        iou_type=iou_type,
        iou_thresholds=np.asarray(p.iouThrs, dtype=np.float64),
        recall_thresholds=np.asarray(p.recThrs, dtype=np.float64),
        area_ranges=[list(map(float, r)) for r in p.areaRng],
        area_labels=list(p.areaRngLbl),
        max_dets=[int(m) for m in p.maxDets],
        image_ids=[int(i) for i in p.imgIds],
        category_ids=[int(c) for c in p.catIds] if p.useCats else [-1],
    )


def _image_evals_from_pycocotools(eval_imgs: list[dict[str, Any] | None], params: Any) -> list[ImageEval]:
    area_index = {tuple(rng): i for i, rng in enumerate(params.areaRng)}
    out = []
    for e in eval_imgs:
        if e is None:
            continue
        out.append(
            ImageEval(
                image_id=e["image_id"],
                category_id=e["category_id"],
                area_index=area_index[tuple(e["aRng"])],
                dt_ids=np.asarray(e["dtIds"], dtype=np.int64),
                dt_scores=np.asarray(e["dtScores"], dtype=np.float64),
                dt_matches=np.asarray(e["dtMatches"]).reshape(len(params.iouThrs), -1),
                dt_ignore=np.asarray(e["dtIgnore"], dtype=bool).reshape(len(params.iouThrs), -1),
                gt_ids=np.asarray(e["gtIds"], dtype=np.int64),
                gt_matches=np.asarray(e["gtMatches"]).reshape(len(params.iouThrs), -1),
                gt_ignore=np.asarray(e["gtIgnore"], dtype=bool),
            )
        )
    return out


class VectorizedBackend:
    """kpbench's COCOeval on arrays (`kpbench.evaluation.vectorized`): pycocotools' numbers and matches, bit for bit."""

    name: ClassVar[str] = "vectorized"
    provides_matches: ClassVar[bool] = True
    parses_files: ClassVar[bool] = False

    def available(self) -> bool:
        return True

    def missing_message(self) -> str:
        return ""

    def run(self, inputs: EvalInputs, sigmas: np.ndarray | None, settings: EvalSettings | None = None) -> BackendOutput:
        from kpbench.evaluation.vectorized import CocoEvaluator

        gt = inputs.ground_truth_arrays()
        detections = inputs.detection_arrays()
        if inputs.iou_type == "keypoints" and sigmas is None:
            from kpbench.core.schema import COCO17

            sigmas = COCO17.sigma_array  # unchecked files: COCO's, as the other backends' built-in ones
        evaluator = CocoEvaluator(gt, inputs.iou_type, sigmas if inputs.iou_type == "keypoints" else None, settings)
        geometry = detections.keypoints if inputs.iou_type == "keypoints" else detections.boxes
        if geometry is None:
            raise KpbenchError(f"results: the detections carry no {'keypoints' if inputs.iou_type == 'keypoints' else 'boxes'}")
        result = evaluator.evaluate(detections.image_ids, detections.category_ids, detections.scores, geometry,
                                    areas=inputs.detection_areas)
        params = EvalParams(
            iou_type=inputs.iou_type, iou_thresholds=evaluator.iou_thresholds.copy(),
            recall_thresholds=evaluator.recall_thresholds.copy(), area_ranges=evaluator.area_ranges.tolist(),
            area_labels=list(evaluator.area_labels), max_dets=list(evaluator.max_dets),
            image_ids=gt.image_ids.tolist(), category_ids=evaluator.category_ids.tolist(),
        )
        return BackendOutput(
            precision=result.precision, recall=result.recall, scores=result.scores, params=params,
            stats=list(result.stats.values()), image_evals=LazyImageEvals(result.matches),
            num_gt=gt.num_annotations, num_results=len(detections), matches=result.matches,
        )


class PycocotoolsBackend:
    """pycocotools' COCOeval, the reference: its numbers are returned unchanged."""

    name: ClassVar[str] = "pycocotools"
    provides_matches: ClassVar[bool] = True
    parses_files: ClassVar[bool] = False

    def available(self) -> bool:
        return importlib.util.find_spec("pycocotools") is not None

    def missing_message(self) -> str:
        return "--backend pycocotools: pycocotools is not installed (pip install pycocotools)"

    def run(self, inputs: EvalInputs, sigmas: np.ndarray | None, settings: EvalSettings | None = None) -> BackendOutput:
        """loadRes adds keys to the result records, so they are copied unless they are kpbench's own."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        iou_type = inputs.iou_type
        # Inputs are checked finite, but keypoints far out (1e308 is valid JSON) overflow in pycocotools' arithmetic:
        # computeOks squares them to inf (OKS 0, the right limit), and loadRes's area of a spread that is infinite one
        # way and 0 the other is inf * 0. numpy's warnings about it would only be noise: the numbers are pycocotools'.
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(over="ignore", invalid="ignore"):
            coco_gt = COCO()
            coco_gt.dataset = inputs.dataset()
            coco_gt.createIndex()
            results = inputs.result_records()
            records = results if inputs.owned_records else [dict(r) for r in results]
            coco_dt = coco_gt.loadRes(records) if records else _empty_results(coco_gt, COCO)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            if sigmas is not None and iou_type == "keypoints":
                ev.params.kpt_oks_sigmas = np.array(sigmas, dtype=np.float64)
            if settings is not None:
                settings.apply(ev.params)
            ev.evaluate()
            ev.accumulate()
            stats = None
            if settings is None or same_as_coco(settings, iou_type):
                ev.summarize()
                stats = [float(s) for s in ev.stats]
        return BackendOutput(
            precision=np.asarray(ev.eval["precision"]), recall=np.asarray(ev.eval["recall"]),
            scores=np.asarray(ev.eval["scores"]), params=_params(iou_type, ev.params), stats=stats,
            image_evals=_image_evals_from_pycocotools(ev.evalImgs, ev.params), num_gt=len(coco_gt.getAnnIds()),
            num_results=len(coco_dt.getAnnIds()),
        )


def _empty_results(coco_gt: Any, coco_cls: Any) -> Any:
    """A results object with no detections (pycocotools' loadRes crashes on an empty list)."""
    empty = coco_cls()
    empty.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                     "annotations": []}
    empty.createIndex()
    return empty


class HotcocoBackend:
    """hotcoco's COCOeval; it parses files itself, in Rust, and exposes no per-image matches."""

    name: ClassVar[str] = "hotcoco"
    provides_matches: ClassVar[bool] = False
    parses_files: ClassVar[bool] = True

    def available(self) -> bool:
        return importlib.util.find_spec("hotcoco") is not None

    def missing_message(self) -> str:
        return hotcoco_missing()

    def run(self, inputs: EvalInputs, sigmas: np.ndarray | None, settings: EvalSettings | None = None) -> BackendOutput:
        try:
            import hotcoco
        except ImportError:  # found, but it does not import (a broken install)
            raise KpbenchError(hotcoco_missing()) from None
        iou_type = inputs.iou_type
        with contextlib.redirect_stdout(io.StringIO()):
            # Files it parses itself, unless kpbench holds the data already (parsed, or arrays).
            if inputs.gt_dataset is None and inputs.gt_path is not None:
                coco_gt = hotcoco.COCO(str(inputs.gt_path))
            else:
                coco_gt = hotcoco.COCO(inputs.dataset())
            if inputs.records is None and inputs.detections is None and inputs.results_path is not None:
                coco_dt = coco_gt.loadRes(str(inputs.results_path))
            else:
                records = inputs.result_records()
                coco_dt = (coco_gt.loadRes(records) if records
                           else hotcoco.COCO({**inputs.dataset(), "annotations": []}))
            ev = hotcoco.COCOeval(coco_gt, coco_dt, iou_type)
            if sigmas is not None and iou_type == "keypoints" and not _same_sigmas(ev.params.kpt_oks_sigmas, sigmas):
                ev.params.kpt_oks_sigmas = [float(s) for s in sigmas]
            if settings is not None:
                params = ev.params
                settings.apply(params)
                params.iouThrs = [float(t) for t in params.iouThrs]  # hotcoco takes lists
                ev.params = params
            with warnings.catch_warnings():
                # Its warning that other sigmas are "no longer COCO keypoint AP": kpbench set them on purpose, and
                # the evaluation's notes name the schema they come from.
                warnings.filterwarnings("ignore", message="hotcoco: kpt_oks_sigmas differ")
                # Likewise for other COCOeval parameters, which kpbench's own notes describe.
                warnings.filterwarnings("ignore", message="hotcoco: (max_dets differ|use_cats is false)")
                ev.evaluate()
                ev.accumulate()
                stats = None
                if settings is None or same_as_coco(settings, iou_type):
                    ev.summarize()
                    stats = [float(s) for s in ev.stats]
        p = ev.params
        return BackendOutput(
            precision=np.asarray(ev.eval["precision"]), recall=np.asarray(ev.eval["recall"]),
            scores=np.asarray(ev.eval["scores"]), params=_params(iou_type, p), stats=stats, image_evals=None,
            num_gt=len(ev.cocoGt.getAnnIds()), num_results=len(ev.cocoDt.getAnnIds()),
        )


def _same_sigmas(builtin: Any, sigmas: np.ndarray) -> bool:
    """Whether the backend's built-in sigmas are `sigmas` up to one ulp. hotcoco writes COCO's as decimals (0.107),
    pycocotools as literals / 10.0 (1.07 / 10.0), one ulp apart; hotcoco warns on any other value, so COCO's are
    left as hotcoco has them (its AP equals pycocotools' on every fixture, as the parity tests check)."""
    builtin = np.asarray(builtin, dtype=np.float64)
    return builtin.shape == sigmas.shape and bool(np.all(np.abs(builtin - sigmas) <= np.spacing(np.maximum(builtin, sigmas))))


_BACKENDS: dict[str, EvaluationBackend] = {
    b.name: b for b in (VectorizedBackend(), PycocotoolsBackend(), HotcocoBackend())
}
BACKENDS: tuple[str, ...] = tuple(_BACKENDS)


def get_backend(name: str) -> EvaluationBackend:
    """The backend called `name`, installed; else the one KpbenchError that says why not.

    Backends are looked up (importlib.util.find_spec), not imported, so that a long run can check its evaluation
    backend before it starts without paying for the import.
    """
    backend = _BACKENDS.get(name)
    if backend is None:
        raise KpbenchError(f"--backend: must be one of {', '.join(BACKENDS)}, got {name!r}")
    if not backend.available():
        raise KpbenchError(backend.missing_message())
    return backend


def check_backend(name: str) -> str:
    """`name` if it is a known, installed backend, else the KpbenchError that says so."""
    return get_backend(name).name
