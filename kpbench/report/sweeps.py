"""`kpbench report SWEEP_DIR`: every run and speed table of one or more sweeps, merged.

Tables (pandas DataFrames):

- ``table``, the merged one: one row per speed-table row (model x device x size x variant) and per run cell, with
  the cell it came from. A speed row that measured no AP itself (`kpbench speed --accuracy`) gets the keypoint and
  box AP of the one run cell that ran what the row timed (`ap_from` names that cell), so that accuracy and speed
  per GPU sit on one line. That run must have the same model and the same weights (the same sha256 where both
  record one, else the same weights as given, folder included), and its AP must come from the settings the row
  timed: size, max_size (where the model has one), dtype, batch size, box score threshold, runtime, no
  channels-last, cudnn.benchmark or fast-post-processing variant, the whole image (no person boxes, rescoring or
  NMS), the seed of random weights, and the whole val2017 split (no --limit, --images with-persons or --image-ids
  subset). No AP is filled when two runs qualify alike, nor from a run that differs in any of these: ``ap_note``
  says why (each run of the row's model, weights, size and dtype that was left out, and what differs). A run cell
  no speed row took its AP from keeps its own row.
- ``cells``: one row per cell: kind, resource, state, elapsed time, node, GPU, job and error line.
- ``speed`` and ``pivot``: `kpbench report --kind speed` of the sweep's speed tables (all devices).
- ``runs``: `kpbench report --kind run` of the sweep's run directories, each named by its cell.

States here are read from the cells' files and the sweep manifest only (a report never asks the scheduler); a
cell whose files do not settle its state shows the state `kpbench sweep --status` last recorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError
from kpbench.sweep.layout import cell_output, is_sweep_dir, read_sweep_manifest
from kpbench.sweep.state import read_speed_output, resolve_cell

if TYPE_CHECKING:
    import pandas as pd

MERGED_COLUMNS = (
    "cell", "kind", "model", "weights", "device", "size", "dtype", "variant", "fps", "ms_per_image", "median_ms",
    "p90_ms", "kp_AP", "box_AP", "ap_from", "ap_note", "status", "error",
)  # fmt: skip
CELL_COLUMNS = ("sweep", "cell", "kind", "resource", "state", "elapsed", "node", "gpu", "job", "error")


def find_sweep_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """The sweep folders among `paths`, each of which must be one."""
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise KpbenchError(f"{path}: no such file or directory")
        if not is_sweep_dir(path):
            raise KpbenchError(f"{path}: not a sweep folder (no sweep.json); give sweep folders only, or pick --kind")
        found.append(path)
    return found


def _weights_label(weights: Any) -> str:
    if weights is None or (isinstance(weights, float) and math.isnan(weights)):
        return ""
    text = str(weights)
    return Path(text).name if ("/" in text or "\\" in text) else text


def sweep_outputs(sweep_dir: str | Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(cell, run directory) of every run cell that has one, and (cell, speed CSV) of every speed cell's newest
    table: what `kpbench html` and `kpbench report --kind` take."""
    manifest = read_sweep_manifest(sweep_dir)
    runs, speeds = [], []
    for cell in manifest["cells"]:
        output = cell_output(sweep_dir, cell["name"], cell["kind"])
        if cell["kind"] == "run" and (output / "manifest.json").is_file():
            runs.append((cell["name"], output))
        elif cell["kind"] == "speed":
            newest = _newest_speed_csv(output)
            if newest is not None:
                speeds.append((cell["name"], newest))
    return runs, speeds


