"""CTR-GCN's and MAMP's arrays (Uason-Chen/CTR-GCN, maoyunyao/MAMP): one ``.npz`` per protocol.

    RAW/NTU60_CS.npz   x_train (N, T, M V C) float32: each frame's row holds body 1's 25 joints'
                       x, y, z, then body 2's (2 x 25 x 3 = 150 columns), zero after the last
                       frame (T = 300) and where a body is absent;
                       y_train (N, classes) one-hot; x_test and y_test likewise

as ``data/ntu/seq_transformation.py`` (``NTU60_CS.npz``, ``NTU60_CV.npz``; ``NTU120_CSub.npz``,
``NTU120_CSet.npz`` from ``data/ntu120``) writes them, and MAMP's copy of it (``NTU60_XSub.npz``,
``NTU60_XView.npz``, ``NTU120_XSub.npz``, ``NTU120_XSet.npz``) and its ``pku_gendata.py``
(``PKUv1_XSub.npz``...); the NTU arrays come centred by ``seq_translation`` (the ``seqcentre``
normalisation), the PKU-MMD ones as recorded. RAW is one such file or a folder of them. Each file
is a protocol, named by the end of its name (``_CS``, ``_CSub``, ``_XSub``: xsub; ``_CV``,
``_XView``: xview; ``_CSet``, ``_XSet``: xset), or by the whole name for any other file
(``mine.npz``: mine); its train part is the protocol's train split and its test part the val split.

The files hold no sample names, so nothing ties a row of one file to the same recording's row in
another: every row is a sample of its own, named ``<protocol>-<part>-<row>`` (``xsub-test-7``),
used by its own protocol and unused in the others. A sample's frames end at its last non-zero
frame (the rest is padding); a body that is zero throughout is absent.

The ``x`` arrays are read by memory map straight from the ``.npz`` (``np.savez`` stores its
members uncompressed), one sample per item, so memory does not grow with the file; a compressed
member (``np.savez_compressed``) cannot be read so, and is refused.

:func:`write_file` writes one protocol's file in this layout, for ``skelctl export``.
"""

from __future__ import annotations

import contextlib
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from skelctl.atomic import replacing
from skelctl.data.formats.base import (TRAIN, VAL, DatasetError, Inventory, ListedMembersFormat,
                                        RawSample, SampleError, check_finite)
from skelctl.data.formats.benchmark_folders import PROTOCOL_NAME
from skelctl.data.formats.generic import NPY_HEADER_ERRORS
from skelctl.skeletons import NTU25, Layout, get_layout

PARTS = {"train": TRAIN, "test": VAL}
FRAMES = 300  # seq_transformation.py pads to the longest NTU recording, 300; pku_gendata cuts at it
# the protocols the reference scripts' file names end in
PROTOCOL_SUFFIXES = {"CS": "xsub", "CSub": "xsub", "XSub": "xsub", "CV": "xview",
                     "XView": "xview", "CSet": "xset", "XSet": "xset"}
# the names export gives: CTR-GCN's for NTU, MAMP's for PKU-MMD (CTR-GCN has none)
FILE_NAMES = {("ntu60", "xsub"): "NTU60_CS", ("ntu60", "xview"): "NTU60_CV",
              ("ntu120", "xsub"): "NTU120_CSub", ("ntu120", "xset"): "NTU120_CSet",
              ("pku1", "xsub"): "PKUv1_XSub", ("pku1", "xview"): "PKUv1_XView",
              ("pku2", "xsub"): "PKUv2_XSub", ("pku2", "xview"): "PKUv2_XView"}
# a zip member's local header: signature, 22 bytes of fields, then the lengths of its name and
# extra field, which precede the member's data (the ZIP specification, section 4.3.7)
LOCAL_HEADER = struct.Struct("<4s22xHH")


def protocol_of(path: Path) -> str:
    """The protocol a file's name gives (``NTU60_CS.npz``: xsub, ``mine.npz``: mine)."""
    stem = Path(path).stem
    prefix, _, suffix = stem.rpartition("_")
    if prefix and suffix in PROTOCOL_SUFFIXES:
        return PROTOCOL_SUFFIXES[suffix]
    if not PROTOCOL_NAME.fullmatch(stem):
        raise DatasetError(f"{path}: the file name gives no protocol: name it as CTR-GCN or MAMP "
                           f"do (NTU60_CS.npz, NTU120_CSub.npz, NTU60_XView.npz, ...), or "
                           f"<protocol>.npz with letters, digits and '_' only")
    return stem


