"""The runtime x size table of `kpbench report --kind speed` and the HTML page: one row per model, device, runtime,
dtype and batch, and size, with FPS, ms per image, keypoint AP, ΔAP against eager with its paired bootstrap
interval, the largest keypoint deviation from eager and how many detections it was measured on (`paired`: paired
with one of eager's by box IoU; `unpaired`: given by one side only, which ΔAP reflects but no deviation measures),
the build seconds (export + engine build, and whether it came from the cache), the rebuilds, the preprocessing
note and the status with its reason. Only speed CSVs with a runtime other than eager give one.

AP stays on the 0-1 scale in the frame (the renderers show it in percent); ΔAP and its interval are text in
percentage points, "-0.10 [-0.52, +0.40]" (eager's own row has none).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

RUNTIME_TABLE_COLUMNS = (
    "model", "device", "runtime", "dtype", "batch_size", "size", "fps", "ms_per_image", "kp_AP", "kp_ΔAP_points",
    "max_keypoint_dev_px", "paired", "unpaired", "build_s", "build_cached", "rebuilds", "preprocessing", "status",
)  # fmt: skip


COUNT_COLUMNS = ("batch_size", "size", "paired", "unpaired", "rebuilds")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def delta_text(delta: Any, low: Any, high: Any) -> str | None:
    """"-0.10 [-0.52, +0.40]": ΔAP and its interval in percentage points (None without a ΔAP; no interval part
    without one)."""
    value, lo, hi = _number(delta), _number(low), _number(high)
    if value is None:
        return None
    interval = f" [{100 * lo:+.2f}, {100 * hi:+.2f}]" if lo is not None and hi is not None else ""
    return f"{100 * value:+.2f}{interval}"


def _status(row: dict[str, Any]) -> str:
    status = str(row.get("status") or "")
    error = row.get("error")
    return f"{status}: {error}" if status != "ok" and isinstance(error, str) and error else status


def runtime_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """The runtime x size table of the rows of `df` (speed CSV rows), or None when no row is on a runtime other
    than eager (older CSVs have no runtime column: eager)."""
    import pandas as pd

    if "runtime" not in df.columns:
        return None
    column = df["runtime"].astype(object)  # an all-empty column reads as float64 NaN, which takes no text
    runtimes = column.where(column.notna(), "eager").astype(str)
    if not (runtimes != "eager").any():
        return None
    rows = []
    for row in df.assign(runtime=runtimes).to_dict("records"):
        if row.get("offline") is True or row.get("scenario") == "offline":
            continue
        if any(bool(row.get(option)) is True and str(row.get(option)) == "True"
               for option in ("channels_last", "cudnn_benchmark", "fast_postprocess")):
            continue  # eager's speed options are the speed table's business, not the runtimes'
        export_s, build_s = _number(row.get("export_s")), _number(row.get("build_s"))
        seconds = None if export_s is None and build_s is None else (export_s or 0.0) + (build_s or 0.0)
        rows.append({
            "model": row.get("model"), "device": row.get("device_name"), "runtime": row["runtime"],
            "dtype": row.get("dtype"), "batch_size": row.get("batch_size"), "size": row.get("size"),
            "fps": _number(row.get("fps")), "ms_per_image": _number(row.get("ms_per_image")),
            "kp_AP": _number(row.get("kp_AP")),
            "kp_ΔAP_points": delta_text(row.get("delta_kp_AP"), row.get("delta_kp_AP_low"), row.get("delta_kp_AP_high")),
            "max_keypoint_dev_px": _number(row.get("max_keypoint_dev_px")),
            "paired": _count(row.get("paired_detections")), "unpaired": _count(row.get("unpaired_detections")),
            "build_s": seconds,
            "build_cached": row.get("build_cached") if row["runtime"] != "eager" else None,
            "rebuilds": row.get("rebuilds"), "preprocessing": row.get("preprocessing"), "status": _status(row),
        })  # fmt: skip
    table = pd.DataFrame(rows, columns=list(RUNTIME_TABLE_COLUMNS))
    order = {name: i for i, name in enumerate(dict.fromkeys(table["runtime"]))}  # runtimes in the order timed
    table = table.assign(_order=table["runtime"].map(order))
    keys = ["model", "device", "dtype", "batch_size", "size", "_order"]
    table = table.sort_values(keys, kind="stable").drop(columns="_order").reset_index(drop=True)
    table = table.astype(object).where(table.notna(), None)
    for column in COUNT_COLUMNS:  # counts stay integers (a column with empty cells would read them as floats)
        table[column] = pd.Series([None if v is None else int(v) for v in table[column]], index=table.index,
                                  dtype=object)
    return table
