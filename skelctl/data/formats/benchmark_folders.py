"""What the CrosSCLR line's and the ISC line's preprocessed arrays share: one folder per benchmark.

    RAW/<benchmark>/<part>_<array>.npy   (N, C, T, V, M) float, C = 3 (or 2), part train or val
    RAW/<benchmark>/<part>_label.pkl     the pickled pair (sample names, labels), labels from 0

RAW may also be one benchmark folder itself (its name is then the protocol's). The benchmark
folders (``xsub/`` and ``xview/`` for NTU-60, ``xsub/`` and ``xset/`` for NTU-120) hold the same
recordings partitioned differently: each recording, identified by its sample name, is imported
once, from the first folder (in name order) that lists it, and each folder becomes a protocol whose
train and val membership is exactly what its files say (a recording a folder does not list is
unused in that protocol). A sample name's ``.skeleton`` ending (the gendata scripts keep the file
name) is dropped, so that names match the ones the ``ntu60``/``ntu120`` formats give; NTU names
fill in the setup, camera (view), performer (subject) and replication.

The arrays are read by memory map, one sample per item: a worker copies only that sample's rows
(and, where the frame count is known, only its real frames), so memory does not grow with the
file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skelctl.data.formats.base import (TRAIN, VAL, DatasetError, Inventory, ListedMembersFormat,
                                        RawSample, SampleError, check_finite, check_raw_dir)
from skelctl.data.formats.generic import npy_header
from skelctl.data.formats.ntu import parse_name
from skelctl.data.formats.pickles import load_pickle
from skelctl.skeletons import Layout, get_layout, layout_by_shape

PARTS = {"train": TRAIN, "val": VAL}
# a protocol becomes part of split names (<dataset>-<protocol>), which split at the last '-'
PROTOCOL_NAME = re.compile(r"[A-Za-z0-9_]+")
SAMPLE_SUFFIX = ".skeleton"
LABEL_FILE = "{part}_label.pkl"


@dataclass(frozen=True)
class Part:
    """One ``<part>_<array>.npy`` with its labels (and frame counts) as the inventory read them."""

    protocol: str
    part: str
    array: Path
    labels_file: Path
    shape: tuple[int, ...]  # (N, C, T, V, M)
    names: list[str]
    labels: np.ndarray  # (N,) int64
    frames: np.ndarray | None  # (N,) int64 real frame counts, where the layout has them


def sample_name(name: str) -> str:
    """The toolkit's name of a recording: the gendata scripts keep the ``.skeleton`` ending."""
    return name[:-len(SAMPLE_SUFFIX)] if name.endswith(SAMPLE_SUFFIX) else name


def describe(obj: Any) -> str:
    """What a pickle held, in a few words, for error messages."""
    if isinstance(obj, dict) and not obj:
        return "an empty dict"
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        return f"a dict with keys {keys}" + (", ..." if len(obj) > 6 else "")
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    if isinstance(obj, np.ndarray):
        return f"a numpy array of shape {obj.shape}"
    return f"a {type(obj).__name__}"


def read_label_file(path: Path) -> tuple[list[str], np.ndarray]:
    """``(sample names, labels)`` from a CrosSCLR/ISC-line label pickle, checked."""
    obj = load_pickle(path, "label file")
    if isinstance(obj, dict) and "annotations" in obj:
        raise DatasetError(f"{path}: a pyskl annotation file, not a label file of the "
                           f"CrosSCLR/ISC layout; import it with the format pyskl")
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DatasetError(f"{path}: not a label file of the CrosSCLR/ISC layout: expected a "
                           f"pickled pair (sample names, labels), found {describe(obj)}")
    names, labels = obj
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"{path}: the first item of the pair must be the list of sample "
                           f"names (strings), found {describe(names)}")
    try:
        values = np.asarray(labels)
    except (ValueError, TypeError):
        values = np.asarray([None])
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise DatasetError(f"{path}: the second item of the pair must be the list of integer "
                           f"labels, found {describe(labels)}"
                           + (f" of {values.dtype}" if values.dtype.kind != "O" else ""))
    if len(names) != len(values):
        raise DatasetError(f"{path}: {len(names)} sample names but {len(values)} labels")
    if values.size and values.min() < 0:
        raise DatasetError(f"{path}: label {int(values.min())} is negative; labels count "
                           f"from 0")
    return list(names), values.astype(np.int64)


