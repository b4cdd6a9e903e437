"""Confidence intervals for COCO AP/AR, and whether a difference between two runs is real.

The image is the unit COCO samples, so the bootstrap resamples images with replacement (Efron & Tibshirani, "An
Introduction to the Bootstrap", 1993): each replicate is COCOeval's accumulate and summarize over the resampled
multiset of images, computed exactly from the evaluation's per-image matches (a repeated image's detections and
GT count once per copy, in COCOeval's order), so no model or matching is rerun. The interval is the percentile
interval of the replicates. `compare_runs` resamples the same images for both runs (a paired bootstrap), so the
interval on ΔAP reflects the difference, not the spread of each AP on its own.

A request is checked before any work (`BootstrapRequest`): at least one replicate, a seed in [0, 2**63 - 1] and a
level in (0, 1). Its memory is estimated before anything is allocated (`memory_bytes`: the draws, replicates x
images 8-byte indices, and the replicate stats), and a request that would not fit in the memory available is
refused in one line: the draws are made in one call of the seeded generator, so that an interval does not depend
on how it was computed, and are therefore held whole rather than made in chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kpbench.core.errors import KpbenchError
from kpbench.evaluation.cocoeval import EvalResult, ImageEval, iou_threshold_index, require_image_evals

if TYPE_CHECKING:
    from kpbench.evaluation.vectorized import MatchTable

DEFAULT_REPLICATES = 1000
DEFAULT_LEVEL = 0.95
MAX_SEED = 2**63 - 1  # numpy takes larger seeds, but the command line's other seeds stop here (kpbench.core.config)
# The share of the available memory a bootstrap may plan to take: the rest is the process's and the machine's.
MEMORY_SHARE = 0.8


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation without swapping (Linux's MemAvailable; else the free
    physical pages), or None where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import os

    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class BootstrapRequest:
    """An image bootstrap, checked when made: `replicates` >= 1, `seed` in [0, MAX_SEED], `level` in (0, 1). The
    messages name the command-line options (--bootstrap, --bootstrap-seed) and the parameter `level`, which no
    command sets (intervals are 95%)."""

    replicates: int = DEFAULT_REPLICATES
    seed: int = 0
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        for option, value in (("--bootstrap", self.replicates), ("--bootstrap-seed", self.seed)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise KpbenchError(f"{option}: must be a whole number, got {value!r}")
        if self.replicates < 1:
            raise KpbenchError(f"--bootstrap: needs at least 1 replicate, got {self.replicates}")
        if not 0 <= self.seed <= MAX_SEED:
            raise KpbenchError(f"--bootstrap-seed: must be between 0 and 2**63 - 1, got {self.seed}")
        if not isinstance(self.level, (int, float)) or not 0 < self.level < 1:
            raise KpbenchError(f"level: must be in (0, 1), got {self.level}")  # Python only: no command sets it

    def memory_bytes(self, num_images: int, num_stats: int, evaluations: int = 1) -> int:
        """What the bootstrap of `evaluations` evaluations (2 for a comparison) of `num_images` images and
        `num_stats` stats holds at its peak: the image draws (int64), each evaluation's replicate stats (float64)
        and a few replicate-long columns to take intervals from."""
        return int(self.replicates) * (8 * max(num_images, 1) + 8 * num_stats * evaluations + 64)

    def check_memory(self, num_images: int, num_stats: int, evaluations: int = 1,
                     available: int | None = None) -> None:
        """Refuse, before anything is allocated, a bootstrap that would not fit in MEMORY_SHARE of the memory
        available (`available_memory()` unless given; no check where the system does not say)."""
        available = available_memory() if available is None else available
        need = self.memory_bytes(num_images, num_stats, evaluations)
        if available is not None and need > MEMORY_SHARE * available:
            raise KpbenchError(
                f"--bootstrap {self.replicates}: {self.replicates:,} replicates of {num_images:,} images need about "
                f"{_gib(need)} of memory, more than this machine has available ({_gib(available)}); use fewer "
                "replicates (1000 to 10000 are usual: the intervals' Monte Carlo error shrinks as one over the "
                "square root of their number)"
            )


def check_bootstrap(replicates: int | None, seed: int = 0, level: float = DEFAULT_LEVEL) -> BootstrapRequest | None:
    """The checked request of the command-line options (None without --bootstrap; the seed is checked anyway)."""
    BootstrapRequest(1, seed, level)
    return None if replicates is None else BootstrapRequest(replicates, seed, level)


@dataclass
class _CellMatches:
    """COCOeval's matches of one (category, area range), image by image in COCOeval's image order (p.imgIds): the
    evaluated detections of image i are rows dt_start[i] : dt_start[i] + dt_count[i], by rank. A replicate
    concatenates the rows of each drawn copy of an image, as COCOeval's accumulate concatenates evalImgs."""

    k: int  # category index
    a: int  # area range index
    dt_start: np.ndarray  # (I,)
    dt_count: np.ndarray  # (I,)
    scores: np.ndarray  # (D,)
    rank: np.ndarray  # (D,) within its image, by descending score
    matched: np.ndarray  # (T, D) matched to a GT whose id is not 0 (COCOeval's dtMatches test)
    ignored: np.ndarray  # (T, D) dtIgnore
    image: np.ndarray  # (D,) image index
    num_gt: np.ndarray  # (I,) GTs COCOeval does not ignore (its npig, per image)


