"""The person-box source's own box AP in a top-down run: the boxes each image was cropped from (the run directory's
person-box record, ``person_boxes.bin``, read as arrays by `kpbench.runs.person_boxes`; after the source's threshold
and maximum, with the source's scores), scored by COCOeval (bbox) against the run's ground truth, and recorded in the
manifest under ``"person_boxes"`` beside the keypoint AP.

The run's own box AP (`metrics.json`'s "bbox") scores the boxes of the final detections, whose scores are the
rescored ones and which NMS may have removed; this one scores the detector (or file) itself, the number a
top-down paper quotes beside its keypoint AP (e.g. 56.4 for `COCO_val2017_detections_AP_H_56_person.json`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError
from kpbench.runs.directory import ground_truth_path, read_manifest, write_manifest

if TYPE_CHECKING:
    from kpbench.core.arrays import DetectionArrays
    from kpbench.evaluation.cocoeval import EvalResult


def top_down_facts(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """A run's top-down settings from its manifest (the model's protocol), or None for a whole-image model."""
    protocol = ((manifest.get("model") or {}).get("extra") or {}).get("protocol")
    return protocol.get("top_down") if isinstance(protocol, dict) else None


def person_box_arrays(run_dir: str | Path, image_ids: list[int], category_id: int) -> DetectionArrays:
    """The recorded boxes of `image_ids` as COCO box results in arrays (xywh, computed as the run's bbox results are:
    ``[x1, y1, x2 - x1, y2 - y1]`` in float64), ascending image-id order; a KpbenchError when an image has no
    record."""
    import numpy as np

    from kpbench.core.arrays import DetectionArrays
    from kpbench.runs.person_boxes import read_person_boxes

    record = read_person_boxes(run_dir)
    wanted = np.unique(np.asarray(image_ids, dtype=np.int64))
    missing = wanted[~np.isin(wanted, record.image_ids)]
    if len(missing):
        raise KpbenchError(f"{run_dir}: the person-box record (person_boxes.bin) has no boxes for {len(missing)} of "
                           f"{len(wanted)} images (first: {int(missing[0])}); re-run with --overwrite to record them")
    chosen = record.select(wanted.tolist())
    counts = np.diff(chosen.starts)
    xyxy = chosen.boxes
    xywh = np.stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], axis=1)
    n = len(chosen.scores)
    return DetectionArrays(image_ids=np.repeat(chosen.image_ids, counts),
                           category_ids=np.full(n, category_id, dtype=np.int64), scores=chosen.scores.copy(),
                           boxes=xywh.reshape(n, 4))


def evaluate_person_boxes(run_dir: str | Path, backend: str = "pycocotools") -> tuple[EvalResult, int] | None:
    """COCOeval (bbox) of a top-down run's person boxes and their count; None for a run of a whole-image model."""
    from kpbench.evaluation.cocoeval import evaluate

    manifest = read_manifest(run_dir)
    if top_down_facts(manifest) is None:
        return None
    category = int((manifest.get("schema") or {}).get("category_id", 1))
    boxes = person_box_arrays(run_dir, [int(i) for i in manifest.get("image_ids", [])], category)
    return evaluate(str(ground_truth_path(run_dir)), boxes, iou_type="bbox", backend=backend), len(boxes)


def record_person_box_stats(run_dir: str | Path, backend: str = "pycocotools") -> dict[str, Any] | None:
    """Score a top-down run's person boxes and record the result in its manifest (``"person_boxes"``: the source,
    its selection, the box count and the stats); returns that record, or None for a whole-image model."""
    scored = evaluate_person_boxes(run_dir, backend)
    if scored is None:
        return None
    result, count = scored
    manifest = read_manifest(run_dir)
    facts = top_down_facts(manifest) or {}
    record = {
        "source": facts.get("person_boxes"),
        "selection": facts.get("selection"),
        "num_boxes": count,
        "stats": {name: float(value) for name, value in result.stats.items()},
        "notes": list(result.notes),
    }
    manifest["person_boxes"] = record
    write_manifest(run_dir, manifest)
    return record


def person_box_line(manifest: dict[str, Any]) -> str | None:
    """The summary's line on the person boxes of a top-down run ("person boxes: ... box AP 56.4"), or None."""
    facts = top_down_facts(manifest)
    if facts is None:
        return None
    source = facts.get("person_boxes") or {}
    selection = facts.get("selection") or {}
    cap = selection.get("max_per_image")
    flip = f", flip test ({facts.get('flip_space')})" if facts.get("flip_test") else ", no flip test"
    post = ((manifest.get("model") or {}).get("extra") or {}).get("postprocess") or {}
    line = (f"top-down on {source.get('protocol', '?')}: person boxes {source.get('spec', '?')} (score >= "
            f"{selection.get('score_threshold', 0):g}, {'all' if cap is None else f'at most {cap}'} per image), crops "
            f"{facts.get('crop_size', ['?', '?'])[0]}x{facts.get('crop_size', ['?', '?'])[1]}, padding "
            f"{facts.get('padding')}{flip}, rescore {post.get('rescore', 'none')}, NMS {post.get('nms', 'none')}")
    if facts.get("pixel_convention"):  # recorded since the crop model's convention became a field
        line += (f", {facts['pixel_convention']} pixel convention, {facts.get('heatmap_refinement', '?')} heatmap "
                 "decoding")
    if post.get("nms_area"):
        line += f" (OKS areas: {post['nms_area']})"
    stats = (manifest.get("person_boxes") or {}).get("stats")
    if stats:
        line += f"\n  person boxes' own box AP {100 * stats['AP']:.1f} (AP50 {100 * stats['AP50']:.1f})"
    return line


def protocol_label(manifest: dict[str, Any]) -> str:
    """Which protocol a run's numbers come from, in a few words: "whole image", "top-down, GT boxes" or "top-down,
    detector boxes (SPEC)" (tables and the HTML page show it beside the numbers)."""
    facts = top_down_facts(manifest)
    if facts is None:
        return "whole image"
    source = facts.get("person_boxes") or {}
    if source.get("kind") == "gt":
        return "top-down, GT boxes"
    spec = str(source.get("spec", "?"))
    return f"top-down, {source.get('protocol', 'detector boxes')} ({Path(spec).name if source.get('kind') == 'file' else spec})"
