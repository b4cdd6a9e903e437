"""`kpbench thresholds`: what each person-score and keypoint-score threshold costs, from one evaluation pass."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpbench.cli import options
from kpbench.cli.app import app, echo_err
from kpbench.core.errors import KpbenchError

# Settings default to None ("not given") so that a --config file can supply them; the real defaults live in
# kpbench.core.config.ThresholdSettings.


@app.command("thresholds")
def thresholds_command(
    source: options.Source = None,
    results_json: options.Results = None,
    config: Annotated[Path | None, options.config_option("thresholds", "--format, --table and --out")] = None,
    iou_type: Annotated[str | None, options.iou_type_option(" for the person-score rows")] = None,
    thresholds: Annotated[
        str | None, typer.Option("--thresholds", help="Person-score thresholds in [0,1], e.g. 0.5,0.7,0.9 [default: 0,0.05,...,0.95].")
    ] = None,
    kp_thresholds: Annotated[
        str | None, typer.Option("--kp-thresholds", help="Keypoint-score thresholds (logits), e.g. 0,2,4 [default: -1,0,1,2,3,4,5].")
    ] = None,
    person_thresh: options.PersonThresh = None,
    fmt: Annotated[
        str, options.format_option("table or markdown (AP/AR, precision, recall, F1 in percent), csv (one table) or json (both).")
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
        Path | None, options.out_option("Write the CSV/Markdown tables and threshold_curves.png here [default: RUN_DIR].")
    ] = None,
    run_alias: options.RunAlias = None,
    gt_alias: options.GtAlias = None,
    results_alias: options.ResultsAlias = None,
) -> None:
    """Compare person-score thresholds (exact COCO AP/AR and TP/FP/FN per threshold) and keypoint-score thresholds
    (per-keypoint precision and recall), from one COCOeval pass instead of one per threshold.

    Threshold lists are comma-separated numbers without empty items; they are used sorted and without duplicates
    (a note says so when that changed the list). best_f1 marks the threshold with the highest F1 at OKS/IoU 0.50
    (the lowest among equals), and no threshold when every F1 is 0 or undefined.

    --format csv prints one CSV table, the person table unless --table keypoint (which needs a run directory);
    --format json prints both as {"person": [...], "keypoint": [...]}. table and markdown show the COCO stats (AP,
    AR, ...), precision, recall and F1 in percent with one decimal (n/a where COCO gives -1 or a ratio is 0/0);
    csv and json keep fractions at full precision.
    The keypoint-score part needs a run directory (RUN_DIR); GT_JSON RESULTS_JSON give the person-score part.
    The keypoint rows count the keypoints of persons scored above --person-thresh.
    """
    from kpbench.analysis.thresholds import (
        check_keypoint_thresholds,
        check_person_thresh,
        check_person_thresholds,
        format_report,
        thresholds_for_files,
        thresholds_for_run,
        write_threshold_files,
    )
    from kpbench.core.config import ThresholdSettings, load_config, merge_settings
    from kpbench.core.io import check_format, ensure_output_dir
    from kpbench.evaluation.cocofiles import check_iou_type

    check_format(fmt)
    options.check_table(table, TABLES, fmt, "both tables")
    given = options.sources("thresholds", source, results_json, run_alias, gt_alias, results_alias)
    run_dir = given.run_dir
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
        assert given.gt is not None and given.results is not None
        report = thresholds_for_files(given.gt, given.results, settings)
        out_dir = out
    for note in report.notes:
        echo_err(f"note: {note}")

    typer.echo(format_report(report, fmt, table), nl=False)
    if out_dir is not None:
        for path in write_threshold_files(out_dir, report.person, report.keypoint,
                                          keypoint_score_kind=report.keypoint_score_kind):
            echo_err(f"wrote {path}")


TABLES = ("person", "keypoint")


def _parse_thresholds(text: str | None, option: str) -> list[float] | None:
    """A comma-separated threshold list; an empty item ("0.5,,0.7", a trailing comma) is an error, not skipped."""
    from kpbench.core.config import parse_list

    if text is not None:
        items = [item.strip() for item in text.split(",")]
        if any(items) and not all(items):
            raise KpbenchError(f"{option}: empty item in {text!r}; give numbers separated by single commas")
    return parse_list(text, float, option)
