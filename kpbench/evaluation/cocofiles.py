"""Loading and validating COCO ground truth and results. Every "bad input" error is raised here.

pycocotools trusts its input: a NaN coordinate, a 50-value keypoint list or an unknown image id either crash
deep inside it or change the numbers silently. We check everything first, with messages that name the file,
the record and the field.
"""

from __future__ import annotations

import itertools
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kpbench.core.arrays import DetectionArrays
from kpbench.core.errors import KpbenchError, KpbenchWarning, shown
from kpbench.core.io import read_json
from kpbench.core.schema import BUILTIN_SCHEMAS, COCO17, KEYPOINT_MAX_DETS, KeypointSchema, is_id_value
from kpbench.evaluation.arrays import loadres_takes_box

# kpbench.core.config's IOU_TYPES (tested equal), not imported from there: the config module (dataclasses,
# tomllib) costs `kpbench evaluate` ~5 ms of start-up and nothing else of it is needed here.
IOU_TYPES = ("keypoints", "bbox")
# CrowdPose's evaluation scales OKS by the box area times this (xtcocotools' keypoints_crowd with use_area=False).
CROWDPOSE_BOX_AREA_FACTOR = 0.53


class SeveralKeypointSets(KpbenchError):
    """A GT whose keypoint categories list different keypoint sets: `evaluate` scores each with its own schema."""


def check_iou_type(iou_type: str, option: str = "--iou-type") -> str:
    """`iou_type` if it is one of IOU_TYPES, else a KpbenchError naming the option."""
    if iou_type not in IOU_TYPES:
        raise KpbenchError(f"{option}: must be keypoints or bbox, got {iou_type!r}")
    return iou_type


@dataclass
class GroundTruth:
    """A validated COCO ground-truth dataset (the parsed JSON) and where it came from."""

    dataset: dict[str, Any]
    source: str
    notes: list[str] = field(default_factory=list)
    # The keypoint set its keypoint annotations follow (None for a GT validated for boxes only).
    schema: KeypointSchema | None = None

    @property
    def image_ids(self) -> list[int]:
        return [img["id"] for img in self.dataset["images"]]


@dataclass
class Results:
    """A validated COCO results list (the records as given, in order) and where it came from."""

    results: list[dict[str, Any]]
    source: str
    notes: list[str] = field(default_factory=list)


