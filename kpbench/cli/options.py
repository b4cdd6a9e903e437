"""The command line's shared vocabulary: one definition per concept, used by every command that has it.

A concept has one option name everywhere (README's "Command-line options" table lists them). Old spellings stay
as hidden aliases, so that scripts keep working: `data download --root`, `draw --score-thresh`, `evaluate --run`,
`thresholds --gt/--results`. Settings that a --config file can supply default to None ("not given"); the real
defaults live in kpbench.core.config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from kpbench.core.errors import KpbenchError

# --- where the data is ------------------------------------------------------------------------------------------
CocoRoot = Annotated[
    str | None,
    typer.Option("--coco-root", help="COCO root: annotations/ and SPLIT/ [default: $KPBENCH_COCO_ROOT].", show_default=False),
]
RootAlias = Annotated[str | None, typer.Option("--root", hidden=True, help="Old name of --coco-root.")]
Split = Annotated[str | None, typer.Option("--split", help="COCO split [default: val2017].", show_default=False)]
ImageIds = Annotated[str | None, typer.Option("--image-ids", help="Only these image ids: 139,785,...", show_default=False)]

# --- the model: its weights and its own settings ----------------------------------------------------------------
MODEL_HELP = ("The pose model: keypointrcnn, yolo or yolo:PATH.pt (the yolo extra), mediapipe, "
              "FILE.py:Class, package.module:Class or an installed kpbench.models entry point "
              "[default: keypointrcnn].")
WEIGHTS_HELP = ("Keypoint R-CNN: COCO_V1, COCO_LEGACY, none (random, seeded) or a checkpoint PATH [default: COCO_V1]; "
                "other models: their weights file, if they take one.")
# What a command that takes several models adds to the two helps above.
REPEAT_NOTE = (" Repeat it for rows per model (--model keypointrcnn --model yolo), one --weights per --model, in "
               "order (default: the model's own).")
Model = Annotated[str | None, typer.Option("--model", help=MODEL_HELP, show_default=False)]
Weights = Annotated[str | None, typer.Option("--weights", help=WEIGHTS_HELP, show_default=False)]
Models = Annotated[list[str] | None, typer.Option("--model", help=MODEL_HELP + REPEAT_NOTE, metavar="<str>",
                                                 show_default=False)]
WeightsList = Annotated[list[str] | None, typer.Option("--weights", help=WEIGHTS_HELP + REPEAT_NOTE, metavar="<str>",
                                                       show_default=False)]
MinSize = Annotated[
    int | None,
    typer.Option("--min-size", help="Input size: the short side (Keypoint R-CNN); YOLO's imgsz and MediaPipe's resize "
                 "(the long side) [default: the model's own, 800 for Keypoint R-CNN].", show_default=False),
]
MaxSize = Annotated[
    int | None,
    typer.Option("--max-size", help="Input size: the long-side cap (Keypoint R-CNN; refused by models without one) "
                 "[default: 1333].", show_default=False),
]
BoxScoreThresh = Annotated[
    float | None,
    typer.Option(
        "--box-score-thresh",
        help="The model's own detection threshold, a model setting (detections below it are never made), not a "
        "filter on results; YOLO's conf; refused by models without one [default: the model's own, 0.05 for "
        "Keypoint R-CNN (the AP setting), 0.001 for YOLO].",
        show_default=False,
    ),
]
Device = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N [default: auto].", show_default=False)]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed of random weights (--weights none) [default: 0].", show_default=False)]

# --- filters on results -----------------------------------------------------------------------------------------
PersonThresh = Annotated[
    float | None,
    typer.Option(
        "--person-thresh",
        help="Person-score threshold: only persons whose score (a probability, in [0, 1]) is above this "
        "[default: thresholds 0.9; draw: one that suits the model, said on stderr].",
        show_default=False,
    ),
]
KpThresh = Annotated[
    float | None,
    typer.Option(
        "--kp-thresh", help="Keypoint-score threshold: only keypoints whose score is above this, on the scale of "
        "the model's keypoint scores [default: 2 for logits (Keypoint R-CNN), 0.5 for probabilities (YOLO)].",
        show_default=False,
    ),
]
ScoreThreshAlias = Annotated[float | None, typer.Option("--score-thresh", hidden=True, help="Old name of --person-thresh.")]

# --- evaluation -------------------------------------------------------------------------------------------------
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Evaluator: vectorized (the default: pycocotools' numbers and per-image matches bit for bit, on arrays), "
        "pycocotools (the reference) or hotcoco (optional: the fast extra).",
    ),
]


def iou_type_option(what: str = "") -> typer.models.OptionInfo:
    """--iou-type: keypoints or bbox; `what` says what it applies to in this command."""
    return typer.Option("--iou-type", help=f"keypoints (OKS) or bbox (IoU){what} [default: keypoints].", show_default=False)


# --- output -----------------------------------------------------------------------------------------------------
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars on stderr.")]


def out_option(help: str) -> typer.models.OptionInfo:
    """--out: where a command writes (what goes there differs per command, so the help does)."""
    return typer.Option("--out", help=help, show_default=False)


def format_option(help: str) -> typer.models.OptionInfo:
    """--format: what stdout holds (the formats differ per command, so the help does)."""
    return typer.Option("--format", help=help)


def config_option(section: str, exceptions: str) -> typer.models.OptionInfo:
    """--config: a TOML file whose [section] table sets the command's options."""
    return typer.Option(
        "--config",
        help=f"TOML file whose [{section}] table sets the options below (key = option name with _ for -), except "
        f"{exceptions}; options given on the command line win.",
        show_default=False,
    )


