"""The eager runtime: the model as its adapter built it, in PyTorch (or whatever the adapter runs). The reference
every other runtime's accuracy is compared with; nothing is exported or built."""

from __future__ import annotations

from typing import Any

from kpbench.runtimes.base import BuildCache, BuildRecord, ExportRequest, RuntimeModel, RuntimeSpec


class EagerRuntime:
    """The model itself (a build of 0 s)."""

    def __init__(self, spec: RuntimeSpec | None = None) -> None:
        self.spec = spec or RuntimeSpec("eager")

    def check(self, model: Any, device: Any) -> None:
        """Eager runs everywhere the model runs."""

    def refuses(self, model: Any, request: ExportRequest, device: Any) -> str | None:
        """Eager honours every request the model does."""
        return None

    def build(self, model: Any, request: ExportRequest, cache: BuildCache) -> BuildRecord:
        """Nothing to build."""
        return BuildRecord(runtime=self.spec.label, facts={"preprocessing": None})

    def load(self, model: Any, record: BuildRecord, device: Any) -> RuntimeModel:
        """The model, as it is."""
        record.load_s = 0.0
        return RuntimeModel(model, self.spec.label, record)
