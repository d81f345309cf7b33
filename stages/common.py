"""Helpers shared by the stages: the error every stage raises, JSON outputs, file digests, the
store of a split and the run-level error policy."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, ContextManager

from skelctl.atomic import write_text
from skelctl.lock import exclusive
from stages import paths

ON_ERROR = ("skip", "fail")


class StageError(RuntimeError):
    """A stage cannot complete; the message says which file and why."""


def write_json_atomic(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def writing(output: Path) -> ContextManager[None]:
    """Hold ``output``'s lock (a run or result folder) while a stage writes it: one writer per
    output. Under torchrun only rank 0 writes files, so only it locks."""
    from skelctl.train import distributed  # torch: imported by the stages that write runs

    return exclusive(output) if distributed()[0] == 0 else contextlib.nullcontext()


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's content, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def store_of(data_dir: Path, split: str, variant: str) -> tuple[Any, str]:
    """The store a split reads (its dataset's, of ``variant``) and the split's protocol."""
    from skelctl.data.store import Store  # h5py, only for the stages that read a store

    dataset, protocol = paths.split_parts(split)
    return Store(paths.views(data_dir, dataset, variant)), protocol


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise StageError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
