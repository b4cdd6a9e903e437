"""`kpbench run`: a pose model (`--model`, Keypoint R-CNN by default) over a COCO split into a cached, resumable
run directory.

One session of a run goes:

1. plan (rank 0, read-only but for creating the --out folder): COCO root, annotations, image selection, image
   files, the run directory's state (new, resumable, or made with another config), and which images are already
   cached;
2. build the model (every rank), then commit (rank 0): --overwrite deletes the old files, leftover rank shards
   are merged, ground_truth.json and manifest.json (status "running") are written;
3. the loop (kpbench.engine.inference, the one inference loop): fixed batches of the id-sorted image list; a
   rank runs every world_size-th pending batch and appends each finished image to its cache file (flushed per
   image) from a writer thread;
4. rank 0 merges the shards into detections.jsonl in image-id order, writes the manifest (status "complete")
   and evaluates from the cache (kpbench.evaluation.runeval).

Rank 0 holds the run directory's lock (`kpbench.runs.directory.lock_run_dir`) from step 1 to the end, so a second run on
the same directory refuses at once. A failure before step 2 has written anything removes the --out folder again
if step 1 created it; a failure after it marks the manifest "failed", with the reason. Ctrl-C (or SIGTERM)
during the loop keeps every finished image, marks the manifest "interrupted" and raises `RunInterrupted`,
whose message says how many images are cached; the same command resumes.

Batches are fixed over the whole image list, so a resumed or distributed run feeds the model exactly the batches
an uninterrupted single-process run does, and its detections (and results files) come out byte-identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import queue
import re
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.config import LoadedConfig, RunSettings, check_settings, settings_dict
from kpbench.core.errors import KpbenchError, KpbenchWarning, shown
from kpbench.core.io import atomic_write_text, ensure_output_dir, write_json
from kpbench.data.coco import (
    COCO_ROOT_ENV,
    CocoImages,
    annotation_path,
    ground_truth_positions,
    image_files,
    load_annotations,
    make_loader,
    raise_unreadable,
    resolve_coco_root,
    restrict_ground_truth,
    select_image_ids,
)
from kpbench.data.download import first_missing_parent, remove_empty_dirs
from kpbench.evaluation.cocoeval import check_backend
from kpbench.evaluation.cocofiles import validate_ground_truth
from kpbench.evaluation.person_boxes import record_person_box_stats
from kpbench.evaluation.runeval import describe_protocol, evaluate_run, read_run_detections, summary_text
from kpbench.runs.detections import ImageDetections, append_detections, truncate_torn_tail
from kpbench.runs.directory import (
    FORMAT_VERSION,
    LOCK,
    clear_run_files,
    default_run_dir,
    detections_path,
    ground_truth_path,
    is_run_dir,
    lock_run_dir,
    manifest_path,
    read_manifest,
    run_format,
    shard_path,
    shard_paths,
    write_manifest,
)

if TYPE_CHECKING:
    import torch

    from kpbench.evaluation.cocoeval import EvalResult
    from kpbench.models.base import PoseModel

# Settings that cannot change a single detection: a run may be resumed with other values of these.
RESUME_IGNORED = ("out", "workers", "download")
_DIST_TIMEOUT = datetime.timedelta(hours=4)


@dataclass
class DistInfo:
    """This process's place in a torch.distributed job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after the run directory was set up: what is cached stays, and the manifest says
    "interrupted". `str()` is the one line to print."""

    def __init__(self, run_dir: Path, cached: int, total: int, message: str | None = None) -> None:
        self.run_dir, self.cached, self.total = run_dir, cached, total
        super().__init__(
            message or f"interrupted: {cached} of {total} images cached in {run_dir}; run the same command again "
            "to resume"
        )


@dataclass
class RunOutcome:
    """What a session did. Only the main rank (rank 0) has results and a summary."""

    run_dir: Path
    is_main: bool
    processed: int = 0  # images run through the model in this session, all ranks
    resumed_from: int = 0  # images already cached when the session started
    results: dict[str, EvalResult] | None = None
    summary: str | None = None
    manifest: dict[str, Any] | None = field(default=None, repr=False)


def _now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- distributed helpers -------------------------------------------------------------------------------------


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torch.distributed job torchrun started (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA, where each
    rank takes the GPU of its LOCAL_RANK. Without WORLD_SIZE (or with 1) it is a single process.

    On CUDA the chosen GPU also becomes the current device, so that nothing (pinned-memory threads, the
    collectives) touches another GPU."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistInfo(), device
    import torch.distributed as tdist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise KpbenchError(
                f"--device {device}: rank {rank} needs GPU {local_rank} but only {torch.cuda.device_count()} are visible"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, timeout=_DIST_TIMEOUT)
    return DistInfo(rank=tdist.get_rank(), world_size=tdist.get_world_size(), local_rank=local_rank, backend=backend), device


def shutdown_distributed(dist: DistInfo) -> None:
    """Leave the process group a distributed run joined (idempotent; a no-op for a single process)."""
    if not dist.distributed:
        return
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def _broadcast(dist: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not dist.distributed:
        return obj
    import torch.distributed as tdist

    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(dist: DistInfo, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (also a barrier)."""
    if not dist.distributed:
        return [obj]
    import torch.distributed as tdist

    out: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def _agree(dist: DistInfo, error: str | None) -> None:
    """A barrier that fails on every rank if any rank failed, so that no rank waits forever for a dead one."""
    errors = _gather(dist, error)
    if errors[dist.rank]:
        raise KpbenchError(errors[dist.rank])
    for rank, message in enumerate(errors):
        if message:
            raise KpbenchError(f"rank {rank} failed: {message}")


