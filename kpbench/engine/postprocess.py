"""Model-agnostic post-processing of each image's detections: rescoring, OKS-NMS and soft-OKS-NMS, for any model
(top-down or bottom-up), between the model and the detection store.

**Where it runs.** `PostProcessedModel` wraps a PoseModel: its `predict` is the model's, then each image's
Predictions are post-processed on the host. So the store records the **processed** detections (the ones scored),
a resumed run replays the same calls and stays byte-identical, and the time of a call includes the
post-processing, as a model's own NMS would be. The parameters are recorded in the manifest (the run's config and
the model's `extra["postprocess"]`).

**Rescoring** (`keypoint-mean`, the top-down protocol of Xiao et al. 2018 and Sun et al. 2019): a person's score
becomes its box score times the mean of its keypoint scores above `rescore_thresh` (0.2), or 0 when none is above.
Keypoint scores must be probabilities (a threshold of 0.2 on logits means nothing, so logits are refused).

**OKS between two detections** a and b of one image (the one OKS-NMS uses; HRNet's `oks_iou` without its visibility
filter): with d_k the distance between their keypoints k, sigma_k the schema's sigmas and their areas,

    OKS(a, b) = mean_k exp(-d_k^2 / (2 * (2 sigma_k)^2 * ((area_a + area_b) / 2 + eps)))

(eps = 2.2e-16 keeps boxes of no area finite.) **The areas**: for a top-down model (one with ``nms_areas``), the
area of each person's crop region, the box fixed to the crop's aspect ratio and padded, as HRNet's `validate`
(``prod(scale * 200)``) and mmpose's CocoMetric (``prod(bbox_scales)``) use; for a whole-image model, its box's.
Which one is recorded (``nms_area`` in the model's ``extra["postprocess"]``).

**OKS-NMS** (greedy): take the highest score, drop every remaining detection whose OKS with it is above
`nms_thresh` (0.9), repeat. **Soft-OKS-NMS** (Bodla et al., "Soft-NMS", ICCV 2017, with OKS for IoU): take the
highest score, decay every remaining score by f(OKS) (Gaussian: exp(-OKS^2 / nms_sigma); linear: 1 - OKS where
OKS >= nms_thresh, else unchanged), repeat among the rest; no detection is dropped. Ties go to the earlier
detection. Both run per image and per label; the kept detections come out in the order they were taken.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.models.base import ModelInfo, Predictions, input_format, model_info

RESCORE_RULES = ("none", "keypoint-mean")
NMS_KINDS = ("none", "oks", "soft-oks-gaussian", "soft-oks-linear")
OKS_EPS = float(np.spacing(1))
# The published top-down protocol's post-processing (HRNet, SimpleBaseline, mmpose's COCO configs).
STANDARD_TOP_DOWN = {"rescore": "keypoint-mean", "rescore_thresh": 0.2, "nms": "oks", "nms_thresh": 0.9}


@dataclass(frozen=True)
class PostProcessSettings:
    """Rescoring and NMS parameters (see the module docstring)."""

    rescore: str = "none"
    rescore_thresh: float = 0.2
    nms: str = "none"
    nms_thresh: float = 0.9
    nms_sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.rescore not in RESCORE_RULES:
            raise KpbenchError(f"--rescore: must be one of {', '.join(RESCORE_RULES)}, got {self.rescore!r}")
        if self.nms not in NMS_KINDS:
            raise KpbenchError(f"--nms: must be one of {', '.join(NMS_KINDS)}, got {self.nms!r}")
        for name, value in (("--rescore-thresh", self.rescore_thresh), ("--nms-thresh", self.nms_thresh)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise KpbenchError(f"{name}: must be in [0, 1], got {value}")
        if not (math.isfinite(self.nms_sigma) and self.nms_sigma > 0):
            raise KpbenchError(f"--nms-sigma: must be a positive number, got {self.nms_sigma}")

    @property
    def active(self) -> bool:
        """Whether anything is done at all."""
        return self.rescore != "none" or self.nms != "none"

    def to_json(self) -> dict[str, Any]:
        """The parameters that apply (a threshold of a stage that is off is left out)."""
        out: dict[str, Any] = {"rescore": self.rescore, "nms": self.nms}
        if self.rescore != "none":
            out["rescore_thresh"] = self.rescore_thresh
        if self.nms in ("oks", "soft-oks-linear"):
            out["nms_thresh"] = self.nms_thresh
        if self.nms == "soft-oks-gaussian":
            out["nms_sigma"] = self.nms_sigma
        return out

    def describe(self) -> str:
        """One line for people: "rescore keypoint-mean (0.2), OKS-NMS 0.9"."""
        parts = []
        if self.rescore != "none":
            parts.append(f"rescore {self.rescore} ({self.rescore_thresh:g})")
        if self.nms == "oks":
            parts.append(f"OKS-NMS {self.nms_thresh:g}")
        elif self.nms == "soft-oks-linear":
            parts.append(f"soft-OKS-NMS linear {self.nms_thresh:g}")
        elif self.nms == "soft-oks-gaussian":
            parts.append(f"soft-OKS-NMS Gaussian sigma {self.nms_sigma:g}")
        return ", ".join(parts) or "none"


def rescore(scores: np.ndarray, keypoint_scores: np.ndarray, thresh: float = 0.2) -> np.ndarray:
    """Box score x the mean of the keypoint scores above `thresh` (0 where none is above), per detection."""
    kp = np.asarray(keypoint_scores, dtype=np.float64)
    above = kp > thresh
    count = above.sum(axis=1)
    total = np.where(above, kp, 0.0).sum(axis=1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.asarray(scores, dtype=np.float64) * mean


def box_areas(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Areas of xyxy boxes (N,)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def oks_one_to_many(index: int, others: np.ndarray, keypoints: np.ndarray, areas: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS of detection `index` with each detection of `others` (module docstring's formula)."""
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = ((keypoints[others, :, :2] - keypoints[index, None, :, :2]) ** 2).sum(axis=2)
    scale = (areas[index] + areas[others]) / 2.0 + OKS_EPS
    e = d2 / variances[None, :] / scale[:, None] / 2.0
    return np.exp(-e).mean(axis=1)


