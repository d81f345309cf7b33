"""What every dataset format provides: an inventory of raw items, a reader, and split membership;
and :func:`read_items`, which reads a chunk of items with a format into a store's columns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skelctl.data.store import to_ragged
from skelctl.skeletons import Layout

# Per-sample metadata columns shared by all formats (-1 where a dataset does not define one).
META_INT_FIELDS = ("label", "subject", "view", "setup", "replication")

# Split membership codes stored per sample and protocol.
TRAIN, VAL, UNUSED = 0, 1, -1


class SampleError(ValueError):
    """A problem with one raw file: the message names the file and what is wrong."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetError(ValueError):
    """A problem with the raw folder as a whole (missing, empty, no split files)."""


@dataclass
class RawSample:
    """One parsed sample: every tracked body, before cleaning.

    ``bodies`` is ``(K, T, V, C)`` float32 (C = 3 in metres, or 2 image coordinates); a body absent
    in a frame is all zero there. ``scores`` is ``(K, T, V)`` float32, each joint's detection
    confidence, for formats that record one (pyskl's 2D keypoints), else None.
    """

    name: str
    bodies: np.ndarray
    label: int
    subject: int = -1
    view: int = -1
    setup: int = -1
    replication: int = -1
    source: str = ""
    scores: np.ndarray | None = None

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source,
                **{f: getattr(self, f) for f in META_INT_FIELDS}}


@dataclass
class Inventory:
    """The work a raw folder holds: items to read, files rejected up front, samples excluded,
    and notes for the parse report (what the raw data holds that the store does not keep)."""

    items: list[Any]
    rejected: list[tuple[str, str]] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


class DatasetFormat(ABC):
    """Base class of a dataset format. Subclasses set the class attributes and the three methods.

    Instances are pickled into parallel workers, so they hold only plain data.
    """

    name: str = ""
    layout: Layout
    num_classes: int = 0
    max_bodies: int = 2
    protocols: tuple[str, ...] = ()

    @abstractmethod
    def inventory(self, raw_dir: Path) -> Inventory:
        """List the items of a raw folder, rejecting or excluding files up front."""

    @abstractmethod
    def read(self, item: Any) -> list[RawSample]:
        """Parse one item; raise :class:`SampleError` naming the file on any problem."""

    @abstractmethod
    def splits(self, meta: dict[str, np.ndarray], raw_dir: Path) -> dict[str, np.ndarray]:
        """Per protocol, an int8 array of TRAIN / VAL / UNUSED for every sample in ``meta``."""


class ListedMembersFormat(DatasetFormat):
    """A format whose files list each protocol's members (the reference repositories' arrays):
    the inventory fills ``_membership`` (protocol -> sample name -> TRAIN or VAL), which
    :meth:`splits` reads, listing the folder again in a process that did not."""

    _membership: dict[str, dict[str, int]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the instance travels to every parse task: the membership tables stay behind
        return {**self.__dict__, "_membership": None}

    def splits(self, meta: dict[str, np.ndarray], raw_dir: Path) -> dict[str, np.ndarray]:
        if self._membership is None:
            self.inventory(Path(raw_dir))
        assert self._membership is not None
        return {protocol: np.array([members.get(name, UNUSED) for name in meta["name"]],
                                   dtype=np.int8)
                for protocol, members in self._membership.items()}


def read_items(fmt: DatasetFormat, items: list[Any]
               ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Parse a chunk of raw items (runs in a worker): samples as store columns, plus rejections."""
    samples, rejected = [], []
    for item in items:
        try:
            samples.extend(fmt.read(item))
        except SampleError as err:
            rejected.append((err.path, err.problem))
        except OSError as err:
            rejected.append((str(err.filename or item), f"cannot read: {err.strerror or err}"))
    meta = {"name": np.array([s.name for s in samples], dtype=object),
            "source": np.array([s.source for s in samples], dtype=object),
            **{f: np.array([getattr(s, f) for s in samples], dtype=np.int64)
               for f in META_INT_FIELDS},
            "n_tracks": np.array([s.bodies.shape[0] for s in samples], dtype=np.int64),
            "n_frames": np.array([s.bodies.shape[1] for s in samples], dtype=np.int64)}
    # a sample's tracks are stored as (K * T, V, 3) rows; n_tracks and n_frames reshape them
    sequences = to_ragged([s.bodies.reshape(-1, *s.bodies.shape[2:]) for s in samples])
    # per-joint scores, where the format has them, as (K * T, V) rows beside the tracks' rows
    scored = [s.scores is not None for s in samples]
    if any(scored) and not all(scored):
        raise ValueError(f"{fmt.name}: the reader gave scores for some samples but not others")
    scores = (np.concatenate([s.scores.reshape(-1, s.scores.shape[-1]) for s in samples])
              if samples and all(scored) else None)
    return {"meta": meta, "sequences": sequences, "scores": scores}, rejected


def check_raw_dir(raw_dir: Path) -> Path:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DatasetError(f"{raw_dir}: raw folder does not exist")
    if not any(raw_dir.iterdir()):
        raise DatasetError(f"{raw_dir}: raw folder is empty")
    return raw_dir


def check_finite(path: str | Path, coords: np.ndarray, axes: tuple[str, ...]) -> None:
    """Refuse NaN or infinite values, naming the first one by ``axes`` (one name per axis of
    ``coords``, e.g. ``("frame", "joint", "coordinate")``; indices count from 0)."""
    bad = ~np.isfinite(coords)
    if bad.any():
        first = np.argwhere(bad)[0]
        where = ", ".join(f"{axis} {int(i)}" for axis, i in zip(axes, first))
        raise SampleError(path, f"{int(bad.sum())} NaN or infinite coordinate value(s), the "
                                f"first at {where} (counted from 0)")


def find_duplicates(names: list[str], paths: list[str]) -> tuple[list[int], list[tuple[str, str]]]:
    """Keep the first file of each sample name; reject the others naming the first."""
    first: dict[str, str] = {}
    keep, rejected = [], []
    for i, (name, path) in enumerate(zip(names, paths)):
        if name in first:
            rejected.append((path, f"duplicate sample name {name!r} (also {first[name]})"))
        else:
            first[name] = path
            keep.append(i)
    return keep, rejected


def check_number_line(path: str | Path, line: str, line_number: int, expected: int,
                      what: str) -> None:
    """Raise naming the line if it does not hold exactly ``expected`` numbers."""
    fields = line.split()
    for value in fields:
        try:
            float(value)
        except ValueError:
            raise SampleError(path, f"line {line_number}: non-numeric value {value!r}") from None
    if len(fields) != expected:
        raise SampleError(path, f"line {line_number}: {what} has {len(fields)} values, "
                                f"expected {expected}")

