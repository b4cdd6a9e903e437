"""`kpbench analyze --coco-analyze` against the original coco-analyze, which it reproduces, and one evaluation.

Generates --images synthetic images (`kpbench.data.synthetic`, the val2017-scale workload of analyze_speed.py at
5000) and times, best of --repeat rounds in which the cases take turns:

- `kpbench.evaluate(gt, res)` (pycocotools), the reference cost;
- `analyze_errors(gt, res, coco_analyze=True)`: coco-analyze's every number (each correction alone and
  cumulatively, three area ranges, the counts), re-evaluated with the vectorized evaluator;
- with KPBENCH_COCO_ANALYZE_PYTHON and KPBENCH_COCO_ANALYZE_DIR set (tests/fixtures/README.md), the original
  coco-analyze computing the same numbers: tests/coco_analyze_reference.py in its venv (a subprocess: its
  Python's start and imports, about a second, are in its time).

Prints seconds and ratios.

    python benchmarks/coco_analyze_speed.py [--images 1000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_times_interleaved, synthetic_workload_files

from kpbench.analysis.errors import analyze_errors
from kpbench.evaluation.cocoeval import evaluate

DRIVER = Path(__file__).resolve().parents[1] / "tests" / "coco_analyze_reference.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    python, checkout = os.environ.get("KPBENCH_COCO_ANALYZE_PYTHON"), os.environ.get("KPBENCH_COCO_ANALYZE_DIR")

    with tempfile.TemporaryDirectory() as tmp:
        gt, results, gt_path, res_path = synthetic_workload_files(Path(tmp), args.images)
        print(f"{args.images} images, {len(gt['annotations'])} GT persons, {len(results)} detections")
        cases: dict[str, Callable[[], Any]] = {
            "kpbench.evaluate (pycocotools)": lambda: evaluate(gt_path, res_path),
            "kpbench analyze --coco-analyze": lambda: analyze_errors(gt_path, res_path, coco_analyze=True),
        }
        if python and checkout:
            cases["coco-analyze (original)"] = lambda: subprocess.run(
                [python, str(DRIVER), "--coco-analyze", checkout, str(gt_path), str(res_path)],
                check=True, capture_output=True)
        else:
            print("the original coco-analyze is not timed: set KPBENCH_COCO_ANALYZE_PYTHON and "
                  "KPBENCH_COCO_ANALYZE_DIR")
        best = best_times_interleaved(cases, args.repeat)

    base = best["kpbench.evaluate (pycocotools)"][0]
    ours = best["kpbench analyze --coco-analyze"][0]
    for name, (seconds, _) in best.items():
        print(f"{name:34s} {seconds:8.2f} s  {seconds / base:6.2f} x evaluate")
    if "coco-analyze (original)" in best:
        print(f"coco-analyze / kpbench --coco-analyze: {best['coco-analyze (original)'][0] / ours:.1f}")


if __name__ == "__main__":
    main()
