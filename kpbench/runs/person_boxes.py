"""The person boxes of a top-down run, kept in its run directory: the boxes each image was cropped from (after the
source's threshold and maximum), with the source's scores, so that the source's own box AP can be scored at the end
(`kpbench.evaluation.person_boxes`), for a detector source too.

**File.** ``person_boxes.bin`` (a rank of a distributed run writes ``person_boxes.rank<R>.bin``), in the framing of
the detections store (`kpbench.runs.store`: the ``KPBSTORE`` header, then one checksummed ``KPRD`` record per image
and model call) with no keypoints (K = 0): each record holds the image's boxes (N, 4) xyxy and scores (N,) (float32
when every value is exactly a float32, else float64; labels are zeros). It is appended to once per model call with
one ``write``, and made durable (``fdatasync``) by the store writer's thread right before it writes a group of
detections (`PersonBoxWriter.sync`, the store's `before_write`), so an image in the store always has its boxes,
after a power cut too, at one sync per group of images instead of one per call (~5 ms each on the development
disk); a torn tail (a kill mid-write) is ignored by readers and cut off before a resume appends.

**Reading** (`read_person_boxes`): every record of every ``person_boxes*.bin`` file, the last record of an image
winning (a resumed run repeats the images of a partly cached batch), as arrays in ascending image-id order.
Run directories written before this format kept the boxes as JSON lines (``person_boxes.jsonl``, one
``{"image_id", "boxes", "scores"}`` per line); they are still read (an undecodable last line is a torn tail and
skipped; an undecodable line before it is an error), and a record in a ``.bin`` file wins over one in a ``.jsonl``
file.

``--overwrite`` deletes every one of these files (`person_box_files`), so a new run never reads an old run's boxes.

No torch here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.runs.store import create_store, encode_record, record_columns, scan_store, truncate_torn_tail

PERSON_BOXES_STORE = "person_boxes.bin"
LEGACY_PERSON_BOXES = "person_boxes.jsonl"  # run directories written before person_boxes.bin
_GLOBS = ("person_boxes*.jsonl", "person_boxes*.bin")  # legacy first: a .bin record wins


def person_boxes_path(run_dir: str | Path, rank: int = 0, world_size: int = 1) -> Path:
    """RUN_DIR/person_boxes.bin, or person_boxes.rank<R>.bin for rank R of a distributed run."""
    name = PERSON_BOXES_STORE if world_size <= 1 else f"person_boxes.rank{rank}.bin"
    return Path(run_dir) / name


def person_box_files(run_dir: str | Path) -> list[Path]:
    """Every person-box file of RUN_DIR (both formats, every rank), in reading order (legacy JSON lines first)."""
    run_dir = Path(run_dir)
    return [p for pattern in _GLOBS for p in sorted(run_dir.glob(pattern)) if p.is_file()]


class PersonBoxWriter:
    """Appends each model call's person boxes to one person-box file (`append`); the file is created (header only)
    or its torn tail cut off on the first append, so records always follow a valid one. `sync` makes what was
    appended durable: the run's store writer calls it before it writes the detections of those images."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._ready = False
        self._unsynced = False

    def _prepare(self) -> None:
        if self.path.is_file():
            truncate_torn_tail(self.path)
        else:
            create_store(self.path)
        self._ready = True

    def append(self, image_ids: Sequence[int], boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> None:
        """One record per image: `boxes[i]` (N_i, 4) xyxy and `scores[i]` (N_i,) of image `image_ids[i]`."""
        records = []
        for image_id, b, s in zip(image_ids, boxes, scores):
            b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
            s = np.asarray(s, dtype=np.float64).reshape(-1)
            n = len(s)
            records.append(encode_record(int(image_id), b, s, np.zeros((n, 0, 3)), np.zeros((n, 0)),
                                         np.zeros(n, dtype=np.int64)))
        try:
            if not self._ready:
                self._prepare()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                data = memoryview(b"".join(records))
                while data:
                    data = data[os.write(fd, data):]
                self._unsynced = True
            finally:
                os.close(fd)
        except OSError as exc:
            raise KpbenchError(f"{self.path}: cannot record the person boxes ({exc.strerror or exc})") from None

    def sync(self) -> None:
        """Make every record appended so far durable (fdatasync: the data and the size), if any is not yet. Safe
        from another thread than `append`'s: the flag is cleared before the sync, which covers every write made
        before it starts, and a later append sets it again."""
        if not self._unsynced:
            return
        self._unsynced = False
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._unsynced = True
            raise KpbenchError(f"{self.path}: cannot record the person boxes ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class PersonBoxArrays:
    """The recorded person boxes of a run as arrays, images in ascending id order: ``image_ids`` (I,) int64, each
    image's rows ``starts[i]:starts[i + 1]`` ((I + 1,) int64) of ``boxes`` (N, 4) float64 xyxy and ``scores`` (N,)
    float64."""

    image_ids: np.ndarray
    starts: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def rows(self, image_id: int) -> slice:
        """The rows of one image (KeyError when it has no record)."""
        i = int(np.searchsorted(self.image_ids, image_id))
        if i >= len(self.image_ids) or self.image_ids[i] != image_id:
            raise KeyError(image_id)
        return slice(int(self.starts[i]), int(self.starts[i + 1]))

    def select(self, image_ids: Sequence[int]) -> PersonBoxArrays:
        """The records of `image_ids` (every one must have a record), ascending id order."""
        ids = np.unique(np.asarray(image_ids, dtype=np.int64))
        pos = np.searchsorted(self.image_ids, ids)
        if len(ids) and (pos.max() >= len(self.image_ids) or not np.array_equal(self.image_ids[pos], ids)):
            raise KeyError("image ids without a person-box record")
        counts = self.starts[pos + 1] - self.starts[pos]
        index = np.concatenate([np.arange(self.starts[p], self.starts[p + 1]) for p in pos]) if len(pos) else \
            np.zeros(0, dtype=np.int64)
        return PersonBoxArrays(ids, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                               self.boxes[index].reshape(-1, 4), self.scores[index])


def _legacy_records(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The records of a person_boxes.jsonl (a torn last line is skipped; any other undecodable line is an error)."""
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise KpbenchError(f"{path}: cannot read the person boxes ({exc.strerror or exc})") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            entry = (int(record["image_id"]), np.asarray(record["boxes"], dtype=np.float64).reshape(-1, 4),
                     np.asarray(record["scores"], dtype=np.float64).reshape(-1))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if number == last and isinstance(exc, json.JSONDecodeError):
                continue  # a torn last line: the write a kill interrupted
            raise KpbenchError(f"{path}: line {number + 1} is not a person-box record ({exc}); only the last line may "
                               "be torn") from None
        found[entry[0]] = entry[1:]
    return found


def read_person_boxes(run_dir: str | Path) -> PersonBoxArrays:
    """Every image's recorded person boxes (module docstring: the last record of an image wins); empty arrays when
    the run directory has none."""
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for path in person_box_files(run_dir):
        if path.suffix == ".jsonl":
            found.update(_legacy_records(path))
            continue
        index = scan_store(path)
        for i in range(len(index)):
            boxes, scores, *_ = record_columns(index, i)
            found[int(index.image_ids[i])] = (boxes.astype(np.float64), scores.astype(np.float64))
    ids = np.array(sorted(found), dtype=np.int64)
    counts = np.array([len(found[int(i)][1]) for i in ids], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    boxes = np.concatenate([found[int(i)][0] for i in ids]) if len(ids) else np.zeros((0, 4))
    scores = np.concatenate([found[int(i)][1] for i in ids]) if len(ids) else np.zeros(0)
    return PersonBoxArrays(ids, starts, boxes.reshape(-1, 4), scores)
