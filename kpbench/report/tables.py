"""Merging result files from many machines and runs into pandas tables (`kpbench report`).

Three kinds:

- ``speed``: speed CSVs written by `kpbench speed` (see `kpbench.engine.speed` for their columns), from any number of
  machines. `speed_table` gives one row per model x device x size x variant (and box score threshold and image
  source, which change the time) with FPS, ms per image, median and p90 ms, the spread, padded shapes, the stage
  split, FLOPs, peak memory and AP when measured; `speed_pivot` gives one row per model, device, variant,
  threshold and image source and one FPS column per size (model x size -> FPS). The `device` column holds the
  device's name: the GPU model on CUDA, the CPU model on a CPU; `model` the model's name, with its weights where
  one model comes with several.
- ``run``: run directories written by `kpbench run` (``manifest.json`` + ``metrics.json``): one row each, with
  weights, input size, dtype, keypoint AP/AR, box AP, the published AP of the weights and the deviations from
  the published protocol.
- ``thresholds``: ``thresholds_person.csv`` of several runs, side by side (one row per threshold, one column per
  run and statistic).

AP values are on the 0-1 scale everywhere (published AP, which torchvision gives in percent, is divided by 100).
A directory argument is searched recursively: for speed CSVs (a ``kpbench-speed`` JSON manifest beside them, or
a header with the columns `kpbench speed` writes, such as ``timestamp`` and ``device_name``, which a merged table
written into the same folder lacks), for run directories (``manifest.json``) and for ``thresholds_person.csv``.
A file argument is taken as it is.

Damaged input follows one rule: a file (or run directory) named on the command line that cannot be read is an
error; a damaged one found while searching a folder is left out with a warning naming it and the reason, and the
rest is reported. A row with fewer or more fields than the header, or a last row without its end of line (a file
cut short while it was written), makes the file damaged: a half-written row is never a row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError, KpbenchWarning
from kpbench.core.schema import BBOX_STAT_NAMES, KEYPOINT_STAT_NAMES

if TYPE_CHECKING:
    import pandas as pd

KINDS = ("speed", "run", "thresholds", "sweep")
FORMATS = ("markdown", "csv", "json")
DEFAULT_PATHS = {"speed": "results/speed", "run": "results", "thresholds": "results", "sweep": "results"}

SPEED_REQUIRED = ("device_name", "size", "variant", "fps", "median_ms", "p90_ms", "status")
# A CSV in a searched folder without a manifest beside it counts as a speed CSV when its header has these.
SPEED_HEADER = ("timestamp", "device", *SPEED_REQUIRED)
# What tells two speed rows of one device, size and variant apart (besides the file they come from).
SPEED_IDENTITY = ("box_score_thresh", "synthetic")
SPEED_TABLE_COLUMNS = (
    "model", "device", "size", "variant", "box_score_thresh", "synthetic", "fps", "ms_per_image", "median_ms",
    "p90_ms", "iqr_over_median", "unstable", "padded_shapes", "stages", "stages_add_up", "gflops_per_image",
    "achieved_tflops", "peak_fraction", "memory_mib", "memory", "dets_per_image", "kp_AP", "box_AP", "status",
    "error", "source",
)  # fmt: skip
# Shown only where some row has a value (CSVs from older versions, or nothing measured them).
SPEED_OPTIONAL_COLUMNS = frozenset({
    "model", "ms_per_image", "iqr_over_median", "unstable", "stages", "stages_add_up", "gflops_per_image",
    "achieved_tflops", "peak_fraction", "kp_AP", "box_AP", "error",
})  # fmt: skip
RUN_COLUMNS = (
    "run", "model", "weights", "device_name", "size", "max_size", "dtype", "batch_size", "box_score_thresh",
    "num_images", "kp_AP", "kp_AP50", "kp_AP75", "kp_AR", "box_AP", "person_box_AP", "model_ms_per_image", "published_kp_AP",
    "published_box_AP", "protocol", "deviations", "status",
)  # fmt: skip
THRESHOLDS_FILE = "thresholds_person.csv"
THRESHOLD_DEFAULT_STATS = ("AP", "AR", "precision_50", "recall_50", "f1_50", "kept")


def _pd() -> Any:
    import pandas as pd

    return pd


# ----------------------------------------------------------------------------------------------------------
# Paths


def _left_out(exc: KpbenchError) -> None:
    """The warning for a damaged file found in a folder (its message names the file)."""
    warnings.warn(f"{exc}; left out", KpbenchWarning, stacklevel=3)


def _no_readable(paths: Sequence[str | Path], what: str, left_out: int) -> KpbenchError:
    return KpbenchError(f"{', '.join(map(str, paths))}: no readable {what} ({left_out} left out, see the warnings)")


def _existing(paths: Sequence[str | Path]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise KpbenchError(f"{p}: no such file or directory")
        out.append(p)
    return out


def _is_speed_csv(path: Path) -> bool:
    """Whether a CSV found in a folder is a `kpbench speed` table: its manifest says so, or (the manifest was
    not copied along) its header has the columns only such a table has. A file that is not a readable text CSV
    at all (empty, binary, not a regular file) is a KpbenchError naming it."""
    from kpbench.core.io import check_regular_file

    manifest = path.with_suffix(".json")
    try:
        if manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("kind") == "kpbench-speed":
            return True
    except (OSError, ValueError, AttributeError):
        pass
    check_regular_file(path, "CSV file")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KpbenchError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    if header is None:
        raise KpbenchError(f"{path}: empty file, not a CSV")
    return set(SPEED_HEADER) <= set(header)


# The columns only a top-down speed table (`kpbench speed --person-boxes`, kpbench.engine.topdown_speed) has.
TOPDOWN_HEADER = ("person_boxes", "kind", "crop_size", "persons_per_image", "ms_per_crop", "ms_per_person")
TOPDOWN_SHOWN = ("model", "person_boxes", "device_name", "kind", "crop_size", "crop_batch_size", "persons_per_image",
                 "flip_test", "postprocess", "median_ms", "ms_per_crop", "crops_per_s", "ms_per_image", "ms_per_person",
                 "status")


def _is_topdown_csv(path: Path) -> bool:
    """Whether a CSV is a top-down speed table: its manifest says so, or its header has the columns only such a
    table has (an unreadable file is left to the reader that names it)."""
    manifest = path.with_suffix(".json")
    try:
        if manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("kind") == "kpbench-speed-topdown":
            return True
        with path.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None) or []
    except (OSError, ValueError, AttributeError, csv.Error):
        return False
    return set(TOPDOWN_HEADER) <= set(header)


def find_topdown_files(paths: Sequence[str | Path]) -> list[Path]:
    """Top-down speed CSVs among `paths`: files as given, and those found in directories."""
    found = []
    for p in _existing(paths):
        candidates = sorted(p.rglob("*.csv")) if p.is_dir() else [p]
        found += [c for c in candidates if c.is_file() and _is_topdown_csv(c)]
    return list(dict.fromkeys(found))


def topdown_table(files: Sequence[Path]) -> pd.DataFrame:
    """One row per top-down speed row (per crop pass, per image and per person-count rows), the columns people
    compare first (`TOPDOWN_SHOWN`), with the file it came from."""
    frames = []
    for path in files:
        df = _read_csv(path, ("kind", "ms_per_crop", "status"))
        df["source"] = path.name
        frames.append(df)
    df = _pd().concat(frames, ignore_index=True)
    return df[[c for c in (*TOPDOWN_SHOWN, "source") if c in df.columns]]


def find_speed_files(paths: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """Speed CSVs and whether each was named: files as given, directories searched for CSVs that are `kpbench
    speed` tables (`_is_speed_csv`; a damaged CSV found there is left out with a warning). Top-down speed tables
    are not among them (`find_topdown_files`)."""
    found: list[tuple[Path, bool]] = []
    for p in _existing(paths):
        if not p.is_dir():
            if not _is_topdown_csv(p):
                found.append((p, True))
            continue
        for c in sorted(p.rglob("*.csv")):
            try:
                if _is_speed_csv(c):
                    found.append((c, False))
            except KpbenchError as exc:
                _left_out(exc)
    if not found:
        raise KpbenchError(f"{', '.join(map(str, paths))}: no speed CSV found (written by `kpbench speed`)")
    return list(dict.fromkeys(found))


def find_run_dirs(paths: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """Run directories and whether each was named: a directory with manifest.json, or every such directory below
    a directory."""
    found: list[tuple[Path, bool]] = []
    for p in _existing(paths):
        if p.is_file():
            p = p.parent if p.name == "manifest.json" else p
        if (p / "manifest.json").exists():
            found.append((p, True))
        elif p.is_dir():
            found += [(m.parent, False) for m in sorted(p.rglob("manifest.json"))]
        else:
            raise KpbenchError(f"{p}: not a run directory (no manifest.json)")
    if not found:
        raise KpbenchError(f"{', '.join(map(str, paths))}: no run directory found (manifest.json written by `kpbench run`)")
    return list(dict.fromkeys(found))


def find_threshold_files(paths: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """thresholds_person.csv files and whether each was named: files as given, directories searched for that name."""
    found: list[tuple[Path, bool]] = []
    empty: list[Path] = []
    for p in _existing(paths):
        files = [(f, False) for f in sorted(p.rglob(THRESHOLDS_FILE))] if p.is_dir() else [(p, True)]
        if not files:
            empty.append(p)
        found += files
    if not found:
        raise KpbenchError(f"{', '.join(map(str, paths))}: no {THRESHOLDS_FILE} found (written by `kpbench thresholds`)")
    for p in empty:  # several folders given, some without a sweep: say so rather than drop them silently
        warnings.warn(f"{p}: no {THRESHOLDS_FILE} found (run `kpbench thresholds {p}`); left out", KpbenchWarning,
                      stacklevel=2)
    return list(dict.fromkeys(found))


def _refuse_json(path: Path, text: str) -> None:
    """A KpbenchError for a JSON file given where a CSV belongs (it would read as a CSV of broken rows): a speed
    CSV's manifest (the .json beside it), a results or GT file."""
    head = text.lstrip()[:1]
    if head not in ("{", "["):
        return
    try:
        data = json.loads(text)
    except ValueError:
        return  # not JSON after all: the CSV checks say what is wrong with it
    hint = ""
    if isinstance(data, dict) and data.get("kind") == "kpbench-speed":
        table = path.with_suffix(".csv")
        hint = f": the manifest of a speed table; give {table}" if table.is_file() else ": the manifest of a speed table; give its .csv"
    raise KpbenchError(f"{path}: a JSON file, not a CSV{hint}")


