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

With --run RUN_DIR (a finished run directory, e.g. `benchmarks/run_eval_speed.py --keep DIR`: 5000 images, 500,000
detections), times instead the default analysis's AP per keypoint and group of a run, on the run's own keypoint
evaluation (as `kpbench run` hands it over), best of --repeat interleaved rounds:

- the run's keypoint evaluation (`kpbench.evaluate` on the checked arrays, vectorized), the unit;
- `keypoint_ap_for_run(RUN_DIR, result=...)`: the 21 part evaluations (4 groups, 17 keypoints; the "all" row is
  the run's evaluation) with what they share;
- the 21 parts one `KeypointPartEvaluator` makes (prepared once, then `evaluate_part` each), and the same 21 parts
  as they were evaluated before it, one `KeypointEvaluator` per part built from a sliced GT dict and run on every
  detection: the cost per part, before and after; both give the same arrays (checked).

    python benchmarks/keypoint_ap_speed.py [--images 5000] [--repeat 3] [--pycocotools]
    python benchmarks/keypoint_ap_speed.py --run RUN_DIR [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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
    parser.add_argument("--run", type=Path, help="Time a run directory's AP per keypoint and group instead.")
    args = parser.parse_args()
    if args.run is not None:
        run_dir_parts(args.run, args.repeat)
        return

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


def _sliced_gt(gt: dict[str, Any], category_id: int, indices: list[int]) -> dict[str, Any]:
    """The GT dict cut down to `indices`, num_keypoints recounted (what keypoint_ap built per part before)."""
    anns = [a for a in gt["annotations"] if a["category_id"] == category_id]
    out = []
    for a in anns:
        kps = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)[indices]
        out.append({**a, "keypoints": kps.reshape(-1).tolist(), "num_keypoints": int((kps[:, 2] > 0).sum())})
    return {"images": gt["images"], "annotations": out, "categories": [c for c in gt["categories"]
                                                                        if c["id"] == category_id]}


def run_dir_parts(run: Path, repeat: int) -> None:
    """The --run mode (see the module docstring)."""
    import json

    from kpbench.analysis.keypoint_ap import keypoint_ap_for_run
    from kpbench.evaluation import runeval
    from kpbench.evaluation.arrays import keypoint_extent_areas
    from kpbench.evaluation.vectorized import KeypointEvaluator, KeypointPartEvaluator

    manifest = json.loads((run / "manifest.json").read_text())
    arrays = runeval.finished_run_arrays(run, manifest, runeval.read_run_arrays(run))
    gt = runeval.load_run_ground_truth(run, ("keypoints",))["keypoints"]
    dets = runeval.run_checked_detections(run, arrays, {"keypoints": gt})["keypoints"].detections
    schema = gt.schema
    assert schema is not None and dets.keypoints is not None
    parts = [list(indices) for _, indices in schema.groups] + [[j] for j in range(schema.num_keypoints)]
    whole = evaluate(gt, dets)
    areas = keypoint_extent_areas(dets.keypoints)

    def before() -> list[Any]:
        return [KeypointEvaluator(_sliced_gt(gt.dataset, schema.category_id, p), schema.sigma_array[p]).evaluate(
            dets.image_ids, dets.keypoints[:, p, :], dets.scores, areas=areas) for p in parts]

    def after() -> list[Any]:
        prepared = KeypointPartEvaluator(gt.dataset, schema.sigma_array, None, schema.category_id, dets.image_ids,
                                         dets.keypoints, dets.scores)
        return [prepared.evaluate_part(p) for p in parts]

    cases: dict[str, Callable[[], Any]] = {
        "the run's keypoint evaluation": lambda: evaluate(gt, dets),
        "keypoint_ap_for_run (21 parts)": lambda: keypoint_ap_for_run(run, result=whole),
        "21 parts: KeypointPartEvaluator": after,
        "21 parts: one KeypointEvaluator each": before,
    }
    best = best_times_interleaved(cases, repeat)
    print(f"{run}: {len(dets)} detections, {len(gt.dataset['annotations'])} GT annotations; best of {repeat} "
          "interleaved rounds")
    unit = best["the run's keypoint evaluation"][0]
    for name, (seconds, _) in best.items():
        per_part = f"   {seconds / len(parts):6.3f} s per part" if name.startswith("21 parts") else ""
        print(f"{name:38s} {seconds:8.2f} s   {seconds / unit:6.2f} x the evaluation{per_part}")
    same = all(a.stats == b.stats and np.array_equal(a.precision, b.precision) and np.array_equal(a.recall, b.recall)
               for a, b in zip(best["21 parts: KeypointPartEvaluator"][1],
                               best["21 parts: one KeypointEvaluator each"][1], strict=True))
    print(f"before / after per part: {best['21 parts: one KeypointEvaluator each'][0] / best['21 parts: KeypointPartEvaluator'][0]:.2f}"
          f"; the same stats and arrays: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
