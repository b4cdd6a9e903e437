"""CrowdPose's evaluation protocol (Li et al., "CrowdPose: Efficient Crowded Scenes Pose Estimation and a New
Benchmark", CVPR 2019), as xtcocotools' iouType "keypoints_crowd" computes it.

- OKS with CrowdPose's 14 sigmas; the scale is the GT's area, or, as CrowdPose's files have none, its box
  w * h * 0.53 (filled in when the GT is checked, see `kpbench.evaluation.cocofiles`).
- AP, AP50, AP75, AR, AR50, AR75: COCOeval's keypoint stats at maxDets 20 over every image.
- AP easy / medium / hard: the images are split by their `crowdIndex` (easy < 0.2 <= medium < 0.8 <= hard) and
  each subset is evaluated on its own. Its number is the mean of COCOeval's whole precision array at area "all"
  (every OKS threshold, recall point and maxDet, COCO's -1 "no GT" entries included, as the reference does),
  rounded to 4 decimals as the reference rounds it. An empty subset gives -1.
- Results whose keypoint scores are all 0 (none above 0) are left out, before everything above: xtcocotools'
  COCOeval `_prepare` skips such detections for keypoints_crowd as for its other keypoint iouTypes (`if k == 0:
  continue`), so they are neither false positives nor among an image's top 20. The rule is the one COCO-WholeBody's
  parts follow (`kpbench.evaluation.cocofiles.is_zero_keypoint_result`); a note says how many it left out.
"""

from __future__ import annotations

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.schema import CROWDPOSE14
from kpbench.evaluation.backends import BackendOutput, EvalInputs
from kpbench.evaluation.cocofiles import GroundTruth

CROWD_STAT_NAMES: tuple[str, ...] = CROWDPOSE14.stat_names
# crowdIndex bounds of the easy / medium / hard split (CrowdPose's evaluation script).
CROWD_SPLIT = (0.2, 0.8)
# The stats of COCOeval's 10 keypoint stats that CrowdPose reports (area ranges are not used there).
_COCO_STAT_INDEX = (0, 1, 2, 5, 6, 7)
# Why the results with every keypoint score at 0 are left out (the note's reason; module docstring).
ZERO_KEYPOINT_RULE = "as xtcocotools' keypoints_crowd evaluation (CrowdPose's reference) leaves them out"


def crowd_levels(gt: GroundTruth) -> dict[str, list[int]]:
    """{"easy": ids, "medium": ids, "hard": ids} by each image's crowdIndex; a KpbenchError names an image without one."""
    levels: dict[str, list[int]] = {"easy": [], "medium": [], "hard": []}
    low, high = CROWD_SPLIT
    for i, image in enumerate(gt.dataset["images"]):
        index = image.get("crowdIndex")
        if not isinstance(index, (int, float)) or isinstance(index, bool) or not np.isfinite(index):
            raise KpbenchError(
                f"{gt.source}: image {i} (id {image['id']}) has no numeric 'crowdIndex'; CrowdPose's AP easy/medium/"
                "hard split the images by it"
            )
        levels["easy" if index < low else "medium" if index < high else "hard"].append(image["id"])
    return levels


def _subset(inputs: EvalInputs, image_ids: list[int]) -> EvalInputs:
    """The inputs restricted to some images (the GT's images and annotations, and the results on them)."""
    wanted = set(image_ids)
    if inputs.gt_arrays is not None or inputs.detections is not None:
        gt = inputs.ground_truth_arrays().only_images(image_ids)
        detections = inputs.detection_arrays()
        keep = np.isin(detections.image_ids, np.asarray(image_ids, dtype=np.int64))
        areas = None if inputs.detection_areas is None else inputs.detection_areas[keep]
        return EvalInputs(inputs.iou_type, inputs.num_keypoints, gt_arrays=gt, gt_source=inputs.gt_source,
                          detections=detections.take(keep), detection_areas=areas)
    dataset = inputs.dataset()
    subset = {
        **dataset,
        "images": [im for im in dataset["images"] if im["id"] in wanted],
        "annotations": [dict(a) for a in dataset["annotations"] if a["image_id"] in wanted],
    }
    records = [r for r in inputs.result_records() if r["image_id"] in wanted]
    return EvalInputs(inputs.iou_type, inputs.num_keypoints, gt_dataset=subset, gt_source=inputs.gt_source,
                      records=records)


def crowd_stats(
    gt: GroundTruth, inputs: EvalInputs, backend_name: str = "vectorized"
) -> tuple[dict[str, float], BackendOutput, list[str]]:
    """The 9 CrowdPose stats, the backend's COCOeval over all images, and notes."""
    from kpbench.evaluation.backends import get_backend

    schema = gt.schema
    if schema is None:
        raise KpbenchError(f"{gt.source}: CrowdPose evaluation needs the keypoint schema")
    backend = get_backend(backend_name)
    levels = crowd_levels(gt)
    if backend_name == "vectorized":
        inputs.ground_truth_arrays()  # prepared once, shared by the subsets
    output = backend.run(inputs, schema.sigma_array)
    assert output.stats is not None  # COCO's parameters: the backend's summarize() ran
    stats = {name: float(output.stats[i]) for name, i in zip(CROWD_STAT_NAMES, _COCO_STAT_INDEX)}
    for level, ids in levels.items():
        if not ids:
            stats[f"AP_{level}"] = -1.0
            continue
        sub = backend.run(_subset(inputs, ids), schema.sigma_array)
        stats[f"AP_{level}"] = round(float(np.mean(sub.precision[:, :, :, 0, :])), 4)
    notes = [f"CrowdPose protocol: AP easy/medium/hard over {len(levels['easy'])}/{len(levels['medium'])}/"
             f"{len(levels['hard'])} images by crowdIndex (< {CROWD_SPLIT[0]}, < {CROWD_SPLIT[1]}, the rest)"]
    return {name: stats[name] for name in CROWD_STAT_NAMES}, output, notes
