"""COCO evaluation as data: stats, precision/recall arrays and per-image matches, from one of three backends.

The default backend is `vectorized` (`kpbench.evaluation.vectorized`): COCOeval on arrays, pycocotools' numbers
and per-image matches bit for bit (`==` on every stat and array, tested on every fixture and on generated data),
many times faster. `pycocotools` is the reference (its numbers are returned unchanged, its printing silenced by
redirecting stdout, not by patching its code); `hotcoco` is a Rust port. Inputs are validated first (see
`kpbench.evaluation.cocofiles`), so a bad file fails with a clear message instead of a crash or a silently wrong
AP; with the vectorized backend two files are parsed straight into arrays (`kpbench.evaluation.fastparse`) with the
same verdicts, messages and notes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.arrays import DetectionArrays
from kpbench.core.errors import KpbenchError
from kpbench.core.io import (
    atomic_write_files,
    check_regular_file,
    json_text,
    read_json,
    to_csv,
    to_markdown,
    to_text_table,
)
from kpbench.core.schema import COCO17, KeypointSchema, stat_names
from kpbench.evaluation.backends import (
    DEFAULT_BACKEND,
    BackendOutput,
    EvalInputs,
    EvalParams,
    ImageEval,
    check_backend,
    get_backend,
)
from kpbench.evaluation.cocofiles import (
    CheckedDetections,
    GroundTruth,
    Results,
    SeveralKeypointSets,
    check_iou_type,
    load_ground_truth,
    load_results,
    loadres_takes_box,
    validate_detection_arrays,
)
from kpbench.evaluation.settings import DEFAULT_SETTINGS, EvalSettings, same_as_coco, settings_notes, summarize
from kpbench.evaluation.vectorized import LazyImageEvals, MatchTable

if TYPE_CHECKING:
    from kpbench.evaluation.arrays import GroundTruthArrays

__all__ = ["DEFAULT_BACKEND", "EvalParams", "EvalResult", "ImageEval", "check_backend", "evaluate"]


@dataclass
class EvalResult:
    """Everything one COCO evaluation produced."""

    iou_type: str
    backend: str
    stats: dict[str, float]
    precision: np.ndarray  # (T, R, K, A, M); -1 where there is no GT
    recall: np.ndarray  # (T, K, A, M)
    scores: np.ndarray  # (T, R, K, A, M)
    params: EvalParams
    # COCOeval's per-image matches (evalImgs), in its order; None for backends that do not expose them (hotcoco).
    # The vectorized backend builds them from `matches` on first use.
    image_evals: Sequence[ImageEval] | None
    num_images: int
    num_gt: int
    num_results: int
    notes: list[str] = field(default_factory=list)
    # For threshold sweeps, in results order (None when the results were not parsed in Python: hotcoco, unchecked):
    result_scores: np.ndarray | None = None  # (N,) every result's score
    # (N,) keypoint results only: which carry a 'bbox' that pycocotools' loadRes would use if that result came
    # first (it reads the whole file by its first record; see kpbench.evaluation.cocofiles.loadres_takes_box).
    result_has_bbox: np.ndarray | None = None
    # The keypoint set scored, whose sigmas the backend used (None for boxes).
    schema: KeypointSchema | None = None
    settings: EvalSettings = DEFAULT_SETTINGS  # the COCOeval parameters used
    # The vectorized backend's matches as arrays (every category, area range and threshold); None otherwise.
    matches: MatchTable | None = None
    # What was evaluated (the checked GT and results; other forms made on demand), None where not kept.
    inputs: EvalInputs | None = field(default=None, repr=False)

    def stats_list(self) -> list[float]:
        """The stats in their summary order (COCO's, or the schema's own protocol's, such as CrowdPose's)."""
        return list(self.stats.values())

    def detection_arrays(self) -> DetectionArrays:
        """The evaluated results as DetectionArrays (row i is result i)."""
        if self.inputs is None:
            raise KpbenchError("this evaluation kept no inputs")
        return self.inputs.detection_arrays()

    def ground_truth_arrays(self) -> GroundTruthArrays:
        """The evaluated ground truth as arrays."""
        if self.inputs is None:
            raise KpbenchError("this evaluation kept no inputs")
        return self.inputs.ground_truth_arrays()

    def table_matches(self) -> MatchTable | None:
        """`matches` when they are this result's own per-image matches (the vectorized backend's, with
        `image_evals` not replaced, as a bootstrap replicate replaces them), else None."""
        if self.matches is not None and isinstance(self.image_evals, LazyImageEvals) \
                and self.image_evals.table is self.matches:
            return self.matches
        return None


UNCHECKED_NOTE = "input checks skipped (validate=False)"


@dataclass
class _BackendRun:
    """One backend's COCOeval after it ran, with what kpbench read from the inputs on the way."""

    output: BackendOutput
    notes: list[str]
    result_scores: np.ndarray | None
    result_has_bbox: np.ndarray | None
    schema: KeypointSchema | None = None
    protocol_stats: dict[str, float] | None = None  # a schema's own protocol's stats (CrowdPose), else COCOeval's
    inputs: EvalInputs | None = None


