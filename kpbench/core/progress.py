"""Progress bars: tqdm's where it is installed, else a silent stand-in with the same few methods.

tqdm is a base dependency, but `benchmarks/gpu_table.sh` runs kpbench from the source tree on machines whose
python has only torch, torchvision, pandas and typer; a missing progress bar must not stop a speed table there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


class SilentBar:
    """What kpbench uses of a tqdm bar, doing nothing (iterating passes the items through)."""

    def __init__(self, iterable: Iterable[Any] | None = None, **_: Any) -> None:
        self._iterable = iterable if iterable is not None else ()
        self.n = 0

    def __iter__(self) -> Iterator[Any]:
        yield from self._iterable

    def update(self, n: int = 1) -> None:
        """Count `n` more steps."""
        self.n += n

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        """Nothing to show."""

    def set_description_str(self, *_: Any, **__: Any) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> SilentBar:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """A tqdm bar with these arguments, or a `SilentBar` when tqdm is not importable."""
    try:
        from tqdm import tqdm
    except ImportError:
        return SilentBar(iterable, **kwargs)
    return tqdm(iterable, **kwargs)
