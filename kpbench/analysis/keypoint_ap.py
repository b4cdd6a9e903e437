"""AP per keypoint and per keypoint group: COCOeval on a slice of the keypoints.

Definitions (the same machinery for both; a keypoint is a group of one):

- **Per group** G (a list of keypoints, `KeypointSchema.groups` or the caller's): COCOeval's keypoint evaluation
  with every GT and every detection cut down to the keypoints of G, OKS computed over them with their own sigmas,
  and each GT's `num_keypoints` recounted as its labelled (v > 0) keypoints in G, as mmpose's
  `KeypointPartitionMetric` recounts it. A GT with no labelled keypoint in G is then ignored as COCOeval ignores
  any GT without labelled keypoints: it is not a miss, and a detection COCOeval matches to it is neither a true nor
  a false positive.
- **Per keypoint** j: the group {j}: COCOeval over the GTs that label keypoint j, with j's own keypoint
  similarity exp(-d² / (2 s k_j²)) (s the GT's area, k_j = 2 sigma_j) as the OKS.
- **all**: the plain evaluation of the whole keypoint set (the GT's own `num_keypoints`): `kpbench.evaluate`'s
  stats.

Everything else is COCOeval's as it is for the whole set: the person score ranks the detections, each image keeps
its top maxDets (20) by that score, the OKS thresholds are .50:.05:.95, and GTs keep their `area` (the OKS scale
and the area ranges). A detection's area, which decides whether an unmatched detection counts in the medium and
large ranges, is the one the whole evaluation gives it (its keypoints' extent, or its `bbox` where pycocotools
reads boxes), not the extent of the sliced keypoints: a single keypoint has no extent, and mmpose's partition
metric, which lets pycocotools take the sliced extent, leaves every unmatched detection out of APm and APl. The
two definitions agree on every stat of area "all" (AP, AP50, AP75, AR, AR50, AR75); tests check both.

The evaluation runs on arrays (`kpbench.evaluation.vectorized.KeypointEvaluator`, pycocotools' numbers bit for
bit; the detections are sliced as arrays), or with `evaluator="pycocotools"` through `kpbench.evaluate` on sliced
records (the reference: the same numbers, several times slower). The tests compare both with bare pycocotools run
on the sliced keypoints and sigmas, `==` on every stat and on the precision and recall arrays.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.arrays import DetectionArrays
from kpbench.core.errors import KpbenchError
from kpbench.core.schema import ALL_KEYPOINTS, KeypointSchema, resolve_groups
from kpbench.evaluation.cocoeval import without_zero_keypoint_arrays, without_zero_keypoint_results, zero_keypoint_rule
from kpbench.evaluation.cocofiles import GroundTruth, Results, SeveralKeypointSets, load_ground_truth, load_results
from kpbench.evaluation.settings import EvalSettings

if TYPE_CHECKING:
    from kpbench.evaluation.cocoeval import EvalResult

SECTION = "keypoint_ap"  # the name of its files (keypoint_ap.csv/.md/.json) and of its analyze.json section
TITLE = "AP per keypoint and per keypoint group"
EVALUATORS: tuple[str, ...] = ("vectorized", "pycocotools")
KINDS: tuple[str, ...] = ("all", "group", "keypoint")
# The stats shown in tables (files keep these; the JSON rows hold every stat of the evaluation).
SHOWN_STATS: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR")
NOTE = (
    "COCOeval's keypoint AP (OKS .50:.05:.95, maxDets 20) with GTs and detections cut down to a group's keypoints: "
    "OKS over those keypoints with their own sigmas, each GT's num_keypoints recounted in the group (a GT with "
    "none labelled there is ignored, as COCOeval ignores unlabelled persons). A keypoint is a group of one: its "
    "own keypoint similarity is the OKS. The person score ranks detections; GT areas and detection areas are the "
    "whole evaluation's. all: the plain evaluation. num_gt: GTs that count (not crowd, labelled in the group)."
)


@dataclass
class PartAP:
    """The evaluation of one part (the whole set, a group or a keypoint)."""

    kind: str  # "all", "group" or "keypoint"
    name: str
    indices: tuple[int, ...]  # 0-based keypoints of the schema
    keypoints: tuple[str, ...]  # their names
    num_gt: int  # GTs COCOeval counts in area "all": not crowd, with a labelled keypoint in the part
    stats: dict[str, float]
    precision: np.ndarray  # COCOeval's (T, R, K, A, M)
    recall: np.ndarray  # (T, K, A, M)

    def row(self) -> dict[str, Any]:
        """The part as a JSON-ready row: kind, name, num_keypoints, num_gt, every stat, keypoints (a group's names
        comma-joined; "all" for the whole set)."""
        members = ALL_KEYPOINTS if self.kind == "all" else ",".join(self.keypoints)
        return {"kind": self.kind, "name": self.name, "num_keypoints": len(self.indices), "num_gt": self.num_gt,
                **self.stats, "keypoints": members}


@dataclass
class KeypointAP:
    """AP of the whole keypoint set, of each group and of each keypoint (in that order in `parts`)."""

    schema: KeypointSchema
    parts: list[PartAP]
    evaluator: str
    settings: EvalSettings
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per part (`PartAP.row`)."""
        return [part.row() for part in self.parts]

    def columns(self) -> list[str]:
        """The columns of the tables: kind, name, num_gt, the shown stats this evaluation has, keypoints."""
        stats = [s for s in SHOWN_STATS if s in self.parts[0].stats] if self.parts else list(SHOWN_STATS)
        return ["kind", "name", "num_gt", *stats, "keypoints"]

    def section(self) -> dict[str, Any]:
        """The table as an analysis section ({"title", "note", "columns", "rows", "percent"}, as `kpbench analyze`
        writes and prints its sections; see `kpbench.analysis.diagnose`)."""
        stats = [c for c in self.columns() if c in self.parts[0].stats] if self.parts else []
        return {"title": f"{TITLE} ({self.schema.name})", "note": NOTE, "columns": self.columns(),
                "rows": self.rows(), "percent": stats, "schema": self.schema.name, "evaluator": self.evaluator}

    def __getitem__(self, name: str) -> PartAP:
        """The part named `name` ("all", a group's name or a keypoint's)."""
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(name)


