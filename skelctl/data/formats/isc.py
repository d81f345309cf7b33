"""The ISC / CMD / PCM3 line's arrays (fmthoker/skeleton-contrast, maoyunyao/CMD, JHang2020/PCM3).

    RAW/<benchmark>/train_data_joint.npy  (N, 3, 300, 25, 2) float32: ``data_gen/ntu_gendata.py``
                                          (2s-AGCN's: the two highest-energy bodies, then
                                          ``pre_normalization``), loop-padded to 300 frames
    RAW/<benchmark>/train_num_frame.npy   (N,) int: each sample's frame count
    RAW/<benchmark>/train_label.pkl       pickled (sample names, labels)
    and the same three for val

Only each sample's first ``num_frame`` frames are imported: the rest repeat the sequence from its
start (loop padding) and are no frames of the recording. A count above the array's length (the
PKU-MMD gendata of CMD and PCM3 store the clip's length before truncating it to 300) reads the
whole row, as PCM3's feeder clamps it. Where ``pre_normalization`` moved a recording's leading
untracked frames to the end, or a body was untracked for frames in the middle, the padding starts
before the count, and those repeated frames are imported; the arrays carry no other record of
where the real frames end. The benchmark folders and their protocols are described in
:mod:`skelctl.data.formats.benchmark_folders`.

:func:`write_part` writes one part of a benchmark folder in this layout, for ``skelctl export``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable

import numpy as np

from skelctl.atomic import replacing
from skelctl.data.formats.benchmark_folders import LABEL_FILE, BenchmarkFolderFormat
from skelctl.data.formats.crossclr import write_array, write_labels

FRAMES = 300  # the gendata scripts' max_frame


class ISCFormat(BenchmarkFolderFormat):
    name = "isc"
    what = "ISC-line"
    array_names = ("data_joint",)
    frame_counts = True
    other_format = ("position", "crossclr")


ISC = ISCFormat()


def loop_pad(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
             frames: int = FRAMES) -> np.ndarray:
    """Sequences of a ragged array ``data`` ``(F, C, V, M)`` (sequence i: ``lengths[i]`` frames
    from ``starts[i]``) as ``(n, C, frames, V, M)``: each repeated from its start to fill
    ``frames`` (the gendata scripts' padding), or cut to its first ``frames``."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths < 1).any():
        raise ValueError("cannot loop-pad a sequence with no frames")
    index = starts[:, None] + np.arange(frames)[None] % lengths[:, None]  # (n, frames)
    return np.ascontiguousarray(data[index].transpose(0, 2, 1, 3, 4))


def write_part(stack: contextlib.ExitStack, folder: Path, part: str, names: list[str],
               labels: list[int], lengths: np.ndarray, sample_shape: tuple[int, int, int],
               blocks: Iterable[np.ndarray], frames: int = FRAMES) -> list[Path]:
    """``<folder>/<part>_data_joint.npy`` (N, C, frames, V, M) float32 from blocks of padded
    rows (see :func:`loop_pad`), ``<part>_num_frame.npy`` (the real frames in each row:
    ``min(length, frames)``) and ``<part>_label.pkl``; the files appear when ``stack`` closes."""
    folder = Path(folder)
    channels, joints, bodies = sample_shape
    array = folder / f"{part}_data_joint.npy"
    counts = folder / f"{part}_num_frame.npy"
    labels_file = folder / LABEL_FILE.format(part=part)
    write_array(stack, array, (len(names), channels, frames, joints, bodies), blocks)
    tmp = stack.enter_context(replacing(counts))
    with tmp.open("wb") as f:
        np.lib.format.write_array(f, np.minimum(np.asarray(lengths, dtype=np.int64), frames))
    write_labels(stack, labels_file, names, labels)
    return [array, counts, labels_file]
