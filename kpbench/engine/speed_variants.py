"""The variants of the speed table: one way of running a model (dtype, batch size, an optional speed-up, the
runtime), the grid the table times, and putting an eager model in a variant's state and back.

The grid ``dtype x batch_size`` is the baseline, repeated once per runtime (`--runtime`); each of
``--channels-last``, ``--cudnn-benchmark`` and ``--fast-postprocess`` adds a copy of the eager baseline with only
that option on, so each option is compared against the same baseline. (``--compile`` is the runtime ``compile``.)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# The options that each add a copy of the eager baseline grid, in label order.
OPTION_VARIANTS = ("channels_last", "cudnn_benchmark", "fast_postprocess")
# The ones a model provides through its speed_variant hook.
MODEL_VARIANTS = ("channels_last", "fast_postprocess")
EAGER = "eager"


@dataclass(frozen=True)
class Variant:
    """One way of running the model: dtype, batch size, optional speed-ups and the runtime."""

    dtype: str = "fp32"
    batch_size: int = 1
    channels_last: bool = False
    cudnn_benchmark: bool = False
    fast_postprocess: bool = False
    runtime: str = EAGER  # a RuntimeSpec's label: eager, compile, onnxruntime:cpu, tensorrt, ...
    offline: bool = False  # the offline-throughput row: batch_size is the largest that fits

    @property
    def compile(self) -> bool:
        """The runtime is torch.compile (the CSV's `compile` column)."""
        return self.runtime == "compile"

    @property
    def label(self) -> str:
        """A readable, stable label: "fp32-bs1", "fp16-bs4-channels_last", "fp32-bs1-onnxruntime:cpu",
        "fp32-bs16-offline", ..."""
        parts = [self.dtype, f"bs{self.batch_size}"]
        parts += [name for name in OPTION_VARIANTS if getattr(self, name)]
        parts += [self.runtime] if self.runtime != EAGER else []
        parts += ["offline"] if self.offline else []
        return "-".join(parts)

    @property
    def scenario(self) -> str:
        """single-stream (batch 1), batch (a larger batch) or offline (the largest batch that fits)."""
        return "offline" if self.offline else "single-stream" if self.batch_size == 1 else "batch"


def build_variants(
    dtypes: Sequence[str],
    batch_sizes: Sequence[int],
    *,
    runtimes: Sequence[str] = (EAGER,),
    channels_last: bool = False,
    cudnn_benchmark: bool = False,
    fast_postprocess: bool = False,
) -> list[Variant]:
    """The baseline grid dtypes x batch_sizes on eager (when it is among the runtimes), one copy of that eager grid per
    enabled option (one option at a time), then the grid on each other runtime, in the order given."""
    grid = [Variant(dtype=d, batch_size=b) for d in dict.fromkeys(dtypes) for b in dict.fromkeys(batch_sizes)]
    runtimes = list(dict.fromkeys(runtimes))
    variants = list(grid) if EAGER in runtimes else []
    enabled = {"channels_last": channels_last, "cudnn_benchmark": cudnn_benchmark,
               "fast_postprocess": fast_postprocess}  # fmt: skip
    for name in OPTION_VARIANTS:
        if enabled[name]:
            variants += [dataclasses.replace(v, **{name: True}) for v in grid]
    variants += [dataclasses.replace(v, runtime=r) for r in runtimes if r != EAGER for v in grid]
    return variants


class VariantSkipped(Exception):
    """A variant that does not apply to this device, model or runtime."""


@contextlib.contextmanager
def apply_variant(model: Any, variant: Variant, device: torch.device) -> Iterator[None]:
    """Put an eager model in the variant's state, then restore it: cudnn.benchmark here (a global torch setting),
    channels-last and fast post-processing through the model's `speed_variant` hook. A variant the device or the
    model does not offer raises VariantSkipped. (The runtime is not applied here: kpbench.runtimes loads it.)"""
    import torch

    from kpbench.models.base import model_name

    old_benchmark = torch.backends.cudnn.benchmark
    try:
        with contextlib.ExitStack() as stack:
            if variant.cudnn_benchmark:
                if device.type != "cuda":
                    raise VariantSkipped("cudnn.benchmark applies to CUDA devices only")
                torch.backends.cudnn.benchmark = True
            for name in MODEL_VARIANTS:
                if getattr(variant, name):
                    hook = getattr(model, "speed_variant", None)
                    state = hook(name) if hook is not None else None
                    if state is None:
                        raise VariantSkipped(f"{model_name(model)} has no {name} variant")
                    stack.enter_context(state)
            yield
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