def array_header(path: Path, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``(N, C, T, V, M)`` array file, checked without reading it."""
    try:
        shape, dtype = npy_header(path)
    except SampleError as err:
        raise DatasetError(str(err)) from None
    if len(shape) != 5 or shape[1] not in (2, 3) or 0 in shape[1:]:
        raise DatasetError(f"{path}: array of shape {shape}, expected (N, C, T, V, M) with "
                           f"C = 3 (or 2) coordinates, as the {what} writes it")
    if dtype.kind not in "iuf":
        raise DatasetError(f"{path}: array dtype {dtype} is not numeric (int, uint or float)")
    return shape, dtype


class BenchmarkFolderFormat(ListedMembersFormat):
    """Arrays in benchmark folders; subclasses name the array files and frame handling."""

    what: str = ""  # the line, in messages: "CrosSCLR-line", "ISC-line"
    array_names: tuple[str, ...] = ()  # <part>_<name>.npy, the first found in RAW is read
    frame_counts: bool = False  # <part>_num_frame.npy gives each sample's real frames
    other_format: tuple[str, str] = ("", "")  # (array name, format) of the other line, for hints

    def __init__(self, layout: str | Layout = "auto"):
        self.layout_option = layout
        self.protocols: tuple[str, ...] = ()
        self.num_classes = 0
        self.max_bodies = 2
        self._membership: dict[str, dict[str, int]] | None = None

    # -- the raw folder ---------------------------------------------------------------------

    def benchmark_folders(self, raw_dir: Path) -> tuple[str, list[tuple[str, Path]]]:
        """The array name used and ``(protocol, folder)`` for each benchmark folder."""
        candidates = [raw_dir, *sorted(d for d in raw_dir.iterdir() if d.is_dir())]

        def holding(array: str) -> list[Path]:
            return [d for d in candidates
                    if any((d / f"{part}_{array}.npy").is_file() for part in PARTS)]

        array = next((a for a in self.array_names if holding(a)), None)
        if array is None:
            expected = " or ".join(f"<benchmark>/train_{a}.npy" for a in self.array_names)
            other, fmt = self.other_format
            hint = (f"; {raw_dir} holds {other} files, the {fmt} layout: import it with the "
                    f"format {fmt}") if other and any(
                        d.glob(f"*_{other}.npy") for d in candidates) else ""
            raise DatasetError(f"{raw_dir}: no {self.what} arrays: expected {expected} (with "
                               f"val_ and the label files beside them), e.g. "
                               f"xsub/train_{self.array_names[0]}.npy{hint}")
        folders = holding(array)
        if raw_dir in folders:
            folders = [raw_dir]  # RAW is one benchmark folder
        for other in self.array_names:
            stray = [d for d in holding(other) if d not in folders and d != raw_dir]
            if other != array and stray:
                raise DatasetError(f"{stray[0]}: holds {other} arrays, but the other benchmark "
                                   f"folders hold {array} arrays; import one kind at a time")
        named = []
        for folder in folders:
            if not PROTOCOL_NAME.fullmatch(folder.name):
                raise DatasetError(f"{folder}: the benchmark folder's name {folder.name!r} "
                                   f"names its protocol (<dataset>-<protocol> in split names): "
                                   f"use letters, digits and '_' only (e.g. xsub), renaming the "
                                   f"folder or putting it in one of that name")
            named.append((folder.name, folder))
        return array, named

    def read_part(self, protocol: str, folder: Path, part: str, array: str) -> Part | None:
        """The checked files of one part of a benchmark folder, or None if it has none."""
        path = folder / f"{part}_{array}.npy"
        if not path.is_file():
            return None
        labels_file = folder / LABEL_FILE.format(part=part)
        if not labels_file.is_file():
            raise DatasetError(f"{labels_file}: missing: {path.name} needs its label file (the "
                               f"pickled sample names and labels) beside it{self.label_hint()}")
        shape, _ = array_header(path, f"{self.what} code")
        names, labels = read_label_file(labels_file)
        if shape[0] != len(names):
            raise DatasetError(f"{path}: holds {shape[0]} samples, but {labels_file.name} lists "
                               f"{len(names)}; the label file lists the array's samples in order")
        frames = self.read_frame_counts(folder, part, shape) if self.frame_counts else None
        return Part(protocol, part, path, labels_file, shape, names, labels, frames)

    def label_hint(self) -> str:
        return ""

    def read_frame_counts(self, folder: Path, part: str, shape: tuple[int, ...]) -> np.ndarray:
        path = folder / f"{part}_num_frame.npy"
        if not path.is_file():
            raise DatasetError(f"{path}: missing: the {self.what} arrays are padded to "
                               f"{shape[2]} frames, and each sample's real frame count comes "
                               f"from this file")
        try:
            counts = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DatasetError(f"{path}: not a readable .npy array ({err})") from None
        if counts.ndim != 1 or counts.dtype.kind not in "iu":
            raise DatasetError(f"{path}: expected one integer frame count per sample, found an "
                               f"array of shape {counts.shape} and dtype {counts.dtype}")
        if len(counts) != shape[0]:
            raise DatasetError(f"{path}: {len(counts)} frame counts for the {shape[0]} samples "
                               f"of {part}_{self.array_names[0]}.npy")
        return counts.astype(np.int64)

    def scan(self, raw_dir: Path) -> list[Part]:
        """Every part of every benchmark folder, its files checked against each other."""
        array, folders = self.benchmark_folders(raw_dir)
        parts = [p for protocol, folder in folders for part in PARTS
                 if (p := self.read_part(protocol, folder, part, array)) is not None]
        first = parts[0]
        for part in parts[1:]:
            if part.shape[1] != first.shape[1] or part.shape[3] != first.shape[3]:
                raise DatasetError(f"{part.array}: {part.shape[3]} joints x {part.shape[1]} "
                                   f"coordinates, but {first.array}: {first.shape[3]} x "
                                   f"{first.shape[1]}; one dataset has one joint layout")
        return parts

    def decide_layout(self, parts: list[Part]) -> Layout:
        dims, joints = parts[0].shape[1], parts[0].shape[3]
        if self.layout_option == "auto":
            return layout_by_shape(joints, dims)
        layout = (self.layout_option if isinstance(self.layout_option, Layout)
                  else get_layout(self.layout_option))
        if (layout.num_joints, layout.dims) != (joints, dims):
            raise DatasetError(f"{parts[0].array}: {joints} joints x {dims} coordinates, but "
                               f"the layout {layout.name!r} has {layout.num_joints} x "
                               f"{layout.dims}")
        return layout

    # -- the format's three methods ---------------------------------------------------------

    def inventory(self, raw_dir: Path) -> Inventory:
        raw_dir = check_raw_dir(raw_dir)
        parts = self.scan(raw_dir)
        self.layout = self.decide_layout(parts)
        self.max_bodies = max(p.shape[4] for p in parts)
        self.protocols = tuple(dict.fromkeys(p.protocol for p in parts))
        membership: dict[str, dict[str, int]] = {p: {} for p in self.protocols}
        first: dict[str, tuple[int, str]] = {}  # name -> (label, where it was first listed)
        items, rejected = [], []
        for part in parts:
            members = membership[part.protocol]
            frames = part.frames if part.frames is not None else np.full(len(part.names), -1)
            for row, (raw_name, label, count) in enumerate(zip(part.names, part.labels.tolist(),
                                                                frames.tolist())):
                name = sample_name(raw_name)
                where = f"{part.labels_file} row {row}"
                if not name or any(ord(c) < 32 or ord(c) == 127 for c in name):
                    rejected.append((where, f"sample name {raw_name!r} is empty or holds "
                                            f"control characters"))
                    continue
                if name in members:
                    rejected.append((where, f"duplicate sample name {name!r} in benchmark "
                                            f"{part.protocol!r}; the first listing counts"))
                    continue
                if name in first and first[name][0] != label:
                    raise DatasetError(f"{where}: sample {name!r} has label {label}, but "
                                       f"label {first[name][0]} at {first[name][1]}; the "
                                       f"benchmark folders disagree")
                members[name] = PARTS[part.part]
                if name in first:
                    continue  # imported from the first folder that lists it
                first[name] = (label, where)
                if part.frames is not None and count < 1:
                    rejected.append((f"{part.array} row {row} ({name})",
                                     f"frame count {count} in {part.part}_num_frame.npy; a "
                                     f"sample has at least one frame"))
                    continue
                items.append((str(part.array), row, name, label, count))
        self.num_classes = max((label for label, _ in first.values()), default=-1) + 1
        self._membership = membership
        return Inventory(items, rejected, {})

    def read(self, item: tuple[str, int, str, int, int]) -> list[RawSample]:
        path, row, name, label, frames = item
        where = f"{path} row {row} ({name})"
        try:
            # a memory map: only this sample's pages are read, and unmapping it when the
            # function returns releases them
            data = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:
            raise SampleError(path, f"cannot be read ({err})") from None
        if data.ndim != 5 or row >= data.shape[0]:
            raise SampleError(where, f"the array (now of shape {data.shape}) changed since it "
                                     f"was listed")
        stop = data.shape[2] if frames < 0 else min(frames, data.shape[2])
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused just below
            sample = np.array(data[row, :, :stop], dtype=np.float32)  # (C, T, V, M)
        del data
        bodies = np.ascontiguousarray(sample.transpose(3, 1, 2, 0))  # (M, T, V, C)
        check_finite(where, bodies, ("body", "frame", "joint", "coordinate"))
        if frames < 0:
            # zero-padded to the array's length: the padding is no frame of the recording
            tracked = np.flatnonzero(bodies.any(axis=(0, 2, 3)))
            bodies = bodies[:, :tracked[-1] + 1 if len(tracked) else 1]
        present = bodies.any(axis=(1, 2, 3))
        bodies = bodies[present] if present.any() else bodies[:1]  # the absent bodies go
        fields = parse_name(name) or {}
        return [RawSample(name=name, bodies=bodies, label=label,
                          subject=fields.get("subject", -1), view=fields.get("view", -1),
                          setup=fields.get("setup", -1),
                          replication=fields.get("replication", -1), source=f"{path}[{row}]")]