def _cells_from_table(table: MatchTable) -> list[_CellMatches]:
    """The cells of the vectorized evaluator's match arrays, read as they are (no ImageEval is built)."""
    images = len(table.image_ids)
    counted = table.counted()
    dt_start, dt_count, _, _ = table.unit_slices()
    cells = []
    for k in range(len(table.category_ids)):
        units = slice(k * images, (k + 1) * images)
        first = int(dt_start[k * images]) if images else 0
        rows = np.arange(first, first + int(dt_count[units].sum()))  # a category's units are contiguous
        gts = np.flatnonzero(table.gt_unit // max(images, 1) == k)
        for a in range(table.dt_ignore.shape[0]):
            kept = gts[~table.gt_ignore[a, gts]]
            cells.append(_CellMatches(
                k, a, dt_start[units] - first, dt_count[units], table.dt_scores[rows], table.dt_rank[rows],
                counted[a][:, rows], table.dt_ignore[a][:, rows], table.dt_unit[rows] - k * images,
                np.bincount(table.gt_unit[kept] - k * images, minlength=images),
            ))
    return cells


def _joined(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    return np.concatenate(parts, axis=-1) if parts else empty


def _cells_from_image_evals(result: EvalResult, evals: Sequence[ImageEval]) -> list[_CellMatches]:
    """The same cells from pycocotools' evalImgs entries (the reference backend's matches)."""
    p = result.params
    position = {int(i): n for n, i in enumerate(p.image_ids)}
    images = len(position)
    groups: dict[tuple[int, int], list[ImageEval]] = {}
    for e in evals:  # evalImgs order: category, area, image
        groups.setdefault((e.category_id, e.area_index), []).append(e)
    thresholds = len(p.iou_thresholds)
    cells = []
    for (category_id, a), group in groups.items():
        index = np.asarray([position[e.image_id] for e in group], dtype=np.int64)
        counts = np.zeros(images, dtype=np.int64)
        counts[index] = [len(e.dt_scores) for e in group]
        num_gt = np.zeros(images, dtype=np.int64)
        num_gt[index] = [int(np.count_nonzero(e.gt_ignore == 0)) for e in group]
        starts = np.zeros(images, dtype=np.int64)
        starts[index] = np.concatenate([[0], np.cumsum(counts[index])[:-1]])
        cells.append(_CellMatches(
            p.category_ids.index(category_id), a, starts, counts,
            _joined([e.dt_scores for e in group], np.zeros(0)),
            _joined([np.arange(len(e.dt_scores)) for e in group], np.zeros(0, np.int64)),
            _joined([e.dt_matches != 0 for e in group], np.zeros((thresholds, 0), bool)),
            _joined([np.asarray(e.dt_ignore, dtype=bool) for e in group], np.zeros((thresholds, 0), bool)),
            np.repeat(index, counts[index]), num_gt,
        ))
    return cells


def _by_image(result: EvalResult, purpose: str) -> list[_CellMatches]:
    """COCOeval's per-image matches of `result` as cells: the match arrays of the vectorized backend read directly,
    else its evalImgs entries (a KpbenchError saying why `purpose` needs them when the backend kept none)."""
    table = result.table_matches()
    if table is not None:
        return _cells_from_table(table)
    return _cells_from_image_evals(result, require_image_evals(result, purpose))


def _replicate(result: EvalResult, cells: Sequence[_CellMatches], image_index: np.ndarray) -> list[float]:
    """COCOeval's stats over the multiset of images `image_index` (positions in p.imgIds, in the order given: a
    repeated image's copies count once each), from the cells alone."""
    from kpbench.analysis.thresholds import _accumulate, _slice, _summarize

    p = result.params
    slices = []
    for c in cells:
        num_gt = int(c.num_gt[image_index].sum())
        if num_gt == 0:
            continue  # COCOeval leaves -1 here, at every threshold
        counts, starts = c.dt_count[image_index], c.dt_start[image_index]
        offsets = np.cumsum(counts) - counts
        rows = np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))
        for m, max_det in enumerate(p.max_dets):
            sel = rows[c.rank[rows] < max_det]
            slices.append(_slice(c.k, c.a, m, c.scores[sel], c.matched[:, sel], c.ignored[:, sel], num_gt,
                                 p.recall_thresholds))
    precision, recall = _accumulate(slices, result, -np.inf)
    return _summarize(precision, recall, result)


