"""Cost of a 20-threshold person-score sweep at val2017 scale, in units of one COCO evaluation.

Generates 5000 images with `kpbench.data.synthetic` (~11,000 GT persons and ~37,000 keypoint detections with the
default generator settings), then times, best of --repeat interleaved runs, all in this process:

- one evaluation: `kpbench.evaluation.cocoeval.evaluate(gt, results)` (the default backend: validation, evaluate,
  accumulate, summarize);
- the sweep: `kpbench.analysis.thresholds.thresholds_for_files(gt, results)` with the 20 default thresholds 0, 0.05, ...,
  0.95 (the same evaluation once, then re-accumulation per threshold).

Prints both and their ratio (target <= 2; re-running COCOeval per threshold costs ~20). With --check N it also
runs full pycocotools evaluations on the results filtered at N thresholds, checks that the sweep's stats equal
them bit for bit, and reports what those runs cost.

    python benchmarks/threshold_sweep.py [--images 5000] [--repeat 2] [--check 2]
"""

from __future__ import annotations

import argparse
import time

from _timing import best_time

from kpbench.analysis.thresholds import sweep_person_thresholds, thresholds_for_files
from kpbench.core.config import ThresholdSettings
from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="synthetic images (5000 = val2017 scale)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each; the best counts")
    parser.add_argument("--check", type=int, default=2, help="thresholds to verify against full pycocotools runs")
    args = parser.parse_args()

    gt, results = make_synthetic_coco(num_images=args.images)
    settings = ThresholdSettings()
    print(f"data: {len(gt['images'])} images, {len(gt['annotations'])} GT persons, {len(results)} detections; "
          f"{len(settings.thresholds)} thresholds")

    # Interleaved, so that both see the same machine load; the best of each counts.
    t_eval = t_sweep = float("inf")
    for _ in range(args.repeat):
        elapsed, result = best_time(lambda: evaluate(gt, results), 1)
        t_eval = min(t_eval, elapsed)
        elapsed, report = best_time(lambda: thresholds_for_files(gt, results, settings), 1)
        t_sweep = min(t_sweep, elapsed)
    # The re-accumulation alone (from the evaluation's matches), timed directly: less noisy than the difference.
    t_reaccum, _ = best_time(lambda: sweep_person_thresholds(result, settings.thresholds), args.repeat)
    n = len(settings.thresholds)
    print(f"one evaluation              {t_eval:8.2f} s")
    print(f"{n}-threshold sweep          {t_sweep:8.2f} s  (end to end: the evaluation once, then every threshold)")
    print(f"re-accumulation only        {t_reaccum:8.2f} s  ({t_reaccum / n * 1000:.1f} ms per threshold)")
    print(f"sweep / one evaluation      {t_sweep / t_eval:8.2f}   (target <= 2; one COCOeval per threshold: ~{n})")
    print(f"(eval + re-accum.) / eval   {(t_eval + t_reaccum) / t_eval:8.2f}")
    assert report.person[0]["threshold"] == 0.0 and [report.person[0][k] for k in result.stats] == result.stats_list()

    if args.check:
        picks = [row for row in report.person if row["threshold"] in (0.5, 0.9, 0.25, 0.75)][: args.check]
        naive = 0.0
        for row in picks:
            kept = [r for r in results if r["score"] >= row["threshold"]]
            start = time.perf_counter()
            full = evaluate(gt, kept, backend="pycocotools")
            naive += time.perf_counter() - start
            same = [row[k] for k in full.stats] == full.stats_list()
            print(f"check t={row['threshold']:.2f}: full evaluation of {len(kept)} detections "
                  f"{'equals' if same else 'DIFFERS FROM'} the sweep row (all {len(full.stats)} stats, exact)")
            if not same:
                raise SystemExit(1)
        print(f"full evaluations at the checked thresholds: {naive / len(picks):.2f} s each on average")


if __name__ == "__main__":
    main()
