"""Two COCO files parsed straight into arrays, with the verdict of the full checks (placeholder)."""

from __future__ import annotations

from typing import Any


def parse_files(gt: Any, results: Any, iou_type: str, schema: Any) -> Any:
    """None: the full checks run."""
    return None