def _replicate_stats(result: EvalResult, cells: Sequence[_CellMatches], image_ids: np.ndarray) -> list[float]:
    """COCOeval's stats over the multiset `image_ids` (image ids, in evalImgs' image order)."""
    position = {int(i): n for n, i in enumerate(result.params.image_ids)}
    return _replicate(result, cells, np.asarray([position[int(i)] for i in image_ids.tolist()], dtype=np.int64))


def _check_default_parameters(result: EvalResult) -> None:
    if not result.settings.is_default() or (result.schema is not None and result.schema.protocol != "coco"):
        raise KpbenchError("the bootstrap resamples COCOeval's standard summary: evaluate with COCO's parameters")


def bootstrap_samples(
    result: EvalResult, replicates: int = DEFAULT_REPLICATES, seed: int = 0, image_draws: np.ndarray | None = None
) -> np.ndarray:
    """(replicates, stats) of COCOeval's stats over images resampled with replacement (seeded)."""
    request = BootstrapRequest(replicates, seed)
    _check_default_parameters(result)
    cells = _by_image(result, "the bootstrap")
    num_images = len(result.params.image_ids)
    if image_draws is None:
        request.check_memory(num_images, len(result.stats))
        image_draws = draw_images(num_images, replicates, seed)
    samples = np.empty((len(image_draws), len(result.stats)), dtype=np.float64)
    for row, draw in enumerate(image_draws):
        # Sorting each replicate's draws keeps a repeated image's copies together, in COCOeval's image order.
        samples[row] = _replicate(result, cells, np.sort(draw))
    return samples


