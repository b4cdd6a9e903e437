"""The bootstrap (`kpbench.analysis.bootstrap`) reading the evaluator's match arrays, against the route it took
before: pycocotools-style ImageEval entries built from the arrays and gathered again for every replicate.

Generates the val2017-scale synthetic workload (5000 images, ~11,000 GT persons, ~49,000 keypoint detections;
`kpbench.data.synthetic`), evaluates it once with the default (vectorized) backend, then times, best of --repeat
rounds in which the two routes take turns (the machine is shared: ratios, measured in one run, are what to read):

- `bootstrap_samples(result, N)`: N replicates from the match arrays (`MatchTable`), as kpbench does now;
- the ImageEval route: the evalImgs entries built once (`MatchTable.image_evals()`, what `LazyImageEvals` made on
  first use), then each replicate gathering the entries of its images, sorting them and re-merging them
  (`thresholds._build_slices` on the resampled entries), as `bootstrap.py` did before;

and checks that both give the same replicates (==). Prints seconds, seconds per replicate and the ratio.

    python benchmarks/bootstrap_speed.py [--images 5000] [--replicates 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_times_interleaved

from kpbench.analysis.bootstrap import bootstrap_samples, draw_images
from kpbench.analysis.thresholds import _accumulate, _build_slices, _summarize
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import EvalResult, evaluate


def image_eval_route(result: EvalResult, replicates: int, seed: int) -> np.ndarray:
    """The former route: ImageEval entries, gathered per replicate (evalImgs order: category, area, image)."""
    table = result.table_matches()
    assert table is not None
    by_image: dict[int, list] = {}
    for e in table.image_evals():
        by_image.setdefault(e.image_id, []).append(e)
    ids = np.asarray(result.params.image_ids, dtype=np.int64)
    draws = draw_images(len(ids), replicates, seed)
    samples = np.empty((replicates, len(result.stats)))
    for row, draw in enumerate(draws):
        evals = [e for i in ids[np.sort(draw)].tolist() for e in by_image.get(i, ())]
        evals.sort(key=lambda e: (e.category_id, e.area_index))
        resampled = dataclasses.replace(result, image_evals=evals)
        precision, recall = _accumulate(_build_slices(resampled), resampled, -np.inf)
        samples[row] = _summarize(precision, recall, resampled)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    gt, results = make_synthetic_coco(num_images=args.images, detections_per_person=4.0, seed=0)
    result = evaluate(gt, results)
    print(f"{args.images} images, {len(gt['annotations'])} GT persons, {len(results)} detections; "
          f"{args.replicates} replicates, best of {args.repeat} interleaved rounds")
    best = best_times_interleaved({
        "match arrays (now)": lambda: bootstrap_samples(result, args.replicates, 0),
        "ImageEval entries (before)": lambda: image_eval_route(result, args.replicates, 0),
    }, args.repeat)
    now, before = best["match arrays (now)"], best["ImageEval entries (before)"]
    if not np.array_equal(now[1], before[1]):
        raise SystemExit("the two routes gave different replicates")
    for name, (seconds, _) in best.items():
        print(f"{name:28s} {seconds:8.2f} s  ({seconds / args.replicates:.3f} s per replicate)")
    print(f"the ImageEval route takes {before[0] / now[0]:.2f}x the time of the match arrays; replicates equal (==)")


if __name__ == "__main__":
    main()
