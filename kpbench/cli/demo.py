"""`kpbench demo`: the first run, offline: a pose model over the COCO images shipped inside kpbench, every analysis,
and the HTML page."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options
from kpbench.cli.app import app, echo_err


@app.command("demo")
def demo_command(
    out: Annotated[
        Path, options.out_option("Folder for the run directory (OUT/yolo11n-pose or OUT/keypointrcnn-random-weights), "
                                 "the page (OUT/report.html) and the images' credits (OUT/ATTRIBUTION.md).")
    ] = Path("results/demo"),
    model: Annotated[
        str, typer.Option("--model", help="auto (YOLO11n-pose with its real weights when the yolo extra is "
                          "installed, else Keypoint R-CNN with random weights), yolo or keypointrcnn.")
    ] = "auto",
    device: options.Device = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start the run directory again (it is continued otherwise).")
    ] = False,
    progress: options.Progress = True,
) -> None:
    """Try kpbench offline: run a pose model over the 8 COCO val2017 images shipped inside kpbench, score keypoint
    and box AP with COCOeval, analyse the results (thresholds, AP per keypoint and keypoint group, errors) and
    write one HTML page.

    Nothing is downloaded and no --coco-root is needed. The images are CC BY 2.0 or CC BY-SA 2.0 (their credits
    are in OUT/ATTRIBUTION.md and on the page). With the yolo extra installed the model is
    YOLO11n-pose with its real weights; otherwise Keypoint R-CNN with random weights, which shows the pipeline and
    measures nothing. Running it again continues the run directory.
    """
    from kpbench.core.io import ensure_output_dir
    from kpbench.demo import choose_model, demo_report, run_demo
    from kpbench.engine.runner import RunInterrupted

    chosen = choose_model(model)
    ensure_output_dir(out, "--out")  # an unusable --out is the one line printed, before the header
    weights = "its real weights" if chosen.real_weights else "random weights"
    echo_err(f"demo: {chosen.model} with {weights} on the 8 COCO val2017 images shipped with kpbench (no download)")
    try:
        outcome = run_demo(out, model=model, device=device or "auto", progress=progress, overwrite=overwrite,
                           command_line=["kpbench", *sys.argv[1:]])
    except RunInterrupted as exc:
        echo_err(str(exc))
        raise typer.Exit(130) from None
    for note in sorted({n for r in outcome.results.values() for n in r.notes}):
        echo_err(f"note: {note}")
    typer.echo(demo_report(outcome), nl=False)
