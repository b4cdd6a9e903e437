"""The detections store of format 3 (kpbench.runs.store), reading a run's detections as arrays (kpbench.runs.arrays),
the COCO results and JSON-lines encoders (kpbench.runs.results), and the loop's host copy (kpbench.engine.inference):
exact values, exact bytes, torn tails, damaged records, grouped fsyncs."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from kpdata import make_run_dir

from kpbench.core.errors import KpbenchError
from kpbench.runs import directory as rundir
from kpbench.runs.arrays import read_detection_files, read_run_arrays
from kpbench.runs.detections import BatchDetections, ImageDetections, append_detections, to_coco_results
from kpbench.runs.results import coco_results_bytes, encode_jsonl, float_rows
from kpbench.runs.store import (
    F_FLOAT64,
    F_LABELS64,
    F_SHAPE,
    FILE_HEADER,
    StoreWriter,
    create_store,
    encode_image,
    record_size,
    scan_store,
    truncate_torn_tail,
)

RNG = np.random.default_rng(24)


def awkward(shape: tuple[int, ...], float32: bool = True) -> np.ndarray:
    """Values a results file finds hard to print: zeros of both signs, integers, tiny and huge magnitudes, values
    either side of repr's notation switches (1e-4, 1e16), coordinates; float32 values widened (a model's)."""
    x = RNG.standard_normal(shape) * np.exp(RNG.uniform(-25, 45, shape))
    pick = RNG.integers(0, 9, shape)
    x = np.where(pick == 0, 0.0, x)
    x = np.where(pick == 1, -0.0, x)
    x = np.where(pick == 2, np.round(x), x)
    x = np.where(pick == 3, RNG.uniform(-20, 1400, shape), x)
    x = np.where(pick == 4, 1e-4 * RNG.uniform(0.5, 1.5, shape), x)
    x = np.where(pick == 5, 1e16 * RNG.uniform(0.5, 1.5, shape), x)
    return x.astype(np.float32).astype(np.float64) if float32 else x


def image(image_id: int, n: int, k: int = 17, float32: bool = True, shape: tuple[int, ...] | None = None,
          labels: np.ndarray | None = None) -> ImageDetections:  # fmt: skip
    return ImageDetections(
        image_id=image_id, boxes=awkward((n, 4), float32), scores=np.abs(awkward((n,), float32)),
        labels=RNG.integers(1, 4, n) if labels is None else labels, keypoints=awkward((n, k, 3), float32),
        keypoint_scores=awkward((n, k), float32), input_shape=shape,
    )


def old_results_files(images: list[ImageDetections]) -> tuple[bytes, bytes]:
    """keypoints_results.json and bbox_results.json as kpbench wrote them before format 3."""
    keypoints, boxes = to_coco_results(sorted(images, key=lambda d: d.image_id))
    return ((json.dumps(keypoints, indent=None, allow_nan=False) + "\n").encode(),
            (json.dumps(boxes, indent=None, allow_nan=False) + "\n").encode())


# --- the format -------------------------------------------------------------------------------------------------


def test_records_hold_the_values_exactly_in_296_bytes_per_detection(tmp_path: Path) -> None:
    images = [
        image(7, 100, shape=(1, 3, 800, 1216)),  # float32 values: a float32 record
        image(3, 0),  # no detection
        image(2**40, 2, float32=False),  # float64 values (MediaPipe's, a plugin's): a float64 record
        image(5, 3, labels=np.array([1, 2**35, -4])),  # a label beyond int32
    ]
    path = tmp_path / "detections.bin"
    create_store(path, [encode_image(d) for d in images])
    index = scan_store(path)
    assert index.image_ids.tolist() == [7, 3, 2**40, 5] and not index.torn
    assert index.flags.tolist() == [F_SHAPE, 0, F_FLOAT64, F_LABELS64]
    assert index.counts.tolist() == [100, 0, 2, 3] and index.num_keypoints.tolist() == [17] * 4
    # 48 bytes of header, 296 per float32 detection with 17 keypoints: (4 + 1 + 51 + 17) * 4 + 4 (an int32 label).
    assert record_size(0, 17, 100) == 48 + 296 * 100 and record_size(0, 17, 1) == 48 + 296
    assert record_size(F_FLOAT64, 17, 1) == 48 + 73 * 8 + 4 + 4  # an int32 label, then padded to 8 bytes
    assert path.stat().st_size == 16 + sum(record_size(f, 17, n) for f, n in zip(index.flags, index.counts))
    arrays = read_detection_files([path])
    assert arrays.image_ids.tolist() == [3, 5, 7, 2**40] and arrays.counts.tolist() == [0, 3, 100, 2]
    for det in images:
        got = arrays.image(det.image_id)
        for name in ("boxes", "scores", "labels", "keypoints", "keypoint_scores"):
            assert np.array_equal(getattr(got, name), getattr(det, name)), (det.image_id, name)
            assert getattr(got, name).dtype == (np.int64 if name == "labels" else np.float64)
        assert got.input_shape == det.input_shape
    d = arrays.detections
    rows = arrays.rows(7)
    assert (d.image_ids[rows] == 7).all() and np.array_equal(arrays.boxes_xyxy[rows], images[0].boxes)
    x1, y1, x2, y2 = images[0].boxes.T
    assert np.array_equal(d.boxes[rows], np.stack([x1, y1, x2 - x1, y2 - y1], 1))  # xywh as the results file has it
    assert arrays.input_shapes == [None, None, (1, 3, 800, 1216), None]
    assert arrays.file_of(5) == path and rows == slice(3, 103)
    table = arrays.to_pandas(keypoint_names=[f"k{i}" for i in range(17)])
    assert len(table) == 105 and list(table.columns[:7]) == ["image_id", "category_id", "score", "x1", "y1", "x2", "y2"]
    assert table["k16_score"].tolist() == d.keypoint_scores[:, 16].tolist()


def test_a_torn_tail_is_ignored_and_cut_and_a_damaged_record_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "detections.bin"
    first, second, third = (encode_image(image(i, n)) for i, n in ((1, 3), (2, 0), (3, 5)))
    whole = FILE_HEADER + first + second + third
    for cut in range(len(FILE_HEADER) + len(first) + len(second) + 1, len(whole)):  # killed anywhere in the last record
        path.write_bytes(whole[:cut])
        index = scan_store(path)
        assert index.image_ids.tolist() == [1, 2] and index.torn and index.size == cut, cut
    assert truncate_torn_tail(path).image_ids.tolist() == [1, 2]
    assert path.read_bytes() == FILE_HEADER + first + second
    with path.open("ab") as fh:  # appending continues on a clean record
        fh.write(third)
    assert scan_store(path).image_ids.tolist() == [1, 2, 3]
    # A power cut can leave zeros where the last records were: still a tail.
    path.write_bytes(FILE_HEADER + first + bytes(len(second) + len(third)))
    assert scan_store(path).image_ids.tolist() == [1]
    # A header cut short is an empty store, and gets its header back before appending.
    path.write_bytes(FILE_HEADER[:5])
    assert len(scan_store(path)) == 0 and truncate_torn_tail(path) is not None and path.read_bytes() == FILE_HEADER

    damaged = bytearray(whole)
    damaged[len(FILE_HEADER) + 60] ^= 0x01  # one bit of the first record's detections: its checksum fails
    path.write_bytes(bytes(damaged))
    with pytest.raises(KpbenchError, match=rf"^{path}: damaged record at byte 16 \(its length or checksum is wrong\) "
                                           rf"followed by valid ones from byte {16 + len(first)}: the store is corrupt"):
        scan_store(path)
    path.write_bytes(b'{"image_id": 1}\n')
    with pytest.raises(KpbenchError, match=rf"^{path}: not a kpbench detections store \(no KPBSTORE header\)$"):
        scan_store(path)
    path.write_bytes(b"KPBSTORE" + struct.pack("<II", 2, 0))
    with pytest.raises(KpbenchError, match=r"detections store version 2; this kpbench reads version 1$"):
        scan_store(path)


def test_an_empty_or_cut_store_is_an_empty_store_to_every_reader_and_the_merge(tmp_path: Path) -> None:
    """A detections.bin of 0 to 7 bytes (created, then killed or copied short) is an empty store: read as no
    images, and merged (a resume) into a canonical store holding the JSON lines' images, never parsed as JSON lines."""
    from kpbench.runs.merge import write_canonical_store

    run = make_run_dir(tmp_path).path  # format 2: detections.jsonl holds images 7, 42 and 1000
    expected = read_run_arrays(run)
    lines = (run / "detections.jsonl").read_bytes()
    for cut in (0, 5, 7):
        (run / "detections.bin").write_bytes(FILE_HEADER[:cut])
        (run / "detections.jsonl").write_bytes(lines)
        assert len(read_detection_files([run / "detections.bin"])) == 0
        merged = write_canonical_store(run, [7, 42, 1000])
        assert merged.image_ids.tolist() == [7, 42, 1000]
        assert np.array_equal(merged.detections.keypoints, expected.detections.keypoints)
        assert not (run / "detections.jsonl").exists() and (run / "detections.bin").read_bytes()[:8] == b"KPBSTORE"
    for cut in (0, 5, 7):  # the store alone (a run killed before its first image): nothing cached yet
        (run / "detections.bin").write_bytes(FILE_HEADER[:cut])
        assert len(write_canonical_store(run, [7, 42, 1000])) == 0


