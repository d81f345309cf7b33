"""PKU-MMD Part I and Part II: untrimmed Kinect v2 skeleton files cut into action clips.

Raw folder (the official archives unpacked side by side; folder names are matched loosely):

    RAW/<...skeleton...>/0002-L.txt          Part I   (Part II: A01N01-L.txt)
    RAW/<...label...>/0002-L.txt             lines ``action_id,start_frame,end_frame,confidence``
    RAW/<...split...>/cross-subject.txt      ``Training videos:`` / ids / ``Validataion videos:`` / ids
    RAW/<...split...>/cross-view.txt

A skeleton file has one line per frame of 150 values: 2 bodies x 25 joints x (x, y, z), the second
body zero when absent. Label frames are 1-based and inclusive (``[start-1:end]`` in 0-based terms).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from skelctl.data.formats.base import (
    TRAIN, UNUSED, VAL, DatasetError, DatasetFormat, Inventory, RawSample, SampleError,
    check_finite, check_number_line, check_raw_dir, find_duplicates,
)
from skelctl.skeletons import NTU25

VALUES_PER_FRAME = 150
NUM_ACTIONS = 51
VIEWS = {"L": 1, "M": 2, "R": 3}
PART1_NAME = re.compile(r"^(\d{4})-([LMR])$")
PART2_NAME = re.compile(r"^A(\d{2})N(\d{2})-([LMR])$")
SPLIT_FILES = {"xsub": ("cross-subject", "cross_subject"), "xview": ("cross-view", "cross_view")}


def read_skeleton_file(path: str | Path) -> np.ndarray:
    """An untrimmed PKU-MMD skeleton file as ``(2, T, 25, 3)`` float32."""
    path = Path(path)
    # a non-UTF-8 byte becomes U+FFFD, refused below as a non-numeric value naming its line
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise SampleError(path, "empty file")
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        # no comment character: a "#" must not hide the rest of a line, nor a whole line (the
        # frame count would no longer match the lines)
        frames = np.loadtxt(lines, dtype=np.float32, ndmin=2, comments=None)
    except ValueError:
        frames = None
    if frames is None or frames.shape != (len(lines), VALUES_PER_FRAME):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                check_number_line(path, line, number, VALUES_PER_FRAME, "frame line")
        # every line holds 150 numbers by Python's float, which accepts a few spellings numpy's
        # reader refuses ("1_0"); values beyond float32's range become inf, refused below
        with np.errstate(over="ignore"):
            frames = np.asarray([[float(v) for v in line.split()] for line in lines],
                                dtype=np.float64).astype(np.float32)
    frames = frames.reshape(len(lines), 2, 25, 3)
    check_finite(path, frames, ("frame", "body", "joint", "coordinate"))
    return frames.transpose(1, 0, 2, 3).copy()


def read_label_file(path: str | Path, num_frames: int) -> np.ndarray:
    """Label rows ``(action_id, start, end)`` (1-based inclusive), checked against the video length."""
    path = Path(path)
    rows = []
    # a non-UTF-8 byte becomes U+FFFD, refused below as a non-numeric label naming its line
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4:
            raise SampleError(path, f"line {number}: expected action_id,start,end,confidence, "
                                    f"got {line.strip()!r}")
        try:
            action, start, end = (int(f) for f in fields[:3])
            float(fields[3])
        except ValueError:
            raise SampleError(path, f"line {number}: non-numeric label {line.strip()!r}") from None
        if not 1 <= start <= end:
            raise SampleError(path, f"line {number}: bad frame range {start}..{end}")
        if end > num_frames:
            raise SampleError(path, f"line {number}: clip {start}..{end} points past the end of "
                                    f"its skeleton file ({num_frames} frames)")
        if not 1 <= action <= NUM_ACTIONS:
            raise SampleError(path, f"line {number}: action id {action} is not in "
                                    f"1..{NUM_ACTIONS}")
        rows.append((action, start, end))
    if not rows:
        raise SampleError(path, "label file holds no clips")
    return np.asarray(rows, dtype=np.int64)


def read_split_file(path: str | Path) -> tuple[set[str], set[str]]:
    """The official split format: a ``Training videos:`` line, ids, a validation line, ids.

    The official files spell the second header ``Validataion videos:``; both spellings are read.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found: dict[str, set[str]] = {}
    for i, line in enumerate(lines):
        key = "train" if line.lower().startswith("training") else (
            "val" if line.lower().startswith(("validation", "validataion")) else None)
        if key is None:
            continue
        if i + 1 >= len(lines):
            raise DatasetError(f"{path}: no video ids after {line!r}")
        found[key] = {v.strip() for v in lines[i + 1].split(",") if v.strip()}
    if set(found) != {"train", "val"}:
        raise DatasetError(f"{path}: expected a 'Training videos:' line and a 'Validataion "
                           f"videos:' line, each followed by a line of ids")
    return found["train"], found["val"]


