"""Helpers shared by the stages: atomic text outputs and the run-level error policy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from skelctl.atomic import write_text

ON_ERROR = ("skip", "fail")


class StageError(RuntimeError):
    """A stage cannot complete; the message says which file and why."""


def write_json_atomic(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's content, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise StageError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
