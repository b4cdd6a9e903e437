"""Memory in the speed table: the peak a row used (CUDA allocator, or the process's peak RSS on a CPU), and the
guard that refuses a size whose input buffers cannot fit before anything is allocated (issue 23, item 7:
``kpbench speed --model yolo --sizes 100000`` was killed by the kernel at 23.5 GB).

The guard asks the model for its ``input_footprint(height, width)`` hook: the shape of the tensor its network gets
for an image of that size at its current input size, and the bytes its own preprocessing and first layers hold
for it (resize or letterbox buffers, the float input, the first feature map). That is a lower bound of what a
call needs; a row is refused when the bound, times the batch, exceeds `FIT_FRACTION` of the memory available:
on a CPU, MemAvailable of /proc/meminfo or the cgroup's limit less its usage, whichever is smaller; on CUDA, the
device's free memory (``torch.cuda.mem_get_info``). A model without the hook is not guarded (the row says so).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError

if TYPE_CHECKING:
    import torch

# The share of the available memory a row's lower-bound estimate may take: the rest of the network needs more.
FIT_FRACTION = 0.8
GIB = 2**30


class InputTooLarge(KpbenchError):
    """A size (or batch) whose input buffers alone cannot fit in the memory available: refused before allocating."""


def _meminfo_available() -> int | None:
    """MemAvailable of /proc/meminfo, in bytes (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    """The cgroup's memory limit less its usage (v2: memory.max - memory.current; v1: limit_in_bytes -
    usage_in_bytes), in bytes; None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 2**60:  # no limit (v1 writes a huge number)
            return None
        return max(int(limit_text) - usage, 0)
    return None


def available_memory(device: torch.device) -> tuple[int | None, str]:
    """Bytes available to a new allocation on `device`, and where the number comes from."""
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"free memory of {device} (torch.cuda.mem_get_info)"
    sources = [(v, name) for v, name in ((_meminfo_available(), "MemAvailable in /proc/meminfo"),
                                         (_cgroup_available(), "the cgroup's memory limit less its usage")) if v is not None]
    if not sources:
        return None, "unknown"
    return min(sources)


def input_estimate(model: Any, image_hws: Iterable[tuple[int, int]], batch_size: int) -> tuple[int, tuple[int, ...]] | None:
    """The largest footprint over the images (bytes for a batch of `batch_size` such images) and that image's
    network input shape, from the model's `input_footprint` hook; None for a model without it."""
    hook = getattr(model, "input_footprint", None)
    if hook is None:
        return None
    worst: tuple[int, tuple[int, ...]] | None = None
    for height, width in dict.fromkeys((int(h), int(w)) for h, w in image_hws):
        shape, nbytes = hook(height, width)
        if worst is None or nbytes > worst[0]:
            worst = (int(nbytes), tuple(int(d) for d in shape))
    if worst is None:
        return None
    return worst[0] * batch_size, worst[1]


def check_fits(
    model: Any, image_hws: Iterable[tuple[int, int]], batch_size: int, device: torch.device, what: str
) -> int | None:
    """Raise InputTooLarge when the model's input buffers for the largest of the images, `batch_size` at a time,
    exceed FIT_FRACTION of the memory available on `device`; else return the estimate in bytes (None: the model
    gives no estimate). `what` names the request in the message ("size 100000", "--min-size 9000")."""
    estimate = input_estimate(model, image_hws, batch_size)
    if estimate is None:
        return None
    nbytes, shape = estimate
    available, source = available_memory(device)
    if available is not None and nbytes > FIT_FRACTION * available:
        batch = f"{batch_size} x " if batch_size > 1 else ""
        raise InputTooLarge(
            f"{what}: its input buffers alone need {nbytes / GIB:.1f} GiB ({batch}network input "
            f"{'x'.join(map(str, shape))} and the model's resize buffers), more than {FIT_FRACTION:.0%} of the "
            f"{available / GIB:.1f} GiB available ({source}); refused before allocating"
        )
    return nbytes


def _read_vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_memory(device: torch.device) -> str | None:
    """Reset the peak-memory counters before a row; returns the RSS scope on CPU ("row" or "process")."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return None
    # Writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0).
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "process"
    return "row" if _read_vm_hwm_kib() is not None else "process"


def peak_memory(device: torch.device, rss_scope: str | None) -> dict[str, Any]:
    """Peak memory since `reset_peak_memory`: CUDA allocated/reserved MiB, or the process peak RSS on CPU."""
    import torch

    if device.type == "cuda":
        return {
            "peak_mem_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_mem_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
        }
    hwm = _read_vm_hwm_kib() if rss_scope == "row" else None
    if hwm is not None:
        return {"peak_rss_mib": hwm / 1024, "rss_scope": "row"}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    mib = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024
    return {"peak_rss_mib": mib, "rss_scope": "process"}
