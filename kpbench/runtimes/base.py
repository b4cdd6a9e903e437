"""The runtime seam: how a pose model's network is executed, behind one small protocol.

A *runtime* turns a built PoseModel into a PoseModel that runs on it, in two steps:

1. ``build(model, request, cache)``: export the network (ONNX) and build an engine (TensorRT), timed and cached on
   disk. The cache key is the sha256 of the model's weights digest, the runtime, the opset, the export's input
   shapes, the precision and the versions that made the files (see `BuildCache`). A cached build is reused and
   says so (``cached``), keeping the seconds its first build took.
2. ``load(model, record, device)``: a `RuntimeModel`, the PoseModel that runs on the runtime; its ``predict`` is
   what the speed table times and what ``kpbench run`` feeds, so neither loop changes.

A runtime that cannot run here (onnxruntime not installed, no CUDA, no TensorRT) raises `RuntimeUnavailable` from
``check``; one that cannot honour a request (fp16 on ONNX Runtime's CPU provider, a batch an export cannot take)
says why from ``refuses``. Either gives rows with status "skipped" and the reason, never a silent fallback.

**Adapter hooks** (found by name, like the other optional hooks of kpbench.models.base): a model runs on ONNX
Runtime and TensorRT when it has

- ``export_onnx(path, request) -> dict``: write an ONNX file at ``path`` for an `ExportRequest`; the dict records
  what was exported: ``exporter`` (text), ``input_shapes`` (input name -> dims, a string for a dynamic one),
  ``batch_sizes`` (the batches the file takes, or None for any), and ``preprocessing`` (None when the exported
  model preprocesses images exactly as the eager one does, else how it differs: a note every row carries);
- ``onnx_model(session, facts) -> PoseModel``: the same model with its network run through ``session``, an
  object with ONNX Runtime's ``InferenceSession`` interface (``get_inputs()``, ``get_outputs()``,
  ``run(output_names, feed)``); ``facts`` are the export's dict plus ``onnx_path``;
- optionally ``weights_digest() -> str``: a digest of the weights when ``info()`` has no ``checkpoint_sha256``
  (random or named weights), so that builds can be cached.

No torch, onnx or onnxruntime at import time: the registry and ``kpbench --help`` import this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kpbench.core.errors import KpbenchError

# Runtime name -> "module:class" (imported when asked for: each runtime is one file).
RUNTIMES: dict[str, str] = {
    "eager": "kpbench.runtimes.eager:EagerRuntime",
    "compile": "kpbench.runtimes.compile:CompileRuntime",
    "onnxruntime": "kpbench.runtimes.onnxruntime:OnnxRuntime",
    "tensorrt": "kpbench.runtimes.tensorrt:TensorRTRuntime",
}
# ONNX Runtime's execution providers by the name `--runtime onnxruntime:NAME` gives them.
ORT_PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# The ONNX opset of exports: 17 is what TensorRT 8.6+ and ONNX Runtime 1.14+ take, and both exporters write it.
DEFAULT_OPSET = 17
RUNTIME_CHOICES = "eager, compile, onnxruntime[:cpu|cuda|tensorrt] or tensorrt"


@dataclass(frozen=True)
class RuntimeSpec:
    """A runtime by name, with ONNX Runtime's execution provider (None: the device's own, cuda or cpu)."""

    name: str
    provider: str | None = None

    @property
    def label(self) -> str:
        """"eager", "onnxruntime:cpu", ...: the `runtime` column of a row."""
        return f"{self.name}:{self.provider}" if self.provider else self.name

    @property
    def needs_cuda(self) -> bool:
        """TensorRT, and ONNX Runtime's CUDA and TensorRT providers, run on a CUDA device only."""
        return self.name == "tensorrt" or self.provider in ("cuda", "tensorrt")

    def for_device(self, device_type: str) -> RuntimeSpec:
        """The spec with ONNX Runtime's provider filled in from the device ("onnxruntime" on CUDA is cuda)."""
        if self.name == "onnxruntime" and self.provider is None:
            return RuntimeSpec(self.name, "cuda" if device_type == "cuda" else "cpu")
        return self


