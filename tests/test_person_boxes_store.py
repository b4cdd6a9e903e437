"""A top-down run's person-box record (`kpbench.runs.person_boxes`): person_boxes.bin in the detections store's
framing, read back as arrays bit for bit; the last record of an image wins; a torn tail is ignored and cut off
before the next append; old run directories' person_boxes.jsonl still read; --overwrite deletes every one of them."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from kpbench.runs.directory import clear_run_files
from kpbench.runs.person_boxes import (
    PersonBoxWriter,
    person_box_files,
    person_boxes_path,
    read_person_boxes,
)


def parse_by_hand(path: Path) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(image id, boxes, scores) of each record, decoded from the documented layout without kpbench."""
    data = path.read_bytes()
    assert data[:8] == b"KPBSTORE" and struct.unpack_from("<II", data, 8) == (1, 0)
    pos, out = 16, []
    while pos < len(data):
        magic, length, crc = struct.unpack_from("<4sII", data, pos)
        flags, k, n, _, image_id = struct.unpack_from("<HHIIq", data, pos + 12)
        assert magic == b"KPRD" and k == 0 and zlib.crc32(data[pos + 12 : pos + 8 + length]) == crc
        dtype = np.float64 if flags & 1 else np.float32
        body = pos + 48
        boxes = np.frombuffer(data, dtype, 4 * n, body).reshape(n, 4)
        scores = np.frombuffer(data, dtype, n, body + 4 * n * np.dtype(dtype).itemsize)
        out.append((image_id, boxes.astype(np.float64), scores.astype(np.float64)))
        pos += 8 + length
    return out


def test_records_read_back_exactly_and_the_last_of_an_image_wins(tmp_path: Path) -> None:
    path = person_boxes_path(tmp_path)
    assert path.name == "person_boxes.bin" and person_boxes_path(tmp_path, 2, 4).name == "person_boxes.rank2.bin"
    writer = PersonBoxWriter(path)
    exact = np.array([[1.5, 2.25, 30.0, 40.0]])  # float32 values: stored as float32
    third = np.array([[0.1, 0.2, 10 / 3, 7.7], [5.0, 6.0, 7.0, 8.0]])  # not float32: stored as float64
    writer.append([7, 3], [exact, np.zeros((0, 4))], [np.array([0.5]), np.zeros(0)])
    writer.append([9, 7], [third, exact + 1], [np.array([0.9, 1 / 3]), np.array([0.25])])  # 7 again: this one wins
    by_hand = parse_by_hand(path)
    assert [r[0] for r in by_hand] == [7, 3, 9, 7] and len(by_hand[1][2]) == 0
    assert np.array_equal(by_hand[2][1], third) and by_hand[2][2].tolist() == [0.9, 1 / 3]
    read = read_person_boxes(tmp_path)
    assert read.image_ids.tolist() == [3, 7, 9] and read.starts.tolist() == [0, 0, 1, 3]
    assert np.array_equal(read.boxes, np.concatenate([exact + 1, third])) and read.scores.tolist() == [0.25, 0.9, 1 / 3]
    assert read.boxes.dtype == np.float64 and read.rows(9) == slice(1, 3)
    sub = read.select([9, 3])
    assert sub.image_ids.tolist() == [3, 9] and sub.starts.tolist() == [0, 0, 2] and np.array_equal(sub.boxes, third)
    with pytest.raises(KeyError):
        read.select([3, 4])


def test_a_torn_tail_is_ignored_then_cut_before_the_next_append(tmp_path: Path) -> None:
    path = person_boxes_path(tmp_path)
    PersonBoxWriter(path).append([1], [np.array([[0.0, 0, 10, 10]])], [np.array([0.5])])
    whole = path.read_bytes()
    PersonBoxWriter(path).append([2], [np.array([[1.0, 1, 9, 9]])], [np.array([0.7])])
    path.write_bytes(path.read_bytes()[:-5])  # the second record cut short (a kill mid-write)
    assert read_person_boxes(tmp_path).image_ids.tolist() == [1]
    PersonBoxWriter(path).append([3], [np.array([[2.0, 2, 8, 8]])], [np.array([0.9])])  # a resume appends
    assert path.read_bytes()[: len(whole)] == whole and [r[0] for r in parse_by_hand(path)] == [1, 3]
    assert read_person_boxes(tmp_path).scores.tolist() == [0.5, 0.9]


