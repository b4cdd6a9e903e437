"""Pose models: the interface every model implements (base), the --model registry, and the Keypoint R-CNN adapter.

`from kpbench.models import PoseModel, Predictions, ModelInfo` gives the interface without importing torch.
"""

from kpbench.models.base import ModelInfo, PoseModel, Predictions

__all__ = ["ModelInfo", "PoseModel", "Predictions"]