def _hotcoco_on_checked_files(
    gt: str | Path, results: str | Path, iou_type: str, schema: KeypointSchema | None,
    settings: EvalSettings | None = None,
) -> _BackendRun | None:
    """hotcoco on two files it parses itself, checked by `kpbench.evaluation.fastcheck` (msgspec) rather than as
    Python dicts.

    None when msgspec is not installed, the files are not proven clean, or hotcoco's parser refuses them; the
    caller then runs the full checks, which word the error (or the warning) and evaluate the parsed data.
    hotcoco's own load warnings (printed by hotcoco) are not a reason to fall back: the two that mean changed data,
    non-finite numbers made null and ids unknown to the GT, cannot occur in files the checks proved, and the
    others (a category without a name, say) are printed the same on the full path.
    """
    try:
        from kpbench.evaluation import fastcheck
    except ImportError:  # msgspec missing (a base dependency)
        return None
    checked = fastcheck.check_files(gt, results, iou_type, schema)
    if checked is None:
        return None
    sigmas = checked.schema.sigma_array if checked.schema is not None else None
    num_keypoints = checked.schema.num_keypoints if checked.schema is not None else 0
    inputs = EvalInputs(iou_type, num_keypoints, gt_path=Path(gt), gt_source=str(gt), results_path=Path(results))
    try:
        output = get_backend("hotcoco").run(inputs, sigmas, settings)
    except KpbenchError:
        raise
    except Exception:  # hotcoco refused the files (a non-number in a keypoint list, a duplicate field, ...)
        return None
    has_bbox = np.zeros(len(checked.result_scores), dtype=bool) if iou_type == "keypoints" else None
    return _BackendRun(output, checked.notes, checked.result_scores, has_bbox, checked.schema, inputs=inputs)


def _vectorized_on_checked_files(
    gt: str | Path, results: str | Path, iou_type: str, schema: KeypointSchema | None,
    settings: EvalSettings | None = None,
) -> _BackendRun | None:
    """The vectorized backend on two files parsed straight into arrays and checked there
    (`kpbench.evaluation.fastparse`); None when the files are not proven clean that way (the caller then runs the
    full checks, which word the error or the warning)."""
    from kpbench.evaluation import fastparse

    parsed = fastparse.parse_files(gt, results, iou_type, schema)
    if parsed is None:
        return None
    sigmas = parsed.schema.sigma_array if parsed.schema is not None else None
    num_keypoints = parsed.schema.num_keypoints if parsed.schema is not None else 0
    inputs = EvalInputs(iou_type, num_keypoints, gt_path=Path(gt), gt_arrays=parsed.ground_truth,
                        gt_source=str(gt), results_path=Path(results), detections=parsed.detections)
    output = get_backend("vectorized").run(inputs, sigmas, settings)
    has_bbox = np.zeros(len(parsed.detections), dtype=bool) if iou_type == "keypoints" else None
    return _BackendRun(output, parsed.notes, parsed.detections.scores, has_bbox, parsed.schema, inputs=inputs)


