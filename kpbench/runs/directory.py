"""The run directory: its file layout, the manifest, and where its images live.

A run directory is self-describing: every later command (evaluate, thresholds, draw, plots) reads only it.

    manifest.json            what made the run (format version, model, keypoint schema, config, environment,
                             protocol, timings, image ids)
    detections.bin           the detections store, one binary record per finished image (kpbench.runs.store);
                             format 1 and 2 have detections.jsonl, one JSON line per image, instead
    detections.rank<R>.bin   a rank's shard during a distributed run (merged into detections.bin; format 1 and 2:
                             detections.rank<R>.jsonl)
    ground_truth.json        the annotation file restricted to the evaluated images
    keypoints_results.json   COCO results, keypoints (box score, no bbox), in image-id order
    bbox_results.json        COCO results, boxes (xywh), in image-id order
    metrics.csv/.md/.json    keypoint and box stats
    .kpbench-run.lock        while a `kpbench run` uses the directory: its pid (see `lock_run_dir`)

Format versions (the manifest's `format_version`, and `kpbench_run_version`, which format 1 already had):

1. no model fields: every run was torchvision's Keypoint R-CNN, COCO's 17 person keypoints, logit scores;
2. adds `model_spec` ({"spec", "kind", "target"} of --model), `schema` (`KeypointSchema.to_json()`) and
   `keypoint_score_kind` ("logit" or "probability"). The detections cache is unchanged;
3. the detections are a binary store (detections.bin, kpbench.runs.store) instead of JSON lines; the manifest is
   format 2's. Resuming (or re-running) a format-1 or format-2 directory converts its JSON lines into the store.

`run_format(manifest)` reads any of them as a `RunFormat`; `read_run_arrays` (kpbench.runs.arrays) reads the
detections of any of them.

No torch here: this module is imported by commands that never run a model.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpbench.core.errors import KpbenchError
from kpbench.core.io import atomic_write_text, json_text, read_json
from kpbench.core.schema import COCO17, KeypointSchema
from kpbench.data.coco import image_path
from kpbench.runs.person_boxes import person_box_files

FORMAT_VERSION = 3
READ_VERSIONS = (1, 2, 3)
RUN_VERSION = FORMAT_VERSION  # the name format 1 had
# What a format-1 run directory was made by.
V1_MODEL_SPEC = "keypointrcnn"
V1_KEYPOINT_SCORE_KIND = "logit"
MANIFEST = "manifest.json"
STORE = "detections.bin"
DETECTIONS = "detections.jsonl"  # the JSON-lines cache of format 1 and 2
KEYPOINT_RESULTS = "keypoints_results.json"
BBOX_RESULTS = "bbox_results.json"
GROUND_TRUTH = "ground_truth.json"
METRICS_STEM = "metrics"
SHARD_GLOB = "detections.rank*"
# Spaces at the end of a "running" manifest: room to record "failed" or "interrupted" in place on a full disk.
MANIFEST_RESERVE = 4096
# Held (flock) by the `kpbench run` that is using the directory, with its pid inside; deleted when it ends.
LOCK = ".kpbench-run.lock"
_SHARD_RE = re.compile(r"detections\.rank(\d+)\.(bin|jsonl)")
METRICS_FILES = tuple(f"{METRICS_STEM}.{ext}" for ext in ("csv", "md", "json"))
# Everything `kpbench run` writes; --overwrite deletes exactly these (never anything else in the folder).
RUN_FILES = (MANIFEST, STORE, DETECTIONS, GROUND_TRUTH, KEYPOINT_RESULTS, BBOX_RESULTS, *METRICS_FILES)
# What the analysis after a run adds (kpbench.analysis.thresholds, kpbench.analysis.breakdown,
# kpbench.analysis.keypoint_ap, kpbench.report.figures name them).
ANALYSIS_FILES = (
    "thresholds_person.csv", "thresholds_person.md", "thresholds_keypoint.csv", "thresholds_keypoint.md",
    "threshold_curves.png", "keypoints.csv", "keypoints.md", "keypoints.png", "pr_curves.png",
    "keypoint_ap.csv", "keypoint_ap.md", "keypoint_ap.json",
)


def manifest_path(run_dir: str | Path) -> Path:
    """RUN_DIR/manifest.json"""
    return Path(run_dir) / MANIFEST


def store_path(run_dir: str | Path) -> Path:
    """RUN_DIR/detections.bin, the merged detections store (format 3)."""
    return Path(run_dir) / STORE


def legacy_detections_path(run_dir: str | Path) -> Path:
    """RUN_DIR/detections.jsonl, the JSON-lines cache of a format-1 or format-2 run directory."""
    return Path(run_dir) / DETECTIONS


def detections_path(run_dir: str | Path) -> Path:
    """The run directory's merged detections file: detections.bin (format 3, and where a new run writes), or
    detections.jsonl where only that exists (format 1 and 2)."""
    store = store_path(run_dir)
    legacy = legacy_detections_path(run_dir)
    return legacy if legacy.exists() and not store.exists() else store


def shard_path(run_dir: str | Path, rank: int) -> Path:
    """RUN_DIR/detections.rank<R>.bin, one rank's store during a distributed run."""
    return Path(run_dir) / f"detections.rank{rank}.bin"


