"""Progress bars for people: drawn on a terminal, silent in logs and pipes.

``LESIONDET_PROGRESS=1`` forces bars on (e.g. a log watched with ``tail -f``),
``LESIONDET_PROGRESS=0`` turns them off.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None, enabled: bool = True,
             **kw) -> tqdm:
    """A ``tqdm`` bar on stderr that disappears when done; off when ``enabled`` is False or nobody watches."""
    env = os.environ.get("LESIONDET_PROGRESS")
    show = enabled and (env == "1" or (env != "0" and sys.stderr.isatty()))
    return tqdm(iterable, desc=desc, total=total, disable=not show, leave=False, dynamic_ncols=True, **kw)
