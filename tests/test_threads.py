"""kpbench.core.threads: array work spread over threads gives what one thread gives, in order."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from kpbench.core.threads import MAX_DEFAULT_THREADS, parallel_map, thread_count


def test_parallel_map_keeps_the_order_and_uses_the_threads() -> None:
    seen: set[int] = set()
    barrier = threading.Barrier(3, timeout=10)

    def square(x: int) -> int:
        seen.add(threading.get_ident())
        if x < 3:
            barrier.wait()  # the first three items run at once: three threads exist
        return x * x

    assert parallel_map(square, list(range(50)), threads=3) == [x * x for x in range(50)]
    assert len(seen) == 3 and threading.get_ident() in seen
    assert parallel_map(square, [], threads=3) == []
    assert parallel_map(lambda x: x + 1, [1], threads=8) == [2]


def test_parallel_map_raises_the_first_failing_items_error_after_every_thread_stops() -> None:
    started = threading.active_count()

    def fail_on_odd(x: int) -> int:
        if x % 2:
            raise ValueError(f"item {x}")
        return x

    with pytest.raises(ValueError, match="item 1"):
        parallel_map(fail_on_odd, [0, 1, 2, 3], threads=1)
    with pytest.raises(ValueError, match=r"item \d"):
        parallel_map(fail_on_odd, list(range(40)), threads=4)
    assert threading.active_count() == started


def test_thread_count_reads_kpbench_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPBENCH_THREADS", "3")
    assert thread_count() == 3
    for ignored in ("0", "-2", "many", "", "\u00b2"):
        monkeypatch.setenv("KPBENCH_THREADS", ignored)
        assert 1 <= thread_count() <= MAX_DEFAULT_THREADS
    monkeypatch.setenv("KPBENCH_THREADS", "1")
    assert parallel_map(lambda x: threading.current_thread().name, [1, 2, 3]) == [threading.current_thread().name] * 3


@pytest.mark.parametrize("threads", ["1", "4"])
def test_oks_on_threads_is_the_oks_of_one_thread(monkeypatch: pytest.MonkeyPatch, threads: str) -> None:
    """The vectorized evaluator's OKS blocks on 1 or 4 threads: every stat and array equal (==) to pycocotools'
    through the same evaluation (the values do not depend on which thread computed a block)."""
    from kpbench.core.schema import COCO17
    from kpbench.data.synthetic import make_synthetic_coco
    from kpbench.evaluation import vectorized

    monkeypatch.setenv("KPBENCH_THREADS", threads)
    monkeypatch.setattr(vectorized, "_OKS_BLOCK", 64)  # many blocks on a small problem
    gt, results = make_synthetic_coco(num_images=60, crowd_fraction=0.05, detections_per_person=3.0, seed=11)
    evaluator = vectorized.KeypointEvaluator(gt, COCO17.sigma_array)
    image_ids = np.array([r["image_id"] for r in results])
    keypoints = np.array([r["keypoints"] for r in results], dtype=np.float64).reshape(len(results), 17, 3)
    scores = np.array([r["score"] for r in results])
    got = evaluator.evaluate(image_ids, keypoints, scores)
    monkeypatch.setenv("KPBENCH_THREADS", "1")
    monkeypatch.setattr(vectorized, "_OKS_BLOCK", 1 << 20)  # one block, one thread
    once = evaluator.evaluate(image_ids, keypoints, scores)
    assert got.stats == once.stats and got.stats["AP"] > 0
    for name in ("precision", "recall", "scores", "dt_matches", "gt_matches"):
        assert np.array_equal(getattr(got, name), getattr(once, name)), name


def test_shares_cut_contiguous_ranges_of_at_least_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    from kpbench.core.threads import shares

    monkeypatch.setenv("KPBENCH_THREADS", "3")
    assert shares(10, 4) == [slice(0, 5), slice(5, 10)]  # 10 // 4 = 2 shares, below the 3 threads
    assert shares(9000, 100) == [slice(0, 3000), slice(3000, 6000), slice(6000, 9000)]
    assert shares(3, 4) == [slice(0, 3)] and shares(0, 4) == [slice(0, 0)]
    monkeypatch.setenv("KPBENCH_THREADS", "1")
    assert shares(9000, 100) == [slice(0, 9000)]
