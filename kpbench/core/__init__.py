"""Shared core: errors, file I/O, settings, environment capture and keypoint schemas."""