def draw_images(num_images: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, num_images) image indices drawn with replacement from a seeded generator."""
    return np.random.default_rng(seed).integers(0, num_images, size=(replicates, num_images))


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    valid = samples[samples > -1] if samples.ndim == 1 else samples
    if valid.size == 0:
        return (-1.0, -1.0)
    tail = (1 - level) / 2
    low, high = np.quantile(valid, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    result: EvalResult, replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL
) -> list[dict[str, Any]]:
    """One row per stat: its value, and the percentile interval of `replicates` image-bootstrap replicates."""
    BootstrapRequest(replicates, seed, level)
    samples = bootstrap_samples(result, replicates, seed)
    rows = []
    for j, (name, value) in enumerate(result.stats.items()):
        low, high = _interval(samples[:, j], level)
        rows.append({"stat": name, "value": value, "low": low, "high": high, "level": level,
                     "replicates": replicates, "seed": seed})
    return rows


@dataclass
class Comparison:
    """Two evaluations of the same GT: the paired bootstrap on each Δstat, and the images that differ most."""

    rows: list[dict[str, Any]]
    images: list[dict[str, Any]]


def _per_image_counts(result: EvalResult, score_thresh: float,
                      cells: Sequence[_CellMatches] | None = None) -> dict[int, tuple[int, int]]:
    """(true positives, false positives) per image at OKS/IoU 0.5, area "all", detections scored above the threshold
    (every image of the evaluation; `cells` as `_by_image` gives them, to save reading the matches again)."""
    t = iou_threshold_index(result, 0.5)
    area_all = result.params.area_labels.index("all")
    images = len(result.params.image_ids)
    tp, fp = np.zeros(images, dtype=np.int64), np.zeros(images, dtype=np.int64)
    for c in cells if cells is not None else _by_image(result, "compare"):
        if c.a != area_all:
            continue
        counts = ~c.ignored[t] & (c.scores > score_thresh)
        tp += np.bincount(c.image[counts & c.matched[t]], minlength=images)
        fp += np.bincount(c.image[counts & ~c.matched[t]], minlength=images)
    return {int(i): (int(a), int(b)) for i, a, b in zip(result.params.image_ids, tp.tolist(), fp.tolist())}


def compare_results(
    a: EvalResult, b: EvalResult, replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL,
    top: int = 10, score_thresh: float = 0.5,
) -> Comparison:
    """Paired bootstrap of b - a on the same images; `top` images ranked by how much their counts at 0.5 differ."""
    if a.iou_type != b.iou_type:
        raise KpbenchError(f"compare: one evaluation is {a.iou_type}, the other {b.iou_type}")
    if a.params.image_ids != b.params.image_ids:
        raise KpbenchError("compare: the two evaluations cover different images; compare runs on the same GT")
    request = BootstrapRequest(replicates, seed, level)
    for result in (a, b):
        _check_default_parameters(result)
    request.check_memory(len(a.params.image_ids), len(a.stats), evaluations=2)
    draws = draw_images(len(a.params.image_ids), replicates, seed)
    sa, sb = bootstrap_samples(a, replicates, seed, draws), bootstrap_samples(b, replicates, seed, draws)
    rows = []
    for j, name in enumerate(a.stats):
        va, vb = a.stats[name], b.stats[name]
        if va < 0 or vb < 0:
            rows.append({"stat": name, "a": va, "b": vb, "delta": None, "low": None, "high": None})
            continue
        both = (sa[:, j] > -1) & (sb[:, j] > -1)
        low, high = _interval((sb[both, j] - sa[both, j]), level) if both.any() else (None, None)
        rows.append({"stat": name, "a": va, "b": vb, "delta": vb - va, "low": low, "high": high,
                     "significant": bool(low is not None and (low > 0 or high < 0)), "level": level,
                     "replicates": replicates, "seed": seed})
    ca, cb = _per_image_counts(a, score_thresh), _per_image_counts(b, score_thresh)
    images = []
    for image_id in sorted(set(ca) | set(cb)):
        (tpa, fpa), (tpb, fpb) = ca.get(image_id, (0, 0)), cb.get(image_id, (0, 0))
        change = abs(tpb - tpa) + abs(fpb - fpa)
        if change:
            images.append({"image_id": image_id, "tp_a": tpa, "fp_a": fpa, "tp_b": tpb, "fp_b": fpb, "change": change})
    images.sort(key=lambda r: (-r["change"], r["image_id"]))
    return Comparison(rows=rows, images=images[:top])


def compare_runs(
    run_a: str | Path, run_b: str | Path, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
    level: float = DEFAULT_LEVEL, iou_types: Sequence[str] = ("keypoints",),
) -> dict[str, Comparison]:
    """`compare_results` for two run directories on the same GT, per iou type, from their caches."""
    from kpbench.evaluation.runeval import evaluate_run

    BootstrapRequest(replicates, seed, level)  # before the runs are scored

    ea, eb = evaluate_run(run_a, write=False), evaluate_run(run_b, write=False)
    gt_a, gt_b = Path(run_a) / "ground_truth.json", Path(run_b) / "ground_truth.json"
    if gt_a.read_bytes() != gt_b.read_bytes():
        raise KpbenchError(f"{run_a} / {run_b}: the runs have different ground truth (ground_truth.json differs)")
    return {t: compare_results(ea[t], eb[t], replicates, seed, level) for t in iou_types}


# --- for people: one scale per kind of output (README): tables for people show AP and AR in percent with one
# decimal and n/a for COCO's -1; differences in signed percent points; JSON and CSV keep the fractions.


def _signed_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}"


def interval_rows_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`bootstrap_intervals` rows for people: value, low and high in percent (n/a for COCO's -1)."""
    from kpbench.evaluation.cocoeval import percent

    return [{**row, **{k: percent(row[k]) for k in ("value", "low", "high") if row.get(k) is not None}} for row in rows]


def comparison_rows_percent(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`Comparison.rows` for people: a and b in percent (n/a for COCO's -1), the difference B - A and its interval in
    signed percent points (n/a where undefined)."""
    from kpbench.evaluation.cocoeval import percent

    out = []
    for row in rows:
        shown = dict(row)
        for key in ("a", "b"):
            if row.get(key) is not None:
                shown[key] = percent(row[key])
        for key in ("delta", "low", "high"):
            shown[key] = _signed_percent(row.get(key))
        out.append(shown)
    return out

