"""`kpbench run`: Keypoint R-CNN over COCO val2017 into a cached, resumable run directory, then COCO AP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli.app import app, echo_err

# Every setting defaults to None ("not given"), so that a --config file can supply it; the real defaults live
# in kpbench.core.config.RunSettings.


@app.command("run")
def run_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file whose [run] table sets the options below (key = option name with _ for -), except "
            "--overwrite, --backend, --progress and --analysis; options given on the command line win.",
        ),
    ] = None,
    coco_root: Annotated[
        str | None, typer.Option("--coco-root", help="COCO root: annotations/ and SPLIT/ [default: $KPBENCH_COCO_ROOT].")
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="COCO split [default: val2017].")] = None,
    images: Annotated[
        str | None, typer.Option("--images", help="all (every image of the annotation file: the protocol) or with-persons [default: all].")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N selected images (by id).")] = None,
    image_ids: Annotated[str | None, typer.Option("--image-ids", help="Only these image ids: 139,785,...")] = None,
    download: Annotated[
        bool | None, typer.Option("--download", help="Download whatever is missing from the COCO root first.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="The pose model: keypointrcnn, FILE.py:Class, package.module:Class or an installed kpbench.models entry point [default: keypointrcnn]."),
    ] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="COCO_V1, COCO_LEGACY, none (random, seeded) or a checkpoint PATH [default: COCO_V1].")
    ] = None,
    min_size: Annotated[int | None, typer.Option("--min-size", help="Resize: short side [default: 800].")] = None,
    max_size: Annotated[int | None, typer.Option("--max-size", help="Resize: long-side cap [default: 1333].")] = None,
    box_score_thresh: Annotated[
        float | None, typer.Option("--box-score-thresh", help="The model's box score threshold [default: 0.05].")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N [default: auto].")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per model call [default: 1].")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="DataLoader worker processes [default: 2].")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="fp32, or fp16/bf16 through autocast [default: fp32].")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of random weights (--weights none) [default: 0].")] = None,
    out: Annotated[
        str | None, typer.Option("--out", help="Run directory; an existing one is resumed [default: results/run-<timestamp>].")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start the run directory again even if it was made with another config.")
    ] = False,
    backend: Annotated[str, typer.Option("--backend", help="Evaluator: pycocotools (reference) or hotcoco.")] = "pycocotools",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar on stderr.")] = True,
    analysis: Annotated[
        bool,
        typer.Option(
            "--analysis/--no-analysis",
            help="After evaluating, also write the threshold sweep, the per-keypoint breakdown and the plots.",
        ),
    ] = True,
) -> None:
    """Run Keypoint R-CNN over COCO, cache every detection in a run directory, and evaluate keypoint and box AP.

    Re-running the same command continues an interrupted run. Under `torchrun --nproc_per_node N -m kpbench run
    ...` the images are sharded over the ranks and rank 0 merges and evaluates.
    """
    from kpbench.core.config import RunSettings, load_config, merge_settings, parse_list
    from kpbench.engine.runner import RunInterrupted, run

    loaded = load_config(config)
    overrides = {
        "coco_root": coco_root,
        "split": split,
        "images": images,
        "limit": limit,
        "image_ids": parse_list(image_ids, int, "--image-ids"),
        "download": download,
        "model": model,
        "weights": weights,
        "min_size": min_size,
        "max_size": max_size,
        "box_score_thresh": box_score_thresh,
        "device": device,
        "batch_size": batch_size,
        "workers": workers,
        "dtype": dtype,
        "seed": seed,
        "out": out,
    }
    settings = merge_settings(RunSettings, loaded, overrides)
    try:
        outcome = run(
            settings, overwrite=overwrite, config=loaded, command_line=["kpbench", *sys.argv[1:]], progress=progress,
            backend=backend,
        )
    except RunInterrupted as exc:  # Ctrl-C: say what is cached and how to go on
        echo_err(str(exc))
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # before the run directory was set up (typer would exit 130 silently)
        echo_err("interrupted before the run started")
        raise typer.Exit(130) from None
    if not outcome.is_main:
        return  # other ranks of a distributed run stay quiet; rank 0 reports
    if outcome.resumed_from:
        echo_err(f"resumed: {outcome.resumed_from} images were already cached, {outcome.processed} run now")
    if outcome.results is not None:
        for note in sorted({n for r in outcome.results.values() for n in r.notes}):
            echo_err(f"note: {note}")
    if outcome.results is not None and analysis:
        from kpbench.analysis.pipeline import analyse_run

        analyse_run(outcome.run_dir, outcome.results)
    if outcome.summary:
        typer.echo(outcome.summary, nl=False)
    typer.echo(f"run directory: {outcome.run_dir}")
