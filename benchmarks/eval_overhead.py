"""How much slower is `kpbench run` than a bare loop of model(images)? Target: ratio >= 0.97.

On the same images, device, weights and input size, it times:

- bare: a freshly built model's `model([image])` over images already decoded and on the device, the fastest
  the model can go (one untimed pass first warms the process: CUDA context, cuDNN, allocator);
- run:  `kpbench.engine.runner.run` (the code behind `kpbench run`) into a fresh run directory, evaluation off: data
  loading in worker processes, host-to-device copies, caching every detection. Its images/s is the loop's
  (the manifest's timings.images_per_s), as the progress bar shows it; model building is reported apart.

Both use batch size 1 and the run's dtype. Repeats alternate bare and run, and the medians are compared.

    python benchmarks/eval_overhead.py --coco-root ~/coco --num-images 500 --device cuda
    python benchmarks/eval_overhead.py --coco-root ../shared/data/coco_val2017_sample --num-images 3 \\
        --weights none --min-size 320 --box-score-thresh 0.3 --device cpu --repeats 1  # a CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults follow `kpbench run`)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--coco-root", default=None, help="COCO root (default: $KPBENCH_COCO_ROOT)")
    p.add_argument("--split", default="val2017")
    p.add_argument("--num-images", type=int, default=500, help="the first N images (by id) of the split")
    p.add_argument("--weights", default="COCO_V1", help="COCO_V1, COCO_LEGACY, none or a checkpoint path")
    p.add_argument("--device", default="auto")
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=None, help="default: round(min_size * 1333 / 800)")
    p.add_argument("--box-score-thresh", type=float, default=0.05)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    # On a CPU device the workers compete with the model for cores: keep half of them for the model.
    default_workers = max(1, min(4, (os.cpu_count() or 2) // 2))
    p.add_argument("--workers", type=int, default=default_workers, help="DataLoader workers of the run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Time both, print the table (or JSON) and return 0 if the ratio meets the target, else 1."""
    args = parse_args(argv)
    import torch

    from kpbench.core.config import RunSettings
    from kpbench.core.environment import capture_environment
    from kpbench.data.coco import image_files, load_annotations, read_image_rgb, resolve_coco_root, select_image_ids
    from kpbench.engine.device import autocast, resolve_device
    from kpbench.engine.runner import run
    from kpbench.models.keypointrcnn import build_model, default_max_size

    max_size = args.max_size or default_max_size(args.min_size)
    device = resolve_device(args.device)
    root = resolve_coco_root(args.coco_root)
    gt = load_annotations(root, args.split)
    ids = select_image_ids(gt, "all", args.num_images)
    paths = image_files(root, args.split, gt, ids)
    images = [read_image_rgb(p).to(device) for p in paths]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def bare_pass() -> float:
        """A freshly built model over the images, like the run (whose loop includes its model's first call)."""
        model, _ = build_model(args.weights, min_size=args.min_size, max_size=max_size,
                               box_score_thresh=args.box_score_thresh, seed=0)
        model = model.to(device)
        sync()
        start = time.perf_counter()
        with torch.inference_mode(), autocast(device, args.dtype):
            for image in images:
                model([image])
        sync()
        return len(images) / (time.perf_counter() - start)

    bare_pass()  # warm-up of the process: CUDA context, cuDNN, kernels, the allocator, the page cache
    bare, runs, walls, model_share = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="kpbench-overhead-") as tmp:
        for repeat in range(args.repeats):
            bare.append(bare_pass())
            settings = RunSettings(
                coco_root=str(root), split=args.split, limit=args.num_images, weights=args.weights,
                min_size=args.min_size, max_size=max_size, box_score_thresh=args.box_score_thresh,
                device=str(device), dtype=args.dtype,
                workers=args.workers, out=str(Path(tmp) / f"run{repeat}"),
            )
            start = time.perf_counter()
            outcome = run(settings, overwrite=True, progress=False, evaluate=False, command_line=["eval_overhead"])
            walls.append(time.perf_counter() - start)
            assert outcome.manifest is not None
            timings = outcome.manifest["timings"]
            runs.append(float(timings["images_per_s"]))
            # The part of the run's loop spent inside model(): the rest is the harness (loading, copies, cache).
            model_share.append(float(timings["model_s"]) / float(timings["loop_s"]))
    bare_ips, run_ips = statistics.median(bare), statistics.median(runs)
    env = capture_environment(device)
    report = {
        "device": env["device_name"],
        "weights": args.weights,
        "images": len(images),
        "min_size": args.min_size,
        "max_size": max_size,
        "dtype": args.dtype,
        "workers": args.workers,
        "bare_images_per_s": round(bare_ips, 3),
        "run_images_per_s": round(run_ips, 3),
        "ratio": round(run_ips / bare_ips, 4),
        "target": 0.97,
        "run_model_share_of_loop": round(statistics.median(model_share), 4),
        "run_wall_s_incl_model_build": [round(w, 2) for w in walls],
        "bare_all": [round(v, 3) for v in bare],
        "run_all": [round(v, 3) for v in runs],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"device {report['device']}, weights {args.weights}, {len(images)} images, size {args.min_size}/{max_size}, "
              f"{args.dtype}, {args.repeats} repeats (medians)")
        print(f"  bare model(images) loop : {bare_ips:8.3f} images/s")
        print(f"  kpbench run             : {run_ips:8.3f} images/s")
        print(f"  ratio run / bare        : {run_ips / bare_ips:8.4f}  (target >= 0.97)")
        print(f"  model() share of the run loop: {report['run_model_share_of_loop']:.4f} (the rest is harness overhead)")
    return 0 if run_ips / bare_ips >= 0.97 else 1


if __name__ == "__main__":
    sys.exit(main())
