"""The detections store of a run directory (run-directory format 3): `detections.bin`, one binary record per image,
append-only, readable in one go as arrays.

**Layout** (little-endian). A 16-byte file header, ``b"KPBSTORE"``, the store version (u32, 1) and a reserved u32,
then one record per finished image::

    offset  size  field
         0     4  magic b"KPRD"
         4     4  length: the bytes of the record after these 8 (so the record is 8 + length bytes)
         8     4  crc32 (zlib) of the bytes from offset 12 to the end of the record
        12     2  flags: 1 = float columns are float64 (else float32), 2 = labels are int64 (else int32),
                  4 = input_shape holds the padded batch shape the image went through
        14     2  K, keypoints per detection
        16     4  N, detections
        20     4  reserved (0)
        24     8  image id (i64)
        32    16  input_shape (N, C, H, W) as 4 x i32 (zeros without flag 4)
        48        columns, each N rows, in the model's detection order:
                  boxes (N, 4) xyxy, scores (N,), keypoints (N, K, 3) x, y, v, keypoint_scores (N, K),
                  labels (N,); then zero bytes up to a multiple of 8

So a detection with 17 keypoints takes 296 bytes (float32 and int32 labels) and an image 48 more, every record
starts 8-byte aligned, and the file is its own index: reading walks the records (one struct read each), checks
every checksum and copies the columns straight into float64 arrays (`read_store`, `kpbench.runs.arrays`).

**What is stored.** Values a model gives as float32 (torch tensors, which every adapter gives or widens from) are
stored as float32: nothing is lost. A record is float64 when its image's values are not all exactly float32,
which today is MediaPipe's adapter (landmarks scaled to pixels and the mean visibility in float64), rescoring
(`--rescore keypoint-mean`: a product in float64) and any plugin that computes in float64. Labels are int32 unless
one does not fit.

**Durability.** A writer thread (`StoreWriter`) encodes finished images and appends them with one `write` per
group (every 16 images, and at least every 0.1 s), so a record is in the kernel's page cache within about 0.1 s
of its model call: killing kpbench (SIGKILL, a crash) loses only the images still queued, which a resume runs
again (Ctrl-C writes them). `fsync` is grouped: at most once a second while images
arrive, within about a second of the last one, and when the writer closes (end of the loop, Ctrl-C, an error); a
power cut can thus lose the last second of records, and nothing before it. A record cut short (a kill mid-write,
a full disk, a power cut) is detected by its length and checksum: readers ignore such a torn tail and a resume
cuts it off (`truncate_torn_tail`) before appending. A damaged record followed by valid ones is not a tail: it is
a KpbenchError naming the file and the byte offset.

No torch here: `kpbench evaluate RUN_DIR` reads the store without it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError

if TYPE_CHECKING:
    from kpbench.runs.detections import BatchDetections, ImageDetections

STORE_VERSION = 1
FILE_MAGIC = b"KPBSTORE"
FILE_HEADER = FILE_MAGIC + struct.pack("<II", STORE_VERSION, 0)
RECORD_MAGIC = b"KPRD"
F_FLOAT64 = 1
F_LABELS64 = 2
F_SHAPE = 4
_PREFIX = struct.Struct("<4sII")  # magic, length, crc32
_HEAD = struct.Struct("<HHIIq4i")  # flags, K, N, reserved, image id, input shape: bytes 12..48
HEADER_BYTES = _PREFIX.size + _HEAD.size  # 48
SYNC_INTERVAL_S = 1.0
WRITE_INTERVAL_S = 0.1  # the writer thread looks for queued images at least this often
_INT32 = np.iinfo(np.int32)
_MMAP_MIN = 1 << 20


def record_size(flags: int, k: int, n: int) -> int:
    """The bytes of a record of N detections of K keypoints with `flags`, padding included."""
    width = 8 if flags & F_FLOAT64 else 4
    data = n * (4 + 1 + 3 * k + k) * width + n * (8 if flags & F_LABELS64 else 4)
    return HEADER_BYTES + data + (-data) % 8


def _exact_float32(values: np.ndarray) -> bool:
    """Whether float64 values are all exactly float32 values (NaN counts as NaN: its payload is no detection)."""
    if values.dtype == np.float32 or not values.size:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = values.astype(np.float32)
    return bool(np.array_equal(narrow, values, equal_nan=True))


def encode_record(
    image_id: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray,
    labels: np.ndarray,
    input_shape: Sequence[int] | None = None,
) -> bytes:
    """One image's record: N detections (boxes (N, 4), scores (N,), keypoints (N, K, 3), keypoint_scores (N, K),
    labels (N,)), float32 when every value is exactly a float32, else float64."""
    n = int(scores.shape[0])
    k = int(keypoints.shape[1]) if keypoints.ndim == 3 else 0
    floats = (boxes, scores, keypoints, keypoint_scores)
    flags = 0 if all(_exact_float32(a) for a in floats) else F_FLOAT64
    dtype = np.float64 if flags & F_FLOAT64 else np.float32
    if labels.size and (labels.min() < _INT32.min or labels.max() > _INT32.max):
        flags |= F_LABELS64
    label_dtype = np.int64 if flags & F_LABELS64 else np.int32
    shape = (0, 0, 0, 0)
    if input_shape is not None:
        flags |= F_SHAPE
        shape = tuple(int(v) for v in input_shape)
    parts = [np.ascontiguousarray(a, dtype=dtype).tobytes() for a in floats]
    parts.append(np.ascontiguousarray(labels, dtype=label_dtype).tobytes())
    data_len = sum(len(p) for p in parts)
    parts.append(b"\0" * ((-data_len) % 8))
    body = _HEAD.pack(flags, k, n, 0, int(image_id), *shape) + b"".join(parts)
    return _PREFIX.pack(RECORD_MAGIC, 4 + len(body), zlib.crc32(body)) + body


def encode_image(det: ImageDetections) -> bytes:
    """`encode_record` of one ImageDetections."""
    return encode_record(det.image_id, det.boxes, det.scores, det.keypoints, det.keypoint_scores, det.labels,
                         det.input_shape)


def encode_batch(batch: BatchDetections, skip: set[int] | frozenset[int] = frozenset()) -> bytes:
    """The records of a model call's images, in order, leaving out the image ids in `skip`."""
    out = []
    starts = batch.starts
    for i, image_id in enumerate(batch.image_ids.tolist()):
        if image_id in skip:
            continue
        a, b = int(starts[i]), int(starts[i + 1])
        out.append(encode_record(image_id, batch.boxes[a:b], batch.scores[a:b], batch.keypoints[a:b],
                                 batch.keypoint_scores[a:b], batch.labels[a:b], batch.input_shape))
    return b"".join(out)


