"""The files and the terminal output of the speed table: ``<out>/<device-slug>-<UTC timestamp>.csv`` (one row per
model, runtime, variant and size), ``.json`` (the manifest: settings, config file and its sha256, environment,
models, images, every runtime build, the definition) and ``.md`` (definition, environment and the table), written
atomically; and the summary `kpbench speed` prints."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kpbench.engine.speed_table import SPEED_COLUMNS, SUMMARY_COLUMNS, TIMING_DEFINITION, SpeedRun
from kpbench.engine.timing import UNSTABLE_IQR_RATIO


def terminal_summary(result: SpeedRun) -> str:
    """What `kpbench speed` prints: one header line, then the main columns of every row."""
    from kpbench.core.io import to_text_table

    env = result.manifest["environment"]
    settings = result.manifest["settings"]
    cuda = str(env.get("device", "")).startswith("cuda")
    several = len({r.get("model") for r in result.rows}) > 1
    # One model with two weights (COCO_V1 and COCO_LEGACY, say): the weights tell its rows apart.
    weights_differ = len({(r.get("model"), r.get("weights")) for r in result.rows}) > len({r.get("model") for r in result.rows})
    columns = [*(("model",) if several or weights_differ else ()), *(("weights",) if weights_differ else ()), "variant", "size", "padded_shapes", "cold_ms", "median_ms", "p90_ms",
               "iqr_over_median", "fps", "dets_per_image"]
    columns += ["stages_add_up", "gflops_per_image"] + (["peak_fraction"] if cuda else [])
    columns += ["peak_mem_allocated_mib"] if cuda else ["peak_rss_mib"]
    columns += ["kp_AP", "box_AP"] if settings["accuracy"] else []
    if any(r.get("runtime") not in (None, "eager") for r in result.rows):  # the runtime dimension's own columns
        columns += ["export_s", "build_s", "rebuilds"]
        columns += ["delta_kp_AP", "delta_kp_AP_low", "delta_kp_AP_high", "max_keypoint_dev_px", "paired_detections",
                    "unpaired_detections"] if settings["accuracy"] else []
    columns += ["status"]
    source = "SYNTHETIC images" if settings["synthetic"] else f"{settings['num_images']} COCO images"
    header = (f"{env.get('device_name')} ({env.get('device')}), {source}, warmup {settings['warmup']}, "
              f"iters {settings['iters']}")
    text = header + "\n" + to_text_table(result.rows, columns, precision=2)
    unstable = [f"{r['model'] + ' ' if several else ''}{r['variant']} {r['size']}" for r in result.rows
                if r.get("unstable")]
    notes = [f"{r['model'] + ' ' if several else ''}{r['variant']} {r['size']}: {r['preprocessing']}" for r in result.rows
             if r.get("preprocessing") and r.get("preprocessing") != "same as eager"]
    if notes:
        text += "".join(f"note: {n}\n" for n in dict.fromkeys(notes))
    if unstable:
        text += (f"unstable (IQR above {UNSTABLE_IQR_RATIO:.0%} of the median): {', '.join(unstable)}; time more "
                 "iterations (--iters) or on a quieter machine\n")
    return text


def speed_markdown(result: SpeedRun) -> str:
    """The Markdown file: what was timed, environment, settings and the table."""
    from kpbench.core.io import to_markdown

    m = result.manifest
    env = m["environment"]
    lines = [
        f"# kpbench speed: {env.get('device_name')}",
        "",
        f"Created {m['created']} by kpbench {env.get('kpbench')}; weights `{m['settings']['weights']}`, "
        f"images: {m['images']['source']}" + (" (**synthetic: random images**)" if m["images"]["source"] == "synthetic" else "")
        + ".",
        "",
        "## What was timed",
        "",
        TIMING_DEFINITION,
        "## Environment",
        "",
    ]
    env_rows = [{"key": k, "value": json.dumps(v) if isinstance(v, (list, dict)) else v} for k, v in env.items()
                if k != "argv"]  # fmt: skip
    lines += [to_markdown(env_rows, ["key", "value"]), "## Settings", ""]
    settings_rows = [{"key": k, "value": json.dumps(v) if isinstance(v, list) else v} for k, v in m["settings"].items()]
    if m.get("config_path"):
        settings_rows.append({"key": "config", "value": f"{m['config_path']} (sha256 {m['config_sha256']})"})
    lines += [to_markdown(settings_rows, ["key", "value"]), "## Results", ""]
    lines.append(to_markdown(result.rows, SUMMARY_COLUMNS, precision=2))
    return "\n".join(lines)


def write_speed_files(
    out_dir: str | Path, result: SpeedRun, *, device_name: str, started: datetime | None = None
) -> SpeedRun:
    """Write <out>/<device-slug>-<timestamp>.csv, .json and .md atomically; fills the paths into `result`."""
    from kpbench.core.environment import device_slug
    from kpbench.core.io import atomic_write_files, json_text, to_csv

    out = Path(out_dir)
    stamp = (started or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{device_slug(device_name)}-{stamp}"
    n = 1
    while any((out / f"{stem}{ext}").exists() for ext in (".csv", ".json", ".md")):
        n += 1  # two runs in the same second on the same device must not overwrite each other
        stem = f"{device_slug(device_name)}-{stamp}-{n}"
    result.csv_path, result.manifest_path, result.markdown_path = (out / f"{stem}{e}" for e in (".csv", ".json", ".md"))
    result.manifest["files"] = {"csv": result.csv_path.name, "markdown": result.markdown_path.name}
    atomic_write_files({
        result.csv_path: to_csv(result.rows, SPEED_COLUMNS),
        result.manifest_path: json_text(_json_safe(result.manifest)),
        result.markdown_path: speed_markdown(result),
    })
    return result


def _json_safe(obj: Any) -> Any:
    """NaN/inf become None (JSON has no NaN); tuples become lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
