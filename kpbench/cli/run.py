"""`kpbench run`: Keypoint R-CNN over COCO val2017 into a cached, resumable run directory, then COCO AP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options, topdown_options
from kpbench.cli.app import app, echo_err, require_torch

# Every setting defaults to None ("not given"), so that a --config file can supply it; the real defaults live
# in kpbench.core.config.RunSettings.


@app.command("run")
def run_command(
    config: Annotated[
        Path | None, options.config_option("run", "--overwrite, --backend, --progress and --analysis")
    ] = None,
    coco_root: options.CocoRoot = None,
    split: options.Split = None,
    images: Annotated[
        str | None, typer.Option("--images", help="all (every image of the annotation file: the protocol) or with-persons [default: all].")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N selected images (by id).")] = None,
    image_ids: options.ImageIds = None,
    download: Annotated[
        bool | None, typer.Option("--download", help="Download whatever is missing from the COCO root first.")
    ] = None,
    model: options.Model = None,
    weights: options.Weights = None,
    min_size: options.MinSize = None,
    max_size: options.MaxSize = None,
    box_score_thresh: options.BoxScoreThresh = None,
    device: options.Device = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per model call [default: 1].")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="DataLoader worker processes [default: 2 on CUDA, 0 on a CPU, where workers would compete with the model for the cores].")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="fp32, or fp16/bf16 through autocast [default: fp32].")] = None,
    seed: options.Seed = None,
    runtime: Annotated[
        str | None,
        typer.Option("--runtime", help="eager, compile, onnxruntime[:cpu|cuda|tensorrt] or tensorrt: the model's "
                     "network runs there (exported, built and cached first; recorded in the manifest) [default: eager]."),
    ] = None,
    person_boxes: topdown_options.PersonBoxes = None,
    person_box_thresh: topdown_options.PersonBoxThresh = None,
    person_box_max: topdown_options.PersonBoxMax = None,
    person_box_weights: topdown_options.PersonBoxWeights = None,
    flip_test: topdown_options.FlipTest = None,
    flip_space: topdown_options.FlipSpace = None,
    box_padding: topdown_options.BoxPadding = None,
    crop_batch_size: topdown_options.CropBatchSize = None,
    rescore: topdown_options.Rescore = None,
    rescore_thresh: topdown_options.RescoreThresh = None,
    nms: topdown_options.Nms = None,
    nms_thresh: topdown_options.NmsThresh = None,
    nms_sigma: topdown_options.NmsSigma = None,
    out: Annotated[
        str | None, options.out_option("Run directory; an existing one is resumed [default: results/run-<timestamp>].")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start the run directory again even if it was made with another config.")
    ] = False,
    backend: options.Backend = "vectorized",
    progress: options.Progress = True,
    analysis: Annotated[
        bool,
        typer.Option(
            "--analysis/--no-analysis",
            help="After evaluating, also write the threshold sweep, the per-keypoint breakdown and the plots.",
        ),
    ] = True,
    results: Annotated[
        Path | None,
        typer.Option("--results", help="COCO keypoint results made elsewhere (optionally with per-keypoint "
                     "`keypoint_scores`): make the run directory from them, without running a model.",
                     show_default=False),
    ] = None,
    keypoint_score_kind: Annotated[
        str | None,
        typer.Option("--keypoint-score-kind", help="With --results: probability or logit [default: probability when "
                     "every keypoint score lies in [0, 1]].", show_default=False),
    ] = None,
) -> None:
    """Run a pose model (Keypoint R-CNN by default) over COCO, cache every detection in a run directory, and
    evaluate keypoint and box AP.

    Re-running the same command continues an interrupted run. Under `torchrun --nproc_per_node N -m kpbench run
    ...` the images are sharded over the ranks and rank 0 merges and evaluates. With --results FILE.json, the run
    directory is made from results produced elsewhere (the GT is COCO_ROOT's annotation file) and nothing is run.
    """
    top_down = {"person_boxes": person_boxes, "person_box_thresh": person_box_thresh, "person_box_max": person_box_max,
                "person_box_weights": person_box_weights, "flip_test": flip_test, "flip_space": flip_space,
                "box_padding": box_padding, "crop_batch_size": crop_batch_size, "rescore": rescore,
                "rescore_thresh": rescore_thresh, "nms": nms, "nms_thresh": nms_thresh, "nms_sigma": nms_sigma}
    if results is not None:
        given = {"--model": model, "--weights": weights, "--min-size": min_size, "--max-size": max_size,
                 "--box-score-thresh": box_score_thresh, "--device": device, "--batch-size": batch_size,
                 "--dtype": dtype, "--runtime": runtime, "--limit": limit, "--image-ids": image_ids, "--images": images,
                 "--config": config, "--workers": workers, "--seed": seed, "--download": download or None,
                 "--backend": None if backend == "vectorized" else backend}
        _run_from_results(results, coco_root, split, out, overwrite, analysis, keypoint_score_kind,
                          [name for name, value in given.items() if value is not None]
                          + topdown_options.given_options(top_down))
        return
    require_torch("kpbench run")
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
        "runtime": runtime,
        "out": out,
        **top_down,
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
        from kpbench.report.run_outputs import analyse_run

        analyse_run(outcome.run_dir, outcome.results)
    if outcome.summary:
        typer.echo(outcome.summary, nl=False)
    typer.echo(f"run directory: {outcome.run_dir}")


def _run_from_results(
    results: Path, coco_root: str | None, split: str | None, out: str | None, overwrite: bool, analysis: bool,
    kind: str | None, ignored: list[str],
) -> None:
    """`kpbench run --results`: the run directory of a results file (kpbench.engine.from_results)."""
    from kpbench.core.errors import KpbenchError
    from kpbench.data.coco import annotation_path, resolve_coco_root
    from kpbench.engine.from_results import run_from_results
    from kpbench.evaluation.runeval import summarize_run
    from kpbench.runs.directory import default_run_dir

    if ignored:
        raise KpbenchError(f"--results: {', '.join(ignored)} do(es) not apply: the results are already made, and "
                           "every image of COCO_ROOT's annotation file is scored")
    root = resolve_coco_root(coco_root)
    gt = annotation_path(root, split or "val2017")
    if not gt.is_file():
        raise KpbenchError(f"{gt}: annotation file not found (--results scores against COCO_ROOT's annotations)")
    made = run_from_results(results, gt, out or default_run_dir(), coco_root=root, split=split or "val2017",
                            keypoint_score_kind=kind, overwrite=overwrite)
    if analysis:
        from kpbench.report.run_outputs import analyse_run

        analyse_run(made.run_dir, made.results)
    for note in sorted({n for r in made.results.values() for n in r.notes}):
        echo_err(f"note: {note}")
    typer.echo(summarize_run(made.run_dir, made.results), nl=False)
    typer.echo(f"run directory: {made.run_dir}")
