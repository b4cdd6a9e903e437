"""`kpbench evaluate`: score a COCO results file (or a run directory's cache) with COCOeval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli.app import app, echo_err
from kpbench.errors import KpbenchError


@app.command("evaluate")
def evaluate_command(
    gt_json: Annotated[Path | None, typer.Argument(help="COCO ground-truth JSON (person_keypoints_val2017.json).")] = None,
    results_json: Annotated[Path | None, typer.Argument(help="COCO results JSON (a list of detections).")] = None,
    iou_type: Annotated[str, typer.Option(help="keypoints (OKS) or bbox (IoU).")] = "keypoints",
    backend: Annotated[str, typer.Option(help="pycocotools (reference) or hotcoco (fast, optional).")] = "pycocotools",
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv or markdown.")] = "table",
    out: Annotated[Path | None, typer.Option(help="Also write metrics.csv, metrics.md and metrics.json here.")] = None,
    validate: Annotated[
        bool,
        typer.Option(help="Check the inputs first (--no-validate hands the files to the backend unchecked; "
                          "not with --run, whose inputs are always checked)."),
    ] = True,
    run: Annotated[
        Path | None, typer.Option(help="Re-evaluate a run directory from its cached detections (no model needed).")
    ] = None,
) -> None:
    """Evaluate COCO keypoint or box results against ground truth, exactly as pycocotools does.

    Prints the summary stats; --format json prints one object whose keys are the stat names.
    """
    from kpbench.evaluate import evaluate, metrics_json, metrics_rows, write_metrics
    from kpbench.io import TABLE_FORMATS, render

    if fmt not in TABLE_FORMATS:
        raise KpbenchError(f"--format: must be one of {', '.join(TABLE_FORMATS)}, got {fmt!r}")
    if run is not None:
        if gt_json is not None or results_json is not None:
            raise KpbenchError("--run: give either a run directory or GT_JSON RESULTS_JSON, not both")
        from kpbench.runeval import evaluate_run, summarize_run

        results = evaluate_run(run, backend=backend)  # rewrites the run's results JSONs and metrics files
        if fmt == "table":
            typer.echo(summarize_run(run, results), nl=False)
    else:
        if gt_json is None or results_json is None:
            raise KpbenchError("evaluate needs GT_JSON and RESULTS_JSON (or --run RUN_DIR)")
        results = {iou_type: evaluate(gt_json, results_json, iou_type=iou_type, backend=backend, validate=validate)}
    for result in results.values():
        for note in result.notes:
            echo_err(f"note: {note}")
    if fmt == "json":
        payload = metrics_json(results)
        typer.echo(json.dumps(payload[iou_type] if len(payload) == 1 else payload, indent=2))
    elif fmt == "table" and run is None:
        for kind, result in results.items():
            typer.echo(f"{kind} ({result.backend}): {result.num_results} detections, {result.num_gt} GT, "
                       f"{result.num_images} images")
            typer.echo(render([{k: round(v, 4) for k, v in result.stats.items()}], "table"))
    else:
        typer.echo(render(metrics_rows(results), fmt), nl=False)
    if out is not None:
        for path in write_metrics(out, results):
            echo_err(f"wrote {path}")
