"""The one HDF5 store used by every data stage.

A store file holds, for N samples::

    meta/<column>             (N,) name (utf-8), source, label, subject, view, setup, replication,
                              n_frames, n_bodies, and split_<protocol> (int8: 0 train, 1 val, -1 none)
    splits/<protocol>/train   sorted int64 sample indices (likewise /val)
    views/<view>              (N, C, T, V, M) float32, uncompressed, contiguous (one sample
                              per chunk where the writer did not know N up front)
    sequences/data            (sum of lengths, ...) float32: variable-length arrays, concatenated
    sequences/offsets         (N + 1,) int64: sample i is data[offsets[i]:offsets[i + 1]]
    sequences/scores          (sum of lengths, ...) float32, only for data with per-joint detection
                              scores: row r is the scores of data's row r (same offsets)
    scores/score              (N, 1, T, V, M) float32, beside views/joint and resampled as it,
                              only where there are scores (not a view: no encoder reads it yet)

and attributes: ``format_version``, ``skelctl_version``, ``dataset``, ``layout`` (its name),
``skeleton`` (the layout itself, JSON, so a layout read from a user's file travels with the data),
``num_classes``, ``params`` (JSON),
``report`` (JSON) and ``complete``. Files are written under a temporary name and renamed only when
complete, so an interrupted stage never leaves a file that looks finished. Readers open the file
lazily, once per process, which makes them safe to use in DataLoader workers.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from skelctl import __version__
from skelctl.atomic import disk_full, partial_path
from skelctl.interrupts import signals_held
from skelctl.lock import exclusive
from skelctl.skeletons import Layout, get_layout

FORMAT_VERSION = 1
SPLIT_PREFIX = "split_"


class StoreError(ValueError):
    """An HDF5 store that cannot be used: missing, corrupt, unfinished or lacking a dataset."""


class StoreWriter:
    """Appends samples chunk by chunk; renames into place on :meth:`close` (use as a context).

    When the number of samples (and of sequence rows) is known up front, views and sequences are
    written into preallocated contiguous datasets, which is several times faster than growing
    chunked ones and reads as fast at random; otherwise they grow in chunks.
    """

    def __init__(self, path: str | Path, attrs: dict[str, Any], num_samples: int | None = None,
                 num_rows: int | None = None):
        self.path = Path(path)
        self.num_samples = num_samples
        self.num_rows = num_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = contextlib.ExitStack()  # one writer per store, held until close or abort
        self.tmp = partial_path(self.path)
        locked = False
        try:  # an interrupt here, before the with block is entered, cleans up all the same
            with signals_held():  # locked, and known to be, at once: an interrupt comes after
                self.lock.enter_context(exclusive(self.path))
                locked = True
            self.tmp.unlink(missing_ok=True)
            self.file = h5py.File(self.tmp, "w")
            for key, value in {"format_version": FORMAT_VERSION, "skelctl_version": __version__,
                               **attrs}.items():
                self.file.attrs[key] = (json.dumps(value) if isinstance(value, (dict, list))
                                        else value)
        except BaseException:
            if hasattr(self, "file"):
                self.file.close()
            if locked:  # else the partial file is another writer's
                self.tmp.unlink(missing_ok=True)
            self.lock.close()
            raise
        self.count = 0
        self.rows = 0
        self.has_scores: bool | None = None  # decided by the first chunk of sequences
        self.meta: dict[str, list[np.ndarray]] = {}  # small; written once at close

    def _append(self, name: str, values: np.ndarray, chunk_rows: int | None = None,
                total: int | None = None) -> None:
        if total is not None:  # preallocated, contiguous
            if name not in self.file:
                self.file.create_dataset(name, shape=(total, *values.shape[1:]), dtype=values.dtype)
                self.file[name].attrs["filled"] = 0
            ds = self.file[name]
            start = int(ds.attrs["filled"])
            if start + len(values) > total:
                raise ValueError(f"{self.tmp}: more rows for {name} than the {total} announced")
            ds[start:start + len(values)] = values
            ds.attrs["filled"] = start + len(values)
            return
        if name not in self.file:
            chunks = (chunk_rows or max(1, min(1024, 2 ** 20 // max(values[0:1].nbytes, 1))),
                      *values.shape[1:])
            self.file.create_dataset(name, shape=(0, *values.shape[1:]), dtype=values.dtype,
                                     maxshape=(None, *values.shape[1:]), chunks=chunks)
        ds = self.file[name]
        start = ds.shape[0]
        ds.resize(start + len(values), axis=0)
        ds[start:] = values

    def append(self, meta: dict[str, np.ndarray], views: dict[str, np.ndarray] | None = None,
               sequences: tuple[np.ndarray, np.ndarray] | None = None,
               sequence_scores: np.ndarray | None = None,
               score: np.ndarray | None = None) -> None:
        """Add a chunk of samples: metadata columns, fixed-shape views, and variable-length
        arrays as a ragged pair ``(data, offsets)`` (see :func:`to_ragged`); where the data have
        per-joint scores, ``sequence_scores`` (one row per row of ``data``) and the fixed-length
        ``score`` ``(n, 1, T, V, M)``. A store has scores for every sample or for none."""
        n = len(next(iter(meta.values())))
        if n == 0:
            return
        if sequences is not None:
            scored = sequence_scores is not None
            if self.has_scores is None:
                self.has_scores = scored
            elif self.has_scores != scored:
                raise ValueError(f"{self.tmp}: scores for some samples but not for others")
            if scored and len(sequence_scores) != len(sequences[0]):
                raise ValueError(f"{self.tmp}: {len(sequence_scores)} score rows for "
                                 f"{len(sequences[0])} sequence rows")
        for key, column in meta.items():
            self.meta.setdefault(key, []).append(np.asarray(column))
        for key, array in (views or {}).items():
            self._append(f"views/{key}", np.ascontiguousarray(array, dtype=np.float32),
                         chunk_rows=1, total=self.num_samples)
        if score is not None:
            self._append("scores/score", np.ascontiguousarray(score, dtype=np.float32),
                         chunk_rows=1, total=self.num_samples)
        if sequences is not None:
            data, offsets = sequences
            if self.count == 0:
                self._append("sequences/offsets", np.zeros(1, dtype=np.int64))
            self._append("sequences/offsets", self.rows + np.asarray(offsets[1:], dtype=np.int64))
            self._append("sequences/data", np.ascontiguousarray(data, dtype=np.float32),
                         total=self.num_rows)
            if sequence_scores is not None:
                self._append("sequences/scores",
                             np.ascontiguousarray(sequence_scores, dtype=np.float32),
                             total=self.num_rows)
            self.rows += int(offsets[-1])
        self.count += n

    def close(self, report: dict[str, Any] | None = None) -> None:
        """Write split indices and the report, mark complete and move into place."""
        for group in ("views", "sequences", "scores"):
            for ds in self.file.get(group, {}).values():
                if "filled" in ds.attrs:
                    if ds.attrs["filled"] != ds.shape[0]:
                        raise ValueError(f"{self.tmp}: {ds.name} holds {ds.attrs['filled']} of "
                                         f"{ds.shape[0]} announced rows")
                    del ds.attrs["filled"]
        for key, parts in self.meta.items():
            column = np.concatenate(parts)
            if column.dtype.kind in "OU":
                self.file.create_dataset(f"meta/{key}", data=column.astype(object),
                                         dtype=h5py.string_dtype())
            else:
                self.file[f"meta/{key}"] = column
            if key.startswith(SPLIT_PREFIX):
                group = self.file.require_group(f"splits/{key[len(SPLIT_PREFIX):]}")
                group["train"] = np.flatnonzero(column == 0).astype(np.int64)
                group["val"] = np.flatnonzero(column == 1).astype(np.int64)
        self.file.attrs["report"] = json.dumps(report or {})
        self.file.attrs["num_samples"] = self.count
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.tmp, self.path)
        self.lock.close()

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            self.lock.close()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            full = disk_full(exc, self.path)
            if full is not None:
                raise full from None


class Store:
    """Read access to a complete store file; the HDF5 handle opens on first use in each process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self.file  # validate now, in the constructing process

    @property
    def file(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open_store(self.path), os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self._file, self._pid = state["path"], None, None

    def __len__(self) -> int:
        return int(self.file.attrs["num_samples"])

    def attr(self, key: str) -> Any:
        value = self.file.attrs.get(key)
        if key in ("params", "report", "skeleton") and value is not None:
            return json.loads(value)
        return value

    def layout(self) -> Layout:
        """The joint layout of the samples (stores from before ``skeleton`` name a built-in)."""
        skeleton = self.attr("skeleton")
        return Layout.from_dict(skeleton) if skeleton else get_layout(self.attr("layout"))

    def meta(self, columns: list[str] | None = None, rows: slice = slice(None)
             ) -> dict[str, np.ndarray]:
        group = self.file["meta"] if "meta" in self.file else {}
        out = {}
        for key in columns or list(group):
            ds = group[key]
            values = ds[rows]
            out[key] = values.astype(str) if ds.dtype.kind in "OS" else values
        return out

    @property
    def protocols(self) -> list[str]:
        return sorted(self.file["splits"]) if "splits" in self.file else []

    def split(self, name: str) -> np.ndarray:
        """Indices of a split named ``protocol/part`` (e.g. ``xsub/train``), or ``all``."""
        if name == "all":
            return np.arange(len(self))
        if name not in self.file.get("splits", {}):
            raise StoreError(f"{self.path}: no split {name!r}; available: "
                             f"{', '.join(f'{p}/train, {p}/val' for p in self.protocols) or 'all'}")
        return self.file["splits"][name][()]

    @property
    def views(self) -> list[str]:
        return list(self.file["views"]) if "views" in self.file else []

    def view(self, name: str) -> h5py.Dataset:
        if name not in self.views:
            raise StoreError(f"{self.path}: no view {name!r}; available: {', '.join(self.views)}")
        return self.file["views"][name]

    def take(self, name: str, indices: np.ndarray, block: int = 4096) -> np.ndarray:
        """Rows ``indices`` of a view, in the given order, read block by block (memory: the
        result plus one block)."""
        ds = self.view(name)
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *ds.shape[1:]), dtype=ds.dtype)
        for start in range(0, ds.shape[0], block):
            hit = np.flatnonzero((indices >= start) & (indices < start + block))
            if hit.size:
                out[hit] = ds[start:start + block][indices[hit] - start]
        return out

    @property
    def offsets(self) -> np.ndarray:
        if "sequences" not in self.file:
            raise StoreError(f"{self.path}: holds no variable-length sequences")
        if not hasattr(self, "_offsets") or self._offsets_pid != os.getpid():
            self._offsets, self._offsets_pid = self.file["sequences/offsets"][()], os.getpid()
        return self._offsets

    def sequence(self, index: int) -> np.ndarray:
        offsets = self.offsets
        return self.file["sequences/data"][offsets[index]:offsets[index + 1]]

    def sequences(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``start..stop-1`` as a ragged pair ``(data, offsets)``, with one read."""
        offsets = self.offsets[start:stop + 1]
        return self.file["sequences/data"][offsets[0]:offsets[-1]], offsets - offsets[0]

    @property
    def has_scores(self) -> bool:
        """Whether the samples carry per-joint detection scores (pyskl's 2D keypoints)."""
        return "sequences/scores" in self.file or "scores/score" in self.file

    def sequence_scores(self, start: int, stop: int) -> np.ndarray:
        """The scores of samples ``start..stop-1``, row for row with :meth:`sequences`."""
        if "sequences/scores" not in self.file:
            raise StoreError(f"{self.path}: holds no per-joint scores")
        offsets = self.offsets
        return self.file["sequences/scores"][offsets[start]:offsets[stop]]

    def score(self) -> h5py.Dataset:
        """The fixed-length scores ``(N, 1, T, V, M)`` beside the views."""
        if "scores/score" not in self.file:
            raise StoreError(f"{self.path}: holds no fixed-length per-joint scores")
        return self.file["scores/score"]


def to_ragged(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate arrays along their first axis; ``offsets[i]:offsets[i + 1]`` selects array i."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    return np.concatenate(arrays) if arrays else np.zeros((0,)), offsets


def open_store(path: str | Path) -> h5py.File:
    """Open a store read-only, with a clear error if it is missing, corrupt or unfinished."""
    path = Path(path)
    if not path.is_file():
        hint = " (an unfinished write exists: rerun the stage)" if partial_path(path).exists() else ""
        raise StoreError(f"{path}: store file does not exist{hint}")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise StoreError(f"{path}: not a readable HDF5 file ({err})") from None
    if not file.attrs.get("complete", False):
        file.close()
        raise StoreError(f"{path}: unfinished store (no completion mark); rerun the stage that "
                         f"writes it")
    if int(file.attrs.get("format_version", -1)) != FORMAT_VERSION:
        version = file.attrs.get("format_version")
        file.close()
        raise StoreError(f"{path}: store format version {version}, this skelctl reads "
                         f"{FORMAT_VERSION}; rerun the stage")
    return file
