"""The run side of "after the last image": merging a run's detections and writing its COCO results files, at val2017
scale, against the JSON-lines path kpbench had before the store (run-directory format 2).

    python benchmarks/run_end.py [--images 5000] [--detections 100] [--repeat 2] [--skip-old]

A run directory of `--images` images with `--detections` detections each (17 keypoints, float32 values as a model
gives them) is generated twice: as the store of format 3 (detections.bin) and as the JSON lines of format 2
(detections.jsonl), with the same values. Timed, each case in a fresh Python process (so peak RSS is its own):

- store, canonical: `write_canonical_store` (what a single-process run does after its loop: check every record,
  read the arrays, nothing to rewrite) then `write_coco_results` for keypoints and boxes;
- store, 2 rank shards: the same after a 2-process torchrun run (the records are copied into one file in id order);
- JSON lines (format 2): what the end of a run did before: parse the cache, re-encode it and rewrite it in id order
  (`write_canonical_cache`), then rebuild the results as dicts (`to_coco_results`) and `json.dumps` them.

Also `read_run_arrays` alone (what `kpbench evaluate RUN_DIR` reads before it evaluates) and the bytes per detection
of each format. The evaluations themselves are the evaluator's (benchmarks/eval_*.py). Prints seconds, the ratios
and peak RSS; best of --repeat rounds, the cases taking turns.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = ("store", "shards", "read", "jsonl")


def generate(run_dir: Path, images: int, detections: int) -> None:
    """detections.bin, detections.jsonl (same values) and a format-3 manifest in `run_dir`."""
    from kpbench.core.schema import COCO17
    from kpbench.runs.detections import ImageDetections
    from kpbench.runs.store import create_store, encode_image

    rng = np.random.default_rng(0)
    n, k = detections, 17

    def image(image_id: int) -> ImageDetections:
        xy = rng.uniform(0, 560, (n, 2)).astype(np.float32)
        wh = rng.uniform(4, 200, (n, 2)).astype(np.float32)
        kps = np.concatenate([rng.uniform(0, 640, (n, k, 2)), np.ones((n, k, 1))], axis=2).astype(np.float32)
        return ImageDetections(
            image_id=image_id, boxes=np.concatenate([xy, xy + wh], 1).astype(np.float64),
            scores=rng.uniform(0.05, 1, n).astype(np.float32).astype(np.float64), labels=np.ones(n, np.int64),
            keypoints=kps.astype(np.float64), keypoint_scores=rng.normal(0, 3, (n, k)).astype(np.float32).astype(np.float64),
            input_shape=(1, 3, 800, 1216),
        )

    ids = list(range(1, images + 1))
    records, lines = [], []
    for image_id in ids:
        det = image(image_id)
        records.append(encode_image(det))
        lines.append(json.dumps(det.to_record(), separators=(",", ":")) + "\n")
    create_store(run_dir / "detections.bin", records)
    for rank in (0, 1):  # a 2-process run's shards: rank r ran every other image, as the runner shards batches
        create_store(run_dir / f"detections.rank{rank}.bin", records[rank::2])
    (run_dir / "detections.jsonl.format2").write_text("".join(lines))
    manifest = {"kpbench_run_version": 3, "format_version": 3, "image_ids": ids, "schema": COCO17.to_json(),
                "status": "complete"}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def child(case: str, source: Path, work: Path) -> None:
    """One timed case in this process; prints seconds and peak RSS as JSON."""
    import resource
    import shutil

    from kpbench.runs.directory import read_manifest

    work.mkdir(parents=True)
    shutil.copy(source / "manifest.json", work / "manifest.json")
    ids = read_manifest(work)["image_ids"]
    if case == "jsonl":
        shutil.copy(source / "detections.jsonl.format2", work / "detections.jsonl")
        manifest = json.loads((work / "manifest.json").read_text())
        manifest["kpbench_run_version"] = manifest["format_version"] = 2
        (work / "manifest.json").write_text(json.dumps(manifest))
    elif case == "shards":
        for rank in (0, 1):
            shutil.copy(source / f"detections.rank{rank}.bin", work / f"detections.rank{rank}.bin")
    else:
        shutil.copy(source / "detections.bin", work / "detections.bin")
    os.sync()
    start = time.perf_counter()
    if case == "jsonl":
        from kpbench.core.io import atomic_write_text, write_json
        from kpbench.runs.detections import read_cache, to_coco_results

        cached = read_cache(work / "detections.jsonl")  # the merge before: parse, re-encode, rewrite
        kept = [cached[i] for i in sorted(set(ids)) if i in cached]
        atomic_write_text(work / "detections.jsonl",
                          "".join(json.dumps(d.to_record(), separators=(",", ":")) + "\n" for d in kept))
        merged = time.perf_counter()
        keypoint_results, bbox_results = to_coco_results(kept)
        write_json(work / "keypoints_results.json", keypoint_results, indent=None)
        write_json(work / "bbox_results.json", bbox_results, indent=None)
    elif case == "read":
        from kpbench.runs.arrays import read_run_arrays

        arrays = read_run_arrays(work)
        merged = time.perf_counter()
        assert len(arrays) == len(ids)
    else:
        from kpbench.runs.merge import write_canonical_store
        from kpbench.runs.results import write_coco_results

        arrays = write_canonical_store(work, ids)
        merged = time.perf_counter()
        write_coco_results(work / "keypoints_results.json", arrays.detections, "keypoints")
        write_coco_results(work / "bbox_results.json", arrays.detections, "bbox")
    end = time.perf_counter()
    # VmHWM, this process's own peak (ru_maxrss would carry the parent's peak across exec), before the check below.
    status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
    hwm = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    rss = int(hwm[0]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = ""
    if case != "read":
        from kpbench.core.io import file_digest

        digest = file_digest(work / "keypoints_results.json") + file_digest(work / "bbox_results.json")
    print(json.dumps({"merge_s": merged - start, "results_s": end - merged, "total_s": end - start, "rss_mb": rss,
                      "digest": digest}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-old", action="store_true", help="leave out the JSON-lines case (the slow one)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return

    cases = [c for c in CASES if not (args.skip_old and c == "jsonl")]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        source.mkdir()
        started = time.perf_counter()
        generate(source, args.images, args.detections)
        n = args.images * args.detections
        store_b = (source / "detections.bin").stat().st_size
        jsonl_b = (source / "detections.jsonl.format2").stat().st_size
        print(f"{args.images} images x {args.detections} detections ({n:,}), generated in "
              f"{time.perf_counter() - started:.0f} s; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        print(f"bytes per detection: store {store_b / n:.1f} ({store_b / 1e6:.0f} MB), JSON lines {jsonl_b / n:.1f} "
              f"({jsonl_b / 1e6:.0f} MB)")
        best: dict[str, dict[str, float]] = {}
        digests = set()
        for r in range(args.repeat):
            for case in cases:
                work = Path(tmp) / f"{case}{r}"
                proc = subprocess.run([sys.executable, __file__, "--child", case, str(source), str(work)],
                                      capture_output=True, text=True, check=True)
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                if got["digest"]:
                    digests.add(got["digest"])
                if case not in best or got["total_s"] < best[case]["total_s"]:
                    best[case] = got
                subprocess.run(["rm", "-rf", str(work)], check=True)
        print(f"best of {args.repeat} rounds          merge s   results s    total s   peak RSS MB")
        labels = {"store": "store (canonical)", "shards": "store (2 rank shards)", "read": "read_run_arrays only",
                  "jsonl": "JSON lines (format 2)"}
        for case in cases:
            b = best[case]
            print(f"{labels[case]:<28} {b['merge_s']:9.2f} {b['results_s']:11.2f} {b['total_s']:10.2f} {b['rss_mb']:13.0f}")
        if "jsonl" in best:
            old = best["jsonl"]["total_s"]
            print(f"ratio store / JSON lines: {best['store']['total_s'] / old:.3f} (canonical), "
                  f"{best['shards']['total_s'] / old:.3f} (shards)")
        print(f"results files identical across cases: {len(digests) == 1}")


if __name__ == "__main__":
    main()