# --- inputs --------------------------------------------------------------------------------------------------


@dataclass
class _Inputs:
    gt: GroundTruth
    schema: KeypointSchema
    dets: DetectionArrays  # the keypoint category's detections, results order
    areas: np.ndarray | None  # (N,) each detection's area in the whole evaluation; None: its keypoints' extent
    boxes: np.ndarray | None  # (N, 4) the results' own boxes when pycocotools reads them (loadRes), else None
    notes: list[str]


def _prepare(
    gt: Any, results: Any, schema: KeypointSchema | None, sigmas: Sequence[float] | None,
    drop_zero_keypoint_results: bool,
) -> _Inputs:
    try:
        gt_data = load_ground_truth(gt, "keypoints", schema, sigmas)
    except SeveralKeypointSets as exc:
        raise KpbenchError(f"{exc} AP per keypoint scores one keypoint set at a time: pass a GT of one keypoint "
                           "category") from None
    schema = gt_data.schema
    assert schema is not None  # a keypoint GroundTruth always has one
    notes = list(gt_data.notes)
    boxes = None
    # xtcocotools' all-zero rule, as kpbench.evaluate applies it: asked for, or the protocol's own (CrowdPose's).
    zero_rule = zero_keypoint_rule(schema, "keypoints", drop_zero_keypoint_results)
    if isinstance(results, DetectionArrays):
        if results.keypoints is None:
            raise KpbenchError("AP per keypoint: the detections have no keypoints")
        if results.num_keypoints != schema.num_keypoints:
            raise KpbenchError(f"AP per keypoint: the detections have {results.num_keypoints} keypoints, the "
                               f"{schema.name} schema {schema.num_keypoints}")
        if zero_rule is not None:
            results, notes = without_zero_keypoint_arrays(results, notes, zero_rule)
        in_category = results.category_ids == schema.category_id
        dets = results if in_category.all() else results.take(in_category)  # a run's: no 200 MB copy
        areas = None  # the keypoints' extent, computed for the detections evaluated only
    else:
        res = load_results(results, gt_data, "keypoints")
        if zero_rule is not None:
            res = without_zero_keypoint_results(res, zero_rule)
        records = res.results
        notes += res.notes
        from kpbench.evaluation.cocofiles import loadres_takes_box

        takes_box = bool(records) and loadres_takes_box(records[0])
        records = [r for r in records if r["category_id"] == schema.category_id]
        n, k = len(records), schema.num_keypoints
        keypoints = np.asarray([r["keypoints"] for r in records], dtype=np.float64).reshape(n, k, 3)
        dets = DetectionArrays(
            image_ids=np.asarray([r["image_id"] for r in records], dtype=np.int64).reshape(n),
            category_ids=np.full(n, schema.category_id, dtype=np.int64),
            scores=np.asarray([r["score"] for r in records], dtype=np.float64).reshape(n),
            keypoints=keypoints,
        )
        if takes_box:  # loadRes reads the whole file as boxes: every area is the box's w * h
            boxes = np.asarray([r["bbox"] for r in records], dtype=np.float64).reshape(n, 4)
            areas = boxes[:, 2] * boxes[:, 3]
        else:
            areas = None
    return _Inputs(gt_data, schema, dets, areas, boxes, notes)


