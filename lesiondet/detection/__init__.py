"""Lesion detection: the Faster R-CNN, its data, slicing, merging, prediction, training and metrics."""
