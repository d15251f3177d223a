"""lesiondet: retinal lesion detection, DR grading and OCT classification."""
__version__ = "0.1.0"
