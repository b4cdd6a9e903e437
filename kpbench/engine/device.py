"""The device, autocast and dtype helpers every stage that runs a model uses (`kpbench run`, `kpbench speed`,
`kpbench draw IMAGE`): generic torch plumbing, not any adapter's.

torch is imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError, KpbenchWarning

if TYPE_CHECKING:
    import torch


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" picks cuda when available; "cuda" without a GPU is a clear error.

    A CUDA device always comes back with its index ("cuda" is the current device, usually cuda:0), so that
    synchronisation, CUDA events and memory statistics all name the same GPU.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise KpbenchError(f"--device: unknown device {device!r} (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise KpbenchError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise KpbenchError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise KpbenchError(f"--device: unsupported device {device!r} (auto, cpu, cuda or cuda:N)")
    return dev


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast context for "fp16"/"bf16"; a no-op for "fp32"."""
    import torch

    if dtype == "fp32":
        return contextlib.nullcontext()
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    return torch.autocast(device_type=device.type, dtype=torch_dtype)


def check_dtype(device: torch.device, dtype: str) -> None:
    """Fail early, as a user error, where the device cannot autocast to `dtype` (bf16 on a GPU without it); warn
    where it can but is very slow (`warn_slow_dtype`)."""
    try:
        autocast(device, dtype)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise KpbenchError(f"--dtype {dtype}: not available on {device} ({reason})") from None
    warn_slow_dtype(device, dtype)


def warn_slow_dtype(device: torch.device, dtype: str) -> None:
    """A warning for fp16 on a CPU: autocast accepts it, but CPUs have few float16 kernels, so a model runs
    hundreds of times slower than in fp32 there, with no other sign of why."""
    if dtype == "fp16" and device.type == "cpu":
        warnings.warn(
            "--dtype fp16 on a CPU: float16 autocast is very slow there (hundreds of times slower than fp32); "
            "use fp32, or bf16 on a CPU that supports it",
            KpbenchWarning,
            stacklevel=2,
        )