def file_name(dataset: str, protocol: str) -> str:
    """The file a protocol is exported to: CTR-GCN's (or, for PKU-MMD, MAMP's) name, else
    ``<protocol>.npz``; :func:`protocol_of` reads the protocol back from either."""
    name = FILE_NAMES.get((dataset, protocol), protocol) + ".npz"
    if protocol_of(Path(name)) != protocol:  # e.g. a protocol of one's own named "a_CS"
        raise ValueError(f"protocol {protocol!r}: its file {name} would be read back as the "
                         f"protocol {protocol_of(Path(name))!r}; rename the protocol")
    return name


def array_files(raw: Path) -> list[Path]:
    """RAW itself, or the ``.npz`` files of the folder RAW."""
    raw = Path(raw)
    if raw.is_file():
        return [raw]
    if not raw.is_dir():
        raise DatasetError(f"{raw}: no such file or folder (a CTR-GCN/MAMP .npz such as "
                           f"NTU60_CS.npz, or a folder holding them)")
    found = sorted(raw.glob("*.npz"))
    if not found:
        raise DatasetError(f"{raw}: no .npz file in the folder (CTR-GCN's NTU60_CS.npz, "
                           f"NTU60_CV.npz, ... or MAMP's NTU60_XSub.npz, ...)")
    return found


@dataclass(frozen=True)
class Member:
    """An uncompressed ``x`` array inside a ``.npz``: where its data start, and what they are."""

    path: str
    key: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    fortran_order: bool

    def open(self) -> np.ndarray:
        return np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r", offset=self.offset,
                         shape=self.shape, order="F" if self.fortran_order else "C")


def stored_member(path: Path, archive: zipfile.ZipFile, key: str) -> Member:
    """The ``key`` array of an open ``.npz``, located for a memory map, its size checked."""
    info = archive.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise DatasetError(f"{path}: {key} is compressed (np.savez_compressed), and a compressed "
                           f"array cannot be read one sample at a time; save the file with "
                           f"np.savez, as the CTR-GCN and MAMP scripts do")
    try:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            signature, name_length, extra_length = LOCAL_HEADER.unpack(
                f.read(LOCAL_HEADER.size))
            if signature != b"PK\x03\x04":
                raise ValueError(f"no zip member header where {key}.npy should start")
            start = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
            f.seek(start)
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):  # 3.0 holds only structured (non-numeric) arrays
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                    np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = read(f)
            offset = f.tell()
    except (OSError, struct.error, *NPY_HEADER_ERRORS) as err:
        raise DatasetError(f"{path}: {key} is not a readable array ({err})") from None
    needed = dtype.itemsize * int(np.prod(shape, dtype=object))
    held = info.file_size - (offset - start)
    if needed > held:
        raise DatasetError(f"{path}: {key} is truncated: its header declares shape {shape} of "
                           f"{dtype} ({needed} bytes), the file holds {held} bytes of it")
    return Member(str(path), key, offset, tuple(shape), dtype.str, bool(fortran_order))


def one_hot_labels(path: Path, key: str, y: np.ndarray, samples: int) -> np.ndarray:
    """The class of each row of a one-hot ``y`` array, checked."""
    if y.ndim != 2 or y.dtype.kind not in "iuf" or y.shape[1] == 0:
        raise DatasetError(f"{path}: {key} has shape {y.shape} and dtype {y.dtype}, expected "
                           f"one-hot labels (N, classes) of numbers")
    if len(y) != samples:
        raise DatasetError(f"{path}: x_{key[2:]} holds {samples} samples but {key} "
                           f"{len(y)} labels")
    ones, zeros = (y == 1).sum(axis=1), (y == 0).sum(axis=1)
    bad = np.flatnonzero((ones != 1) | (ones + zeros != y.shape[1]))
    if bad.size:
        row = int(bad[0])
        others = y.shape[1] - int(ones[row]) - int(zeros[row])
        raise DatasetError(f"{path}: {key} is not one-hot (one 1 per row, the rest 0): row {row} "
                           f"holds {int(ones[row])} ones" + (f" and {others} values other than 0 "
                                                              f"and 1" if others else "")
                           + f" ({bad.size} such rows)")
    return y.argmax(axis=1).astype(np.int64)