def _parts(schema: KeypointSchema, groups: Any, per_keypoint: bool) -> list[tuple[str, str, tuple[int, ...]]]:
    """(kind, name, indices): the whole set, the groups, then every keypoint."""
    chosen = schema.groups if groups is None else resolve_groups(groups, schema)
    parts = [("all", ALL_KEYPOINTS, tuple(range(schema.num_keypoints)))]
    parts += [("group", name, indices) for name, indices in chosen]
    if per_keypoint:
        parts += [("keypoint", name, (j,)) for j, name in enumerate(schema.keypoint_names)]
    return parts


def _sliced_annotations(gt: GroundTruth, schema: KeypointSchema) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The keypoint category's annotations (file order) and their keypoints as a (G, K, 3) array."""
    anns = [a for a in gt.dataset["annotations"] if a["category_id"] == schema.category_id]
    keypoints = np.asarray([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), schema.num_keypoints, 3)
    return anns, keypoints


def _part_gt(gt: GroundTruth, anns: list[dict[str, Any]], keypoints: np.ndarray, indices: tuple[int, ...],
             category: dict[str, Any]) -> dict[str, Any]:
    """The GT dataset cut down to `indices`: each annotation's keypoints sliced and num_keypoints recounted."""
    sliced = keypoints[:, list(indices), :]
    counts = np.count_nonzero(sliced[:, :, 2] > 0, axis=1)
    flat = sliced.reshape(len(anns), 3 * len(indices)).tolist()  # (0, 3n) too: no annotation at all
    kept = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
    annotations = [{**{key: a[key] for key in kept}, "keypoints": flat[i], "num_keypoints": int(counts[i])}
                   for i, a in enumerate(anns)]
    return {"images": gt.dataset["images"], "annotations": annotations, "categories": [category]}


def _counted(gt_dataset: dict[str, Any], category_id: int, settings: EvalSettings) -> int:
    """GTs COCOeval counts in the first area range ("all"): not crowd, num_keypoints > 0, area in the range."""
    lo, hi = (settings.area_ranges[0][1:] if settings.area_ranges is not None else (0.0, 1e5**2))
    return sum(1 for a in gt_dataset["annotations"] if a["category_id"] == category_id and not a["iscrowd"]
               and a["num_keypoints"] > 0 and lo <= a["area"] <= hi)


# --- evaluation ----------------------------------------------------------------------------------------------


