"""A GT with several keypoint categories that list different keypoint sets (persons and hands, say): each category is
scored with its own schema, and the categories are summarized together as COCOeval summarizes categories.

COCOeval keeps one `kpt_oks_sigmas` for every category, so it cannot score two keypoint sets in one run. Here each
keypoint category is evaluated on its own (its annotations and results, every image of the GT, its schema's
sigmas); the per-category precision and recall arrays, which COCOeval computes independently per category anyway,
are stacked along the category axis and summarized as `summarize()` does (the mean over the cells that are not -1).
With one keypoint set this equals a plain multi-category COCOeval (tested).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.io import read_json


def evaluate_per_category(
    gt: str | Path | dict[str, Any], results: str | Path | list[dict[str, Any]], backend: str = "pycocotools",
    settings: Any = None, drop_zero_keypoint_results: bool = False,
) -> Any:
    """One EvalResult for a GT of several keypoint sets: each keypoint category scored with its own schema."""
    import dataclasses

    from kpbench.evaluation.cocoeval import EvalResult, evaluate
    from kpbench.evaluation.settings import DEFAULT_SETTINGS, summarize

    gt_source = str(gt) if isinstance(gt, (str, Path)) else "ground truth"
    res_source = str(results) if isinstance(results, (str, Path)) else "results"
    gt_data = read_json(gt) if isinstance(gt, (str, Path)) else gt
    records = read_json(results) if isinstance(results, (str, Path)) else results
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise KpbenchError(f"{res_source}: results must be a JSON list of detection objects")
    categories = gt_data["categories"]
    used = {a.get("category_id") for a in gt_data["annotations"] if isinstance(a, dict) and "keypoints" in a}
    keypoint_cats = [c for c in categories if c["id"] in used or c.get("keypoints")]
    known = {c["id"] for c in categories}
    for i, r in enumerate(records):
        if r.get("category_id") not in known:
            raise KpbenchError(f"{res_source}: result {i}: category_id {r.get('category_id')!r} is not in the ground "
                               f"truth ({gt_source})")
    parts = []
    for cat in keypoint_cats:
        sub_gt = {**gt_data, "categories": [cat],
                  "annotations": [a for a in gt_data["annotations"] if a.get("category_id") == cat["id"]]}
        sub_res = [r for r in records if r.get("category_id") == cat["id"]]
        result = evaluate(sub_gt, sub_res, backend=backend, settings=settings,
                          drop_zero_keypoint_results=drop_zero_keypoint_results)
        result.notes = [n.replace("ground truth:", f"{gt_source} (category {cat['id']}):")
                        .replace("results:", f"{res_source} (category {cat['id']}):") for n in result.notes]
        parts.append(result)
    first = parts[0]
    precision = np.concatenate([r.precision for r in parts], axis=2)
    recall = np.concatenate([r.recall for r in parts], axis=1)
    scores = np.concatenate([r.scores for r in parts], axis=2)
    p = first.params
    stats = summarize(precision, recall, list(p.iou_thresholds), list(p.area_labels), list(p.max_dets), "keypoints")
    evals = None if any(r.image_evals is None for r in parts) else [e for r in parts for e in r.image_evals]
    schemas = ", ".join(f"category {c['id']}: {r.schema.name}" for c, r in zip(keypoint_cats, parts))  # type: ignore[union-attr]
    notes = list(dict.fromkeys([n for r in parts for n in r.notes]))
    notes.append(f"several keypoint sets, each scored with its own schema ({schemas}), summarized together")
    return EvalResult(
        iou_type="keypoints", backend=first.backend, stats=stats, precision=precision, recall=recall, scores=scores,
        params=dataclasses.replace(p, category_ids=[c["id"] for c in keypoint_cats]),
        image_evals=evals, num_images=first.num_images, num_gt=sum(r.num_gt for r in parts),
        num_results=sum(r.num_results for r in parts), notes=notes, result_scores=None, result_has_bbox=None,
        schema=None, settings=settings or DEFAULT_SETTINGS,
    )  # fmt: skip