def _is_number(value: Any) -> bool:
    """A JSON number: a Python int or float, not a bool (JSON's true/false are not numbers, although Python and
    numpy would silently read them as 1 and 0)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _holds_bool(values: list[Any], nested: bool) -> bool:
    """Whether any value (or, `nested`, any item of any list) is a bool: one C-level pass over the types."""
    flat = itertools.chain.from_iterable(v for v in values if isinstance(v, (list, tuple))) if nested else values
    return bool in set(map(type, flat))


def _finite_array(values: list[Any], width: int | None, where: str, name: str, kind: str) -> np.ndarray:
    """Stack per-record numbers (width None) or numeric lists of `width` into a float array.

    Strings are refused although numpy would parse them: pycocotools would not ("0.5" as a score crashes its
    sort). So are bools (JSON true/false), which numpy would read as 1 and 0. The first bad record is located
    only when the fast whole-array check fails, to word the message.
    """
    try:
        arr = np.asarray(values)
        ok = arr.dtype.kind in "iuf" and arr.ndim == (1 if width is None else 2)
        ok = ok and (width is None or arr.shape[1] == width)
        ok = ok and not _holds_bool(values, nested=width is not None)
    except (ValueError, TypeError):  # ragged lists
        ok = False
    if not ok:
        for i, v in enumerate(values):
            if width is None:
                if not _is_number(v):
                    raise KpbenchError(f"{where}: {kind} {i}: '{name}' must be a number, got {v!r}")
            else:
                if not isinstance(v, list):
                    raise KpbenchError(f"{where}: {kind} {i}: '{name}' must be a list, got {type(v).__name__}")
                if len(v) != width:
                    hint = f" (3 x {width // 3} keypoints)" if name == "keypoints" else ""
                    raise KpbenchError(f"{where}: {kind} {i}: '{name}' has {len(v)} values, expected {width}{hint}")
                bad = [x for x in v if not _is_number(x)]
                if bad:
                    raise KpbenchError(f"{where}: {kind} {i}: '{name}' holds a non-number ({bad[0]!r})")
        arr = np.asarray(values, dtype=object)  # every value is a number: ints too large for int64, say
    try:
        arr = arr.astype(np.float64)
    except OverflowError:  # a JSON integer beyond float64 (over 308 digits), which no coordinate needs
        arr = np.asarray([_as_float_or_inf(v) for v in (values if width is None else itertools.chain(*values))])
        arr = arr.reshape(len(values), -1) if width is not None else arr
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise KpbenchError(f"{where}: {kind} {i}: '{name}' holds NaN or infinity")
    return arr


def _as_float_or_inf(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf")


# pycocotools stores matched GT ids in float64 arrays (COCOeval's dtMatches): larger ids would not survive.
MAX_COCO_ID = 2**53


def _require_integer_ids(records: list[dict[str, Any]], key: str, where: str, kind: str) -> None:
    """Every record's `key` is a JSON integer below 2**53 (COCO's ids; kpbench looks matches up by them)."""
    for i, rec in enumerate(records):
        value = rec[key]
        if type(value) is not int or not -MAX_COCO_ID < value < MAX_COCO_ID:
            raise KpbenchError(
                f"{where}: {kind} {i}: '{key}' must be an integer (as COCO ids are) below 2**53, got {shown(value)}"
            )


def _require_id_refs(records: list[dict[str, Any]], keys: tuple[str, ...], where: str, kind: str) -> None:
    """References to other records' ids (image_id, category_id) are integer ids."""
    for key in keys:
        values = [rec[key] for rec in records]
        if set(map(type, values)) <= {int}:  # the usual case, in one C-level pass
            continue
        bad = next((i for i, v in enumerate(values) if not is_id_value(v)), None)
        if bad is not None:
            raise KpbenchError(f"{where}: {kind} {bad}: '{key}' must be an integer id, got {shown(values[bad])}")


def _require_keys(records: list[Any], keys: tuple[str, ...], where: str, kind: str) -> None:
    required = set(keys)
    # Fast path: one C-level subset test per record; the slow loop below only runs to word the error.
    if all(type(rec) is dict and required <= rec.keys() for rec in records):
        return
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise KpbenchError(f"{where}: {kind} {i} is a {type(rec).__name__}, expected an object")
        missing = [k for k in keys if k not in rec]
        if missing:
            ident = f" (id {shown(rec['id'])})" if "id" in rec else ""
            raise KpbenchError(f"{where}: {kind} {i}{ident} has no '{missing[0]}'")


def _refuse_duplicate_ids(records: list[dict[str, Any]], where: str, kind: str) -> None:
    """Ids are unique: pycocotools indexes records by id, so a second record with an id silently replaces the first."""
    ids = [rec["id"] for rec in records]
    if len(set(ids)) == len(ids):
        return
    first: dict[int, int] = {}
    for i, value in enumerate(ids):
        if value in first:
            raise KpbenchError(
                f"{where}: {kind} {i}: duplicate {kind} id {value} (also {kind} {first[value]}); ids must be unique"
            )
        first[value] = i


# The notes checks attach to a validation (shared with kpbench.evaluation.fastcheck, which must word them identically).


def instance_noun(schema: KeypointSchema | None) -> str:
    """What the notes call a GT instance: "person(s)" for persons (and boxes), else the category's name."""
    name = schema.category_name if schema is not None else "person"
    return "person(s)" if name == "person" else f"'{name}' keypoint instance(s)"


def unlabelled_note(count: int, instances: str = "person(s)") -> str:
    return (
        f"{count} GT {instances} have no labelled keypoints: COCOeval ignores them, and a detection "
        "whose OKS to their doubled box region passes a threshold matches one and is ignored too (neither TP nor FP)"
    )