def alias(value: object, alias_value: object, name: str, alias_name: str) -> tuple[object, str]:
    """The value of an option given under its name or its old one (not both), and the name it was given under."""
    if alias_value is None:
        return value, name
    if value is not None:
        raise KpbenchError(f"{alias_name}: the old name of {name}; give one of them")
    return alias_value, alias_name


# --- inputs of evaluate and thresholds: a run directory, or GT_JSON RESULTS_JSON -------------------------------
# Two optional arguments rather than one list, so that the usage line reads [RUN_DIR|GT_JSON] [RESULTS_JSON].
Source = Annotated[
    Path | None,
    typer.Argument(
        metavar="RUN_DIR|GT_JSON",
        help="A run directory made by `kpbench run`, or a COCO ground-truth JSON (then RESULTS_JSON too).",
        show_default=False,
    ),
]
Results = Annotated[
    Path | None,
    typer.Argument(metavar="RESULTS_JSON", help="With GT_JSON: a COCO results JSON (a list of detections).", show_default=False),
]
RunAlias = Annotated[Path | None, typer.Option("--run", hidden=True, help="Old spelling of RUN_DIR.")]
GtAlias = Annotated[Path | None, typer.Option("--gt", hidden=True, help="Old spelling of GT_JSON.")]
ResultsAlias = Annotated[Path | None, typer.Option("--results", hidden=True, help="Old spelling of RESULTS_JSON.")]


@dataclass(frozen=True)
class Sources:
    """What evaluate or thresholds scores: a run directory, or a GT file and a results file."""

    run_dir: Path | None = None
    gt: Path | None = None
    results: Path | None = None


def sources(
    command: str, source: Path | None, results_json: Path | None, run: Path | None, gt: Path | None, results: Path | None
) -> Sources:
    """The inputs given as `RUN_DIR` or `GT_JSON RESULTS_JSON` (or the old --run / --gt --results), checked."""
    paths = [p for p in (source, results_json) if p is not None]
    old = [p for p in (run, gt, results) if p is not None]
    if paths and old:
        raise KpbenchError(f"{command}: give either RUN_DIR or GT_JSON RESULTS_JSON, not both")
    if run is not None and (gt is not None or results is not None):
        raise KpbenchError(f"{command}: give either RUN_DIR or GT_JSON RESULTS_JSON, not both")
    if run is not None:
        paths = [run]
    elif gt is not None or results is not None:
        if gt is None or results is None:
            raise KpbenchError(f"{command}: --gt and --results go together (or give GT_JSON RESULTS_JSON)")
        paths = [gt, results]
    if not paths:
        raise KpbenchError(f"{command} needs RUN_DIR, or GT_JSON RESULTS_JSON")
    if len(paths) == 1:
        (path,) = paths
        if not path.exists():
            raise KpbenchError(f"{path}: run directory not found")
        if not path.is_dir():
            raise KpbenchError(f"{path}: not a directory (for a results file, give GT_JSON RESULTS_JSON)")
        return Sources(run_dir=path)
    for path in paths:
        if path.is_dir():
            raise KpbenchError(f"{path}: a directory, expected a JSON file (a run directory comes alone: {command} RUN_DIR)")
    return Sources(gt=paths[0], results=paths[1])


