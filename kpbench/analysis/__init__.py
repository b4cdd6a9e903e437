"""Analysis: what score thresholds cost, per-keypoint breakdown, and the analysis of a run directory."""
