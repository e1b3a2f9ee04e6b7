"""poseseg: boxes, instance masks and body keypoints for every person, in one pass."""
__version__ = "0.1.0"
