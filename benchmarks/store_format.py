"""Why the detections store is kpbench's own framing: its append and read costs against Arrow IPC (pyarrow) and the
JSON lines of format 2, on the same detections.

    python benchmarks/store_format.py [--images 2000] [--detections 100] [--repeat 3]

Each format appends one record per image to a file (what the run loop's writer thread does: encode, write; no
fsync, which all formats would group the same way) and then reads the whole file back as float64 column arrays
(what the end of a run and `kpbench evaluate RUN_DIR` do). The detections are float32 values with 17 keypoints, as a
model gives them.

- kpbench store (`kpbench.runs.store`): the record of the module docstring, crc32 included;
- Arrow IPC stream (pyarrow): one record batch per image (boxes, keypoints and keypoint scores as fixed-size lists
  of float32, scores float32, labels int32) whose custom metadata holds the image id and the input shape, written
  with `RecordBatchStreamWriter.write_batch`; read with `open_stream(...).read_all()` and `to_numpy` per column.
  Arrow keeps no checksum, so a torn record can only be found by the reader failing on it, and the image id is in
  metadata that pandas, polars and duckdb do not show (as a column it would cost 8 bytes a detection more);
- JSON lines (format 2): `json.dumps` of each image's record, read back with `json.loads`.

Prints microseconds per image to append, seconds to read everything, and bytes per detection; best of --repeat
interleaved rounds. Parquet is left out: a file is written whole (its footer indexes the row groups), so it cannot
be appended to image by image, nor survive a kill mid-write.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_times_interleaved


def make_images(count: int, n: int, k: int = 17) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    images = []
    for image_id in range(1, count + 1):
        xy = rng.uniform(0, 560, (n, 2)).astype(np.float32)
        images.append({
            "image_id": image_id, "boxes": np.concatenate([xy, xy + 50], 1), "scores": rng.uniform(0, 1, n).astype(np.float32),
            "labels": np.ones(n, np.int64),
            "keypoints": np.concatenate([rng.uniform(0, 640, (n, k, 2)), np.ones((n, k, 1))], 2).astype(np.float32),
            "keypoint_scores": rng.normal(0, 3, (n, k)).astype(np.float32), "input_shape": (1, 3, 800, 1216),
        })  # fmt: skip
    return images


def kpbench_store(images: list[dict[str, np.ndarray]], path: Path) -> tuple[float, float]:
    from kpbench.runs.arrays import read_detection_files
    from kpbench.runs.store import FILE_HEADER, encode_record

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    os.write(fd, FILE_HEADER)
    start = time.perf_counter()
    for im in images:
        os.write(fd, encode_record(im["image_id"], im["boxes"], im["scores"], im["keypoints"], im["keypoint_scores"],
                                   im["labels"], im["input_shape"]))
    append = time.perf_counter() - start
    os.close(fd)
    start = time.perf_counter()
    arrays = read_detection_files([path])
    assert arrays.detections.keypoints.shape[0] == sum(len(im["scores"]) for im in images)
    return append, time.perf_counter() - start


def arrow_ipc(images: list[dict[str, np.ndarray]], path: Path) -> tuple[float, float]:
    import pyarrow as pa

    k = images[0]["keypoints"].shape[1]
    schema = pa.schema([("boxes", pa.list_(pa.float32(), 4)), ("scores", pa.float32()), ("labels", pa.int32()),
                        ("keypoints", pa.list_(pa.float32(), 3 * k)), ("keypoint_scores", pa.list_(pa.float32(), k))])
    sink = pa.OSFile(str(path), "wb")
    writer = pa.ipc.new_stream(sink, schema)
    start = time.perf_counter()
    for im in images:
        n = len(im["scores"])
        batch = pa.record_batch([
            pa.FixedSizeListArray.from_arrays(pa.array(im["boxes"].reshape(-1)), 4), pa.array(im["scores"]),
            pa.array(im["labels"].astype(np.int32)),
            pa.FixedSizeListArray.from_arrays(pa.array(im["keypoints"].reshape(-1)), 3 * k),
            pa.FixedSizeListArray.from_arrays(pa.array(im["keypoint_scores"].reshape(-1)), k),
        ], schema=schema)  # fmt: skip
        assert batch.num_rows == n
        writer.write_batch(batch, custom_metadata={"image_id": str(im["image_id"]),
                                                   "input_shape": ",".join(map(str, im["input_shape"]))})
    append = time.perf_counter() - start
    writer.close()
    sink.close()
    start = time.perf_counter()
    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_stream(source)
        ids, batches = [], []
        while True:
            try:
                batch, meta = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            ids.append(int(meta["image_id"]))
            batches.append(batch)
    table = pa.Table.from_batches(batches, schema=schema)
    columns = {}
    for name in schema.names:
        column = table.column(name).combine_chunks()
        values = column.flatten() if pa.types.is_fixed_size_list(column.type) else column
        columns[name] = values.to_numpy().astype(np.float64 if name != "labels" else np.int64)
    assert columns["keypoints"].size == sum(im["keypoints"].size for im in images)
    return append, time.perf_counter() - start


def json_lines(images: list[dict[str, np.ndarray]], path: Path) -> tuple[float, float]:
    from kpbench.runs.detections import ImageDetections

    with path.open("w") as fh:
        start = time.perf_counter()
        for im in images:
            det = ImageDetections(im["image_id"], im["boxes"].astype(np.float64), im["scores"].astype(np.float64),
                                  im["labels"], im["keypoints"].astype(np.float64),
                                  im["keypoint_scores"].astype(np.float64), im["input_shape"])
            fh.write(json.dumps(det.to_record(), separators=(",", ":")) + "\n")
            fh.flush()
        append = time.perf_counter() - start
    start = time.perf_counter()
    from kpbench.runs.arrays import read_detection_files

    read_detection_files([path])
    return append, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    images = make_images(args.images, args.detections)
    formats = {"kpbench store": kpbench_store, "JSON lines (format 2)": json_lines}
    try:
        import pyarrow

        formats["Arrow IPC (pyarrow " + pyarrow.__version__ + ")"] = arrow_ipc
    except ImportError:
        print("pyarrow is not installed: no Arrow row")
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in formats}
        sizes: dict[str, int] = {}

        def case(name: str):  # type: ignore[no-untyped-def]
            def call() -> None:
                path = Path(tmp) / f"{len(results[name])}.{name.split()[0]}"
                results[name].append(formats[name](images, path))
                sizes[name] = path.stat().st_size
                path.unlink()

            return call

        best_times_interleaved({name: case(name) for name in formats}, args.repeat)
    n = args.images * args.detections
    print(f"{args.images} images x {args.detections} detections, 17 keypoints, float32; best of {args.repeat} "
          f"interleaved rounds; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("format                        append us/image   read all s   bytes/detection")
    for name in formats:
        append = min(a for a, _ in results[name]) / args.images * 1e6
        read = min(r for _, r in results[name])
        print(f"{name:<29} {append:15.1f} {read:12.3f} {sizes[name] / n:17.1f}")


if __name__ == "__main__":
    main()
