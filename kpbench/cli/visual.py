"""`kpbench draw`, `kpbench plot` and `kpbench keypoints`: skeleton overlays, figures, per-keypoint breakdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options
from kpbench.cli.app import app, echo_err, require_torch
from kpbench.core.errors import KpbenchError


def _one_run_dir(paths: list[Path], what: str) -> Path | None:
    """The run directory when `paths` is one existing folder; None when they are files; an error otherwise."""
    for path in paths:
        if not path.exists():
            raise KpbenchError(f"{path}: no such run directory or {what}")
    dirs = [p for p in paths if p.is_dir()]
    if not dirs:
        return None
    if len(paths) > 1:
        raise KpbenchError(f"{dirs[0]}: give one run directory, or {what} only (not both, not several folders)")
    return dirs[0]


@app.command("draw")
def draw_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="A run directory, or image files to run the model on.",
            show_default=False,
        ),
    ],
    image_ids: options.ImageIds = None,
    top: Annotated[int, typer.Option(help="Run dir: without --image-ids, draw the N highest-scoring images.")] = 8,
    person_thresh: options.PersonThresh = None,
    kp_thresh: options.KpThresh = None,
    gt: Annotated[bool, typer.Option("--gt", help="Add a ground-truth panel beside each image.")] = False,
    out: Annotated[Path | None, options.out_option("Output folder [default: RUN_DIR/draw, or ./draw for image files].")] = None,
    model: options.Model = None,
    weights: options.Weights = None,
    annotations: Annotated[
        Path | None, typer.Option(help="Image files with --gt: a COCO annotation JSON (images matched by file name).")
    ] = None,
    min_size: options.MinSize = None,
    max_size: options.MaxSize = None,
    device: options.Device = None,
    score_thresh_alias: options.ScoreThreshAlias = None,
) -> None:
    """Draw keypoints and skeletons as PNG files: a run's cached detections, or a model run on image files.

    A person is drawn when its score is above --person-thresh; a keypoint when its score is above --kp-thresh;
    a limb when both its ends are. One colour per person. An image with nobody above --person-thresh is labelled
    so ("0 persons above 0.9").

    Without --person-thresh the threshold suits the model's scores, and a line on stderr says which and where it
    came from: the run's LRP-optimal threshold (after `kpbench analyze`), else its best-F1 threshold (`kpbench
    thresholds`, which `kpbench run` writes), else the model's own (Keypoint R-CNN 0.9, YOLO 0.25, MediaPipe 0.5).

    --weights, --min-size, --max-size, --device and --annotations are for image files (a run directory draws its
    cached detections). There, --min-size alone keeps the model's 800:1333 ratio for the long-side cap.
    """
    from kpbench.analysis.thresholds import check_person_thresh
    from kpbench.core.config import parse_list
    from kpbench.report.draw import DRAW_DIR, draw_image_files, draw_run_images

    person, person_option = options.alias(person_thresh, score_thresh_alias, "--person-thresh", "--score-thresh")
    # None: one that suits the model's scores, chosen by the library and said on stderr.
    score_thresh = None if person is None else float(person)  # type: ignore[arg-type]
    if score_thresh is not None:
        check_person_thresh(score_thresh, person_option)  # named as given, before any work
    if top < 1:  # before the threshold the library chooses (and says) for a run directory
        raise KpbenchError(f"--top: must be >= 1, got {top}")
    kp = kp_thresh  # None: the default on the scale of the model's keypoint scores
    run_dir = _one_run_dir(paths, "image file")
    if run_dir is not None:
        for option, value in (
            ("--model", model),
            ("--weights", weights),
            ("--annotations", annotations),
            ("--min-size", min_size),
            ("--max-size", max_size),
        ):
            if value is not None:
                raise KpbenchError(f"{option}: only for image files (a run directory draws its cached detections)")
        ids = parse_list(image_ids, int, "--image-ids")
        written = draw_run_images(
            run_dir, image_ids=ids, top_n=top, score_thresh=score_thresh, kp_thresh=kp, gt=gt, out=out, log=echo_err
        )
    else:
        if image_ids is not None:
            raise KpbenchError("--image-ids: only for a run directory (image files are drawn as given)")
        if gt and annotations is None:
            raise KpbenchError("--gt: image files need --annotations COCO_JSON to find their ground truth")
        if annotations is not None and not gt:
            raise KpbenchError("--annotations: only used with --gt")
        for option, value in (("--min-size", min_size), ("--max-size", max_size)):
            if value is not None and value < 1:
                raise KpbenchError(f"{option}: must be >= 1, got {value}")
        if min_size is not None and max_size is not None and max_size < min_size:
            raise KpbenchError(f"--max-size {max_size} is smaller than --min-size {min_size}: the long-side cap "
                               "must be at least the short side")
        require_torch("kpbench draw IMAGE")
        written = draw_image_files(
            paths,
            weights=weights,
            model=model,
            score_thresh=score_thresh,
            kp_thresh=kp,
            out=out or Path(DRAW_DIR),
            annotations=annotations,
            min_size=min_size,
            max_size=max_size,
            device=device or "auto",
            log=echo_err,
        )
    for path in written:
        echo_err(f"wrote {path}")


@app.command("plot")
def plot_command(
    paths: Annotated[
        list[Path],
        typer.Argument(help="A run directory, a `kpbench sweep` folder, or `kpbench speed` CSV files.",
                       show_default=False),
    ],
    out: Annotated[Path | None, options.out_option(
        "Speed figures' folder [default: the first CSV's folder; for a sweep, the sweep folder].")] = None,
) -> None:
    """Write figures: for a run directory, PR curves (keypoints and boxes) and threshold curves; for speed
    CSVs, FPS against input size per device and, where accuracy was measured, AP against FPS; for a sweep folder,
    each run cell's figures in its run directory and the speed figures of all its speed cells."""
    from kpbench.report.figures import plot_speed
    from kpbench.report.run_outputs import plot_run
    from kpbench.report.sweeps import plot_sweep
    from kpbench.sweep.layout import is_sweep_dir

    run_dir = _one_run_dir(paths, "speed CSV")
    if run_dir is not None and is_sweep_dir(run_dir):
        written = plot_sweep(run_dir, out)
    elif run_dir is not None:
        if out is not None:
            raise KpbenchError("--out: only for speed figures (a run's figures go into its directory)")
        written = plot_run(run_dir)
    else:
        written = plot_speed(paths, out)
    for path in written:
        echo_err(f"wrote {path}")


@app.command("keypoints")
def keypoints_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `kpbench run`.", show_default=False)],
    fmt: Annotated[str, options.format_option("table, json, csv or markdown.")] = "table",
) -> None:
    """Per-keypoint breakdown of the detections matched at OKS >= 0.5: per joint, the number of labelled GT
    keypoints, mean similarity, the shares with similarity >= 0.5 and >= 0.75 (in percent in the table and
    markdown, fractions in csv and json), and the median error / sqrt(GT area).

    Scores the run from its detections cache, like `kpbench evaluate RUN_DIR` (an incomplete run is an error).
    Prints the table and writes RUN_DIR/keypoints.csv, keypoints.md and keypoints.png.
    """
    from kpbench.analysis.breakdown import (
        COLUMNS,
        PERCENT_NOTE,
        STEM,
        breakdown_markdown,
        keypoints_for_run,
        rows_in_percent,
    )
    from kpbench.core.io import check_format, render

    check_format(fmt)
    if run_dir.is_file():
        raise KpbenchError(f"{run_dir}: a file, not a run directory; `kpbench keypoints` breaks down a run made by "
                           "`kpbench run` (for a results file: kpbench run --results RESULTS_JSON --coco-root ROOT, "
                           "then kpbench keypoints on that run)")
    if not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: run directory not found")
    rows = keypoints_for_run(run_dir)
    if fmt == "json":
        # JSON has no NaN: an empty row's statistics become null.
        rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in rows]
    # One scale per kind of output: frac_ks_* in percent for people (table, markdown), fractions in csv and json.
    if fmt == "markdown":
        typer.echo(breakdown_markdown(rows), nl=False)
    elif fmt == "table":
        typer.echo(render(rows_in_percent(rows), fmt, COLUMNS) + PERCENT_NOTE + "\n", nl=False)
    else:
        typer.echo(render(rows, fmt, COLUMNS), nl=False)
    for ext in ("csv", "md", "png"):
        echo_err(f"wrote {run_dir / f'{STEM}.{ext}'}")
