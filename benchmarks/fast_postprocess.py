"""How much faster is kpbench's keypoint post-processing than torchvision's? Target: ratio >= 1.0 at 100 RoIs on a CPU.

Times torchvision's `roi_heads.heatmaps_to_keypoints` against `fast_heatmaps_to_keypoints` on the same random
(N, 17, 56, 56) logits and N person-like boxes: heights log-uniform from 20 to 400 px (the sizes Keypoint R-CNN
detects at min_size 800), widths 0.35 to 1.0 times the height, fractional corners. Each case is the fastest of
`--rounds` rounds in which the two take turns (benchmarks/_timing.py), so that a busy spell of a shared machine
hits both; on CUDA every call ends with torch.cuda.synchronize(). The two outputs are checked equal (torch.equal)
before timing. Prints, per device and RoI count, both times and the ratio torchvision / fast.

On a CPU both spend nearly all their time in the bicubic upsampling of every RoI to its box size, which they do
with the same calls; the fast one saves torchvision's per-RoI Python work and most of the arg-max. With a few
cores shared with other processes, intra-op threads wait on each other at every parallel region: `--threads 1`
gives steadier numbers there.

    python benchmarks/fast_postprocess.py                       # CPU (and CUDA if available), 10/100/300 RoIs
    python benchmarks/fast_postprocess.py --device cpu --threads 1 --rois 100 --rounds 9
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from _timing import best_times_interleaved

TARGET = 1.0  # at 100 RoIs on a CPU


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rois", type=int, nargs="+", default=[10, 100, 300], help="RoI counts to time")
    p.add_argument("--device", default="all", help="cpu, cuda or all (cpu, and cuda when available)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case (the fastest is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--min-box", type=float, default=20.0, help="smallest box height in px")
    p.add_argument("--max-box", type=float, default=400.0, help="largest box height in px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def make_case(n: int, args: argparse.Namespace, device: Any) -> tuple[Any, Any]:
    """Random logits (n, 17, 56, 56) and n person-like boxes (see the module docstring), on `device`."""
    import torch

    g = torch.Generator().manual_seed(args.seed + n)
    log_h = torch.empty(n, dtype=torch.float64).uniform_(math.log(args.min_box), math.log(args.max_box), generator=g)
    h = log_h.exp()
    w = h * torch.empty(n, dtype=torch.float64).uniform_(0.35, 1.0, generator=g)
    x1 = torch.rand(n, generator=g, dtype=torch.float64) * 800
    y1 = torch.rand(n, generator=g, dtype=torch.float64) * 600
    rois = torch.stack([x1, y1, x1 + w, y1 + h], dim=1).float()
    maps = torch.randn(n, 17, 56, 56, generator=g)
    return maps.to(device), rois.to(device)


def time_device(device: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per RoI count: best times of both and their ratio."""
    import torch
    from torchvision.models.detection.roi_heads import heatmaps_to_keypoints

    from kpbench.models.keypointrcnn_postprocess import fast_heatmaps_to_keypoints

    def timed(fn: Any, maps: Any, rois: Any) -> Any:
        def call() -> Any:
            out = fn(maps, rois)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out

        return call

    rows = []
    for n in args.rois:
        maps, rois = make_case(n, args, device)
        expected, got = heatmaps_to_keypoints(maps, rois), fast_heatmaps_to_keypoints(maps, rois)  # also warm-up
        equal = all(torch.equal(e, g) for e, g in zip(expected, got))
        best = best_times_interleaved(
            {"torchvision": timed(heatmaps_to_keypoints, maps, rois), "fast": timed(fast_heatmaps_to_keypoints, maps, rois)},
            args.rounds,
        )
        tv, fast = best["torchvision"][0], best["fast"][0]
        rows.append({"device": str(device), "rois": n, "torchvision_ms": tv * 1e3, "fast_ms": fast * 1e3,
                     "ratio": tv / fast, "equal": equal})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    """Time, print the table (or JSON); 0 if the outputs are equal and the CPU ratio at 100 RoIs meets the target."""
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = {"cpu": ["cpu"], "cuda": ["cuda"], "all": ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]}
    rows = [row for name in devices[args.device] for row in time_device(torch.device(name), args)]
    report = {"threads": torch.get_num_threads(), "rounds": args.rounds, "box_heights_px": [args.min_box, args.max_box],
              "rows": rows}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"torch {torch.__version__}, {report['threads']} threads, best of {args.rounds} interleaved rounds, "
              f"box heights {args.min_box:g}-{args.max_box:g} px, 17 x 56 x 56 maps")  # fmt: skip
        print(f"{'device':<8}{'RoIs':>6}{'torchvision ms':>16}{'fast ms':>10}{'ratio':>8}  equal")
        for r in rows:
            print(f"{r['device']:<8}{r['rois']:>6}{r['torchvision_ms']:>16.2f}{r['fast_ms']:>10.2f}{r['ratio']:>8.3f}  {r['equal']}")
        print(f"ratio = torchvision time / fast time (target >= {TARGET} at 100 RoIs on a CPU)")
    checked = [r for r in rows if r["device"] == "cpu" and r["rois"] == 100]
    ok = all(r["equal"] for r in rows) and all(r["ratio"] >= TARGET for r in checked)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
