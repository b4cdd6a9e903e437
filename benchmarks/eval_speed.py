"""Evaluation speed at val2017 scale: bare pycocotools / hotcoco against `kpbench evaluate` on each backend.

Generates 5000 images (~11,000 GT persons, 60% with keypoints, a few crowd regions) and ~50,000 keypoint
detections with `kpbench.data.synthetic`, writes them as JSON files, then times each way of scoring the files,
best of --repeat rounds in which the cases take turns, all in this one process (plus the CLI end to end in a subprocess). Prints seconds and
the ratios the project targets: kpbench/pycocotools <= 1.1 and kpbench-hotcoco/hotcoco <= 1.5.

    python benchmarks/eval_speed.py [--images 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import best_times_interleaved

from kpbench.data.synthetic import make_synthetic_coco
from kpbench.evaluation.cocoeval import evaluate
from kpbench.evaluation.cocofiles import load_ground_truth, load_results
from kpbench.evaluation.fastcheck import check_files


def hotcoco_with_dict_checks(gt_path: Path, res_path: Path) -> list[float]:
    """kpbench's hotcoco path without msgspec: both files parsed and checked as Python dicts first."""
    gt = load_ground_truth(gt_path)
    return evaluate(gt, load_results(res_path, gt), backend="hotcoco").stats_list()


def bare_pycocotools(gt_path: Path, res_path: Path) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(res_path))
        ev = COCOeval(gt, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats)


def bare_hotcoco(gt_path: Path, res_path: Path) -> list[float]:
    import hotcoco

    with contextlib.redirect_stdout(io.StringIO()):
        gt = hotcoco.COCO(str(gt_path))
        dt = gt.loadRes(str(res_path))
        ev = hotcoco.COCOeval(gt, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    gt, results = make_synthetic_coco(num_images=args.images, detections_per_person=4.0, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        n_gt, n_kp = len(gt["annotations"]), sum(a["num_keypoints"] > 0 for a in gt["annotations"])
        print(f"{args.images} images, {n_gt} GT persons ({n_kp} with keypoints), {len(results)} detections")

        timings: dict[str, float] = {}
        stats: dict[str, object] = {}
        cases = {
            "bare pycocotools": lambda: bare_pycocotools(gt_path, res_path),
            "kpbench evaluate (pycocotools)": lambda: evaluate(gt_path, res_path).stats_list(),
            "bare hotcoco": lambda: bare_hotcoco(gt_path, res_path),
            "kpbench evaluate (hotcoco)": lambda: evaluate(gt_path, res_path, backend="hotcoco").stats_list(),
            "  of which input checks (msgspec)": lambda: check_files(gt_path, res_path),
            "kpbench evaluate (hotcoco, dict checks)": lambda: hotcoco_with_dict_checks(gt_path, res_path),
            "kpbench evaluate (hotcoco, unchecked)": lambda: evaluate(
                gt_path, res_path, backend="hotcoco", validate=False
            ).stats_list(),
        }
        for name, (seconds, value) in best_times_interleaved(cases, args.repeat).items():
            timings[name], stats[name] = seconds, value
            ap = f"AP {stats[name][0]:.6f}" if isinstance(stats[name], list) else ""
            print(f"{name:40s} {timings[name]:8.3f} s   {ap}")

        cli = [sys.executable, "-m", "kpbench", "evaluate", str(gt_path), str(res_path), "--format", "json"]
        start = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True)
        cli_seconds = time.perf_counter() - start
        print(f"{'kpbench evaluate CLI (subprocess)':40s} {cli_seconds:8.3f} s   (includes interpreter start-up)")

    assert stats["bare pycocotools"] == stats["kpbench evaluate (pycocotools)"], "stats differ from pycocotools"
    py_ratio = timings["kpbench evaluate (pycocotools)"] / timings["bare pycocotools"]
    hc_ratio = timings["kpbench evaluate (hotcoco)"] / timings["bare hotcoco"]
    print(f"ratio kpbench/pycocotools: {py_ratio:.3f}  (target <= 1.1)")
    print(f"ratio kpbench-hotcoco/hotcoco: {hc_ratio:.3f}  (target <= 1.5; input checks decode the JSON with msgspec)")
    unchecked = timings["kpbench evaluate (hotcoco, unchecked)"] / timings["bare hotcoco"]
    print(f"ratio kpbench-hotcoco --no-validate/hotcoco: {unchecked:.3f}  (target <= 1.5)")
    dict_checked = timings["kpbench evaluate (hotcoco, dict checks)"] / timings["bare hotcoco"]
    print(f"ratio kpbench-hotcoco without msgspec (checks on Python dicts)/hotcoco: {dict_checked:.3f}")
    print(f"ratio hotcoco/pycocotools: {timings['bare hotcoco'] / timings['bare pycocotools']:.3f}")


if __name__ == "__main__":
    main()
