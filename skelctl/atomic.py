"""Writing a file so that its path holds either the old content or the complete new one: write
under a hidden temporary name beside it, then rename into place. A crash or an interrupt leaves
at most the temporary file, which the next write replaces; never a half-written output."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def partial_path(path: Path, suffix: str = "") -> Path:
    """The temporary name a write to ``path`` uses (``suffix`` for writers that insist on their
    own extension, such as ``np.savez`` and matplotlib)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial{suffix}")


@contextlib.contextmanager
def replacing(path: Path, suffix: str = "") -> Iterator[Path]:
    """``with replacing(path) as tmp:`` write ``tmp``; on leaving the block it becomes ``path``
    (created with its folder), and on an error it is removed and ``path`` left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)
