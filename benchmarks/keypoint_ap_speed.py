"""AP per keypoint and per keypoint group (`kpbench.analysis.keypoint_ap.keypoint_ap`) at val2017 scale against
one `kpbench.evaluate`, and against the bare alternative: pycocotools run on each slice.

Generates 5000 images (~11,000 GT persons) and ~49,000 keypoint detections with `kpbench.data.synthetic`, writes
them as JSON files, then times, best of --repeat rounds in which the cases take turns, each a library call on the
two files (reading and checking them included):

- `kpbench.evaluate(gt, res)` (pycocotools), the reference cost;
- `keypoint_ap(gt, res)`: the whole set, COCO's 4 groups and 17 keypoints (22 COCOeval passes, vectorized);
- with --pycocotools, `keypoint_ap(gt, res, evaluator="pycocotools")`: the same 22 evaluations by pycocotools
  on sliced records (what a user would otherwise script), and a check that both give the same numbers.

Prints seconds and ratios; the target is that AP per keypoint and group costs at most 2 evaluations. Exits 1
above it.

    python benchmarks/keypoint_ap_speed.py [--images 5000] [--repeat 3] [--pycocotools]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_times_interleaved, synthetic_workload_files

from kpbench.analysis.keypoint_ap import keypoint_ap
from kpbench.evaluation.cocoeval import evaluate

TARGET = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pycocotools", action="store_true", help="Also time the 22 pycocotools evaluations.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        gt, results, gt_path, res_path = synthetic_workload_files(Path(tmp), args.images)
        print(f"{args.images} images, {len(gt['annotations'])} GT persons, {len(results)} detections")
        cases: dict[str, Callable[[], Any]] = {
            "kpbench.evaluate (pycocotools)": lambda: evaluate(gt_path, res_path),
            "keypoint_ap (vectorized)": lambda: keypoint_ap(gt_path, res_path),
        }
        if args.pycocotools:
            cases["keypoint_ap (pycocotools)"] = lambda: keypoint_ap(gt_path, res_path, evaluator="pycocotools")
        best = best_times_interleaved(cases, args.repeat)

    base = best["kpbench.evaluate (pycocotools)"][0]
    for name, (seconds, _) in best.items():
        print(f"{name:34s} {seconds:8.2f} s   {seconds / base:6.2f} x evaluate")
    fast = best["keypoint_ap (vectorized)"][1]
    print(f"{len(fast.parts)} parts; AP of the whole set {fast['all'].stats['AP']:.4f}")
    if args.pycocotools:
        reference = best["keypoint_ap (pycocotools)"][1]
        same = all(a.stats == b.stats for a, b in zip(fast.parts, reference.parts, strict=True))
        print(f"vectorized == pycocotools on every part: {same}")
        print(f"pycocotools / vectorized: {best['keypoint_ap (pycocotools)'][0] / best['keypoint_ap (vectorized)'][0]:.1f}")
        if not same:
            sys.exit(1)
    ratio = best["keypoint_ap (vectorized)"][0] / base
    print(f"keypoint_ap / evaluate = {ratio:.2f} (target <= {TARGET})")
    if ratio > TARGET:
        sys.exit(1)


if __name__ == "__main__":
    main()