def test_the_writer_appends_in_order_and_groups_its_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each model call's images are appended in order (those already stored skipped); fsync runs at most once per
    sync interval while images arrive, within about one interval of the last write, and at close."""
    synced: list[float] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        synced.append(time.monotonic())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    path = tmp_path / "detections.bin"
    writer = StoreWriter(path, sync_interval=0.4)
    batches = []
    for call in range(50):
        dets = [image(2 * call + j, 3) for j in range(2)]
        batch = BatchDetections(
            image_ids=np.array([d.image_id for d in dets]), counts=np.array([3, 3]),
            boxes=np.concatenate([d.boxes for d in dets]).astype(np.float32),
            scores=np.concatenate([d.scores for d in dets]).astype(np.float32),
            labels=np.concatenate([d.labels for d in dets]),
            keypoints=np.concatenate([d.keypoints for d in dets]).astype(np.float32),
            keypoint_scores=np.concatenate([d.keypoint_scores for d in dets]).astype(np.float32),
            input_shape=(2, 3, 64, 96))  # fmt: skip
        batches.append(batch)
        writer.put(batch, skip=[1] if call == 0 else [])
    started = time.monotonic()
    deadline = started + 5
    while not synced and time.monotonic() < deadline:  # nothing more arrives: synced within about one interval
        time.sleep(0.01)
    assert synced and synced[0] - started < 2.0
    writer.close()
    assert 1 <= len(synced) <= 3  # 50 calls in well under a second: one or two groups, and the close
    index = scan_store(path)
    assert index.image_ids.tolist() == [0, *range(2, 100)] and set(index.input_shapes[:, 2].tolist()) == {64}
    assert path.read_bytes() == FILE_HEADER + b"".join(
        encode_image(b.image(j)) for b in batches for j in range(2) if int(b.image_ids[j]) != 1)


def _one_image_batch(image_id: int) -> BatchDetections:
    det = image(image_id, 2)
    return BatchDetections(np.array([image_id]), np.array([2]), det.boxes, det.scores, det.labels, det.keypoints,
                           det.keypoint_scores)


def test_the_writer_wakes_once_per_group_and_within_its_write_interval(tmp_path: Path) -> None:
    """The writer thread is woken by a full group of images, not by every call: 15 queued images wait for the
    write interval, the 16th sends the group at once; a lone image reaches the file within the interval, and
    close() writes whatever is still queued."""
    path = tmp_path / "detections.bin"
    writer = StoreWriter(path, group=16, write_interval=3.0)
    time.sleep(0.05)  # the thread is waiting
    for image_id in range(15):
        writer.put(_one_image_batch(image_id))
    time.sleep(0.3)
    assert path.stat().st_size == len(FILE_HEADER)  # 15 images: not yet a group, well within the interval
    writer.put(_one_image_batch(15))
    deadline = time.monotonic() + 2.5
    while path.stat().st_size == len(FILE_HEADER) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scan_store(path).image_ids.tolist() == list(range(16))  # the group, long before the 3 s interval
    writer.put(_one_image_batch(16))
    writer.close()
    assert scan_store(path).image_ids.tolist() == list(range(17))

    lone = tmp_path / "lone.bin"
    writer = StoreWriter(lone, group=16, write_interval=0.2, sync_interval=5.0)
    started = time.monotonic()
    writer.put(_one_image_batch(7))
    while len(scan_store(lone)) == 0 and time.monotonic() - started < 5:
        time.sleep(0.01)
    waited = time.monotonic() - started
    # A second lone image after a write not yet synced waits the write interval too, not the sync's second.
    time.sleep(0.3)
    started = time.monotonic()
    writer.put(_one_image_batch(8))
    while len(scan_store(lone)) < 2 and time.monotonic() - started < 5:
        time.sleep(0.01)
    waited_again = time.monotonic() - started
    writer.close()
    assert scan_store(lone).image_ids.tolist() == [7, 8] and waited < 1.5 and waited_again < 0.6


def test_a_full_queue_makes_put_wait_for_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """put blocks while max_queued images wait (memory stays bounded when the disk is slower than the model), and
    every image still arrives, in order."""
    import kpbench.runs.store

    real = kpbench.runs.store._write_all
    writes: list[int] = []

    def slow(fd: int, data: bytes) -> None:
        time.sleep(0.05)
        writes.append(len(data))
        real(fd, data)

    monkeypatch.setattr(kpbench.runs.store, "_write_all", slow)
    path = tmp_path / "detections.bin"
    writer = StoreWriter(path, group=4, max_queued=8, write_interval=0.01)
    for image_id in range(40):
        writer.put(_one_image_batch(image_id))
        assert writer._pending_images <= 8
    writer.close()
    assert scan_store(path).image_ids.tolist() == list(range(40)) and len(writes) >= 5


def test_the_writer_reports_a_full_disk_and_keeps_what_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.runs.store

    path = tmp_path / "detections.bin"
    writer = StoreWriter(path)
    det = image(1, 2)
    one = BatchDetections(np.array([1]), np.array([2]), det.boxes, det.scores, det.labels, det.keypoints,
                          det.keypoint_scores)
    writer.put(one)
    real = kpbench.runs.store._write_all

    def half_then_full(fd: int, data: bytes) -> None:
        real(fd, data[:40])  # part of the record reaches the disk, then it is full
        raise OSError(28, "No space left on device")

    time.sleep(0.2)
    monkeypatch.setattr(kpbench.runs.store, "_write_all", half_then_full)
    writer.put(BatchDetections(np.array([2]), np.array([2]), det.boxes, det.scores, det.labels, det.keypoints,
                               det.keypoint_scores))
    message = rf"^{path}: cannot write the detections store \(No space left on device\); the images stored so far"
    with pytest.raises(KpbenchError, match=message):
        for _ in range(100):  # the next put (or the close) raises it
            time.sleep(0.02)
            writer.put(one)
    with pytest.raises(KpbenchError, match=message):
        writer.close()
    index = scan_store(path)
    assert index.image_ids.tolist() == [1] and index.torn


# --- COCO results and JSON lines, byte for byte ---------------------------------------------------------------------


@pytest.mark.parametrize("use_orjson", [True, False])
def test_results_files_are_byte_identical_to_json_dumps(tmp_path: Path, use_orjson: bool) -> None:
    if use_orjson:
        pytest.importorskip("orjson")
    images = [image(i, n, float32=i != 4, shape=(1, 3, 32, 32) if i % 2 else None)
              for i, n in ((9, 40), (4, 7), (1, 0), (2**33, 25))]
    path = tmp_path / "detections.bin"
    create_store(path, [encode_image(d) for d in images])
    arrays = read_detection_files([path])
    keypoints, boxes = old_results_files(images)
    assert coco_results_bytes(arrays.detections, "keypoints", use_orjson) == keypoints
    assert coco_results_bytes(arrays.detections, "bbox", use_orjson) == boxes
    lines = b"".join(json.dumps(d.to_record(), separators=(",", ":")).encode() + b"\n"
                     for d in sorted(images, key=lambda d: d.image_id))
    assert b"".join(encode_jsonl(arrays, use_orjson)) == lines
    assert coco_results_bytes(arrays.select([]).detections, "keypoints", use_orjson) == b"[]\n"
    # NaN: json.dumps(allow_nan=False) refuses it, and so does the encoder; the JSON lines write it as json does.
    broken = image(5, 2)
    broken.keypoints[1, 3, 0] = np.nan
    broken.scores[0] = np.inf
    create_store(path, [encode_image(broken)])
    arrays = read_detection_files([path])
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        coco_results_bytes(arrays.detections, "keypoints", use_orjson)
    assert b"".join(encode_jsonl(arrays, use_orjson)) == json.dumps(broken.to_record(), separators=(",", ":")).encode() + b"\n"


def test_float_rows_are_reprs_on_many_values() -> None:
    """orjson's digits with repr's notation: random float32 and float64 values over 60 orders of magnitude, and the
    neighbours of every notation switch."""
    pytest.importorskip("orjson")
    edges = np.array([1e-4, 1e-3, 1e15, 1e16, 1e-5, 5e-5, 1e17, 2.0**53, 1.0, 0.1])
    near = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    values = np.concatenate([
        awkward((200_000,)), awkward((200_000,), float32=False), near, -near,
        RNG.uniform(-100, 2000, 100_000).astype(np.float32).astype(np.float64),
    ])  # fmt: skip
    matrix = values[: len(values) // 5 * 5].reshape(-1, 5)
    expected = [", ".join(map(repr, row)).encode() for row in matrix.tolist()]
    assert float_rows(matrix, b", ", use_orjson=True) == expected
    assert float_rows(matrix, b",", use_orjson=True) == [r.replace(b", ", b",") for r in expected]


# --- reading a run's detections --------------------------------------------------------------------------------


def test_read_run_arrays_reads_every_format_and_the_last_record_wins(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "jsonl")
    stored = make_run_dir(tmp_path / "bin", store=True)
    a, b = read_run_arrays(run.path), read_run_arrays(stored.path)
    assert a.files == (run.path / "detections.jsonl",) and b.files == (stored.path / "detections.bin",)
    for name in ("image_ids", "category_ids", "scores", "boxes", "keypoints", "keypoint_scores"):
        assert np.array_equal(getattr(a.detections, name), getattr(b.detections, name)), name
    assert a.input_shapes == b.input_shapes == [None, None, None]
    assert read_run_arrays(stored.path) is b  # unchanged files, arrays still held: read once
    # A shard left by a distributed run, and a store beside the JSON lines: later files win, image by image.
    newer = image(42, 1)
    create_store(rundir.shard_path(stored.path, 0), [encode_image(newer)])
    c = read_run_arrays(stored.path)
    assert c is not b and c.counts.tolist() == [1, 1, 1] and c.file_of(42) == rundir.shard_path(stored.path, 0)
    assert np.array_equal(c.image(42).keypoints, newer.keypoints)
    with (stored.path / "detections.jsonl").open("w") as fh:  # read first: the store's records win over it
        append_detections(fh, image(7, 4))
    assert read_run_arrays(stored.path).counts.tolist() == [1, 1, 1]
    assert read_run_arrays(stored.path).select([42, 1000]).image_ids.tolist() == [42, 1000]
    assert len(read_run_arrays(tmp_path)) == 0  # no detections at all: no images


def test_cached_images_are_counted_once_across_a_store_and_json_lines(tmp_path: Path) -> None:
    """The count behind "N of M images cached" messages: an image in the store and in a JSON-lines file (a format-2
    run resumed into a store) counts once; a JSON line cut short (no newline) is no image."""
    from kpbench.runs.merge import count_cached_images

    stored = make_run_dir(tmp_path / "bin", store=True)  # the store holds 7, 42 and 1000
    assert count_cached_images(stored.path) == 3
    with (stored.path / "detections.jsonl").open("w") as fh:
        append_detections(fh, image(7, 4))  # also in the store
        append_detections(fh, image(8, 2))  # only here
    assert count_cached_images(stored.path) == 4
    with (stored.path / "detections.jsonl").open("a") as fh:
        fh.write('{"image_id": 9, "boxes": [[1.0')  # torn: no newline
    assert count_cached_images(stored.path) == 4
    assert count_cached_images(make_run_dir(tmp_path / "jsonl").path) == 3  # format 2 alone


def test_consumers_of_a_run_give_the_same_output_for_both_formats(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """evaluate, thresholds, keypoints and draw read format 2 (JSON lines) and format 3 (the store) alike."""
    runs = {fmt: make_run_dir(tmp_path / fmt, store=fmt == "bin").path for fmt in ("jsonl", "bin")}
    outputs = {}
    for fmt, run in runs.items():
        got = []
        for command in (("evaluate", run, "--format", "json"), ("thresholds", run, "--format", "json"),
                        ("keypoints", run, "--format", "csv")):  # fmt: skip
            code, out, err = run_cli(*command)
            assert code == 0, (fmt, command, err)
            got.append(out)
        code, _, err = run_cli("draw", run, "--top", "2", "--out", tmp_path / f"drawn-{fmt}")
        assert code == 0, err
        got.append(sorted((p.name, p.read_bytes()) for p in (tmp_path / f"drawn-{fmt}").iterdir()))
        got.append((run / "keypoints_results.json").read_bytes())
        outputs[fmt] = got
    assert outputs["jsonl"] == outputs["bin"]


def test_export_writes_coco_results_and_json_lines_from_any_run(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    stored = make_run_dir(tmp_path / "bin", store=True)
    legacy = make_run_dir(tmp_path / "jsonl")
    code, out, err = run_cli("export", stored.path, "--to", "coco", "--out", tmp_path / "coco")
    assert code == 0, err
    assert out.splitlines() == [f"wrote {tmp_path / 'coco' / 'keypoints_results.json'}",
                                f"wrote {tmp_path / 'coco' / 'bbox_results.json'}"]
    expected = old_results_files(list(stored.dets.values()))
    assert ((tmp_path / "coco" / "keypoints_results.json").read_bytes(),
            (tmp_path / "coco" / "bbox_results.json").read_bytes()) == expected
    code, out, err = run_cli("export", stored.path, "--to", "jsonl")
    exported = stored.path / "export" / "detections.jsonl"  # not RUN_DIR/detections.jsonl, which the run would read
    assert code == 0 and out == f"wrote {exported}\n", err
    assert exported.read_bytes() == (legacy.path / "detections.jsonl").read_bytes()
    assert read_run_arrays(stored.path).image_ids.tolist() == [7, 42, 1000]
    assert [p.name for p in rundir.detection_files(stored.path)] == ["detections.bin"]
    for own in ("detections.jsonl", "detections.bin", "detections.rank1.jsonl"):  # the run's own inputs: refused
        code, _, err = run_cli("export", legacy.path, "--to", "jsonl", "--out", legacy.path / own)
        assert code == 2 and err == (f"error: --out {legacy.path / own}: a run directory reads this file as its "
                                     "detections (and a resume merges it away); export elsewhere\n")
    code, _, err = run_cli("export", legacy.path, "--to", "jsonl", "--out", tmp_path / "again.jsonl")
    assert code == 0 and (tmp_path / "again.jsonl").read_bytes() == (legacy.path / "detections.jsonl").read_bytes()
    code, _, err = run_cli("export", legacy.path, "--to", "csv")
    assert code == 2 and err == "error: --to: must be one of coco, jsonl, got 'csv'\n"
    code, _, err = run_cli("export", tmp_path, "--to", "coco")
    assert code == 2 and err == f"error: {tmp_path}: not a run directory (no manifest.json)\n"


# --- the manifest on a full disk -------------------------------------------------------------------------------


def test_the_status_is_recorded_in_place_when_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.core.io

    manifest = {"kpbench_run_version": 3, "format_version": 3, "status": "running", "image_ids": [1, 2]}
    rundir.write_manifest(tmp_path, manifest)
    size = (tmp_path / "manifest.json").stat().st_size
    assert size == len(kpbench.core.io.json_text(manifest)) + rundir.MANIFEST_RESERVE + 1

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kpbench.core.io.tempfile, "mkstemp", full)
    assert rundir.update_manifest_status(tmp_path, "failed", error="x" * 10_000)
    got = rundir.read_manifest(tmp_path)
    assert got["status"] == "failed" and got["error"].startswith("x" * 40) and got["error"].endswith("...")
    assert (tmp_path / "manifest.json").stat().st_size == size  # in place: not a byte more
    # A manifest with no room left (not "running") cannot take a longer one; it stays as it was.
    monkeypatch.undo()
    rundir.write_manifest(tmp_path, {"kpbench_run_version": 3, "status": "complete"})
    before = (tmp_path / "manifest.json").read_bytes()
    monkeypatch.setattr(kpbench.core.io.tempfile, "mkstemp", full)
    assert not rundir.update_manifest_status(tmp_path, "failed", error="a much longer reason than there is room for")
    assert (tmp_path / "manifest.json").read_bytes() == before


# --- the loop's host copy and decode thread ---------------------------------------------------------------------


def test_one_copy_to_the_host_per_model_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three images of five tensors each come to the host in one copy (it used to be five per image), float32 as
    the model gave them, labels exact (int64 carried bit for bit), and the host arrays are the loop's own."""
    import torch

    from kpbench.engine.inference import predictions_to_host
    from kpbench.models.base import Predictions

    copies = []
    real_cpu = torch.Tensor.cpu

    def counting(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        copies.append(tuple(self.shape))
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting)
    dets = [image(i, n) for i, n in ((3, 4), (5, 0), (8, 2))]
    labels = torch.tensor([1, 2**40 + 3, -7, 5, 2**62, 3], dtype=torch.int64)
    predictions = [
        Predictions(torch.from_numpy(d.boxes.astype(np.float32)), torch.from_numpy(d.scores.astype(np.float32)),
                    torch.from_numpy(d.keypoints.astype(np.float32)),
                    torch.from_numpy(d.keypoint_scores.astype(np.float32)), "logit", labels[a:b])
        for d, (a, b) in zip(dets, ((0, 4), (4, 4), (4, 6)))
    ]  # fmt: skip
    host = predictions_to_host([3, 5, 8], predictions, 17, 1, (3, 3, 64, 64))
    assert len(copies) == 1 and copies[0] == (6 * (4 + 1 + 51 + 17) + 6 * 2,)
    assert host.boxes.dtype == host.keypoints.dtype == np.float32 and host.labels.dtype == np.int64
    assert host.labels.tolist() == labels.tolist() and host.counts.tolist() == [4, 0, 2]
    for i, det in enumerate(dets):
        got = host.image(i)
        for name in ("boxes", "scores", "keypoints", "keypoint_scores"):
            assert np.array_equal(getattr(got, name), getattr(det, name)), name
        assert got.input_shape == (3, 3, 64, 64)
    # One CPU tensor alone is copied too: the model may reuse it for its next call while the writer reads.
    one = torch.zeros(1, 4)
    single = predictions_to_host([1], [Predictions(one, [0.5], np.zeros((1, 2, 3)), np.zeros((1, 2)), "logit")], 2)
    one.fill_(9.0)
    assert single.boxes.tolist() == [[0.0, 0.0, 0.0, 0.0]] and single.boxes.dtype == np.float32
    # numpy arrays keep float64, and are copied as well.
    boxes = np.array([[0.1, 0.2, 0.3, 0.4]])
    mixed = predictions_to_host([1], [Predictions(boxes, [0.5], np.zeros((1, 2, 3)), np.zeros((1, 2)), "logit")], 2)
    boxes[:] = 7
    assert mixed.boxes.dtype == np.float64 and mixed.boxes.tolist() == [[0.1, 0.2, 0.3, 0.4]]


