"""`kpbench speed --person-boxes ...`: what a top-down model costs, per crop and per person, and how that cost grows
with the number of persons per image (the comparison with one-stage models that users ask for).

Rows (``kind``), each timed with speed's own clock (`kpbench.engine.timing.time_model`: synchronise, perf_counter,
the call, synchronise; one cold call, ``warmup`` untimed calls, ``iters`` timed ones):

- ``crop``: the crop model alone on a batch of B crops (``--crop-batch-size`` 1,8,32; crops cut once, beforehand,
  from the timed images' person boxes), with its second, mirrored pass under ``--flip-test``: ms per call and
  ``ms_per_crop`` = ms / B;
- ``detector`` (a MODEL source only): the detector alone on one image: its ms per image;
- ``image``: the whole top-down model on one image with the source's own boxes (detector + crops + crop model +
  mapping back + the post-processing given, ``--rescore`` and ``--nms``, as a run applies it): ms per image, the
  mean persons per image, and ``ms_per_person`` = ms / persons;
- ``growth``: the whole model (post-processing included) on one image with exactly N person boxes (``--persons``
  1,2,4,8,16: the source's boxes, repeated in turn when it has fewer): ``ms_per_image`` and ``ms_per_person`` at each
  N. A one-stage model's cost per image is flat in N; a top-down model's grows about linearly, from the detector's
  cost at N = 0.

Written beside the regular speed files: ``<out>/<device-slug>-<timestamp>-topdown.csv``, ``.json`` (settings,
environment, the model and the source) and ``.md`` (this definition and the table).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.models.person_boxes import BoxSelection, PersonBoxes

if TYPE_CHECKING:
    from kpbench.core.config import SpeedSettings

TOPDOWN_COLUMNS: tuple[str, ...] = (
    "timestamp", "device", "device_name", "torch", "cpu", "torch_threads", "model", "weights", "person_boxes",
    "person_box_thresh", "person_box_max", "flip_test", "flip_space", "box_padding", "postprocess", "kind",
    "crop_size", "crop_batch_size", "persons_per_image",
    "num_images", "warmup", "iters", "cold_ms", "mean_ms", "std_ms", "median_ms", "p90_ms", "min_ms", "max_ms",
    "ms_per_crop", "crops_per_s", "ms_per_image", "ms_per_person", "status", "error",
)  # fmt: skip
SUMMARY = ("kind", "crop_batch_size", "persons_per_image", "mean_ms", "median_ms", "ms_per_crop", "ms_per_image",
           "ms_per_person", "status")


@dataclass
class TopDownSpeed:
    """The rows and manifest of `run_topdown_speed`, and the files written."""

    rows: list[dict[str, Any]]
    manifest: dict[str, Any]
    csv_path: Path | None = None
    manifest_path: Path | None = None
    markdown_path: Path | None = None


class _RepeatedBoxes:
    """A source giving exactly `count` boxes per image: the wrapped source's, repeated in turn (no box: none)."""

    def __init__(self, source: Any, count: int) -> None:
        self.source, self.count, self.needs_images = source, count, source.needs_images

    def boxes(self, image_ids: Sequence[int], images: Sequence[Any] | None) -> list[PersonBoxes]:
        out = []
        for found in self.source.boxes(image_ids, images):
            if not len(found):
                out.append(found)
                continue
            index = np.arange(self.count) % len(found)
            out.append(PersonBoxes(found.boxes[index], found.scores[index]))
        return out

    def describe(self) -> dict[str, Any]:
        return {**self.source.describe(), "repeated_to": self.count}


