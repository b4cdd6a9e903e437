"""Two COCO files parsed straight into arrays, with the verdict of the full checks: the default backend's input path.

The full checks (`kpbench.evaluation.cocofiles`) parse both files into Python dicts with the json module and check
them there; at val2017 scale that alone costs several times the vectorized evaluation. This module decodes each
file once with msgspec into typed records (C code: ids must be JSON integers below 2**53, references JSON
integers, scores, boxes and areas finite numbers in their bounds, the required fields present) and moves them into
arrays (`GroundTruthArrays`, `kpbench.core.arrays.DetectionArrays`), where the rest of the checks run: lengths,
finiteness, known ids, duplicates, and the notes.

Keypoint lists, most of a file's numbers, are kept as their JSON text and read together into one array by
`kpbench.evaluation.jsonnumbers.number_lists` (no Python float per number), which refuses anything but lists of
finite numbers of the right length. Where the first keypoint list of a file has long numbers (a float32's 17
digits), msgspec decodes them as floats instead, which is faster for those; either way the values are the same
doubles, and the verdicts the same (tested on every case of the checks' tests, read each way).

As `kpbench.evaluation.fastcheck` does for hotcoco, `parse_files` returns None whenever it cannot prove that the
full checks would pass silently: any error, but also every case they warn about or repair (an annotation id 0,
keypoint results that carry a bbox, a COCO-WholeBody GT) or accept in a form msgspec's strict types refuse (an id
written as 1.0, a file in UTF-16). The caller then runs the full checks, which word the message. The wording lives
in one place, and the verdict, the messages and the notes are the full checks' for every input (tested case by
case against them); the numbers are the same doubles, since msgspec, `number_lists` and the json module all round
each decimal correctly.

msgspec is a base dependency; should it be missing, `parse_files` returns None and the full checks run.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import numpy as np

from kpbench.core.arrays import DetectionArrays
from kpbench.core.io import take_read_ahead
from kpbench.core.schema import KEYPOINT_MAX_DETS, KeypointSchema
from kpbench.evaluation.arrays import GroundTruthArrays, in_sorted, sorted_unique
from kpbench.evaluation.cocofiles import (
    check_iou_type,
    coverage_note,
    crowded_images_note,
    empty_results_note,
    instance_noun,
    unlabelled_note,
    zero_keypoint_results_note,
)
from kpbench.evaluation.jsonnumbers import COMPILED, COMPILED_LONG_NUMBERS, number_lists

try:
    import msgspec
    from msgspec import UNSET, Raw, Struct, UnsetType
except ImportError:  # msgspec missing (a base dependency): the full checks run
    msgspec = None  # type: ignore[assignment]

__all__ = ["ParsedFiles", "parse_files"]


@dataclass
class ParsedFiles:
    """Two files the full checks would pass silently, as arrays, with the notes those checks would attach."""

    ground_truth: GroundTruthArrays
    detections: DetectionArrays
    notes: list[str]
    schema: KeypointSchema | None = None  # the keypoint set proved (None for boxes)


if msgspec is not None:
    from kpbench.evaluation.cocorecords import CategoryRecord as _Category
    from kpbench.evaluation.cocorecords import CocoId, Finite, NonNegative
    from kpbench.evaluation.cocorecords import ImageRecord as _Image

    # gc=False: no record can be part of a reference cycle, and untracked objects decode faster.

    class _BoxAnnotation(Struct, gc=False):
        id: CocoId
        image_id: int
        category_id: int
        bbox: tuple[Finite, Finite, NonNegative, NonNegative]
        area: NonNegative
        iscrowd: Finite

    class _KeypointAnnotationFields(Struct, gc=False):
        id: CocoId
        image_id: int
        category_id: int
        bbox: tuple[Finite, Finite, NonNegative, NonNegative]
        area: NonNegative
        iscrowd: Finite
        num_keypoints: Finite

    # Keypoint lists as their JSON text, read by `number_lists` (short numbers), or as Python floats (long ones).

    class _KeypointAnnotation(_KeypointAnnotationFields, gc=False):
        keypoints: Raw
        foot_kpts: Raw | UnsetType = UNSET

    class _KeypointAnnotationFloats(_KeypointAnnotationFields, gc=False):
        keypoints: list[float]
        foot_kpts: Raw | UnsetType = UNSET

    class _BoxGroundTruth(Struct, gc=False):
        images: list[_Image]
        annotations: list[_BoxAnnotation]
        categories: list[_Category]

    class _KeypointGroundTruth(Struct, gc=False):
        images: list[_Image]
        annotations: list[_KeypointAnnotation]
        categories: list[_Category]

    class _KeypointGroundTruthFloats(Struct, gc=False):
        images: list[_Image]
        annotations: list[_KeypointAnnotationFloats]
        categories: list[_Category]

    class _KeypointResultFields(Struct, gc=False):
        image_id: int
        category_id: int
        score: Finite

    # A keypoint result with a bbox, segmentation or caption at all (any value): the full checks decide (pycocotools
    # reads a whole file by its first record's fields). Typed UnsetType, such a field fails the decode, and
    # `_parse` returns None, as it does for any record msgspec refuses.

    class _KeypointResult(_KeypointResultFields, gc=False):
        keypoints: Raw
        bbox: UnsetType = UNSET
        segmentation: UnsetType = UNSET
        caption: UnsetType = UNSET

    class _KeypointResultFloats(_KeypointResultFields, gc=False):
        keypoints: list[float]
        bbox: UnsetType = UNSET
        segmentation: UnsetType = UNSET
        caption: UnsetType = UNSET

    class _BoxResult(Struct, gc=False):
        image_id: int
        category_id: int
        score: Finite
        bbox: tuple[Finite, Finite, NonNegative, NonNegative]
        caption: Raw | UnsetType = UNSET

    class _BoxResultText(Struct, gc=False):  # the box as its JSON text, for the compiled reader
        image_id: int
        category_id: int
        score: Finite
        bbox: Raw
        caption: Raw | UnsetType = UNSET

    # By iou type and whether keypoint lists are read as text (see `_short_numbers`).
    _GT_DECODERS = {("keypoints", True): msgspec.json.Decoder(_KeypointGroundTruth),
                    ("keypoints", False): msgspec.json.Decoder(_KeypointGroundTruthFloats),
                    ("bbox", True): msgspec.json.Decoder(_BoxGroundTruth),
                    ("bbox", False): msgspec.json.Decoder(_BoxGroundTruth)}
    _RESULT_DECODERS = {("keypoints", True): msgspec.json.Decoder(list[_KeypointResult]),
                        ("keypoints", False): msgspec.json.Decoder(list[_KeypointResultFloats]),
                        ("bbox", True): msgspec.json.Decoder(list[_BoxResultText]),
                        ("bbox", False): msgspec.json.Decoder(list[_BoxResult])}

# Keypoint lists whose numbers average at most this many characters (a rounded coordinate, an integer) are read
# by `number_lists`; longer ones (a float32's 17 digits) are faster as msgspec's floats, unless the compiled reader
# reads them itself (then every list is text: a float32 results file of 48,738 results parses in 0.19 s instead of
# 0.39; where it would hand them to Python's float(), msgspec's floats stay faster).
_SHORT_NUMBER = math.inf if COMPILED_LONG_NUMBERS else 10.0
# Result boxes as text for the compiled reader (98,476 boxes: ~40 ms less than msgspec's floats); else as floats.
_BOXES_AS_TEXT = COMPILED


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: decoding allocates a list per keypoint record (lists are tracked), and
    each allocation burst would start a collection that walks every record made so far (a third of the decode
    time at val2017 scale), and re-enabling it with the records alive would walk them once more. Nothing made
    here forms a cycle, and the records are freed (by reference counting) before the collector is back."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read(path: Path) -> bytes | None:
    try:
        data = take_read_ahead(path)  # read while the modules loaded (kpbench evaluate), else now
        if data is None:
            data = path.read_bytes()
        if not data.isascii():
            # msgspec skips the bytes of fields it does not read; Python's json module refuses a file with invalid
            # UTF-8 anywhere.
            data.decode("utf-8")
        return data
    # MemoryError is worded by the full checks, which name the file's size.
    except (OSError, UnicodeDecodeError, MemoryError):
        return None


def _decode(data: bytes, decoder: msgspec.json.Decoder) -> object | None:
    try:
        return decoder.decode(data)
    # ValidationError is a DecodeError; MemoryError is worded by the full checks, which name the file's size.
    except (RecursionError, MemoryError, msgspec.DecodeError):
        return None


def _short_numbers(data: bytes) -> bool:
    """Whether the first keypoint list of numbers in `data` has short numbers (see _SHORT_NUMBER). Only speed
    depends on it: both readers give the same values and the same verdicts."""
    at = 0
    for _ in range(8):
        at = data.find(b'"keypoints"', at)
        if at < 0:
            break
        at += 11
        opening = data.find(b"[", at, at + 64)
        if opening < 0:
            continue
        closing = data.find(b"]", opening, opening + 4096)
        sample = data[opening + 1:closing if closing > 0 else opening + 4096].strip()
        if not sample or sample[:1] not in b"-0123456789":
            continue  # a category's keypoint names
        return len(sample.translate(None, b" \t\n\r,")) <= _SHORT_NUMBER * (sample.count(b",") + 1)
    return True


def _keypoint_array(records: list, width: int, text: bool) -> np.ndarray | None:
    """(N, width) of the records' keypoint lists (their JSON text, or floats), else None (the full checks decide)."""
    lists = list(map(attrgetter("keypoints"), records))
    return number_lists(lists, width) if text else _flat_lists(lists, width)