def oks_nms(scores: np.ndarray, keypoints: np.ndarray, areas: np.ndarray, sigmas: np.ndarray, thresh: float) -> np.ndarray:
    """Greedy OKS-NMS: the indices kept, highest score first (ties: the earlier detection first)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        order = rest[oks_one_to_many(i, rest, keypoints, areas, sigmas) <= thresh]
    return np.asarray(keep, dtype=np.int64)


def soft_oks_nms(
    scores: np.ndarray, keypoints: np.ndarray, areas: np.ndarray, sigmas: np.ndarray, method: str,
    thresh: float = 0.9, sigma: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-OKS-NMS (`method` "gaussian" or "linear"): (the indices in the order taken, their decayed scores)."""
    current = np.asarray(scores, dtype=np.float64).copy()
    remaining = np.arange(len(current))
    order, final = [], []
    while remaining.size:
        pick = int(np.argmax(current[remaining]))  # the first of equal maxima: the earlier detection
        i = int(remaining[pick])
        order.append(i)
        final.append(current[i])
        remaining = np.delete(remaining, pick)
        if not remaining.size:
            break
        overlap = oks_one_to_many(i, remaining, keypoints, areas, sigmas)
        if method == "gaussian":
            current[remaining] *= np.exp(-(overlap**2) / sigma)
        elif method == "linear":
            current[remaining] *= np.where(overlap >= thresh, 1.0 - overlap, 1.0)
        else:
            raise ValueError(f"soft-NMS method {method!r}")
    return np.asarray(order, dtype=np.int64), np.asarray(final, dtype=np.float64)


def _host(value: Any, dtype: Any = np.float64) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def postprocess_predictions(
    predictions: Predictions, sigmas: np.ndarray, settings: PostProcessSettings, category_id: int = 1,
    areas: np.ndarray | None = None,
) -> Predictions:
    """One image's detections rescored and NMS-ed (host numpy arrays; labels kept). `areas` (N,): the areas OKS
    uses (a top-down model's crop regions); None: the boxes' areas."""
    boxes = _host(predictions.boxes).reshape(-1, 4)
    scores = _host(predictions.scores).reshape(-1)
    n, k = scores.shape[0], len(sigmas)
    keypoints = _host(predictions.keypoints).reshape(n, k, 3)
    kp_scores = _host(predictions.keypoint_scores).reshape(n, k)
    labels = (np.full(n, category_id, dtype=np.int64) if predictions.labels is None
              else _host(predictions.labels, np.int64).reshape(-1))
    if settings.rescore == "keypoint-mean":
        scores = rescore(scores, kp_scores, settings.rescore_thresh)
    if settings.nms != "none" and n:
        areas = box_areas(boxes) if areas is None else np.asarray(areas, dtype=np.float64).reshape(-1)
        if areas.shape != (n,):
            raise ValueError(f"OKS-NMS areas of shape {areas.shape} for {n} detections")
        picked, new_scores = [], []
        for label in dict.fromkeys(labels.tolist()):  # labels in order of first appearance
            members = np.flatnonzero(labels == label)
            if settings.nms == "oks":
                keep = oks_nms(scores[members], keypoints[members], areas[members], sigmas, settings.nms_thresh)
                picked.append(members[keep])
                new_scores.append(scores[members][keep])
            else:
                method = "gaussian" if settings.nms == "soft-oks-gaussian" else "linear"
                keep, decayed = soft_oks_nms(scores[members], keypoints[members], areas[members], sigmas, method,
                                             settings.nms_thresh, settings.nms_sigma)
                picked.append(members[keep])
                new_scores.append(decayed)
        index = np.concatenate(picked)
        scores = np.concatenate(new_scores)
        boxes, keypoints, kp_scores, labels = boxes[index], keypoints[index], kp_scores[index], labels[index]
    return Predictions(boxes=boxes, scores=scores, keypoints=keypoints, keypoint_scores=kp_scores,
                       keypoint_score_kind=predictions.keypoint_score_kind,
                       labels=None if predictions.labels is None else labels)


