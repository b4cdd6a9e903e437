"""Input checks for two files handed to hotcoco unparsed: the verdict of `kpbench.evaluation.cocofiles`, without dicts.

hotcoco reads COCO JSON in Rust far faster than Python's json module builds dicts: at val2017 scale, parsing and
checking the dicts takes 1.3 s, hotcoco's whole evaluation 0.1 s. This module reaches the full checks' verdict
another way:

- msgspec decodes each file in C into typed records: ids (`id`) must be JSON integers below 2**53, `image_id` and
  `category_id` JSON integers; scores, boxes, areas, `iscrowd` and `num_keypoints` finite numbers (NaN fails
  every bound, a bool or a string is refused); the required fields present;
- each keypoint list stays raw JSON text (no float objects) and must hold exactly 3 x 17 - 1 commas;
- hotcoco's own parser then refuses anything but a finite number inside a keypoint list (a string, bool, null,
  NaN, nested list or out-of-range number is an error there), so those commas separate 51 numbers.

`check_files` returns what the full checks would attach (their notes), or None whenever it cannot prove that the
full checks would pass silently: any error, but also every case they warn about or repair (an annotation id 0,
keypoint results that carry a bbox) or accept in a form msgspec's strict types refuse (an id written as 1.0, a
file in UTF-16). The caller then runs the full checks, which word the message, and so it does when hotcoco's
parser refuses a file. The wording lives in one place, and the fast path can only ever be slower than the full
checks, never different, for every file Python's json module can parse. (It cannot parse nesting about 1000
levels deep; such a file, if its deep part lies in a field kpbench does not read, is scored here.)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from pathlib import Path

import msgspec
import numpy as np
from msgspec import UNSET, Raw, Struct, UnsetType

from kpbench.core.schema import BUILTIN_SCHEMAS, KEYPOINT_MAX_DETS, KeypointSchema
from kpbench.evaluation.cocofiles import (
    check_iou_type,
    coverage_note,
    crowded_images_note,
    empty_results_note,
    instance_noun,
    unlabelled_note,
    zero_keypoint_results_note,
)
from kpbench.evaluation.cocorecords import CategoryRecord as _Category
from kpbench.evaluation.cocorecords import CocoId, Finite, NonNegative
from kpbench.evaluation.cocorecords import ImageRecord as _Image

# gc=False: no record can be part of a reference cycle, and untracked objects decode faster.


class _Annotation(Struct, gc=False):
    id: CocoId
    image_id: int
    category_id: int
    # A negative width, height or area is refused by the full checks, which word it (zero is valid).
    bbox: tuple[Finite, Finite, NonNegative, NonNegative]
    area: NonNegative
    iscrowd: Finite
    num_keypoints: Finite | UnsetType = UNSET
    keypoints: Raw | UnsetType = UNSET
    foot_kpts: Raw | UnsetType = UNSET  # a COCO-WholeBody GT: the full checks add their note about it


class _GroundTruth(Struct, gc=False):
    images: list[_Image]
    annotations: list[_Annotation]
    categories: list[_Category]


class _KeypointResult(Struct, gc=False):
    image_id: int
    category_id: int
    score: Finite
    keypoints: Raw
    # Present at all: the full checks decide (pycocotools reads a whole file by its first record's fields).
    bbox: Raw | UnsetType = UNSET
    segmentation: Raw | UnsetType = UNSET
    caption: Raw | UnsetType = UNSET


class _BoxResult(Struct, gc=False):
    image_id: int
    category_id: int
    score: Finite
    bbox: tuple[Finite, Finite, NonNegative, NonNegative]
    caption: Raw | UnsetType = UNSET


_GT_DECODER = msgspec.json.Decoder(_GroundTruth)
_RESULT_DECODERS = {
    "keypoints": msgspec.json.Decoder(list[_KeypointResult]),
    "bbox": msgspec.json.Decoder(list[_BoxResult]),
}


@dataclass
class CheckedFiles:
    """Two files the full checks would pass silently, with the notes they would attach."""

    notes: list[str]
    result_scores: np.ndarray  # (N,) every result's score, in file order
    schema: KeypointSchema | None = None  # the keypoint set proved (None for boxes)


def _decode(path: Path, decoder: msgspec.json.Decoder) -> object | None:
    try:
        data = path.read_bytes()
        if not data.isascii():
            # msgspec and hotcoco skip the bytes of fields they do not read; Python's json module refuses a file
            # with invalid UTF-8 anywhere.
            data.decode("utf-8")
        return decoder.decode(data)
    # ValidationError is a DecodeError; MemoryError is worded by the full checks, which name the file's size.
    except (OSError, UnicodeDecodeError, RecursionError, MemoryError, msgspec.DecodeError):
        return None


def _keypoint_lists_hold(raw_lists: list[Raw], length: int) -> bool:
    """Every raw JSON list holds exactly `length` comma-separated items (whether they are numbers, hotcoco checks)."""
    # bytes(raw) copies ~0.4 kB; counting on the copy is still the cheapest per-list test msgspec allows.
    return set(map(bytes.count, map(bytes, raw_lists), repeat(b","))) <= {length - 1}


def _is_zero_scored(values: object) -> bool:
    """Whether a decoded keypoint list has every score (third value) <= 0. A value that is not a number is left to
    hotcoco, whose refusal sends the file to the full checks."""
    if not isinstance(values, list):
        return False
    scores = values[2::3]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores) and not any(v > 0 for v in scores)


def _decoded(raw: Raw) -> object:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:  # a number out of range, say: hotcoco refuses it, and the full checks word it
        return None


def _last_score_positive(raw: Raw) -> bool:
    """Whether a raw keypoint list's last value (its last keypoint's score) is a number above 0: then the list is
    not all-zero, proved without decoding the rest (about 10x cheaper than a full decode per list)."""
    data = bytes(raw)
    try:
        return float(data[data.rindex(b",") + 1 : -1]) > 0
    except ValueError:  # no comma, or not a plain number: decode the list
        return False


def _count_zero_keypoint_lists(raw_lists: list[Raw]) -> int:
    """How many raw keypoint lists have every score (third value) <= 0 (only the few whose last score is not
    positive are decoded)."""
    return sum(_is_zero_scored(_decoded(raw)) for raw in raw_lists if not _last_score_positive(raw))


def _proved_schema(gt: _GroundTruth, schema: KeypointSchema | None) -> KeypointSchema | None:
    """The schema the full checks would choose, when it needs no note: `schema` if every listed keypoint-name
    list has its length, else a built-in whose names one category lists exactly (one keypoint category only)."""
    named = [cat for cat in gt.categories if isinstance(cat.keypoints, list) and cat.keypoints]
    if any(a.foot_kpts is not UNSET for a in gt.annotations[:1]):
        return None
    if schema is not None:
        if schema.protocol != "coco" or len(named) > 1:
            return None  # several keypoint categories: the full checks decide (and word the error)
        if not all(len(cat.keypoints) == schema.num_keypoints for cat in named):  # type: ignore[arg-type]
            return None
        return schema.with_category_id(named[0].id) if named else schema
    if len(named) != 1 or not {a.category_id for a in gt.annotations} <= {named[0].id}:
        return None
    try:
        names = tuple(msgspec.json.decode(bytes(raw), type=str) for raw in named[0].keypoints)  # type: ignore[union-attr]
    except msgspec.DecodeError:
        return None
    for builtin in BUILTIN_SCHEMAS.values():
        # A schema with its own protocol (CrowdPose) goes through the full checks, which run that protocol.
        if names == builtin.keypoint_names and builtin.protocol == "coco":
            return builtin.with_category_id(named[0].id)
    return None


def _check_ground_truth(
    gt: _GroundTruth, image_ids: set[int], iou_type: str, schema: KeypointSchema | None
) -> list[str] | None:
    if len(image_ids) != len(gt.images):
        return None
    annotations = gt.annotations
    ann_ids = set(map(attrgetter("id"), annotations))
    if len(ann_ids) != len(annotations) or 0 in ann_ids:  # id 0 is renumbered, with a warning, by the full checks
        return None
    if not set(map(attrgetter("image_id"), annotations)) <= image_ids:
        return None
    if not set(map(attrgetter("category_id"), annotations)) <= {cat.id for cat in gt.categories}:
        return None
    if iou_type == "bbox":
        return []
    if schema is None:
        return None
    keypoints = list(map(attrgetter("keypoints"), annotations))
    if UNSET in keypoints or UNSET in map(attrgetter("num_keypoints"), annotations):
        return None
    if not _keypoint_lists_hold(keypoints, schema.result_length):
        return None
    unlabelled = sum(1 for a in annotations if not a.iscrowd and a.num_keypoints == 0)
    return [unlabelled_note(unlabelled, instance_noun(schema))] if unlabelled else []


def check_files(
    gt_path: str | Path, results_path: str | Path, iou_type: str = "keypoints", schema: KeypointSchema | None = None
) -> CheckedFiles | None:
    """The notes `kpbench.evaluation.cocofiles` would attach to these two files, or None when this cannot prove that its
    checks pass silently (the caller then runs them). Valid only if hotcoco's parser then accepts the files.
    The notes name the files as given (as the full checks do)."""
    check_iou_type(iou_type)
    gt = _decode(Path(gt_path), _GT_DECODER)
    if not isinstance(gt, _GroundTruth):
        return None
    image_ids = {img.id for img in gt.images}
    proved = _proved_schema(gt, schema) if iou_type == "keypoints" else None
    gt_notes = _check_ground_truth(gt, image_ids, iou_type, proved)
    if gt_notes is None:
        return None
    results = _decode(Path(results_path), _RESULT_DECODERS[iou_type])
    if not isinstance(results, list):
        return None
    if not results:
        return CheckedFiles(notes=[*gt_notes, empty_results_note(str(results_path), instance_noun(proved))],
                            result_scores=np.zeros(0),
                            schema=proved)

    result_images = list(map(attrgetter("image_id"), results))
    if not set(result_images) <= image_ids:
        return None
    if not set(map(attrgetter("category_id"), results)) <= {cat.id for cat in gt.categories}:
        return None
    if results[0].caption is not UNSET:
        return None
    if iou_type == "keypoints":
        # UNSET is falsy and raw JSON text never empty: one C-level pass per field.
        if any(any(map(attrgetter(optional), results)) for optional in ("bbox", "segmentation", "caption")):
            return None
        raw_lists = list(map(attrgetter("keypoints"), results))
        if not _keypoint_lists_hold(raw_lists, proved.result_length):  # type: ignore[union-attr]
            return None

    notes = list(gt_notes)
    covered = set(result_images)
    if len(covered) < len(gt.images):
        missed = sum(
            1 for a in gt.annotations
            if a.image_id not in covered and not a.iscrowd and (iou_type == "bbox" or a.num_keypoints > 0)
        )
        notes.append(coverage_note(len(covered), len(gt.images), missed, instance_noun(proved)))
    if iou_type == "keypoints":
        zero = _count_zero_keypoint_lists(raw_lists)
        if zero:
            notes.append(zero_keypoint_results_note(zero))
        crowded = sum(1 for n in Counter(result_images).values() if n > KEYPOINT_MAX_DETS)
        if crowded:
            notes.append(crowded_images_note(crowded))
    scores = np.fromiter(map(attrgetter("score"), results), dtype=np.float64, count=len(results))
    return CheckedFiles(notes=notes, result_scores=scores, schema=proved)