def _ids(records: list, name: str) -> np.ndarray:
    return np.fromiter(map(attrgetter(name), records), dtype=np.int64, count=len(records))


def _numbers(records: list, name: str) -> np.ndarray:
    return np.fromiter(map(attrgetter(name), records), dtype=np.float64, count=len(records))


def _flat_lists(lists: list[list[float]], width: int) -> np.ndarray | None:
    """(N, width) float64 of N lists that each hold `width` finite numbers, else None."""
    if set(map(len, lists)) - {width}:
        return None
    flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.float64, count=len(lists) * width)
    if not np.isfinite(flat).all():
        return None
    return flat.reshape(len(lists), width)


def _ground_truth(
    gt: object, iou_type: str, schema: KeypointSchema | None, source: str, text: bool
) -> tuple[GroundTruthArrays, list[str], KeypointSchema | None] | None:
    """The GT's arrays, its notes and its keypoint schema, or None when the full checks must decide."""
    from kpbench.evaluation.fastcheck import _proved_schema

    images, annotations, categories = gt.images, gt.annotations, gt.categories  # type: ignore[attr-defined]
    image_ids = _ids(images, "id")
    unique_images = sorted_unique(image_ids)
    if len(unique_images) != len(images):
        return None
    ann_ids = _ids(annotations, "id")
    if len(sorted_unique(ann_ids)) != len(annotations) or (ann_ids == 0).any():  # id 0 is renumbered, with a warning
        return None
    ann_images, ann_cats = _ids(annotations, "image_id"), _ids(annotations, "category_id")
    category_ids = sorted_unique(_ids(categories, "id"))
    if not in_sorted(ann_images, unique_images).all() or not in_sorted(ann_cats, category_ids).all():
        return None
    proved: KeypointSchema | None = None
    keypoints = None
    g = len(annotations)
    no_keypoints = np.zeros(g, dtype=bool)
    notes: list[str] = []
    if iou_type == "keypoints":
        if any(a.foot_kpts is not UNSET for a in annotations[:1]):
            return None  # a COCO-WholeBody GT: the full checks add their note about it
        proved = _proved_schema(gt, schema)  # type: ignore[arg-type]
        if proved is None:
            return None
        keypoints = _keypoint_array(annotations, proved.result_length, text)
        if keypoints is None:
            return None
        keypoints = keypoints.reshape(g, proved.num_keypoints, 3)
    iscrowd = _numbers(annotations, "iscrowd")
    if iou_type == "keypoints":
        no_keypoints = _numbers(annotations, "num_keypoints") == 0
        unlabelled = int(np.count_nonzero((iscrowd == 0) & no_keypoints))
        if unlabelled:
            notes.append(unlabelled_note(unlabelled, instance_noun(proved)))
    boxes = np.fromiter(itertools.chain.from_iterable(map(attrgetter("bbox"), annotations)), dtype=np.float64,
                        count=4 * g).reshape(g, 4)
    arrays = GroundTruthArrays(
        source=source, image_ids=unique_images, category_ids=category_ids, ann_ids=ann_ids,
        ann_image=np.searchsorted(unique_images, ann_images).astype(np.int64),
        ann_category=np.searchsorted(category_ids, ann_cats).astype(np.int64), boxes=boxes,
        areas=_numbers(annotations, "area"), iscrowd=iscrowd != 0,
        crowd=np.trunc(iscrowd) != 0,  # int(iscrowd) != 0, as pycocotools' matching reads it
        no_keypoints=no_keypoints, keypoints=keypoints, num_annotations=g,
    )
    return arrays, notes, proved