# --- reading ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreIndex:
    """The records of one store file: where each starts and what it holds (R records, in file order)."""

    path: Path
    data: Any  # the file's bytes (bytes or a read-only mmap) (up to `valid_end`; a torn tail is not part of any record)
    image_ids: np.ndarray  # (R,) int64
    offsets: np.ndarray  # (R,) int64, byte offset of each record
    flags: np.ndarray  # (R,) int64
    counts: np.ndarray  # (R,) int64, detections
    num_keypoints: np.ndarray  # (R,) int64
    input_shapes: np.ndarray  # (R, 4) int64, zeros where a record has none
    valid_end: int  # the byte offset where the valid records end
    size: int  # the file's size: more than valid_end when the tail is torn

    @property
    def torn(self) -> bool:
        """Whether bytes after the last valid record were cut short (ignored by readers, cut on resume)."""
        return self.size > self.valid_end

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])


def is_store_file(path: str | Path) -> bool:
    """Whether a detections file is a format-3 store, not JSON lines: named `*.bin` (the store and its rank shards,
    whatever they hold: an empty or cut header is an empty store, other bytes an error naming the file, in
    `scan_store`), or starting with the store's magic."""
    path = Path(path)
    if path.suffix == ".bin":
        return True
    try:
        with path.open("rb") as fh:
            return fh.read(len(FILE_MAGIC)) == FILE_MAGIC
    except OSError:
        return False


