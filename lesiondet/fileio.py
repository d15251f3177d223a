"""Atomic writes: a reader never sees a half-written file, a killed run leaves none. And file digests."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# mkstemp makes files only their owner can read; a written file gets the mode open() would give it
# (0666 less the umask), so a team's shared output folder stays readable. Read once: os.umask sets it too.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temp file lives in the same folder so the final ``os.replace`` is atomic.
    On any exception the temp file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_torch(path: str | Path, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def next_run_dir(base: str | Path, name: str) -> Path:
    """``base/name``, or ``base/name2``, ``base/name3``… – never an existing folder."""
    base = Path(base)
    candidate = base / name
    n = 2
    while candidate.exists():
        candidate = base / f"{name}{n}"
        n += 1
    candidate.mkdir(parents=True)
    return candidate


def latest_run(base: str | Path = "runs", weights: str = "best.pt") -> Path | None:
    """The newest ``weights`` file in any run folder under ``base`` (as ``yolo val`` finds the last run), or None."""
    found = [p for p in Path(base).glob(f"**/{weights}") if p.is_file()] if Path(base).is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def list_dir(folder: str | Path) -> list[Path]:
    """The entries of ``folder``, sorted; a ``LesiondetError`` naming it when it cannot be listed."""
    from lesiondet.errors import LesiondetError

    folder = Path(folder)
    try:
        return sorted(folder.iterdir())
    except PermissionError:
        raise LesiondetError(folder, "folder cannot be read (permission denied)",
                             "give your user read access (chmod u+rx) or copy the files somewhere readable") from None
    except OSError as e:
        raise LesiondetError(folder, f"cannot list the folder ({e.strerror or e})", "check the path") from None


def read_yaml(path: str | Path, what: str, fix: str) -> dict:
    """A YAML mapping from ``path``; a ``LesiondetError`` naming the file when it is missing or broken."""
    import yaml

    from lesiondet.errors import LesiondetError

    p = Path(path)
    if not p.is_file():
        raise LesiondetError(p, f"{what} not found", fix)
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LesiondetError(p, f"not valid YAML ({str(e).splitlines()[0]})", "fix the file") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise LesiondetError(p, f"{what} must be a YAML mapping", fix)
    return d


def sha256(path: str | Path) -> str:
    """The file's SHA-256; remembered for the file as it is (path, size, mtime), since a run asks twice
    for each shipped model (the digest check, then the name of its ONNX copy)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