def run_topdown_speed(
    settings: SpeedSettings, *, progress: bool = True, write: bool = True, log: Callable[[str], None] | None = None,
) -> TopDownSpeed:
    """Time the top-down model of `settings` (its --model, a crop model, on --person-boxes): the rows of the module
    docstring, written as CSV, JSON and Markdown into settings.out when `write`."""
    import torch

    from kpbench.core.config import settings_dict
    from kpbench.core.environment import capture_environment
    from kpbench.core.io import ensure_output_dir
    from kpbench.core.progress import progress_bar
    from kpbench.data.coco import load_annotations, resolve_coco_root
    from kpbench.engine.device import resolve_device
    from kpbench.engine.postprocess import PostProcessedModel
    from kpbench.engine.speed_inputs import load_images, select_person_images
    from kpbench.engine.speed_table import environment_columns
    from kpbench.engine.timing import time_model
    from kpbench.engine.topdown import build_crop_model, build_source, check_speed_request
    from kpbench.models.base import model_info
    from kpbench.models.registry import check_model_options
    from kpbench.models.topdown import TopDownModel

    if not isinstance(settings.model, str):
        raise KpbenchError("--person-boxes: time one crop model at a time (give one --model)")
    if settings.synthetic:
        raise KpbenchError("--person-boxes: needs real COCO images (their ids find GT or file boxes), not --synthetic")
    request = check_speed_request(settings)
    if request is None:
        raise KpbenchError("top-down speed: needs --person-boxes gt|FILE.json|MODEL")
    spec, weights = check_model_options(settings.model, settings.weights if isinstance(settings.weights, str) else None)
    root = resolve_coco_root(settings.coco_root)
    device = resolve_device(settings.device)
    if write:
        ensure_output_dir(settings.out, "--out")
    gt = load_annotations(root, settings.split)
    crop_model = build_crop_model(spec, {"weights": weights, "seed": settings.seed})
    schema = crop_model.schema
    records = select_person_images(gt, settings.num_images, schema.category_id)
    if len(records) < settings.num_images:
        raise KpbenchError(f"--num-images {settings.num_images}: only {len(records)} images with a person")
    source = build_source(request, schema.category_id, gt, device)
    # One crop-model call per crop row: the largest crop batch is the composite's.
    composite = TopDownModel(crop_model, source, request.selection, flip_test=request.flip_test,
                             flip_space=request.flip_space, padding=request.box_padding,
                             crop_batch_size=max(settings.crop_batch_size), spec=spec.spec)
    post = request.postprocess

    def whole(model: TopDownModel) -> Any:
        """The model an image row times: the top-down model, then its post-processing (rescoring, NMS) if any."""
        return PostProcessedModel(model, post, spec.spec) if post.active else model

    whole(composite)  # refuses what the crop model cannot honour (rescoring logits) before anything is timed
    composite.to(device)
    images, _ = load_images(root, settings.split, records, device, composite)
    ids = [int(r["id"]) for r in records]
    env = capture_environment(device)
    env_cols = environment_columns(env)
    info = model_info(crop_model)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    base = {"timestamp": stamp, **{k: env_cols.get(k) for k in ("device", "device_name", "torch", "cpu", "torch_threads")},
            "model": info.name or spec.spec, "weights": info.weights, "person_boxes": request.person_boxes,
            "person_box_thresh": request.person_box_thresh, "person_box_max": request.person_box_max,
            "flip_test": request.flip_test, "flip_space": request.flip_space if request.flip_test else None,
            "box_padding": request.box_padding, "postprocess": post.describe(),
            "crop_size": f"{composite.crop_size[0]}x{composite.crop_size[1]}",
            "num_images": len(images), "warmup": settings.warmup, "iters": settings.iters}
    rows: list[dict[str, Any]] = []
    plans = len(settings.crop_batch_size) + (1 if source.needs_images else 0) + 1 + len(settings.persons)
    bar = progress_bar(total=plans, disable=not progress, unit="row", file=sys.stderr, desc="top-down speed")

    def timed(row: dict[str, Any], call: Callable[[list[Any]], Any], batches: list[list[Any]], per: dict[str, float]) -> None:
        try:
            timing = time_model(call, batches, device, warmup=settings.warmup, iters=settings.iters)
            stats = timing.stats()
            row.update(cold_ms=timing.cold_ms, **{k: stats[k] for k in ("mean_ms", "std_ms", "median_ms", "p90_ms",
                                                                           "min_ms", "max_ms")})
            for column, divisor in per.items():
                row[column] = stats["mean_ms"] / divisor if divisor else None
            if row.get("ms_per_crop"):
                row["crops_per_s"] = 1000.0 / row["ms_per_crop"]
            row["status"] = "ok"
        except Exception as exc:  # a row that fails says why; the table goes on
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
            if log:
                log(f"top-down {row['kind']}: failed: {row['error']}")
        rows.append(row)
        bar.update(1)

    # Crops, cut once from the timed images' own boxes.
    with torch.inference_mode():
        found = [request.selection.apply(f) for f in source.boxes(ids, images if source.needs_images else None)]
        crops = composite.make_crops(images, ids, found)
    persons = [len(f) for f in found]
    try:
        if not len(crops):
            raise KpbenchError("--person-boxes: no person box on the timed images (lower --person-box-thresh?)")
        for batch_size in settings.crop_batch_size:
            sub = crops.take(np.arange(batch_size) % len(crops))
            passes = 2 if request.flip_test else 1
            timed({**base, "kind": "crop", "crop_batch_size": batch_size},
                  lambda _batch, sub=sub: composite.crop_keypoints(sub), [[None]], {"ms_per_crop": batch_size})
            rows[-1]["ms_per_crop_pass"] = None if rows[-1].get("ms_per_crop") is None else rows[-1]["ms_per_crop"] / passes
        if source.needs_images:
            timed({**base, "kind": "detector"}, lambda batch: source.boxes([0] * len(batch), batch),
                  [[im] for im in images], {"ms_per_image": 1})
        mean_persons = float(np.mean(persons))
        image_model = whole(composite)
        timed({**base, "kind": "image", "persons_per_image": mean_persons},
              lambda batch: image_model.predict(batch[0][1], image_ids=batch[0][0]),
              [[([i], [im])] for i, im in zip(ids, images)], {"ms_per_image": 1, "ms_per_person": mean_persons})
        for count in settings.persons:
            grown = whole(TopDownModel(crop_model, _RepeatedBoxes(source, count), BoxSelection(),
                                       flip_test=request.flip_test, flip_space=request.flip_space,
                                       padding=request.box_padding, crop_batch_size=max(settings.crop_batch_size),
                                       spec=spec.spec))
            with_boxes = [(i, im) for i, im, n in zip(ids, images, persons) if n]
            timed({**base, "kind": "growth", "persons_per_image": count, "crop_batch_size": max(settings.crop_batch_size)},
                  lambda batch, grown=grown: grown.predict(batch[0][1], image_ids=batch[0][0]),
                  [[([i], [im])] for i, im in with_boxes], {"ms_per_image": 1, "ms_per_person": count})
    except KeyboardInterrupt:
        if log:
            log("interrupted: the finished top-down rows are kept")
    finally:
        bar.close()
    manifest = {"kind": "kpbench-speed-topdown", "version": 1, "created": stamp, "settings": settings_dict(settings),
                "environment": env, "model": info.to_json(), "top_down": composite.describe(),
                "postprocess": post.to_json(),
                "images": {"image_ids": ids, "persons": persons}, "definition": __doc__, "columns": list(TOPDOWN_COLUMNS)}
    result = TopDownSpeed(rows=rows, manifest=manifest)
    if write:
        _write(settings.out, result, str(env.get("device_name") or device.type))
    return result