def empty_results_note(source: str, instances: str = "person(s)") -> str:
    thing = "person" if instances == "person(s)" else instances.replace("instance(s)", "instance")
    return f"{source}: no detections; AP and AR are 0 (-1 where the GT has no {thing} to find)"


def coverage_note(covered: int, total: int, missed: int, instances: str = "person(s)") -> str:
    return (
        f"results cover {covered} of {total} GT images; COCOeval scores every GT image, so "
        f"missing images count as misses ({missed} GT {instances} in the uncovered images)"
    )


def is_zero_keypoint_result(keypoints: list[Any]) -> bool:
    """Whether every keypoint score (each third value) of a result is <= 0: xtcocotools drops such results."""
    return not any(v > 0 for v in keypoints[2::3])


def zero_keypoint_rows(keypoints: np.ndarray) -> np.ndarray:
    """(N,) for keypoint results as arrays (N, K, 3): True where no keypoint score is above 0 (the test of
    `is_zero_keypoint_result`, xtcocotools' `np.count_nonzero(d[2::3] > 0) == 0`)."""
    return ~(np.asarray(keypoints)[:, :, 2] > 0).any(axis=1)


def count_zero_keypoint_results(keypoint_lists: Any) -> int:
    """How many results have no keypoint with a score above 0."""
    return sum(1 for kps in keypoint_lists if is_zero_keypoint_result(kps))


def zero_keypoint_results_note(count: int) -> str:
    return (
        f"{count} result(s) have every keypoint score at 0: pycocotools scores them like any other result (this "
        "evaluation does); xtcocotools drops them (drop_zero_keypoint_results=True, --drop-zero-keypoints)"
    )


def crowded_images_note(count: int) -> str:
    return (
        f"{count} image(s) have more than {KEYPOINT_MAX_DETS} detections; COCO keypoint evaluation keeps "
        f"only the top {KEYPOINT_MAX_DETS} by score per image (maxDets is hard-coded in pycocotools)"
    )


