"""List files: a day's manifest of photographs, as a text file or a CSV."""
from __future__ import annotations

import csv
from pathlib import Path

from lesiondet.errors import LesiondetError

LIST_SUFFIXES = (".csv", ".txt", ".lst")


def read_image_list(path: str | Path) -> list[Path]:
    """The photographs a list file names: a text file with one path per line (blank lines and ``#`` comments
    skipped), or a CSV whose ``image`` (or ``path``, ``file``) column, else first column, holds them.

    Relative paths are relative to the list file's folder, so a manifest moves with its photographs.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LesiondetError(path, f"cannot read the list ({type(e).__name__})",
                             "give a UTF-8 text or CSV file with one path per row") from None
    if path.suffix.lower() == ".csv":
        try:
            rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        except csv.Error as e:
            raise LesiondetError(path, f"is not valid CSV ({e})", "give one path per row") from None
        header = [c.strip().lower() for c in rows[0]] if rows else []
        col = next((header.index(k) for k in ("image", "path", "file") if k in header), None)
        if col is not None:
            rows = rows[1:]
        names = [r[col or 0].strip() for r in rows if len(r) > (col or 0)]
    else:
        names = [ln.strip() for ln in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise LesiondetError(path, "lists no photographs", "give one image path per row")
    return [p if p.is_absolute() else path.parent / p for p in map(Path, names)]
