"""`kpbench thresholds`: what each person-score and keypoint-score threshold costs, from one evaluation pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from kpbench.cli.app import app, echo_err
from kpbench.errors import KpbenchError

# Settings default to None ("not given") so that a --config file can supply them; the real defaults live in
# kpbench.config.ThresholdSettings.


@app.command("thresholds")
def thresholds_command(
    run_dir: Annotated[
        Path | None, typer.Argument(metavar="RUN_DIR", help="A run directory made by `kpbench run` (gives both sweeps).")
    ] = None,
    gt: Annotated[Path | None, typer.Option("--gt", help="COCO ground-truth JSON (with --results, instead of RUN_DIR).")] = None,
    results: Annotated[Path | None, typer.Option("--results", help="COCO results JSON (with --gt).")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file whose [thresholds] table sets any option below.")
    ] = None,
    iou_type: Annotated[
        str | None, typer.Option("--iou-type", help="keypoints (OKS) or bbox (IoU) for the person-score rows [default: keypoints].")
    ] = None,
    thresholds: Annotated[
        str | None, typer.Option("--thresholds", help="Person-score thresholds in [0,1], e.g. 0.5,0.7,0.9 [default: 0,0.05,...,0.95].")
    ] = None,
    kp_thresholds: Annotated[
        str | None, typer.Option("--kp-thresholds", help="Keypoint-score thresholds (logits), e.g. 0,2,4 [default: -1,0,1,2,3,4,5].")
    ] = None,
    person_thresh: Annotated[
        float | None, typer.Option("--person-thresh", help="Keypoint rows use persons scored above this [default: 0.9].")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv or markdown.")] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the CSV/Markdown tables and threshold_curves.png here [default: RUN_DIR].")
    ] = None,
) -> None:
    """Compare person-score thresholds (exact COCO AP/AR and TP/FP/FN per threshold) and keypoint-score thresholds
    (per-keypoint precision and recall), from one COCOeval pass instead of one per threshold.

    --format json prints {"person": [...], "keypoint": [...]}. The keypoint-score part needs a run directory.
    """
    from kpbench.cocofiles import check_iou_type
    from kpbench.config import ThresholdSettings, load_config, merge_settings, parse_list
    from kpbench.io import TABLE_FORMATS
    from kpbench.thresholds import (
        check_keypoint_thresholds,
        check_person_thresh,
        check_person_thresholds,
        thresholds_for_files,
        thresholds_for_run,
        write_threshold_files,
    )

    if fmt not in TABLE_FORMATS:
        raise KpbenchError(f"--format: must be one of {', '.join(TABLE_FORMATS)}, got {fmt!r}")
    if run_dir is not None and (gt is not None or results is not None):
        raise KpbenchError("thresholds: give either RUN_DIR or --gt GT --results RESULTS, not both")
    if run_dir is None and (gt is None or results is None):
        raise KpbenchError("thresholds needs RUN_DIR, or both --gt GT and --results RESULTS")
    if run_dir is not None and not run_dir.exists():
        raise KpbenchError(f"{run_dir}: run directory not found")
    if run_dir is not None and not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: not a directory (for a results file, use --gt GT --results RESULTS)")
    # Check the options here so that the message names the option (merge_settings would say "command line").
    person_list = parse_list(thresholds, float, "--thresholds")
    kp_list = parse_list(kp_thresholds, float, "--kp-thresholds")
    if person_list is not None:
        check_person_thresholds(person_list, "--thresholds")
    if kp_list is not None:
        check_keypoint_thresholds(kp_list, "--kp-thresholds")
    if person_thresh is not None:
        check_person_thresh(person_thresh, "--person-thresh")
    if iou_type is not None:
        check_iou_type(iou_type)
    overrides = {"iou_type": iou_type, "thresholds": person_list, "kp_thresholds": kp_list, "person_thresh": person_thresh}
    settings = merge_settings(ThresholdSettings, load_config(config), overrides)

    if run_dir is not None:
        report = thresholds_for_run(run_dir, settings)
        out_dir: Path | None = out or run_dir
    else:
        assert gt is not None and results is not None
        report = thresholds_for_files(gt, results, settings)
        out_dir = out
    for note in report.notes:
        echo_err(f"note: {note}")

    if fmt == "json":
        typer.echo(json.dumps(report.to_json(), indent=2, allow_nan=False))
    elif fmt == "table":
        typer.echo(_text_report(report), nl=False)
    else:
        typer.echo(_tables_report(report, fmt), nl=False)
    if out_dir is not None:
        for path in write_threshold_files(out_dir, report.person, report.keypoint):
            echo_err(f"wrote {path}")


def _text_report(report: Any) -> str:
    """The terminal view: a compact person table (best F1 starred) and the keypoint table pivoted by threshold."""
    from kpbench.io import to_text_table
    from kpbench.thresholds import keypoint_pivot

    names = ["AP", "AP50", "AP75", "AR"] if report.iou_type == "keypoints" else ["AP", "AP50", "AP75", "AR100"]
    columns = ["threshold", *names, "kept", "kept_per_image", "tp_50", "fp_50", "fn_50", "precision_50",
               "recall_50", "f1_50", "f1_75", "best"]
    rows = [{**r, "best": "*" if r["best_f1"] else ""} for r in report.person]
    parts = [
        f"Person-score thresholds ({report.iou_type}; {report.num_results} detections, {report.num_gt} GT, "
        f"{report.num_images} images; TP/FP/FN at 0.50 over the detections COCOeval keeps per image; "
        "* best F1 at 0.50)",
        to_text_table(rows, columns),
    ]
    if report.keypoint:
        parts += [
            f"Keypoint-score thresholds (persons matched at OKS >= 0.5 with score > {report.settings.person_thresh}; "
            "R = recall over GT-labelled, P = precision where GT is labelled)",
            to_text_table(keypoint_pivot(report.keypoint), precision=2),
        ]
    return "\n".join(parts)


def _tables_report(report: Any, fmt: str) -> str:
    """Both tables as CSV (separated by a blank line) or as Markdown (under headings)."""
    from kpbench.io import to_csv, to_markdown
    from kpbench.thresholds import KEYPOINT_COLUMNS

    if fmt == "csv":
        text = to_csv(report.person)
        return text + ("\n" + to_csv(report.keypoint, KEYPOINT_COLUMNS) if report.keypoint else "")
    text = f"### Person-score thresholds ({report.iou_type})\n\n" + to_markdown(report.person)
    if report.keypoint:
        text += "\n### Keypoint-score thresholds\n\n" + to_markdown(report.keypoint, KEYPOINT_COLUMNS)
    return text
