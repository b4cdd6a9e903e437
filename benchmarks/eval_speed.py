"""Evaluation speed at val2017 scale: bare pycocotools / hotcoco against kpbench, as a library call and as a command.

Generates 5000 images (~11,000 GT persons, 60% with keypoints, a few crowd regions) and ~50,000 keypoint
detections with `kpbench.data.synthetic`, writes them as JSON files, then times each way of scoring the files,
best of --repeat rounds in which the cases take turns:

- in this process (library): bare pycocotools, bare hotcoco and `kpbench.evaluate` on each backend;
- side by side, each in a fresh interpreter (what a user waits for): the bare backend as a script, the library
  call as a script (`from kpbench import evaluate; evaluate(GT, RES, ...)`), and the `kpbench evaluate GT RES`
  command. "CLI - library" is the command line's own cost (typer, option parsing, output); target < 0.1 s.

Prints seconds and the ratios the project targets: kpbench/pycocotools <= 1.1 and kpbench-hotcoco/hotcoco <= 1.5
(library), and the same ratios for the command against the bare script.

    python benchmarks/eval_speed.py [--images 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _timing import best_times_interleaved, synthetic_workload_files

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


# Each case of the side-by-side table: (bare backend, library keyword arguments, CLI options).
SIDE_BY_SIDE = {
    "pycocotools": ("pycocotools", {}, []),
    "hotcoco": ("hotcoco", {"backend": "hotcoco"}, ["--backend", "hotcoco"]),
    "hotcoco --no-validate": ("hotcoco", {"backend": "hotcoco", "validate": False}, ["--backend", "hotcoco", "--no-validate"]),
}
BARE_SCRIPT = """
import contextlib, io, sys
import {module}.coco as coco_module, {module}.cocoeval as eval_module
with contextlib.redirect_stdout(io.StringIO()):
    gt = coco_module.COCO(sys.argv[1])
    ev = eval_module.COCOeval(gt, gt.loadRes(sys.argv[2]), "keypoints")
    ev.evaluate(); ev.accumulate(); ev.summarize()
"""
HOTCOCO_SCRIPT = """
import contextlib, io, sys
import hotcoco
with contextlib.redirect_stdout(io.StringIO()):
    gt = hotcoco.COCO(sys.argv[1])
    ev = hotcoco.COCOeval(gt, gt.loadRes(sys.argv[2]), "keypoints")
    ev.evaluate(); ev.accumulate(); ev.summarize()
"""
LIBRARY_SCRIPT = "import sys\nfrom kpbench import evaluate\nevaluate(sys.argv[1], sys.argv[2], **{kwargs!r})\n"


def side_by_side_timings(gt_path: Path, res_path: Path, repeat: int) -> dict[str, dict[str, float]]:
    """{case: {"bare": s, "library": s, "cli": s}}, each a fresh interpreter, best of `repeat` interleaved rounds."""
    files = [str(gt_path), str(res_path)]

    def script(code: str) -> Callable[[], None]:
        return lambda: subprocess.run([sys.executable, "-c", code, *files], check=True, capture_output=True)

    cases: dict[str, Callable[[], None]] = {}
    bare_done: set[str] = set()
    for case, (bare, kwargs, options) in SIDE_BY_SIDE.items():
        if bare not in bare_done:
            code = HOTCOCO_SCRIPT if bare == "hotcoco" else BARE_SCRIPT.format(module="pycocotools")
            cases[f"bare {bare}"] = script(code)
            bare_done.add(bare)
        cases[f"library {case}"] = script(LIBRARY_SCRIPT.format(kwargs=kwargs))
        cli = [sys.executable, "-m", "kpbench", "evaluate", *files, *options, "--format", "json"]
        cases[f"cli {case}"] = lambda cli=cli: subprocess.run(cli, check=True, capture_output=True)
    best = {name: seconds for name, (seconds, _) in best_times_interleaved(cases, repeat).items()}
    return {
        case: {"bare": best[f"bare {bare}"], "library": best[f"library {case}"], "cli": best[f"cli {case}"]}
        for case, (bare, _, _) in SIDE_BY_SIDE.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        gt, results, gt_path, res_path = synthetic_workload_files(Path(tmp), args.images)
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

        side_by_side = side_by_side_timings(gt_path, res_path, args.repeat)

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

    print("\nIn a fresh interpreter each (seconds, start-up and imports included):")
    print(f"{'case':38s} {'bare script':>12s} {'library':>10s} {'CLI':>10s} {'CLI/bare':>9s} {'lib/bare':>9s} {'CLI - lib':>10s}")
    for case, row in side_by_side.items():
        bare, lib, cli = row["bare"], row["library"], row["cli"]
        print(f"{case:38s} {bare:12.3f} {lib:10.3f} {cli:10.3f} {cli / bare:9.3f} {lib / bare:9.3f} {cli - lib:+10.3f}")
    worst = max(row["cli"] - row["library"] for row in side_by_side.values())
    print(f"command line's own cost (CLI - library), worst case: {worst:.3f} s  (target < 0.1 s)")


if __name__ == "__main__":
    main()
