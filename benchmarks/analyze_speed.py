"""The error diagnosis (`kpbench.analysis.errors.analyze_errors`) at val2017 scale against one `kpbench.evaluate`.

Generates 5000 images (~11,000 GT persons, a few crowd regions) and ~49,000 keypoint detections with
`kpbench.data.synthetic`, writes them as JSON files, then times, best of --repeat rounds in which the cases take
turns, each a library call on the two files (reading and checking them included):

- `kpbench.evaluate(gt, res)` (pycocotools), the reference cost;
- `analyze_errors(gt, res)`: the classification, 14 corrections (alone and cumulative) and their
  re-evaluations with the vectorized evaluator (the default);
- `diagnose(gt, res)`: everything `kpbench analyze` computes, the above plus the sensitivity tables and the
  LRP-optimal and best-F1 thresholds;
- with --pycocotools, also `analyze_errors(gt, res, evaluator="pycocotools")` (every re-evaluation a pycocotools
  COCOeval run), and a check that both analyses give the same numbers.

Prints seconds and the ratio of `kpbench analyze`'s work (diagnose) over evaluate; the project's target is at
most 5. Exits 1 above it.

    python benchmarks/analyze_speed.py [--images 5000] [--repeat 3] [--pycocotools]
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

from kpbench.analysis.diagnose import diagnose
from kpbench.analysis.errors import analyze_errors
from kpbench.evaluation.cocoeval import evaluate

TARGET = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pycocotools", action="store_true", help="Also time the pycocotools re-evaluation.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        gt, results, gt_path, res_path = synthetic_workload_files(Path(tmp), args.images)
        print(f"{args.images} images, {len(gt['annotations'])} GT persons, {len(results)} detections")
        cases: dict[str, Callable[[], Any]] = {
            "kpbench.evaluate (pycocotools)": lambda: evaluate(gt_path, res_path, backend="pycocotools"),
            "analyze_errors (vectorized)": lambda: analyze_errors(gt_path, res_path),
            "diagnose (kpbench analyze)": lambda: diagnose(gt_path, res_path),
        }
        if args.pycocotools:
            cases["analyze_errors (pycocotools)"] = lambda: analyze_errors(gt_path, res_path, evaluator="pycocotools")
        best = best_times_interleaved(cases, args.repeat)

    base = best["kpbench.evaluate (pycocotools)"][0]
    analysis = best["analyze_errors (vectorized)"][1]
    print(f"{analysis.summary['num_analysed']} detections analysed, {analysis.summary['num_matched']} matched at "
          f"OKS 0.1, {analysis.summary['evaluations']} COCOeval passes")
    for name, (seconds, _) in best.items():
        print(f"{name:34s} {seconds:8.3f} s   {seconds / base:6.2f} x evaluate")
    ok = True
    if args.pycocotools:
        fast, slow = analysis.to_json(), best["analyze_errors (pycocotools)"][1].to_json()
        for payload in (fast, slow):
            del payload["summary"]["evaluator"], payload["notes"]
        same = fast == slow
        print(f"vectorized and pycocotools analyses equal: {same}")
        ok &= same
    ratio = best["diagnose (kpbench analyze)"][0] / base
    print(f"kpbench analyze / evaluate = {ratio:.2f} (target <= {TARGET:g})")
    ok &= ratio <= TARGET
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
