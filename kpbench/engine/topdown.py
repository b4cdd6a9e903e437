"""The top-down options of `kpbench run` and `kpbench speed`, checked together (`TopDownRequest`), and the model a run
drives once they are applied (`build_run_model`): a whole-image model, or a `TopDownModel` (person-box source + crops
+ crop model), either one wrapped in the post-processing stage when it has any.

A run with person boxes also keeps the boxes each image was cropped from, after the source's threshold and maximum,
in ``person_boxes.bin`` in the run directory (arrays in the detections store's framing, one record per image and
call; a rank of a distributed run writes ``person_boxes.rank<R>.bin``: `kpbench.runs.person_boxes`), so that the
source's own box AP can be scored at the end (`kpbench.evaluation.person_boxes`), for a detector source too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from kpbench.core.errors import KpbenchError
from kpbench.engine.postprocess import PostProcessedModel, PostProcessSettings
from kpbench.models.crops import DEFAULT_PADDING
from kpbench.models.person_boxes import BoxSelection, PersonBoxes, check_source_spec
from kpbench.models.topdown import DEFAULT_CROP_BATCH, FLIP_SPACES, TopDownModel, check_crop_model, is_crop_model


@dataclass(frozen=True)
class TopDownRequest:
    """Person boxes, crops, flip test and post-processing, as given to run or speed (the settings fields of the same
    names). `check()` refuses the combinations that cannot be honoured."""

    person_boxes: str | None = None
    person_box_thresh: float = 0.0
    person_box_max: int | None = None
    person_box_weights: str | None = None
    flip_test: bool = False
    flip_space: str = "auto"
    box_padding: float = DEFAULT_PADDING
    crop_batch_size: int = DEFAULT_CROP_BATCH
    rescore: str = "none"
    rescore_thresh: float = 0.2
    nms: str = "none"
    nms_thresh: float = 0.9
    nms_sigma: float = 0.5

    @classmethod
    def from_settings(cls, settings: Any) -> TopDownRequest:
        """The request held by a RunSettings or SpeedSettings (fields it lacks keep their defaults)."""
        values = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        if isinstance(values.get("crop_batch_size"), list):  # speed sweeps crop batch sizes: the first builds the model
            values["crop_batch_size"] = values["crop_batch_size"][0]
        return cls(**values)

    @property
    def top_down(self) -> bool:
        return self.person_boxes is not None

    @property
    def postprocess(self) -> PostProcessSettings:
        return PostProcessSettings(rescore=self.rescore, rescore_thresh=self.rescore_thresh, nms=self.nms,
                                   nms_thresh=self.nms_thresh, nms_sigma=self.nms_sigma)

    @property
    def selection(self) -> BoxSelection:
        return BoxSelection(self.person_box_thresh, self.person_box_max)

    def check(self) -> None:
        """Cheap checks, before anything heavy: values, the source's spec, and options that need another one."""
        defaults = TopDownRequest()
        self.postprocess  # noqa: B018 - its own value checks
        if not self.top_down:
            given = [name for name in ("person_box_thresh", "person_box_max", "person_box_weights", "flip_test",
                                       "flip_space", "box_padding", "crop_batch_size")
                     if getattr(self, name) != getattr(defaults, name)]
            if given:
                options = ", ".join("--" + name.replace("_", "-") for name in given)
                raise KpbenchError(f"{options}: only with --person-boxes gt|FILE.json|MODEL (a top-down run)")
        else:
            kind = check_source_spec(self.person_boxes or "")
            self.selection  # noqa: B018 - its own value checks
            if self.person_box_weights is not None and kind != "model":
                raise KpbenchError(f"--person-box-weights: only with a detector model as --person-boxes, not {kind} boxes")
        if self.flip_space not in FLIP_SPACES:
            raise KpbenchError(f"--flip-space: must be one of {', '.join(FLIP_SPACES)}, got {self.flip_space!r}")
        if self.flip_space != defaults.flip_space and not self.flip_test:
            raise KpbenchError("--flip-space: only with --flip-test")
        if self.crop_batch_size < 1:
            raise KpbenchError(f"--crop-batch-size: must be >= 1, got {self.crop_batch_size}")
        if not (self.box_padding > 0):
            raise KpbenchError(f"--box-padding: must be a positive number, got {self.box_padding}")
        post = self.postprocess
        if self.rescore == "none" and self.rescore_thresh != defaults.rescore_thresh:
            raise KpbenchError("--rescore-thresh: only with --rescore keypoint-mean")
        if post.nms not in ("oks", "soft-oks-linear") and self.nms_thresh != defaults.nms_thresh:
            raise KpbenchError(f"--nms-thresh: only with --nms oks or soft-oks-linear (not {post.nms})")
        if post.nms != "soft-oks-gaussian" and self.nms_sigma != defaults.nms_sigma:
            raise KpbenchError(f"--nms-sigma: only with --nms soft-oks-gaussian (not {post.nms})")

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# The options of `kpbench speed` that only its top-down rows use (kpbench.engine.topdown_speed).
SPEED_TOP_DOWN_OPTIONS = ("person_box_thresh", "person_box_max", "person_box_weights", "flip_test", "flip_space",
                          "box_padding", "crop_batch_size", "persons", "rescore", "rescore_thresh", "nms", "nms_thresh",
                          "nms_sigma")


