"""kpbench run's loop against a bare decode-plus-model loop, on real images, at 100 detections per image.

    python benchmarks/run_loop_real.py [COCO_ROOT] [--images 12] [--min-size 320] [--repeat 2] [--threads N]

Keypoint R-CNN with random weights (`--weights none`) and `--box-score-thresh 0`, so that every image gives the
model's cap of 100 detections (the keypoint head runs on all of them), on the first --images images of the real
val2017 sample, on the CPU. Both sides use the same torch threads and decode the same JPEGs with kpbench's decoder
(RGB):

- bare: ``for path in paths: model([read_image_rgb(path)])`` in inference mode, with a model built afresh for
  each pass (building not timed), as the run builds its own, so that both include a fresh model's first call; the
  predictions are only collected (nothing is copied to the host or written);
- kpbench: `kpbench.engine.runner.run` into a fresh run directory, evaluation off; its loop's images/s (the
  manifest's `images_per_s`: decoding in a thread, the model, one host copy per call, the store writer).

Prints images/s of each and the ratio (kpbench / bare; target: at least 0.95), best of --repeat interleaved
rounds, and the detections per image the run stored.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_times_interleaved

TARGET = 0.95
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_val2017_sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--min-size", type=int, default=320)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()

    import torch

    from kpbench.core.config import RunSettings
    from kpbench.data.coco import image_files, load_annotations, read_image_rgb, select_image_ids
    from kpbench.engine.runner import run
    from kpbench.models.keypointrcnn import build_model, default_max_size
    from kpbench.runs.arrays import read_run_arrays

    if args.threads:
        torch.set_num_threads(args.threads)
    max_size = default_max_size(args.min_size)
    gt = load_annotations(args.root, "val2017")
    ids = select_image_ids(gt, "all", args.images)
    paths = image_files(args.root, "val2017", gt, ids)
    rates: dict[str, list[float]] = {"bare": [], "kpbench": []}
    found: list[float] = []

    def bare() -> None:
        model, _ = build_model("none", min_size=args.min_size, max_size=max_size, box_score_thresh=0.0, seed=0)
        start = time.perf_counter()
        outputs = []
        with torch.inference_mode():
            for path in paths:
                outputs.append(model([read_image_rgb(path)])[0])
        rates["bare"].append(len(paths) / (time.perf_counter() - start))

    def kpbench_run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            settings = RunSettings(coco_root=str(args.root), limit=args.images, weights="none", min_size=args.min_size,
                                   max_size=max_size, box_score_thresh=0.0, device="cpu", out=f"{tmp}/r")
            outcome = run(settings, progress=False, evaluate=False)
            rates["kpbench"].append(float(outcome.manifest["timings"]["images_per_s"]))
            found.append(float(read_run_arrays(outcome.run_dir).counts.mean()))

    bare()  # warm-up: kernels, allocator, page cache
    rates["bare"].clear()
    started = time.perf_counter()
    best_times_interleaved({"bare": bare, "kpbench": kpbench_run}, args.repeat)
    b, k = max(rates["bare"]), max(rates["kpbench"])
    print(f"{len(paths)} real images, Keypoint R-CNN random weights, short side {args.min_size}, box threshold 0 "
          f"({found[-1]:.0f} detections per image stored), {torch.get_num_threads()} torch threads, best of "
          f"{args.repeat} interleaved rounds ({time.perf_counter() - started:.0f} s in all)")
    print(f"bare decode + model loop   {b:7.3f} images/s")
    print(f"kpbench run (loop)         {k:7.3f} images/s   ratio {k / b:.3f} (target >= {TARGET})")
    sys.exit(0 if k / b >= TARGET else 1)


if __name__ == "__main__":
    main()
