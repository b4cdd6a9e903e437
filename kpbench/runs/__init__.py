"""Run directories, the unit of work: their layout, manifest and the detections cache every later stage reads."""