def parse_runtime(text: str) -> RuntimeSpec:
    """"onnxruntime:cuda" -> RuntimeSpec("onnxruntime", "cuda"); an unknown name or provider is a KpbenchError."""
    name, _, provider = str(text).strip().lower().partition(":")
    if name not in RUNTIMES:
        raise KpbenchError(f"--runtime {text}: unknown runtime; choose {RUNTIME_CHOICES}")
    if provider and name != "onnxruntime":
        raise KpbenchError(f"--runtime {text}: only onnxruntime takes an execution provider (onnxruntime:cpu, "
                           "onnxruntime:cuda, onnxruntime:tensorrt)")
    if provider and provider not in ORT_PROVIDERS:
        raise KpbenchError(f"--runtime {text}: unknown ONNX Runtime provider {provider!r}; choose "
                           f"{', '.join(ORT_PROVIDERS)}")
    return RuntimeSpec(name, provider or None)


def check_device(specs: Sequence[RuntimeSpec | str], device_type: str) -> None:
    """A KpbenchError when a runtime that runs on CUDA only is asked for on another device: the options contradict
    each other, which is the user's to settle, before any model is built (not rows skipped one by one)."""
    for spec in specs:
        spec = parse_runtime(spec) if isinstance(spec, str) else spec
        if spec.needs_cuda and device_type != "cuda":
            raise KpbenchError(f"--runtime {spec.label}: runs on a CUDA device only, and the device is {device_type} "
                               "(on a CPU: eager, compile or onnxruntime:cpu)")


def parse_runtimes(texts: str | Sequence[str] | None) -> list[RuntimeSpec]:
    """Every runtime of a list (or one name), in order, each once; None or empty is eager alone."""
    items = [texts] if isinstance(texts, str) else list(texts or [])
    specs = [parse_runtime(t) for t in items if str(t).strip()] or [RuntimeSpec("eager")]
    return list(dict.fromkeys(specs))


@dataclass(frozen=True)
class ExportRequest:
    """What one build is for: the model's input size (short side, long-side cap), images per call, precision,
    ONNX opset, and whether the export's image height and width are dynamic (else fixed at a square of `size`)."""

    size: int
    max_size: int
    batch_size: int = 1
    precision: str = "fp32"
    opset: int = DEFAULT_OPSET
    dynamic: bool = True

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class BuildRecord:
    """One build: what was exported and built, where, how long it took, and whether it came from the cache.

    `export_s` and `build_s` are the seconds the export and the engine build took when they were made (also for a
    cached build, whose `cached` is then True); `load_s` is this process's session set-up.
    """

    runtime: str
    cache_key: str | None = None
    key: dict[str, Any] = field(default_factory=dict)
    directory: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    export_s: float = 0.0
    build_s: float = 0.0
    cached: bool = False
    load_s: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def path(self, artifact: str) -> Path:
        """The file of one artifact ("onnx", "engine")."""
        if self.directory is None or artifact not in self.artifacts:
            raise KeyError(artifact)
        return Path(self.directory) / self.artifacts[artifact]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the manifest's record of the build."""
        return asdict(self)


class RuntimeUnavailable(Exception):
    """The runtime cannot run here (not installed, no such device, the model has no export hook): its rows are
    skipped with this reason."""


class Runtime(Protocol):
    """One way of executing a model's network (see the module docstring)."""

    spec: RuntimeSpec

    def check(self, model: Any, device: Any) -> None:
        """Raise RuntimeUnavailable when the runtime or the model's hooks for it are missing here."""
        ...

    def refuses(self, model: Any, request: ExportRequest, device: Any) -> str | None:
        """Why the runtime cannot honour `request` (a precision, a batch), or None."""
        ...

    def build(self, model: Any, request: ExportRequest, cache: BuildCache) -> BuildRecord:
        """Export and build for `request` (timed), or reuse the cached build."""
        ...

    def load(self, model: Any, record: BuildRecord, device: Any) -> RuntimeModel:
        """The model running on this runtime."""
        ...


def get_runtime(spec: RuntimeSpec | str) -> Runtime:
    """The runtime object of a spec (its module imported now: each runtime imports its libraries lazily too)."""
    spec = parse_runtime(spec) if isinstance(spec, str) else spec
    module, _, cls = RUNTIMES[spec.name].partition(":")
    return getattr(importlib.import_module(module), cls)(spec)


# ----------------------------------------------------------------------------------------------------------
# The model on a runtime


