"""A user's own recordings: a folder of per-sample ``.npy`` arrays plus ``samples.csv``.

    RAW/samples.csv      header ``name,label`` and optionally ``subject,view,setup,replication,split``
    RAW/<name>.npy       float array ``(T, V, 3)`` (one body) or ``(M, T, V, 3)``; all-zero frames or
                         bodies mean "not tracked"

Labels are integers from 0. ``split`` is ``train`` or ``val`` (``test`` is read as ``val``) and
defines the protocol ``default``. The joint layout is ``ntu25`` for 25 joints, ``kinect20`` for 20,
or a graph-less ``joints<V>`` otherwise (override with ``layout``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from skelctl.data.formats.base import (
    META_INT_FIELDS, TRAIN, UNUSED, VAL, DatasetError, DatasetFormat, Inventory, RawSample,
    SampleError, check_finite, check_raw_dir, find_duplicates,
)
from skelctl.skeletons import LAYOUTS, get_layout, graphless

SPLIT_CODES = {"train": TRAIN, "val": VAL, "test": VAL}


class GenericFormat(DatasetFormat):
    name = "generic"
    max_bodies = 2

    def __init__(self, layout: str = "auto"):
        self.layout_name = layout
        self.protocols = ()

    def inventory(self, raw_dir: Path) -> Inventory:
        raw_dir = check_raw_dir(raw_dir)
        table, columns, rows = read_table(raw_dir)
        items, rejected, names, where = [], [], [], []
        for number, row in enumerate(rows, start=2):
            try:
                item = {"path": str(raw_dir / f"{row['name']}.npy"), "name": row["name"],
                        **{f: int(row[f]) if row.get(f) else -1 for f in META_INT_FIELDS}}
                if item["label"] < 0 or (row.get("split") or "").lower() not in ("", *SPLIT_CODES):
                    raise ValueError
            except ValueError:
                rejected.append((f"{table}:{number}", f"bad row {row}: label must be an integer "
                                 f">= 0, other ids integers, split one of train/val/test"))
                continue
            items.append(item)
            names.append(item["name"])
            where.append(f"{table}:{number}")
        keep, duplicates = find_duplicates(names, where)
        items = [items[i] for i in keep]
        self.protocols = ("default",) if "split" in columns else ()
        self.num_classes = max((item["label"] for item in items), default=-1) + 1
        self._set_layout(items)
        return Inventory(items, rejected + duplicates, {})

    def _set_layout(self, items: list[dict]) -> None:
        if self.layout_name != "auto":
            self.layout = get_layout(self.layout_name)
            return
        for item in items:
            try:
                num_joints = np.load(item["path"], mmap_mode="r").shape[-2]
            except (OSError, ValueError, IndexError):
                continue
            by_size = {layout.num_joints: layout for layout in LAYOUTS.values()}
            self.layout = by_size.get(num_joints, graphless(num_joints))
            return
        raise DatasetError("generic: no readable .npy array to infer the joint layout from")

    def read(self, item: dict) -> list[RawSample]:
        path = Path(item["path"])
        if not path.is_file():
            raise SampleError(path, "array file listed in samples.csv does not exist")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise SampleError(path, f"not a readable .npy array ({err})") from None
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] != 3:
            raise SampleError(path, f"array has shape {array.shape}, expected (T, V, 3) or "
                                    f"(M, T, V, 3)")
        if array.shape[2] != self.layout.num_joints:
            raise SampleError(path, f"{array.shape[2]} joints, but the layout "
                                    f"{self.layout.name!r} has {self.layout.num_joints}")
        if array.shape[1] == 0:
            raise SampleError(path, "zero frames")
        if not np.issubdtype(array.dtype, np.number):
            raise SampleError(path, f"array dtype {array.dtype} is not numeric")
        array = array.astype(np.float32)
        check_finite(path, array, ("body", "frame", "joint", "coordinate"))
        return [RawSample(name=item["name"], bodies=array, source=str(path),
                          **{f: item[f] for f in META_INT_FIELDS})]

    def splits(self, meta: dict[str, np.ndarray], raw_dir: Path) -> dict[str, np.ndarray]:
        if not self.protocols:
            return {}
        _, _, rows = read_table(Path(raw_dir))
        code = {row["name"]: SPLIT_CODES.get((row.get("split") or "").lower(), UNUSED)
                for row in rows}
        return {"default": np.array([code[n] for n in meta["name"]], dtype=np.int8)}


def read_table(raw_dir: Path) -> tuple[Path, list[str], list[dict[str, str]]]:
    table = raw_dir / "samples.csv"
    if not table.is_file():
        raise DatasetError(f"{raw_dir}: no samples.csv (columns name,label[,subject,view,"
                           f"setup,replication,split])")
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not {"name", "label"} <= set(columns):
        raise DatasetError(f"{table}: needs the columns 'name' and 'label', found {columns}")
    if not rows:
        raise DatasetError(f"{table}: no samples listed")
    return table, columns, rows
