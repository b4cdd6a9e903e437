"""`kpbench evaluate GT RES` (default backend, input checks on) against the evaluators a user would pick, each a
whole process in a fresh interpreter, at val2017 scale. Targets: at most 0.10x a bare pycocotools script and at
most 1.5x a bare hotcoco script, stats bit-equal.

Workloads (`kpbench.data.synthetic`, 5000 images, ~10,900 GT persons, 60% with keypoints, a few crowd regions):
keypoints and boxes (each box its keypoints' extent), at ~10 and ~20 detections per image. Every case reads the
same two JSON files and prints its stats; the cases of one workload take turns within each round (best of
--repeat rounds), so a noisy machine slows them alike:

- `pycocotools`: COCO(GT), loadRes(RES), COCOeval evaluate/accumulate/summarize;
- `faster-coco-eval`: its COCO and COCOeval_faster, the same calls;
- `hotcoco`: its COCO and COCOeval, the same calls (it parses the files in Rust);
- `vernier`: its native pipeline on the file bytes (`vernier.instance.evaluate_*_summary`). For keypoints it needs a
  `bbox` on every result: its results file gives each one its keypoints' extent, whose area is the keypoint-extent
  area pycocotools' loadRes gives a result without a box, so its stats stay comparable (and are checked equal);
- `kpbench`: `python -m kpbench evaluate GT RES --iou-type T --format json`.

Start-up and imports count on every side: that is what a user waits for. A case whose package is missing is left
out with a line saying so. Prints seconds, ratios to pycocotools and kpbench's ratios to each peer, and exits 1
when a stat differs.

    python benchmarks/eval_speed.py [--images 5000] [--repeat 3] [--workloads kp10,kp20,bbox10,bbox20]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_PYCOCOTOOLS = 0.10
TARGET_HOTCOCO = 1.5

PEER_SCRIPT = {
    "pycocotools": """
import contextlib, io, json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    ev = COCOeval(gt, gt.loadRes(sys.argv[2]), sys.argv[3])
    ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps([float(s) for s in ev.stats]))
""",
    "faster-coco-eval": """
import contextlib, io, json, sys
from faster_coco_eval import COCO, COCOeval_faster
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    ev = COCOeval_faster(gt, gt.loadRes(sys.argv[2]), sys.argv[3], print_function=lambda *a, **k: None)
    ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps([float(s) for s in ev.stats]))
""",
    "hotcoco": """
import contextlib, io, json, sys
import hotcoco
with contextlib.redirect_stdout(io.StringIO()):
    gt = hotcoco.COCO(sys.argv[1])
    ev = hotcoco.COCOeval(gt, gt.loadRes(sys.argv[2]), sys.argv[3])
    ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps([float(s) for s in ev.stats]))
""",
    "vernier": """
import json, sys
from pathlib import Path
import vernier.instance as vi
gt, dt = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]).read_bytes()
if sys.argv[3] == "keypoints":
    s = vi.evaluate_keypoints_summary(gt, dt, parity_mode="strict", max_dets=[20], use_cats=True, sigmas={})
else:
    s = vi.evaluate_bbox_summary(gt, dt, parity_mode="strict", max_dets=[1, 10, 100], use_cats=True)
