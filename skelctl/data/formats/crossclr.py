"""The CrosSCLR / AimCLR line's arrays (LinguoLi/CrosSCLR, Levigty/AimCLR and their forks).

    RAW/<benchmark>/train_position.npy   (N, 3, 50, 25, 2) float32: ``feeder/preprocess_ntu.py``'s
                                         output (centred, rotated, resized to 50 frames)
    RAW/<benchmark>/val_position.npy
    RAW/<benchmark>/train_label.pkl      pickled (sample names, labels) from ``tools/ntu_gendata.py``
    RAW/<benchmark>/val_label.pkl

or, when no ``*_position.npy`` is there, the raw 300-frame arrays of ``tools/ntu_gendata.py``
(``train_data.npy``, ``val_data.npy``: camera coordinates, zero-padded after the last frame). The
trailing all-zero frames of either are padding and are not imported. The benchmark folders and
their protocols are described in :mod:`skelctl.data.formats.benchmark_folders`.

:func:`write_part` writes one part of a benchmark folder in this layout, for ``skelctl export``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable

import numpy as np

from skelctl.atomic import replacing
from skelctl.data.formats.benchmark_folders import LABEL_FILE, BenchmarkFolderFormat
from skelctl.data.formats.pickles import write_pickle

ARRAY_NAMES = ("position", "data")


class CrosSCLRFormat(BenchmarkFolderFormat):
    name = "crossclr"
    what = "CrosSCLR-line"
    array_names = ARRAY_NAMES
    other_format = ("data_joint", "isc")

    def label_hint(self) -> str:
        return ("; CrosSCLR's feeder/preprocess_ntu.py writes the positions to NTU60_frame50/"
                "<benchmark>/ and leaves the label file in the gendata folder "
                "(NTU-RGB-D/<benchmark>/): copy it beside the positions")


CROSSCLR = CrosSCLRFormat()


def write_array(stack: contextlib.ExitStack, path: Path, shape: tuple[int, ...],
                blocks: Iterable[np.ndarray], dtype: np.dtype = np.dtype(np.float32)) -> None:
    """Write ``.npy`` of ``shape`` from consecutive row blocks under a partial name that becomes
    ``path`` when ``stack`` closes (removed if it closes on an error)."""
    tmp = stack.enter_context(replacing(path))
    if shape[0] == 0:  # numpy cannot map an empty file
        with tmp.open("wb") as f:
            np.lib.format.write_array(f, np.zeros(shape, dtype=dtype))
        return
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    filled = 0
    for block in blocks:
        if filled + len(block) > shape[0]:
            raise ValueError(f"{path}: more rows than the {shape[0]} announced")
        out[filled:filled + len(block)] = block
        filled += len(block)
    if filled != shape[0]:
        raise ValueError(f"{path}: {filled} of the {shape[0]} announced rows were written")
    out.flush()
    del out


def write_labels(stack: contextlib.ExitStack, path: Path, names: list[str],
                 labels: list[int]) -> None:
    """The label file of the CrosSCLR and ISC lines: the pickled pair (names, labels)."""
    tmp = stack.enter_context(replacing(path))
    with tmp.open("wb") as f:
        write_pickle((list(names), [int(label) for label in labels]), f)


def write_part(stack: contextlib.ExitStack, folder: Path, part: str, names: list[str],
               labels: list[int], sample_shape: tuple[int, int, int, int],
               blocks: Iterable[np.ndarray]) -> list[Path]:
    """``<folder>/<part>_position.npy`` (N, C, T, V, M) float32 from row blocks of fixed-length
    joint arrays, and ``<part>_label.pkl``; the files appear when ``stack`` closes."""
    array = Path(folder) / f"{part}_position.npy"
    labels_file = Path(folder) / LABEL_FILE.format(part=part)
    write_array(stack, array, (len(names), *sample_shape), blocks)
    write_labels(stack, labels_file, names, labels)
    return [array, labels_file]