def validate_ground_truth(
    data: Any, source: str, iou_type: str = "keypoints", copy: bool = True, schema: KeypointSchema | None = None,
    sigmas: Sequence[float] | None = None,
) -> GroundTruth:
    """Check a parsed GT dataset; renumber an annotation id 0 (which pycocotools mis-scores) with a warning.

    For keypoints, the GT's keypoint set is `schema` when given, else the one its keypoint category names (see
    `resolve_schema`): its keypoint count decides the length of every keypoint list.

    With `copy` (the default) the GroundTruth holds copies of the annotation records, so neither the renumbering
    nor pycocotools (which adds keys to them) changes the caller's data. Loaders of files we parsed skip it.
    """
    check_iou_type(iou_type)
    if not isinstance(data, dict):
        raise KpbenchError(f"{source}: ground truth must be a JSON object with 'images', got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise KpbenchError(f"{source}: ground truth has no '{key}' list")
    _require_keys(data["images"], ("id",), source, "image")
    _require_keys(data["categories"], ("id",), source, "category")
    _require_integer_ids(data["images"], "id", source, "image")
    _require_integer_ids(data["categories"], "id", source, "category")
    _refuse_duplicate_ids(data["images"], source, "image")
    annotations = [dict(a) if isinstance(a, dict) else a for a in data["annotations"]] if copy else data["annotations"]
    _require_keys(annotations, ("id", "image_id", "category_id"), source, "annotation")
    _require_integer_ids(annotations, "id", source, "annotation")
    _require_id_refs(annotations, ("image_id", "category_id"), source, "annotation")
    schema_notes: list[str] = []
    if iou_type == "keypoints":
        schema, schema_notes = resolve_schema(data["categories"], annotations, source, schema, sigmas)
    # CrowdPose's GT has no area: its evaluation takes the OKS scale from the box (filled in below).
    box_area = iou_type == "keypoints" and schema.protocol == "crowdpose"  # type: ignore[union-attr]
    needed = ("id", "image_id", "category_id", "bbox", *(() if box_area else ("area",)), "iscrowd")
    if iou_type == "keypoints":
        needed += ("keypoints", "num_keypoints")
    _require_keys(annotations, needed, source, "annotation")
    if annotations:
        boxes = _finite_array([a["bbox"] for a in annotations], 4, source, "bbox", "annotation")
        if box_area:
            missing = [a for a in annotations if "area" not in a]
            for ann in missing:
                w, h = ann["bbox"][2], ann["bbox"][3]
                ann["area"] = w * h * CROWDPOSE_BOX_AREA_FACTOR
            if missing:
                schema_notes.append(
                    f"{source}: {len(missing)} annotation(s) have no 'area'; the OKS scale is the box's "
                    f"w * h * {CROWDPOSE_BOX_AREA_FACTOR}, as CrowdPose's evaluation takes it (xtcocotools use_area=False)"
                )
        areas = _finite_array([a["area"] for a in annotations], None, source, "area", "annotation")
        _refuse_negative(boxes[:, 2:].min(axis=1), source, "annotation", "bbox", "has a negative width or height "
                         "(expected x, y, w, h)")
        _refuse_negative(areas, source, "annotation", "area", "is negative", [a["area"] for a in annotations])
        # pycocotools tests these for truth ("0" would make a crowd) and calls int() on iscrowd.
        _finite_array([a["iscrowd"] for a in annotations], None, source, "iscrowd", "annotation")
        if iou_type == "keypoints":
            _finite_array([a["num_keypoints"] for a in annotations], None, source, "num_keypoints", "annotation")
            _finite_array([a["keypoints"] for a in annotations], schema.result_length, source, "keypoints", "annotation")  # type: ignore[union-attr]
    image_ids = {img["id"] for img in data["images"]}
    category_ids = {cat["id"] for cat in data["categories"]}
    for i, ann in enumerate(annotations):
        if ann["image_id"] not in image_ids:
            raise KpbenchError(f"{source}: annotation {i} (id {ann['id']}) refers to image {shown(ann['image_id'])}, not in 'images'")
        if ann["category_id"] not in category_ids:
            raise KpbenchError(
                f"{source}: annotation {i} (id {ann['id']}) refers to category {shown(ann['category_id'])}, not in 'categories' "
                "(pycocotools would leave it out of every score)"
            )
    notes: list[str] = list(schema_notes)
    _refuse_duplicate_ids(annotations, source, "annotation")
    unique_ids = {a["id"] for a in annotations}
    if 0 in unique_ids:
        # pycocotools stores "unmatched" as GT id 0, so a detection matched to GT id 0 counts as unmatched
        # (a false positive) and the GT as missed. We renumber it rather than refuse: the ids are arbitrary.
        new_id = max(unique_ids) + 1
        for ann in annotations:
            if ann["id"] == 0:
                ann["id"] = new_id
        msg = (
            f"{source}: annotation id 0 renumbered to {new_id}; pycocotools treats a match to id 0 as no match "
            "and would score it as a false positive plus a miss"
        )
        warnings.warn(msg, KpbenchWarning, stacklevel=3)
    if iou_type == "keypoints" and annotations and isinstance(annotations[0], dict) and "foot_kpts" in annotations[0]:
        notes.append(f"{source}: a COCO-WholeBody ground truth, scored here by its body keypoints only; "
                            "`kpbench evaluate --wholebody` (evaluate_wholebody) scores every part")
    if iou_type == "keypoints":
        unlabelled = sum(1 for a in annotations if not a["iscrowd"] and a["num_keypoints"] == 0)
        if unlabelled:
            notes.append(unlabelled_note(unlabelled, instance_noun(schema)))
    dataset = dict(data)
    dataset["annotations"] = annotations
    return GroundTruth(dataset=dataset, source=source, notes=notes, schema=schema)


def load_ground_truth(
    gt: str | Path | dict[str, Any] | GroundTruth, iou_type: str = "keypoints", schema: KeypointSchema | None = None,
    sigmas: Sequence[float] | None = None,
) -> GroundTruth:
    """Load (from a path) or take (a parsed dict) COCO ground truth, validated (see `validate_ground_truth`)."""
    if isinstance(gt, GroundTruth):
        asked_other = sigmas is not None or (schema is not None and gt.schema is not None and
                                             schema.with_category_id(gt.schema.category_id) != gt.schema)
        if iou_type == "keypoints" and (gt.schema is None or asked_other):
            # Checked for boxes only, or with another keypoint set than asked for: check again with the one asked.
            return validate_ground_truth(gt.dataset, gt.source, iou_type, copy=False, schema=schema, sigmas=sigmas)
        return gt
    if isinstance(gt, dict):
        return validate_ground_truth(gt, "ground truth", iou_type, schema=schema, sigmas=sigmas)
    return validate_ground_truth(read_json(gt), str(gt), iou_type, copy=False, schema=schema, sigmas=sigmas)


def _category_label(cat: dict[str, Any]) -> str:
    return f"category {cat['id']}"


SCHEMA_HINT = (
    "pass its keypoint schema with its sigmas (kpbench.KeypointSchema.from_category(category, sigmas), "
    "evaluate(..., schema=...))"
)


def _schema_from_sigmas(
    category: dict[str, Any] | None, names: tuple[str, ...] | None, lengths: set[int], sigmas: Sequence[float],
    source: str,
) -> tuple[KeypointSchema, list[str]]:
    """The schema of the GT's keypoint category with the given sigmas (--sigmas): its names, or k0, k1, ... ."""
    count = len(names) if names is not None else (next(iter(lengths)) // 3 if len(lengths) == 1 else len(sigmas))
    label = _category_label(category) if category is not None else "the keypoint category"
    if len(sigmas) != count:
        raise KpbenchError(f"{source}: {label} has {count} keypoints, but {len(sigmas)} sigmas were given")
    entry = dict(category or {"id": COCO17.category_id, "name": "person"})
    entry["keypoints"] = list(names) if names is not None else [f"k{i}" for i in range(count)]
    skeleton = [link for link in entry.get("skeleton") or [] if all(1 <= int(i) <= count for i in link)]
    notes = []
    if len(skeleton) != len(entry.get("skeleton") or []):
        notes.append(f"{source}: {label}'s skeleton links keypoints beyond its {count}; those links are not drawn")
    entry["skeleton"] = skeleton
    schema = KeypointSchema.from_category(entry, sigmas, name=f"{entry.get('name', 'custom')}{count}",
                                          sigmas_source="--sigmas")
    return schema, notes


def resolve_schema(
    categories: list[dict[str, Any]], annotations: list[Any], source: str, schema: KeypointSchema | None = None,
    sigmas: Sequence[float] | None = None,
) -> tuple[KeypointSchema, list[str]]:
    """The keypoint schema a GT follows, and the notes that say how it was chosen.

    The keypoint category is the one whose annotations carry keypoints (or, without annotations, the one that
    lists keypoint names). Given `schema`, its keypoint count must match the category's names. Otherwise a
    built-in schema whose names the category lists, in order, is taken. COCO's sigmas are never used in silence:
    a person category of 17 keypoints under other names, or one that lists no names, is scored as coco17 with a
    note; any other keypoint set without a schema is an error, since its sigmas decide the number.
    """
    used = {a["category_id"] for a in annotations if isinstance(a, dict) and "keypoints" in a}
    keypoint_cats = [c for c in categories if c["id"] in used] or [c for c in categories if c.get("keypoints")]
    for cat in keypoint_cats:
        names = cat.get("keypoints")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise KpbenchError(f"{source}: {_category_label(cat)}: 'keypoints' must be a list of keypoint names")
    named = [c for c in keypoint_cats if c.get("keypoints")]
    if len({tuple(c["keypoints"]) for c in named}) > 1:
        labels = ", ".join(f"{_category_label(c)}: {len(c['keypoints'])} keypoints" for c in named)
        raise SeveralKeypointSets(f"{source}: several keypoint sets ({labels}); this needs one keypoint set "
                                  "(evaluate() scores each category with its own schema; the per-keypoint analyses "
                                  "take one category at a time)")
    category = named[0] if named else (keypoint_cats[0] if keypoint_cats else None)
    category_id = category["id"] if category is not None else COCO17.category_id
    names = tuple(category["keypoints"]) if category is not None and category.get("keypoints") else None
    lengths = {len(a["keypoints"]) for a in annotations
               if isinstance(a, dict) and isinstance(a.get("keypoints"), list) and a.get("category_id") == category_id}
    if sigmas is not None and schema is None:
        return _schema_from_sigmas(category, names, lengths, sigmas, source)
    if schema is not None:
        if names is not None and len(names) != schema.num_keypoints:
            raise KpbenchError(f"{source}: {_category_label(category)} has {len(names)} keypoints, but schema "  # type: ignore[arg-type]
                               f"{schema.name} has {schema.num_keypoints}")
        return schema.with_category_id(category_id), []
    for builtin in BUILTIN_SCHEMAS.values():
        if names == builtin.keypoint_names:
            return builtin.with_category_id(category_id), []
    label = _category_label(category) if category is not None else "the keypoint category"
    is_person = category is None or category.get("name") in (None, "person")
    if names is None and lengths <= {COCO17.result_length}:
        return COCO17.with_category_id(category_id), [
            f"{source}: {label} lists no keypoint names; scored as coco17 (COCO's 17 person keypoints and sigmas)"
        ]
    if names is not None and len(names) == COCO17.num_keypoints and is_person:
        return COCO17.with_category_id(category_id), [
            f"{source}: {label} names its 17 keypoints differently from COCO ({names[0]!r}, ...); scored with "
            "COCO's person sigmas (coco17)"
        ]
    count = len(names) if names is not None else (next(iter(lengths)) // 3 if len(lengths) == 1 else "an unknown number of")
    raise KpbenchError(
        f"{source}: {label} has {count} keypoints that match no built-in keypoint schema "
        f"({', '.join(BUILTIN_SCHEMAS)}), and kpbench has no sigmas for them; {SCHEMA_HINT}"
    )


def validate_results(data: Any, source: str, gt: GroundTruth, iou_type: str = "keypoints") -> Results:
    """Check a parsed results list against its ground truth. The records are the caller's, unchanged (kpbench
    hands pycocotools copies, since its loadRes adds keys to them)."""
    check_iou_type(iou_type)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        raise KpbenchError(f"{source}: this is a ground-truth file (it has 'annotations'); expected a results list")
    if not isinstance(data, list):
        raise KpbenchError(f"{source}: results must be a JSON list of detections, got {type(data).__name__}")
    results = data
    notes: list[str] = []
    if not results:
        notes.append(empty_results_note(source, instance_noun(gt.schema)))
        return Results(results=results, source=source, notes=notes)
    geometry = "keypoints" if iou_type == "keypoints" else "bbox"
    _require_keys(results, ("image_id", "category_id", "score", geometry), source, "result")
    _require_id_refs(results, ("image_id", "category_id"), source, "result")
    _finite_array([r["score"] for r in results], None, source, "score", "result")
    if iou_type == "keypoints":
        _finite_array([r["keypoints"] for r in results], (gt.schema or COCO17).result_length, source, "keypoints", "result")
    else:
        _check_boxes(results, source)
    image_ids = {img["id"] for img in gt.dataset["images"]}
    category_ids = {cat["id"] for cat in gt.dataset["categories"]}
    result_images = [r["image_id"] for r in results]
    for field_name, values, known in (
        ("image_id", result_images, image_ids),
        ("category_id", [r["category_id"] for r in results], category_ids),
    ):
        unknown = set(values) - known
        if unknown:
            i = next(i for i, v in enumerate(values) if v in unknown)
            raise KpbenchError(
                f"{source}: result {i}: {field_name} {shown(values[i])} is not in the ground truth ({gt.source})"
            )
    covered = set(result_images)
    if len(covered) < len(image_ids):
        # Only the GT that COCOeval counts: not crowd, and (for keypoints) with labelled keypoints.
        missed = sum(
            1 for a in gt.dataset["annotations"]
            if a["image_id"] not in covered and not a["iscrowd"] and (iou_type == "bbox" or a.get("num_keypoints", 0) > 0)
        )
        notes.append(coverage_note(len(covered), len(image_ids), missed, instance_noun(gt.schema)))
    # loadRes picks how to read the whole file from its first record, in this order.
    if "caption" in results[0]:
        raise KpbenchError(f"{source}: result 0 has a 'caption'; pycocotools would read the file as captions")
    if iou_type == "keypoints":
        notes += _check_keypoint_result_boxes(results, source)
        zero = count_zero_keypoint_results(r["keypoints"] for r in results)
        if zero:
            notes.append(zero_keypoint_results_note(zero))
        crowded = sum(1 for n in Counter(result_images).values() if n > KEYPOINT_MAX_DETS)
        if crowded:
            notes.append(crowded_images_note(crowded))
    return Results(results=results, source=source, notes=notes)


def _refuse_negative(values: np.ndarray, source: str, kind: str, name: str, problem: str,
                     raw: Sequence[Any] | None = None) -> None:
    """A KpbenchError naming the first record whose `values` entry is below 0, and its value as given (`raw`);
    zero is valid: pycocotools scores an empty box or an area of 0 as any other."""
    negative = values < 0
    if negative.any():
        i = int(np.argmax(negative))
        detail = "" if raw is None else f" ({shown(raw[i])})"
        raise KpbenchError(f"{source}: {kind} {i}: '{name}' {problem}{detail}")


def _check_boxes(results: list[dict[str, Any]], source: str) -> None:
    """Every result's 'bbox' is 4 finite numbers, x, y, w, h with w, h >= 0."""
    boxes = _finite_array([r["bbox"] for r in results], 4, source, "bbox", "result")
    _refuse_negative(boxes[:, 2:].min(axis=1), source, "result", "bbox", "has a negative width or height "
                     "(expected x, y, w, h)")


def _check_keypoint_result_boxes(results: list[dict[str, Any]], source: str) -> list[str]:
    """Keypoint results and their optional 'bbox': what pycocotools' loadRes will make of them (notes)."""
    if loadres_takes_box(results[0]):
        # Every detection's area then comes from its box: each needs one, or pycocotools crashes.
        _check_boxes(results[:1], source)
        missing = next((i for i, r in enumerate(results) if not loadres_takes_box(r)), None)
        if missing is not None:
            raise KpbenchError(
                f"{source}: result 0 has a 'bbox' but result {missing} has none; pycocotools would crash "
                "(drop 'bbox' from keypoint results, as torchvision does)"
            )
        _check_boxes(results, source)
        msg = (
            f"{source}: keypoint results carry a 'bbox'; pycocotools then takes each detection's area from "
            "the box instead of the keypoints' extent, which changes APm and APl (torchvision's results "
            "carry no bbox)"
        )
        warnings.warn(msg, KpbenchWarning, stacklevel=4)
        return []
    if "segmentation" in results[0]:
        raise KpbenchError(
            f"{source}: result 0 has a 'segmentation' and no 'bbox'; pycocotools would read the file as "
            "segmentation results (drop 'segmentation' from keypoint results)"
        )
    boxed = sum(1 for r in results if loadres_takes_box(r))
    if boxed:
        return [
            f"{source}: {boxed} result(s) carry a 'bbox' but result 0 does not; pycocotools then ignores every "
            "'bbox' and takes each detection's area from its keypoints' extent"
        ]
    return []


def load_results(
    results: str | Path | list[dict[str, Any]] | Results, gt: GroundTruth, iou_type: str = "keypoints"
) -> Results:
    """Load (from a path) or take (a parsed list) COCO results, validated against `gt`."""
    if isinstance(results, Results):
        return results
    if isinstance(results, list):
        return validate_results(results, "results", gt, iou_type)
    return validate_results(read_json(results), str(results), gt, iou_type)


@dataclass
class CheckedDetections:
    """Validated results as arrays (row i is result i), where they came from, and the notes of their checks."""

    detections: DetectionArrays
    source: str
    notes: list[str] = field(default_factory=list)


def validate_detection_arrays(
    detections: DetectionArrays, gt: GroundTruth, iou_type: str = "keypoints", source: str = "results"
) -> CheckedDetections:
    """`validate_results` for detections given as arrays (row i is result i of the COCO results file they stand
    for: keypoint results without a 'bbox'): the same verdicts, messages and notes."""
    check_iou_type(iou_type)
    if not isinstance(detections, DetectionArrays):
        raise KpbenchError(f"{source}: expected DetectionArrays, got {type(detections).__name__}")
    n = len(detections)
    if n == 0:
        return CheckedDetections(detections, source, [empty_results_note(source, instance_noun(gt.schema))])
    bad = ~np.isfinite(detections.scores)
    if bad.any():
        raise KpbenchError(f"{source}: result {int(np.argmax(bad))}: 'score' holds NaN or infinity")
    if iou_type == "keypoints":
        width = (gt.schema or COCO17).result_length
        if detections.keypoints is None or detections.keypoints.shape[1] * 3 != width:
            have = 0 if detections.keypoints is None else detections.keypoints.shape[1] * 3
            raise KpbenchError(f"{source}: result 0: 'keypoints' has {have} values, expected {width} "
                               f"(3 x {width // 3} keypoints)")
        bad = ~np.isfinite(detections.keypoints.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise KpbenchError(f"{source}: result {int(np.argmax(bad))}: 'keypoints' holds NaN or infinity")
    else:
        if detections.boxes is None:
            raise KpbenchError(f"{source}: result 0 has no 'bbox'")
        bad = ~np.isfinite(detections.boxes).all(axis=1)
        if bad.any():
            raise KpbenchError(f"{source}: result {int(np.argmax(bad))}: 'bbox' holds NaN or infinity")
        _refuse_negative(detections.boxes[:, 2:].min(axis=1), source, "result", "bbox",
                         "has a negative width or height (expected x, y, w, h)")
    image_ids = np.unique(np.asarray([img["id"] for img in gt.dataset["images"]], dtype=np.int64))
    category_ids = np.unique(np.asarray([cat["id"] for cat in gt.dataset["categories"]], dtype=np.int64))
    for field_name, values, known in (("image_id", detections.image_ids, image_ids),
                                      ("category_id", detections.category_ids, category_ids)):
        unknown = ~np.isin(values, known)
        if unknown.any():
            i = int(np.argmax(unknown))
            raise KpbenchError(f"{source}: result {i}: {field_name} {int(values[i])!r} is not in the ground truth "
                               f"({gt.source})")
    notes: list[str] = []
    covered = set(np.unique(detections.image_ids).tolist())
    if len(covered) < len(image_ids):
        missed = sum(
            1 for a in gt.dataset["annotations"]
            if a["image_id"] not in covered and not a["iscrowd"] and (iou_type == "bbox" or a.get("num_keypoints", 0) > 0)
        )
        notes.append(coverage_note(len(covered), len(image_ids), missed, instance_noun(gt.schema)))
    if iou_type == "keypoints":
        zero = int(np.count_nonzero(zero_keypoint_rows(detections.keypoints)))  # type: ignore[arg-type]
        if zero:
            notes.append(zero_keypoint_results_note(zero))
        _, counts = np.unique(detections.image_ids, return_counts=True)
        crowded = int(np.count_nonzero(counts > KEYPOINT_MAX_DETS))
        if crowded:
            notes.append(crowded_images_note(crowded))
    return CheckedDetections(detections, source, notes)