def check_speed_request(settings: Any) -> TopDownRequest | None:
    """The top-down request of a SpeedSettings, checked (`TopDownRequest.check`), or None without --person-boxes,
    after refusing any top-down or post-processing option given without it (speed's whole-image rows would ignore
    it)."""
    from kpbench.core.config import SpeedSettings

    if settings.person_boxes is None:
        defaults = SpeedSettings()
        given = [name for name in SPEED_TOP_DOWN_OPTIONS
                 if hasattr(settings, name) and getattr(settings, name) != getattr(defaults, name)]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise KpbenchError(f"{options}: kpbench speed uses these only in its top-down rows, with --person-boxes "
                               "gt|FILE.json|MODEL (post-processing a whole-image model's detections: kpbench run)")
        return None
    request = TopDownRequest.from_settings(settings)
    request.check()
    return request


def build_crop_model(spec: Any, options: dict[str, Any]) -> Any:
    """The crop model of a resolved --model spec, built with the options its factory takes; a whole-image model is
    refused in one line."""
    factory = spec.factory
    if not is_crop_model(factory) and not callable(getattr(factory, "predict_crops", None)):
        raise KpbenchError(f"--person-boxes: --model {spec.spec} is a whole-image model; a top-down run needs a crop "
                           "model (one with crop_size and predict_crops, see kpbench.models.topdown), such as "
                           "mediapipe-crops")
    given = {k: v for k, v in options.items() if v is not None and spec.accepts(k)}
    if options.get("weights") is not None and "weights" not in given:
        raise KpbenchError(f"--weights: model {spec.spec} takes no weights (its constructor has no `weights`)")
    honoured = spec.honoured()  # each option under the keyword the model declares for it (its run_options)
    return check_crop_model(factory(**{honoured[k]: v for k, v in given.items()}), spec.spec)


def build_source(request: TopDownRequest, category_id: int, gt: dict[str, Any] | None, device: Any = None) -> Any:
    """The person-box source of `request` (gt needs the ground truth dict)."""
    kind = check_source_spec(request.person_boxes or "")
    if kind == "gt":
        from kpbench.models.person_boxes.ground_truth import GroundTruthBoxes

        if gt is None:
            raise KpbenchError("--person-boxes gt: needs COCO annotations (not --synthetic images)")
        return GroundTruthBoxes(gt, category_id)
    if kind == "file":
        from kpbench.models.person_boxes.detections_file import DetectionFileBoxes

        return DetectionFileBoxes(request.person_boxes or "", category_id)
    from kpbench.models.person_boxes.model import ModelBoxes
    from kpbench.models.registry import check_model_options, load_model

    spec, weights = check_model_options(request.person_boxes, request.person_box_weights)
    detector = load_model(spec, weights=weights)
    source = ModelBoxes(detector, spec.spec, category_id)
    if device is not None:
        source.to(device)
    return source


class BoxRecord:
    """Appends each call's selected person boxes to the run directory's person-box record (this rank's
    `kpbench.runs.person_boxes.person_boxes_path`)."""

    def __init__(self, run_dir: str | Path) -> None:
        from kpbench.runs.person_boxes import PersonBoxWriter, person_boxes_path

        rank, world = int(os.environ.get("RANK", "0") or 0), int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.path = person_boxes_path(run_dir, rank, world)
        self._writer = PersonBoxWriter(self.path)

    def __call__(self, image_ids: Sequence[int], selected: list[PersonBoxes]) -> None:
        self._writer.append(image_ids, [p.boxes for p in selected], [p.scores for p in selected])

    def sync(self) -> None:
        """The record made durable (before the store writes the detections of the images it holds)."""
        self._writer.sync()


def build_run_model(
    spec: Any,
    options: dict[str, Any],
    request: TopDownRequest,
    *,
    gt: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    device: Any = None,
) -> Any:
    """The model a run (or speed) drives: `load_model(spec, **options)`, or with person boxes the `TopDownModel`
    of the crop model `spec` and the request's source; wrapped in `PostProcessedModel` when post-processing applies
    (always for a top-down model, whose manifest then says how it compares with the published protocol).
    `run_dir` turns on the record of person boxes."""
    from kpbench.models.registry import load_model

    request.check()
    if not request.top_down:
        model = load_model(spec, **options)
        return PostProcessedModel(model, request.postprocess, spec.spec) if request.postprocess.active else model
    crop_model = build_crop_model(spec, options)
    if device is not None:
        move = getattr(crop_model, "to", None)
        if move is not None:
            move(device)
    source = build_source(request, crop_model.schema.category_id, gt, device)
    composite = TopDownModel(
        crop_model, source, request.selection, flip_test=request.flip_test, flip_space=request.flip_space,
        padding=request.box_padding, crop_batch_size=request.crop_batch_size, spec=spec.spec,
        on_boxes=BoxRecord(run_dir) if run_dir is not None else None,
    )
    return PostProcessedModel(composite, request.postprocess, spec.spec)
