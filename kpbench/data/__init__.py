"""Data: COCO roots and image reading, downloads, synthetic COCO data."""
