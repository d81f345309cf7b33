"""Helpers shared by the stages: the error every stage raises, JSON outputs, file digests, the
store of a split, the run-level error policy and what a stage wrote (:class:`Result`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, ContextManager

from skelctl.atomic import write_text
from skelctl.keys import closest, unknown_name
from skelctl.lock import exclusive
from skelctl.stages import paths

ON_ERROR = ("skip", "fail")


class StageError(RuntimeError):
    """A stage cannot complete; the message says which file and why."""


class ParamsError(StageError):
    """The user's input is wrong (a params value of the wrong type or out of range, an unknown
    name): nothing was started. The CLI exits with status 2, as for a wrong command-line option."""


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
    path = paths.views(data_dir, dataset, variant)
    if not path.is_file():
        check_dataset(path.parent, f"split {split!r}")
        return read_store(path, store_command(data_dir, dataset, variant)), protocol
    store = Store(path)
    if protocol not in store.protocols:  # a typo is refused by every command, untrained too
        raise ParamsError(unknown_name("split", split, [f"{dataset}-{p}" for p in store.protocols],
                                       str(path)))
    return store, protocol


def check_dataset(folder: Path, where: str) -> None:
    """A dataset's folder (``interim/NAME``, ``processed/NAME``) that does not exist while one of a
    close name does: a typo, refused with the closest offered."""
    if folder.is_dir():
        return
    made = sorted(p.name for p in folder.parent.glob("*") if p.is_dir())
    if closest(folder.name, made):
        raise ParamsError(unknown_name("dataset", folder.name, made, where))


def read_store(path: Path, making: str) -> Any:
    """``Store(path)``; a missing file is one line naming ``making``, the command that writes it
    (an unfinished one keeps the store's own message: rerun the stage)."""
    from skelctl.data.store import Store, StoreError
    from skelctl.atomic import partial_path

    if not Path(path).is_file() and not partial_path(Path(path)).exists():
        raise StoreError(f"{path}: store file does not exist; make it with {making}")
    return Store(path)


def store_command(data_dir: Path, dataset: str, variant: str) -> str:
    """The command that writes the views store of ``variant``: ``skelctl views`` when the
    cleaned sequences are there, else ``skelctl prepare`` from the raw folder."""
    where = "" if Path(data_dir) == Path("data") else f" --data-dir {data_dir}"
    cleaned = paths.cleaned(data_dir, dataset)
    if cleaned.is_file():
        return f"`skelctl views {dataset} --variant {variant}{where}`"
    return (f"`skelctl prepare {source_of(dataset)} --raw RAW_FOLDER --variant {variant}{where}` "
            f"(there are no cleaned sequences at {cleaned} either)")


def source_of(dataset: str) -> str:
    """What ``skelctl parse`` and ``prepare`` take to make ``dataset``: its format's name for a
    built-in dataset, else ``generic --name DATASET`` (a dataset of the user's own)."""
    from skelctl.data.formats import FORMATS

    return dataset if dataset in FORMATS else f"generic --name {dataset}"


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise StageError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")


class Result(dict):
    """A stage's result: its figures, a plain dict as before, and ``written``: where its outputs
    are, a kind (``metrics``, ``figures``, ``encoders``, ...) to paths, for the command to print
    (:func:`outputs_text`)."""

    def __init__(self, data: Any = (), written: dict[str, list[Any]] | None = None) -> None:
        super().__init__(data)
        self.written = {kind: [str(p) for p in paths_] for kind, paths_ in (written or {}).items()
                        if paths_}


# what a written file is, by its suffix
FILE_KINDS = {".json": "metrics", ".npz": "arrays", ".npy": "arrays", ".csv": "tables",
              ".md": "tables", ".png": "figures", ".h5": "stores", ".pt": "encoders"}


def by_kind(files: list[Path]) -> dict[str, list[Path]]:
    """``files`` grouped by what they are (:data:`FILE_KINDS`, in its order), each kind's in
    the order given."""
    kinds: dict[str, list[Path]] = {}
    for path in files:
        kinds.setdefault(FILE_KINDS.get(Path(path).suffix, "other"), []).append(Path(path))
    order = list(dict.fromkeys(FILE_KINDS.values()))
    return dict(sorted(kinds.items(), key=lambda item: (order + [item[0]]).index(item[0])))


def file_states(folder: Path) -> dict[Path, tuple[int, int, int]]:
    """Every file under ``folder`` (hidden ones left out) with its inode, mtime and size."""
    states = {}
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            states[path] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return states


def written_since(folder: Path, before: dict[Path, tuple[int, int, int]]) -> list[Path]:
    """The files under ``folder`` made or rewritten since ``before`` (:func:`file_states`), so a
    stale file of an earlier run is never named as this one's output."""
    return sorted(p for p, state in file_states(folder).items() if before.get(p) != state)


def outputs_text(written: dict[str, list[str]], listed: int = 4) -> str:
    """``outputs:`` and a line per kind naming its paths; more than ``listed`` of a kind as
    their count, the folder they share and their file names."""
    lines = ["outputs:"]
    for kind, files in written.items():
        if len(files) <= listed:
            lines.append(f"  {kind}: {', '.join(files)}")
            continue
        common = Path(os.path.commonpath([str(Path(f).parent) for f in files]))
        names = ", ".join(dict.fromkeys(sorted(Path(f).name for f in files)))
        lines.append(f"  {kind}: {len(files)} files under {common}/ ({names})")
    return "\n".join(lines)
