"""ONNX Runtime (CPU provider) against eager PyTorch on this machine: a model's `predict` over the same decoded
images, in interleaved rounds (eager, ONNX Runtime, eager, ...) so that a noisy shared machine slows both alike;
prints each round's ms per image and the ratio of the best rounds (eager / ONNX Runtime: above 1, ONNX Runtime is
faster). The export is built (or taken from the cache) first and is not timed here.

    python benchmarks/runtime_speed.py --model yolo --size 640                  # YOLO11n-pose, real weights
    python benchmarks/runtime_speed.py --model keypointrcnn --size 320 --images 2   # random weights

Images: the first N of ../shared/data/coco_val2017_sample (or --images-dir). Timed: `model.predict([image])`,
one image per call, in torch.inference_mode, torch's thread count on both sides (ONNX Runtime's intra-op threads
are set to it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_val2017_sample" / "val2017"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolo", choices=("yolo", "keypointrcnn"))
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images-dir", type=Path, default=SAMPLE)
    args = parser.parse_args()

    import torch

    from kpbench.data.coco import read_image_rgb_uint8
    from kpbench.engine.inference import prepare_images
    from kpbench.engine.speed_table import default_max_size
    from kpbench.models.registry import load_model
    from kpbench.runtimes import BuildCache, ExportRequest, get_runtime

    cpu = torch.device("cpu")
    options = {"weights": "none", "min_size": args.size, "max_size": default_max_size(args.size)} if (
        args.model == "keypointrcnn") else {}
    model = load_model(args.model, **options)
    getattr(model, "to", lambda d: None)(cpu)
    model.set_input_size(args.size, default_max_size(args.size))
    runtime = get_runtime("onnxruntime:cpu")
    runtime.check(model, cpu)
    record = runtime.build(model, ExportRequest(args.size, default_max_size(args.size)), BuildCache())
    on_ort = runtime.load(model, record, cpu)
    on_ort.set_input_size(args.size, default_max_size(args.size))
    paths = sorted(args.images_dir.glob("*.jpg"))[: args.images]
    images = [prepare_images(model, [read_image_rgb_uint8(p)], cpu)[0] for p in paths]

    def per_image_ms(m: object) -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            for image in images:
                m.predict([image])  # type: ignore[attr-defined]
            return (time.perf_counter() - t0) * 1e3 / len(images)

    per_image_ms(model), per_image_ms(on_ort)  # warm both up (first calls set up their predictors and arenas)
    eager, ort = [], []
    for r in range(args.rounds):
        eager.append(per_image_ms(model))
        ort.append(per_image_ms(on_ort))
        print(f"round {r + 1}: eager {eager[-1]:.1f} ms/image, onnxruntime:cpu {ort[-1]:.1f} ms/image")
    print(f"{args.model} size {args.size}, {len(images)} images, {torch.get_num_threads()} threads, export "
          f"{'cached' if record.cached else 'built'} in {record.export_s:.1f} s: best eager {min(eager):.1f} ms, best "
          f"onnxruntime:cpu {min(ort):.1f} ms, eager / onnxruntime = {min(eager) / min(ort):.3f}")


if __name__ == "__main__":
    main()
