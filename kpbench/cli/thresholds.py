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
        Path | None, typer.Option("--config", help="TOML file whose [thresholds] table sets --iou-type, --thresholds, --kp-thresholds and --person-thresh.")
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
    fmt: Annotated[
        str, typer.Option("--format", help="table or markdown (AP/AR in percent), csv (one table) or json (both).")
    ] = "table",
    table: Annotated[
        str | None,
        typer.Option(
            "--table",
            help="person or keypoint: the table to print [default: person for csv; both for table and markdown].",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the CSV/Markdown tables and threshold_curves.png here [default: RUN_DIR].")
    ] = None,
) -> None:
    """Compare person-score thresholds (exact COCO AP/AR and TP/FP/FN per threshold) and keypoint-score thresholds
    (per-keypoint precision and recall), from one COCOeval pass instead of one per threshold.

    Threshold lists are comma-separated numbers without empty items; they are used sorted and without duplicates
    (a note says so when that changed the list). best_f1 marks the threshold with the highest F1 at OKS/IoU 0.50
    (the lowest among equals), and no threshold when every F1 is 0 or undefined.

    --format csv prints one CSV table, the person table unless --table keypoint (which needs a run directory);
    --format json prints both as {"person": [...], "keypoint": [...]}. table and markdown show the COCO stats (AP,
    AR, ...) in percent with one decimal, n/a where COCO gives -1; csv and json keep fractions at full precision.
    The keypoint-score part needs a run directory.
    """
    from kpbench.cocofiles import check_iou_type
    from kpbench.config import ThresholdSettings, load_config, merge_settings
    from kpbench.io import TABLE_FORMATS, ensure_output_dir
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
    if table is not None and table not in TABLES:
        raise KpbenchError(f"--table: must be one of {', '.join(TABLES)}, got {table!r}")
    if table is not None and fmt == "json":
        raise KpbenchError("--table: not with --format json, which prints both tables")
    if run_dir is not None and (gt is not None or results is not None):
        raise KpbenchError("thresholds: give either RUN_DIR or --gt GT --results RESULTS, not both")
    if run_dir is None and (gt is None or results is None):
        raise KpbenchError("thresholds needs RUN_DIR, or both --gt GT and --results RESULTS")
    if run_dir is not None and not run_dir.exists():
        raise KpbenchError(f"{run_dir}: run directory not found")
    if run_dir is not None and not run_dir.is_dir():
        raise KpbenchError(f"{run_dir}: not a directory (for a results file, use --gt GT --results RESULTS)")
    # Check the options here so that the message names the option (merge_settings would say "command line").
    person_list = _parse_thresholds(thresholds, "--thresholds")
    kp_list = _parse_thresholds(kp_thresholds, "--kp-thresholds")
    if person_list is not None:
        check_person_thresholds(person_list, "--thresholds")
    if kp_list is not None:
        check_keypoint_thresholds(kp_list, "--kp-thresholds")
    if person_thresh is not None:
        check_person_thresh(person_thresh, "--person-thresh")
    if iou_type is not None:
        check_iou_type(iou_type)
    if table == "keypoint" and run_dir is None:
        raise KpbenchError("--table keypoint: keypoint-score rows need RUN_DIR (results files carry no keypoint scores)")
    if out is not None:
        ensure_output_dir(out)  # before the evaluation: a bad --out fails at once
    overrides = {"iou_type": iou_type, "thresholds": person_list, "kp_thresholds": kp_list, "person_thresh": person_thresh}
    settings = merge_settings(ThresholdSettings, load_config(config), overrides)
    from_config = f"[thresholds] in {config}"
    for values, checker, option, key in (
        (settings.thresholds, check_person_thresholds, "--thresholds", "thresholds"),
        (settings.kp_thresholds, check_keypoint_thresholds, "--kp-thresholds", "kp_thresholds"),
    ):
        used = checker(values, option)
        if [float(v) for v in values] != used:
            where = option if overrides[key] is not None else f"{key} {from_config}"
            echo_err(f"note: {where}: using {','.join(f'{v:g}' for v in used)} (sorted, duplicates removed)")

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
        typer.echo(_text_report(report, table), nl=False)
    elif fmt == "csv":
        typer.echo(_csv_report(report, table or "person"), nl=False)
    else:
        typer.echo(_markdown_report(report, table), nl=False)
    if out_dir is not None:
        for path in write_threshold_files(out_dir, report.person, report.keypoint):
            echo_err(f"wrote {path}")


TABLES = ("person", "keypoint")


def _parse_thresholds(text: str | None, option: str) -> list[float] | None:
    """A comma-separated threshold list; an empty item ("0.5,,0.7", a trailing comma) is an error, not skipped."""
    from kpbench.config import parse_list

    if text is not None:
        items = [item.strip() for item in text.split(",")]
        if any(items) and not all(items):
            raise KpbenchError(f"{option}: empty item in {text!r}; give numbers separated by single commas")
    return parse_list(text, float, option)


def _text_report(report: Any, table: str | None = None) -> str:
    """The terminal view: a compact person table (COCO stats in percent, best F1 starred) and the keypoint table
    pivoted by threshold; `table` picks one of them."""
    from kpbench.io import to_text_table
    from kpbench.thresholds import PERSON_TABLE_NOTE, keypoint_pivot, person_rows_in_percent

    names = ["AP", "AP50", "AP75", "AR"] if report.iou_type == "keypoints" else ["AP", "AP50", "AP75", "AR100"]
    columns = ["threshold", *names, "kept", "kept_per_image", "tp_50", "fp_50", "fn_50", "precision_50",
               "recall_50", "f1_50", "f1_75", "best"]
    rows = [{**r, "best": "*" if r["best_f1"] else ""} for r in person_rows_in_percent(report.person)]
    parts = []
    if table in (None, "person"):
        parts += [
            f"Person-score thresholds ({report.iou_type}; {report.num_results} detections, {report.num_gt} GT, "
            f"{report.num_images} images; TP/FP/FN at 0.50 over the detections COCOeval keeps per image; "
            f"* best F1 at 0.50; {PERSON_TABLE_NOTE})",
            to_text_table(rows, columns),
        ]
    if report.keypoint and table in (None, "keypoint"):
        parts += [
            f"Keypoint-score thresholds (persons matched at OKS >= 0.5 with score > {report.settings.person_thresh}; "
            "R = recall over GT-labelled, P = precision where GT is labelled)",
            to_text_table(keypoint_pivot(report.keypoint), precision=2),
        ]
    return "\n".join(parts)


def _csv_report(report: Any, table: str) -> str:
    """One table as CSV (fractions at full precision): machine-readable, one header line."""
    from kpbench.io import to_csv
    from kpbench.thresholds import KEYPOINT_COLUMNS

    return to_csv(report.person) if table == "person" else to_csv(report.keypoint, KEYPOINT_COLUMNS)


def _markdown_report(report: Any, table: str | None) -> str:
    """The tables as Markdown under headings (the person table as thresholds_person.md shows it)."""
    from kpbench.io import to_markdown
    from kpbench.thresholds import KEYPOINT_COLUMNS, person_markdown

    parts = []
    if table in (None, "person"):
        parts.append(person_markdown(report.person, f"Person-score thresholds ({report.iou_type})"))
    if report.keypoint and table in (None, "keypoint"):
        parts.append("### Keypoint-score thresholds\n\n" + to_markdown(report.keypoint, KEYPOINT_COLUMNS))
    return "\n".join(parts)