def _attempt(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """(fn(), None), or (None, message) for a user error, so that ranks can agree on failures."""
    try:
        return fn(), None
    except KpbenchError as exc:
        return None, str(exc)


# --- planning (rank 0, read-only) ----------------------------------------------------------------------------


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
    from kpbench.models.keypointrcnn import file_sha256
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
           "sha256": file_sha256(annotation_path(root, split))}
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
        plan.done = sorted(i for i in read_run_detections(run_dir) if i in wanted)
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


# --- committing (rank 0) -------------------------------------------------------------------------------------


def write_canonical_cache(run_dir: Path, image_ids: Sequence[int]) -> list[ImageDetections]:
    """Merge detections.jsonl and any rank shards into detections.jsonl, one line per selected image in id
    order (atomically), and delete the shards; returns the cached images, in that order."""
    for path in [detections_path(run_dir), *shard_paths(run_dir)]:
        truncate_torn_tail(path)
    cached = read_run_detections(run_dir)
    kept = [cached[i] for i in sorted(set(image_ids)) if i in cached]
    atomic_write_text(detections_path(run_dir), "".join(json.dumps(d.to_record(), separators=(",", ":")) + "\n" for d in kept))
    for shard in shard_paths(run_dir):
        shard.unlink()
    return kept


def backbone_shapes(calls: dict[tuple[int, ...], int]) -> dict[str, Any]:
    """The manifest's record of backbone input shapes (N, C, H, W after the transform's resize and padding)."""
    distinct = sorted(([int(v) for v in shape], n) for shape, n in calls.items())
    out: dict[str, Any] = {"calls": sum(calls.values()), "distinct": [{"shape": s, "calls": n} for s, n in distinct]}
    if distinct:
        out["min_hw"] = [min(s[2] for s, _ in distinct), min(s[3] for s, _ in distinct)]
        out["max_hw"] = [max(s[2] for s, _ in distinct), max(s[3] for s, _ in distinct)]
    return out