# --- evaluation: keypoint schema and COCOeval's parameters -----------------------------------------------------
SchemaName = Annotated[
    str | None,
    typer.Option("--schema", help="A built-in keypoint schema: coco17, crowdpose14 or ap10k17 [default: the one the "
                 "GT's keypoint category names].", show_default=False),
]
Sigmas = Annotated[
    str | None,
    typer.Option("--sigmas", help="Per-keypoint OKS sigmas for a keypoint set kpbench has none for: a comma list "
                 "(0.05,0.08,...) or a JSON file with a list.", show_default=False),
]
MaxDets = Annotated[
    str | None,
    typer.Option("--max-dets", help="COCOeval's maxDets, e.g. 20 or 1,10,100 [default: 20 for keypoints, 1,10,100 "
                 "for boxes].", show_default=False),
]
AreaRanges = Annotated[
    str | None,
    typer.Option("--area-ranges", help="COCOeval's area ranges as LABEL:LO:HI, the first one 'all' [default: COCO's].",
                 show_default=False),
]
IouThresholds = Annotated[
    str | None,
    typer.Option("--iou-thresholds", help="IoU/OKS thresholds: 0.5,0.75 or LO:HI:STEP [default: 0.5:0.95:0.05].",
                 show_default=False),
]
UseCats = Annotated[
    bool, typer.Option("--use-cats/--no-use-cats", help="COCOeval's useCats (--no-use-cats pools categories).")
]
DropZeroKeypoints = Annotated[
    bool,
    typer.Option("--drop-zero-keypoints", help="xtcocotools' rule: leave out results whose keypoint scores are all "
                 "0 (pycocotools, the default, counts them)."),
]
Bootstrap = Annotated[
    int | None,
    typer.Option("--bootstrap", help="Also give a percentile interval on every stat from N image-bootstrap "
                 "replicates (pycocotools backend).", show_default=False),
]
BootstrapSeed = Annotated[int, typer.Option("--bootstrap-seed", help="Seed of the bootstrap's image draws.")]
Groups = Annotated[
    str | None,
    typer.Option("--groups", help="Keypoint groups for AP per group, instead of the schema's (coco17: head, arms, "
                 "torso, legs): NAME:KP,KP,...;NAME:KP,... with keypoint names or 0-based indices, or a JSON file "
                 "{\"NAME\": [keypoints]}.", show_default=False),
]


def groups_spec(groups: str | None) -> Any:
    """--groups parsed (names not yet checked against a schema), or None for the schema's own groups."""
    if groups is None:
        return None
    from kpbench.core.schema import parse_groups

    return parse_groups(groups)


def checked_groups(group_spec: Any, schema: Any) -> Any:
    """--groups resolved against the keypoint set `schema` (a KeypointSchema), so that a keypoint it does not have
    stops the command before the evaluation or analysis, in one line naming --groups or its JSON file; None when
    --groups was not given."""
    if group_spec is None or schema is None:
        return group_spec
    from kpbench.core.schema import resolve_groups

    return resolve_groups(group_spec, schema)


def run_schema(run_dir: Path) -> Any:
    """The keypoint schema a run directory records (its manifest alone: nothing is evaluated)."""
    from kpbench.runs.directory import run_dir_format

    return run_dir_format(run_dir).schema


def eval_settings(max_dets: str | None, area_ranges: str | None, iou_thresholds: str | None, use_cats: bool) -> Any:
    """The EvalSettings of the COCOeval options (None values: COCO's)."""
    from kpbench.evaluation.settings import EvalSettings, parse_area_ranges, parse_iou_thresholds, parse_max_dets

    return EvalSettings(
        max_dets=parse_max_dets(max_dets) if max_dets is not None else None,
        area_ranges=parse_area_ranges(area_ranges) if area_ranges is not None else None,
        iou_thresholds=parse_iou_thresholds(iou_thresholds) if iou_thresholds is not None else None,
        use_cats=use_cats,
    )


def schema_and_sigmas(schema_name: str | None, sigmas: str | None) -> tuple[Any, list[float] | None]:
    """The --schema (a KeypointSchema) and --sigmas (a list) as given, each None when not."""
    schema = None
    if schema_name is not None:
        from kpbench.core.schema import get_schema

        try:
            schema = get_schema(schema_name)
        except KpbenchError as exc:
            raise KpbenchError(f"--schema: {exc}") from None
    sigma_values = None
    if sigmas is not None:
        from kpbench.core.schema import parse_sigmas

        sigma_values = parse_sigmas(sigmas)
    return schema, sigma_values


def check_table(table: str | None, tables: tuple[str, ...], fmt: str, json_prints: str) -> None:
    """--table names one of `tables`, and not with --format json (which prints `json_prints`)."""
    if table is not None and table not in tables:
        raise KpbenchError(f"--table: must be one of {', '.join(tables)}, got {table!r}")
    if table is not None and fmt == "json":
        raise KpbenchError(f"--table: not with --format json, which prints {json_prints}")
