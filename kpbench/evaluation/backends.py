"""COCOeval backends behind one interface: pycocotools (the reference) and hotcoco (a faster Rust port).

A backend takes parsed (or, where it can parse them itself, file) inputs, the iou type and the schema's sigmas,
and returns its COCOeval object after evaluate/accumulate/summarize, plus the per-image matches when it exposes
them. The sigmas are always set on the backend (pycocotools' `params.kpt_oks_sigmas`, hotcoco's too) rather than
left to its built-in COCO ones, so a keypoint set other than COCO's is scored with its own. Printing is silenced
by redirecting stdout, never by patching the backend.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from kpbench.core.errors import KpbenchError

HOTCOCO_MISSING = "--backend hotcoco: hotcoco is not installed (pip install 'kpbench[fast]' or pip install hotcoco)"


@dataclass
class ImageEval:
    """COCOeval's matching for one (category, area range, image): what a threshold sweep re-accumulates.

    Detections are sorted by descending score (stable) and cut to the largest maxDet, as COCOeval does.
    `dt_ids` are the results' 1-based positions in the results list (pycocotools' loadRes numbering).
    `dt_matches[t, d]` is the GT annotation id detection d matched at IoU/OKS threshold t (0: none).
    """

    image_id: int
    category_id: int
    area_index: int
    dt_ids: np.ndarray  # (D,)
    dt_scores: np.ndarray  # (D,)
    dt_matches: np.ndarray  # (T, D) matched GT id, 0 for none
    dt_ignore: np.ndarray  # (T, D) bool
    gt_ids: np.ndarray  # (G,)
    gt_matches: np.ndarray  # (T, G) matched detection id, 0 for none
    gt_ignore: np.ndarray  # (G,) bool


class EvaluationBackend(Protocol):
    """One COCOeval implementation."""

    name: ClassVar[str]
    # Whether `run` returns COCOeval's per-image matches (threshold sweeps and the breakdown need them).
    provides_matches: ClassVar[bool]
    # Whether `run` accepts file paths and parses them itself.
    parses_files: ClassVar[bool]

    def available(self) -> bool:
        """Whether the backend's package is installed (looked up, not imported)."""
        ...

    def missing_message(self) -> str:
        """The error when it is not installed."""
        ...

    def run(
        self, gt: dict[str, Any] | Path, results: list[dict[str, Any]] | Path, iou_type: str,
        sigmas: np.ndarray | None, copy_records: bool = True,
    ) -> tuple[Any, list[ImageEval] | None]:
        """COCOeval after evaluate/accumulate/summarize, and the per-image matches (None if not exposed)."""
        ...


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


class PycocotoolsBackend:
    """pycocotools' COCOeval, the reference: its numbers are returned unchanged."""

    name: ClassVar[str] = "pycocotools"
    provides_matches: ClassVar[bool] = True
    parses_files: ClassVar[bool] = False

    def available(self) -> bool:
        return importlib.util.find_spec("pycocotools") is not None

    def missing_message(self) -> str:
        return "--backend pycocotools: pycocotools is not installed (pip install pycocotools)"

    def run(
        self, gt: dict[str, Any] | Path, results: list[dict[str, Any]] | Path, iou_type: str,
        sigmas: np.ndarray | None, copy_records: bool = True,
    ) -> tuple[Any, list[ImageEval] | None]:
        """loadRes adds keys to the result records, so they are copied unless `copy_records` is False (records
        parsed from a file, which nobody else holds)."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if isinstance(gt, Path) or isinstance(results, Path):
            raise TypeError("the pycocotools backend takes parsed data")
        # Inputs are checked finite, but keypoints far out (1e308 is valid JSON) overflow in pycocotools' arithmetic:
        # computeOks squares them to inf (OKS 0, the right limit), and loadRes's area of a spread that is infinite one
        # way and 0 the other is inf * 0. numpy's warnings about it would only be noise: the numbers are pycocotools'.
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(over="ignore", invalid="ignore"):
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            records = [dict(r) for r in results] if copy_records else results
            coco_dt = coco_gt.loadRes(records) if records else self._empty_results(coco_gt, COCO)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            if sigmas is not None and iou_type == "keypoints":
                ev.params.kpt_oks_sigmas = np.array(sigmas, dtype=np.float64)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return ev, _image_evals_from_pycocotools(ev.evalImgs, ev.params)

    @staticmethod
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
        return HOTCOCO_MISSING

    def run(
        self, gt: dict[str, Any] | Path, results: list[dict[str, Any]] | Path, iou_type: str,
        sigmas: np.ndarray | None, copy_records: bool = True,
    ) -> tuple[Any, list[ImageEval] | None]:
        try:
            import hotcoco
        except ImportError:  # found, but it does not import (a broken install)
            raise KpbenchError(HOTCOCO_MISSING) from None
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = hotcoco.COCO(str(gt) if isinstance(gt, Path) else gt)
            if isinstance(results, Path):
                coco_dt = coco_gt.loadRes(str(results))
            elif results:
                coco_dt = coco_gt.loadRes(results)
            else:
                coco_dt = hotcoco.COCO({**gt, "annotations": []})  # type: ignore[dict-item]
            ev = hotcoco.COCOeval(coco_gt, coco_dt, iou_type)
            if sigmas is not None and iou_type == "keypoints" and not _same_sigmas(ev.params.kpt_oks_sigmas, sigmas):
                ev.params.kpt_oks_sigmas = [float(s) for s in sigmas]
            with warnings.catch_warnings():
                # Its warning that other sigmas are "no longer COCO keypoint AP": kpbench set them on purpose, and
                # the evaluation's notes name the schema they come from.
                warnings.filterwarnings("ignore", message="hotcoco: kpt_oks_sigmas differ")
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
        return ev, None


def _same_sigmas(builtin: Any, sigmas: np.ndarray) -> bool:
    """Whether the backend's built-in sigmas are `sigmas` up to one ulp. hotcoco writes COCO's as decimals (0.107),
    pycocotools as literals / 10.0 (1.07 / 10.0), one ulp apart; hotcoco warns on any other value, so COCO's are
    left as hotcoco has them (its AP equals pycocotools' on every fixture, as the parity tests check)."""
    builtin = np.asarray(builtin, dtype=np.float64)
    return builtin.shape == sigmas.shape and bool(np.all(np.abs(builtin - sigmas) <= np.spacing(np.maximum(builtin, sigmas))))


_BACKENDS: dict[str, EvaluationBackend] = {b.name: b for b in (PycocotoolsBackend(), HotcocoBackend())}
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
