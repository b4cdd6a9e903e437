"""COCOeval's parameters as settings: maxDets, area ranges, IoU/OKS thresholds and useCats, with COCO's defaults.

pycocotools' summarize() hard-codes its numbers: maxDets 20 for keypoints (100 for boxes), the area labels
"small"/"medium"/"large" and the thresholds 0.5 and 0.75. With other settings its stats would silently read -1, so
kpbench then computes the summary itself from the accumulated arrays, exactly as summarize() averages them, at the
largest maxDet and with one AP/AR per area range. With the defaults the backend's own stats are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError

_COCO_IOU_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
_AREA_SUFFIX = {"small": "s", "medium": "m", "large": "l"}


@dataclass(frozen=True)
class EvalSettings:
    """COCOeval parameters; None means COCO's default for the iou type."""

    max_dets: tuple[int, ...] | None = None
    area_ranges: tuple[tuple[str, float, float], ...] | None = None  # (label, lo, hi); the first one is "all"
    iou_thresholds: tuple[float, ...] | None = None
    use_cats: bool = True

    def is_default(self) -> bool:
        """Whether every parameter is COCO's."""
        return self.max_dets is None and self.area_ranges is None and self.iou_thresholds is None and self.use_cats

    def to_json(self) -> dict[str, Any]:
        """What a metrics file records."""
        return {
            "max_dets": list(self.max_dets) if self.max_dets is not None else None,
            "area_ranges": [list(r) for r in self.area_ranges] if self.area_ranges is not None else None,
            "iou_thresholds": list(self.iou_thresholds) if self.iou_thresholds is not None else None,
            "use_cats": self.use_cats,
        }

    def apply(self, params: Any) -> None:
        """Set these parameters on a pycocotools or hotcoco Params object."""
        if self.max_dets is not None:
            params.maxDets = list(self.max_dets)
        if self.area_ranges is not None:
            params.areaRng = [[lo, hi] for _, lo, hi in self.area_ranges]
            params.areaRngLbl = [label for label, _, _ in self.area_ranges]
        if self.iou_thresholds is not None:
            params.iouThrs = np.asarray(self.iou_thresholds, dtype=np.float64)
        if not self.use_cats:
            params.useCats = 0


DEFAULT_SETTINGS = EvalSettings()


def _numbers(text: str, option: str, kind: type) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise KpbenchError(f"{option}: not a comma-separated list of {kind.__name__}s: {text!r}") from None
    if not values:
        raise KpbenchError(f"{option}: empty list")
    return values


def parse_max_dets(text: str) -> tuple[int, ...]:
    """"20" or "1,10,100": positive integers, ascending."""
    values = _numbers(text, "--max-dets", int)
    if any(v < 1 for v in values) or sorted(set(values)) != values:
        raise KpbenchError(f"--max-dets: positive integers in ascending order, got {text!r}")
    return tuple(values)


def parse_iou_thresholds(text: str) -> tuple[float, ...]:
    """"0.5,0.75" or "0.5:0.95:0.05" (COCO's ten): thresholds in [0, 1], ascending."""
    if text.count(":") == 2:
        lo, hi, step = _numbers(text.replace(":", ","), "--iou-thresholds", float)
        if step <= 0 or hi < lo:
            raise KpbenchError(f"--iou-thresholds: LO:HI:STEP needs STEP > 0 and HI >= LO, got {text!r}")
        # As COCOeval builds its own (np.linspace, never np.arange, whose points drift above the true values).
        values = [float(v) for v in np.linspace(lo, hi, int(np.round((hi - lo) / step)) + 1, endpoint=True)]
    else:
        values = _numbers(text, "--iou-thresholds", float)
    if any(not (0.0 <= v <= 1.0) or math.isnan(v) for v in values) or sorted(set(values)) != values:
        raise KpbenchError(f"--iou-thresholds: values in [0, 1] in ascending order, got {text!r}")
    return tuple(values)


