"""The top-down and post-processing options of `kpbench run` and `kpbench speed`: one definition each (the real
defaults live in kpbench.core.config; kpbench.engine.topdown.TopDownRequest checks them together)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

PersonBoxes = Annotated[
    str | None,
    typer.Option("--person-boxes", help="Run a top-down (crop) model on person boxes: gt (the ground truth's persons), "
                 "FILE.json (COCO detection results) or MODEL (any --model spec, e.g. yolo, whose boxes are used).",
                 show_default=False),
]
PersonBoxThresh = Annotated[
    float | None,
    typer.Option("--person-box-thresh", help="The person-box source's own score threshold [default: 0.0].",
                 show_default=False),
]
PersonBoxMax = Annotated[
    int | None,
    typer.Option("--person-box-max", help="At most this many person boxes per image, the highest scoring "
                 "[default: all].", show_default=False),
]
PersonBoxWeights = Annotated[
    str | None,
    typer.Option("--person-box-weights", help="Weights of the detector model given as --person-boxes MODEL.",
                 show_default=False),
]
FlipTest = Annotated[
    bool | None,
    typer.Option("--flip-test/--no-flip-test", help="Top-down: also run each crop mirrored and average, with the "
                 "schema's flip pairs [default: off].", show_default=False),
]
FlipSpace = Annotated[
    str | None,
    typer.Option("--flip-space", help="Where --flip-test averages: auto (heatmaps when the model returns them, else "
                 "keypoints), keypoints or heatmaps [default: auto].", show_default=False),
]
BoxPadding = Annotated[
    float | None,
    typer.Option("--box-padding", help="Top-down: the crop covers the box, fixed to the crop's aspect ratio, times "
                 "this [default: 1.25].", show_default=False),
]
CropBatchSize = Annotated[
    int | None,
    typer.Option("--crop-batch-size", help="Top-down: crops per crop-model call, across the images of a call "
                 "[default: 64].", show_default=False),
]
CropBatchSizes = Annotated[
    str | None,
    typer.Option("--crop-batch-size", help="Top-down: crops per crop-model call, one row each, e.g. 1,8,32 "
                 "[default: 1,8,32].", show_default=False),
]
Persons = Annotated[
    str | None,
    typer.Option("--persons", help="Top-down: persons per image of the cost-growth rows, e.g. 1,2,4,8,16 "
                 "[default: 1,2,4,8,16].", show_default=False),
]
Rescore = Annotated[
    str | None,
    typer.Option("--rescore", help="Person rescoring, any model: none, or keypoint-mean (box score x the mean of the "
                 "keypoint scores above --rescore-thresh; the top-down protocol) [default: none].", show_default=False),
]
SpeedRescore = Annotated[
    str | None,
    typer.Option("--rescore", help="Top-down rows (with --person-boxes): person rescoring, none or keypoint-mean, "
                 "timed in the image and growth rows as a run applies it [default: none].", show_default=False),
]
SpeedNms = Annotated[
    str | None,
    typer.Option("--nms", help="Top-down rows (with --person-boxes): none, oks, soft-oks-gaussian or soft-oks-linear, "
                 "timed in the image and growth rows as a run applies it [default: none].", show_default=False),
]
RescoreThresh = Annotated[
    float | None,
    typer.Option("--rescore-thresh", help="keypoint-mean's keypoint score threshold [default: 0.2].", show_default=False),
]
Nms = Annotated[
    str | None,
    typer.Option("--nms", help="NMS of each image's persons, any model: none, oks (greedy OKS-NMS; the top-down "
                 "protocol), soft-oks-gaussian or soft-oks-linear [default: none].", show_default=False),
]
NmsThresh = Annotated[
    float | None,
    typer.Option("--nms-thresh", help="OKS threshold of --nms oks (and where soft-oks-linear's decay starts) "
                 "[default: 0.9].", show_default=False),
]
NmsSigma = Annotated[
    float | None,
    typer.Option("--nms-sigma", help="soft-oks-gaussian: scores decay by exp(-OKS^2 / sigma) [default: 0.5].",
                 show_default=False),
]


def given_options(values: dict[str, Any]) -> list[str]:
    """The option names among `values` (settings keys) that were given (not None)."""
    return ["--" + key.replace("_", "-") for key, value in values.items() if value is not None]