def _input_name(value: object, kind: str) -> str:
    """A file's path, a checked input's source, or `kind` for data passed in memory (for messages)."""
    if isinstance(value, (str, Path)):
        return str(value)
    return str(getattr(value, "source", kind))


# Why xtcocotools' all-zero rule applies: asked for (drop_zero_keypoint_results), or the protocol's own (CrowdPose's,
# `kpbench.evaluation.crowdpose.ZERO_KEYPOINT_RULE`).
ASKED_ZERO_KEYPOINT_RULE = "as xtcocotools does (drop_zero_keypoint_results=True)"


def zero_keypoint_dropped_note(dropped: int, why: str = ASKED_ZERO_KEYPOINT_RULE) -> str:
    """What a result list says when xtcocotools' all-zero rule left results out (`why`: the rule's reason)."""
    return f"{dropped} result(s) with every keypoint score at 0 left out, {why}"


def without_zero_keypoint_results(res: Results, why: str = ASKED_ZERO_KEYPOINT_RULE) -> Results:
    """xtcocotools' rule: results whose keypoint scores are all <= 0 are left out (its COCOeval skips them)."""
    from kpbench.evaluation.cocofiles import is_zero_keypoint_result

    kept = [r for r in res.results if not is_zero_keypoint_result(r["keypoints"])]
    dropped = len(res.results) - len(kept)
    notes = [n for n in res.notes if "every keypoint score at 0" not in n]
    if dropped:
        notes.append(zero_keypoint_dropped_note(dropped, why))
    return Results(results=kept, source=res.source, notes=notes)


def without_zero_keypoint_arrays(detections: DetectionArrays, notes: list[str], why: str = ASKED_ZERO_KEYPOINT_RULE
                                  ) -> tuple[DetectionArrays, list[str]]:
    """`without_zero_keypoint_results` on arrays."""
    from kpbench.evaluation.cocofiles import zero_keypoint_rows

    assert detections.keypoints is not None
    keep = ~zero_keypoint_rows(detections.keypoints)
    dropped = int(np.count_nonzero(~keep))
    notes = [n for n in notes if "every keypoint score at 0" not in n]
    if dropped:
        notes.append(zero_keypoint_dropped_note(dropped, why))
        detections = detections.take(keep)
    return detections, notes


def zero_keypoint_rule(schema: KeypointSchema | None, iou_type: str, asked: bool) -> str | None:
    """Why xtcocotools' all-zero rule applies to this evaluation, or None when it does not: the schema's protocol
    has it (CrowdPose's reference, xtcocotools' keypoints_crowd, skips such results), or the caller asked."""
    if iou_type != "keypoints":
        return None
    if schema is not None and schema.protocol == "crowdpose":
        from kpbench.evaluation.crowdpose import ZERO_KEYPOINT_RULE

        return ZERO_KEYPOINT_RULE
    return ASKED_ZERO_KEYPOINT_RULE if asked else None


