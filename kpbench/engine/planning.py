"""Planning a session of `kpbench run` (rank 0, read-only but for creating the --out folder): the COCO root, the
annotations and the image selection, the image files, the run directory's state (new, resumable, or made with
another config) and the images already cached; and the fixed batches every session and rank runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpbench.core.config import RunSettings, settings_dict
from kpbench.core.errors import KpbenchError, KpbenchWarning, shown
from kpbench.core.io import ensure_output_dir, file_digest
from kpbench.data.coco import (
    COCO_ROOT_ENV,
    annotation_path,
    ground_truth_positions,
    image_files,
    load_annotations,
    resolve_coco_root,
    restrict_ground_truth,
    select_image_ids,
)
from kpbench.data.download import first_missing_parent
from kpbench.evaluation.cocofiles import validate_ground_truth
from kpbench.runs.directory import LOCK, default_run_dir, is_run_dir, lock_run_dir, read_manifest
from kpbench.runs.merge import cached_image_ids

# Settings that cannot change a single detection: a run may be resumed with other values of these.
RESUME_IGNORED = ("out", "workers", "download")


@dataclass
class RunPlan:
    """What rank 0 decided before the loop; sent to the other ranks as is."""

    run_dir: str
    coco_root: str
    split: str
    annotation_file: dict[str, Any]
    image_ids: list[int]
    paths: list[str]
    file_images: int
    done: list[int]
    state: str  # "new", "resume" or "overwrite"
    previous: dict[str, Any] | None = None  # the manifest being resumed
    created_out: str | None = None  # the outermost folder of run_dir that planning created (removed on failure)


def _coco_root(settings: RunSettings) -> Path:
    """The COCO root, after downloading what is missing of it with --download."""
    if settings.download:
        from kpbench.data.download import ensure_coco

        value = settings.coco_root if settings.coco_root is not None else os.environ.get(COCO_ROOT_ENV)
        if value is None:
            raise KpbenchError(f"--download: needs --coco-root DIR (or ${COCO_ROOT_ENV}) to download into")
        ensure_coco(Path(value).expanduser(), settings.split)
    return resolve_coco_root(settings.coco_root)


def resume_fingerprint(config: dict[str, Any], coco_root: str, device_type: str) -> dict[str, Any]:
    """The settings that must match for a run directory to be continued: the config minus RESUME_IGNORED,
    with the resolved COCO root and the device type (so "auto" and "cuda" on a GPU machine agree)."""
    fp = {k: v for k, v in config.items() if k not in RESUME_IGNORED}
    ids = fp.get("image_ids")
    if isinstance(ids, list) and all(type(i) is int for i in ids):  # the images run are sorted by id: order and
        fp["image_ids"] = sorted(set(ids))  # repeats do not matter
    fp["coco_root"] = str(coco_root)
    fp["device"] = device_type
    # Top-down and post-processing settings at their defaults are left out, so that a run directory made before
    # they existed (its config lacks them) resumes.
    from kpbench.engine.topdown import TopDownRequest

    defaults = TopDownRequest().to_json()
    for key, default in defaults.items():
        if fp.get(key, default) == default:
            fp.pop(key, None)
    # Format-1 configs have no model: they were all made by Keypoint R-CNN.
    fp["model"] = fp.get("model") or "keypointrcnn"
    fp["runtime"] = fp.get("runtime") or "eager"  # run directories made before --runtime ran eager
    return fp


def _check_resumable(run_dir: Path, previous: dict[str, Any], fingerprint: dict[str, Any], image_ids: list[int]) -> None:
    """Refuse to continue a run directory made with other settings or another image list."""
    old_device = (previous.get("environment") or {}).get("device", "cpu").split(":")[0]
    old = resume_fingerprint(previous.get("config") or {}, previous.get("coco_root", ""), old_device)
    diffs = [f"{k}: {old.get(k)!r} there, {fingerprint.get(k)!r} now" for k in sorted(set(old) | set(fingerprint))
             if old.get(k) != fingerprint.get(k)]
    if not diffs and [int(i) for i in previous.get("image_ids", [])] != image_ids:
        diffs.append("image_ids: the selected images differ (has the annotation file changed?)")
    if diffs:
        raise KpbenchError(
            f"{run_dir}: made with a different config ({'; '.join(diffs)}); "
            "use another --out, or pass --overwrite to start it again"
        )


def plan_run(
    settings: RunSettings,
    device_type: str,
    overwrite: bool = False,
    now: float | None = None,
    hold: contextlib.ExitStack | None = None,
) -> RunPlan:
    """Rank 0's checks before anything is written: data, selection, image files and the run directory.

    With `hold`, the run directory's lock (`lock_run_dir`) is taken into it before the directory is looked at,
    so that a second run on the same --out refuses at once."""
    from kpbench.models.registry import declared_schema

    root = _coco_root(settings)
    split = settings.split
    gt = load_annotations(root, split)
    image_ids = select_image_ids(gt, settings.images, settings.limit, settings.image_ids)
    paths = image_files(root, split, gt, image_ids)
    # The GT the run will be scored against, checked now rather than after the last image (its warnings and
    # notes come with the evaluation), against the keypoint set of the model (whose sigmas score it).
    # (The keypoint checks cover the box ones.)
    source = str(annotation_path(root, split))
    subset = restrict_ground_truth(gt, image_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KpbenchWarning)
        try:
            validate_ground_truth(subset, source, "keypoints", schema=declared_schema(settings.model))
        except KpbenchError as exc:
            raise KpbenchError(_in_file_terms(str(exc), source, subset, ground_truth_positions(gt, image_ids))) from None
    run_dir = Path(settings.out) if settings.out else default_run_dir(now=now)
    ann = {"path": str(annotation_path(root, split).resolve()),
           "sha256": file_digest(annotation_path(root, split))}
    plan = RunPlan(
        run_dir=str(run_dir), coco_root=str(root.resolve()), split=split, annotation_file=ann, image_ids=image_ids,
        paths=[str(p) for p in paths], file_images=len(gt["images"]), done=[], state="new",
    )
    # A folder that cannot be made (a file is there, /proc/x, no permission) fails here, before the model is
    # built. A folder made here is removed again if the run fails before writing into it.
    created = first_missing_parent(run_dir)
    ensure_output_dir(run_dir, "--out")
    plan.created_out = str(created) if created is not None else None
    if hold is not None:
        hold.enter_context(lock_run_dir(run_dir))
    if overwrite:
        plan.state = "overwrite" if run_dir.exists() else "new"
        return plan
    if is_run_dir(run_dir):
        previous = read_manifest(run_dir)
        fingerprint = resume_fingerprint(settings_dict(settings), plan.coco_root, device_type)
        _check_resumable(run_dir, previous, fingerprint, image_ids)
        wanted = set(image_ids)
        plan.done = sorted(i for i in cached_image_ids(run_dir) if i in wanted)
        plan.state = "resume"
        plan.previous = previous
    elif run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir()):
        raise KpbenchError(
            f"{run_dir}: exists and is not a kpbench run directory (no manifest.json); "
            "choose another --out, or pass --overwrite to write the run files into it"
        )
    return plan


_FIRST_RECORD = re.compile(r"^: (image|annotation) (\d+)")
_OTHER_RECORD = re.compile(r"\(also (image|annotation) (\d+)\)")


def _in_file_terms(message: str, source: str, subset: dict[str, Any], positions: dict[str, list[int]]) -> str:
    """A message about the GT restricted to the run's images, naming records as the annotation file has them: by
    their index in the file (not in the subset) and their id, as `kpbench evaluate` of the whole file would."""
    if not message.startswith(source):
        return message
    tail = message[len(source):]

    def first(match: re.Match[str]) -> str:
        kind, index = match.group(1), int(match.group(2))
        record = subset[f"{kind}s"][index]
        rec_id = record.get("id") if isinstance(record, dict) else None
        named = f"{kind} {positions[kind][index]}"
        if type(rec_id) is int and f"id {shown(rec_id)}" not in tail:
            named += f" (id {shown(rec_id)})"
        return f": {named}"

    tail = _FIRST_RECORD.sub(first, tail, count=1)
    tail = _OTHER_RECORD.sub(lambda m: f"(also {m.group(1)} {positions[m.group(1)][int(m.group(2))]})", tail)
    return source + tail


def fixed_batches(image_ids: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive batches of indices into the id-sorted image list; the same for every session and rank."""
    n = len(image_ids)
    return [list(range(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]


def pending_batches(image_ids: Sequence[int], batch_size: int, done: set[int]) -> list[list[int]]:
    """The fixed batches with at least one image not yet cached (a partly cached batch is run whole, so that
    its images are padded together exactly as in an uninterrupted run; only the missing ones are appended)."""
    return [b for b in fixed_batches(image_ids, batch_size) if any(image_ids[i] not in done for i in b)]