def keypoint_ap(
    gt: str | Path | dict[str, Any] | GroundTruth,
    results: str | Path | list[dict[str, Any]] | Results | DetectionArrays,
    schema: KeypointSchema | None = None,
    sigmas: Sequence[float] | None = None,
    groups: Sequence[tuple[str, Sequence[int | str]]] | None = None,
    per_keypoint: bool = True,
    settings: EvalSettings | None = None,
    evaluator: str = "vectorized",
    drop_zero_keypoint_results: bool = False,
    whole: EvalResult | None = None,
) -> KeypointAP:
    """AP of the whole keypoint set, of each keypoint group and (with `per_keypoint`) of each keypoint.

    `gt`, `results`, `schema`, `sigmas`, `settings` and `drop_zero_keypoint_results` as `kpbench.evaluate`'s;
    `results` may also be `DetectionArrays` (checked arrays: nothing is parsed). `groups` replaces the schema's
    groups: (name, keypoints) pairs, keypoints by name or 0-based index (`kpbench.core.schema.parse_groups`
    reads `--groups`). `evaluator`: "vectorized" (the default) or "pycocotools" (the reference). `whole`: the
    evaluation of the whole set on these same inputs and settings, already made (a run's own), whose stats and
    arrays the "all" row takes instead of evaluating it again. The definitions are in the module docstring.
    """
    if evaluator not in EVALUATORS:
        raise KpbenchError(f"evaluator: must be one of {', '.join(EVALUATORS)}, got {evaluator!r}")
    settings = settings or EvalSettings()
    if not settings.use_cats:
        raise KpbenchError("AP per keypoint: useCats=0 is not supported (it scores one keypoint category)")
    if isinstance(results, DetectionArrays) and drop_zero_keypoint_results:
        raise KpbenchError("drop_zero_keypoint_results applies to results records, not to DetectionArrays")
    inputs = _prepare(gt, results, schema, sigmas, drop_zero_keypoint_results)
    schema = inputs.schema
    parts = _parts(schema, groups, per_keypoint)
    if evaluator == "vectorized":
        return _keypoint_ap_vectorized(inputs, parts, settings, whole)
    anns, gt_keypoints = _sliced_annotations(inputs.gt, schema)
    category = next(c for c in inputs.gt.dataset["categories"] if c["id"] == schema.category_id)
    out = []
    for kind, name, indices in parts:
        if kind == "all":  # the plain evaluation, the GT's own num_keypoints
            dataset, part_category = inputs.gt.dataset, category
        else:
            names = [schema.keypoint_names[i] for i in indices]
            part_category = {**category, "keypoints": names, "skeleton": []}
            dataset = _part_gt(inputs.gt, anns, gt_keypoints, indices, part_category)
        if kind == "all" and whole is not None:
            stats, precision, recall = whole.stats, whole.precision, whole.recall
        else:
            stats, precision, recall = _pycocotools(dataset, part_category, inputs, indices, settings)
        out.append(PartAP(kind, name, indices, tuple(schema.keypoint_names[i] for i in indices),
                          _counted(dataset, schema.category_id, settings), stats, precision, recall))
    return KeypointAP(schema, out, evaluator, settings, _notes(inputs))


def _notes(inputs: _Inputs) -> list[str]:
    schema = inputs.schema
    notes = list(inputs.notes)
    if schema.protocol != "coco":
        notes.append(f"AP per keypoint is COCOeval's over all images with the {schema.name} sigmas, not the "
                     f"{schema.protocol} protocol's own split")
    return notes


def _keypoint_ap_vectorized(
    inputs: _Inputs, parts: list[tuple[str, str, tuple[int, ...]]], settings: EvalSettings,
    whole: EvalResult | None,
) -> KeypointAP:
    """Every part on arrays (`kpbench.evaluation.vectorized.KeypointPartEvaluator`): the GT arrays, the detections
    COCOeval keeps (each image's top maxDets by score, the same for every part) and their pairs with the GTs are
    prepared once; each part then computes its own OKS, matching and accumulation."""
    from kpbench.evaluation.vectorized import KeypointPartEvaluator

    schema = inputs.schema
    dets = inputs.dets
    evaluator = KeypointPartEvaluator(inputs.gt.dataset, schema.sigma_array, settings, schema.category_id,
                                      dets.image_ids, dets.keypoints, dets.scores, inputs.areas)  # type: ignore[arg-type]
    out = []
    for kind, name, indices in parts:
        if kind == "all" and whole is not None:
            stats, precision, recall = whole.stats, whole.precision, whole.recall
            num_gt = evaluator.num_counted(None)
        else:
            part = None if kind == "all" else indices  # "all": the GT's own num_keypoints
            result = evaluator.evaluate_part(part)
            stats, precision, recall = result.stats, result.precision, result.recall
            num_gt = evaluator.num_counted(part)
        out.append(PartAP(kind, name, indices, tuple(schema.keypoint_names[i] for i in indices), num_gt, stats,
                          precision, recall))
    return KeypointAP(schema, out, "vectorized", settings, _notes(inputs))


