"""The vectorized keypoint COCOeval against pycocotools at val2017 scale. Target: evaluate() >= 5x faster.

Generates 5000 images (~11,000 GT persons, a few crowd regions) and ~50,000 keypoint detections with
`kpbench.data.synthetic`, then times, best of --repeat rounds in which the cases take turns:

- pycocotools: COCOeval(...).evaluate(), accumulate(), summarize() on COCO objects already loaded (loadRes
  done once, outside the timing);
- construction: `KeypointEvaluator(gt, sigmas)`, the GT prepared once;
- evaluate: `KeypointEvaluator.evaluate` on detection arrays (results_to_arrays done once, outside);
- analysis: one construction and 12 evaluations, what a coco-analyze style error analysis costs (its target:
  at most 5x one pycocotools evaluation).

Checks that the stats and the precision/recall arrays are equal (==) to pycocotools', prints seconds and
ratios, and exits 1 when they differ or evaluate() is less than 5x faster.

    python benchmarks/vectorized_eval.py [--images 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_times_interleaved

from kpbench.core.schema import COCO17
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.vectorized import KeypointEvaluator, results_to_arrays

TARGET = 5.0
ANALYSIS_EVALUATIONS = 12


def main(argv: list[str] | None = None) -> int:
    """Time the cases, print the table and return 0 when the numbers agree and the target is met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, results = make_synthetic_coco(num_images=args.images, seed=args.seed)
    arrays = results_to_arrays(results, COCO17.num_keypoints)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
    evaluator = KeypointEvaluator(gt, COCO17.sigma_array)

    def pycocotools() -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(coco_gt, coco_dt, "keypoints")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return ev

    def analysis() -> Any:
        fresh = KeypointEvaluator(gt, COCO17.sigma_array)
        return [fresh.evaluate(*arrays) for _ in range(ANALYSIS_EVALUATIONS)][-1]

    timings = best_times_interleaved(
        {
            "pycocotools": pycocotools,
            "construction": lambda: KeypointEvaluator(gt, COCO17.sigma_array),
            "evaluate": lambda: evaluator.evaluate(*arrays),
            f"analysis (1 + {ANALYSIS_EVALUATIONS})": analysis,
        },
        args.repeat,
    )
    ev = timings["pycocotools"][1]
    ours = timings["evaluate"][1]
    same = (
        list(ours.stats.values()) == [float(s) for s in ev.stats]
        and np.array_equal(ours.precision, ev.eval["precision"])
        and np.array_equal(ours.recall, ev.eval["recall"])
        and np.array_equal(ours.scores, ev.eval["scores"])
    )
    base = timings["pycocotools"][0]
    print(f"{args.images} images, {len(evaluator.gt_ann_ids)} GT, {len(results)} detections; best of {args.repeat}")
    print(f"{'case':<20} {'seconds':>9} {'pycocotools / case':>19}")
    for name, (seconds, _) in timings.items():
        print(f"{name:<20} {seconds:>9.4f} {base / seconds:>19.1f}")
    speedup = base / timings["evaluate"][0]
    print(f"stats and precision/recall/scores arrays equal to pycocotools': {same}")
    print(f"evaluate() speed-up {speedup:.1f}x (target >= {TARGET:g}x); analysis costs "
          f"{timings[f'analysis (1 + {ANALYSIS_EVALUATIONS})'][0] / base:.2f} pycocotools evaluations")
    print("AP", ours.stats["AP"], "AR", ours.stats["AR"])
    return 0 if same and speedup >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
