"""TensorRT: an engine built from the model's ONNX export with TensorRT's own builder (fp32, or fp16 with the FP16
builder flag), run by an execution context on the CUDA device, used only where ``tensorrt`` is installed.

The engine has one optimization profile per input, taken from the export's ``profile`` fact (min, opt and max
shapes for the request's size and batch), so a new input shape within it costs nothing and no rebuild happens; a
shape outside it is an error of that call. Engines are specific to the GPU and the TensorRT version, both part of
the cache key. Outputs whose shape depends on the data (detections after NMS) are allocated by TensorRT through
an output allocator, so the session returns them at their real size.

Written against TensorRT 10's Python API (execute_async_v3, IOutputAllocator); not run on the development machine,
which has neither a GPU nor TensorRT: `benchmarks/gpu_table.sh` adds its rows on the first GPU that has it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kpbench.runtimes.base import (
    BuildCache,
    BuildRecord,
    ExportRequest,
    RecordingSession,
    RuntimeModel,
    RuntimeSpec,
    RuntimeUnavailable,
    ShapeLog,
    timed,
    versions,
)
from kpbench.runtimes.onnx_export import build_onnx, check_onnx_hooks, export_key, model_refuses

ENGINE_FILE = "model.engine"
WORKSPACE_BYTES = 4 << 30


class TensorRTRuntime:
    """TensorRT engines from the ONNX export (see the module docstring)."""

    def __init__(self, spec: RuntimeSpec | None = None) -> None:
        self.spec = spec or RuntimeSpec("tensorrt")
        self.device_name: str | None = None

    def check(self, model: Any, device: Any) -> None:
        """tensorrt importable, a CUDA device, onnx for the export, the model's hooks."""
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise RuntimeUnavailable("TensorRT is not installed (pip install tensorrt, on a machine with CUDA)") from None
        if getattr(device, "type", str(device)) != "cuda":
            raise RuntimeUnavailable(f"tensorrt runs on a CUDA device, not {device}")
        try:
            import onnx  # noqa: F401
        except ImportError:
            from kpbench.runtimes.onnxruntime import onnx_missing

            raise RuntimeUnavailable(onnx_missing("onnx")) from None
        import torch

        self.device_name = torch.cuda.get_device_name(device)
        check_onnx_hooks(model, self.spec.label)

    def refuses(self, model: Any, request: ExportRequest, device: Any) -> str | None:
        """fp32 and fp16 engines; bf16 is not offered."""
        if request.precision not in ("fp32", "fp16"):
            return f"tensorrt builds fp32 or fp16 engines, not {request.precision}"
        return model_refuses(model, request)

    def build(self, model: Any, request: ExportRequest, cache: BuildCache) -> BuildRecord:
        """The ONNX export (cached), then the engine (timed, cached by the export's key, the precision, the
        profile, TensorRT's version and the GPU)."""
        onnx_record = build_onnx(model, request, cache)
        profile = onnx_record.facts.get("profile")
        if not profile:
            raise RuntimeUnavailable("the export gives no input shape profile (min, opt, max), which a TensorRT "
                                     "engine needs")
        onnx_key = export_key(model, request)
        fields = None if onnx_key is None else {
            "format": "tensorrt-engine", "onnx": onnx_key, "precision": request.precision, "profile": profile,
            "gpu": self.device_name, "versions": versions("tensorrt"),
        }  # fmt: skip

        def make(folder: Path) -> BuildRecord:
            _, seconds = timed(lambda: build_engine(onnx_record.path("onnx"), folder / ENGINE_FILE, profile,
                                                    request.precision))
            return BuildRecord(runtime=self.spec.label, artifacts={"engine": ENGINE_FILE}, build_s=seconds,
                               export_s=onnx_record.export_s,
                               facts={**onnx_record.facts, "precision": request.precision,
                                      "onnx_path": str(onnx_record.path("onnx"))})

        return cache.get_or_build("tensorrt", fields, make)

    def load(self, model: Any, record: BuildRecord, device: Any) -> RuntimeModel:
        """The engine deserialized into an execution context, behind ONNX Runtime's session interface."""
        session, seconds = timed(lambda: TensorRTSession(record.path("engine"), device))
        record = dataclasses.replace(record, load_s=seconds)
        log = ShapeLog("none")
        facts = {**record.facts, "onnx_path": record.facts.get("onnx_path", "")}
        inner = model.onnx_model(RecordingSession(session, log), facts)
        return RuntimeModel(inner, self.spec.label, record, log)