def _run_backend(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results | DetectionArrays | CheckedDetections,
    iou_type: str,
    backend: str,
    checked: bool,
    schema: KeypointSchema | None,
    drop_zero_keypoints: bool = False,
    settings: EvalSettings | None = None,
    sigmas: Sequence[float] | None = None,
) -> _BackendRun:
    """Validate (when `checked`) and evaluate parsed data; unchecked files go to the backend as they are."""
    gt_data: GroundTruth | None = None
    if checked:
        gt_data = load_ground_truth(gt, iou_type, schema, sigmas)
        schema = gt_data.schema
        num_keypoints = schema.num_keypoints if schema is not None and iou_type == "keypoints" else 0
        zero_rule = zero_keypoint_rule(schema, iou_type, drop_zero_keypoints)
        if isinstance(results, (DetectionArrays, CheckedDetections)):
            checked_dets = (results if isinstance(results, CheckedDetections)
                            else validate_detection_arrays(results, gt_data, iou_type))
            detections, notes = checked_dets.detections, list(checked_dets.notes)
            if zero_rule is not None:
                detections, notes = without_zero_keypoint_arrays(detections, notes, zero_rule)
            inputs = EvalInputs(iou_type, num_keypoints, gt_dataset=gt_data.dataset, gt_source=gt_data.source,
                                detections=detections)
            notes = [*gt_data.notes, *notes]
        else:
            res = load_results(results, gt_data, iou_type)
            if zero_rule is not None:
                res = without_zero_keypoint_results(res, zero_rule)
            from kpbench.evaluation.arrays import loadres_areas

            inputs = EvalInputs(
                iou_type, num_keypoints, gt_dataset=gt_data.dataset, gt_source=gt_data.source, records=res.results,
                # Records parsed here from a results file are ours alone, so the backend may add its keys to them.
                owned_records=isinstance(results, (str, Path)),
                detection_areas=loadres_areas(res.results) if iou_type == "keypoints" else None,
            )
            notes = [*gt_data.notes, *res.notes]
    else:
        num_keypoints = schema.num_keypoints if schema is not None and iou_type == "keypoints" else COCO17.num_keypoints
        if backend == "hotcoco":
            inputs = EvalInputs(iou_type, num_keypoints, gt_path=Path(gt), gt_source=str(gt),  # type: ignore[arg-type]
                                results_path=Path(results))  # type: ignore[arg-type]
        else:
            records = read_json(results)  # type: ignore[arg-type]
            from kpbench.evaluation.arrays import loadres_areas

            inputs = EvalInputs(iou_type, num_keypoints, gt_dataset=read_json(gt), gt_source=str(gt),  # type: ignore[arg-type]
                                records=records, owned_records=True)
            if backend == "vectorized" and iou_type == "keypoints" and isinstance(records, list):
                with contextlib.suppress(KpbenchError):  # the backend's own failure is worded below
                    inputs.detection_areas = loadres_areas(records)
        notes = [UNCHECKED_NOTE]
    try:
        # What the threshold sweeps need besides the matches, read before pycocotools adds its keys (a `bbox`).
        result_scores = has_bbox = None
        if isinstance(inputs.records, list):
            records = inputs.records
            result_scores = np.asarray([r["score"] for r in records], dtype=np.float64)
            if iou_type == "keypoints":
                has_bbox = np.fromiter((loadres_takes_box(r) for r in records), dtype=bool, count=len(records))
        elif inputs.detections is not None:
            result_scores = inputs.detections.scores
            has_bbox = np.zeros(len(inputs.detections), dtype=bool) if iou_type == "keypoints" else None
        sigma_array = schema.sigma_array if schema is not None and iou_type == "keypoints" else None
        if checked and iou_type == "keypoints" and schema is not None and schema.protocol == "crowdpose":
            from kpbench.evaluation.crowdpose import crowd_stats

            if settings is not None and not settings.is_default():
                raise KpbenchError(f"{gt_data.source}: CrowdPose's protocol has fixed COCOeval parameters; "  # type: ignore[union-attr]
                                   "evaluate it without --max-dets/--area-ranges/--iou-thresholds/--use-cats")
            protocol_stats, output, crowd_notes = crowd_stats(gt_data, inputs, backend)  # type: ignore[arg-type]
            return _BackendRun(output, [*notes, *crowd_notes], result_scores, has_bbox, schema, protocol_stats,
                               inputs)
        output = get_backend(backend).run(inputs, sigma_array, settings)
    except KpbenchError as exc:
        if not checked:
            raise KpbenchError(
                f"{gt} / {results}: {backend} failed on the unchecked input ({exc}); evaluate with input checks on "
                "(without --no-validate) for a clear message"
            ) from None
        raise
    except Exception as exc:
        if checked and backend == "hotcoco":
            # hotcoco is stricter than pycocotools in places (a negative id, num_keypoints 3.5, iscrowd 0.5).
            raise KpbenchError(
                f"{_input_name(gt, 'ground truth')} / {_input_name(results, 'results')}: hotcoco refused input that "
                f"pycocotools accepts ({type(exc).__name__}: {exc}); evaluate with --backend pycocotools"
            ) from None
        if checked:
            raise  # a checked input that the backend fails on is a bug, worth its traceback
        raise KpbenchError(
            f"{gt} / {results}: {backend} failed on the unchecked input ({type(exc).__name__}: {exc}); "
            "evaluate with input checks on (without --no-validate) for a clear message"
        ) from None
    return _BackendRun(output, notes, result_scores, has_bbox, schema, inputs=inputs)


