"""Engine: run a model over a dataset (run directories, the detections cache) and time it (speed)."""