def _check_record(data: bytes | memoryview, pos: int, end: int) -> tuple[int, int, int, int, tuple[int, ...], int] | None:
    """(flags, K, N, image id, shape, next offset) of a valid record at `pos`, or None."""
    if end - pos < HEADER_BYTES:
        return None
    magic, length, crc = _PREFIX.unpack_from(data, pos)
    if magic != RECORD_MAGIC or length < HEADER_BYTES - 8 or pos + 8 + length > end:
        return None
    flags, k, n, _, image_id, *shape = _HEAD.unpack_from(data, pos + 12)
    if flags & ~(F_FLOAT64 | F_LABELS64 | F_SHAPE) or record_size(flags, k, n) != 8 + length:
        return None
    if zlib.crc32(data[pos + 12 : pos + 8 + length]) != crc:
        return None
    return flags, k, n, image_id, tuple(shape), pos + 8 + length


def _read(path: Path) -> bytes | mmap.mmap:
    """A file's bytes: memory-mapped when large (no copy; pages come and go with the page cache), else read."""
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < _MMAP_MIN:
                return fh.read()
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise KpbenchError(f"{path}: cannot read the detections store ({exc.strerror or exc})") from None


def scan_store(path: str | Path, data: bytes | None = None) -> StoreIndex:
    """Index a store file: every record checked (magic, length, checksum). A torn tail (the records from the first
    bad one to the end of the file unreadable) is left out; a bad record with valid records after it, or a file
    that is not a store, is a KpbenchError naming the file."""
    path = Path(path)
    raw: bytes | mmap.mmap = _read(path) if data is None else data
    size = len(raw)
    data = raw  # type: ignore[assignment]
    if size < len(FILE_HEADER):
        if FILE_HEADER.startswith(bytes(data[:size])):  # created but its header cut short: an empty store
            return _index(path, data, [], 0, size)
        raise KpbenchError(f"{path}: not a kpbench detections store (no {FILE_MAGIC.decode()} header)")
    if bytes(data[: len(FILE_MAGIC)]) != FILE_MAGIC:
        raise KpbenchError(f"{path}: not a kpbench detections store (no {FILE_MAGIC.decode()} header)")
    (version,) = struct.unpack_from("<I", data, len(FILE_MAGIC))
    if version != STORE_VERSION:
        raise KpbenchError(f"{path}: detections store version {version}; this kpbench reads version {STORE_VERSION}")
    view = memoryview(data)
    records: list[tuple[int, int, int, int, int, tuple[int, ...]]] = []
    pos = len(FILE_HEADER)
    while pos < size:
        found = _check_record(view, pos, size)
        if found is None:
            later = _next_valid_record(raw, view, pos + 1, size)
            if later is not None:
                raise KpbenchError(
                    f"{path}: damaged record at byte {pos} (its length or checksum is wrong) followed by valid ones "
                    f"from byte {later}: the store is corrupt; redo the run with `kpbench run ... --overwrite`"
                )
            break  # a torn tail
        flags, k, n, image_id, shape, nxt = found
        records.append((image_id, pos, flags, n, k, shape))
        pos = nxt
    return _index(path, data, records, pos if pos <= size else size, size)


def _next_valid_record(raw: bytes | mmap.mmap, view: memoryview, start: int, end: int) -> int | None:
    """The offset of the first valid record at or after `start`, searching for its magic."""
    pos = raw.find(RECORD_MAGIC, start)
    while pos != -1:
        if _check_record(view, pos, end) is not None:
            return pos
        pos = raw.find(RECORD_MAGIC, pos + 1)
    return None


