"""The ONNX export step shared by ONNX Runtime and TensorRT: the adapter's ``export_onnx`` hook, timed, cached by
the model's weights digest, the export's input shapes (and whatever else it bakes in), the opset, the precision
and the versions of what wrote the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kpbench.runtimes.base import (
    BuildCache,
    BuildRecord,
    ExportRequest,
    RuntimeUnavailable,
    timed,
    versions,
    weights_digest,
)

ONNX_FILE = "model.onnx"
# Export hooks a model needs to run on ONNX Runtime or TensorRT (see kpbench.runtimes.base).
ONNX_HOOKS = ("export_onnx", "onnx_model")


def check_onnx_hooks(model: Any, runtime: str) -> None:
    """RuntimeUnavailable when the model cannot be exported to ONNX (no export_onnx / onnx_model hooks)."""
    from kpbench.models.base import model_name

    missing = [hook for hook in ONNX_HOOKS if getattr(model, hook, None) is None]
    if missing:
        raise RuntimeUnavailable(f"{model_name(model)} has no {' / '.join(missing)} hook, so it cannot run on {runtime}")


def model_refuses(model: Any, request: ExportRequest) -> str | None:
    """The model's own reason not to export for `request` (its optional ``onnx_refuses(request)`` hook)."""
    hook = getattr(model, "onnx_refuses", None)
    return hook(request) if hook is not None else None


def export_key(model: Any, request: ExportRequest) -> dict[str, Any] | None:
    """The cache key fields of the ONNX file for `request` (None: the model gives no weights digest)."""
    from kpbench.models.base import model_info

    digest = weights_digest(model)
    if digest is None:
        return None
    hook = getattr(model, "onnx_export_key", None)
    shape_key = hook(request) if hook is not None else request.to_json()
    return {
        "format": "onnx", "weights": digest, "model": model_info(model).name, "export": shape_key,
        "opset": request.opset, "precision": "fp32",
        "versions": versions("torch", "torchvision", "ultralytics", "onnx", "onnxslim"),
    }  # fmt: skip


def build_onnx(model: Any, request: ExportRequest, cache: BuildCache) -> BuildRecord:
    """The ONNX file of `model` for `request`: from the cache, or exported now (timed)."""

    def make(folder: Path) -> BuildRecord:
        facts, seconds = timed(lambda: model.export_onnx(folder / ONNX_FILE, request))
        return BuildRecord(runtime="onnx", artifacts={"onnx": ONNX_FILE}, export_s=seconds, facts=dict(facts or {}))

    return cache.get_or_build("onnx", export_key(model, request), make)
