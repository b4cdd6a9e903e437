"""Runtimes: how a pose model's network is executed (eager PyTorch, torch.compile, ONNX Runtime with its CPU, CUDA or
TensorRT execution provider, TensorRT), one file per runtime behind the protocol in `kpbench.runtimes.base`."""

from kpbench.runtimes.base import (
    BuildCache,
    BuildRecord,
    ExportRequest,
    Runtime,
    RuntimeModel,
    RuntimeSpec,
    RuntimeUnavailable,
    check_device,
    get_runtime,
    on_runtime,
    parse_runtime,
    parse_runtimes,
)

__all__ = [
    "BuildCache", "BuildRecord", "ExportRequest", "Runtime", "RuntimeModel", "RuntimeSpec", "RuntimeUnavailable",
    "check_device", "get_runtime", "on_runtime", "parse_runtime", "parse_runtimes",
]  # fmt: skip
