"""pyskl's annotation pickles (kennymckormick/pyskl): ``ntu60_3danno.pkl``, ``ntu60_hrnet.pkl``...

One pickle (RAW is the file, or a folder holding exactly one ``.pkl``)::

    {"split": {"xsub_train": [frame_dir, ...], "xsub_val": [...], ...},
     "annotations": [{"frame_dir": str, "label": int, "keypoint": (M, T, V, C) float,
                      "total_frames": T, "keypoint_score": (M, T, V), ...}, ...]}

Each annotation is a sample named by its ``frame_dir`` (NTU names fill in the setup, camera,
performer and replication). Every split becomes a protocol: ``<protocol>_train`` and
``<protocol>_val`` (``_test`` counts as val), a bare ``train`` / ``val`` / ``test`` the protocol
``default``; a sample a protocol's lists do not name is unused there. 3D files (``3danno``: 25
Kinect joints) take the ``ntu25`` layout, 17 COCO keypoints ``coco17`` (3D) or ``coco17-2d`` (2D,
e.g. HRNet detections); others a graph-less ``joints<V>``, or the ``--layout`` given. The layout
follows the (joints, coordinates) most annotations have; the others are rejected.

``keypoint_score`` (the detector's confidence per joint, in 2D files) travels with the keypoints
as the samples' ``scores``. When only some annotations of a file carry it, the others get scores
of 1.0 (full confidence), as pyskl's own ``GeneratePoseTarget`` does for an annotation without
scores; the parse report's ``notes`` say how many were filled so.

A pickle cannot be read in parts: the whole file is loaded once (with only numpy's array
reconstruction allowed, see :mod:`skelctl.data.formats.pickles`), so parsing holds it in memory.

:func:`write_annotations` writes a store's samples in this layout, for ``skelctl export``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from skelctl.data.formats.base import (
    TRAIN, UNUSED, VAL, DatasetError, DatasetFormat, Inventory, RawSample, SampleError,
    check_finite,
)
from skelctl.data.formats.benchmark_folders import PROTOCOL_NAME, describe
from skelctl.data.formats.ntu import parse_name
from skelctl.data.formats.pickles import Streamed, dump_pickle, load_pickle
from skelctl.skeletons import Layout, get_layout, layout_by_shape

WHAT = "pyskl annotation file"
SPLIT_KEY = re.compile(r"^(?:(?P<protocol>.+)_)?(?P<part>train|val|test)$")
SPLIT_PARTS = {"train": TRAIN, "val": VAL, "test": VAL}
DEFAULT_PROTOCOL = "default"


def annotation_file(raw: Path) -> Path:
    """RAW itself, or the one ``.pkl`` in the folder RAW."""
    raw = Path(raw)
    if raw.is_file():
        return raw
    if not raw.is_dir():
        raise DatasetError(f"{raw}: no such file or folder (a pyskl annotation .pkl, or a "
                           f"folder holding one)")
    found = sorted(raw.glob("*.pkl"))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found)
        raise DatasetError(f"{raw}: " + (f"holds {len(found)} .pkl files ({listed}); pass "
                                         f"the one to import as --raw FILE" if found else
                                         "no .pkl file (a pyskl annotation file) in the folder"))
    return found[0]


def read_annotation_file(path: Path) -> tuple[list[Any], dict[str, list[str]]]:
    """The annotations and the split lists of a pyskl pickle, their structure checked."""
    obj = load_pickle(path, WHAT)
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], (list, tuple)):
        raise DatasetError(f"{path}: a label file of the CrosSCLR/ISC layout (sample names, "
                           f"labels), not a {WHAT}; import its folder with the format "
                           f"crossclr or isc")
    if not isinstance(obj, dict) or "annotations" not in obj:
        raise DatasetError(f"{path}: not a {WHAT}: expected a dict with 'annotations' (and "
                           f"'split'), found {describe(obj)}")
    annotations, split = obj["annotations"], obj.get("split", {})
    if not isinstance(annotations, list):
        raise DatasetError(f"{path}: 'annotations' must be a list of dicts, found "
                           f"{describe(annotations)}")
    if not isinstance(split, dict) or not all(
            isinstance(k, str) and isinstance(v, (list, tuple)) and
            all(isinstance(n, str) for n in v) for k, v in split.items()):
        raise DatasetError(f"{path}: 'split' must map split names to lists of frame_dir "
                           f"names, found {describe(split)}")
    return annotations, {k: list(v) for k, v in split.items()}


def split_protocols(path: Path, split: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Per protocol, the membership (frame_dir -> TRAIN / VAL) its split lists define."""
    membership: dict[str, dict[str, int]] = {}
    for key, names in split.items():
        match = SPLIT_KEY.match(key)
        if match is None:
            raise DatasetError(f"{path}: split {key!r} is neither <protocol>_train, "
                               f"<protocol>_val, <protocol>_test nor train, val, test")
        protocol = match["protocol"] or DEFAULT_PROTOCOL
        if not PROTOCOL_NAME.fullmatch(protocol):
            raise DatasetError(f"{path}: split {key!r}: the protocol name {protocol!r} takes "
                               f"letters, digits and '_' only (it becomes <dataset>-<protocol> "
                               f"in split names)")
        code = SPLIT_PARTS[match["part"]]
        members = membership.setdefault(protocol, {})
        for name in names:
            if members.get(name, code) != code:
                raise DatasetError(f"{path}: {name!r} is in both the train and the val split "
                                   f"of protocol {protocol!r}")
            members[name] = code
    return membership


