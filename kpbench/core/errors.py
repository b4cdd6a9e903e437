"""The one error type for user mistakes, and the warning type for protocol quirks."""

from __future__ import annotations


class KpbenchError(Exception):
    """A user mistake (bad input, missing file, bad option). The CLI prints the message and exits 2."""


class KpbenchWarning(UserWarning):
    """Something that changes the numbers silently in pycocotools, reported instead of hidden."""
