"""A run directory's detections as arrays, read in one go: `read_run_arrays(run_dir) -> RunArrays`.

Reads any format: the store of format 3 (detections.bin, `kpbench.runs.store`), the JSON lines of format 1 and 2
(detections.jsonl), and any rank shards an interrupted distributed run left (of either kind). When an image has
records in several files, the last file's wins (JSON lines, store, shards by rank: `detection_files`), as a
resumed run's merge decides. Torn tails are left out.

Rows come in COCO results order: images by ascending id, each image's detections in the model's order, so row i
is result i of the run's keypoints_results.json and bbox_results.json.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.arrays import DetectionArrays
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import NUM_KEYPOINTS

if TYPE_CHECKING:
    import pandas as pd

    from kpbench.runs.detections import ImageDetections


@dataclass(frozen=True, eq=False)
class RunArrays:
    """The cached detections of a run directory (M images, N detections, K keypoints).

    - ``image_ids`` (M,) int64, ascending, and ``counts`` (M,) int64 detections per image (images with no
      detection included);
    - ``detections``: a `DetectionArrays` of the N rows (boxes xywh float64 computed as ``[x1, y1, x2 - x1,
      y2 - y1]``, category ids from the model's labels, the person score, keypoints (N, K, 3) and keypoint scores
      (N, K), all float64: the model's float32 widened exactly);
    - ``boxes_xyxy`` (N, 4) float64, the boxes as the model gave them;
    - ``input_shapes`` (M,): the padded batch (N, C, H, W) each image went through, a tuple, or None for an image
      without one (a model without a shape recorder, a cache begun by an older kpbench);
    - ``num_keypoints`` K (by default the detections');
    - ``files`` and ``file_index`` (M,): which file each image's record was read from (empty when the arrays were
      made otherwise).
    """

    image_ids: np.ndarray
    counts: np.ndarray
    detections: DetectionArrays
    boxes_xyxy: np.ndarray
    input_shapes: list[tuple[int, ...] | None]
    num_keypoints: int | None = None
    files: tuple[Path, ...] = ()
    file_index: np.ndarray | None = None
    torn_files: tuple[Path, ...] = ()  # files whose torn tail was left out

    def __post_init__(self) -> None:
        if self.num_keypoints is None:
            object.__setattr__(self, "num_keypoints", self.detections.num_keypoints)

    @property
    def starts(self) -> np.ndarray:
        """(M + 1,) row offsets: image j's detections are rows ``starts[j]:starts[j + 1]``."""
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __len__(self) -> int:
        """The number of images."""
        return int(self.image_ids.shape[0])

    def position(self, image_id: int) -> int:
        """The index j of an image among `image_ids`; a KeyError when it is not cached."""
        j = int(np.searchsorted(self.image_ids, image_id))
        if j >= len(self) or int(self.image_ids[j]) != int(image_id):
            raise KeyError(image_id)
        return j

    def rows(self, image_id: int) -> slice:
        """The rows of one image's detections (a KeyError when it is not cached)."""
        j = self.position(image_id)
        starts = self.starts
        return slice(int(starts[j]), int(starts[j + 1]))

    def file_of(self, image_id: int) -> Path:
        """The file whose record of the image was read (a KeyError when the arrays do not say)."""
        j = self.position(image_id)
        if self.file_index is None or not self.files:
            raise KeyError(image_id)
        return self.files[int(self.file_index[j])]

    def image(self, image_id: int) -> ImageDetections:
        """One image's detections as an ImageDetections (float64 arrays, xyxy boxes)."""
        from kpbench.runs.detections import ImageDetections

        j = self.position(image_id)
        a, b = (int(v) for v in self.starts[j : j + 2])
        d = self.detections
        shape = self.input_shapes[j]
        k = int(self.num_keypoints or 0)
        return ImageDetections(
            image_id=int(image_id), boxes=self.boxes_xyxy[a:b].copy(), scores=d.scores[a:b].copy(),
            labels=d.category_ids[a:b].copy(),
            keypoints=d.keypoints[a:b].copy() if d.keypoints is not None else np.zeros((b - a, k, 3)),
            keypoint_scores=d.keypoint_scores[a:b].copy() if d.keypoint_scores is not None else np.zeros((b - a, k)),
            input_shape=shape,
        )

    def images(self) -> Iterator[ImageDetections]:
        """Every image's ImageDetections, by ascending id."""
        for image_id in self.image_ids.tolist():
            yield self.image(image_id)

    def select(self, image_ids: Sequence[int]) -> RunArrays:
        """The arrays of the given images that are cached (in ascending id order; others are left out)."""
        wanted = np.unique(np.asarray(list(image_ids), dtype=np.int64))
        keep = np.isin(self.image_ids, wanted)
        if keep.all():
            return self
        rows = np.flatnonzero(np.repeat(keep, self.counts))  # the kept images' detections, in order
        return RunArrays(
            image_ids=self.image_ids[keep], counts=self.counts[keep], detections=self.detections.take(rows),
            boxes_xyxy=self.boxes_xyxy[rows], num_keypoints=self.num_keypoints,
            input_shapes=[s for s, k in zip(self.input_shapes, keep.tolist()) if k], files=self.files,
            file_index=None if self.file_index is None else self.file_index[keep], torn_files=self.torn_files,
        )

    def to_pandas(self, keypoint_names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per detection: image_id, category_id, score, x1, y1, x2, y2, then per keypoint NAME_x, NAME_y,
        NAME_v and NAME_score (names from `keypoint_names`, else kp0, kp1, ...)."""
        import pandas as pd

        d = self.detections
        k = int(self.num_keypoints or 0)
        names = list(keypoint_names) if keypoint_names is not None else [f"kp{i}" for i in range(k)]
        if len(names) != k:
            raise KpbenchError(f"to_pandas: {len(names)} keypoint names for {k} keypoints")
        columns: dict[str, Any] = {"image_id": d.image_ids, "category_id": d.category_ids, "score": d.scores}
        for i, name in enumerate(("x1", "y1", "x2", "y2")):
            columns[name] = self.boxes_xyxy[:, i]
        for i, name in enumerate(names):
            if d.keypoints is not None:
                columns[f"{name}_x"] = d.keypoints[:, i, 0]
                columns[f"{name}_y"] = d.keypoints[:, i, 1]
                columns[f"{name}_v"] = d.keypoints[:, i, 2]
            if d.keypoint_scores is not None:
                columns[f"{name}_score"] = d.keypoint_scores[:, i]
        return pd.DataFrame(columns)


# The last arrays read of each unchanged set of files, while anyone still holds them: the run's merge reads the
# store once, and the evaluation that follows in the same process gets the same arrays instead of a second parse.
_RECENT: weakref.WeakValueDictionary[tuple[Any, ...], RunArrays] = weakref.WeakValueDictionary()


def _fingerprint(run_dir: Path, files: Sequence[Path], k: int | None) -> tuple[Any, ...]:
    stats = []
    for path in files:
        st = path.stat()
        stats.append((str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return (str(run_dir.resolve()), tuple(stats), k)


def run_keypoint_count(run_dir: str | Path) -> int | None:
    """K of the schema a run directory's manifest records (17 for format 1); None without a readable manifest."""
    from kpbench.runs.directory import is_run_dir, read_manifest, run_format

    if not is_run_dir(run_dir):
        return None
    try:
        return run_format(read_manifest(run_dir)).schema.num_keypoints
    except KpbenchError:  # a damaged manifest is reported by the code that reads it for what it says
        return None


def read_run_arrays(run_dir: str | Path, num_keypoints: int | None = None) -> RunArrays:
    """Every cached image of a run directory, as arrays, read in one go (see the module docstring).

    K is `num_keypoints`, else the manifest's schema's, else the store's own (17 for JSON lines without a
    manifest); a record with another K is a KpbenchError naming its file. A folder without detections gives no
    images."""
    from kpbench.runs.directory import detection_files

    run_dir = Path(run_dir)
    files = detection_files(run_dir)
    k_wanted = num_keypoints if num_keypoints is not None else run_keypoint_count(run_dir)
    try:
        key = _fingerprint(run_dir, files, k_wanted)
    except OSError:
        key = None
    if key is not None and (hit := _RECENT.get(key)) is not None:
        return hit
    arrays = read_detection_files(files, k_wanted)
    if key is not None:
        _RECENT[key] = arrays
    return arrays


@dataclass
class _Gathered:
    """The records chosen from a list of detections files: per image (ascending id), its file and record."""

    files: tuple[Path, ...]
    sources: list[Any]  # per file: a StoreIndex, or the list of ImageDetections of a JSON-lines file
    image_ids: np.ndarray  # (M,) int64 ascending
    file_index: np.ndarray  # (M,) int64
    record_index: np.ndarray  # (M,) int64
    num_keypoints: int
    torn: tuple[Path, ...]

    def count(self, j: int) -> int:
        source = self.sources[int(self.file_index[j])]
        r = int(self.record_index[j])
        return len(source[r]) if isinstance(source, list) else int(source.counts[r])


def gather_records(files: Sequence[Path], num_keypoints: int | None = None) -> _Gathered:
    """Index every record of `files` (stores or JSON lines) and choose each image's last one."""
    from kpbench.runs.detections import iter_cache
    from kpbench.runs.store import is_store_file, scan_store

    sources: list[Any] = []
    ids, file_of, record_of = [], [], []
    torn: list[Path] = []
    k = num_keypoints
    for f, path in enumerate(files):
        if is_store_file(path):
            index = scan_store(path)
            if index.torn:
                torn.append(path)
            sources.append(index)
            ids.append(index.image_ids)
            present = index.num_keypoints[index.counts > 0]
        else:
            dets = list(iter_cache(path, k if k is not None else NUM_KEYPOINTS))
            sources.append(dets)
            ids.append(np.fromiter((d.image_id for d in dets), np.int64, len(dets)))
            present = np.array([d.keypoints.shape[1] for d in dets if len(d)], dtype=np.int64)
        if present.size:
            if k is None:
                k = int(present[0])
            if (present != k).any():
                other = int(present[present != k][0])
                raise KpbenchError(f"{path}: holds detections of {other} keypoints, but the run's schema has {k}")
        file_of.append(np.full(ids[-1].shape[0], f, np.int64))
        record_of.append(np.arange(ids[-1].shape[0], dtype=np.int64))
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    all_files = np.concatenate(file_of) if file_of else np.zeros(0, np.int64)
    all_records = np.concatenate(record_of) if record_of else np.zeros(0, np.int64)
    # The last record of each image wins: unique over the reversed list finds each id's last occurrence.
    image_ids, last = np.unique(all_ids[::-1], return_index=True)
    chosen = all_ids.shape[0] - 1 - last
    return _Gathered(files=tuple(files), sources=sources, image_ids=image_ids, file_index=all_files[chosen],
                     record_index=all_records[chosen], num_keypoints=NUM_KEYPOINTS if k is None else k,
                     torn=tuple(torn))


def assemble(gathered: _Gathered, keep: np.ndarray | None = None) -> RunArrays:
    """The RunArrays of gathered records (only the images where `keep` is true, when given)."""
    from kpbench.runs.store import F_SHAPE, record_columns

    positions = np.arange(gathered.image_ids.shape[0]) if keep is None else np.flatnonzero(keep)
    m = positions.shape[0]
    k = gathered.num_keypoints
    counts = np.fromiter((gathered.count(int(j)) for j in positions), np.int64, m)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(starts[-1])
    xyxy = np.empty((n, 4))
    scores = np.empty(n)
    keypoints = np.empty((n, k, 3))
    keypoint_scores = np.empty((n, k))
    labels = np.empty(n, np.int64)
    shapes: list[tuple[int, ...] | None] = [None] * m
    for out, j in enumerate(positions.tolist()):
        a, b = int(starts[out]), int(starts[out + 1])
        source = gathered.sources[int(gathered.file_index[j])]
        r = int(gathered.record_index[j])
        if isinstance(source, list):
            det = source[r]
            columns = (det.boxes, det.scores, det.keypoints, det.keypoint_scores, det.labels)
            shapes[out] = det.input_shape
        else:
            columns = record_columns(source, r)
            if source.flags[r] & F_SHAPE:
                shapes[out] = tuple(int(v) for v in source.input_shapes[r])
        if b > a:
            xyxy[a:b], scores[a:b], keypoints[a:b], keypoint_scores[a:b], labels[a:b] = columns
    xywh = xyxy.copy()
    xywh[:, 2:] = xyxy[:, 2:] - xyxy[:, :2]  # float64, as [x1, y1, x2 - x1, y2 - y1] in Python
    image_ids = gathered.image_ids[positions]
    detections = DetectionArrays(
        image_ids=np.repeat(image_ids, counts), category_ids=labels, scores=scores, boxes=xywh,
        keypoints=keypoints, keypoint_scores=keypoint_scores,
    )
    return RunArrays(
        image_ids=image_ids, counts=counts, detections=detections, boxes_xyxy=xyxy,
        input_shapes=shapes, num_keypoints=k, files=gathered.files,
        file_index=gathered.file_index[positions], torn_files=gathered.torn,
    )


def read_detection_files(files: Sequence[Path], num_keypoints: int | None = None) -> RunArrays:
    """`read_run_arrays` of an explicit list of detections files (stores or JSON lines), later files winning."""
    return assemble(gather_records(files, num_keypoints))


def remember(run_dir: str | Path, arrays: RunArrays, num_keypoints: int | None = None) -> None:
    """Offer `arrays` to later `read_run_arrays(run_dir)` calls while its files stay unchanged (and while anyone
    holds the arrays): what a run's merge read is what its evaluation gets."""
    from kpbench.runs.directory import detection_files

    run_dir = Path(run_dir)
    k = num_keypoints if num_keypoints is not None else run_keypoint_count(run_dir)
    with contextlib.suppress(OSError):
        _RECENT[_fingerprint(run_dir, detection_files(run_dir), k)] = arrays


def read_run_detections(run_dir: str | Path) -> dict[int, ImageDetections]:
    """Every cached image of a run directory by id, as ImageDetections (float64 arrays): `read_run_arrays` image by
    image, for code that works one image at a time (drawing)."""
    arrays = read_run_arrays(run_dir)
    return {det.image_id: det for det in arrays.images()}
