"""Models: the pose-model protocol, its registry and the adapters (Keypoint R-CNN, ...)."""