def _index(path: Path, data: Any, records: list[tuple[int, int, int, int, int, tuple[int, ...]]], valid_end: int,
           size: int) -> StoreIndex:
    r = len(records)
    return StoreIndex(
        path=path, data=data,
        image_ids=np.fromiter((t[0] for t in records), np.int64, r),
        offsets=np.fromiter((t[1] for t in records), np.int64, r),
        flags=np.fromiter((t[2] for t in records), np.int64, r),
        counts=np.fromiter((t[3] for t in records), np.int64, r),
        num_keypoints=np.fromiter((t[4] for t in records), np.int64, r),
        input_shapes=np.array([t[5] for t in records], dtype=np.int64).reshape(r, 4),
        valid_end=valid_end, size=size,
    )  # fmt: skip


def record_columns(index: StoreIndex, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Record i's columns as read-only views of the file's bytes, in their stored dtype: boxes (N, 4), scores (N,),
    keypoints (N, K, 3), keypoint_scores (N, K), labels (N,)."""
    flags, n, k = int(index.flags[i]), int(index.counts[i]), int(index.num_keypoints[i])
    dtype = np.dtype(np.float64 if flags & F_FLOAT64 else np.float32)
    label_dtype = np.dtype(np.int64 if flags & F_LABELS64 else np.int32)
    pos = int(index.offsets[i]) + HEADER_BYTES
    out = []
    for shape in ((n, 4), (n,), (n, k, 3), (n, k)):
        count = int(np.prod(shape))
        out.append(np.frombuffer(index.data, dtype, count, pos).reshape(shape))
        pos += count * dtype.itemsize
    out.append(np.frombuffer(index.data, label_dtype, n, pos))
    return tuple(out)  # type: ignore[return-value]


def iter_store(path: str | Path) -> Iterator[ImageDetections]:
    """Every record of a store file as an ImageDetections (float64 arrays, int64 labels), in file order; a torn
    tail is skipped."""
    from kpbench.runs.detections import ImageDetections

    index = scan_store(path)
    for i in range(len(index)):
        boxes, scores, keypoints, keypoint_scores, labels = record_columns(index, i)
        shape = tuple(int(v) for v in index.input_shapes[i]) if index.flags[i] & F_SHAPE else None
        yield ImageDetections(
            image_id=int(index.image_ids[i]), boxes=boxes.astype(np.float64), scores=scores.astype(np.float64),
            labels=labels.astype(np.int64), keypoints=keypoints.astype(np.float64),
            keypoint_scores=keypoint_scores.astype(np.float64), input_shape=shape,
        )


# --- writing ---------------------------------------------------------------------------------------------------


def create_store(path: str | Path, records: Iterable[bytes] = ()) -> None:
    """Write a store file atomically: the header, then `records` (encoded records) in order."""
    from kpbench.core.io import atomic_write_chunks

    atomic_write_chunks(path, [FILE_HEADER, *records])


def truncate_torn_tail(path: str | Path) -> StoreIndex | None:
    """Cut a torn tail off a store file so appending continues after its last valid record (and give a file
    whose header was cut short its header); returns the file's index, or None when there is no file."""
    path = Path(path)
    if not path.is_file():
        return None
    index = scan_store(path)
    if index.size < len(FILE_HEADER):
        create_store(path)
        return scan_store(path)
    if index.torn:
        with path.open("r+b") as fh:
            fh.truncate(index.valid_end)
            fh.flush()
            os.fsync(fh.fileno())
        index = scan_store(path)
    return index


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a regular file may take a write in parts)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class StoreWriter:
    """Appends finished images to a store file from a thread: encoding, checksums, writes and grouped fsyncs run
    off the main thread (numpy's copies, zlib's crc32 and the system calls release the GIL for most of it).

    `put(batch, skip)` queues a model call's images (those in `skip`, already cached, are left out); `close()`
    waits for everything queued to be written and synced. A write that fails (a full disk) is raised, as a
    KpbenchError naming the file, by the next `put` or by `close`; the records written before stay valid.

    `before_write` (optional) is called on the thread before each group is written: records kept beside the store
    that its records depend on (a top-down run's person boxes) are made durable there, once per group. An error it
    raises is reported as a write error is.

    The thread is woken once per `group` queued images, or every `write_interval` seconds, not once per model call:
    each wake-up of a second Python thread costs the main thread GIL hand-offs (with a zero-cost model on 2 cores,
    waking it per call ran the loop at 2,650 images/s, per 16 images at 3,850, both decoding on the main thread).
    So an image reaches the page cache within about `write_interval` of its call (plus the encoding), and a kill
    loses at most the images of that last interval, which a resume runs again.
    """

    def __init__(
        self, path: str | Path, sync_interval: float = SYNC_INTERVAL_S, max_queued: int = 64, group: int = 16,
        write_interval: float = WRITE_INTERVAL_S, before_write: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.before_write = before_write
        self.sync_interval = sync_interval
        self.write_interval = write_interval
        self.group = max(1, group)
        self.max_queued = max(self.group, max_queued)
        try:
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            if fresh:
                _write_all(self._fd, FILE_HEADER)
        except OSError as exc:
            raise self._cannot_write(exc) from None
        self._pending: list[tuple[BatchDetections, frozenset[int]]] = []
        self._pending_images = 0
        self._closing = False
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._unsynced = False
        self._last_sync = time.monotonic()
        self.bytes = 0  # written so far
        self._thread = threading.Thread(target=self._work, name="kpbench-store-writer", daemon=True)
        self._thread.start()

    def _cannot_write(self, exc: OSError) -> KpbenchError:
        return KpbenchError(
            f"{self.path}: cannot write the detections store ({exc.strerror or exc}); the images stored so far are "
            "kept: make room and run the same command again to resume"
        )

    def _take(self) -> tuple[list[tuple[BatchDetections, frozenset[int]]], bool]:
        """Wait for a group of images, the close, or the end of the interval; take what is queued."""
        with self._changed:
            if not self._closing and self._pending_images < self.group:
                # Every interval, whatever is queued (an image waits at most this long to be written); `_work`
                # syncs once a second has passed since the last sync.
                self._changed.wait(self.write_interval)
            items, self._pending, self._pending_images = self._pending, [], 0
            self._changed.notify_all()  # a put waiting for room
            return items, self._closing

    def _work(self) -> None:
        while True:
            items, closing = self._take()
            if items and self._error is None:  # (after an error, drain: the main thread raises it)
                try:
                    data = b"".join(encode_batch(batch, skip) for batch, skip in items)
                    if self.before_write is not None:  # what these records depend on, durable first
                        self.before_write()
                    _write_all(self._fd, data)
                    self.bytes += len(data)
                    self._unsynced = True
                except OSError as exc:  # a full disk, say: reported to the main thread on the next put/close
                    self._error = self._cannot_write(exc)
                except BaseException as exc:
                    self._error = exc
            if closing:
                self._sync()
                return
            if self._unsynced and time.monotonic() - self._last_sync >= self.sync_interval:
                self._sync()

    def _sync(self) -> None:
        if not self._unsynced or self._error is not None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._error = self._cannot_write(exc)
        self._unsynced = False
        self._last_sync = time.monotonic()

    def put(self, batch: BatchDetections, skip: Iterable[int] = ()) -> None:
        """Queue a model call's images for writing (blocks while `max_queued` images wait)."""
        if self._error is not None:
            raise self._error
        item = (batch, frozenset(int(i) for i in skip))
        with self._changed:
            while self._pending_images >= self.max_queued and self._thread.is_alive():
                self._changed.notify_all()
                self._changed.wait(0.1)
            self._pending.append(item)
            self._pending_images += len(batch.image_ids)
            if self._pending_images >= self.group:
                self._changed.notify_all()

    def close(self) -> None:
        """Write and sync everything queued (also on Ctrl-C, so nothing finished is lost), then close the file."""
        if self._thread.is_alive():
            with self._changed:
                self._closing = True
                self._changed.notify_all()
            self._thread.join()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1  # a second close must not close a number the process has reused
        if self._error is not None:
            raise self._error
