"""lesiondet: retinal lesion detection, DR grading and OCT classification."""
__version__ = "0.2.0"
