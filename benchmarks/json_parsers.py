"""Which JSON parser gets a val2017-scale results file into arrays fastest: msgspec or orjson (the json module as
the baseline). The default backend's input path (`kpbench.evaluation.fastparse`) uses the winner.

Writes the synthetic workload's results file (`kpbench.data.synthetic`, 5000 images, ~49,000 keypoint results,
20 MB), then times, in this process, best of --repeat rounds in which the cases take turns, each from the file's
bytes to the same (N, 51) keypoint array and (N,) scores (checked equal):

- msgspec: typed records (kpbench.evaluation.fastparse's decoder), then numpy;
- orjson: `orjson.loads` into dicts and lists, then numpy;
- json: `json.loads`, then numpy.

    python benchmarks/json_parsers.py [--images 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import synthetic_workload_files


def arrays_from_dicts(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    n = len(records)
    keypoints = np.fromiter(itertools.chain.from_iterable(r["keypoints"] for r in records), np.float64, n * 51)
    scores = np.fromiter((r["score"] for r in records), np.float64, n)
    return keypoints.reshape(n, 51), scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    import orjson

    from kpbench.evaluation import fastparse

    decoder = fastparse._RESULT_DECODERS["keypoints"]

    def with_msgspec(data: bytes) -> tuple[np.ndarray, np.ndarray]:
        records = decoder.decode(data)
        n = len(records)
        keypoints = np.fromiter(itertools.chain.from_iterable(r.keypoints for r in records), np.float64, n * 51)
        return keypoints.reshape(n, 51), np.fromiter((r.score for r in records), np.float64, n)

    with tempfile.TemporaryDirectory() as tmp:
        _, _, _, res_path = synthetic_workload_files(Path(tmp), args.images)
        data = res_path.read_bytes()
    cases: dict[str, Callable[[bytes], tuple[np.ndarray, np.ndarray]]] = {
        "msgspec": with_msgspec,
        "orjson": lambda d: arrays_from_dicts(orjson.loads(d)),
        "json": lambda d: arrays_from_dicts(json.loads(d)),
    }
    best: dict[str, float] = {}
    outputs = {}
    for _ in range(args.repeat):
        for name, fn in cases.items():
            for paused in (False, True):  # as it comes, and with the cyclic GC paused (as fastparse runs it)
                if paused:
                    gc.disable()
                start = time.process_time()
                outputs[name] = fn(data)
                elapsed = time.process_time() - start
                gc.enable()
                key = f"{name}{' (GC paused)' if paused else ''}"
                best[key] = min(best.get(key, float("inf")), elapsed)
    reference = outputs["json"]
    same = all(np.array_equal(o[0], reference[0]) and np.array_equal(o[1], reference[1]) for o in outputs.values())
    print(f"{len(data) / 1e6:.1f} MB, {len(reference[1])} results; CPU seconds, best of {args.repeat} interleaved "
          f"rounds; arrays {'equal' if same else 'DIFFER'}")
    for name, seconds in best.items():
        print(f"  {name:24s} {seconds:7.3f} s   {seconds / best['msgspec (GC paused)']:5.2f}x msgspec (GC paused)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
