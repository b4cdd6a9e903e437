"""kpbench run's cost over a bare Ultralytics loop, for YOLO-pose on the same images.

    python benchmarks/yolo_overhead.py [COCO_ROOT] [--repeat N]

Both sides decode the same JPEGs (RGB) and call YOLO's predict with Ultralytics' validation settings, one image at
a time. The bare loop only collects the predictions; `kpbench run` (the library call, in this process) also
caches every detection, writes the run directory and evaluates it, so it is timed twice: the whole call, and its
inference loop alone (the manifest's loop time). Prints images/s and the ratios (kpbench / bare; 1.0 means no
cost), the best of --repeat interleaved rounds. The project's target: the loop at least 0.97 of the bare loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_times_interleaved

# kpbench run's --workers: unset for its default (0 on a CPU), or KPBENCH_BENCH_WORKERS=2 to see what workers cost.
_WORKERS = __import__("os").environ.get("KPBENCH_BENCH_WORKERS")
WORKERS = int(_WORKERS) if _WORKERS else None
TARGET = 0.97  # kpbench run's inference loop over the bare loop, images/s
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_val2017_sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from PIL import Image

    from kpbench.core.config import RunSettings
    from kpbench.engine.runner import run
    from kpbench.models.yolo import PROTOCOL, _import_yolo, bundled_weights

    gt = json.loads((args.root / "annotations" / "person_keypoints_val2017.json").read_text())
    files = [args.root / "val2017" / im["file_name"] for im in sorted(gt["images"], key=lambda im: im["id"])]
    bare_model = _import_yolo()(str(bundled_weights()))
    loops: list[float] = []

    def bare() -> int:
        found = 0
        for path in files:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
            found += len(bare_model.predict(np.ascontiguousarray(rgb[..., ::-1]), verbose=False, **PROTOCOL)[0].boxes)
        return found

    def kpbench_run() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run(RunSettings(coco_root=str(args.root), model="yolo", device="cpu", out=f"{tmp}/r", workers=WORKERS),
                          progress=False)
            loops.append(float(outcome.manifest["timings"]["loop_s"]))
            return len(json.loads((outcome.run_dir / "keypoints_results.json").read_text()))

    bare()  # warm-up: the first call builds Ultralytics' predictor (the adapter warms itself up the same way)
    start = time.perf_counter()
    best = best_times_interleaved({"bare": bare, "kpbench": kpbench_run}, args.repeat)
    n = len(files)
    bare_s, kp_s, loop_s = best["bare"][0], best["kpbench"][0], min(loops)
    assert best["bare"][1] == best["kpbench"][1], "the two loops found different numbers of persons"
    print(f"{n} images, best of {args.repeat} rounds ({time.perf_counter() - start:.0f} s in all), kpbench run "
          f"--workers {WORKERS if WORKERS is not None else 'default (0 on a CPU)'}")
    print(f"bare Ultralytics loop   {n / bare_s:7.2f} images/s")
    print(f"kpbench run (loop)      {n / loop_s:7.2f} images/s   ratio {bare_s / loop_s:.3f}")
    print(f"kpbench run (whole)     {n / kp_s:7.2f} images/s   ratio {bare_s / kp_s:.3f}  (+ cache, results, evaluation)")
    print(f"loop ratio {bare_s / loop_s:.3f} (target >= {TARGET})")
    sys.exit(0 if bare_s / loop_s >= TARGET else 1)


if __name__ == "__main__":
    main()