def _find_dir(raw_dir: Path, word: str) -> Path:
    matches = sorted(p for p in raw_dir.iterdir() if p.is_dir() and word in p.name.lower())
    if not matches:
        raise DatasetError(f"{raw_dir}: no folder whose name contains {word!r} (expected the "
                           f"skeleton, label and split folders of the PKU-MMD release)")
    return matches[0]


class PKUFormat(DatasetFormat):
    layout = NTU25
    max_bodies = 2
    num_classes = NUM_ACTIONS
    protocols = ("xsub", "xview")

    def __init__(self, name: str, part: int):
        self.name = name
        self.pattern = PART1_NAME if part == 1 else PART2_NAME

    def inventory(self, raw_dir: Path) -> Inventory:
        raw_dir = check_raw_dir(raw_dir)
        skeleton_dir, label_dir = _find_dir(raw_dir, "skeleton"), _find_dir(raw_dir, "label")
        paths = sorted(skeleton_dir.rglob("*.txt"))
        if not paths:
            raise DatasetError(f"{skeleton_dir}: no skeleton .txt files")
        rejected, items, names = [], [], []
        for path in paths:
            if not self.pattern.match(path.stem):
                rejected.append((str(path), f"file name does not match the {self.name} pattern "
                                            f"({self.pattern.pattern})"))
                continue
            label = label_dir / path.name
            if not label.is_file():
                rejected.append((str(path), f"no label file {label}"))
                continue
            items.append((str(path), str(label)))
            names.append(path.stem)
        keep, duplicates = find_duplicates(names, [p for p, _ in items])
        return Inventory([items[i] for i in keep], rejected + duplicates, {})

    def read(self, item: tuple[str, str]) -> list[RawSample]:
        skeleton_path, label_path = item
        video = Path(skeleton_path).stem
        bodies = read_skeleton_file(skeleton_path)
        clips = read_label_file(label_path, bodies.shape[1])
        m = self.pattern.match(video)
        subject = int(m.group(2)) if self.pattern is PART2_NAME else -1
        view = VIEWS[video[-1]]
        return [RawSample(name=f"{video}_{k:03d}", bodies=bodies[:, start - 1:end].copy(),
                          label=action - 1, subject=subject, view=view, source=skeleton_path)
                for k, (action, start, end) in enumerate(clips, start=1)]

    def splits(self, meta: dict[str, np.ndarray], raw_dir: Path) -> dict[str, np.ndarray]:
        split_dir = _find_dir(Path(raw_dir), "split")
        videos = np.array([name.rsplit("_", 1)[0] for name in meta["name"]])
        out = {}
        for protocol, stems in SPLIT_FILES.items():
            files = [f for f in sorted(split_dir.glob("*.txt")) if f.stem.lower().startswith(stems)]
            if not files:
                raise DatasetError(f"{split_dir}: no {stems[0]}.txt split file")
            train, val = read_split_file(files[0])
            code = np.full(len(videos), UNUSED, dtype=np.int8)
            code[np.isin(videos, sorted(train))] = TRAIN
            code[np.isin(videos, sorted(val))] = VAL
            out[protocol] = code
        return out


PKU1 = PKUFormat("pku1", 1)
PKU2 = PKUFormat("pku2", 2)