print(json.dumps([float(v) for v in s.stats]))
""",
}
PEER_MODULE = {"pycocotools": "pycocotools", "faster-coco-eval": "faster_coco_eval", "hotcoco": "hotcoco",
               "vernier": "vernier"}
WORKLOADS = {"kp10": ("keypoints", 4.0), "kp20": ("keypoints", 8.0), "bbox10": ("bbox", 4.0), "bbox20": ("bbox", 8.0)}


def write_workload(directory: Path, images: int, per_person: float, iou_type: str) -> tuple[Path, Path, Path, int]:
    """gt.json, the results file, vernier's results file (keypoint results with their extent as 'bbox'; the box
    results themselves for boxes) and the number of detections."""
    import numpy as np

    from kpbench.data.synthetic import make_synthetic_coco

    gt, results = make_synthetic_coco(num_images=images, detections_per_person=per_person, seed=0)
    extents = []
    for r in results:
        x, y = np.asarray(r["keypoints"][0::3]), np.asarray(r["keypoints"][1::3])
        extents.append([float(x.min()), float(y.min()), float(x.max() - x.min()), float(y.max() - y.min())])
    boxes = [{"image_id": r["image_id"], "category_id": r["category_id"], "bbox": b, "score": r["score"]}
             for r, b in zip(results, extents)]
    gt_path, res_path, vernier_path = directory / "gt.json", directory / "results.json", directory / "vernier.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results if iou_type == "keypoints" else boxes))
    vernier_path.write_text(json.dumps([dict(r, bbox=b) for r, b in zip(results, extents)]
                                       if iou_type == "keypoints" else boxes))
    return gt_path, res_path, vernier_path, len(results)


def run_case(command: list[str]) -> tuple[float, list[float]]:
    """Seconds of one fresh-interpreter run, and the stats it printed."""
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed: {proc.stderr[-800:]}")
    payload = json.loads(proc.stdout)
    return elapsed, payload if isinstance(payload, list) else list(payload.values())


def measure(workload: str, images: int, repeat: int, peers: list[str]) -> dict[str, Any]:
    iou_type, per_person = WORKLOADS[workload]
    with tempfile.TemporaryDirectory() as tmp:
        gt, res, vernier_res, n = write_workload(Path(tmp), images, per_person, iou_type)
        commands = {peer: [sys.executable, "-c", PEER_SCRIPT[peer], str(gt), str(vernier_res if peer == "vernier"
                                                                               else res), iou_type] for peer in peers}
        commands["kpbench"] = [sys.executable, "-m", "kpbench", "evaluate", str(gt), str(res), "--iou-type", iou_type,
                               "--format", "json"]
        best: dict[str, float] = {}
        stats: dict[str, list[float]] = {}
        for _ in range(repeat):
            for name, command in commands.items():
                seconds, values = run_case(command)
                best[name] = min(best.get(name, float("inf")), seconds)
                stats[name] = values
    return {"workload": workload, "iou_type": iou_type, "detections": n, "seconds": best, "stats": stats}


def cache_bytecode() -> None:
    """Compile kpbench's modules once, as installing a package does: where PYTHONDONTWRITEBYTECODE is set (it is on
    the development machine) an editable kpbench would otherwise be compiled again by every process (~60 ms of
    CPU), while the peers' packages in site-packages come compiled."""
    import compileall

    import kpbench

    compileall.compile_dir(str(Path(kpbench.__file__).parent), quiet=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", default="kp10,kp20,bbox10,bbox20")
    parser.add_argument("--peers", default="pycocotools,faster-coco-eval,hotcoco,vernier")
    args = parser.parse_args(argv)
    peers = []
    for peer in args.peers.split(","):
        if importlib.util.find_spec(PEER_MODULE[peer]) is None:
            print(f"{peer}: not installed, left out")
        else:
            peers.append(peer)
    cache_bytecode()
    status = 0
    for workload in args.workloads.split(","):
        row = measure(workload, args.images, args.repeat, peers)
        seconds, stats = row["seconds"], row["stats"]
        print(f"\n{workload}: {args.images} images, {row['detections']} {row['iou_type']} detections, "
              f"best of {args.repeat} interleaved rounds, each case a fresh interpreter")
        reference = seconds.get("pycocotools")
        for name, value in seconds.items():
            ratio = f"{value / reference:6.3f}x pycocotools" if reference else ""
            same = "stats equal" if stats[name] == stats["kpbench"] else "STATS DIFFER"
            if stats[name] != stats["kpbench"]:
                status = 1
            print(f"  {name:18s} {value:8.3f} s  {ratio}  {same}")
        for name in peers:
            target = {"pycocotools": TARGET_PYCOCOTOOLS, "hotcoco": TARGET_HOTCOCO}.get(name)
            ratio = seconds["kpbench"] / seconds[name]
            print(f"  kpbench / {name:18s} {ratio:6.3f}" + (f"  (target <= {target})" if target else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
