"""Writing a file so that its path holds either the old content or the complete new one: write
under a hidden temporary name beside it, then rename into place. A crash or an interrupt leaves
at most the temporary file, which the next write replaces; never a half-written output."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator


class DiskFullError(RuntimeError):
    """A write ran out of disk space; the message names the file and the space left."""


def disk_full(err: BaseException, path: Path) -> DiskFullError | None:
    """``err`` as a :class:`DiskFullError` naming ``path`` when it is a full disk (or quota),
    else None. HDF5 reports the errno only inside its message."""
    text = str(err)
    if not isinstance(err, OSError) or not (err.errno in (errno.ENOSPC, errno.EDQUOT)
                                            or "No space left on device" in text
                                            or "errno = 28" in text):
        return None
    folder = next((p for p in Path(path).parents if p.exists()), Path("."))
    free = shutil.disk_usage(folder).free / 2 ** 20
    return DiskFullError(f"{path}: no space left on the disk while writing it "
                         f"({free:,.1f} MiB free in {folder}); the previous {Path(path).name}, if "
                         f"any, is kept and no partial file was left")


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
    except OSError as err:
        tmp.unlink(missing_ok=True)  # first, so that the message counts the space it held
        full = disk_full(err, path)
        if full is None:
            raise
        raise full from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing_folder(path: Path) -> Iterator[Path]:
    """``with replacing_folder(path) as tmp:`` fill the folder ``tmp``; on leaving the block it
    becomes ``path`` (when ``path`` exists, its files are moved into it, replacing those of the
    same names), and on an error it is removed and ``path`` left as it was."""
    path = Path(path)
    tmp = partial_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
        for file in sorted(tmp.rglob("*")):
            if file.is_file():
                target = path / file.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)
