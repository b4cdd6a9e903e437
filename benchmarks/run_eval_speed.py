"""The end of a run, on a generated run directory: `kpbench evaluate RUN_DIR` and what `kpbench run` does after the
last image. Targets (5000 images, 100 detections per image): `kpbench evaluate RUN_DIR` at most 5 s and 1 GB peak
RSS; the results files and both evaluations at most 10 s (with the merge, which is the store's), at most 20 s with
the default analysis.

Builds a run directory as `kpbench run` leaves it (manifest, ground_truth.json, the detections store, written by the
store's own writer): synthetic val2017-scale GT (`kpbench.data.synthetic`, 5000 images, ~10,900 persons) and, per
image, --per-image detections: jittered copies of its persons, then random ones, scores float32 as a model gives
them. Then times, in this order:

- `kpbench evaluate RUN_DIR --format json` in a fresh interpreter, twice: the first writes the COCO results files
  (a run directory without them), the second keeps them (up to date with the store, as after `kpbench run`, which
  writes them): wall time and peak RSS (each child's own ru_maxrss);
- in this process, each step of `evaluate_run` and of the default analysis (`analyse_run`: threshold sweeps,
  per-keypoint breakdown, figures), on the evaluation it hands over.

    python benchmarks/run_eval_speed.py [--images 5000] [--per-image 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def build_run_dir(run: Path, images: int, per_image: int, seed: int = 0) -> int:
    """A finished run directory; returns the number of detections."""
    from kpbench.data.synthetic import make_synthetic_coco
    from kpbench.runs.detections import ImageDetections
    from kpbench.runs.directory import RUN_VERSION
    from kpbench.runs.store import create_store, encode_image

    rng = np.random.default_rng(seed)
    gt, _ = make_synthetic_coco(num_images=images, seed=seed)
    run.mkdir(parents=True)
    (run / "ground_truth.json").write_text(json.dumps(gt))
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    total = 0
    records = []  # one record per image, as the run's store writer encodes them
    for image in gt["images"]:
        persons = by_image.get(image["id"], [])
        kps = np.empty((per_image, 17, 3), dtype=np.float32)
        boxes = np.empty((per_image, 4), dtype=np.float32)
        for j in range(per_image):
            if j < 2 * len(persons):
                ann = persons[j % len(persons)]
                x, y, w, h = ann["bbox"]
                base = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)[:, :2]
                base = np.where(base > 0, base, [x + w / 2, y + h / 2])
                pts = base + rng.normal(0, 0.05 * max(w, h), (17, 2))
            else:
                x, y, w, h = *rng.uniform(0, 500, 2), *rng.uniform(10, 120, 2)
                pts = rng.uniform([x, y], [x + w, y + h], (17, 2))
            kps[j, :, :2] = pts
            kps[j, :, 2] = 1.0
            boxes[j] = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
        scores = np.sort(rng.uniform(0.05, 1.0, per_image).astype(np.float32))[::-1]
        det = ImageDetections(image_id=image["id"], boxes=boxes.astype(np.float64), scores=scores.astype(np.float64),
                              labels=np.ones(per_image, dtype=np.int64), keypoints=kps.astype(np.float64),
                              keypoint_scores=rng.normal(2, 2, (per_image, 17)).astype(np.float32).astype(np.float64))
        records.append(encode_image(det))
        total += per_image
    create_store(run / "detections.bin", records)
    manifest = {"kpbench_run_version": RUN_VERSION, "format_version": RUN_VERSION, "split": "val2017",
                "image_ids": [img["id"] for img in gt["images"]], "config": {"weights": "none"}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return total


def timed(label: str, fn: Callable[[], Any], rows: list[tuple[str, float]]) -> Any:
    start = time.perf_counter()
    value = fn()
    rows.append((label, time.perf_counter() - start))
    return value


# The CLI in a child that reports its own peak RSS (RUSAGE_CHILDREN would give the largest of all children).
_CHILD = ("import resource, runpy, sys\nsys.argv = ['kpbench', *sys.argv[1:]]\ntry:\n"
          "    runpy.run_module('kpbench', run_name='__main__')\nfinally:\n"
          "    sys.stderr.write('\\nPEAK_KIB %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")


def fresh_evaluate(run: Path) -> tuple[float, float, subprocess.CompletedProcess[str]] | None:
    """`kpbench evaluate RUN_DIR --format json` in a fresh interpreter: seconds, its peak RSS in MiB, the process
    (None, with its stderr printed, when it failed)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, "evaluate", str(run), "--format", "json"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr)
        return None
    peak_kib = int(proc.stderr.rsplit("PEAK_KIB ", 1)[1].split()[0])
    return wall, peak_kib / 1024, proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="Build the run directory here (and keep it) instead of a temp dir.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.keep or Path(tmp) / "run"
        if not (run / "manifest.json").is_file():
            start = time.perf_counter()
            n = build_run_dir(run, args.images, args.per_image)
            print(f"built {run}: {args.images} images, {n} detections in {time.perf_counter() - start:.1f} s")
        # As a user meets it: the first time (a run directory without results files: they are written), then
        # again (the results files written from this store are kept, as after `kpbench run`, which writes them).
        for label in ("first (writes the results files)", "again (results files up to date, kept)"):
            done = fresh_evaluate(run)
            if done is None:
                return 1
            wall, peak, proc = done
            print(f"kpbench evaluate RUN_DIR, {label}, fresh interpreter: {wall:.2f} s, peak RSS {peak:.0f} MiB "
                  "(targets: 5 s, 1 GB)")

        from kpbench.evaluation import runeval
        from kpbench.evaluation.cocoeval import evaluate, metrics_json, write_metrics
        from kpbench.report.run_outputs import analyse_run
        from kpbench.runs.directory import bbox_results_path, keypoint_results_path

        rows: list[tuple[str, float]] = []
        manifest = json.loads((run / "manifest.json").read_text())
        arrays = timed("read the store as arrays", lambda: runeval.read_run_arrays(run), rows)
        ra = timed("image list, finite values", lambda: runeval.finished_run_arrays(run, manifest, arrays), rows)
        gt = timed("ground truth, checked for both iou types", lambda: runeval.load_run_ground_truth(run), rows)
        checked = timed("checks on arrays (both iou types)", lambda: runeval.run_checked_detections(run, ra, gt), rows)
        results = {}
        for iou_type in ("keypoints", "bbox"):
            results[iou_type] = timed(f"evaluate {iou_type}", lambda t=iou_type: evaluate(gt[t], checked[t], iou_type=t),
                                      rows)
        timed("write keypoints_results.json", lambda: runeval.write_coco_results(keypoint_results_path(run),
                                                                                  ra.detections, "keypoints"), rows)
        timed("write bbox_results.json", lambda: runeval.write_coco_results(bbox_results_path(run), ra.detections,
                                                                             "bbox"), rows)
        timed("write metrics", lambda: (write_metrics(run, results), metrics_json(results)), rows)
        evaluation = sum(seconds for _, seconds in rows)
        timed("default analysis (sweeps, breakdown, figures)", lambda: analyse_run(run, results), rows)
        print(f"\nin this process, {len(ra.detections)} detections:")
        for label, seconds in rows:
            print(f"  {label:48s} {seconds:7.2f} s")
        print(f"  {'store read + checks + both evaluations + results files':48s} {evaluation:7.2f} s  (target 10 s with "
              "the merge)")
        print(f"  {'... with the default analysis':48s} {sum(s for _, s in rows):7.2f} s  (target 20 s)")
        print(json.dumps({k: v["AP"] for k, v in json.loads(proc.stdout).items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