def parse_area_ranges(text: str) -> tuple[tuple[str, float, float], ...]:
    """"all:0:1e10,medium:1024:9216,large:9216:1e10": label:lo:hi in pixels²; the first must be "all"."""
    ranges = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        parts = item.split(":")
        if len(parts) != 3:
            raise KpbenchError(f"--area-ranges: each range is LABEL:LO:HI, got {item!r}")
        try:
            lo, hi = float(parts[1]), float(parts[2])
        except ValueError:
            raise KpbenchError(f"--area-ranges: LO and HI must be numbers, got {item!r}") from None
        if not (0 <= lo <= hi):
            raise KpbenchError(f"--area-ranges: needs 0 <= LO <= HI, got {item!r}")
        ranges.append((parts[0], lo, hi))
    if not ranges or ranges[0][0] != "all":
        raise KpbenchError("--area-ranges: the first range must be labelled 'all' (COCOeval's headline range)")
    if len({r[0] for r in ranges}) != len(ranges):
        raise KpbenchError("--area-ranges: labels must differ")
    return tuple(ranges)


def _mean_valid(values: np.ndarray) -> float:
    """summarize()'s mean over the entries that are not -1 (no GT), or -1 when none is."""
    valid = values[values > -1]
    return -1.0 if valid.size == 0 else float(np.mean(valid))


def summarize(
    precision: np.ndarray, recall: np.ndarray, iou_thresholds: Sequence[float], area_labels: Sequence[str],
    max_dets: Sequence[int], iou_type: str,
) -> dict[str, float]:
    """The summary stats of accumulated COCOeval arrays, as pycocotools' summarize() computes them, at the largest
    maxDet (boxes: AR at every maxDet too), for every area range. With COCO's parameters the names and values are
    pycocotools' own (AP, AP50, AP75, APm, APl, AR, ... for keypoints)."""
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    m = len(max_dets) - 1
    area_all = list(area_labels).index("all") if "all" in area_labels else 0

    def ap(t: float | None = None, a: int = area_all, mi: int = m) -> float:
        s = precision if t is None else precision[np.where(t == thresholds)[0]]
        return _mean_valid(s[:, :, :, a, mi])

    def ar(t: float | None = None, a: int = area_all, mi: int = m) -> float:
        s = recall if t is None else recall[np.where(t == thresholds)[0]]
        return _mean_valid(s[:, :, a, mi])

    areas = [(i, _AREA_SUFFIX.get(label, f"_{label}")) for i, label in enumerate(area_labels) if i != area_all]
    if iou_type == "bbox":
        # COCO's boxes leave out nothing; small boxes have their own range there.
        stats = {"AP": ap(), "AP50": ap(0.5), "AP75": ap(0.75)}
        stats.update({f"AP{suffix}": ap(a=i) for i, suffix in areas})
        stats.update({f"AR{d}": ar(mi=j) for j, d in enumerate(max_dets)})
        stats.update({f"AR{suffix}": ar(a=i) for i, suffix in areas})
        return stats
    stats = {"AP": ap(), "AP50": ap(0.5), "AP75": ap(0.75)}
    stats.update({f"AP{suffix}": ap(a=i) for i, suffix in areas})
    stats.update({"AR": ar(), "AR50": ar(0.5), "AR75": ar(0.75)})
    stats.update({f"AR{suffix}": ar(a=i) for i, suffix in areas})
    return stats


def settings_notes(settings: EvalSettings, iou_type: str) -> list[str]:
    """What a user should know about non-default settings."""
    notes = []
    hard_coded = 20 if iou_type == "keypoints" else 100
    if settings.max_dets is not None and settings.max_dets[-1] != hard_coded:
        what = "every keypoint stat" if iou_type == "keypoints" else "box AP"
        then = ("would report -1" if hard_coded not in settings.max_dets
                else f"would report them at {hard_coded}")
        notes.append(f"maxDets {list(settings.max_dets)}: pycocotools' summarize() reads {what} at a hard-coded "
                     f"{hard_coded} and {then}; the stats here are computed at the largest, maxDets {settings.max_dets[-1]}")
    if settings.iou_thresholds is not None:
        missing = [t for t in (0.5, 0.75) if t not in settings.iou_thresholds]
        if missing:
            notes.append(f"IoU/OKS thresholds {list(settings.iou_thresholds)} hold no {missing}: "
                         f"AP/AR at {', '.join(map(str, missing))} are -1")
    return notes


def same_as_coco(settings: EvalSettings, iou_type: str) -> bool:
    """Whether `settings` are COCO's for `iou_type` even when spelled out (then the backend's own stats hold)."""
    if not settings.use_cats:
        return False
    coco_max = (20,) if iou_type == "keypoints" else (1, 10, 100)
    if settings.max_dets is not None and settings.max_dets != coco_max:
        return False
    if settings.iou_thresholds is not None and settings.iou_thresholds != _COCO_IOU_THRESHOLDS:
        return False
    return settings.area_ranges is None
