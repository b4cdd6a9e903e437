"""`kpbench speed` (inference-speed tables per device) and `kpbench report` (merging result files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options, topdown_options
from kpbench.cli.app import app, echo_err, require_torch
from kpbench.core.errors import KpbenchError

# What `kpbench report` without a path is told to give, per --kind.
REPORT_INPUTS = {
    "speed": "the speed CSVs of `kpbench speed`, or folders holding them (e.g. kpbench report results/speed)",
    "run": "run directories, or a folder holding them (e.g. kpbench report --kind run results)",
    "thresholds": "run directories or person-threshold CSVs, or a folder holding them "
    "(e.g. kpbench report --kind thresholds results)",
    "sweep": "sweep folders written by `kpbench sweep` (e.g. kpbench report results/zoo)",
}

# Settings default to None ("not given") so that a --config file can supply them; the real defaults live in
# kpbench.core.config.SpeedSettings.


@app.command("speed")
def speed_command(
    config: Annotated[Path | None, options.config_option("speed", "--progress")] = None,
    coco_root: options.CocoRoot = None,
    split: options.Split = None,
    num_images: Annotated[
        int | None, typer.Option("--num-images", help="Images with people to cycle through, lowest ids first [default: 8].")
    ] = None,
    synthetic: Annotated[
        bool | None,
        typer.Option("--synthetic/--no-synthetic", help="Random 480x640 images instead of COCO (flagged in every row)."),
    ] = None,
    model: options.Models = None,
    weights: options.WeightsList = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of random weights and synthetic images [default: 0].", show_default=False),
    ] = None,
    device: options.Device = None,
    sizes: Annotated[
        str | None, typer.Option("--sizes", help="Short sides for the model's transform [default: 320,480,640,800,1024].")
    ] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="Untimed calls per size and variant [default: 10].")] = None,
    iters: Annotated[int | None, typer.Option("--iters", help="Timed calls per size and variant [default: 50].")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="dtype variants: fp32,fp16,bf16 (autocast) [default: fp32].")] = None,
    batch_size: Annotated[str | None, typer.Option("--batch-size", help="Batch-size variants, e.g. 1,4 [default: 1].")] = None,
    channels_last: Annotated[
        bool | None, typer.Option("--channels-last/--no-channels-last", help="Add channels-last variants.")
    ] = None,
    cudnn_benchmark: Annotated[
        bool | None, typer.Option("--cudnn-benchmark/--no-cudnn-benchmark", help="Add cudnn.benchmark variants (CUDA).")
    ] = None,
    compile: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="Add the compile runtime (torch.compile of the "
                                  "backbone); the same as adding compile to --runtime.")
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option("--runtime", help="Runtimes to time, each with its own rows: eager, compile, "
                     "onnxruntime[:cpu|cuda|tensorrt], tensorrt, comma-separated (e.g. eager,onnxruntime:cpu) "
                     "[default: eager]. Exports and engines are built once per size, timed, and cached."),
    ] = None,
    export_shapes: Annotated[
        str | None,
        typer.Option("--export-shapes", help="ONNX exports with dynamic image shapes (as eager), or static squares "
                     "of each size (preprocessing then differs, and the rows say so) [default: dynamic]."),
    ] = None,
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset of the exports [default: 17].")] = None,
    runtime_cache: Annotated[
        str | None,
        typer.Option("--runtime-cache", help="Folder of cached exports and engines [default: "
                     "$KPBENCH_CACHE/runtimes or ~/.cache/kpbench/runtimes]."),
    ] = None,
    bootstrap: Annotated[
        int | None,
        typer.Option("--bootstrap", help="Paired bootstrap replicates of each runtime row's ΔAP interval against "
                     "eager, with --accuracy (0: no interval) [default: 1000]."),
    ] = None,
    fast_postprocess: Annotated[
        bool | None,
        typer.Option("--fast-postprocess/--no-fast-postprocess",
                     help="Add variants with kpbench's exact keypoint post-processing (Keypoint R-CNN: one host copy "
                     "per image instead of two .item() syncs per detection)."),
    ] = None,
    offline: Annotated[
        bool | None,
        typer.Option("--offline/--no-offline", help="Add offline-throughput rows: per dtype and size, the largest "
                     "batch that fits (doubling from 1)."),
    ] = None,
    offline_max_batch: Annotated[
        int | None, typer.Option("--offline-max-batch", help="The largest batch --offline tries [default: 32].")
    ] = None,
    stages: Annotated[
        bool | None,
        typer.Option("--stages/--no-stages", help="Measure the stage split per row, in a separate pass [default: on]."),
    ] = None,
    flops: Annotated[
        bool | None,
        typer.Option("--flops/--no-flops", help="Count FLOPs per image and the achieved TFLOP/s, in a separate pass "
                     "[default: on]."),
    ] = None,
    box_score_thresh: options.BoxScoreThresh = None,
    accuracy: Annotated[
        int | None, typer.Option("--accuracy", help="Also evaluate keypoint and box AP on N images per row [default: 0].")
    ] = None,
    person_boxes: topdown_options.PersonBoxes = None,
    person_box_thresh: topdown_options.PersonBoxThresh = None,
    person_box_max: topdown_options.PersonBoxMax = None,
    person_box_weights: topdown_options.PersonBoxWeights = None,
    flip_test: topdown_options.FlipTest = None,
    flip_space: topdown_options.FlipSpace = None,
    box_padding: topdown_options.BoxPadding = None,
    crop_batch_size: topdown_options.CropBatchSizes = None,
    persons: topdown_options.Persons = None,
    rescore: topdown_options.SpeedRescore = None,
    rescore_thresh: topdown_options.RescoreThresh = None,
    nms: topdown_options.SpeedNms = None,
    nms_thresh: topdown_options.NmsThresh = None,
    nms_sigma: topdown_options.NmsSigma = None,
    out: Annotated[str | None, options.out_option("Output folder [default: results/speed].")] = None,
    progress: options.Progress = True,
) -> None:
    """Time pose models (Keypoint R-CNN by default) per input size and variant on this device; write a CSV, a JSON
    manifest and Markdown.

    Each size is applied through the model's own transform (Keypoint R-CNN: min_size=s,
    max_size=round(s*1333/800); YOLO: imgsz=s). The model time covers model(images) between two
    synchronisations: transform and post-processing included, decoding and copying to the device excluded (timed
    separately). Each row also gets its stage split and FLOPs, each measured in a pass of its own.
    """
    require_torch("kpbench speed")
    from kpbench.core.config import SpeedSettings, load_config, merge_settings, parse_list
    from kpbench.engine.speed import SpeedInterrupted, run_speed, terminal_summary

    loaded = load_config(config)
    overrides = {
        "coco_root": coco_root,
        "split": split,
        "num_images": num_images,
        "synthetic": synthetic,
        "model": model[0] if model and len(model) == 1 else model,
        "weights": weights[0] if weights and len(weights) == 1 else weights,
        "seed": seed,
        "device": device,
        "sizes": parse_list(sizes, int, "--sizes"),
        "warmup": warmup,
        "iters": iters,
        "dtype": parse_list(dtype, str, "--dtype"),
        "batch_size": parse_list(batch_size, int, "--batch-size"),
        "channels_last": channels_last,
        "cudnn_benchmark": cudnn_benchmark,
        "compile": compile,
        "runtime": parse_list(runtime, str, "--runtime"),
        "export_shapes": export_shapes,
        "opset": opset,
        "runtime_cache": runtime_cache,
        "bootstrap": bootstrap,
        "fast_postprocess": fast_postprocess,
        "offline": offline,
        "offline_max_batch": offline_max_batch,
        "stages": stages,
        "flops": flops,
        "box_score_thresh": box_score_thresh,
        "accuracy": accuracy,
        "out": out,
        "person_boxes": person_boxes,
        "person_box_thresh": person_box_thresh,
        "person_box_max": person_box_max,
        "person_box_weights": person_box_weights,
        "flip_test": flip_test,
        "flip_space": flip_space,
        "box_padding": box_padding,
        "crop_batch_size": parse_list(crop_batch_size, int, "--crop-batch-size"),
        "persons": parse_list(persons, int, "--persons"),
        "rescore": rescore,
        "rescore_thresh": rescore_thresh,
        "nms": nms,
        "nms_thresh": nms_thresh,
        "nms_sigma": nms_sigma,
    }
    settings = merge_settings(SpeedSettings, loaded, overrides)
    if settings.person_boxes is not None:  # a top-down model: per crop, per person, growth with persons
        from kpbench.engine.topdown_speed import run_topdown_speed, terminal_table

        timed = run_topdown_speed(settings, progress=progress, log=lambda line: echo_err(f"warning: {line}"))
        typer.echo(terminal_table(timed), nl=False)
        for path in (timed.csv_path, timed.manifest_path, timed.markdown_path):
            echo_err(f"wrote {path}")
        return
    try:
        result = run_speed(settings, config=loaded, progress=progress, log=lambda line: echo_err(f"warning: {line}"))
    except SpeedInterrupted as exc:  # Ctrl-C: the finished rows were written, marked incomplete
        if exc.result.rows:
            typer.echo(terminal_summary(exc.result), nl=False)
        echo_err(str(exc))
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # before any row was timed (typer would exit 130 silently)
        echo_err("interrupted: no row was finished, nothing written")
        raise typer.Exit(130) from None
    typer.echo(terminal_summary(result), nl=False)
    for path in (result.csv_path, result.manifest_path, result.markdown_path):
        echo_err(f"wrote {path}")


@app.command("report")
def report_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Files or folders (searched recursively): speed CSVs, run directories (--kind run) or threshold "
            "tables (--kind thresholds).",
            show_default=False,
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="speed (speed CSVs), run (run directories), thresholds, or sweep (`kpbench sweep` "
                     "folders: every run and speed table merged) [default: sweep for sweep folders, else speed].",
                     show_default=False),
    ] = None,
    fmt: Annotated[str, options.format_option("markdown, csv or json.")] = "markdown",
    out: Annotated[
        Path | None, options.out_option("Write here instead of stdout (csv: the speed pivot goes to <stem>.pivot.csv).")
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option("--columns", help="thresholds: statistics to put side by side [default: AP,AR,precision_50,recall_50,f1_50,kept]."),
    ] = None,
) -> None:
    """Merge result files from many machines or runs into one table.

    speed: one row per device x size x variant (FPS, median and p90 ms, padded shape, memory, AP when measured;
    other box score thresholds and synthetic images get their own rows), plus a pivot of device x size -> FPS, and
    where rows ran on other runtimes than eager, a runtime x size table (FPS, AP, ΔAP [interval], build seconds,
    status). run: one row per run directory (weights, size, dtype, AP/AR, box AP,
    deviations from the published protocol). thresholds: the person-threshold tables of several runs side by side.
    """
    from kpbench.core.config import parse_list
    from kpbench.core.io import check_format
    from kpbench.report.tables import FORMATS, build_report, check_report_out, render_report, report_kind, write_report

    kind = report_kind(kind, paths)
    if not paths and kind in REPORT_INPUTS:  # (an unknown --kind is build_report's to word)
        raise KpbenchError(f"report needs PATHS: {REPORT_INPUTS[kind]}")
    check_format(fmt, FORMATS)
    if out is not None:
        check_report_out(out)  # before reading anything
    tables = build_report(kind, paths, stats=parse_list(columns, str, "--columns"))
    if out is not None:
        for path in write_report(kind, tables, fmt, out):
            echo_err(f"wrote {path}")
        return
    texts = render_report(kind, tables, fmt)
    # Several CSV tables on stdout are separated by one blank line.
    typer.echo("\n".join(texts.values()), nl=False)
