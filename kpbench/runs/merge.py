"""Merging a run directory's detections files into its one canonical store, and counting what is cached.

The canonical store (detections.bin) holds one record per selected image, in ascending image-id order. A run
merges before its loop (a resume: torn tails cut, leftover rank shards and the JSON lines of a format-1 or
format-2 directory folded in) and after it (a distributed run's rank shards). Records are copied byte for byte
from the files they were read from (a record's bytes depend only on the model's outputs), so a resumed or
distributed run's store equals an uninterrupted single-process run's, and a store already canonical is not
rewritten at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kpbench.runs.arrays import RunArrays, assemble, gather_records, remember, run_keypoint_count
from kpbench.runs.directory import detection_files, store_path
from kpbench.runs.store import FILE_HEADER, create_store, encode_image, is_store_file, scan_store, truncate_torn_tail


def write_canonical_store(run_dir: str | Path, image_ids: Sequence[int]) -> RunArrays:
    """Merge every detections file of RUN_DIR into RUN_DIR/detections.bin: one record per image of `image_ids`
    that is cached, in id order, written atomically; then delete the rank shards and the JSON lines it folded in.
    Returns the store's arrays (read once: what the merge read is what it returns)."""
    run_dir = Path(run_dir)
    store = store_path(run_dir)
    files = detection_files(run_dir)
    k = run_keypoint_count(run_dir)
    gathered = gather_records(files, k)
    keep = np.isin(gathered.image_ids, np.asarray(list(image_ids), dtype=np.int64))
    if _is_canonical(gathered, files, store, keep) and gathered.torn:
        truncate_torn_tail(store)  # only a torn tail: cut it off in place (its records stay where they are)
        gathered = gather_records([store], k)
    if not _is_canonical(gathered, files, store, keep) or gathered.torn:
        chosen = np.flatnonzero(keep)
        create_store(store, _records(gathered, chosen))
        for path in files:
            if path != store:
                path.unlink(missing_ok=True)
        gathered = gather_records([store], k)
        keep = None
    elif not files:
        create_store(store)
    arrays = assemble(gathered, keep)
    remember(run_dir, arrays, k)
    return arrays


def _is_canonical(gathered, files: list[Path], store: Path, keep: np.ndarray) -> bool:  # type: ignore[no-untyped-def]
    """Whether the store alone already is the canonical file (but for a torn tail, which `gathered.torn` says):
    the only file, every record a selected image, ids strictly ascending."""
    if files != [store] or not keep.all():
        return False
    index = gathered.sources[0]
    return bool(len(index) == len(gathered.image_ids) and (np.diff(index.image_ids) > 0).all())


def _records(gathered, positions: np.ndarray):  # type: ignore[no-untyped-def]
    """The bytes of each chosen record: a store's copied as they are, a JSON line's encoded."""
    for j in positions.tolist():
        source = gathered.sources[int(gathered.file_index[j])]
        r = int(gathered.record_index[j])
        if isinstance(source, list):
            yield encode_image(source[r])
        else:
            start = int(source.offsets[r])
            end = int(source.offsets[r + 1]) if r + 1 < len(source) else source.valid_end
            yield bytes(source.data[start:end])


def ensure_store(run_dir: str | Path) -> Path:
    """RUN_DIR/detections.bin exists (an empty store if there was none); returns its path."""
    path = store_path(run_dir)
    if not path.exists() or path.stat().st_size < len(FILE_HEADER):
        create_store(path)
    return path


def count_cached_images(run_dir: str | Path) -> int:
    """Images with a record in any detections file of RUN_DIR, each image once: a store's valid records, and the
    complete lines of a JSON-lines file, whose image id is read from the line's text without decoding its
    detections (an image in both, as after a format-2 run resumed into a store, counts once)."""
    ids: set[int] = set()
    for path in detection_files(run_dir):
        try:
            if is_store_file(path):
                ids.update(scan_store(path).image_ids.tolist())
            else:
                with path.open("rb") as fh:
                    for line in fh:
                        found = _IMAGE_ID.search(line) if line.endswith(b"\n") else None
                        if found:
                            ids.add(int(found.group(1)))
        except Exception:  # a count for a message, never a reason to fail
            continue
    return len(ids)


_IMAGE_ID = re.compile(rb'"image_id":\s*(-?\d+)')


def cached_image_ids(run_dir: str | Path) -> set[int]:
    """The ids of the images cached in any detections file of RUN_DIR (a store's valid records; a JSON-lines
    file's complete lines, parsed)."""
    from kpbench.runs.detections import iter_cache

    ids: set[int] = set()
    k = run_keypoint_count(run_dir)
    for path in detection_files(run_dir):
        if is_store_file(path):
            ids.update(scan_store(path).image_ids.tolist())
        else:
            ids.update(det.image_id for det in iter_cache(path, k))
    return ids