def _pycocotools(
    dataset: dict[str, Any], category: dict[str, Any], inputs: _Inputs, indices: tuple[int, ...],
    settings: EvalSettings,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    from kpbench.evaluation.cocoeval import evaluate

    schema = inputs.schema
    part_schema = KeypointSchema(
        name=f"{schema.name}:{len(indices)}", keypoint_names=tuple(category["keypoints"]), skeleton=(),
        sigmas=tuple(float(s) for s in schema.sigma_array[list(indices)]), category_id=schema.category_id,
        category_name=schema.category_name,
    )
    if len(indices) == schema.num_keypoints and indices == tuple(range(schema.num_keypoints)):
        part_schema = dataclasses.replace(schema, protocol="coco", groups=())  # COCOeval's stats, also for CrowdPose
    records = _records(inputs, indices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the boxes below are there on purpose (the detections' areas)
        result = evaluate({**dataset, "categories": [category]}, records, schema=part_schema, settings=settings,
                          backend="pycocotools")
    return result.stats, result.precision, result.recall


def _records(inputs: _Inputs, indices: tuple[int, ...]) -> list[dict[str, Any]]:
    """COCO keypoint results of the sliced detections, each with a `bbox` whose w * h is the detection's area in
    the whole evaluation (its own box where loadRes reads boxes, else its keypoints' extent), so that pycocotools'
    loadRes gives it that area."""
    dets = inputs.dets
    keypoints = dets.keypoints
    assert keypoints is not None
    if inputs.boxes is not None:
        boxes = inputs.boxes
    else:
        x, y = keypoints[:, :, 0], keypoints[:, :, 1]
        x0, y0 = x.min(axis=1), y.min(axis=1)
        boxes = np.stack([x0, y0, x.max(axis=1) - x0, y.max(axis=1) - y0], axis=1) if len(dets) else np.zeros((0, 4))
    sliced = keypoints[:, list(indices), :].reshape(len(dets), 3 * len(indices)).tolist()
    return [{"image_id": int(i), "category_id": int(c), "keypoints": kps, "score": float(s), "bbox": box}
            for i, c, kps, s, box in zip(dets.image_ids.tolist(), dets.category_ids.tolist(), sliced,
                                         dets.scores.tolist(), boxes.tolist())]


def keypoint_ap_for_run(
    run_dir: str | Path, groups: Sequence[tuple[str, Sequence[int | str]]] | None = None,
    per_keypoint: bool = True, evaluator: str = "vectorized", result: EvalResult | None = None,
) -> KeypointAP:
    """`keypoint_ap` of a run directory, on arrays: the detections the run's keypoint evaluation `result` checked
    (as `evaluate_run` returns it, so nothing is read again) or, without one, the run's store read and checked as
    `kpbench evaluate RUN_DIR` reads it. No results file is parsed (at 500,000 detections, parsing
    keypoints_results.json cost three times the 22 evaluations)."""
    from kpbench.evaluation.cocofiles import validate_ground_truth
    from kpbench.evaluation.runeval import finished_run_arrays, load_run_ground_truth, run_checked_detections
    from kpbench.runs.directory import run_dir_format

    run_dir = Path(run_dir)
    schema = run_dir_format(run_dir).schema
    inputs = result.inputs if result is not None else None
    if inputs is not None and inputs.iou_type == "keypoints" and inputs.gt_dataset is not None:
        # The evaluation's own parse of ground_truth.json, checked again (a tenth of reading the file again).
        gt_keypoints = validate_ground_truth(inputs.gt_dataset, inputs.gt_source, "keypoints", copy=False,
                                           schema=schema)
    else:
        gt_keypoints = load_run_ground_truth(run_dir, ("keypoints",))["keypoints"]
    whole = None
    if result is not None and result.inputs is not None:
        detections = result.detection_arrays()
        # The run's own evaluation is the "all" row when it is the one keypoint_ap would make: COCO's protocol and
        # parameters, and an evaluator that gives pycocotools' arrays (all but hotcoco). A CrowdPose run's own
        # evaluation is its protocol's, not COCOeval's over every image.
        if (result.settings.is_default() and result.backend in EVALUATORS and result.schema is not None
                and result.schema.protocol == "coco"):
            whole = result
    else:
        checked = run_checked_detections(run_dir, finished_run_arrays(run_dir), {"keypoints": gt_keypoints})
        detections = checked["keypoints"].detections
    return keypoint_ap(gt_keypoints, detections, schema=schema, groups=groups, per_keypoint=per_keypoint,
                       evaluator=evaluator, whole=whole)


# --- output --------------------------------------------------------------------------------------------------


def rows_percent(rows: Sequence[dict[str, Any]], stats: Sequence[str]) -> list[dict[str, Any]]:
    """Rows for people: the stats in percent with one decimal ("n/a" for COCO's -1)."""
    from kpbench.evaluation.cocoeval import percent

    return [{k: (percent(v) if k in stats and v is not None else v) for k, v in row.items()} for row in rows]


def table_text(result: KeypointAP, fmt: str) -> str:
    """The table in a `--format`: table and markdown for people (percent; a keypoint row's keypoints column left
    empty), csv (fractions, the table's columns) and json (every row with every stat)."""
    from kpbench.core.io import json_text, to_csv, to_markdown, to_text_table

    if fmt == "json":
        return json_text(result.rows())
    columns = result.columns()
    if fmt == "csv":
        return to_csv(result.rows(), columns)
    shown = rows_percent(result.rows(), [c for c in columns if c in SHOWN_STATS])
    for row in shown:
        if row["kind"] == "keypoint":
            row["keypoints"] = ""
    title = f"{TITLE} ({result.schema.name}; percent, n/a: no GT):\n"
    if fmt == "markdown":
        return f"### {title}\n{to_markdown(shown, columns)}"
    return title + to_text_table(shown, columns)


def section_files(out_dir: str | Path, section: dict[str, Any], name: str = SECTION) -> dict[Path, str]:
    """NAME.csv, NAME.md and NAME.json of a section, exactly as `kpbench analyze` writes its sections
    (`kpbench.analysis.errors.section_files`), so that evaluate, run and analyze write the same files."""
    from kpbench.core.io import json_text, to_csv, to_markdown

    out = Path(out_dir)
    rows, columns = section["rows"], section.get("columns")
    note = f"{section['note']}\n\n" if section.get("note") else ""
    shown = rows_percent(rows, section.get("percent") or [])
    unit = "\nAP in percent; n/a where the bin has no GT.\n" if section.get("percent") else ""
    return {
        out / f"{name}.csv": to_csv(rows, columns),
        out / f"{name}.md": f"## {section.get('title', name)}\n\n{note}{to_markdown(shown, columns)}{unit}",
        out / f"{name}.json": json_text(section),
    }


def write_keypoint_ap_files(out_dir: str | Path, result: KeypointAP) -> list[Path]:
    """Write keypoint_ap.csv (fractions), keypoint_ap.md (percent) and keypoint_ap.json (every stat) atomically."""
    from kpbench.core.io import atomic_write_files, ensure_output_dir

    ensure_output_dir(out_dir, "--out")
    return atomic_write_files(section_files(out_dir, result.section()))


def read_keypoint_ap_rows(out_dir: str | Path) -> list[dict[str, Any]] | None:
    """The rows of DIR/keypoint_ap.json (every stat, as numbers), or None when there is none."""
    from kpbench.core.io import read_json

    path = Path(out_dir) / f"{SECTION}.json"
    if not path.is_file():
        return None
    data = read_json(path)
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise KpbenchError(f"{path}: expected an object with a 'rows' list (written by kpbench)")
    return rows