class ShapeLog:
    """The input shapes a session met, and the rebuilds they triggered under the runtime's rule:

    - ``"none"``: a new shape costs nothing (ONNX Runtime's CPU and CUDA providers, TensorRT with a profile);
    - ``"range"``: ONNX Runtime's TensorRT provider without explicit profiles: its engine covers, per dimension,
      the range of the shapes seen so far, and a shape outside that range builds the engine again;
    - ``"shape"``: every new shape is a new build (a static-shape compiler).
    The first shape is the build itself, not a rebuild.
    """

    def __init__(self, rule: str = "none") -> None:
        if rule not in ("none", "range", "shape"):
            raise ValueError(f"unknown rebuild rule {rule!r}")
        self.rule = rule
        self.shapes: list[tuple[int, ...]] = []
        self.rebuilds = 0
        self._low: tuple[int, ...] | None = None
        self._high: tuple[int, ...] | None = None

    def seen(self, shape: Sequence[int]) -> None:
        """Record one call's input shape."""
        shape = tuple(int(d) for d in shape)
        new = shape not in self.shapes
        if new:
            self.shapes.append(shape)
        if self._low is None or self._high is None or len(shape) != len(self._low):
            self._low = self._high = shape
            return
        outside = any(d < lo or d > hi for d, lo, hi in zip(shape, self._low, self._high))
        if (self.rule == "range" and outside) or (self.rule == "shape" and new):
            self.rebuilds += 1
        self._low = tuple(min(a, b) for a, b in zip(shape, self._low))
        self._high = tuple(max(a, b) for a, b in zip(shape, self._high))