USE_CATS_KEYPOINT_NOTE = (
    "useCats=0 with keypoints: pycocotools' computeOks ignores it and would score every keypoint stat 0"
)


def evaluate(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results | DetectionArrays | CheckedDetections,
    iou_type: str = "keypoints",
    backend: str = DEFAULT_BACKEND,
    validate: bool = True,
    schema: KeypointSchema | None = None,
    drop_zero_keypoint_results: bool = False,
    settings: EvalSettings | None = None,
    sigmas: Sequence[float] | None = None,
) -> EvalResult:
    """Evaluate COCO results against ground truth; returns stats, arrays and matches as data.

    `gt` is a path, a parsed GT dict or a checked `GroundTruth`; `results` a path, a list of result dicts, a
    checked `Results`, or `kpbench.core.arrays.DetectionArrays` (row i is result i of the COCO results file they
    stand for: keypoint results without a 'bbox', box results xywh; `CheckedDetections` once checked). Both are
    validated first.
    `backend`: "vectorized" (the default: pycocotools' numbers and matches bit for bit, on arrays), "pycocotools"
    (the reference) or "hotcoco".
    Keypoint evaluation uses `schema`'s sigmas, set on the backend; without one, the schema the GT's keypoint
    category names (coco17 for COCO persons; see `kpbench.evaluation.cocofiles.resolve_schema`). maxDets is 20
    for keypoints, 1/10/100 for boxes.
    Unchecked keypoint files (`validate=False`) are scored with `schema`, or the backend's built-in COCO sigmas.
    `drop_zero_keypoint_results` applies xtcocotools' rule (results whose keypoint scores are all 0 are left out);
    off by default, since pycocotools counts them, and a note says when there are any.
    `sigmas` (K numbers) score the GT's keypoint category with those sigmas instead of a built-in schema's.
    `settings` (`kpbench.evaluation.settings.EvalSettings`) sets COCOeval's maxDets, area ranges, thresholds and
    useCats; every backend honours them, except useCats=0 for keypoints, which pycocotools' computeOks ignores
    (every keypoint stat would be 0): the vectorized backend is then used, with a note.
    With two paths and the vectorized backend, the files are parsed straight into arrays and checked there; with
    hotcoco and msgspec installed, the checks run without Python dicts and hotcoco parses the files itself (see
    `kpbench.evaluation.fastcheck`). The verdict and the notes are those of the full checks either way.
    `validate=False` (with two paths; parsed data is always checked) hands the files to the backend unchecked:
    a file pycocotools mis-scores is then scored as it does (e.g. GT id 0), and one it cannot read fails with the
    backend's own message.
    """
    check_backend(backend)
    check_iou_type(iou_type)
    settings = settings or DEFAULT_SETTINGS
    setting_notes = settings_notes(settings, iou_type)
    if not settings.use_cats and iou_type == "keypoints":
        # pycocotools' computeOks reads the per-category dicts even with useCats=0 and finds them empty.
        if backend == "pycocotools":
            backend = DEFAULT_BACKEND
            setting_notes.append(f"{USE_CATS_KEYPOINT_NOTE}; evaluated with the vectorized backend, which honours it "
                                 "(as hotcoco does)")
        elif backend == "vectorized":
            setting_notes.append(f"{USE_CATS_KEYPOINT_NOTE}; the vectorized backend honours it (as hotcoco does)")
    for value in (gt, results):
        if isinstance(value, (str, Path)):  # before any backend opens it (a FIFO would block hotcoco too)
            check_regular_file(value, "JSON file")
    two_files = isinstance(gt, (str, Path)) and isinstance(results, (str, Path))
    if drop_zero_keypoint_results and not validate:
        raise KpbenchError("drop_zero_keypoint_results needs the input checks (validate=True): it reads every result")
    if sigmas is not None and schema is not None:
        raise KpbenchError("give a schema or sigmas, not both (--schema / --sigmas)")
    if not validate and schema is not None and schema.protocol != "coco":
        raise KpbenchError(f"the {schema.name} schema's own protocol needs the input checks (validate=True, without "
                           "--no-validate)")
    if not validate and sigmas is not None:
        from kpbench.core.schema import KeypointSchema as _Schema

        # Unchecked files are not read here, so the sigmas come as a schema of their own count.
        schema = _Schema("sigmas", tuple(f"k{i}" for i in range(len(sigmas))), (), tuple(float(s) for s in sigmas))
        sigmas = None
    if schema is None and sigmas is None and iou_type == "keypoints" and (validate or not two_files):
        try:
            return _evaluate(gt, results, iou_type, backend, validate, schema, drop_zero_keypoint_results, settings,
                             sigmas, setting_notes, two_files)
        except SeveralKeypointSets:
            from kpbench.evaluation.categories import evaluate_per_category

            return evaluate_per_category(gt, results, backend, settings, drop_zero_keypoint_results)
    return _evaluate(gt, results, iou_type, backend, validate, schema, drop_zero_keypoint_results, settings, sigmas,
                     setting_notes, two_files)


