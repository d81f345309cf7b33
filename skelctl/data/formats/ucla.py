"""Northwestern-UCLA Multiview Action3D in its per-sequence JSON form.

Each ``aXX_sYY_eZZ_vWW.json`` holds ``{"file_name", "skeletons": [T][20][3], "label": 1..10}``
(20 Kinect v1 joints, one body). Protocol ``xview``: views 1 and 2 train, view 3 test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from skelctl.data.formats.base import (
    TRAIN, VAL, DatasetError, DatasetFormat, Inventory, RawSample, SampleError, check_finite,
    check_raw_dir, find_duplicates,
)
from skelctl.skeletons import KINECT20

NAME_PATTERN = re.compile(r"^a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})$")
NUM_CLASSES = 10


class UCLAFormat(DatasetFormat):
    name = "nw-ucla"
    layout = KINECT20
    max_bodies = 1
    num_classes = NUM_CLASSES
    protocols = ("xview",)

    def inventory(self, raw_dir: Path) -> Inventory:
        raw_dir = check_raw_dir(raw_dir)
        paths = sorted(raw_dir.rglob("*.json"))
        if not paths:
            raise DatasetError(f"{raw_dir}: no .json files found in the raw folder")
        rejected, kept = [], []
        for path in paths:
            if NAME_PATTERN.match(path.stem):
                kept.append(str(path))
            else:
                rejected.append((str(path), "file name does not match aXX_sYY_eZZ_vWW.json"))
        keep, duplicates = find_duplicates([Path(p).stem for p in kept], kept)
        return Inventory([kept[i] for i in keep], rejected + duplicates, {})

    def read(self, item: str) -> list[RawSample]:
        path = Path(item)
        if path.stat().st_size == 0:
            raise SampleError(path, "empty file")
        try:
            record = json.loads(path.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SampleError(path, f"not valid JSON ({err})") from None
        except RecursionError:  # arrays nested thousands deep exhaust the parser's stack
            raise SampleError(path, "not valid JSON (nested too deeply)") from None
        if not isinstance(record, dict) or "skeletons" not in record or "label" not in record:
            raise SampleError(path, "expected an object with 'skeletons' and 'label'")
        try:
            # no dtype here: numpy would turn strings such as "0.5" into numbers, and bools into
            # 0 and 1; a coordinate is a JSON number, so only an int or float array passes
            coords = np.asarray(record["skeletons"])
        except (ValueError, TypeError, OverflowError, RecursionError):
            coords = None
        if coords is None or coords.dtype.kind not in "iuf":
            raise SampleError(path, "'skeletons' is not a [T][20][3] array of numbers")
        if coords.ndim != 3 or coords.shape[1:] != (KINECT20.num_joints, 3):
            raise SampleError(path, f"'skeletons' has shape {coords.shape}, expected "
                                    f"(T, {KINECT20.num_joints}, 3)")
        if coords.shape[0] == 0:
            raise SampleError(path, "zero frames")
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused just below
            coords = coords.astype(np.float32)
        check_finite(path, coords, ("frame", "joint", "coordinate"))
        label = record["label"]
        # bool is an int subclass, but true is no label
        if type(label) is not int or not 1 <= label <= NUM_CLASSES:
            raise SampleError(path, f"label {label!r} is not an integer in 1..{NUM_CLASSES}")
        _, subject, replication, view = map(int, NAME_PATTERN.match(path.stem).groups())
        return [RawSample(name=path.stem, bodies=coords[None], label=label - 1, subject=subject,
                          view=view, replication=replication, source=str(path))]

    def splits(self, meta: dict[str, np.ndarray], raw_dir: Path) -> dict[str, np.ndarray]:
        return {"xview": np.where(np.isin(meta["view"], (1, 2)), TRAIN, VAL).astype(np.int8)}


NW_UCLA = UCLAFormat()
