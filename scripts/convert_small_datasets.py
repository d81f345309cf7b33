"""Convert small public skeleton datasets, as their authors publish them, to the generic format.

One subcommand per dataset. Each reads a fetched copy in the dataset's own layout and writes a
generic raw folder (``OUT/<name>.npy`` per sample, ``OUT/samples.csv`` last), coordinates in
metres, labels from 0, with the columns its protocols test; ``skelctl prepare <dataset> --raw OUT
--params FILE`` then imports it with the ``datasets:`` entry that docs/small-datasets.md gives:

    python scripts/convert_small_datasets.py sbu    FETCHED_SBU    OUT
    python scripts/convert_small_datasets.py msrc12 FETCHED_MSRC12 OUT [--on-error fail]

- ``sbu``: SBU Kinect Interaction (clean version), ``<set>/<interaction>/<take>/skeleton_pos.txt``
  (e.g. ``s01s02/01/001/skeleton_pos.txt``): per line a frame number and 2 people x 15 OpenNI
  joints x (x, y, z), normalised as the dataset's README says; both people kept, as (2, T, 15, 3).
- ``msrc12``: MSRC-12 Kinect gestures, ``P<a>_<b>_<gesture>[A]_p<person>.csv`` (per line a
  timestamp and 20 Kinect v1 joints x (x, y, z, w), metres) beside its ``.tagstream`` (the
  annotated action points, one per performance of the gesture); each sequence holds about ten
  performances and is cut into one sample per action point, at the midpoints between them.

A file that cannot be converted is named with its problem and skipped (or stops the run with
``--on-error fail``); the sample count and the files skipped are printed at the end.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from skelctl.data.formats.base import DatasetError, RawSample, SampleError
from skelctl.data.formats.generic import write_samples


@dataclass
class Converted:
    """A dataset read into samples, the extra ``samples.csv`` columns (one value per sample)
    and the files skipped (path, problem)."""

    samples: list[RawSample] = field(default_factory=list)
    columns: dict[str, list] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, sample: RawSample, **columns: object) -> None:
        self.samples.append(sample)
        for column, value in columns.items():
            self.columns.setdefault(column, []).append(value)


def read_table(path: Path, columns: int, delimiter: str | None, what: str) -> np.ndarray:
    """A text file of numbers, ``columns`` per line, as a float64 ``(lines, columns)`` array."""
    try:
        with warnings.catch_warnings():  # an empty file warns; it is reported just below
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=delimiter, ndmin=2)
    except ValueError as err:
        raise SampleError(path, f"not a table of numbers ({err})") from None
    if table.shape[0] == 0:
        raise SampleError(path, "no frames (the file is empty)")
    if table.shape[1] != columns:
        raise SampleError(path, f"{table.shape[1]} values per line, expected {columns}: {what}")
    return table


def each_file(paths: list[Path], read: Callable[[Path], None], converted: Converted,
              on_error: str) -> None:
    """Read every file, listing the ones that cannot be converted (or stopping at the first)."""
    for path in paths:
        try:
            read(path)
        except SampleError as err:
            if on_error == "fail":
                raise
            converted.skipped.append((err.path, err.problem))


# --- SBU Kinect Interaction ------------------------------------------------------------------

# the README's five folds of the 21 sets (two participants each), for 5-fold cross-validation
SBU_FOLDS = (("s01s02", "s03s04", "s05s02", "s06s04"),
             ("s02s03", "s02s07", "s03s05", "s05s03"),
             ("s01s03", "s01s07", "s07s01", "s07s03"),
             ("s02s01", "s02s06", "s03s02", "s03s06"),
             ("s04s02", "s04s03", "s04s06", "s06s02", "s06s03"))
SBU_FOLD_OF_SET = {name: fold for fold, sets in enumerate(SBU_FOLDS, 1) for name in sets}
SBU_INTERACTIONS = ("approaching", "departing", "kicking", "punching", "pushing", "hugging",
                    "shaking hands", "exchanging")
# the README's inverse of its normalisation, in millimetres: x = 1280 - 2560 x', y = 960 -
# 1920 y', z = z' * 10000 / 7.8125
SBU_OFFSET_MM = np.array([1280.0, 960.0, 0.0])
SBU_SCALE_MM = np.array([-2560.0, -1920.0, 10000.0 / 7.8125])
SBU_SET = re.compile(r"s(\d\d)s(\d\d)")


def sbu_bodies(normalised: np.ndarray) -> np.ndarray:
    """``(T, 90)`` normalised values (person A's 15 joints, then person B's) as ``(2, T, 15, 3)``
    float32 metres."""
    points = normalised.reshape(len(normalised), 2, 15, 3)
    metres = (SBU_OFFSET_MM + SBU_SCALE_MM * points) / 1000.0
    return metres.transpose(1, 0, 2, 3).astype(np.float32)


def read_sbu(raw: Path, on_error: str = "skip") -> Converted:
    files = sorted(raw.rglob("skeleton_pos.txt"))
    if not files:
        raise DatasetError(f"{raw}: no skeleton_pos.txt files; SBU Kinect Interaction's layout "
                           f"is <set>/<interaction>/<take>/skeleton_pos.txt, e.g. "
                           f"s01s02/01/001/skeleton_pos.txt")
    converted = Converted()

    def read(path: Path) -> None:
        set_name, interaction, take = path.parts[-4:-1] if len(path.parts) >= 4 else ("",) * 3
        pair = SBU_SET.fullmatch(set_name)
        if not (pair and re.fullmatch(r"0[1-8]", interaction) and re.fullmatch(r"\d{3}", take)):
            raise SampleError(path, "not at <set>/<interaction 01-08>/<take>/skeleton_pos.txt "
                                    "(e.g. s01s02/01/001/skeleton_pos.txt)")
        if set_name not in SBU_FOLD_OF_SET:
            raise SampleError(path, f"set {set_name} is none of SBU's 21 sets "
                                    f"({', '.join(sorted(SBU_FOLD_OF_SET))})")
        table = read_table(path, 91, ",", "a frame number, then 2 people x 15 joints x (x, y, z)")
        sample = RawSample(name=f"{set_name}_{interaction}_{take}", bodies=sbu_bodies(table[:, 1:]),
                           label=int(interaction) - 1, subject=int(pair[1]),
                           replication=int(take), source=str(path))
        converted.add(sample, set=set_name, subject_b=int(pair[2]),
                      fold=SBU_FOLD_OF_SET[set_name])

    each_file(files, read, converted, on_error)
    return converted


# --- MSRC-12 Kinect gestures -----------------------------------------------------------------

MSRC12_GESTURES = ("lift outstretched arms", "duck", "push right", "goggles", "wind it up",
                   "shoot", "bow", "throw", "had enough", "change weapon", "beat both", "kick")
MSRC12_NAME = re.compile(r"P(\d)_(\d)_(\d+)(A?)_p(\d+)")
MSRC12_TAG = re.compile(r"G(\d+)\s")


def msrc12_action_points(path: Path, gesture: int) -> np.ndarray:
    """The action points of a ``.tagstream`` file (``XQPCTick;Tag`` lines) in microseconds, as
    the dataset's load_tagstream.m converts the 49875-per-ms ticks; all must be ``gesture``."""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    if not lines or lines[0] != "XQPCTick;Tag":
        raise SampleError(path, "not a tagstream file: its first line is not 'XQPCTick;Tag'")
    ticks = []
    for number, line in enumerate(lines[1:], 2):
        if not line:
            continue
        tick, _, tag = line.partition(";")
        found = MSRC12_TAG.match(tag + " ")
        if not tick.isdigit() or not found:
            raise SampleError(path, f"line {number}: {line!r} is not '<tick>;G<gesture> <name>'")
        if int(found[1]) != gesture:
            raise SampleError(path, f"line {number}: gesture G{found[1]}, but the file name "
                                    f"says G{gesture}")
        ticks.append(int(tick))
    if not ticks:
        raise SampleError(path, "no action points")
    return (np.array(ticks, dtype=np.float64) * 1000 + 49875 / 2) / 49875


