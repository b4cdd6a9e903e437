"""The torch.compile runtime: the part of the network the adapter names compiled with torch.compile (Keypoint
R-CNN: the ResNet-50-FPN backbone, which holds most of the FLOPs and has static control flow; the RPN and RoI
heads, whose NMS is data dependent, stay eager), through the adapter's ``speed_variant("compile")`` hook.

Compilation happens on the first call at each input shape. The build step is that first call, timed (on the
first batch of the row, at its size), and every later recompilation (dynamo compiles a graph again for a new
input shape, first with that shape, then with dynamic sizes) is a rebuild, counted from torch._dynamo's own
counter of the graphs it compiled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from kpbench.runtimes.base import (
    BuildCache,
    BuildRecord,
    ExportRequest,
    RuntimeModel,
    RuntimeSpec,
    RuntimeUnavailable,
    ShapeLog,
)


def _graphs_compiled() -> int:
    """How many graphs torch._dynamo compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


class CompiledModel:
    """The model with its `compile` variant entered (kept until `close`); every graph dynamo compiles after
    `mark_built` counts as a rebuild in `log`."""

    def __init__(self, model: Any, state: contextlib.AbstractContextManager[Any]) -> None:
        self.model = model
        self.log = ShapeLog()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(state)
        self._base: int | None = None
        self.schema = model.schema
        self.input_format = getattr(model, "input_format", "numpy")

    def mark_built(self) -> None:
        """The build (the first call) is done: graphs compiled from now on are rebuilds."""
        self._base = _graphs_compiled()

    def predict(self, images: Sequence[Any]) -> list[Any]:
        """The compiled model's predictions (the first call at a shape compiles)."""
        out = self.model.predict(images)
        if self._base is not None:
            self.log.rebuilds = _graphs_compiled() - self._base
        return out

    def close(self) -> None:
        """Leave the compile variant (the adapter restores the eager network and resets dynamo)."""
        self._stack.close()

    def __getattr__(self, name: str) -> Any:
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


class CompileRuntime:
    """torch.compile through the model's speed_variant("compile") hook."""

    builds_at_first_call = True

    def __init__(self, spec: RuntimeSpec | None = None) -> None:
        self.spec = spec or RuntimeSpec("compile")
        self._open: list[CompiledModel] = []

    def check(self, model: Any, device: Any) -> None:
        """The model must offer a compile variant."""
        from kpbench.models.base import model_name

        hook = getattr(model, "speed_variant", None)
        if hook is None:
            raise RuntimeUnavailable(f"{model_name(model)} has no compile variant (no speed_variant hook)")

    def refuses(self, model: Any, request: ExportRequest, device: Any) -> str | None:
        """Compile runs whatever eager runs."""
        return None

    def build(self, model: Any, request: ExportRequest, cache: BuildCache) -> BuildRecord:
        """Nothing on disk: torch.compile builds at the first call, which the caller times as the build."""
        return BuildRecord(runtime=self.spec.label, facts={"preprocessing": None, "compiles": "at the first call"})

    def load(self, model: Any, record: BuildRecord, device: Any) -> RuntimeModel:
        """The model with its compile variant on (one at a time: the previous one is closed first)."""
        from kpbench.models.base import model_name

        self.close()
        state = model.speed_variant("compile")
        if state is None:
            raise RuntimeUnavailable(f"{model_name(model)} has no compile variant")
        compiled = CompiledModel(model, state)
        self._open.append(compiled)
        record.load_s = 0.0
        return RuntimeModel(compiled, self.spec.label, record, compiled.log)

    def close(self) -> None:
        """Leave every compile variant entered by `load`."""
        while self._open:
            self._open.pop().close()
