"""COCO-WholeBody (Jin et al., "Whole-Body Human Pose Estimation in the Wild", ECCV 2020): one results file scored
by part, as xtcocotools' iouTypes "keypoints_body" ... "keypoints_wholebody" score it.

A WholeBody GT annotation holds its body `keypoints` (COCO's 17) and `foot_kpts` (6), `face_kpts` (68),
`lefthand_kpts` (21), `righthand_kpts` (21); a result holds the same fields. Each part is a COCOeval of its own:

- the part's keypoints, with the part's slice of WholeBody's 133 sigmas;
- a GT instance counts when it has a labelled keypoint in that part (xtcocotools counts v > 0 in the part, not
  `num_keypoints`); the OKS scale is the GT's `area` (use_area=True);
- results ranked by the part's score field (`foot_score`, ..., `wholebody_score`) when present, else `score`;
- a result's area (which decides, for unmatched results, the medium and large ranges) is the extent of its body
  keypoints, as loadRes computes it from `keypoints` whatever the part;
- a result whose keypoint scores in the part are all 0 (none above 0) is left out of that part's evaluation:
  xtcocotools' COCOeval `_prepare` skips such detections for every keypoint iouType (`if k == 0: continue`), and
  xtcocotools is COCO-WholeBody's reference evaluation. A model that gives no hands, say, as zeros is then not
  scored with false positives for them. Each part's notes say how many results the rule left out.

"wholebody" concatenates the five parts in that order (133 keypoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.core.io import read_json
from kpbench.core.schema import COCO17, KeypointSchema

# COCO-WholeBody's 133 sigmas, as its evaluation script and mmpose's coco_wholebody.py list them.
WHOLEBODY_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087,
    0.089, 0.089, 0.068, 0.066, 0.066, 0.092, 0.094, 0.094, 0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031,
    0.025, 0.020, 0.023, 0.029, 0.032, 0.037, 0.038, 0.043, 0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012,
    0.012, 0.011, 0.011, 0.013, 0.015, 0.009, 0.007, 0.007, 0.007, 0.012, 0.009, 0.008, 0.016, 0.010, 0.017,
    0.011, 0.009, 0.011, 0.009, 0.007, 0.013, 0.008, 0.011, 0.012, 0.010, 0.034, 0.008, 0.008, 0.009, 0.008,
    0.008, 0.007, 0.010, 0.008, 0.009, 0.009, 0.009, 0.007, 0.007, 0.008, 0.011, 0.008, 0.008, 0.008, 0.01,
    0.008, 0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017,
    0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031, 0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024,
    0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031,
)  # fmt: skip


@dataclass(frozen=True)
class Part:
    """One part of the whole body: its fields in GT and results, its score field and its slice of the 133."""

    name: str
    field: str
    score_field: str
    start: int
    stop: int


_BODY = COCO17.num_keypoints  # WholeBody's body part is COCO's keypoint set, first in its 133
PARTS: tuple[Part, ...] = (
    Part("body", "keypoints", "score", 0, _BODY),
    Part("foot", "foot_kpts", "foot_score", _BODY, 23),
    Part("face", "face_kpts", "face_score", 23, 91),
    Part("lefthand", "lefthand_kpts", "lefthand_score", 91, 112),
    Part("righthand", "righthand_kpts", "righthand_score", 112, 133),
)
WHOLEBODY = Part("wholebody", "", "wholebody_score", 0, 133)
PART_FIELDS = tuple(p.field for p in PARTS)


def _hand_names(side: str) -> list[str]:
    fingers = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
    return [f"{side}_hand_root"] + [f"{side}_{finger}{i}" for finger in fingers for i in range(1, 5)]


WHOLEBODY_NAMES: tuple[str, ...] = (
    *COCO17.keypoint_names,
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    *(f"face_{i}" for i in range(68)), *_hand_names("left"), *_hand_names("right"),
)  # fmt: skip


def part_schema(part: Part) -> KeypointSchema:
    """The keypoint schema of one part (its names and sigmas; the body keeps COCO's skeleton)."""
    names = WHOLEBODY_NAMES[part.start:part.stop]
    skeleton = COCO17.skeleton if part.name in ("body", "wholebody") else ()
    return KeypointSchema(
        name=f"coco_wholebody_{part.name}", keypoint_names=names, skeleton=skeleton,
        sigmas=WHOLEBODY_SIGMAS[part.start:part.stop], sigmas_source="COCO-WholeBody evaluation (133 sigmas)",
    )  # fmt: skip


def is_wholebody(gt: dict[str, Any]) -> bool:
    """Whether a parsed GT is COCO-WholeBody's: its annotations carry every part field."""
    annotations = gt.get("annotations") if isinstance(gt, dict) else None
    return bool(annotations) and all(
        isinstance(a, dict) and all(f in a for f in PART_FIELDS) for a in annotations[:1]
    )


def _part_values(record: dict[str, Any], part: Part, where: str) -> list[Any]:
    fields = PART_FIELDS if part is WHOLEBODY else (part.field,)
    values: list[Any] = []
    for name in fields:
        value = record.get(name)
        if not isinstance(value, list):
            raise KpbenchError(f"{where}: no '{name}' list (COCO-WholeBody records hold every part)")
        values += value
    return values


def _body_extent(keypoints: list[Any]) -> list[float]:
    """The box loadRes would derive from a result's body `keypoints`: [x0, y0, x1 - x0, y1 - y0]."""
    arr = np.asarray(keypoints, dtype=np.float64)
    x, y = arr[0::3], arr[1::3]
    x0, x1, y0, y1 = np.min(x), np.max(x), np.min(y), np.max(y)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def part_inputs(
    gt: dict[str, Any], results: list[dict[str, Any]], part: Part, source: tuple[str, str],
    drop_zero: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The GT and results of one part, as a plain COCO keypoint evaluation takes them; with `drop_zero`, without
    the results whose part keypoint scores are all <= 0 (xtcocotools' rule, see the module docstring)."""
    annotations = []
    for i, ann in enumerate(gt["annotations"]):
        values = _part_values(ann, part, f"{source[0]}: annotation {i}")
        annotations.append({
            **{k: v for k, v in ann.items() if k not in PART_FIELDS}, "keypoints": values,
            "num_keypoints": int(np.count_nonzero(np.asarray(values[2::3], dtype=np.float64) > 0)),
        })  # fmt: skip
    categories = [{**c, "keypoints": list(WHOLEBODY_NAMES[part.start:part.stop]), "skeleton": []}
                  for c in gt["categories"]]
    records = []
    for i, res in enumerate(results):
        values = _part_values(res, part, f"{source[1]}: result {i}")
        body = res.get("keypoints")
        record = {
            "image_id": res.get("image_id"), "category_id": res.get("category_id"), "keypoints": values,
            "score": res.get(part.score_field, res.get("score")),
        }  # fmt: skip
        if isinstance(body, list) and body:
            # The area pycocotools' loadRes takes from the body keypoints, given as the box it would derive.
            record["bbox"] = _body_extent(body)
        if drop_zero and _all_scores_zero(values):
            continue
        records.append(record)
    return {**gt, "annotations": annotations, "categories": categories}, records


def _all_scores_zero(values: list[Any]) -> bool:
    """xtcocotools' test (`is_zero_keypoint_result`, the rule CrowdPose's protocol follows too) on a part's values,
    which are not checked yet: non-numbers are left to the checks."""
    from kpbench.evaluation.cocofiles import is_zero_keypoint_result

    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values[2::3])
    return numbers and is_zero_keypoint_result(values)


def zero_part_note(part: str, dropped: int) -> str:
    """What a part's evaluation says about xtcocotools' all-zero rule."""
    return (f"{part}: {dropped} result(s) with every {part} keypoint score at 0 left out of this part, as "
            "xtcocotools' COCOeval leaves them out (COCO-WholeBody's reference evaluation)")


def evaluate_wholebody(
    gt: str | Path | dict[str, Any],
    results: str | Path | Sequence[dict[str, Any]],
    backend: str = "vectorized",
    parts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """{"keypoints_body": EvalResult, ..., "keypoints_wholebody": EvalResult} for one WholeBody results file.

    Each part follows xtcocotools' rules (module docstring), its all-zero rule included: a result whose keypoint
    scores in the part are all 0 is left out of that part, and the part's notes say how many."""
    import warnings

    from kpbench.core.errors import KpbenchWarning
    from kpbench.evaluation.cocoeval import evaluate

    sources = (str(gt) if isinstance(gt, (str, Path)) else "ground truth",
               str(results) if isinstance(results, (str, Path)) else "results")
    gt_data = read_json(gt) if isinstance(gt, (str, Path)) else gt
    res_data = read_json(results) if isinstance(results, (str, Path)) else list(results)
    if not is_wholebody(gt_data):
        raise KpbenchError(f"{sources[0]}: not a COCO-WholeBody ground truth (annotations need {', '.join(PART_FIELDS)})")
    if not isinstance(res_data, list):
        raise KpbenchError(f"{sources[1]}: results must be a JSON list of detections, got {type(res_data).__name__}")
    wanted = [*PARTS, WHOLEBODY] if parts is None else [p for p in (*PARTS, WHOLEBODY) if p.name in parts]
    out = {}
    for part in wanted:
        part_gt, part_res = part_inputs(gt_data, res_data, part, sources, drop_zero=True)
        with warnings.catch_warnings():
            # Each result carries the box loadRes would derive from its body keypoints (see the module docs);
            # kpbench's warning about keypoint results with a 'bbox' does not apply.
            warnings.filterwarnings("ignore", message=".*keypoint results carry a 'bbox'", category=KpbenchWarning)
            result = evaluate(part_gt, part_res, backend=backend, schema=part_schema(part))
        scored_by = part.score_field if part_res and all(part.score_field in r for r in res_data) else "score"
        # The all-zero results are left out here, so pycocotools' note about counting them does not apply.
        result.notes = [n for n in result.notes if "carry a 'bbox'" not in n and "every keypoint score at 0" not in n]
        result.notes.append(f"{part.name}: {part.stop - part.start} keypoints, ranked by '{scored_by}'")
        result.notes.append(zero_part_note(part.name, len(res_data) - len(part_res)))
        out[f"keypoints_{part.name}"] = result
    return out