@dataclass(frozen=True)
class Part:
    """One part (train or test) of one file, as the inventory read it."""

    protocol: str
    part: str
    x: Member
    labels: np.ndarray  # (N,) int64
    classes: int


def read_parts(path: Path) -> list[Part]:
    """The train and test parts of one ``.npz``, their keys, shapes and labels checked."""
    protocol = protocol_of(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [key for part in PARTS for key in (f"x_{part}", f"y_{part}")
                       if f"{key}.npy" not in names]
            if missing:
                raise DatasetError(f"{path}: lacks {', '.join(missing)} (a CTR-GCN/MAMP array "
                                   f"file holds x_train, y_train, x_test and y_test)")
            members = {part: stored_member(path, archive, f"x_{part}") for part in PARTS}
    except (zipfile.BadZipFile, OSError) as err:
        raise DatasetError(f"{path}: not a readable .npz file ({err})") from None
    parts = []
    with np.load(path, allow_pickle=False) as npz:
        for part, x in members.items():
            if len(x.shape) != 3 or 0 in x.shape[1:] or np.dtype(x.dtype).kind not in "iuf":
                raise DatasetError(f"{path}: x_{part} has shape {x.shape} and dtype "
                                   f"{np.dtype(x.dtype)}, expected (N, frames, bodies x joints "
                                   f"x coordinates) of numbers, as (N, 300, 150) in "
                                   f"CTR-GCN's files")
            try:
                y = npz[f"y_{part}"]
            except NPY_HEADER_ERRORS as err:
                raise DatasetError(f"{path}: y_{part} is not a readable array ({err})") from None
            labels = one_hot_labels(path, f"y_{part}", y, x.shape[0])
            parts.append(Part(protocol, part, x, labels, y.shape[1]))
    return parts


class CTRGCNFormat(ListedMembersFormat):
    name = "ctrgcn"

    def __init__(self, layout: str | Layout = "auto"):
        self.layout_option = layout
        self.layout = NTU25
        self.protocols: tuple[str, ...] = ()
        self.num_classes = 0
        self.max_bodies = 2
        self._membership: dict[str, dict[str, int]] | None = None

    def decide_layout(self, parts: list[Part]) -> tuple[Layout, int]:
        """The layout (``ntu25`` unless one is given) and the bodies the columns hold."""
        layout = NTU25 if self.layout_option == "auto" else (
            self.layout_option if isinstance(self.layout_option, Layout)
            else get_layout(self.layout_option))
        columns = parts[0].x.shape[2]
        per_body = layout.num_joints * layout.dims
        for part in parts:
            if part.x.shape[2] != columns:
                raise DatasetError(f"{part.x.path}: x_{part.part} has {part.x.shape[2]} columns "
                                   f"per frame, but {parts[0].x.path} x_{parts[0].part} "
                                   f"{columns}; one dataset has one joint layout")
        if columns % per_body:
            raise DatasetError(f"{parts[0].x.path}: x_{parts[0].part} has {columns} columns per "
                               f"frame, not a whole number of bodies of the layout "
                               f"{layout.name!r} ({layout.num_joints} joints x {layout.dims} "
                               f"coordinates = {per_body}); choose the layout with --layout")
        return layout, columns // per_body

    def inventory(self, raw_dir: Path) -> Inventory:
        files = array_files(raw_dir)
        parts: list[Part] = []
        first: dict[str, Path] = {}
        for path in files:
            read = read_parts(path)
            protocol = read[0].protocol
            if protocol in first:
                raise DatasetError(f"{path}: gives the protocol {protocol!r}, as {first[protocol]} "
                                   f"does; import one file per protocol")
            first[protocol] = path
            parts.extend(read)
        classes = {p.classes for p in parts}
        if len(classes) > 1:
            widths = ", ".join(f"{p.x.path} y_{p.part}: {p.classes}" for p in parts)
            raise DatasetError(f"{raw_dir}: the files' one-hot labels count different classes "
                               f"({widths}); one dataset has one set of classes")
        self.layout, self.max_bodies = self.decide_layout(parts)
        self.num_classes = classes.pop()
        self.protocols = tuple(first)
        membership: dict[str, dict[str, int]] = {p: {} for p in self.protocols}
        items = []
        for part in parts:
            for row, label in enumerate(part.labels.tolist()):
                name = f"{part.protocol}-{part.part}-{row}"
                membership[part.protocol][name] = PARTS[part.part]
                items.append((part.x, row, name, label))
        self._membership = membership
        return Inventory(items)

    def read(self, item: tuple[Member, int, str, int]) -> list[RawSample]:
        x, row, name, label = item
        where = f"{x.path} {x.key} row {row}"
        try:
            # a memory map: only this sample's pages are read, and unmapping it when the
            # function returns releases them
            data = x.open()
        except (OSError, ValueError) as err:
            raise SampleError(x.path, f"cannot be read ({err})") from None
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused just below
            frames = np.array(data[row], dtype=np.float32)  # (T, M * V * C)
        del data
        joints, dims = self.layout.num_joints, self.layout.dims
        bodies = frames.reshape(len(frames), -1, joints, dims).transpose(1, 0, 2, 3)  # (M, T, V, C)
        check_finite(where, bodies, ("body", "frame", "joint", "coordinate"))
        tracked = np.flatnonzero(bodies.any(axis=(0, 2, 3)))
        if not tracked.size:
            raise SampleError(where, "every frame is zero: the row holds no recording")
        bodies = bodies[:, :tracked[-1] + 1]  # the zero padding after the last frame goes
        bodies = bodies[bodies.any(axis=(1, 2, 3))]  # and the absent bodies
        return [RawSample(name=name, bodies=np.ascontiguousarray(bodies), label=label,
                          source=f"{x.path}[{x.key}][{row}]")]


CTRGCN = CTRGCNFormat()


def zero_pad(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
             frames: int = FRAMES) -> np.ndarray:
    """Sequences of a ragged array ``data`` ``(F, C, V, M)`` (sequence i: ``lengths[i]`` frames
    from ``starts[i]``) as CTR-GCN's rows ``(n, frames, M * V * C)``: each frame body by body,
    joint by joint, x y z; zero after a sequence's last frame, and a longer sequence cut to its
    first ``frames`` (as MAMP's ``pku_gendata.py`` cuts)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths < 1).any():
        raise ValueError("cannot pad a sequence with no frames")
    steps = np.arange(frames)[None]
    index = starts[:, None] + np.minimum(steps, lengths[:, None] - 1)  # (n, frames)
    rows = data[index].transpose(0, 1, 4, 3, 2)  # (n, frames, M, V, C)
    rows = rows * (steps < lengths[:, None])[:, :, None, None, None]
    return np.ascontiguousarray(rows.reshape(len(starts), frames, -1), dtype=np.float32)


def write_member(archive: zipfile.ZipFile, key: str, shape: tuple[int, ...],
                 blocks: Iterable[np.ndarray], dtype: np.dtype) -> None:
    """One ``.npy`` member of an ``.npz``, stored uncompressed as ``np.savez`` stores it, from
    consecutive row blocks (memory: one block)."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": shape}
    filled = 0
    with archive.open(f"{key}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        for block in blocks:
            if filled + len(block) > shape[0]:
                raise ValueError(f"{key}: more rows than the {shape[0]} announced")
            f.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
            filled += len(block)
    if filled != shape[0]:
        raise ValueError(f"{key}: {filled} of the {shape[0]} announced rows were written")


def write_file(stack: contextlib.ExitStack, path: Path,
               parts: dict[str, tuple[np.ndarray, Iterable[np.ndarray]]], num_classes: int,
               columns: int, frames: int = FRAMES) -> Path:
    """``path``, a CTR-GCN ``.npz``: for each part (train, test) of ``parts``, given as (labels,
    blocks of rows from :func:`zero_pad`), ``x_<part>`` (N, frames, columns) float32 and
    ``y_<part>`` (N, num_classes) one-hot float64, as ``np.savez`` writes them; the file
    appears when ``stack`` closes."""
    path = Path(path)
    tmp = stack.enter_context(replacing(path))
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for part, (labels, blocks) in parts.items():
            labels = np.asarray(labels, dtype=np.int64)
            write_member(archive, f"x_{part}", (len(labels), frames, columns), blocks,
                         np.dtype("<f4"))
            one_hot = np.zeros((len(labels), num_classes))
            one_hot[np.arange(len(labels)), labels] = 1
            write_member(archive, f"y_{part}", one_hot.shape, [one_hot], np.dtype("<f8"))
    return path
