"""Evaluation: COCO files and their checks, OKS, the COCOeval backends and run-directory scoring."""