def _evaluate(
    gt: Any, results: Any, iou_type: str, backend: str, validate: bool, schema: KeypointSchema | None,
    drop_zero_keypoint_results: bool, settings: EvalSettings, sigmas: Sequence[float] | None,
    setting_notes: list[str], two_files: bool,
) -> EvalResult:
    """`evaluate` after its argument checks (one keypoint set)."""
    run = None
    fast = validate and two_files and not drop_zero_keypoint_results and sigmas is None
    if fast and backend == "hotcoco":
        run = _hotcoco_on_checked_files(gt, results, iou_type, schema, settings)
    elif fast and backend == "vectorized":
        run = _vectorized_on_checked_files(gt, results, iou_type, schema, settings)
    if run is None:
        run = _run_backend(gt, results, iou_type, backend, checked=validate or not two_files, schema=schema,
                           drop_zero_keypoints=drop_zero_keypoint_results, settings=settings, sigmas=sigmas)
    out = run.output
    p = out.params
    notes = [*run.notes, *setting_notes]
    if iou_type == "keypoints" and run.schema is not None and run.schema.name != COCO17.name:
        notes.append(f"OKS uses the {run.schema.name} schema's {run.schema.num_keypoints} sigmas, not COCO's person ones")
    if run.protocol_stats is not None:
        stat_dict = run.protocol_stats
    elif not same_as_coco(settings, iou_type) or out.stats is None:
        # summarize() hard-codes COCO's parameters; computed here from the arrays, as it averages them.
        stat_dict = summarize(out.precision, out.recall, list(p.iou_thresholds), p.area_labels, p.max_dets, iou_type)
    else:
        names = stat_names(iou_type)
        if len(out.stats) != len(names):
            raise RuntimeError(f"{backend} returned {len(out.stats)} stats for {iou_type}, expected {len(names)}")
        stat_dict = dict(zip(names, out.stats))
    return EvalResult(
        iou_type=iou_type,
        backend=backend,
        stats=stat_dict,
        precision=out.precision,
        recall=out.recall,
        scores=out.scores,
        params=p,
        image_evals=out.image_evals,
        num_images=len(p.image_ids),
        num_gt=out.num_gt,
        num_results=out.num_results,
        notes=notes,
        result_scores=run.result_scores,
        result_has_bbox=run.result_has_bbox,
        schema=run.schema if iou_type == "keypoints" else None,
        settings=settings,
        matches=out.matches,
        inputs=run.inputs,
    )


