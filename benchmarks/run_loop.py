"""kpbench run's harness alone: images/s of the run loop with a model that costs nothing, on small images.

    python benchmarks/run_loop.py [--images 2000] [--detections 20,100,300] [--repeat 3] [--batch-size 1]

The model is a plugin (`FILE.py:Class`) whose predict returns the same precomputed detections (torch float32
tensors, 17 keypoints) for every image, so everything timed is kpbench's own work: reading and decoding the JPEGs
(32 x 24 pixels), the copy to the model's input format, checking the predictions, copying them to the host, and
writing them to the run directory's detections store (encoding, checksums, grouped fsyncs). Timed: the run's
loop (the manifest's `loop_s`: first batch requested to last image written), and the whole `kpbench.engine.
runner.run` call without evaluation (planning, the loop, the merge, the manifest), in wall seconds and in CPU
seconds of the process (all threads: the decode thread, the main thread and the store writer's). On a machine
shared with other work the wall rates drop with the load, while the CPU per image stays about what the harness
costs: 1e6 / (CPU us per image) is the rate the harness sustains on one free core. Prints images/s per detection
count, the best of --repeat interleaved rounds, and the store's bytes per detection. Targets (issue 24): at least
3,000 images/s at 100 detections per image and 1,500 at 300.
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

TARGETS = {100: 3000.0, 300: 1500.0}

MODEL_SOURCE = '''
import numpy as np
import torch

from kpbench.core.schema import COCO17
from kpbench.models.base import ModelInfo, Predictions


class ZeroCost:
    """Returns the same {n} detections for every image, as torch float32 tensors: no work at all."""

    input_format = "tensor"
    schema = COCO17

    def __init__(self, **kwargs):
        rng = np.random.default_rng(0)
        n, k = {n}, COCO17.num_keypoints
        xy = rng.uniform(0, 32, size=(n, 2)).astype(np.float32)
        self.answer = Predictions(
            boxes=torch.from_numpy(np.concatenate([xy, xy + rng.uniform(1, 8, size=(n, 2)).astype(np.float32)], 1)),
            scores=torch.from_numpy(rng.uniform(0, 1, n).astype(np.float32)),
            keypoints=torch.from_numpy(np.concatenate([rng.uniform(0, 32, (n, k, 2)), np.ones((n, k, 1))],
                                                      2).astype(np.float32)),
            keypoint_scores=torch.from_numpy(rng.normal(0, 3, (n, k)).astype(np.float32)),
            keypoint_score_kind="logit",
            labels=torch.ones(n, dtype=torch.int64),
        )

    def info(self):
        return ModelInfo(weights=None, source="benchmark", name="zero-cost", keypoint_score_kind="logit")

    def predict(self, images):
        return [self.answer for _ in images]
'''


def write_images(root: Path, count: int) -> None:
    """A COCO root of `count` 32 x 24 JPEGs (ids 1..count) with one annotated person each."""
    from PIL import Image

    from kpbench.core.schema import COCO17

    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB").save(root / "val2017" / name)
        images.append({"id": image_id, "file_name": name, "width": 32, "height": 24})
        kps = [v for _ in range(17) for v in (float(rng.uniform(0, 32)), float(rng.uniform(0, 24)), 2)]
        annotations.append({"id": image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "num_keypoints": 17,
                            "keypoints": kps, "bbox": [0.0, 0.0, 32.0, 24.0], "area": 500.0})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoint_names),
                          "skeleton": [list(p) for p in COCO17.skeleton]}]}
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(gt))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--detections", default="20,100,300")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()

    import torch

    from kpbench.core.config import RunSettings
    from kpbench.engine.runner import run

    counts = [int(c) for c in args.detections.split(",")]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "coco"
        write_images(root, args.images)
        loops: dict[int, list[float]] = {n: [] for n in counts}
        cpus: dict[int, list[float]] = {n: [] for n in counts}
        sizes: dict[int, int] = {}

        def case(n: int):  # type: ignore[no-untyped-def]
            model_file = Path(tmp) / f"zero{n}.py"
            model_file.write_text(MODEL_SOURCE.replace("{n}", str(n)))

            def call() -> int:
                out = Path(tmp) / f"run{n}"
                settings = RunSettings(coco_root=str(root), model=f"{model_file}:ZeroCost", device="cpu",
                                       out=str(out), workers=0, batch_size=args.batch_size)
                cpu = time.process_time()
                outcome = run(settings, progress=False, evaluate=False, overwrite=True)
                cpus[n].append(time.process_time() - cpu)
                loops[n].append(float(outcome.manifest["timings"]["loop_s"]))
                store = [p for p in out.iterdir() if p.name.startswith("detections.")]
                sizes[n] = sum(p.stat().st_size for p in store)
                return outcome.processed

            return call

        start = time.perf_counter()
        best = best_times_interleaved({str(n): case(n) for n in counts}, args.repeat)
        print(f"{args.images} images of 32 x 24 px, batch size {args.batch_size}, a zero-cost model (torch float32 "
              f"outputs), best of {args.repeat} interleaved rounds ({time.perf_counter() - start:.0f} s in all)")
        print(f"load average before: {' '.join(f'{v:.1f}' for v in __import__('os').getloadavg())}")
        print("detections/image   loop images/s   run() images/s   run() CPU us/image   store bytes/detection")
        failed = False
        for n in counts:
            loop_rate = args.images / min(loops[n])
            whole_rate = args.images / best[str(n)][0]
            per_det = sizes[n] / (args.images * n) if n else float("nan")
            target = TARGETS.get(n)
            mark = "" if target is None else f"   (target >= {target:,.0f}: {'met' if loop_rate >= target else 'MISSED'})"
            failed |= target is not None and loop_rate < target
            cpu_us = min(cpus[n]) / args.images * 1e6
            print(f"{n:16d}   {loop_rate:13,.0f}   {whole_rate:14,.0f}   {cpu_us:18,.0f}   {per_det:21.1f}{mark}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