def check_annotation(annotation: Any) -> str | None:
    """What is wrong with one annotation's structure, or None."""
    if not isinstance(annotation, dict):
        return f"an annotation is a dict, found {describe(annotation)}"
    missing = [k for k in ("frame_dir", "label", "keypoint") if k not in annotation]
    if missing:
        return f"lacks {', '.join(missing)}"
    name, label, keypoint = (annotation[k] for k in ("frame_dir", "label", "keypoint"))
    if not isinstance(name, str) or not name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"frame_dir {name!r} is not a non-empty name without control characters"
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
        return f"label {label!r} is not an integer from 0"
    if not isinstance(keypoint, np.ndarray) or keypoint.ndim != 4 or \
            keypoint.shape[-1] not in (2, 3) or keypoint.dtype.kind not in "iuf":
        return (f"keypoint is {describe(keypoint)}"
                + (f" of {keypoint.dtype}" if isinstance(keypoint, np.ndarray) else "")
                + ", expected a numeric (M, T, V, C) array with C = 2 or 3")
    if 0 in keypoint.shape:
        return f"keypoint has shape {keypoint.shape}: no body, frame or joint"
    total = annotation.get("total_frames", keypoint.shape[1])
    if total != keypoint.shape[1]:
        return f"total_frames is {total!r}, but keypoint holds {keypoint.shape[1]} frames"
    score = annotation.get("keypoint_score")
    if score is not None and (not isinstance(score, np.ndarray) or
                              score.shape != keypoint.shape[:3]):
        return (f"keypoint_score is {describe(score)}, expected an array of the keypoints' "
                f"(M, T, V) = {keypoint.shape[:3]}")
    if score is not None and score.dtype.kind not in "iuf":
        return f"keypoint_score is of {score.dtype}, expected numbers"
    return None


