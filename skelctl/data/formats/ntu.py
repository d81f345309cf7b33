"""NTU RGB+D 60 / 120: the official Kinect v2 ``.skeleton`` text format.

File layout (LF or CRLF): the frame count; per frame the body count (0..4); per body one line of 10
body fields starting with the tracking ID, the joint count (25), then 25 lines of 12 joint values
(x y z depthX depthY colorX colorY orientationW..Z trackingState). Only x, y, z are kept. Bodies are
tracked across frames by their ID, so a sample holds every track the sensor produced; cleaning picks
the two that matter.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np

from skelctl.data.formats.base import (
    TRAIN, VAL, DatasetError, DatasetFormat, Inventory, RawSample, SampleError, check_finite,
    check_number_line, check_raw_dir, find_duplicates,
)
from skelctl.skeletons import NTU25

NAME_PATTERN = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
NUM_JOINTS = 25
VALUES_PER_JOINT = 12
BODY_FIELDS = 10
MAX_BODIES_PER_FRAME = 4

# Cross-subject training performers: the NTU-120 list; its members up to 40 are NTU-60's list.
XSUB_TRAIN_SUBJECTS = (
    1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46, 47, 49, 50,
    52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93, 94, 95,
    97, 98, 100, 103,
)
XVIEW_TRAIN_CAMERAS = (2, 3)


def parse_name(name: str) -> dict[str, int] | None:
    """``SsssCcccPpppRrrrAaaa`` to its fields (action 1-based), or None if it does not match."""
    m = NAME_PATTERN.match(name)
    if m is None:
        return None
    setup, camera, subject, replication, action = map(int, m.groups())
    return {"setup": setup, "view": camera, "subject": subject, "replication": replication,
            "action": action}


def missing_skeletons(release: str) -> frozenset[str]:
    """The official list of samples with missing skeletons (302 for ntu60, 535 for ntu120)."""
    text = resources.files("skelctl.resources").joinpath(f"{release}_missing_skeletons.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if NAME_PATTERN.match(line.strip()))


def read_skeleton_file(path: str | Path) -> np.ndarray:
    """Parse a ``.skeleton`` file into ``(K, T, 25, 3)`` float32, one row per tracked body ID."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError as err:
        raise SampleError(path, f"not a text file (byte {err.start} is not ASCII)") from None
    lines = text.split("\n")  # a CRLF line keeps its "\r", which every parse below ignores
    if not text.strip():
        raise SampleError(path, "empty file")
    while not lines[-1].strip():  # the final newline(s)
        lines.pop()

    def integer(index: int, what: str) -> int:
        if index >= len(lines):
            raise SampleError(path, f"truncated: file ends at line {len(lines)} where the {what} "
                                    f"(line {index + 1}) should be")
        try:
            return int(lines[index])
        except ValueError:
            raise SampleError(path, f"line {index + 1}: {what} is not an integer: "
                                    f"{lines[index].strip()!r}") from None

    num_frames = integer(0, "frame count")
    if num_frames <= 0:
        raise SampleError(path, f"line 1: frame count is {num_frames}; the file has no frames")
    # Walk the structure line by line (a few lines per body), remembering where each joint block
    # starts; the joint values themselves are parsed in one vectorised call below.
    body_ids: list[int] = []
    frames: list[int] = []
    starts: list[int] = []
    i = 1
    for frame in range(num_frames):
        num_bodies = integer(i, f"body count of frame {frame}")
        if not 0 <= num_bodies <= MAX_BODIES_PER_FRAME:
            raise SampleError(path, f"line {i + 1}: frame {frame} has body count {num_bodies}, "
                                    f"expected 0 to {MAX_BODIES_PER_FRAME}")
        i += 1
        seen: set[int] = set()
        for _ in range(num_bodies):
            if i >= len(lines):
                raise SampleError(path, f"truncated: file ends at line {len(lines)} inside frame "
                                        f"{frame} of {num_frames}")
            fields = lines[i].split()
            if len(fields) != BODY_FIELDS:
                raise SampleError(path, f"line {i + 1}: body line has {len(fields)} fields, "
                                        f"expected {BODY_FIELDS}")
            try:
                body_id = int(fields[0])
            except ValueError:
                raise SampleError(path, f"line {i + 1}: body ID is not an integer: "
                                        f"{fields[0]!r}") from None
            if body_id in seen:
                raise SampleError(path, f"line {i + 1}: body ID {body_id} appears twice in "
                                        f"frame {frame}")
            seen.add(body_id)
            num_joints = integer(i + 1, f"joint count of frame {frame}")
            if num_joints != NUM_JOINTS:
                raise SampleError(path, f"line {i + 2}: joint count is {num_joints}, "
                                        f"expected {NUM_JOINTS}")
            if i + 2 + NUM_JOINTS > len(lines):
                raise SampleError(path, f"truncated: file ends at line {len(lines)} inside the "
                                        f"joints of frame {frame} of {num_frames}")
            body_ids.append(body_id)
            frames.append(frame)
            starts.append(i + 2)
            i += 2 + NUM_JOINTS
    if any(line.strip() for line in lines[i:]):
        raise SampleError(path, f"line {i + 1}: unexpected data after the last of "
                                f"{num_frames} frames")

    # tracks are numbered in order of first appearance, not by ID value (a dict, not an int64
    # array: an ID is any integer the file holds, however large)
    rank: dict[int, int] = {}
    track = np.asarray([rank.setdefault(body_id, len(rank)) for body_id in body_ids],
                       dtype=np.int64)
    bodies = np.zeros((len(rank), num_frames, NUM_JOINTS, 3), dtype=np.float32)
    if not starts:
        return bodies
    joint_lines = [line for s in starts for line in lines[s:s + NUM_JOINTS]]
    # Fast path: the sensor writes values separated by single spaces, so the file's space count
    # must be 9 per body line plus 11 per joint line, and each joint line must hold its 11 (numpy
    # ignores the columns past usecols, so a line of 13 values and one of 11 would otherwise
    # pass); then only x, y, z are converted, by numpy's C reader. Anything else takes the slow
    # path, which checks every line for 12 numbers and names the first bad one.
    expected_spaces = (BODY_FIELDS - 1) * len(starts) + (VALUES_PER_JOINT - 1) * len(joint_lines)
    xyz = None
    if text.count(" ") == expected_spaces and all(
            line.count(" ") == VALUES_PER_JOINT - 1 for line in joint_lines):
        try:
            xyz = np.loadtxt(joint_lines, usecols=(0, 1, 2), dtype=np.float32, ndmin=2,
                             delimiter=" ", comments=None, quotechar=None)
        except ValueError:
            pass
    if xyz is None:
        for k, line in enumerate(joint_lines):
            check_number_line(path, line, starts[k // NUM_JOINTS] + k % NUM_JOINTS + 1,
                              VALUES_PER_JOINT, "joint line")
        # Python's float, the one check_number_line accepted the values with (numpy's reader
        # refuses some of them, such as "1_0", and splits lines at a carriage return); values
        # beyond float32's range become inf and are refused below
        with np.errstate(over="ignore"):
            xyz = np.asarray([[float(v) for v in line.split()[:3]] for line in joint_lines],
                             dtype=np.float64).astype(np.float32)
    bodies[track, np.asarray(frames)] = xyz.reshape(len(starts), NUM_JOINTS, 3)
    check_finite(path, bodies, ("body", "frame", "joint", "coordinate"))
    return bodies


class NTUFormat(DatasetFormat):
    """An NTU release: which actions and setups belong to it, and its official missing list."""

    layout = NTU25
    max_bodies = 2

    def __init__(self, name: str, first_action: int, last_action: int, last_setup: int,
                 missing_list: str, protocols: tuple[str, ...]):
        self.name = name
        self.first_action = first_action
        self.last_action = last_action
        self.last_setup = last_setup
        self.missing_list = missing_list
        self.protocols = protocols
        self.num_classes = last_action - first_action + 1

    def inventory(self, raw_dir: Path) -> Inventory:
        raw_dir = check_raw_dir(raw_dir)
        missing = missing_skeletons(self.missing_list)
        paths = sorted(p for p in raw_dir.rglob("*.skeleton") if p.is_file())
        if not paths:
            raise_empty(raw_dir)
        rejected, excluded = [], {"on the official missing-skeleton list": 0,
                                  f"not part of {self.name}": 0}
        names, kept = [], []
        for path in paths:
            fields = parse_name(path.stem)
            if fields is None:
                rejected.append((str(path), "file name does not match SsssCcccPpppRrrrAaaa.skeleton"))
            elif path.stem in missing:
                excluded["on the official missing-skeleton list"] += 1
            elif not (self.first_action <= fields["action"] <= self.last_action
                      and fields["setup"] <= self.last_setup):
                excluded[f"not part of {self.name}"] += 1
            else:
                names.append(path.stem)
                kept.append(str(path))
        keep, duplicates = find_duplicates(names, kept)
        return Inventory([kept[i] for i in keep], rejected + duplicates, excluded)

    def read(self, item: str) -> list[RawSample]:
        path = Path(item)
        fields = parse_name(path.stem)
        bodies = read_skeleton_file(path)
        return [RawSample(name=path.stem, bodies=bodies, label=fields["action"] - self.first_action,
                          subject=fields["subject"], view=fields["view"], setup=fields["setup"],
                          replication=fields["replication"], source=str(path))]

    def splits(self, meta: dict[str, np.ndarray], raw_dir: Path) -> dict[str, np.ndarray]:
        return ntu_splits(meta, self.protocols)


def ntu_splits(meta: dict[str, np.ndarray], protocols: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Cross-subject, cross-view (cameras 2, 3 train) and cross-setup (even setups train)."""
    is_train = {
        "xsub": np.isin(meta["subject"], XSUB_TRAIN_SUBJECTS),
        "xview": np.isin(meta["view"], XVIEW_TRAIN_CAMERAS),
        "xset": np.asarray(meta["setup"]) % 2 == 0,
    }
    return {p: np.where(is_train[p], TRAIN, VAL).astype(np.int8) for p in protocols}


def raise_empty(raw_dir: Path, pattern: str = "*.skeleton") -> None:
    raise DatasetError(f"{raw_dir}: no {pattern} files found in the raw folder")


NTU60 = NTUFormat("ntu60", 1, 60, 17, "ntu60", ("xsub", "xview"))
NTU120 = NTUFormat("ntu120", 1, 120, 32, "ntu120", ("xsub", "xset"))
# The transfer set of CrosSCLR: the 60 NTU-120 classes not in NTU-60, relabelled 0-59.
NTU61_120 = NTUFormat("ntu61-120", 61, 120, 32, "ntu120", ("xsub", "xset"))

__all__ = ["NTU60", "NTU120", "NTU61_120", "NTUFormat", "read_skeleton_file", "ntu_splits",
           "parse_name", "missing_skeletons"]
