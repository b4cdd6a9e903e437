"""The loop of one `kpbench run` rank: its fixed batches of images through the model (`kpbench.engine.inference`)
into its detections store.

Three things overlap where it pays: decoding (DataLoader worker processes on CUDA, `--workers`; with no workers
on CUDA, a decode thread: the main thread waits for the GPU with the GIL released, so the thread runs freely),
the model on the main thread, and the store writer's thread (`kpbench.runs.store.StoreWriter`: encoding,
checksums, appends, fsync at most once a second, woken once per 16 images). On a CPU without workers the batches
are decoded on the main thread, straight from the dataset: there the model's own threads hold the cores, and a
second Python thread doing its share of work costs GIL hand-offs on every torch call of the main thread. With a
zero-cost model on 2 cores the loop ran 2,700 images/s with a decode thread and 3,850 without (and 2,000 through
a DataLoader in the main thread, whose sampler and collation machinery it skips). The main thread only prepares
the inputs, calls the model, and brings each call's predictions to the host with one copy.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.config import RunSettings
from kpbench.data.coco import CocoImages, make_loader, raise_unreadable
from kpbench.engine.distributed import DistInfo
from kpbench.engine.planning import RunPlan
from kpbench.runs.store import StoreWriter

if TYPE_CHECKING:
    import torch

    from kpbench.engine.inference import BatchResult
    from kpbench.models.base import PoseModel

DEFAULT_CUDA_WORKERS = 2
DECODE_AHEAD = 2  # batches the decode thread may have ready (CUDA, workers = 0)


def loader_workers(workers: int | None, device: torch.device) -> int:
    """The DataLoader's worker processes: as given, else 2 on CUDA (decoding overlaps the GPU) and 0 on a CPU
    (there the workers would take cores from the model itself)."""
    if workers is not None:
        return workers
    return DEFAULT_CUDA_WORKERS if device.type == "cuda" else 0


def _decoded(dataset: CocoImages, batches: list[list[int]]) -> Iterator[tuple[list[int], list[Any]]]:
    """(image ids, decoded images) of each batch of dataset indices, in order (what a DataLoader without workers
    gives, without its sampler and collation machinery)."""
    for batch in batches:
        items = [dataset[i] for i in batch]
        yield [image_id for image_id, _ in items], [image for _, image in items]


@dataclass
class LoopStats:
    """One rank's loop: images run, wall and model seconds, and backbone input shapes ("1x3x800x1216": calls)."""

    rank: int
    images: int = 0
    loop_s: float = 0.0
    model_s: float = 0.0
    shapes: dict[str, int] = field(default_factory=dict)


def run_loop(
    model: PoseModel,
    device: torch.device,
    settings: RunSettings,
    plan: RunPlan,
    batches: list[list[int]],
    out_path: Path,
    dist: DistInfo,
    progress: bool,
) -> LoopStats:
    """Run the model over `batches` (this rank's) through the inference loop, appending each not-yet-cached
    image to the store at `out_path`."""
    from tqdm import tqdm

    from kpbench.engine.inference import background, inference_on_dataset

    stats = LoopStats(rank=dist.rank)
    if not batches:
        return stats
    done = set(plan.done)
    dataset = CocoImages(plan.image_ids, [Path(p) for p in plan.paths])
    total = sum(len(b) for b in batches)
    cuda = device.type == "cuda"
    workers = loader_workers(settings.workers, device)
    if workers == 0:  # a DataLoader's own machinery would only add to the work (see the module docstring)
        loader: Any = _decoded(dataset, batches)
        if cuda:
            loader = background(loader, DECODE_AHEAD)
    else:
        loader = make_loader(dataset, batches, workers=workers, pin_memory=cuda)

    def checked(source: Any) -> Iterator[Any]:
        for ids, images in source:
            raise_unreadable(images)
            yield ids, images

    # A model that keeps records beside the store (a top-down model's person boxes) makes them durable before each
    # group of detections is written (its optional `flush_records`, reached through any wrapper).
    writer = StoreWriter(out_path, before_write=getattr(model, "flush_records", None))
    desc = f"rank {dist.rank}/{dist.world_size}" if dist.distributed else "kpbench run"
    bar = tqdm(total=total, unit="img", desc=desc, disable=not (progress and dist.is_main), smoothing=0.05,
               dynamic_ncols=True, file=sys.stderr)

    def finished(batch: BatchResult) -> None:
        writer.put(batch.batch, skip=[i for i in batch.image_ids if i in done])
        bar.update(len(batch.image_ids))

    started = time.perf_counter()
    try:
        result = inference_on_dataset(model, checked(loader), device, finished, dtype=settings.dtype,
                                      non_blocking=True)
    except BaseException:
        bar.close()
        with contextlib.suppress(Exception):  # what the loop raised matters more; the writer still writes all
            writer.close()
        raise
    bar.close()
    writer.close()
    stats.loop_s = time.perf_counter() - started
    stats.images = result.images
    stats.model_s = result.model_s
    for shape in result.shapes:
        key = "x".join(str(s) for s in shape)
        stats.shapes[key] = stats.shapes.get(key, 0) + 1
    return stats
