"""Reading and writing annotations: labelImg VOC, label maps, training sources."""