def build_engine(onnx_path: Path, engine_path: Path, profile: dict[str, Sequence[Sequence[int]]], precision: str) -> None:
    """Parse the ONNX file and build a serialized engine with one optimization profile (min, opt, max per input)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    shapes = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        shapes.set_shape(name, tuple(low), tuple(opt), tuple(high))
    config.add_optimization_profile(shapes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path.name} (see its log above)")
    engine_path.write_bytes(bytes(serialized))


class TensorRTSession:
    """A TensorRT engine behind ONNX Runtime's session interface (``get_inputs``, ``get_outputs``, ``run``): numpy
    arrays in and out, copied to and from the GPU inside ``run``."""

    def __init__(self, engine_path: Path, device: Any) -> None:
        import tensorrt as trt
        import torch

        self._trt, self._torch = trt, torch
        self.device = device
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: TensorRT cannot deserialize this engine (another TensorRT or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self._allocator = _output_allocator(trt, torch, device)
        for name in self.output_names:
            self.context.set_output_allocator(name, self._allocator)

    def get_inputs(self) -> list[Any]:
        """Input descriptions (name, shape) as ONNX Runtime gives them."""
        return [_Arg(n, list(self.engine.get_tensor_shape(n))) for n in self.input_names]

    def get_outputs(self) -> list[Any]:
        """Output descriptions (name, shape) as ONNX Runtime gives them."""
        return [_Arg(n, list(self.engine.get_tensor_shape(n))) for n in self.output_names]

    def get_providers(self) -> list[str]:
        """What runs the session."""
        return ["TensorRT"]

    def run(self, output_names: Sequence[str] | None, feed: dict[str, Any]) -> list[Any]:
        """Copy the inputs to the GPU, run the engine on the current stream, return the outputs as numpy arrays."""
        torch = self._torch
        keep = []
        for name in self.input_names:
            value = torch.as_tensor(feed[name]).to(self.device).contiguous()
            keep.append(value)
            self.context.set_input_shape(name, tuple(value.shape))
            self.context.set_tensor_address(name, value.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT: execute_async_v3 failed")
        stream.synchronize()
        out = []
        for name in output_names or self.output_names:
            dtype = _TORCH_DTYPES[str(self.engine.get_tensor_dtype(name)).rsplit(".", 1)[-1]](torch)
            shape = self._allocator.shapes[name]
            count = 1
            for d in shape:
                count *= d
            buffer = self._allocator.buffers[name]
            out.append(buffer.view(dtype)[:count].reshape(shape).cpu().numpy())
        return out


_TORCH_DTYPES = {
    "FLOAT": lambda t: t.float32, "HALF": lambda t: t.float16, "INT32": lambda t: t.int32,
    "INT64": lambda t: t.int64, "BOOL": lambda t: t.bool, "INT8": lambda t: t.int8,
}  # fmt: skip


@dataclasses.dataclass
class _Arg:
    name: str
    shape: list[Any]


def _output_allocator(trt: Any, torch: Any, device: Any) -> Any:
    """An IOutputAllocator that gives each output a torch buffer on `device`, grown when TensorRT asks for more."""

    class Allocator(trt.IOutputAllocator):
        def __init__(self) -> None:
            super().__init__()
            self.buffers: dict[str, Any] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, name: str, memory: int, size: int, alignment: int) -> int:
            buffer = self.buffers.get(name)
            if buffer is None or buffer.numel() < size:
                buffer = torch.empty(max(int(size), 1), dtype=torch.uint8, device=device)
                self.buffers[name] = buffer
            return int(buffer.data_ptr())

        def reallocate_output_async(self, name: str, memory: int, size: int, alignment: int, stream: int) -> int:
            return self.reallocate_output(name, memory, size, alignment)

        def notify_shape(self, name: str, shape: Any) -> None:
            self.shapes[name] = tuple(int(d) for d in shape)

    return Allocator()