def cached_backbone_shapes(images: Sequence[ImageDetections]) -> dict[str, Any] | None:
    """The backbone shapes of the model calls that the cached detections came from, read from the cache, which
    keeps them through crashes and resumes (None when an image has none: a cache begun by an older kpbench).

    A call of a batch of N images leaves N lines with its shape, so a shape's calls are its lines / N (a batch
    cut short by a crash is run whole on resume, and only its missing images are appended: still N lines)."""
    lines: dict[tuple[int, ...], int] = {}
    for det in images:
        if det.input_shape is None:
            return None
        lines[det.input_shape] = lines.get(det.input_shape, 0) + 1
    return backbone_shapes({shape: n // shape[0] for shape, n in lines.items()})


def _base_manifest(
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
        "created_at": previous.get("created_at", _now()),
        "updated_at": _now(),
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


def _commit(plan: RunPlan, manifest: dict[str, Any]) -> None:
    """Rank 0's writes before the loop: clear (--overwrite) or merge (resume) the cache, GT, manifest."""
    run_dir = Path(plan.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if plan.state == "overwrite":
            clear_run_files(run_dir)
        if plan.state == "resume":
            write_canonical_cache(run_dir, plan.image_ids)
        else:
            atomic_write_text(detections_path(run_dir), "")
        gt = load_annotations(Path(plan.coco_root), plan.split)
        write_json(ground_truth_path(run_dir), restrict_ground_truth(gt, plan.image_ids), indent=None)
        write_manifest(run_dir, manifest)
    except OSError as exc:  # a read-only or full disk, a file where a folder should be
        _forget_new_run(plan)
        raise KpbenchError(f"{exc.filename or run_dir}: cannot write the run directory ({exc.strerror or exc})") from None
    except BaseException:  # Ctrl-C while the first files are written
        _forget_new_run(plan)
        raise


def _forget_new_run(plan: RunPlan) -> None:
    """Remove what a new run wrote before its manifest: a folder with a cache but no manifest is not a run
    directory, and the next run would refuse it. (A resumed run keeps its files; an --overwrite is asked again.)"""
    if plan.state != "new":
        return
    run_dir = Path(plan.run_dir)
    for path in (manifest_path(run_dir), detections_path(run_dir), ground_truth_path(run_dir)):
        path.unlink(missing_ok=True)


# --- the loop ------------------------------------------------------------------------------------------------


DEFAULT_CUDA_WORKERS = 2


def loader_workers(workers: int | None, device: torch.device) -> int:
    """The DataLoader's worker processes: as given, else 2 on CUDA (decoding overlaps the GPU) and 0 on a CPU
    (there the workers would take cores from the model itself)."""
    if workers is not None:
        return workers
    return DEFAULT_CUDA_WORKERS if device.type == "cuda" else 0


class _CacheWriter:
    """Appends finished images to a cache file from a thread, so JSON encoding and fsync overlap the model."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            self._fh = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise self._cannot_write(exc) from None
        self._queue: queue.Queue[ImageDetections | None] = queue.Queue(maxsize=256)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="kpbench-cache-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    append_detections(self._fh, item)
                except OSError as exc:  # a full disk, say: reported to the main thread on the next put/close
                    self._error = self._cannot_write(exc)
                except BaseException as exc:
                    self._error = exc

    def _cannot_write(self, exc: OSError) -> KpbenchError:
        return KpbenchError(
            f"{self._path}: cannot write the detections cache ({exc.strerror or exc}); the images cached so far "
            "are kept: make room and run the same command again to resume"
        )

    def put(self, dets: ImageDetections) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(dets)

    def close(self) -> None:
        """Wait for every queued image to be written (also on Ctrl-C, so nothing finished is lost)."""
        self._queue.put(None)
        self._thread.join()
        try:
            self._fh.close()
        except OSError as exc:
            self._error = self._error or self._cannot_write(exc)
        if self._error is not None:
            raise self._error


@dataclass
class _LoopStats:
    """One rank's loop: images run, wall and model seconds, and backbone input shapes ("1x3x800x1216": calls)."""

    rank: int
    images: int = 0
    loop_s: float = 0.0
    model_s: float = 0.0
    shapes: dict[str, int] = field(default_factory=dict)


def _run_loop(
    model: PoseModel,
    device: torch.device,
    settings: RunSettings,
    plan: RunPlan,
    batches: list[list[int]],
    out_path: Path,
    dist: DistInfo,
    progress: bool,
) -> _LoopStats:
    """Run the model over `batches` (this rank's) through the inference loop, appending each not-yet-cached
    image to `out_path`."""
    from tqdm import tqdm

    from kpbench.engine.inference import BatchResult, inference_on_dataset

    stats = _LoopStats(rank=dist.rank)
    if not batches:
        return stats
    done = set(plan.done)
    dataset = CocoImages(plan.image_ids, [Path(p) for p in plan.paths])
    total = sum(len(b) for b in batches)
    cuda = device.type == "cuda"
    loader = make_loader(dataset, batches, workers=loader_workers(settings.workers, device), pin_memory=cuda)
    writer = _CacheWriter(out_path)
    desc = f"rank {dist.rank}/{dist.world_size}" if dist.distributed else "kpbench run"
    bar = tqdm(total=total, unit="img", desc=desc, disable=not (progress and dist.is_main), smoothing=0.05,
               dynamic_ncols=True, file=sys.stderr)

    def checked(loader: Any) -> Any:
        for ids, images in loader:
            raise_unreadable(images)
            yield ids, images

    def finished(batch: BatchResult) -> None:
        for det in batch.detections:
            if det.image_id not in done:
                writer.put(det)
        bar.update(len(batch.image_ids))

    started = time.perf_counter()
    try:
        result = inference_on_dataset(
            model, checked(loader), device, finished, dtype=settings.dtype, non_blocking=True
        )
    finally:
        bar.close()
        writer.close()
    stats.loop_s = time.perf_counter() - started
    stats.images = result.images
    stats.model_s = result.model_s
    for shape in result.shapes:
        key = "x".join(str(s) for s in shape)
        stats.shapes[key] = stats.shapes.get(key, 0) + 1
    return stats


def _merge_shapes(previous: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """The manifest's shapes plus this session's calls: for a cache begun by an older kpbench, whose lines do not
    carry their shape (the calls of a session that crashed are then missing)."""
    merged: dict[tuple[int, ...], int] = {tuple(int(v) for v in d["shape"]): int(d["calls"]) for d in previous.get("distinct", [])}
    for key, n in counts.items():
        shape = tuple(int(v) for v in key.split("x"))
        merged[shape] = merged.get(shape, 0) + n
    return backbone_shapes(merged)


def _timings(sessions: list[dict[str, Any]]) -> dict[str, Any]:
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


# --- the command ---------------------------------------------------------------------------------------------


def _model_facts(model: PoseModel | None, plan: RunPlan, spec: dict[str, Any]) -> dict[str, Any]:
    """The manifest's format-2 model fields: from the model when it was built, else (a finished run, only
    re-evaluated) from the manifest being resumed, which for a format-1 directory means Keypoint R-CNN's."""
    from kpbench.models.base import model_info

    if model is not None:
        schema, kind = model.schema, model_info(model).keypoint_score_kind
    else:
        fmt = run_format(plan.previous or {})
        schema, kind = fmt.schema, fmt.keypoint_score_kind
    return {"model_spec": spec, "schema": schema.to_json(), "keypoint_score_kind": kind}


def _prepare(
    settings: RunSettings,
    dist: DistInfo,
    device: torch.device,
    plan: RunPlan,
    batches: list[list[int]],
    config: LoadedConfig | None,
    command_line: Sequence[str] | None,
) -> PoseModel | None:
    """Step 2: the model on every rank (skipped when everything is cached: a finished run is only re-evaluated),
    then rank 0's writes before the loop; every rank fails if one does."""
    from kpbench.core.environment import capture_environment
    from kpbench.models.base import model_info as checked_info
    from kpbench.models.keypointrcnn import file_sha256
    from kpbench.models.registry import given_model_options, resolve_model

    model: PoseModel | None = None
    info: dict[str, Any] | None = None
    error = None
    spec, error = _attempt(lambda: resolve_model(settings.model))
    if batches and error is None:

        def build() -> tuple[PoseModel, dict[str, Any]]:
            from kpbench.engine.topdown import TopDownRequest, build_run_model

            request = TopDownRequest.from_settings(settings)
            gt = load_annotations(Path(plan.coco_root), plan.split) if request.person_boxes == "gt" else None
            # Only the options the user gave: the model's own defaults apply to the rest.
            built = build_run_model(spec, dict(weights=settings.weights, **given_model_options(settings)),
                                    request, gt=gt, run_dir=plan.run_dir if request.top_down else None, device=device)
            # The largest input --min-size/--max-size allow must fit before anything is allocated (issue 23 item 7).
            from kpbench.engine.memory import check_fits

            check_fits(built, [(settings.min_size, settings.max_size)], settings.batch_size, device,
                       f"--min-size {settings.min_size} --max-size {settings.max_size}")
            if settings.runtime != "eager":  # the model on its runtime (kpbench.runtimes), recorded in its info
                from kpbench.runtimes import on_runtime

                getattr(built, "to", lambda device: None)(device)
                built = on_runtime(built, settings.runtime, device, size=settings.min_size, max_size=settings.max_size,
                                   batch_size=settings.batch_size, dtype=settings.dtype)
            return built, checked_info(built).to_json()

        result, error = _attempt(build)
        if result is not None:
            model, info = result
            move = getattr(model, "to", None)
            if move is not None:
                move(device)
            old_sha = ((plan.previous or {}).get("model") or {}).get("checkpoint_sha256")
            if plan.state == "resume" and old_sha and old_sha != info.get("checkpoint_sha256"):
                error = (f"{settings.weights}: the checkpoint changed since this run started (sha256 {old_sha[:12]}... "
                         "there); use another --out, or pass --overwrite")
    elif plan.previous and error is None:
        info = plan.previous["model"]
        # Nothing to run, but a checkpoint replaced at the same path must not pass for the one that was run.
        old_sha = (info or {}).get("checkpoint_sha256")
        path = Path(settings.weights) if settings.weights else None
        if old_sha and path is not None and path.is_file() and file_sha256(path) != old_sha:
            error = (f"{settings.weights}: the checkpoint changed since this run was made (sha256 {old_sha[:12]}... "
                     "there); use another --out, or pass --overwrite")
    if dist.is_main and error is None:
        environment = capture_environment(device)
        facts = _model_facts(model, plan, spec.to_json())
        manifest = _base_manifest(settings, plan, info or {}, facts, environment, dist, config, command_line)
        _, error = _attempt(lambda: _commit(plan, manifest))
    _agree(dist, error)
    return model


def _loop_and_merge(
    model: PoseModel | None,
    device: torch.device,
    settings: RunSettings,
    plan: RunPlan,
    batches: list[list[int]],
    dist: DistInfo,
    progress: bool,
) -> tuple[_LoopStats, list[dict[str, Any]], dict[str, Any] | None]:
    """Step 3, the loop (every world_size-th pending batch into this rank's cache file), then rank 0 merges the
    shards into detections.jsonl. Returns this rank's stats, every rank's, and (rank 0) the backbone shapes read
    from the merged cache (`cached_backbone_shapes`)."""
    run_dir = Path(plan.run_dir)
    mine = batches[dist.rank :: dist.world_size]
    out_path = shard_path(run_dir, dist.rank) if dist.distributed else detections_path(run_dir)
    stats = _LoopStats(rank=dist.rank)
    if model is not None:
        stats = _run_loop(model, device, settings, plan, mine, out_path, dist, progress)
    all_stats = _gather(dist, dataclasses.asdict(stats))
    # Every shard is complete: leave the process group now, so that the other ranks can exit while rank 0
    # merges and evaluates (which can take a minute on val2017).
    shutdown_distributed(dist)
    shapes = None
    if dist.is_main:
        cached = write_canonical_cache(run_dir, plan.image_ids)
        if len(cached) != len(plan.image_ids):
            raise KpbenchError(
                f"{run_dir}: {len(plan.image_ids) - len(cached)} of {len(plan.image_ids)} images have no detections "
                "after the run (did a rank fail?); re-run the same command to finish them"
            )
        shapes = cached_backbone_shapes(cached)
    return stats, all_stats, shapes


def count_cached_lines(run_dir: Path) -> int:
    """Finished images in the cache files (detections.jsonl and rank shards): complete lines, without parsing."""
    total = 0
    for path in [detections_path(run_dir), *shard_paths(run_dir)]:
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    total += chunk.count(b"\n")
        except OSError:
            continue
    return total


def _interrupted(run_dir: Path, plan: RunPlan) -> RunInterrupted:
    """After Ctrl-C on rank 0: mark the manifest "interrupted" (atomically; the cache stays as it is, and the
    same command resumes it) and say how far the run got."""
    total = len(plan.image_ids)
    cached = min(count_cached_lines(run_dir), total)
    try:
        manifest = read_manifest(run_dir)
        if manifest.get("status") == "running":
            manifest["status"] = "interrupted"
            manifest["updated_at"] = _now()
            write_manifest(run_dir, manifest)
    except (KpbenchError, OSError):
        pass  # the message below matters more than the status field
    return RunInterrupted(run_dir, cached, total)


def _mark_failed(run_dir: Path, exc: BaseException) -> None:
    """After an error on rank 0 once the manifest said "running": record status "failed" and the one-line reason,
    so that the manifest does not say "running" forever (best effort: on a full disk the manifest may not be
    writable either, and the error itself matters more)."""
    reason = str(exc) if isinstance(exc, KpbenchError) else f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    try:
        manifest = read_manifest(run_dir)
        manifest["status"] = "failed"
        manifest["error"] = reason.strip()
        manifest["updated_at"] = _now()
        write_manifest(run_dir, manifest)
    except (KpbenchError, OSError):
        pass


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (`kill`, a batch scheduler's time limit) raises KeyboardInterrupt, so that it takes Ctrl-C's path:
    finished images kept, the manifest marked "interrupted", one line saying how to resume. (Python's default for
    SIGTERM is to die at once, silently, with the manifest still saying "running".)"""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(
    settings: RunSettings,
    *,
    overwrite: bool = False,
    config: LoadedConfig | None = None,
    command_line: Sequence[str] | None = None,
    progress: bool = True,
    evaluate: bool = True,
    backend: str = "pycocotools",
) -> RunOutcome:
    """Run the model of settings.model (Keypoint R-CNN by default) over the selected COCO images into a run
    directory, resuming where it stopped, then evaluate it (on rank 0). Under torchrun (WORLD_SIZE > 1) the
    images are sharded over the ranks."""
    from kpbench.models.keypointrcnn import check_dtype, resolve_device
    from kpbench.models.registry import check_model_options, given_model_options

    session_start = time.perf_counter()
    started_at = _now()
    # Cheap checks first (no torch yet for Keypoint R-CNN): sizes, the model spec, the weights' name or file,
    # the backend.
    check_settings(settings)
    from kpbench.engine.topdown import TopDownRequest

    TopDownRequest.from_settings(settings).check()  # top-down and post-processing options, together
    spec, weights = check_model_options(settings.model, settings.weights, given_model_options(settings),
                                        settings.sources)  # an option the model does not honour is refused here
    settings = dataclasses.replace(settings, model=spec.spec, weights=weights)  # "coco_v1" is COCO_V1
    if evaluate:
        check_backend(backend)  # fail before the run, not after hours of it
    if not settings.download:
        resolve_coco_root(settings.coco_root)  # a missing root is reported at once, before torch is imported
    with _sigterm_as_ctrl_c():
        dist, device = init_distributed(resolve_device(settings.device))
        try:
            check_dtype(device, settings.dtype)
            with contextlib.ExitStack() as held:  # rank 0's lock on the run directory, for the whole session
                return _run(settings, dist, device, overwrite, config, command_line, progress, evaluate, backend,
                            session_start, started_at, held)
        finally:
            shutdown_distributed(dist)


def _run(
    settings: RunSettings,
    dist: DistInfo,
    device: torch.device,
    overwrite: bool,
    config: LoadedConfig | None,
    command_line: Sequence[str] | None,
    progress: bool,
    evaluate: bool,
    backend: str,
    session_start: float,
    started_at: str,
    held: contextlib.ExitStack,
) -> RunOutcome:
    """`run` once the process knows its rank and device: plan, build, commit, loop, merge, evaluate. Rank 0
    takes the run directory's lock into `held`."""
    # 1. Plan on rank 0; every rank gets the same plan (or the same error).
    plan, error = (_attempt(lambda: plan_run(settings, device.type, overwrite, hold=held)) if dist.is_main
                   else (None, None))
    plan, error = _broadcast(dist, (plan, error))
    if error:
        raise KpbenchError(error if dist.is_main else f"rank 0 failed: {error}")
    assert plan is not None
    run_dir = Path(plan.run_dir)
    done = set(plan.done)
    batches = pending_batches(plan.image_ids, settings.batch_size, done)

    # 2. The model and rank 0's writes; 3. the loop and the merge.
    try:
        model = _prepare(settings, dist, device, plan, batches, config, command_line)
    except BaseException:
        if dist.is_main and plan.created_out:
            held.close()  # the lock file goes first
            remove_empty_dirs(run_dir, Path(plan.created_out))  # nothing was written: leave no empty folder
        raise

    try:
        return _loop_merge_and_evaluate(model, device, settings, plan, batches, dist, progress, evaluate, backend,
                                        session_start, started_at)
    except RunInterrupted:  # while evaluating: says so itself
        raise
    except KeyboardInterrupt:
        if not dist.is_main:
            raise
        raise _interrupted(run_dir, plan) from None
    except Exception as exc:  # an unreadable image, a full disk, a failed rank, a failed evaluation
        if dist.is_main:
            _mark_failed(run_dir, exc)
        raise


def _loop_merge_and_evaluate(
    model: torch.nn.Module | None,
    device: torch.device,
    settings: RunSettings,
    plan: RunPlan,
    batches: list[list[int]],
    dist: DistInfo,
    progress: bool,
    evaluate: bool,
    backend: str,
    session_start: float,
    started_at: str,
) -> RunOutcome:
    """Steps 3 and 4: the loop and the merge, then (rank 0) the manifest's record and the evaluation."""
    run_dir = Path(plan.run_dir)
    done = set(plan.done)
    stats, all_stats, shapes = _loop_and_merge(model, device, settings, plan, batches, dist, progress)
    if not dist.is_main:
        return RunOutcome(run_dir=run_dir, is_main=False, processed=stats.images, resumed_from=len(done))

    # 4. Rank 0: record, evaluate.
    manifest = read_manifest(run_dir)
    counts: dict[str, int] = {}
    for s in all_stats:
        for key, n in s["shapes"].items():
            counts[key] = counts.get(key, 0) + n
    manifest["backbone_shapes"] = shapes or _merge_shapes(manifest.get("backbone_shapes") or {}, counts)
    session = {
        "started_at": started_at,
        "state": plan.state,
        "world_size": dist.world_size,
        "device": manifest["environment"].get("device"),
        "device_name": manifest["environment"].get("device_name"),
        "images_cached_before": len(done),
        "images": sum(s["images"] for s in all_stats),
        "loop_s": round(max(s["loop_s"] for s in all_stats), 3),
        "model_s": round(sum(s["model_s"] for s in all_stats), 3),
        "per_rank": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items() if k != "shapes"}
                     for s in all_stats] if dist.distributed else None,
    }
    sessions = [*(manifest.get("timings") or {}).get("sessions", []), session]
    session["total_s"] = round(time.perf_counter() - session_start, 3)
    manifest["timings"] = _timings(sessions)
    manifest["status"] = "complete"
    manifest["updated_at"] = _now()
    write_manifest(run_dir, manifest)

    outcome = RunOutcome(run_dir=run_dir, is_main=True, processed=session["images"], resumed_from=len(done))
    if evaluate:
        try:
            outcome.results = evaluate_run(run_dir, backend=backend)
            record_person_box_stats(run_dir, backend=backend)  # a top-down run's person boxes, scored alone
        except KeyboardInterrupt:
            n = len(plan.image_ids)
            raise RunInterrupted(run_dir, n, n, f"interrupted while evaluating: all {n} images are cached in "
                                 f"{run_dir}; run the same command again to evaluate them") from None
        manifest = read_manifest(run_dir)
        session["total_s"] = round(time.perf_counter() - session_start, 3)
        manifest["timings"] = _timings(sessions)
        write_manifest(run_dir, manifest)
        outcome.summary = summary_text(manifest, outcome.results, run_dir)
    outcome.manifest = manifest
    return outcome