def shard_paths(run_dir: str | Path) -> list[Path]:
    """The rank shards present, by rank: stores (detections.rank<R>.bin) and, left by a distributed run of format
    1 or 2, JSON lines (detections.rank<R>.jsonl; for a rank, the JSON lines first)."""
    found = []
    for path in Path(run_dir).glob(SHARD_GLOB):
        match = _SHARD_RE.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), match.group(2) == "bin", path))
    return [path for *_, path in sorted(found)]


def is_detections_input(path: str | Path) -> bool:
    """Whether a path is one a run directory's readers take as its detections (detections.bin, detections.jsonl
    or a rank shard, in a run directory): a file no export may write."""
    path = Path(path)
    named = path.name in (STORE, DETECTIONS) or _SHARD_RE.fullmatch(path.name) is not None
    return named and is_run_dir(path.parent)


def detection_files(run_dir: str | Path) -> list[Path]:
    """Every detections file present, in the order readers apply them (a later file's record of an image wins):
    the JSON-lines cache, the store, then the rank shards."""
    candidates = [legacy_detections_path(run_dir), store_path(run_dir), *shard_paths(run_dir)]
    return [p for p in candidates if p.exists()]  # a folder in a file's place is read, and refused by name


def ground_truth_path(run_dir: str | Path) -> Path:
    """RUN_DIR/ground_truth.json, the GT of exactly the evaluated images."""
    return Path(run_dir) / GROUND_TRUTH


def keypoint_results_path(run_dir: str | Path) -> Path:
    """RUN_DIR/keypoints_results.json"""
    return Path(run_dir) / KEYPOINT_RESULTS