class PysklFormat(DatasetFormat):
    name = "pyskl"

    def __init__(self, layout: str | Layout = "auto"):
        self.layout_option = layout
        self.protocols: tuple[str, ...] = ()
        self.num_classes = 0
        self.max_bodies = 2
        self.has_scores = False
        self._membership: dict[str, dict[str, int]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the instance travels to every parse task: the membership tables stay behind
        return {**self.__dict__, "_membership": None}

    def inventory(self, raw_dir: Path) -> Inventory:
        path = annotation_file(raw_dir)
        annotations, split = read_annotation_file(path)
        membership = split_protocols(path, split)
        if not annotations:
            raise DatasetError(f"{path}: 'annotations' is empty")
        rejected, good, seen = [], [], {}
        for index, annotation in enumerate(annotations):
            where = f"{path} annotation {index}"
            problem = check_annotation(annotation)
            if problem is None and annotation["frame_dir"] in seen:
                problem = (f"duplicate frame_dir {annotation['frame_dir']!r} (also annotation "
                           f"{seen[annotation['frame_dir']]})")
            if problem is not None:
                rejected.append((where, problem))
                continue
            seen[annotation["frame_dir"]] = index
            good.append((index, annotation))
        self.layout = self.decide_layout(path, [a["keypoint"].shape[2:] for _, a in good])
        shape = (self.layout.num_joints, self.layout.dims)
        items = []
        for index, annotation in good:
            keypoint = annotation["keypoint"]
            if keypoint.shape[2:] != shape:
                rejected.append((f"{path} annotation {index}",
                                 f"keypoint has {keypoint.shape[2]} joints x "
                                 f"{keypoint.shape[3]} coordinates, but the layout "
                                 f"{self.layout.name!r} (the one most annotations fit) has "
                                 f"{shape[0]} x {shape[1]}"))
                continue
            items.append((f"{path}[{index}]", annotation["frame_dir"],
                          int(annotation["label"]), keypoint, annotation.get("keypoint_score")))
        self.max_bodies = max((item[3].shape[0] for item in items), default=1)
        self.num_classes = max((item[2] for item in items), default=-1) + 1
        self.protocols = tuple(membership)
        self._membership = membership
        # one annotation with scores gives the whole file scores: every sample of a store must
        # have them (they are a parallel array), and dropping them all for a few that lack them
        # would lose what the detector measured
        scored = sum(item[4] is not None for item in items)
        self.has_scores = scored > 0
        named = set().union(*(m.keys() for m in membership.values())) if membership else set()
        unknown = len(named - set(seen))
        notes = {}
        if 0 < scored < len(items):
            notes["keypoint_score"] = (f"{len(items) - scored} of {len(items)} annotations carry "
                                       f"no keypoint_score (per-joint detection confidence); "
                                       f"their scores are 1.0, as pyskl fills them")
        if unknown:
            notes["split_names_without_annotation"] = (
                f"{unknown} frame_dir names in the split lists have no annotation")
        return Inventory(items, rejected, {}, notes)

    def decide_layout(self, path: Path, shapes: list[tuple[int, ...]]) -> Layout:
        """The ``--layout`` given, or the built-in (else graph-less) layout of the (joints,
        coordinates) most annotations have."""
        counts = Counter(tuple(s) for s in shapes)
        if not counts:
            raise DatasetError(f"{path}: no annotation has a usable keypoint array")
        (best, count), *rest = counts.most_common()
        if self.layout_option != "auto":
            layout = (self.layout_option if isinstance(self.layout_option, Layout)
                      else get_layout(self.layout_option))
            return layout
        if rest and rest[0][1] == count:
            listed = ", ".join(f"{n} with {v} joints x {c}" for (v, c), n in counts.most_common())
            raise DatasetError(f"{path}: no joint layout fits most annotations ({listed}); "
                               f"choose one with --layout")
        return layout_by_shape(*best)

    def read(self, item: tuple[str, str, int, np.ndarray, np.ndarray | None]) -> list[RawSample]:
        source, name, label, keypoint, score = item
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused just below
            bodies = np.asarray(keypoint, dtype=np.float32)  # (M, T, V, C), as pyskl keeps it
        check_finite(source, bodies, ("body", "frame", "joint", "coordinate"))
        scores = None
        if self.has_scores:
            with np.errstate(over="ignore"):
                scores = (np.ones(bodies.shape[:3], dtype=np.float32) if score is None
                          else np.asarray(score, dtype=np.float32))  # (M, T, V)
            bad = ~np.isfinite(scores)
            if bad.any():
                raise SampleError(source, f"keypoint_score holds {int(bad.sum())} NaN or "
                                          f"infinite value(s)")
        present = bodies.any(axis=(1, 2, 3))
        keep = present if present.any() else slice(0, 1)  # the absent bodies go
        bodies = bodies[keep]
        fields = parse_name(name) or {}
        return [RawSample(name=name, bodies=np.ascontiguousarray(bodies), label=label,
                          subject=fields.get("subject", -1), view=fields.get("view", -1),
                          setup=fields.get("setup", -1),
                          replication=fields.get("replication", -1), source=source,
                          scores=None if scores is None else np.ascontiguousarray(scores[keep]))]

    def splits(self, meta: dict[str, np.ndarray], raw_dir: Path) -> dict[str, np.ndarray]:
        if self._membership is None:
            path = annotation_file(raw_dir)
            self._membership = split_protocols(path, read_annotation_file(path)[1])
        return {protocol: np.array([members.get(name, UNUSED) for name in meta["name"]],
                                   dtype=np.int8)
                for protocol, members in self._membership.items()}


PYSKL = PysklFormat()


def annotation(name: str, label: int, sequence: np.ndarray,
               scores: np.ndarray | None = None) -> dict[str, Any]:
    """A pyskl annotation of a sequence ``(T, C, V, M)`` as the store keeps it: ``keypoint``
    ``(M', T, V, C)`` float32 with the bodies absent throughout left out (at least one kept),
    and with ``scores`` ``(T, V, M)``, ``keypoint_score`` ``(M', T, V)`` of the same bodies."""
    keypoint = sequence.transpose(3, 0, 2, 1)
    present = keypoint.any(axis=(1, 2, 3))
    keep = present if present.any() else slice(0, 1)
    keypoint = keypoint[keep]
    out = {"frame_dir": name, "label": int(label),
           "keypoint": np.ascontiguousarray(keypoint, dtype=np.float32),
           "total_frames": int(keypoint.shape[1])}
    if scores is not None:
        out["keypoint_score"] = np.ascontiguousarray(scores.transpose(2, 0, 1)[keep],
                                                     dtype=np.float32)
    return out


def write_annotations(path: Path, split: dict[str, list[str]],
                      annotations: Iterable[dict[str, Any]]) -> Path:
    """One pyskl annotation pickle, written as the annotations come (memory: one batch of them)
    under a partial name, renamed into place when complete."""
    dump_pickle({"split": split, "annotations": Streamed(annotations)}, path)
    return Path(path)