def plot_sweep(sweep_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Every figure of a `kpbench sweep` folder: each run cell's (`kpbench.report.run_outputs.plot_run`, in its run
    directory) and one set for all its speed cells' newest tables together (`kpbench.report.figures.plot_speed`: FPS
    against input size, AP against ms per image; in `out_dir`, default the sweep folder). The paths written; an
    error when no cell has finished anything to plot yet."""
    from kpbench.report.figures import plot_speed
    from kpbench.report.run_outputs import plot_run

    runs, speeds = sweep_outputs(sweep_dir)
    written: list[Path] = []
    for _, run_dir in runs:
        written += plot_run(run_dir)
    if speeds:
        written += plot_speed([csv_path for _, csv_path in speeds], out_dir if out_dir is not None else sweep_dir)
    if not written:
        raise KpbenchError(f"{sweep_dir}: no cell of this sweep has a run directory or a speed table yet: nothing "
                           "to plot (kpbench sweep --status says where the cells are)")
    return written


def _newest_speed_csv(folder: Path) -> Path | None:
    view = read_speed_output(folder)
    if view.files:
        return Path(view.files[0])
    candidates = sorted(folder.glob("*.csv"), key=lambda p: (p.stat().st_mtime, p.name))
    return candidates[-1] if candidates else None


def cell_table(sweep_dirs: Sequence[Path]) -> pd.DataFrame:
    """One row per cell of the sweeps (states from the files; the last recorded one where they do not tell)."""
    import pandas as pd

    rows = []
    for sweep_dir in sweep_dirs:
        manifest = read_sweep_manifest(sweep_dir)
        for cell in manifest["cells"]:
            status = resolve_cell(sweep_dir, cell, None)
            if status.state in ("UNKNOWN", "LOST") and cell.get("state"):
                status.state, status.error = cell["state"], cell.get("error")
                status.node = status.node or cell.get("node")
            rows.append({"sweep": sweep_dir.name, **{k: v for k, v in status.row().items() if k in CELL_COLUMNS}})
    return pd.DataFrame(rows, columns=list(CELL_COLUMNS))


def sweep_report(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """{"table", "cells", "speed", "pivot", "runs"} of the sweep folders in `paths` (speed and pivot only when some
    speed cell wrote a table, runs only when some run cell made a run directory)."""
    import pandas as pd

    from kpbench.report.tables import model_size_definitions, read_speed_files, run_row, speed_pivot, speed_table

    sweep_dirs = find_sweep_dirs(paths)
    run_rows: list[dict[str, Any]] = []
    speed_frames, speed_files = [], []
    speed_settings: dict[str, dict[str, Any]] = {}
    for sweep_dir in sweep_dirs:
        runs, speeds = sweep_outputs(sweep_dir)
        for cell, run_dir in runs:
            run_rows.append({**run_row(run_dir), "run": cell, "timed": run_settings(_manifest(run_dir))})
        for cell, csv_path in speeds:
            frame = read_speed_files([csv_path])
            frame["cell"] = cell
            speed_frames.append(frame)
            speed_files.append(csv_path)
            speed_settings[cell] = _speed_manifest_settings(csv_path)
    tables: dict[str, pd.DataFrame] = {}
    speed = pd.concat(speed_frames, ignore_index=True) if speed_frames else None
    tables["table"] = merged_table(speed, run_rows, speed_settings)
    tables["cells"] = cell_table(sweep_dirs)
    if speed is not None:
        tables["speed"] = speed_table(speed.drop(columns=["cell"]))
        tables["speed"].attrs["size_definitions"] = model_size_definitions(speed, speed_files)  # "What was timed"
        tables["pivot"] = speed_pivot(speed.drop(columns=["cell"]))
    if run_rows:
        from kpbench.report.tables import RUN_COLUMNS

        tables["runs"] = pd.DataFrame([{c: r.get(c) for c in RUN_COLUMNS} for r in run_rows], columns=list(RUN_COLUMNS))
    return tables


def _number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest.json (run_row has read and checked it already)."""
    data = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _speed_manifest_settings(csv_path: Path) -> dict[str, Any]:
    """The settings a speed table was made with (its manifest, beside the CSV); {} where there is none."""
    path = csv_path.with_suffix(".json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    settings = data.get("settings") if isinstance(data, dict) else None
    return settings if isinstance(settings, dict) else {}


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def run_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a run's AP depends on besides the model's name, input size and dtype, from its manifest: the weights'
    identity, the other inference settings, top-down and post-processing settings, and the images scored."""
    config = _table(manifest.get("config"))
    model = _table(manifest.get("model"))
    protocol = _table(manifest.get("protocol"))
    own = protocol.get("model_protocol")
    annotation = _table(manifest.get("annotation_file"))
    return {
        "from_results": not config,  # `kpbench run --results`: made from a results file, its inference unknown
        "weights": model.get("weights") if model.get("weights") is not None else config.get("weights"),
        "weights_sha256": model.get("checkpoint_sha256"),
        "random_weights": model.get("source") == "random",
        "seed": model.get("seed"),
        # A model with its own protocol (YOLO-pose: imgsz) has no max_size; its size is the square side.
        "max_size": None if isinstance(own, dict) and "imgsz" in own else config.get("max_size"),
        "batch_size": config.get("batch_size"),
        "box_score_thresh": config.get("box_score_thresh"),
        "runtime": config.get("runtime", "eager"),
        "person_boxes": config.get("person_boxes"),
        "flip_test": bool(config.get("flip_test")),
        "rescore": config.get("rescore", "none"),
        "nms": config.get("nms", "none"),
        "split": config.get("split") or manifest.get("split"),
        "images": config.get("images", "all"),
        "limit": config.get("limit"),
        "image_ids": config.get("image_ids") is not None,
        "num_images": manifest.get("num_images"),
        "file_images": annotation.get("images", protocol.get("annotation_file_images")),
    }


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true") or value == 1


def _same_number(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _same_weights(run: dict[str, Any], record: dict[str, Any]) -> bool:
    """The same weights: the same sha256 where both record one, else the same weights text (folder included)."""
    run_sha, row_sha = run["timed"].get("weights_sha256"), record.get("weights_sha256")
    if run_sha and row_sha:
        return str(run_sha) == str(row_sha)
    return str(run["timed"].get("weights") or "") == str(record.get("weights") or "")


def _differences(run: dict[str, Any], record: dict[str, Any], speed_settings: dict[str, Any]) -> list[str]:
    """How a run (of the speed row's model, weights, size and dtype) differs from what the speed row timed, or from
    a run whose AP may stand beside it; [] when none."""
    timed = run["timed"]
    why: list[str] = []
    if timed["from_results"]:
        return ["made from a results file (its inference settings are unknown)"]
    if run.get("status") != "ok":
        why.append(f"status {run.get('status')}")
    elif run.get("kp_AP") is None:
        why.append("no keypoint AP")
    if timed["max_size"] is not None and not _same_number(timed["max_size"], record.get("max_size")):
        why.append(f"max_size {timed['max_size']} (timed: {_number(record.get('max_size'))})")
    for key in ("batch_size", "box_score_thresh"):
        if not _same_number(timed[key], record.get(key)):
            why.append(f"{key} {timed[key]} (timed: {_number(record.get(key))})")
    if str(timed["runtime"]) != str(record.get("runtime") or "eager"):
        why.append(f"runtime {timed['runtime']} (timed: {record.get('runtime')})")
    for variant in ("channels_last", "cudnn_benchmark", "fast_postprocess"):
        if _flag(record.get(variant)):
            why.append(f"the speed row is the {variant} variant")
    if timed["person_boxes"] is not None:
        flip = ", flip test" if timed["flip_test"] else ""
        why.append(f"top-down on person boxes {timed['person_boxes']}{flip} (timed: the whole image)")
    for key in ("rescore", "nms"):
        if timed[key] not in (None, "none"):
            why.append(f"{key} {timed[key]} (not timed)")
    if timed["random_weights"] and not _same_number(timed["seed"], speed_settings.get("seed")):
        why.append(f"random weights of seed {timed['seed']} (timed: seed {speed_settings.get('seed')})")
    if timed["split"] not in (None, "val2017"):
        why.append(f"split {timed['split']}")
    chosen = [f"--limit {timed['limit']}" if timed["limit"] is not None else "",
              "--images with-persons" if timed["images"] not in (None, "all") else "",
              "--image-ids" if timed["image_ids"] else ""]
    num, total = timed["num_images"], timed["file_images"]
    if (isinstance(num, int) and isinstance(total, int) and num < total) or any(chosen):
        how = ", ".join(c for c in chosen if c)
        why.append(f"image subset: {num} of {total} images" + (f" ({how})" if how else ""))
    return why


def merged_table(
    speed: pd.DataFrame | None, run_rows: list[dict[str, Any]], speed_settings: dict[str, dict[str, Any]] | None = None
) -> pd.DataFrame:
    """The merged table (see the module's docstring). `run_rows`: `run_row` of each run cell with "run" (the cell)
    and "timed" (`run_settings` of its manifest); `speed_settings`: each speed cell's settings, by cell."""
    import pandas as pd

    used: set[str] = set()
    rows = []
    for record in (speed.to_dict("records") if speed is not None else []):
        record = {k: _clean(v) for k, v in record.items()}
        row = {
            "cell": record["cell"], "kind": "speed", "model": record.get("model"),
            "weights": _weights_label(record.get("weights")), "device": record.get("device_name"),
            "size": _number(record.get("size")), "dtype": record.get("dtype"), "variant": record.get("variant"),
            "fps": record.get("fps"), "ms_per_image": record.get("ms_per_image"),
            "median_ms": record.get("median_ms"), "p90_ms": record.get("p90_ms"), "kp_AP": record.get("kp_AP"),
            "box_AP": record.get("box_AP"), "ap_from": "speed" if record.get("kp_AP") is not None else None,
            "ap_note": None, "status": record.get("status"), "error": record.get("error"),
        }  # fmt: skip
        if row["kp_AP"] is None:
            settings = (speed_settings or {}).get(record["cell"], {})
            candidates = [
                run for run in run_rows
                if str(run.get("model") or "") == str(record.get("model") or "") and _same_weights(run, record)
                and _same_number(run.get("size"), record.get("size")) and str(run.get("dtype")) == str(record.get("dtype"))
            ]  # fmt: skip
            left_out = [(run, _differences(run, record, settings)) for run in candidates]
            matches = [run for run, why in left_out if not why]
            if len(matches) == 1:
                (run,) = matches
                row.update(kp_AP=run.get("kp_AP"), box_AP=run.get("box_AP"), ap_from=run["run"])
                used.add(run["run"])
            elif matches:
                names = ", ".join(run["run"] for run in matches)
                row["ap_note"] = (f"no AP: {len(matches)} runs ran what this row timed ({names}), and nothing tells "
                                  "which one's AP belongs here")
            elif left_out:
                row["ap_note"] = "no AP: " + "; ".join(f"{run['run']}: {', '.join(why)}" for run, why in left_out)
        rows.append(row)
    for run in run_rows:
        if run["run"] in used:
            continue
        rows.append({
            "cell": run["run"], "kind": "run", "model": run.get("model"), "weights": _weights_label(run.get("weights")),
            "device": run.get("device_name"), "size": _number(run.get("size")), "dtype": run.get("dtype"),
            "variant": run.get("dtype"), "kp_AP": run.get("kp_AP"), "box_AP": run.get("box_AP"),
            "ap_from": run["run"] if run.get("kp_AP") is not None else None, "ap_note": None,
            "status": run.get("status"),
        })  # fmt: skip
    df = pd.DataFrame(rows, columns=list(MERGED_COLUMNS))
    order = ["model", "weights", "size", "dtype", "kind", "device", "variant"]
    return df.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)