def _write(out_dir: str | Path, result: TopDownSpeed, device_name: str) -> None:
    from kpbench.core.environment import device_slug
    from kpbench.core.io import atomic_write_files, json_text, to_csv

    out = Path(out_dir)
    stem = f"{device_slug(device_name)}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-topdown"
    n = 1
    while any((out / f"{stem}{ext}").exists() for ext in (".csv", ".json", ".md")):
        n += 1
        stem = f"{stem.rsplit('-topdown', 1)[0]}-topdown-{n}"
    result.csv_path, result.manifest_path, result.markdown_path = (out / f"{stem}{e}" for e in (".csv", ".json", ".md"))
    atomic_write_files({
        result.csv_path: to_csv(result.rows, [*TOPDOWN_COLUMNS, "ms_per_crop_pass"]),
        result.manifest_path: json_text(result.manifest),
        result.markdown_path: topdown_markdown(result),
    })


def settings_line(result: TopDownSpeed) -> str:
    """Which protocol and box source the rows come from, and how they were cropped and post-processed, in one line:
    "top-down on GT boxes (gt), crops 48x64, padding 1.25, flip test off, post-processing none"."""
    from kpbench.engine.postprocess import PostProcessSettings

    m = result.manifest
    td = m["top_down"]
    source = td["person_boxes"]
    return (f"top-down on {source.get('protocol', '?')} ({source.get('spec', '?')}), crops {td['crop_size'][0]}x"
            f"{td['crop_size'][1]}, padding {td['padding']:g}, flip test "
            f"{'on (' + str(td['flip_space']) + ')' if td['flip_test'] else 'off'}, post-processing "
            f"{PostProcessSettings(**m.get('postprocess', {})).describe()} (in the image and growth rows)")


def topdown_markdown(result: TopDownSpeed) -> str:
    """The definition, what was timed and the table."""
    from kpbench.core.io import to_markdown

    m = result.manifest
    head = (f"# Top-down speed: {m['model'].get('name')} on {m['top_down']['person_boxes'].get('spec')} boxes\n\n"
            f"Device {m['environment'].get('device_name')}; {settings_line(result)}.\n\n")
    return head + to_markdown(result.rows, SUMMARY) + "\n\n## Definition\n\n" + (__doc__ or "")


def terminal_table(result: TopDownSpeed) -> str:
    """The settings line (protocol, box source, crops, post-processing), then the summary columns as a plain-text
    table."""
    from kpbench.core.io import to_text_table

    return settings_line(result) + "\n" + to_text_table(result.rows, SUMMARY)
