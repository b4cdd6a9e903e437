"""Writing a run's detections for interchange: COCO results files and JSON lines, from arrays, fast.

`write_coco_results(path, detections, iou_type)` writes keypoints_results.json or bbox_results.json byte for byte
as `json.dumps(records) + "\\n"` writes the records of `kpbench.runs.detections.to_coco_results` (the files
kpbench always wrote): keypoint results ``{"image_id": I, "category_id": C, "keypoints": [x, y, v, ...],
"score": S}`` (the box score, no bbox), box results ``{"image_id": I, "category_id": C, "bbox": [x, y, w, h],
"score": S}``, each float as Python's repr of the float64 value (a float32 from the model widened exactly).

The floats are what costs: Python's repr takes about 0.5 µs a number here, and a 5000-image run with 100
detections per image has 27 million of them. With orjson (a base dependency) they are formatted by its
numpy serializer, which prints the same shortest round-trip digits as repr (tested on millions of values) and
differs only in notation outside 1e-4 <= |x| < 1e16; the rows holding any value outside [1e-3, 1e15) (zero aside)
are formatted by repr instead, so the bytes are repr's everywhere. Without orjson every row goes through repr.

`export_run(run_dir, to, out)` is `kpbench export`: COCO results files, or the JSON lines of format 1 and 2, from
any run directory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kpbench.core.errors import KpbenchError

if TYPE_CHECKING:
    from kpbench.core.arrays import DetectionArrays
    from kpbench.runs.arrays import RunArrays

try:  # a base dependency; repr formats the same bytes without it
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the install
    _orjson = None

IOU_TYPES = ("keypoints", "bbox")
EXPORT_FORMATS = ("coco", "jsonl")
_CHUNK_ROWS = 8192
# orjson's notation is repr's for 1e-4 <= |x| < 1e16; rows with a value outside [1e-3, 1e15) go through repr.
_SAFE_LOW, _SAFE_HIGH = 1e-3, 1e15


def _not_finite() -> ValueError:
    return ValueError("Out of range float values are not JSON compliant")  # json.dumps(allow_nan=False)'s words


def _json_float(value: float) -> str:
    """A float as json.dumps writes it (allow_nan=True): repr, or NaN, Infinity, -Infinity."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def float_rows(
    matrix: np.ndarray, separator: bytes = b", ", use_orjson: bool | None = None, allow_nan: bool = False
) -> list[bytes]:
    """Each row of an (R, C) float matrix as its values' Python reprs (of the float64 values) joined by
    `separator`, as json.dumps prints a list of floats. NaN and infinity are a ValueError, or with `allow_nan`
    written as json.dumps writes them (NaN, Infinity)."""
    values = np.ascontiguousarray(matrix, dtype=np.float64)
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if not values.shape[0]:
        return []
    finite = np.isfinite(values)
    if not allow_nan and not finite.all():
        raise _not_finite()
    sep = separator.decode()
    if not (_orjson is not None if use_orjson is None else use_orjson):
        return [sep.join(map(_json_float, row)).encode() for row in values.tolist()]
    with np.errstate(invalid="ignore"):
        size = np.abs(values)
        odd = ((size < _SAFE_LOW) & (size != 0.0)) | (size >= _SAFE_HIGH) | ~finite
    clean = np.where(finite, values, 0.0) if not finite.all() else values
    text = _orjson.dumps(clean, option=_orjson.OPT_SERIALIZE_NUMPY)[2:-2]
    if separator != b",":
        text = text.replace(b",", separator)
    rows = text.split(b"]" + separator + b"[")
    for i in np.flatnonzero(odd.any(axis=1)).tolist():
        rows[i] = sep.join(map(_json_float, values[i].tolist())).encode()
    return rows


def _int_texts(values: np.ndarray) -> list[bytes]:
    return [str(v).encode() for v in values.tolist()]