def test_old_json_lines_are_read_and_a_binary_record_wins(tmp_path: Path) -> None:
    lines = [{"image_id": 5, "boxes": [[1, 2, 3, 4]], "scores": [0.4]}, {"image_id": 6, "boxes": [], "scores": []}]
    (tmp_path / "person_boxes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"image_id": 9, "bo')
    read = read_person_boxes(tmp_path)
    assert read.image_ids.tolist() == [5, 6] and read.boxes.tolist() == [[1, 2, 3, 4]] and read.scores.tolist() == [0.4]
    PersonBoxWriter(person_boxes_path(tmp_path)).append([5], [np.array([[0.0, 0, 2, 2]])], [np.array([0.8])])
    read = read_person_boxes(tmp_path)
    assert read.boxes.tolist() == [[0, 0, 2, 2]] and read.scores.tolist() == [0.8]
    assert len(read_person_boxes(tmp_path / "absent")) == 0  # no records: empty arrays


def test_an_undecodable_line_before_the_last_is_an_error_not_skipped(tmp_path: Path) -> None:
    from kpbench.core.errors import KpbenchError

    good = json.dumps({"image_id": 5, "boxes": [[1, 2, 3, 4]], "scores": [0.4]})
    path = tmp_path / "person_boxes.jsonl"
    path.write_text(good + "\n" + '{"image_id": 6, "bo' + "\n" + json.dumps({"image_id": 7, "boxes": [], "scores": []}) + "\n")
    with pytest.raises(KpbenchError, match=r"person_boxes.jsonl: line 2 is not a person-box record .*only the last line"):
        read_person_boxes(tmp_path)
    path.write_text(good + "\n" + '{"image_id": 6, "bo' + "\n\n")  # the torn line is the last one (blank lines aside)
    assert read_person_boxes(tmp_path).image_ids.tolist() == [5]


def test_appends_are_made_durable_by_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An append writes its whole record and returns without syncing; `sync` makes everything appended so far
    durable (one fdatasync of the box file, after the records are in it) and costs nothing when nothing is new.
    The run's store writer calls it before each group of detections (see the top-down run tests)."""
    import os

    path = person_boxes_path(tmp_path)
    synced: list[tuple[int, int]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if path.exists() and os.path.samestat(os.fstat(fd), os.stat(path)):
            synced.append((os.fstat(fd).st_size, len(read_person_boxes(tmp_path))))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fsync, raising=False)
    writer = PersonBoxWriter(path)
    writer.append([1, 2], [np.array([[0.0, 0, 10, 10]]), np.zeros((0, 4))], [np.array([0.5]), np.zeros(0)])
    writer.append([3], [np.array([[1.0, 1, 9, 9]])], [np.array([0.7])])
    before = len(synced)  # (creating the file syncs its header)
    writer.sync()
    assert synced[before:] == [(path.stat().st_size, 3)]
    writer.sync()  # nothing new: no sync
    assert len(synced) == before + 1
    writer.append([4], [np.zeros((0, 4))], [np.zeros(0)])
    writer.sync()
    assert synced[before:] == [(synced[before][0], 3), (path.stat().st_size, 4)]


def test_overwrite_clears_every_person_box_file_and_nothing_else(tmp_path: Path) -> None:
    names = ["person_boxes.bin", "person_boxes.rank1.bin", "person_boxes.jsonl", "person_boxes.rank0.jsonl"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    assert sorted(p.name for p in person_box_files(tmp_path)) == sorted(names)
    removed = clear_run_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("old_format", [True, False])
def test_a_run_directorys_person_boxes_scored_as_bare_pycocotools(tmp_path: Path, old_format: bool) -> None:
    """A top-down run directory (its manifest's protocol names the source), with person_boxes.jsonl as run directories
    had it before, or person_boxes.bin: the boxes' own box AP equals pycocotools' on the same boxes, recorded in the
    manifest."""
    from kpdata import make_run_dir, pycocotools_eval

    from kpbench.evaluation.person_boxes import record_person_box_stats

    run = make_run_dir(tmp_path, store=True)
    manifest = json.loads((run.path / "manifest.json").read_text())
    manifest["model"] = {"extra": {"protocol": {"top_down": {"person_boxes": {"kind": "file", "spec": "d.json"},
                                                             "selection": {"score_threshold": 0.0}}}}}
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    records = {i: (d.boxes + np.array([0.5, -0.25, 1.0, 0.0]), d.scores) for i, d in run.dets.items()}
    if old_format:
        lines = [json.dumps({"image_id": i, "boxes": b.tolist(), "scores": s.tolist()}) for i, (b, s) in records.items()]
        (run.path / "person_boxes.jsonl").write_text("\n".join(lines) + "\n")
    else:
        ids = list(records)
        PersonBoxWriter(person_boxes_path(run.path)).append(ids, [records[i][0] for i in ids], [records[i][1] for i in ids])
    record = record_person_box_stats(run.path)
    by_hand = [{"image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
               for i in sorted(records) for (x1, y1, x2, y2), s in zip(records[i][0].tolist(), records[i][1].tolist())]
    ev = pycocotools_eval(run.gt, by_hand, iou_type="bbox")
    assert record is not None and record["num_boxes"] == len(by_hand) == 4
    assert list(record["stats"].values()) == [float(s) for s in ev.stats] and ev.stats[0] > 0.5
    assert json.loads((run.path / "manifest.json").read_text())["person_boxes"]["stats"] == record["stats"]