class RecordingSession:
    """An ONNX Runtime-like session that logs the shape of its first input on every run (for the rebuild count)
    and otherwise passes everything to the session it wraps."""

    def __init__(self, session: Any, log: ShapeLog) -> None:
        self.session = session
        self.log = log

    def run(self, output_names: Any, feed: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """The wrapped session's run, after logging the first input's shape."""
        if feed:
            self.log.seen(getattr(next(iter(feed.values())), "shape", ()))
        return self.session.run(output_names, feed, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


class RuntimeModel:
    """A PoseModel running on a runtime: the model the runtime loaded (`inner`), its build record and its shape log.
    Everything a PoseModel offers is the inner model's, except speed variants (a runtime runs the export as built)."""

    def __init__(self, inner: Any, runtime: str, record: BuildRecord, shapes: ShapeLog | None = None) -> None:
        self.inner = inner
        self.runtime = runtime
        self.record = record
        self.shape_log = shapes or ShapeLog()
        self.schema = inner.schema
        self.input_format = getattr(inner, "input_format", "numpy")

    def predict(self, images: Sequence[Any]) -> list[Any]:
        """The inner model's predictions."""
        return self.inner.predict(images)

    def info(self) -> Any:
        """The inner model's info, with the runtime and its build under extra["runtime"]."""
        from dataclasses import replace

        from kpbench.models.base import model_info

        info = model_info(self.inner)
        extra = dict(info.extra)
        extra["runtime"] = {"runtime": self.runtime, "build": self.record.to_json()}
        return replace(info, extra=extra)

    @property
    def rebuilds(self) -> int:
        """Engine rebuilds triggered by new input shapes since the model was built."""
        return self.shape_log.rebuilds

    def mark_built(self) -> None:
        """The build is done (for a runtime that builds at its first call, that call was it): from now on, a new
        input shape that makes the runtime build again counts as a rebuild."""
        hook = getattr(self.inner, "mark_built", None)
        if hook is not None:
            hook()

    def speed_variant(self, name: str) -> None:
        """No speed variants on a runtime: the export runs as it was built."""
        return None

    def __getattr__(self, name: str) -> Any:
        # Only called for what this class lacks: the inner model's optional hooks (to, set_input_size, ...).
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


# ----------------------------------------------------------------------------------------------------------
# The build cache


def default_cache_dir() -> Path:
    """$KPBENCH_CACHE/runtimes, else $XDG_CACHE_HOME/kpbench/runtimes, else ~/.cache/kpbench/runtimes."""
    if os.environ.get("KPBENCH_CACHE"):
        return Path(os.environ["KPBENCH_CACHE"]) / "runtimes"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kpbench" / "runtimes"


def weights_digest(model: Any) -> str | None:
    """A digest of the model's weights: its `weights_digest()` hook, else its info's checkpoint_sha256; None when
    the model offers neither (its builds are then not cached)."""
    hook = getattr(model, "weights_digest", None)
    if hook is not None:
        return str(hook())
    from kpbench.models.base import model_info

    return model_info(model).checkpoint_sha256


class BuildCache:
    """Builds on disk, one folder per key: ``<root>/<runtime>-<first 16 hex of the key>/`` holding the artifacts
    and ``build.json`` (the key's fields, the timings, the facts). A folder appears whole or not at all: a build
    is made in a temporary folder beside it and renamed into place; when two processes build the same key, the
    first rename wins and the other's build is dropped. `enabled=False` builds into a temporary folder every time
    (`--no-runtime-cache`)."""

    def __init__(self, root: str | Path | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self._scratch: list[Path] = []

    @staticmethod
    def key(fields: dict[str, Any]) -> str:
        """sha256 (hex) of the fields as canonical JSON."""
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()

    def folder(self, runtime: str, key: str) -> Path:
        """Where the build of `key` lives."""
        return self.root / f"{runtime.replace(':', '-')}-{key[:16]}"

    def get_or_build(
        self, runtime: str, fields: dict[str, Any] | None, make: Callable[[Path], BuildRecord]
    ) -> BuildRecord:
        """The cached build of `fields`, or `make(folder)` (which writes the artifacts into `folder` and returns
        their record, timings included), stored under its key. `fields` None: the model gives no weights digest,
        so nothing can be cached; the build goes to a temporary folder, removed by `close`."""
        if fields is None or not self.enabled:
            scratch = Path(tempfile.mkdtemp(prefix="kpbench-build-"))
            self._scratch.append(scratch)
            record = make(scratch)
            record.directory = str(scratch)
            if fields is not None:
                record.key, record.cache_key = fields, self.key(fields)
            return record
        key = self.key(fields)
        final = self.folder(runtime, key)
        found = self._read(final, key)
        if found is not None:
            return found
        if final.exists():  # folders appear whole, so one that is not a complete build was damaged: make it again
            shutil.rmtree(final, ignore_errors=True)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.root))
        except OSError as exc:
            raise KpbenchError(f"--runtime-cache {self.root}: cannot write there ({exc.strerror or exc})") from None
        try:
            record = make(tmp)
            record.key, record.cache_key, record.directory, record.cached = fields, key, str(final), False
            (tmp / "build.json").write_text(json.dumps(record.to_json(), indent=2, default=str))
            try:
                os.replace(tmp, final)
            except OSError:  # another process stored the same build first: use that one
                found = self._read(final, key)
                if found is None:
                    raise
                return found
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return record

    def _read(self, folder: Path, key: str) -> BuildRecord | None:
        """The build stored in `folder`, when it is complete and of `key`."""
        try:
            data = json.loads((folder / "build.json").read_text())
            record = BuildRecord(**data)
        except (OSError, ValueError, TypeError):
            return None
        if record.cache_key != key or not all((folder / name).is_file() for name in record.artifacts.values()):
            return None
        record.directory, record.cached, record.load_s = str(folder), True, None
        return record

    def close(self) -> None:
        """Remove the temporary folders of uncached builds."""
        for scratch in self._scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        self._scratch.clear()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn()'s value and the seconds it took."""
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def versions(*modules: str) -> dict[str, str | None]:
    """The installed version of each module (None when it is not importable): part of every build key."""
    out: dict[str, str | None] = {}
    for name in modules:
        with contextlib.suppress(Exception):
            out[name] = getattr(importlib.import_module(name), "__version__", None)
            continue
        out[name] = None
    return out


def on_runtime(
    model: Any, runtime: str, device: Any, *, size: int, max_size: int, batch_size: int = 1, dtype: str = "fp32",
    opset: int = DEFAULT_OPSET, dynamic: bool = True, cache: BuildCache | None = None,
) -> Any:
    """`model` (a built PoseModel, already on `device`) running on `runtime` for one input size: what `kpbench run
    --runtime` feeds its unchanged loop. Eager returns the model itself; any other runtime is built (or taken from
    the cache) and loaded, and the result's ``info().extra["runtime"]`` records the runtime, its provider, the
    build's seconds and cache key, for the run manifest. A runtime that cannot run here, or cannot honour the
    request, is a KpbenchError naming it."""
    spec = parse_runtime(runtime).for_device(getattr(device, "type", str(device)))
    check_device([spec], getattr(device, "type", str(device)))
    if spec.name == "eager":
        return model
    impl = get_runtime(spec)
    request = ExportRequest(size=size, max_size=max_size, batch_size=batch_size, precision=dtype, opset=opset,
                            dynamic=dynamic)
    try:
        impl.check(model, device)
        reason = impl.refuses(model, request, device)
        if reason:
            raise RuntimeUnavailable(reason)
        record = impl.build(model, request, cache or BuildCache())
        placed = impl.load(model, record, device)
    except RuntimeUnavailable as exc:
        raise KpbenchError(f"--runtime {spec.label}: {exc}") from None
    placed.mark_built()
    return placed
