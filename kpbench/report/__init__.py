"""Reports for people: speed and run tables, figures, and drawn detections."""