def encode_coco_results(
    detections: DetectionArrays, iou_type: str, use_orjson: bool | None = None, chunk_rows: int = _CHUNK_ROWS
) -> Iterator[bytes]:
    """The bytes of a COCO results file of `detections` (in their row order), in pieces of `chunk_rows` results;
    see the module docstring. A ValueError for NaN or infinity (json.dumps(allow_nan=False) refuses them too)."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    values = detections.keypoints if iou_type == "keypoints" else detections.boxes
    if values is None:
        raise KpbenchError(f"no {'keypoints' if iou_type == 'keypoints' else 'boxes'} to write {iou_type} results of")
    n = len(detections)
    values = values.reshape(n, math.prod(values.shape[1:]))
    key = b'"keypoints": [' if iou_type == "keypoints" else b'"bbox": ['
    # Each chunk is built with "," alone and widened to json.dumps' ", " in one pass at the end: no number holds a
    # comma, so every comma of the text is a separator. The pieces are interleaved by slice assignment (C loops).
    middle, end = b'],"score": ', b"},"
    prefixes: dict[tuple[int, int], bytes] = {}
    yield b"["
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        rows = float_rows(values[start:stop], b",", use_orjson)
        scores = float_rows(detections.scores[start:stop], b",", use_orjson)
        heads = []
        for pair in zip(detections.image_ids[start:stop].tolist(), detections.category_ids[start:stop].tolist()):
            head = prefixes.get(pair)
            if head is None:
                if len(prefixes) > 4096:
                    prefixes.clear()
                head = prefixes[pair] = b'{"image_id": %d,"category_id": %d,%s' % (*pair, key)
            heads.append(head)
        m = stop - start
        pieces: list[bytes] = [b""] * (5 * m)
        pieces[0::5], pieces[1::5], pieces[3::5] = heads, rows, scores
        pieces[2::5], pieces[4::5] = [middle] * m, [end] * m
        text = b"".join(pieces)
        yield text[:-1].replace(b",", b", ") + (b", " if stop < n else b"")
    yield b"]\n"


def coco_results_bytes(
    detections: DetectionArrays, iou_type: str, use_orjson: bool | None = None, chunk_rows: int = _CHUNK_ROWS
) -> bytes:
    """`encode_coco_results` as one bytes object."""
    return b"".join(encode_coco_results(detections, iou_type, use_orjson, chunk_rows))


def write_coco_results(
    path: str | Path, detections: DetectionArrays, iou_type: str, chunk_rows: int = _CHUNK_ROWS
) -> Path:
    """Write keypoints_results.json ("keypoints") or bbox_results.json ("bbox") of `detections` atomically, byte
    for byte the file `json.dumps` of `to_coco_results`' records gives (see the module docstring), `chunk_rows`
    results at a time."""
    from kpbench.core.io import atomic_write_chunks

    path = Path(path)
    try:
        atomic_write_chunks(path, encode_coco_results(detections, iou_type, chunk_rows=chunk_rows))
    except ValueError as exc:
        raise KpbenchError(f"{path}: cannot write the {iou_type} results ({exc})") from None
    return path


def _nested(rows: list[bytes], per_item: int, separator: bytes) -> list[bytes]:
    """Groups of `per_item` row texts as JSON lists of lists: [[r0],[r1]] for each group."""
    inner = b"]" + separator + b"["
    return [b"[[" + inner.join(rows[i : i + per_item]) + b"]]" if per_item else b"[]"
            for i in range(0, len(rows), per_item or 1)]


def encode_jsonl(arrays: RunArrays, use_orjson: bool | None = None) -> Iterator[bytes]:
    """The JSON lines of format 1 and 2 (`ImageDetections.to_record`, compact separators), one per image in id
    order: byte for byte the lines of a format-2 cache of the same model outputs."""
    d = arrays.detections
    starts = arrays.starts
    k = int(arrays.num_keypoints or 0)
    keypoints = d.keypoints if d.keypoints is not None else np.zeros((len(d), k, 3))
    keypoint_scores = d.keypoint_scores if d.keypoint_scores is not None else np.zeros((len(d), k))
    step = max(1, _CHUNK_ROWS // 64)
    for first in range(0, len(arrays), step):
        last = min(len(arrays), first + step)
        a, b = int(starts[first]), int(starts[last])
        boxes = float_rows(arrays.boxes_xyxy[a:b], b",", use_orjson, allow_nan=True)
        scores = float_rows(d.scores[a:b], b",", use_orjson, allow_nan=True)
        points = float_rows(keypoints[a:b].reshape(-1, 3), b",", use_orjson, allow_nan=True)
        point_scores = float_rows(keypoint_scores[a:b], b",", use_orjson, allow_nan=True)
        labels = _int_texts(d.category_ids[a:b])
        lines = []
        for j in range(first, last):
            s, e = int(starts[j]) - a, int(starts[j + 1]) - a
            line = [b'{"image_id":%d,"boxes":[' % int(arrays.image_ids[j]),
                    b",".join(b"[" + r + b"]" for r in boxes[s:e]), b'],"scores":[', b",".join(scores[s:e]),
                    b'],"labels":[', b",".join(labels[s:e]), b'],"keypoints":[',
                    b",".join(_nested(points[s * k : e * k], k, b",")) if k else b",".join(b"[]" for _ in range(e - s)),
                    b'],"keypoint_scores":[', b",".join(b"[" + r + b"]" for r in point_scores[s:e]) if k else
                    b",".join(b"[]" for _ in range(e - s)), b"]"]
            if arrays.input_shapes[j] is not None:
                line.append(b',"input_shape":' + json.dumps([int(v) for v in arrays.input_shapes[j]],
                                                            separators=(",", ":")).encode())
            line.append(b"}\n")
            lines.append(b"".join(line))
        yield b"".join(lines)


EXPORT_FOLDER = "export"  # RUN_DIR/export/: where `kpbench export --to jsonl` writes by default


def export_run(run_dir: str | Path, to: str, out: str | Path | None = None) -> list[Path]:
    """`kpbench export`: write a run directory's detections (any format) for interchange; returns the paths
    written.

    - ``to="coco"``: keypoints_results.json and bbox_results.json (every cached image, id order) into the folder
      `out` (default: the run directory, whose results files they are);
    - ``to="jsonl"``: the JSON lines of format 1 and 2, one per cached image, into the file `out` (default:
      RUN_DIR/export/detections.jsonl). Never a file a run directory reads as its detections (RUN_DIR's
      detections.jsonl, detections.bin, a rank shard): that copy would be read, then merged away, by the run.
    """
    from kpbench.core.io import atomic_write_chunks, ensure_output_dir
    from kpbench.runs.arrays import read_run_arrays
    from kpbench.runs.directory import BBOX_RESULTS, DETECTIONS, KEYPOINT_RESULTS, is_detections_input, is_run_dir

    run_dir = Path(run_dir)
    if to not in EXPORT_FORMATS:
        raise KpbenchError(f"--to: must be one of {', '.join(EXPORT_FORMATS)}, got {to!r}")
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    if not is_run_dir(run_dir):
        raise KpbenchError(f"{run_dir}: not a run directory (no manifest.json)")
    arrays = read_run_arrays(run_dir)
    if to == "coco":
        folder = ensure_output_dir(Path(out) if out is not None else run_dir)
        return [write_coco_results(folder / KEYPOINT_RESULTS, arrays.detections, "keypoints"),
                write_coco_results(folder / BBOX_RESULTS, arrays.detections, "bbox")]
    if out is None:
        target = ensure_output_dir(run_dir / EXPORT_FOLDER) / DETECTIONS
    else:
        target = Path(out)
        if target.is_dir():
            raise KpbenchError(f"--out {target}: is a directory; --to jsonl writes one file")
        if is_detections_input(target):
            raise KpbenchError(f"--out {target}: a run directory reads this file as its detections (and a resume "
                               "merges it away); export elsewhere")
    atomic_write_chunks(target, encode_jsonl(arrays))
    return [target]