# --------------------------------------------------------------------------------------------------------------
# COCOeval's matching, for the analyses built on it (threshold sweeps, per-keypoint breakdown)


def matches_note(purpose: str, backend: str) -> str:
    """What a command that needs per-image matches says when it evaluates again because `backend` exposes none."""
    return (f"{purpose} needs COCOeval's per-image matches, which {backend} does not expose: "
            f"evaluated again with the {DEFAULT_BACKEND} backend for it (pycocotools' numbers and matches)")


def require_image_evals(result: EvalResult, purpose: str) -> Sequence[ImageEval]:
    """The per-image matches of `result`; a KpbenchError saying why `purpose` needs them when the backend kept none."""
    if result.image_evals is None:
        raise KpbenchError(
            f"{purpose} needs COCOeval's per-image matches, which the {result.backend} backend does not expose; "
            f"use --backend {DEFAULT_BACKEND} (the default) or pycocotools"
        )
    return result.image_evals


def with_matches(result: EvalResult, purpose: str) -> tuple[EvalResult, list[str]]:
    """`result` if it carries per-image matches, else `result` with the per-image matches of the same evaluation
    made again on the default backend (from the inputs it kept), and the note that says so. Its stats and arrays,
    and its `backend`, stay the given backend's: only the matches come from the default one."""
    if result.image_evals is not None:
        return result, []
    if result.inputs is None:
        require_image_evals(result, purpose)
    inputs = result.inputs
    assert inputs is not None
    sigmas = result.schema.sigma_array if result.schema is not None and result.iou_type == "keypoints" else None
    output = get_backend(DEFAULT_BACKEND).run(inputs, sigmas, result.settings)
    import dataclasses

    again = dataclasses.replace(result, image_evals=output.image_evals, matches=output.matches)
    return again, [matches_note(purpose, result.backend)]


def iou_threshold_index(result: EvalResult, value: float) -> int:
    """The index of IoU/OKS threshold `value`, found as COCOeval's summarize() finds AP50 and AP75 (==)."""
    found = np.flatnonzero(value == result.params.iou_thresholds)
    if len(found) == 0:
        raise KpbenchError(
            f"the evaluation has no IoU/OKS threshold {value} (thresholds: {result.params.iou_thresholds.tolist()})"
        )
    return int(found[0])


@dataclass
class MatchedPairs:
    """Detections COCOeval matched to a non-ignored GT at one IoU/OKS threshold (area "all", each image's top
    maxDet by score), in evalImgs order. Matches to crowd regions or to unlabelled GT persons are left out."""

    dt_ids: np.ndarray  # (P,) pycocotools' 1-based positions in the results list
    gt_ids: np.ndarray  # (P,) GT annotation ids
    scores: np.ndarray  # (P,) the detections' scores


