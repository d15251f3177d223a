"""One exception type for every problem a user can fix.

The CLI prints ``LesiondetError`` as a single line and exits non-zero; anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

from pathlib import Path


class LesiondetError(Exception):
    """A user-facing error: what went wrong with which file, and how to fix it."""

    def __init__(self, path: str | Path | None, problem: str, fix: str = "") -> None:
        self.path = None if path is None else str(path)
        # One line, always: parser messages (lxml, PIL) can carry newlines.
        self.problem = " ".join(str(problem).split())
        self.fix = " ".join(str(fix).split())
        where = f"{self.path}: " if self.path else ""
        tail = f"; {self.fix}" if self.fix else ""
        super().__init__(f"{where}{self.problem}{tail}")


class VocError(LesiondetError):
    """A Pascal VOC annotation that cannot be read or is not valid."""


class ImageError(LesiondetError):
    """An image that is missing, unreadable or in an unsupported format."""


class CheckpointError(LesiondetError):
    """A weights file that is corrupt or does not fit the model."""