def msrc12_cuts(timestamps: np.ndarray, action_points: np.ndarray) -> np.ndarray:
    """Frame boundaries of one performance per action point: each action point's nearest frame,
    cut halfway between neighbouring ones; the first starts at frame 0, the last ends at T."""
    frames = np.sort(np.abs(timestamps[:, None] - action_points[None, :]).argmin(axis=0))
    return np.concatenate([[0], (frames[:-1] + frames[1:] + 1) // 2, [len(timestamps)]])


def read_msrc12(raw: Path, on_error: str = "skip") -> Converted:
    # paired by name whatever its case: the published copy has p2_1_2A_p12.tagstream beside
    # P2_1_2A_p12.csv (one file on the case-blind Windows it was made on)
    skeletons = {p.stem.lower(): p for p in sorted(raw.rglob("*.csv"))}
    tags = {p.stem.lower(): p for p in sorted(raw.rglob("*.tagstream"))}
    if not skeletons and not tags:
        raise DatasetError(f"{raw}: no .csv or .tagstream files; MSRC-12 names each sequence "
                           f"P<a>_<b>_<gesture>[A]_p<person>.csv beside its .tagstream")
    converted = Converted()

    def lonely(path: Path) -> None:
        raise SampleError(path, f"no skeleton file {path.stem}.csv beside it")

    def read(path: Path) -> None:
        name = MSRC12_NAME.fullmatch(path.stem)
        if not name:
            raise SampleError(path, "not named P<a>_<b>_<gesture>[A]_p<person>.csv "
                                    "(e.g. P1_1_10A_p06.csv)")
        gesture = int(name[3])
        if not 1 <= gesture <= len(MSRC12_GESTURES):
            raise SampleError(path, f"gesture {gesture} is none of G1-G12")
        if path.stem.lower() not in tags:
            raise SampleError(path, f"no {path.stem}.tagstream beside it: the action points, "
                                    f"which cut the sequence into performances, are unknown")
        action_points = msrc12_action_points(tags[path.stem.lower()], gesture)
        table = read_table(path, 81, None, "a timestamp, then 20 joints x (x, y, z, w)")
        joints = table[:, 1:].reshape(len(table), 20, 4)[..., :3].astype(np.float32)
        cuts = msrc12_cuts(table[:, 0], action_points)
        for k, (start, end) in enumerate(pairwise(cuts), 1):
            if end > start:  # empty where three action points fall on one frame
                sample = RawSample(name=f"{path.stem}_{k:02d}", bodies=joints[None, start:end],
                                   label=gesture - 1, subject=int(name[5]), replication=k,
                                   source=f"{path}:frames {start}-{end - 1}")
                converted.add(sample, sequence=path.stem, instruction=f"{name[1]}_{name[2]}")

    each_file([tags[key] for key in sorted(set(tags) - set(skeletons))], lonely, converted,
              on_error)
    each_file(sorted(skeletons.values()), read, converted, on_error)
    return converted


READERS: dict[str, Callable[[Path, str], Converted]] = {"sbu": read_sbu, "msrc12": read_msrc12}


def convert(dataset: str, raw: Path, out: Path, on_error: str = "skip") -> Converted:
    """Read the fetched copy ``raw`` of ``dataset`` and write it to ``out`` in the generic format.
    ``out`` must be new or empty, so that no sample of another run stays beside the new ones."""
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise DatasetError(f"{raw}: the fetched copy is not a folder")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: the output folder is not empty; give a new one")
    converted = READERS[dataset](raw, on_error)
    if not converted.samples:
        raise DatasetError(f"{raw}: no file could be converted"
                           + "".join(f"\n  {path}: {problem}"
                                     for path, problem in converted.skipped[:10]))
    write_samples(out, converted.samples, converted.columns)
    return converted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(READERS))
    parser.add_argument("raw", type=Path, help="the fetched copy, in the dataset's own layout")
    parser.add_argument("out", type=Path, help="the generic raw folder to write (new or empty)")
    parser.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                        help="skip a file that cannot be converted and list it, or stop at it")
    args = parser.parse_args(argv)
    try:
        converted = convert(args.dataset, args.raw, args.out, args.on_error)
    except (DatasetError, SampleError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    labels = {sample.label for sample in converted.samples}
    print(f"{args.dataset}: {len(converted.samples)} samples of {len(labels)} classes written "
          f"to {args.out / 'samples.csv'}; {len(converted.skipped)} files skipped")
    for path, problem in converted.skipped:
        print(f"  skipped {path}: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