def matched_pairs(result: EvalResult, iou_threshold: float, purpose: str) -> MatchedPairs:
    """Every (detection, GT) pair COCOeval's own matching made at `iou_threshold` (see MatchedPairs)."""
    t = iou_threshold_index(result, iou_threshold)
    area_all = result.params.area_labels.index("all")
    table = result.table_matches()
    if table is not None:
        # A match to an ignored GT sets dtIgnore, so "matched and not ignored" is a match to a counted GT; the
        # table lists the evaluated detections in evalImgs order (category, image, rank) already.
        take = table.counted()[area_all, t] & ~table.dt_ignore[area_all, t]
        return MatchedPairs(table.dt_index[take] + 1, table.gt_ids[table.dt_gt[area_all, t][take]],
                            table.dt_scores[take])
    image_evals = require_image_evals(result, purpose)
    dt_ids, gt_ids, scores = [], [], []
    for e in image_evals:
        if e.area_index != area_all:
            continue
        take = (e.dt_matches[t] != 0) & ~e.dt_ignore[t]
        if take.any():
            dt_ids.append(e.dt_ids[take])
            gt_ids.append(e.dt_matches[t][take])
            scores.append(e.dt_scores[take])
    if not dt_ids:
        return MatchedPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    # GT ids are integers below 2**53 (checked on input), so the float64 match array holds them exactly.
    return MatchedPairs(np.concatenate(dt_ids), np.concatenate(gt_ids).astype(np.int64), np.concatenate(scores))


# --------------------------------------------------------------------------------------------------------------
# Output. One scale per kind of output: what people read (the terminal table, Markdown) shows percent with one
# decimal and "n/a" for COCO's -1 ("no GT in that area range"); what programs read (JSON, CSV) keeps COCO's
# fractions at full precision, -1 included.

PERCENT_NOTE = "COCO stats in percent; n/a where COCO has no GT in that area range"


def percent(value: float) -> str:
    """A COCO stat for people: percent with one decimal (0.6493 -> "64.9"), COCO's -1 as "n/a"."""
    return f"{100 * value:.1f}" if value >= 0 else "n/a"


def metrics_rows(results: dict[str, EvalResult]) -> list[dict[str, Any]]:
    """Long-format rows (iou_type, stat, value) with full-precision fractions, for CSV."""
    return [
        {"iou_type": iou_type, "stat": name, "value": value}
        for iou_type, result in results.items()
        for name, value in result.stats.items()
    ]


def metrics_json(results: dict[str, EvalResult]) -> dict[str, Any]:
    """{"keypoints": {"AP": ..., ...}, "bbox": {...}}: fractions at full precision (-1 where COCO gives -1). COCOeval
    parameters other than COCO's are recorded under "params" ({iou_type: settings}); without it they are COCO's."""
    out: dict[str, Any] = {iou_type: dict(result.stats) for iou_type, result in results.items()}
    params = {t: r.settings.to_json() for t, r in results.items() if not r.settings.is_default()}
    if params:
        out["params"] = params
    return out


def write_metrics(out_dir: str | Path, results: dict[str, EvalResult]) -> list[Path]:
    """Write metrics.csv (fractions), metrics.md (percent) and metrics.json (fractions, nested by iou type) into
    out_dir (atomically); returns the paths."""
    out = Path(out_dir)
    return atomic_write_files({
        out / "metrics.csv": to_csv(metrics_rows(results)),
        out / "metrics.md": format_stats_markdown(results),
        out / "metrics.json": json_text(metrics_json(results)),
    })


def format_stats_markdown(results: dict[str, EvalResult]) -> str:
    """One Markdown table per iou type: stat names as columns, values in percent with one decimal (n/a for -1).
    This is metrics.md, and what `kpbench evaluate --format markdown` prints."""
    parts = []
    for iou_type, result in results.items():
        row = {name: percent(value) for name, value in result.stats.items()}
        parts.append(f"### {iou_type} ({result.backend})\n\n" + to_markdown([row]))
    return "\n".join(parts) + f"\n{PERCENT_NOTE}. metrics.json and metrics.csv hold COCO's fractions.\n"


def format_stats_table(results: dict[str, EvalResult]) -> str:
    """The terminal view of `kpbench evaluate`: per iou type, what was evaluated, then the stats in percent."""
    parts = []
    for iou_type, result in results.items():
        parts.append(
            f"{iou_type} ({result.backend}): {result.num_results} detections, {result.num_gt} GT, "
            f"{result.num_images} images\n"
            + to_text_table([{name: percent(value) for name, value in result.stats.items()}])
        )
    return "\n".join(parts) + f"{PERCENT_NOTE}.\n"
