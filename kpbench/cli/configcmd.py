"""Commands registered on the kpbench app (filled in by its issue)."""
