"""ONNX Runtime: the model's ONNX export run by an InferenceSession with one execution provider, ``cpu``
(CPUExecutionProvider), ``cuda`` (CUDAExecutionProvider) or ``tensorrt`` (TensorrtExecutionProvider).

The requested provider must be the session's first: ONNX Runtime drops a provider it cannot create (the CUDA
libraries missing, say) and runs on the CPU with a warning, which would time the wrong thing; kpbench refuses
instead (the row is skipped with the reason). Nodes the provider has no kernel for run on the CPU provider, as
ONNX Runtime assigns them; the session's providers are recorded.

On the CPU the session uses torch's thread count (intra-op), so that eager and ONNX Runtime rows compete for the
same cores, and its threads do not spin-wait between runs (ONNX Runtime's default), which took the cores from the
eager calls timed after them. The TensorRT provider builds its engine at the first call and again whenever an input shape falls
outside the range it has seen per dimension (no explicit profile is given, as in a plain deployment): the first
call is timed as the build and every later engine build is a counted rebuild (`kpbench.runtimes.base.ShapeLog`,
rule "range"). Its engines are also cached by the provider itself next to the ONNX file (trt_engine_cache_*).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kpbench.runtimes.base import (
    ORT_PROVIDERS,
    BuildCache,
    BuildRecord,
    ExportRequest,
    RecordingSession,
    RuntimeModel,
    RuntimeSpec,
    RuntimeUnavailable,
    ShapeLog,
    timed,
)
from kpbench.runtimes.onnx_export import build_onnx, check_onnx_hooks, model_refuses


def onnx_missing(package: str) -> str:
    """onnx or onnxruntime missing: the onnx extra's install command that works for this install
    (`kpbench.core.install`; 'kpbench[onnx]' is on no index a source checkout has)."""
    from kpbench.core.install import install_hint

    return f"{package} is not installed ({install_hint('onnx')})"


class OnnxRuntime:
    """ONNX Runtime with one execution provider (see the module docstring)."""

    def __init__(self, spec: RuntimeSpec | None = None) -> None:
        self.spec = spec or RuntimeSpec("onnxruntime")
        self.builds_at_first_call = self.spec.provider == "tensorrt"

    def _resolved(self, device: Any) -> RuntimeSpec:
        spec = self.spec.for_device(getattr(device, "type", str(device)))
        if spec != self.spec:
            self.spec = spec
            self.builds_at_first_call = spec.provider == "tensorrt"
        return spec

    def check(self, model: Any, device: Any) -> None:
        """onnx and onnxruntime importable, the provider available and on a device it can use, the model's hooks."""
        spec = self._resolved(device)
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailable(onnx_missing("onnxruntime")) from None
        try:
            import onnx  # noqa: F401  (the exporters write through it)
        except ImportError:
            raise RuntimeUnavailable(onnx_missing("onnx")) from None
        provider = ORT_PROVIDERS[str(spec.provider)]
        if spec.provider != "cpu" and getattr(device, "type", str(device)) != "cuda":
            raise RuntimeUnavailable(f"{spec.label} runs on a CUDA device, not {device}")
        available = ort.get_available_providers()
        if provider not in available:
            wheel = "onnxruntime-gpu" if spec.provider != "cpu" else "onnxruntime"
            raise RuntimeUnavailable(f"onnxruntime {ort.__version__} has no {provider} here (it has "
                                     f"{', '.join(available)}); install {wheel}")
        check_onnx_hooks(model, spec.label)

    def refuses(self, model: Any, request: ExportRequest, device: Any) -> str | None:
        """fp32 on every provider; fp16 only on the TensorRT provider (its fp16 engine from the fp32 export)."""
        spec = self._resolved(device)
        if request.precision != "fp32" and not (spec.provider == "tensorrt" and request.precision == "fp16"):
            return (f"{spec.label} runs the fp32 ONNX export (fp16 only through onnxruntime:tensorrt); "
                    f"{request.precision} would need an export in that precision, which kpbench does not make")
        return model_refuses(model, request)

    def build(self, model: Any, request: ExportRequest, cache: BuildCache) -> BuildRecord:
        """The ONNX export (cached); the provider's own engine, if any, is built at the first call."""
        record = build_onnx(model, request, cache)
        record = dataclasses.replace(record, runtime=self.spec.label, facts={**record.facts,
                                                                            "precision": request.precision})
        return record

    def load(self, model: Any, record: BuildRecord, device: Any) -> RuntimeModel:
        """An InferenceSession on the export with the requested provider first (refused when it is not)."""
        import onnxruntime as ort
        import torch

        spec = self._resolved(device)
        provider = ORT_PROVIDERS[str(spec.provider)]
        options: dict[str, Any] = {}
        if spec.provider in ("cuda", "tensorrt"):
            options["device_id"] = int(getattr(device, "index", 0) or 0)
        if spec.provider == "tensorrt":
            engines = record.path("onnx").parent / f"ort-tensorrt-{record.facts.get('precision', 'fp32')}"
            options.update(trt_fp16_enable=record.facts.get("precision") == "fp16", trt_engine_cache_enable=True,
                           trt_engine_cache_path=str(engines))
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise
        if spec.provider == "cpu":
            session_options.intra_op_num_threads = torch.get_num_threads()
            # Its threads would otherwise spin-wait after each run, taking the cores from whatever runs next (the
            # next eager row, the loop's own work).
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session, seconds = timed(lambda: ort.InferenceSession(
            str(record.path("onnx")), session_options, providers=[(provider, options)] + (["CPUExecutionProvider"] if spec.provider != "cpu" else [])))
        used = session.get_providers()
        if not used or used[0] != provider:
            raise RuntimeUnavailable(f"onnxruntime could not create {provider} (the session has {', '.join(used)})")
        record = dataclasses.replace(record, load_s=seconds, facts={**record.facts, "session_providers": used,
                                                                    "intra_op_threads": session_options.intra_op_num_threads})
        log = ShapeLog("range" if spec.provider == "tensorrt" else "none")
        facts = {**record.facts, "onnx_path": str(record.path("onnx"))}
        inner = model.onnx_model(RecordingSession(session, log), facts)
        return RuntimeModel(inner, spec.label, record, log)