def bbox_results_path(run_dir: str | Path) -> Path:
    """RUN_DIR/bbox_results.json"""
    return Path(run_dir) / BBOX_RESULTS


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` holds a manifest.json."""
    return manifest_path(path).is_file()


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Parse RUN_DIR/manifest.json; a folder without one is not a run directory."""
    run_dir = Path(run_dir)
    path = manifest_path(run_dir)
    if not path.is_file():
        raise KpbenchError(f"{run_dir}: not a run directory (no {MANIFEST})")
    manifest = read_json(path, invalid="unreadable manifest", what="manifest")
    if not isinstance(manifest, dict) or "kpbench_run_version" not in manifest:
        raise KpbenchError(f"{path}: not a kpbench run manifest (no 'kpbench_run_version')")
    version = manifest.get("format_version", manifest["kpbench_run_version"])
    if type(version) is not int or version not in READ_VERSIONS:
        raise KpbenchError(
            f"{path}: run format version {version!r}; this kpbench reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}"
        )
    return manifest


@dataclass(frozen=True)
class RunFormat:
    """What a run directory says about the model that made it, in any readable format version."""

    version: int
    model_spec: str
    schema: KeypointSchema
    keypoint_score_kind: str


def run_format(manifest: dict[str, Any]) -> RunFormat:
    """The format version, model spec, keypoint schema and keypoint score kind of a manifest (from
    `read_manifest`). Fields a manifest lacks, as format 1 does, are format 1's: Keypoint R-CNN, coco17,
    logits."""
    version = int(manifest.get("format_version", manifest.get("kpbench_run_version", 1)))
    schema_json = manifest.get("schema")
    try:
        schema = KeypointSchema.from_json(schema_json) if isinstance(schema_json, dict) else COCO17
    except (KeyError, TypeError, ValueError) as exc:
        raise KpbenchError(f"manifest: unreadable keypoint schema ({type(exc).__name__}: {exc})") from None
    spec = manifest.get("model_spec")
    return RunFormat(
        version=version,
        model_spec=str((spec.get("spec") if isinstance(spec, dict) else spec) or V1_MODEL_SPEC),
        schema=schema,
        keypoint_score_kind=str(manifest.get("keypoint_score_kind") or V1_KEYPOINT_SCORE_KIND),
    )


def run_dir_format(run_dir: str | Path) -> RunFormat:
    """`run_format` of RUN_DIR/manifest.json."""
    return run_format(read_manifest(run_dir))


def write_manifest(run_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write RUN_DIR/manifest.json atomically (readers see the old or the new one, never half).

    A manifest whose status is "running" ends with `MANIFEST_RESERVE` spaces (JSON allows trailing whitespace):
    the room in which `update_manifest_status` can still record how the run ended when the disk is full."""
    path = manifest_path(run_dir)
    text = json_text(manifest)
    if manifest.get("status") == "running":
        text += " " * MANIFEST_RESERVE + "\n"
    atomic_write_text(path, text)
    return path


def update_manifest_status(run_dir: str | Path, status: str, **fields: Any) -> bool:
    """Record how a run ended (status "failed", "interrupted", with `fields` such as error and updated_at) in
    RUN_DIR/manifest.json, even on a full disk; returns whether it was recorded.

    The manifest is rewritten atomically when it can be. When that fails (a full disk: the temporary file cannot
    be written), it is rewritten in place, within the bytes the file already has, which a full disk still allows
    on file systems that overwrite in place (ext4, xfs, tmpfs; not copy-on-write ones such as btrfs or zfs): a
    "running" manifest keeps `MANIFEST_RESERVE` spaces of room for this, and an error too long for the room is
    shortened. A missing or unreadable manifest is left alone."""
    try:
        manifest = read_manifest(run_dir)
    except (KpbenchError, OSError):
        return False
    manifest.update(status=status, **fields)
    try:
        write_manifest(run_dir, manifest)
        return True
    except (KpbenchError, OSError):
        pass
    return _rewrite_in_place(manifest_path(run_dir), manifest)


def _rewrite_in_place(path: Path, manifest: dict[str, Any]) -> bool:
    """Overwrite a manifest within its current size (trailing spaces fill the rest); False if it cannot fit."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        text = json_text(manifest).encode("utf-8")
        error = manifest.get("error")
        if len(text) > size and isinstance(error, str) and len(error) > 43:
            # Shorten the reason to fit (JSON escapes make its bytes and characters differ: try shorter until it does).
            keep = len(error) - (len(text) - size) - 3
            while len(text) > size and keep >= 40:
                text = json_text({**manifest, "error": error[:keep] + "..."}).encode("utf-8")
                keep -= max(1, len(text) - size)
        if len(text) > size:
            return False
        data = text[:-1] + b" " * (size - len(text)) + b"\n"
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], written)
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=8)
def _file_names(gt_path: str, _mtime_ns: int) -> dict[int, str]:
    gt = read_json(gt_path)
    images = gt.get("images") if isinstance(gt, dict) else None
    if not isinstance(images, list) or not all(isinstance(img, dict) and type(img.get("id")) is int for img in images):
        raise KpbenchError(f"{gt_path}: not the run's ground truth (no 'images' list with integer ids)")
    return {img["id"]: str(img.get("file_name", f"{img['id']:012d}.jpg")) for img in images}


def image_paths(run_dir: str | Path) -> dict[int, Path]:
    """Every evaluated image's file, by id, from the manifest's coco_root/split and the GT's file names."""
    manifest = read_manifest(run_dir)
    gt = ground_truth_path(run_dir)
    if not gt.is_file():
        raise KpbenchError(f"{gt}: missing from the run directory (re-run the same `kpbench run` command to restore it)")
    names = _file_names(str(gt.resolve()), gt.stat().st_mtime_ns)
    root = Path(manifest["coco_root"])
    return {image_id: image_path(root, manifest["split"], name) for image_id, name in names.items()}


def image_path_for(run_dir: str | Path, image_id: int) -> Path:
    """The image file of one evaluated image (it may no longer exist if the COCO root moved)."""
    paths = image_paths(run_dir)
    if int(image_id) not in paths:
        raise KpbenchError(f"image id {image_id}: not among the images of run {run_dir}")
    return paths[int(image_id)]


def default_run_dir(base: str | Path = "results", now: float | None = None) -> Path:
    """results/run-<YYYYmmdd-HHMMSS> (local time), the default --out."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path(base) / f"run-{stamp}"


def clear_run_files(run_dir: str | Path) -> list[Path]:
    """Delete what `kpbench run` wrote in RUN_DIR (for --overwrite), a top-down run's person boxes included (a new
    run must never read an old run's); other files are left alone."""
    run_dir = Path(run_dir)
    removed = []
    for path in [*(run_dir / name for name in (*RUN_FILES, *ANALYSIS_FILES)), *shard_paths(run_dir),
                 *person_box_files(run_dir)]:
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def lock_run_dir(run_dir: str | Path) -> Iterator[Path]:
    """Hold RUN_DIR/.kpbench-run.lock for a run, or refuse at once, naming the pid of the run that holds it.

    Two runs on one directory would each replace the cache the other appends to, losing images. The lock is an
    flock, which the kernel releases when its process dies, so a lock file left by a killed run does not block
    the next one. The file is deleted on the way out, while still locked; a process that opened it before then
    holds a lock on a deleted file, so after locking, each process checks that its file is still the one at the
    path, and tries again otherwise.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock; concurrent runs there are the caller's problem
        yield Path(run_dir) / LOCK
        return
    path = Path(run_dir) / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise KpbenchError(f"{path}: cannot create the run directory's lock ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise KpbenchError(
                f"{run_dir}: in use by another `kpbench run` ({holder}); wait for it to finish (or stop it), "
                "or use another --out"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us deleted it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _lock_holder(fd: int) -> str:
    """"pid N" from a lock file (the holder writes it just after locking, so it can still be empty)."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"
