"""`kpbench run`: a pose model (`--model`, Keypoint R-CNN by default) over a COCO split into a cached, resumable
run directory. This module drives a session; each role lives in its own module:

1. plan (`kpbench.engine.planning`, rank 0, read-only but for creating the --out folder): COCO root, annotations,
   image selection, image files, the run directory's state (new, resumable, or made with another config), and
   which images are already cached;
2. build the model (every rank), then commit (rank 0, here): --overwrite deletes the old files, a resume merges
   what is cached into the canonical store (`kpbench.runs.merge`: torn tails cut, leftover rank shards and the
   JSON lines of a format-1 or format-2 directory folded in), ground_truth.json and manifest.json (status
   "running", `kpbench.engine.runmanifest`) are written;
3. the loop (`kpbench.engine.loop` over `kpbench.engine.inference`, the one inference loop): fixed batches of the
   id-sorted image list; a rank runs every world_size-th pending batch and its store writer appends each finished
   image to its store (`kpbench.runs.store`);
4. rank 0 merges the rank shards into detections.bin in image-id order, writes the manifest (status "complete")
   and evaluates the run (`kpbench.evaluation.runeval`) from the arrays the merge read.

Distributed plumbing (ranks, collectives) is `kpbench.engine.distributed`.

Rank 0 holds the run directory's lock (`kpbench.runs.directory.lock_run_dir`) from step 1 to the end, so a second
run on the same directory refuses at once. A failure before step 2 has written anything removes the --out folder
again if step 1 created it; a failure after it marks the manifest "failed", with the reason (on a full disk too:
`kpbench.runs.directory.update_manifest_status`). A model whose predict raises stops the run with its traceback
and one line naming the model, the images and the run directory. Ctrl-C (or SIGTERM) during the loop keeps every
finished image, marks the manifest "interrupted" and raises `RunInterrupted`, whose message says how many images
are cached; the same command resumes.

Batches are fixed over the whole image list, so a resumed or distributed run feeds the model exactly the batches
an uninterrupted single-process run does, and its detections (and results files) come out byte-identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.config import LoadedConfig, RunSettings, check_settings
from kpbench.core.errors import KpbenchError
from kpbench.core.io import file_digest, write_json
from kpbench.data.coco import load_annotations, resolve_coco_root, restrict_ground_truth
from kpbench.data.download import remove_empty_dirs
from kpbench.engine.distributed import (
    DistInfo,
    agree,
    attempt,
    broadcast,
    gather,
    init_distributed,
    shutdown_distributed,
)
from kpbench.engine.inference import ModelCallError
from kpbench.engine.loop import LoopStats, loader_workers, run_loop
from kpbench.engine.planning import (
    RESUME_IGNORED,
    RunPlan,
    fixed_batches,
    pending_batches,
    plan_run,
    resume_fingerprint,
)
from kpbench.engine.runmanifest import (
    base_manifest,
    cached_backbone_shapes,
    mark_failed,
    mark_interrupted,
    merge_shapes,
    model_facts,
    now,
    timings,
)
from kpbench.evaluation.backends import DEFAULT_BACKEND
from kpbench.evaluation.cocoeval import check_backend
from kpbench.evaluation.person_boxes import record_person_box_stats
from kpbench.evaluation.runeval import evaluate_run, summary_text
from kpbench.runs.directory import (
    clear_run_files,
    ground_truth_path,
    manifest_path,
    read_manifest,
    shard_path,
    store_path,
    write_manifest,
)
from kpbench.runs.merge import count_cached_images, write_canonical_store
from kpbench.runs.store import create_store

if TYPE_CHECKING:
    import torch

    from kpbench.evaluation.cocoeval import EvalResult
    from kpbench.models.base import PoseModel
    from kpbench.runs.arrays import RunArrays

# Names other modules and tests import from here, defined in the modules split from it.
__all__ = [
    "RESUME_IGNORED", "DistInfo", "LoopStats", "RunInterrupted", "RunOutcome", "RunPlan", "fixed_batches",
    "loader_workers", "pending_batches", "plan_run", "resume_fingerprint", "run", "write_canonical_store",
]  # fmt: skip


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


# --- committing (rank 0) -------------------------------------------------------------------------------------


def _commit(plan: RunPlan, manifest: dict[str, Any]) -> None:
    """Rank 0's writes before the loop: clear (--overwrite) or merge (resume) the detections, GT, manifest."""
    run_dir = Path(plan.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if plan.state == "overwrite":
            clear_run_files(run_dir)
        if plan.state == "resume":
            write_canonical_store(run_dir, plan.image_ids)
        else:
            create_store(store_path(run_dir))
        gt = load_annotations(Path(plan.coco_root), plan.split)
        write_json(ground_truth_path(run_dir), restrict_ground_truth(gt, plan.image_ids), indent=None)
        write_manifest(run_dir, manifest)
    except OSError as exc:  # a read-only or full disk, a file where a folder should be
        _forget_new_run(plan)
        raise KpbenchError(f"{exc.filename or run_dir}: cannot write the run directory ({exc.strerror or exc})") from None
    except BaseException:  # Ctrl-C while the first files are written, or a write refused (KpbenchError)
        _forget_new_run(plan)
        raise


def _forget_new_run(plan: RunPlan) -> None:
    """Remove what a new run wrote before its manifest: a folder with a store but no manifest is not a run
    directory, and the next run would refuse it. (A resumed run keeps its files; an --overwrite is asked again.)"""
    if plan.state != "new":
        return
    run_dir = Path(plan.run_dir)
    for path in (manifest_path(run_dir), store_path(run_dir), ground_truth_path(run_dir)):
        path.unlink(missing_ok=True)


# --- the session ---------------------------------------------------------------------------------------------


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
    from kpbench.models.registry import given_model_options, resolve_model

    model: PoseModel | None = None
    info: dict[str, Any] | None = None
    error = None
    spec, error = attempt(lambda: resolve_model(settings.model))
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

        result, error = attempt(build)
        if result is not None:
            model, info = result
            move = getattr(model, "to", None)
            if move is not None:
                move(device)
            old_sha = ((plan.previous or {}).get("model") or {}).get("checkpoint_sha256")
            if plan.state == "resume" and old_sha and old_sha != info.get("checkpoint_sha256"):
                error = (f"{settings.weights}: the checkpoint changed since this run started (sha256 {old_sha[:12]}... "
                         "there); use another --out, or pass --overwrite")
            elif plan.state == "resume":
                error = _changed_top_down_decoding(plan.run_dir, plan.previous, info)
    elif plan.previous and error is None:
        info = plan.previous["model"]
        # Nothing to run, but a checkpoint replaced at the same path must not pass for the one that was run.
        old_sha = (info or {}).get("checkpoint_sha256")
        path = Path(settings.weights) if settings.weights else None
        if old_sha and path is not None and path.is_file() and file_digest(path) != old_sha:
            error = (f"{settings.weights}: the checkpoint changed since this run was made (sha256 {old_sha[:12]}... "
                     "there); use another --out, or pass --overwrite")
    if dist.is_main and error is None:
        environment = capture_environment(device)
        facts = model_facts(model, plan, spec.to_json())
        manifest = base_manifest(settings, plan, info or {}, facts, environment, dist, config, command_line)
        _, error = attempt(lambda: _commit(plan, manifest))
    agree(dist, error)
    return model


# How a top-down run turns crops into image keypoints (`kpbench.models.topdown.TopDownModel.describe`): fixed by the
# crop model and by kpbench's version, not by any option, so the resume fingerprint (the config) cannot see a change.
TOP_DOWN_DECODING = ("crop_size", "padding", "pixel_convention", "heatmap_refinement", "nms_area")


def _changed_top_down_decoding(run_dir: Path, previous: dict[str, Any] | None, info: dict[str, Any]) -> str | None:
    """The error for a top-down run resumed with crops or heatmaps now read differently than when it started (a
    run made before kpbench recorded its pixel convention counts as changed): its images would be decoded two ways.
    None when nothing changed, or for a whole-image model."""
    def top_down(model_info: dict[str, Any] | None) -> dict[str, Any] | None:
        return (((model_info or {}).get("extra") or {}).get("protocol") or {}).get("top_down")

    now = top_down(info)
    if not now:
        return None
    before = top_down((previous or {}).get("model")) or {}
    diffs = [f"{key}: {before.get(key, 'not recorded')!r} there, {now.get(key)!r} now" for key in TOP_DOWN_DECODING
             if before.get(key, "not recorded") != now.get(key)]
    if not diffs:
        return None
    return (f"{run_dir}: the top-down decoding changed since this run started ({'; '.join(diffs)}): its images "
            "would be read two ways; use another --out, or pass --overwrite")


def _loop_and_merge(
    model: PoseModel | None,
    device: torch.device,
    settings: RunSettings,
    plan: RunPlan,
    batches: list[list[int]],
    dist: DistInfo,
    progress: bool,
) -> tuple[LoopStats, list[dict[str, Any]], RunArrays | None]:
    """Step 3, the loop (every world_size-th pending batch into this rank's store), then rank 0 merges the
    shards into detections.bin. Returns this rank's stats, every rank's, and (rank 0) the merged store's
    arrays."""
    run_dir = Path(plan.run_dir)
    mine = batches[dist.rank :: dist.world_size]
    out_path = shard_path(run_dir, dist.rank) if dist.distributed else store_path(run_dir)
    stats = LoopStats(rank=dist.rank)
    if model is not None:
        stats = run_loop(model, device, settings, plan, mine, out_path, dist, progress)
    all_stats = gather(dist, dataclasses.asdict(stats))
    # Every shard is complete: leave the process group now, so that the other ranks can exit while rank 0
    # merges and evaluates.
    shutdown_distributed(dist)
    arrays = None
    if dist.is_main:
        arrays = write_canonical_store(run_dir, plan.image_ids)
        if len(arrays) != len(plan.image_ids):
            raise KpbenchError(
                f"{run_dir}: {len(plan.image_ids) - len(arrays)} of {len(plan.image_ids)} images have no detections "
                "after the run (did a rank fail?); re-run the same command to finish them"
            )
    return stats, all_stats, arrays


def _interrupted(run_dir: Path, plan: RunPlan) -> RunInterrupted:
    """After Ctrl-C on rank 0: mark the manifest "interrupted" (the store stays as it is, and the same command
    resumes it) and say how far the run got."""
    total = len(plan.image_ids)
    cached = min(count_cached_images(run_dir), total)
    mark_interrupted(run_dir)
    return RunInterrupted(run_dir, cached, total)


def _model_failed(run_dir: Path, settings: RunSettings, plan: RunPlan, exc: ModelCallError) -> ModelCallError:
    """The one line for a model whose predict raised: the model, the images and the run directory, marked failed
    (its traceback is the cause's, which the command line prints first)."""
    total = len(plan.image_ids)
    cached = min(count_cached_images(run_dir), total)
    message = (f"model {settings.model}: {exc}; run directory {run_dir} marked failed ({cached} of {total} images "
               "cached are kept: fix the model and run the same command to resume)")
    return ModelCallError(message, exc.cause, exc.model, exc.image_ids)


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
    backend: str = DEFAULT_BACKEND,
) -> RunOutcome:
    """Run the model of settings.model (Keypoint R-CNN by default) over the selected COCO images into a run
    directory, resuming where it stopped, then evaluate it (on rank 0). Under torchrun (WORLD_SIZE > 1) the
    images are sharded over the ranks."""
    from kpbench.engine.device import check_dtype, resolve_device
    from kpbench.models.registry import check_model_options, given_model_options

    session_start = time.perf_counter()
    started_at = now()
    # Cheap checks first (no torch yet for Keypoint R-CNN): sizes, the model spec, the weights' name or file,
    # the backend.
    check_settings(settings)
    from kpbench.engine.topdown import TopDownRequest
    from kpbench.runtimes.base import check_device, parse_runtime

    runtime = parse_runtime(settings.runtime)  # an unknown runtime is refused before any weights are read

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
            check_device([runtime], device.type)  # tensorrt on a CPU: one line, before the model is built
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
    plan, error = (attempt(lambda: plan_run(settings, device.type, overwrite, hold=held)) if dist.is_main
                   else (None, None))
    plan, error = broadcast(dist, (plan, error))
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
    except ModelCallError as exc:  # the model's own failure: its traceback, then one line that names everything
        failed = _model_failed(run_dir, settings, plan, exc)
        if dist.is_main:
            mark_failed(run_dir, failed)
        raise failed from exc.cause
    except Exception as exc:  # an unreadable image, a full disk, a failed rank, a failed evaluation
        if dist.is_main:
            mark_failed(run_dir, exc)
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
    stats, all_stats, arrays = _loop_and_merge(model, device, settings, plan, batches, dist, progress)
    if not dist.is_main:
        return RunOutcome(run_dir=run_dir, is_main=False, processed=stats.images, resumed_from=len(done))
    assert arrays is not None

    # 4. Rank 0: record, evaluate.
    manifest = read_manifest(run_dir)
    counts: dict[str, int] = {}
    for s in all_stats:
        for key, n in s["shapes"].items():
            counts[key] = counts.get(key, 0) + n
    manifest["backbone_shapes"] = cached_backbone_shapes(arrays) or merge_shapes(manifest.get("backbone_shapes") or {},
                                                                                 counts)
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
    manifest["timings"] = timings(sessions)
    manifest["status"] = "complete"
    manifest["updated_at"] = now()
    write_manifest(run_dir, manifest)

    outcome = RunOutcome(run_dir=run_dir, is_main=True, processed=session["images"], resumed_from=len(done))
    if evaluate:
        try:
            outcome.results = evaluate_run(run_dir, backend=backend, arrays=arrays)  # the merge's: no second read
            record_person_box_stats(run_dir, backend=backend)  # a top-down run's person boxes, scored alone
        except KeyboardInterrupt:
            n = len(plan.image_ids)
            raise RunInterrupted(run_dir, n, n, f"interrupted while evaluating: all {n} images are cached in "
                                 f"{run_dir}; run the same command again to evaluate them") from None
        manifest = read_manifest(run_dir)
        session["total_s"] = round(time.perf_counter() - session_start, 3)
        manifest["timings"] = timings(sessions)
        write_manifest(run_dir, manifest)
        outcome.summary = summary_text(manifest, outcome.results, run_dir)
    outcome.manifest = manifest
    return outcome