def _check_rows(path: Path, text: str) -> None:
    """A KpbenchError naming the first half-written row: one with another number of fields than the header, or a
    last row without its end of line (kpbench writes every row whole, so that means the file was cut short). A JSON
    file is said to be one."""
    _refuse_json(path, text)
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise KpbenchError(f"{path}: empty file, not a CSV")
    if not text.endswith(("\n", "\r")):
        raise KpbenchError(f"{path}: row {len(rows) - 1}: no end of line (a half-written row?)")
    for number, row in enumerate(rows[1:], start=1):
        if row and len(row) != len(rows[0]):  # blank lines are skipped, as pandas does
            raise KpbenchError(
                f"{path}: row {number}: {len(row)} fields, the header has {len(rows[0])} (a half-written row?)"
            )


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    from kpbench.core.io import read_file_bytes

    pd = _pd()
    try:
        text = read_file_bytes(path, "CSV file").decode("utf-8")
        _check_rows(path, text)
        df = pd.read_csv(io.StringIO(text))
    except (UnicodeDecodeError, csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise KpbenchError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise KpbenchError(f"{path}: missing column(s) {', '.join(missing)}; is this the right --kind?")
    return df


# ----------------------------------------------------------------------------------------------------------
# Speed


def read_speed_files(paths: Sequence[str | Path], required: Sequence[str] = SPEED_REQUIRED) -> pd.DataFrame:
    """All rows of the speed CSVs found in `paths`, with a `source` column (the file name): the one reader of
    `kpbench speed` tables (report and plot). `required`: the columns a file must have."""
    return _read_speed(paths, required)[0]


def _read_speed(paths: Sequence[str | Path], required: Sequence[str] = SPEED_REQUIRED) -> tuple[pd.DataFrame, list[Path]]:
    """`read_speed_files`, and the files whose rows it holds."""
    pd = _pd()
    frames = []
    read: list[Path] = []
    files = find_speed_files(paths)
    for path, named in files:
        try:
            df = _read_csv(path, required)
            sizes = pd.to_numeric(df["size"], errors="coerce")
            bad = sizes.isna() | (sizes <= 0)
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise KpbenchError(f"{path}: row {row + 1}: 'size' must be a positive number, got {df['size'][row]!r}")
        except KpbenchError as exc:
            if named:
                raise
            _left_out(exc)
            continue
        df["size"] = sizes
        df["source"] = path.name
        frames.append(df)
        read.append(path)
    if not frames:
        raise _no_readable(paths, "speed CSV", len(files))
    return pd.concat(frames, ignore_index=True), read


def _prepare_speed(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with the identity columns filled (old CSVs may lack them) and `memory_mib`/`memory` computed from the
    raw `device` ("cpu", "cuda:0"), then `device` replaced by the device label (`_device_labels`)."""
    pd = _pd()
    df = df.copy()
    df["model"] = _model_labels(df)
    df["synthetic"] = _flags(df["synthetic"]) if "synthetic" in df else False
    if "box_score_thresh" not in df:
        df["box_score_thresh"] = float("nan")
    mem = [_memory(r) for r in df.to_dict("records")]
    df["memory_mib"] = [m[0] for m in mem]
    df["memory"] = [m[1] if not pd.isna(m[0]) else None for m in mem]
    df["device"] = _device_labels(df)
    return df


def _flag(value: Any) -> bool:
    """One cell of a True/False CSV column: True, 1.0 (pandas' merge of booleans with an empty column) or the
    text "True"; empty (NaN, None) and anything else is False."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value) and value == value  # NaN == NaN is False


def _flags(column: pd.Series) -> pd.Series:
    """A True/False CSV column as bools (see `_flag`). Filling its empty cells with False instead is deprecated in
    pandas for a float or object column, and `astype(bool)` would make the text "False" True."""
    return column.map(_flag).astype(bool)


def _model_labels(df: pd.DataFrame) -> pd.Series:
    """The model's name ("" where a CSV names none), with its weights where one name comes with several weights
    (Keypoint R-CNN with COCO_V1 and with COCO_LEGACY are two models of a table). Weights are told apart by their
    sha256 where rows have it (the same file at two paths on two machines is one model) and shown by name: a
    named weights as it is, a file by its file name."""
    pd = _pd()
    if "model" not in df:
        return pd.Series([""] * len(df), index=df.index, dtype=object)

    def text(column: str) -> pd.Series:
        if column not in df:
            return pd.Series([""] * len(df), index=df.index, dtype=object)
        return df[column].where(df[column].notna(), "").astype(str)

    name, weights, sha = text("model"), text("weights"), text("weights_sha256")
    identity = sha.where(sha != "", weights)  # what makes two weights the same
    shown = weights.map(lambda w: Path(w).name if ("/" in w or "\\" in w) else w)
    known = identity != ""
    several = name.map(identity[known].groupby(name[known]).nunique()).fillna(0) > 1
    return name.where(~(several & known), name + " (" + shown + ")")


def _device_labels(df: pd.DataFrame) -> pd.Series:
    """The device name (GPU model, or CPU model on a CPU), suffixed with the source file where two files would
    otherwise give the same row (same device, variant, size, box score threshold and image source)."""
    label = df["device_name"].astype(str)
    keys = [label, df["model"], df["variant"], df["size"], *(df[c].astype(str) for c in SPEED_IDENTITY)]
    per_key = df.groupby(keys)["source"].transform("nunique")
    clash = set(label[per_key > 1])
    return label.where(~label.isin(clash), label + " [" + df["source"].astype(str) + "]")


def _memory(row: Any) -> tuple[float, str]:
    if str(row.get("device", "")).startswith("cuda"):
        return row.get("peak_mem_allocated_mib"), "cuda max allocated"
    scope = row.get("rss_scope")
    return row.get("peak_rss_mib"), f"rss peak ({scope})" if isinstance(scope, str) else "rss peak"


def speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model x device x size x variant x box score threshold x image source: FPS, median/p90 ms, padded
    shapes, memory, AP when measured, status."""
    df = _prepare_speed(df)
    for col in SPEED_TABLE_COLUMNS:
        if col not in df.columns:
            df[col] = None
    keep = [c for c in SPEED_TABLE_COLUMNS if c not in SPEED_OPTIONAL_COLUMNS or _has_values(df[c])]
    order = [c for c in ("model", "device", "variant", *SPEED_IDENTITY, "size") if c in keep]
    return df[keep].sort_values(order, kind="stable").reset_index(drop=True)


def _has_values(column: pd.Series) -> bool:
    return bool((column.notna() & (column.astype(str) != "")).any())


def speed_pivot(df: pd.DataFrame) -> pd.DataFrame:
    """FPS with one row per model, device, variant, box score threshold and image source, and one column
    "fps@<size>" per size: model x size -> FPS (no model column for CSVs that name no model).

    Failed or skipped rows give empty cells; `box_score_thresh` and `synthetic` keep rows measured with other
    settings apart (fewer detections, or random images, change the time).
    """
    pd = _pd()
    df = _prepare_speed(df)
    keys = [*(("model",) if _has_values(df["model"]) else ()), "device", "variant", *SPEED_IDENTITY]
    # pivot_table drops rows with a NaN key: a threshold missing from a CSV is -1 here, and empty again below.
    df["box_score_thresh"] = df["box_score_thresh"].astype(float).fillna(-1.0)
    ok = df[df["status"] == "ok"]
    pivot = ok.pivot_table(index=keys, columns="size", values="fps", aggfunc="first") if len(ok) else None
    index = pd.MultiIndex.from_frame(df[keys].drop_duplicates().sort_values(keys, kind="stable"))
    sizes = sorted(df["size"].unique())
    if pivot is None:
        pivot = pd.DataFrame(index=index, columns=sizes, dtype=float)
    pivot = pivot.reindex(index=index, columns=sizes)
    pivot.columns = [f"fps@{int(c)}" for c in pivot.columns]
    out = pivot.reset_index()
    out["box_score_thresh"] = out["box_score_thresh"].where(out["box_score_thresh"] >= 0)
    return out


def speed_report(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """{"table": speed_table, "pivot": speed_pivot} of the speed files in `paths`, and "runtimes" (the runtime x
    size table, kpbench.report.runtimes) when some row ran on a runtime other than eager. The table's
    `attrs["size_definitions"]` holds what a size means for each model ({model name: text}, `size_definitions`)."""
    from kpbench.report.runtimes import runtime_table

    topdown = find_topdown_files(paths)
    tables: dict[str, pd.DataFrame] = {}
    try:
        df, files = _read_speed(paths)
    except KpbenchError:
        if not topdown:
            raise
    else:
        table = speed_table(df)
        table.attrs["size_definitions"] = model_size_definitions(df, files)
        tables = {"table": table, "pivot": speed_pivot(df)}
        runtimes = runtime_table(df)
        if runtimes is not None:
            tables["runtimes"] = runtimes
    if topdown:
        tables["topdown"] = topdown_table(topdown)
    return tables


def model_size_definitions(df: pd.DataFrame, csv_files: Sequence[Path]) -> dict[str, str | None]:
    """{model name: what a size means for it, or None where not recorded} for every model of the speed rows `df`
    read from `csv_files` (`size_definitions`)."""
    models = sorted({str(m) for m in df["model"].dropna()}) if "model" in df else []
    recorded = size_definitions(csv_files)
    return {name: recorded.get(name) for name in models}


def table_size_definitions(table: pd.DataFrame | None) -> dict[str, str | None]:
    """The size definitions a speed table carries (`attrs["size_definitions"]`), else its models, each unrecorded."""
    if table is None:
        return {}
    if table.attrs.get("size_definitions") is not None:
        return dict(table.attrs["size_definitions"])
    models = sorted({str(m) for m in table["model"].dropna() if str(m)}) if "model" in table else []
    return dict.fromkeys(models)


def size_definitions(csv_files: Sequence[Path]) -> dict[str, str]:
    """What an input size means for each model of these speed CSVs, {model name: text}, from the model records of
    the JSON manifests beside them (ModelInfo.input_size_definition); models without one are left out."""
    found: dict[str, str] = {}
    for path in csv_files:
        try:
            manifest = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # no manifest (or a broken one, said when the table was read): nothing recorded
        entries = manifest.get("models") if isinstance(manifest, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            info = entry.get("info") if isinstance(entry, dict) else None
            spec = entry.get("spec") if isinstance(entry, dict) else None
            if not isinstance(info, dict) or not isinstance(info.get("input_size_definition"), str):
                continue
            name = info.get("name") or (spec.get("spec") if isinstance(spec, dict) else None)
            if isinstance(name, str):
                found.setdefault(name, info["input_size_definition"])
    return found


# The size bullet when a model's manifest does not say (CSVs without one, or from a kpbench before models said).
SIZE_UNRECORDED = ("not recorded with this table; for the built-in models: Keypoint R-CNN's short side (max_size = "
                   "round(s*1333/800)), YOLO's imgsz (the long side), MediaPipe's long side before BlazePose")


def size_bullet(definitions: dict[str, str | None]) -> str:
    """The "Size" bullet of "What was timed": what a size means for each model of the table."""
    if not definitions:
        return f"- **Size** = the model's input size, set through its `set_input_size` hook: {SIZE_UNRECORDED}."
    lines = ["- **Size** = each model's own input size (its `set_input_size` hook); images are not resized "
             "beforehand, and `padded_shapes` are the tensors that reached the network:"]
    lines += [f"  - `{name}`: {text or SIZE_UNRECORDED}." for name, text in definitions.items()]
    return "\n".join(lines)


def timing_definition(definitions: dict[str, str | None]) -> str:
    """speed's definition of what was timed, with the size defined for every model of the table (speed's own text
    defines Keypoint R-CNN's)."""
    from kpbench.engine.speed import TIMING_DEFINITION

    bullets = re.split(r"\n(?=- )", TIMING_DEFINITION.strip())
    kept = [b for b in bullets if not b.startswith("- **Size**")]
    return "\n".join([size_bullet(definitions), *kept]) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Runs


def _read_json(path: Path) -> Any:
    from kpbench.core.io import read_json

    return read_json(path, invalid="not readable JSON")


def _object(value: Any, where: str) -> dict[str, Any]:
    """A JSON object of a run's files (None: empty); anything else is a KpbenchError naming it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise KpbenchError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One row for a run directory: settings, metrics (0-1), published AP (0-1) and deviations."""
    from kpbench.evaluation.person_boxes import protocol_label

    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json")
    if not isinstance(manifest, dict) or not (isinstance(manifest.get("config"), dict) or "model_spec" in manifest):
        raise KpbenchError(f"{run_dir / 'manifest.json'}: not a `kpbench run` manifest (no 'config' table)")
    where = run_dir / "manifest.json"
    config = manifest.get("config") or {}  # a run made from results (run --results) has no run settings
    env = _object(manifest.get("environment"), f"{where}: 'environment'")
    published = _object(manifest.get("published"), f"{where}: 'published'")
    for key in ("kp_AP", "box_AP"):
        if published.get(key) is not None and not _is_number(published[key]):
            raise KpbenchError(f"{where}: 'published.{key}' must be a number, got {published[key]!r}")
    deviations = manifest.get("deviations") or []
    if not isinstance(deviations, list) or not all(isinstance(d, str) for d in deviations):
        raise KpbenchError(f"{where}: 'deviations' must be a list of strings")
    image_ids = manifest.get("image_ids") or []
    if not isinstance(image_ids, list):
        raise KpbenchError(f"{where}: 'image_ids' must be a list")
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    spec = manifest.get("model_spec") if isinstance(manifest.get("model_spec"), dict) else {}
    own = (manifest.get("protocol") or {}).get("model_protocol") if isinstance(manifest.get("protocol"), dict) else None
    timings = manifest.get("timings") if isinstance(manifest.get("timings"), dict) else {}
    per_image = timings.get("model_per_image_s")
    row: dict[str, Any] = {
        "run": run_dir.name,
        "model": model.get("name") or spec.get("spec") or "keypointrcnn",
        "model_ms_per_image": 1000 * per_image if _is_number(per_image) else None,
        "weights": config.get("weights") if config.get("weights") is not None else model.get("weights"),
        "device_name": env.get("device_name"),
        "size": own.get("imgsz") if isinstance(own, dict) and "imgsz" in own else config.get("min_size"),
        "max_size": None if isinstance(own, dict) and "imgsz" in own else config.get("max_size"),
        "dtype": config.get("dtype"),
        "batch_size": config.get("batch_size"),
        "box_score_thresh": config.get("box_score_thresh"),
        "num_images": manifest.get("num_images", len(image_ids) or None),
        # torchvision publishes AP in percent; the metrics are 0-1.
        "published_kp_AP": published.get("kp_AP") / 100 if published.get("kp_AP") is not None else None,
        "published_box_AP": published.get("box_AP") / 100 if published.get("box_AP") is not None else None,
        "deviations": "; ".join(deviations) if deviations else "none",
        # Whole image or top-down, and then which person boxes (and their own box AP).
        "protocol": protocol_label(manifest),
        "person_box_AP": ((manifest.get("person_boxes") or {}).get("stats") or {}).get("AP"),
    }
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = _object(_read_json(metrics_file), str(metrics_file))
        kp = _object(metrics.get("keypoints"), f"{metrics_file}: 'keypoints'")
        box = _object(metrics.get("bbox"), f"{metrics_file}: 'bbox'")
        row.update(kp_AP=kp.get("AP"), kp_AP50=kp.get("AP50"), kp_AP75=kp.get("AP75"), kp_AR=kp.get("AR"))
        row.update(box_AP=box.get("AP"))
    row["status"] = run_status(run_dir, manifest, row["num_images"])
    return {c: row.get(c) for c in RUN_COLUMNS}


def run_status(run_dir: Path, manifest: dict[str, Any], num_images: int | None) -> str:
    """"ok" for a finished, evaluated run whose cache is all there; otherwise "incomplete (why)" or
    "not evaluated (no metrics.json)"."""
    from kpbench.runs.directory import detections_path, legacy_detections_path
    from kpbench.runs.merge import count_cached_images

    status = manifest.get("status", "unfinished")
    cache = detections_path(run_dir)  # detections.bin (format 3), or detections.jsonl (format 1 and 2)
    version = manifest.get("format_version", manifest.get("kpbench_run_version", 1))
    if not cache.is_file() and not (type(version) is int and version >= 3):
        cache = legacy_detections_path(run_dir)
    if status != "complete":
        cached = count_cached_images(run_dir)
        of = f" of {num_images}" if num_images else ""
        if status == "failed":  # the run stopped on an error, recorded in the manifest
            return f"failed ({manifest.get('error') or 'no reason recorded'}; {cached}{of} images cached)"
        return f"incomplete ({status}: {cached}{of} images cached)"
    if not cache.is_file():
        return f"incomplete ({cache.name} missing)"
    if num_images and (cached := count_cached_images(run_dir)) != num_images:
        return f"incomplete ({cache.name} has {cached} of {num_images} images)"
    if not (run_dir / "metrics.json").is_file():
        return "not evaluated (no metrics.json)"
    return "ok"


def run_table(paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per run directory found in `paths` (see `run_row`)."""
    pd = _pd()
    rows, dirs = [], []
    found = find_run_dirs(paths)
    for run_dir, named in found:
        try:
            rows.append(run_row(run_dir))
        except KpbenchError as exc:
            if named:
                raise
            _left_out(exc)
            continue
        dirs.append(run_dir)
    if not rows:
        raise _no_readable(paths, "run directory", len(found))
    # Two runs with the same folder name (from different machines) are told apart by their parent folder.
    names = [r["run"] for r in rows]
    for r, d in zip(rows, dirs, strict=True):
        if names.count(r["run"]) > 1:
            r["run"] = f"{d.parent.name}/{d.name}"
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


# ----------------------------------------------------------------------------------------------------------
# Thresholds


def _threshold_label(path: Path) -> str:
    return path.parent.name if path.name == THRESHOLDS_FILE else path.stem


def thresholds_table(paths: Sequence[str | Path], stats: Sequence[str] | None = None) -> pd.DataFrame:
    """The person-threshold tables side by side: one row per threshold, columns "<run>:<stat>".

    Without `stats`, those of THRESHOLD_DEFAULT_STATS that a file has (box sweeps have AR1/AR10/AR100, not AR).
    """
    pd = _pd()
    found = find_threshold_files(paths)
    tables: dict[Path, pd.DataFrame] = {}
    for path, named in found:
        try:
            df = _read_csv(path, ("threshold", *(stats or ())))
            if df["threshold"].duplicated().any():
                raise KpbenchError(f"{path}: the same threshold appears twice")
        except KpbenchError as exc:
            if named:
                raise
            _left_out(exc)
            continue
        tables[path] = df
    if not tables:
        raise _no_readable(paths, THRESHOLDS_FILE, len(found))
    files = list(tables)
    labels = [_threshold_label(f) for f in files]
    if len(set(labels)) < len(labels):
        labels = [f"{f.parent.parent.name}/{lab}" for f, lab in zip(files, labels, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [str(f) for f in files]
    merged: pd.DataFrame | None = None
    for path, label in zip(files, labels, strict=True):
        df = tables[path]
        chosen = list(stats) if stats else [s for s in THRESHOLD_DEFAULT_STATS if s in df.columns]
        # Thresholds are read from text; round so that 0.30000000000000004 and 0.3 line up across files.
        df = df.assign(threshold=df["threshold"].round(6))[["threshold", *chosen]]
        # Counts (kept, tp_50, ...) stay integers when the outer join below leaves holes.
        df = df.astype({c: "Int64" for c in chosen if pd.api.types.is_integer_dtype(df[c])})
        df = df.rename(columns={s: f"{label}:{s}" for s in chosen})
        merged = df if merged is None else merged.merge(df, on="threshold", how="outer")
    assert merged is not None
    return merged.sort_values("threshold").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------
# Rendering


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows with NaN as None (empty cells, JSON null) and numpy scalars as Python ones."""
    pd = _pd()
    out = []
    for rec in df.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                v = None
            elif hasattr(v, "item"):
                v = v.item()
            row[str(k)] = v
        out.append(row)
    return out


def build_report(
    kind: str, paths: Sequence[str | Path] | None = None, stats: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """The named tables of one report kind ({"table", "pivot"} for speed, {"table"} otherwise).

    `paths` default to DEFAULT_PATHS[kind]; `stats` picks the thresholds statistics (thresholds only).
    """
    if kind not in KINDS:
        raise KpbenchError(f"--kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if stats is not None and kind != "thresholds":
        raise KpbenchError("--columns: only applies to --kind thresholds")
    paths = list(paths) if paths else [DEFAULT_PATHS[kind]]
    if kind == "sweep":  # `kpbench sweep` folders: their runs and speed tables merged (kpbench.report.sweeps)
        from kpbench.report.sweeps import sweep_report

        return sweep_report(paths)
    if kind == "speed":
        return speed_report(paths)
    if kind == "run":
        return {"table": run_table(paths)}
    return {"table": thresholds_table(paths, stats)}


def report_kind(kind: str | None, paths: Sequence[str | Path] | None) -> str:
    """--kind as given, or when it is not: "sweep" if a path is a `kpbench sweep` folder, else "speed"."""
    if kind is not None:
        return kind
    from kpbench.sweep.layout import is_sweep_dir

    return "sweep" if any(is_sweep_dir(p) for p in paths or ()) else "speed"


TITLES = {
    ("sweep", "table"): "Sweep: every run and speed row, AP beside speed",
    ("sweep", "cells"): "Sweep: cells",
    ("sweep", "speed"): "Speed: model x device x size x variant",
    ("sweep", "pivot"): "Speed: FPS (images/s) per model, device and size",
    ("sweep", "runs"): "Runs",
    ("speed", "table"): "Speed: model x device x size x variant",
    ("speed", "pivot"): "Speed: FPS (images/s) per model, device and size",
    ("speed", "runtimes"): "Runtimes: FPS, AP and ΔAP against eager [95% paired bootstrap interval, points] per size",
    ("speed", "topdown"): "Top-down: per crop pass, per image and per person (person-box source named per row)",
    ("run", "table"): "Runs",
    ("thresholds", "table"): "Person-score thresholds",
}


def is_ap_column(column: str) -> bool:
    """An AP/AR stat column: "AP", "kp_AP50", "published_box_AP", "run-1:ARl" (not "precision_50")."""
    stat = column.rsplit(":", 1)[-1].rsplit("_", 1)[-1]
    return stat in KEYPOINT_STAT_NAMES or stat in BBOX_STAT_NAMES


def is_rate_column(column: str) -> bool:
    """A rate column of a threshold table: "precision_50", "run-1:recall_75", "f1_50" (a ratio of counts, in [0, 1],
    as AR50 is a recall), which tables for people show in percent as they show AP and AR."""
    from kpbench.analysis.thresholds import RATE_PREFIXES

    return column.rsplit(":", 1)[-1].startswith(RATE_PREFIXES)


def _percent_cell(column: str, value: Any) -> Any:
    """Tables for people show AP/AR and the rates (precision, recall, F1) in percent with one decimal, and n/a for
    COCOeval's -1 (CSV/JSON keep 0-1)."""
    if not (is_ap_column(column) or is_rate_column(column)) or not isinstance(value, (int, float)) \
            or isinstance(value, bool):
        return value
    return "n/a" if value < 0 else f"{100 * value:.1f}"


def render_report(kind: str, tables: dict[str, pd.DataFrame], fmt: str) -> dict[str, str]:
    """Text per table for `fmt`: markdown gives one document (key "report"), csv one text per table, json one
    document {table name: rows}."""
    from kpbench.core.io import to_csv, to_markdown

    if fmt not in FORMATS:
        raise KpbenchError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "json":
        doc = {name: _records(df) for name, df in tables.items()}
        return {"report": json.dumps(doc, indent=2, allow_nan=False) + "\n"}
    if fmt == "csv":
        return {name: to_csv(_records(df), [str(c) for c in df.columns]) for name, df in tables.items()}
    parts = []
    for name, df in tables.items():
        records = [{k: _percent_cell(k, v) for k, v in row.items()} for row in _records(df)]
        parts += [f"## {TITLES.get((kind, name), name)}", "", to_markdown(records, [str(c) for c in df.columns])]
    if any(is_rate_column(str(c)) for df in tables.values() for c in df.columns):
        parts += ["AP, AR, precision, recall and F1 in percent (n/a: no ground truth in that range).", ""]
    elif any(is_ap_column(str(c)) for df in tables.values() for c in df.columns):
        parts += ["AP and AR in percent (n/a: no ground truth in that range).", ""]
    if (kind == "speed" and "table" in tables) or (kind == "sweep" and "speed" in tables):
        table = tables.get("table" if kind == "speed" else "speed")
        parts += ["## What was timed", "", timing_definition(table_size_definitions(table))]
    return {"report": "\n".join(parts)}


def check_report_out(out: str | Path) -> Path:
    """`--out FILE` of `kpbench report`: not a folder, and its folder exists or can be made and is writable
    (a one-line error otherwise)."""
    from kpbench.core.io import ensure_output_dir

    out = Path(out)
    if out.is_dir():
        raise KpbenchError(f"--out {out}: is a directory, expected a file name (such as {out / 'report.md'})")
    ensure_output_dir(out.parent, f"--out {out}: folder")
    return out


def write_report(kind: str, tables: dict[str, pd.DataFrame], fmt: str, out: str | Path) -> list[Path]:
    """Write the report to `out` (csv with several tables: `out` for the first, `<stem>.<name>.csv` for the rest)."""
    from kpbench.core.io import atomic_write_files

    out = check_report_out(out)
    texts = render_report(kind, tables, fmt)
    files = {(out if i == 0 else out.with_name(f"{out.stem}.{name}{out.suffix}")): text
             for i, (name, text) in enumerate(texts.items())}
    try:
        return atomic_write_files(files)
    except KpbenchError as exc:
        raise KpbenchError(f"--out {exc}") from None
