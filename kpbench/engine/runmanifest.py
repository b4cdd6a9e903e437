"""The manifest of a `kpbench run` session: what is recorded before the loop (status "running"), the record of
backbone input shapes and timings after it, and how a session that stops early is marked ("failed" with its
reason, "interrupted"), which works on a full disk too (`kpbench.runs.directory.update_manifest_status`).
"""

from __future__ import annotations

import datetime
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.config import LoadedConfig, RunSettings, settings_dict
from kpbench.core.errors import KpbenchError
from kpbench.engine.distributed import DistInfo
from kpbench.engine.planning import RunPlan
from kpbench.evaluation.runeval import describe_protocol
from kpbench.runs.directory import FORMAT_VERSION, run_format, update_manifest_status

if TYPE_CHECKING:
    from kpbench.models.base import PoseModel
    from kpbench.runs.arrays import RunArrays


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def backbone_shapes(calls: dict[tuple[int, ...], int]) -> dict[str, Any]:
    """The manifest's record of backbone input shapes (N, C, H, W after the transform's resize and padding)."""
    distinct = sorted(([int(v) for v in shape], n) for shape, n in calls.items())
    out: dict[str, Any] = {"calls": sum(calls.values()), "distinct": [{"shape": s, "calls": n} for s, n in distinct]}
    if distinct:
        out["min_hw"] = [min(s[2] for s, _ in distinct), min(s[3] for s, _ in distinct)]
        out["max_hw"] = [max(s[2] for s, _ in distinct), max(s[3] for s, _ in distinct)]
    return out


def cached_backbone_shapes(arrays: RunArrays) -> dict[str, Any] | None:
    """The backbone shapes of the model calls that the stored detections came from, read from the store, which
    keeps them through crashes and resumes (None when an image has none: a cache begun by an older kpbench).

    A call of a batch of N images leaves N records with its shape, so a shape's calls are its records / N (a batch
    cut short by a crash is run whole on resume, and only its missing images are appended: still N records)."""
    records: dict[tuple[int, ...], int] = {}
    for shape in arrays.input_shapes:
        if shape is None:
            return None
        records[shape] = records.get(shape, 0) + 1
    return backbone_shapes({shape: n // shape[0] for shape, n in records.items()})


def model_facts(model: PoseModel | None, plan: RunPlan, spec: dict[str, Any]) -> dict[str, Any]:
    """The manifest's format-2 model fields: from the model when it was built, else (a finished run, only
    re-evaluated) from the manifest being resumed, which for a format-1 directory means Keypoint R-CNN's."""
    from kpbench.models.base import model_info

    if model is not None:
        schema, kind = model.schema, model_info(model).keypoint_score_kind
    else:
        fmt = run_format(plan.previous or {})
        schema, kind = fmt.schema, fmt.keypoint_score_kind
    return {"model_spec": spec, "schema": schema.to_json(), "keypoint_score_kind": kind}


def base_manifest(
    settings: RunSettings,
    plan: RunPlan,
    model_info: dict[str, Any],
    model_facts: dict[str, Any],
    environment: dict[str, Any],
    dist: DistInfo,
    config: LoadedConfig | None,
    command_line: Sequence[str] | None,
) -> dict[str, Any]:
    """The manifest written before the loop (status "running"); timings and shapes carry over on resume.
    `model_facts` are the format-2 fields: model_spec, schema and keypoint_score_kind."""
    config_dict = settings_dict(settings)
    protocol, deviations, published = describe_protocol(config_dict, model_info, len(plan.image_ids), plan.file_images)
    previous = plan.previous or {}
    argv = list(command_line) if command_line is not None else ["kpbench", *sys.argv[1:]]
    if dist.distributed and argv[:1] == ["kpbench"]:
        # Each rank sees only its own argv; record how the job was started (one node assumed).
        argv = ["torchrun", f"--nproc_per_node={dist.world_size}", "-m", *argv]
    return {
        # Both keys hold the format version: a kpbench that reads only format 1 checks kpbench_run_version and
        # refuses a newer directory in one line instead of misreading it.
        "kpbench_run_version": FORMAT_VERSION,
        "format_version": FORMAT_VERSION,
        "status": "running",
        "created_at": previous.get("created_at", now()),
        "updated_at": now(),
        "command_line": shlex.join(argv),
        "config": config_dict,
        "config_file": {"path": config.path, "sha256": config.sha256} if config and config.path else None,
        "coco_root": plan.coco_root,
        "split": plan.split,
        "annotation_file": {**plan.annotation_file, "images": plan.file_images},
        "num_images": len(plan.image_ids),
        "image_ids": plan.image_ids,
        "environment": environment,
        "distributed": {"world_size": dist.world_size, "backend": dist.backend},
        "model": model_info,
        **model_facts,
        "protocol": protocol,
        "deviations": deviations,
        "published": published,
        "timings": previous.get("timings") or {"sessions": []},
        "backbone_shapes": previous.get("backbone_shapes") or {"calls": 0, "distinct": []},
    }


def merge_shapes(previous: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """The manifest's shapes plus this session's calls: for a cache begun by an older kpbench, whose lines do not
    carry their shape (the calls of a session that crashed are then missing)."""
    merged: dict[tuple[int, ...], int] = {tuple(int(v) for v in d["shape"]): int(d["calls"]) for d in previous.get("distinct", [])}
    for key, n in counts.items():
        shape = tuple(int(v) for v in key.split("x"))
        merged[shape] = merged.get(shape, 0) + n
    return backbone_shapes(merged)


def timings(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over every session of the run: wall per image includes decoding and caching, model-only does not
    (in a distributed run model time is summed over ranks, so it is per image per device)."""
    images = sum(s["images"] for s in sessions)
    loop_s = sum(s["loop_s"] for s in sessions)
    model_s = sum(s["model_s"] for s in sessions)
    return {
        "total_s": round(sum(s.get("total_s", 0.0) for s in sessions), 3),
        "images": images,
        "loop_s": round(loop_s, 3),
        "model_s": round(model_s, 3),
        "per_image_s": round(loop_s / images, 5) if images else None,
        "model_per_image_s": round(model_s / images, 5) if images else None,
        "images_per_s": round(images / loop_s, 3) if loop_s > 0 else None,
        "sessions": sessions,
    }


def failure_reason(exc: BaseException) -> str:
    """The one-line reason a manifest records for an exception."""
    if isinstance(exc, KpbenchError):
        return str(exc).strip()
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}".strip()


def mark_failed(run_dir: Path, exc: BaseException) -> bool:
    """Record status "failed" and the one-line reason, so that the manifest does not say "running" forever; on a
    full disk too, in the room a running manifest keeps (returns whether it was recorded)."""
    return update_manifest_status(run_dir, "failed", error=failure_reason(exc), updated_at=now())


def mark_interrupted(run_dir: Path) -> bool:
    """Record status "interrupted" (Ctrl-C, SIGTERM) if the manifest says "running"."""
    from kpbench.runs.directory import read_manifest

    try:
        if read_manifest(run_dir).get("status") != "running":
            return False
    except (KpbenchError, OSError):
        return False
    return update_manifest_status(run_dir, "interrupted", updated_at=now())