def postprocess_deviations(settings: PostProcessSettings, top_down: bool) -> list[str]:
    """How the post-processing differs from the model's protocol: for a top-down model, from the published top-down
    protocol (rescore keypoint-mean 0.2, OKS-NMS 0.9); for any other model, any post-processing at all."""
    if not top_down:
        return [f"post-processing: {settings.describe()} (not part of the model's own protocol)"] if settings.active else []
    out = []
    if (settings.rescore, settings.rescore_thresh) != (STANDARD_TOP_DOWN["rescore"], STANDARD_TOP_DOWN["rescore_thresh"]):
        out.append(f"rescoring {settings.rescore} (the top-down protocol: box score x mean keypoint score above 0.2)")
    if (settings.nms, settings.nms_thresh) != (STANDARD_TOP_DOWN["nms"], STANDARD_TOP_DOWN["nms_thresh"]):
        out.append(f"NMS {settings.describe() if settings.nms != 'none' else 'none'} (the top-down protocol: OKS-NMS 0.9)")
    return out


class PostProcessedModel:
    """A PoseModel whose every image's detections are post-processed (module docstring). Other attributes and
    hooks are the wrapped model's."""

    def __init__(self, model: Any, settings: PostProcessSettings, spec: str = "model") -> None:
        self.model, self.settings = model, settings
        self.schema = model.schema
        self._info = model_info(model)
        if settings.rescore != "none" and self._info.keypoint_score_kind != "probability":
            raise KpbenchError(f"--rescore {settings.rescore}: {spec} gives {self._info.keypoint_score_kind} keypoint "
                               "scores; rescoring averages keypoint scores above a probability threshold, so it needs "
                               "probabilities")
        self.input_format = input_format(model)
        self.wants_image_ids = bool(getattr(model, "wants_image_ids", False))
        self._sigmas = self.schema.sigma_array
        # A top-down model's OKS-NMS uses each person's crop region area (module docstring).
        self._nms_areas = getattr(model, "nms_areas", None) if getattr(model, "top_down", False) else None

    @property
    def nms_area(self) -> str | None:
        """Which area OKS-NMS uses ("crop region" or "person box"), None without NMS."""
        if self.settings.nms == "none":
            return None
        return "crop region" if self._nms_areas is not None else "person box"

    def __getattr__(self, name: str) -> Any:  # optional hooks (to, set_input_size, ...) are the wrapped model's
        if name in ("model", "settings"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def info(self) -> ModelInfo:
        info = self._info
        extra = dict(info.extra)
        top_down = bool(getattr(self.model, "top_down", False))
        recorded = self.settings.to_json()
        if self.nms_area is not None:
            recorded["nms_area"] = self.nms_area
        extra["postprocess"] = recorded
        extra["deviations"] = [*(extra.get("deviations") or []), *postprocess_deviations(self.settings, top_down)]
        if top_down and self.nms_area == "person box":
            extra["deviations"].append("OKS-NMS on the person boxes' areas (the top-down protocol: the crop regions')")
        if isinstance(extra.get("protocol"), dict):
            extra["protocol"] = {**extra["protocol"], "postprocess": recorded}
        return ModelInfo(**{**asdict(info), "extra": extra})

    def predict(self, images: Sequence[Any], image_ids: Sequence[int] | None = None) -> list[Predictions]:
        found = self.model.predict(images, image_ids=image_ids) if self.wants_image_ids else self.model.predict(images)
        category = self.schema.category_id
        if self._nms_areas is None or self.settings.nms == "none":
            return [postprocess_predictions(p, self._sigmas, self.settings, category) for p in found]
        return [postprocess_predictions(p, self._sigmas, self.settings, category,
                                        self._nms_areas(_host(p.boxes).reshape(-1, 4))) for p in found]