def parse_files(
    gt_path: str | Path, results_path: str | Path, iou_type: str = "keypoints", schema: KeypointSchema | None = None
) -> ParsedFiles | None:
    """Both files as arrays with the notes `kpbench.evaluation.cocofiles` would attach, or None when this cannot
    prove that its checks pass silently (the caller then runs them). The notes name the files as given."""
    check_iou_type(iou_type)
    if msgspec is None:
        return None
    # The decoded records are made and freed inside: the collector never needs to walk them.
    with _without_cyclic_gc():
        return _parse(Path(gt_path), Path(results_path), iou_type, schema)


def _parse(gt_path: Path, results_path: Path, iou_type: str, schema: KeypointSchema | None) -> ParsedFiles | None:
    data = _read(gt_path)
    if data is None:
        return None
    text = iou_type == "keypoints" and _short_numbers(data)
    gt = _decode(data, _GT_DECODERS[iou_type, text])
    del data
    if gt is None:
        return None
    prepared = _ground_truth(gt, iou_type, schema, str(gt_path), text)
    if prepared is None:
        return None
    ground_truth, notes, proved = prepared
    data = _read(results_path)
    if data is None:
        return None
    text = _short_numbers(data) if iou_type == "keypoints" else _BOXES_AS_TEXT
    results = _decode(data, _RESULT_DECODERS[iou_type, text])
    if not isinstance(results, list):
        return None
    k = proved.num_keypoints if proved is not None else 0
    n = len(results)
    if not results:
        return ParsedFiles(ground_truth, DetectionArrays.empty(k, boxes=iou_type == "bbox"),
                           [*notes, empty_results_note(str(results_path), instance_noun(proved))], proved)
    image_ids, category_ids = _ids(results, "image_id"), _ids(results, "category_id")
    image_index = np.searchsorted(ground_truth.image_ids, image_ids).clip(0, max(len(ground_truth.image_ids) - 1, 0))
    if len(ground_truth.image_ids) == 0 or (ground_truth.image_ids[image_index] != image_ids).any():
        return None
    if not in_sorted(category_ids, ground_truth.category_ids).all():
        return None
    if results[0].caption is not UNSET:
        return None
    keypoints = boxes = None
    if iou_type == "keypoints":  # (no bbox, segmentation nor caption: see _KeypointResult)
        flat = _keypoint_array(results, proved.result_length, text)  # type: ignore[union-attr]
        if flat is None:
            return None
        keypoints = flat.reshape(n, k, 3)
    elif text:  # four finite numbers each, width and height not negative (what _BoxResult's types ask)
        boxes = number_lists(list(map(attrgetter("bbox"), results)), 4)
        if boxes is None or not (boxes[:, 2:] >= 0).all():
            return None
    else:
        boxes = np.fromiter(itertools.chain.from_iterable(map(attrgetter("bbox"), results)), dtype=np.float64,
                            count=4 * n).reshape(n, 4)
    detections = DetectionArrays(image_ids=image_ids, category_ids=category_ids, scores=_numbers(results, "score"),
                                 boxes=boxes, keypoints=keypoints)

    per_image = np.bincount(image_index, minlength=len(ground_truth.image_ids))
    covered = int(np.count_nonzero(per_image))
    if covered < len(ground_truth.image_ids):
        counted = ~ground_truth.iscrowd & (~ground_truth.no_keypoints if iou_type == "keypoints" else True)
        missed = int(np.count_nonzero((per_image[ground_truth.ann_image] == 0) & counted))
        notes.append(coverage_note(covered, len(ground_truth.image_ids), missed, instance_noun(proved)))
    if iou_type == "keypoints":
        zero = int(np.count_nonzero(~(keypoints[:, :, 2] > 0).any(axis=1)))  # type: ignore[index]
        if zero:
            notes.append(zero_keypoint_results_note(zero))
        crowded = int(np.count_nonzero(per_image > KEYPOINT_MAX_DETS))
        if crowded:
            notes.append(crowded_images_note(crowded))
    return ParsedFiles(ground_truth, detections, notes, proved)
