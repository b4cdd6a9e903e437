"""`kpbench report SWEEP_DIR`: every run and speed table of one or more sweeps, merged.

Tables (pandas DataFrames):

- ``table``, the merged one: one row per speed-table row (model x device x size x variant) and per run cell, with
  the cell it came from. A speed row that measured no AP itself (`kpbench speed --accuracy`) gets the keypoint and
  box AP of the sweep's run cell of the same model, weights, input size and dtype (`ap_from` names that cell),
  so that accuracy and speed per GPU sit on one line. A run cell no speed row took its AP from keeps its own row.
- ``cells``: one row per cell: kind, resource, state, elapsed time, node, GPU, job and error line.
- ``speed`` and ``pivot``: `kpbench report --kind speed` of the sweep's speed tables (all devices).
- ``runs``: `kpbench report --kind run` of the sweep's run directories, each named by its cell.

States here are read from the cells' files and the sweep manifest only (a report never asks the scheduler); a
cell whose files do not settle its state shows the state `kpbench sweep --status` last recorded.
"""

from __future__ import annotations

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
    "p90_ms", "kp_AP", "box_AP", "ap_from", "status", "error",
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
    for sweep_dir in sweep_dirs:
        runs, speeds = sweep_outputs(sweep_dir)
        for cell, run_dir in runs:
            run_rows.append({**run_row(run_dir), "run": cell})
        for cell, csv_path in speeds:
            frame = read_speed_files([csv_path])
            frame["cell"] = cell
            speed_frames.append(frame)
            speed_files.append(csv_path)
    tables: dict[str, pd.DataFrame] = {}
    speed = pd.concat(speed_frames, ignore_index=True) if speed_frames else None
    tables["table"] = _merged(speed, run_rows)
    tables["cells"] = cell_table(sweep_dirs)
    if speed is not None:
        tables["speed"] = speed_table(speed.drop(columns=["cell"]))
        tables["speed"].attrs["size_definitions"] = model_size_definitions(speed, speed_files)  # "What was timed"
        tables["pivot"] = speed_pivot(speed.drop(columns=["cell"]))
    if run_rows:
        from kpbench.report.tables import RUN_COLUMNS

        tables["runs"] = pd.DataFrame([{c: r.get(c) for c in RUN_COLUMNS} for r in run_rows], columns=list(RUN_COLUMNS))
    return tables


def _run_key(row: dict[str, Any]) -> tuple[str, str, Any, str]:
    return (str(row.get("model") or ""), _weights_label(row.get("weights")), _number(row.get("size")),
            str(row.get("dtype") or ""))


def _number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _merged(speed: pd.DataFrame | None, run_rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The merged table (see the module's docstring)."""
    import pandas as pd

    by_key: dict[tuple[str, str, Any, str], dict[str, Any]] = {}
    for row in run_rows:
        if row.get("status") == "ok":
            by_key.setdefault(_run_key(row), row)
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
            "status": record.get("status"), "error": record.get("error"),
        }  # fmt: skip
        run = by_key.get(_run_key(record))
        if row["kp_AP"] is None and run is not None:
            row.update(kp_AP=run.get("kp_AP"), box_AP=run.get("box_AP"), ap_from=run["run"])
            used.add(run["run"])
        rows.append(row)
    for run in run_rows:
        if run["run"] in used:
            continue
        rows.append({
            "cell": run["run"], "kind": "run", "model": run.get("model"), "weights": _weights_label(run.get("weights")),
            "device": run.get("device_name"), "size": _number(run.get("size")), "dtype": run.get("dtype"),
            "variant": run.get("dtype"), "kp_AP": run.get("kp_AP"), "box_AP": run.get("box_AP"),
            "ap_from": run["run"] if run.get("kp_AP") is not None else None, "status": run.get("status"),
        })  # fmt: skip
    df = pd.DataFrame(rows, columns=list(MERGED_COLUMNS))
    order = ["model", "weights", "size", "dtype", "kind", "device", "variant"]
    return df.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)