def test_background_decoding_keeps_order_and_raises_where_the_batch_would_come() -> None:
    from kpbench.engine.inference import background

    assert list(background(iter(range(100)), depth=3)) == list(range(100))

    def failing():  # type: ignore[no-untyped-def]
        yield 1
        raise KpbenchError("frame.jpg: cannot decode image")

    got = background(failing())
    assert next(got) == 1
    with pytest.raises(KpbenchError, match="cannot decode"):
        next(got)
    # A consumer that stops early (Ctrl-C in the loop) stops the thread too.
    before = threading.active_count()
    endless = background(iter(lambda: 0, 1), depth=2)
    next(endless)
    endless.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_the_run_table_counts_the_images_of_a_store(tmp_path: Path) -> None:
    """`kpbench report --kind run` says whether a run's detections are all there, for the store as for JSON lines."""
    from kpbench.report.tables import run_status

    run = make_run_dir(tmp_path, store=True).path
    manifest = {"format_version": 3, "status": "complete"}
    assert run_status(run, manifest, 3) == "not evaluated (no metrics.json)"  # every image is there
    data = (run / "detections.bin").read_bytes()
    (run / "detections.bin").write_bytes(data[:-10])  # the last record torn
    assert run_status(run, manifest, 3) == "incomplete (detections.bin has 2 of 3 images)"
    (run / "detections.bin").unlink()
    assert run_status(run, manifest, 3) == "incomplete (detections.bin missing)"
    assert run_status(run, {"status": "running"}, 3) == "incomplete (running: 0 of 3 images cached)"
