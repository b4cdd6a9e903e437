"""What machine and software produced a result: recorded in every run manifest and speed file."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the kpbench checkout (with "-dirty" if modified), or None outside git.

    `path` is a file of the checkout (default: this module). A kpbench installed into a virtual environment
    that lies inside some other git repository is not tracked by that repository, and gives None rather than
    that repository's commit.
    """
    file = Path(path or __file__).resolve()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=file.parent, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "--", file.name)
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def device_slug(name: str) -> str:
    """A file-name-safe slug of a device name: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def capture_environment(device: Any = None) -> dict[str, Any]:
    """Versions, device and CPU facts. `device` is a torch.device (or None for CPU facts only)."""
    import torch
    import torchvision

    from kpbench import __version__

    env: dict[str, Any] = {
        "kpbench": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "argv": list(sys.argv),
    }
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 2),
                    "compute_capability": f"{props.major}.{props.minor}",
                }
            )
        env["driver"] = _nvidia_driver()
    env["gpus"] = gpus
    env["gpu_count"] = len(gpus)
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        env["device"] = f"cuda:{index}"
        env["device_name"] = torch.cuda.get_device_name(index)
    else:
        env["device"] = "cpu"
        env["device_name"] = env["cpu"]
    return env


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None
