"""A user's own recordings: a folder of per-sample ``.npy`` arrays plus ``samples.csv``.

    RAW/samples.csv      header ``name,label`` and optionally ``subject,view,setup,replication``,
                         ``split`` and ``split_<protocol>`` columns, and any other columns
    RAW/<name>.npy       float array ``(T, V, C)`` (one body) or ``(M, T, V, C)``, C = 3 (or 2 for
                         image keypoints); all-zero frames or bodies mean "not tracked"

Labels are integers from 0 (or from ``labels_from``). Protocols come from split columns (``split``
defines ``default``, ``split_<p>`` defines ``p``; values ``train`` or ``val``, ``test`` read as
``val``, empty for neither) and from rules (``{"xsub": {"train": {"subject": [1, 3]}}}``: a sample
trains when each named column holds one of the listed values; the others test, or only those
matching a ``val`` rule when one is given). The joint layout is decided once for the dataset: the
one given (a built-in name, ``joints<N>`` or a layout file), or, for ``auto``, the raw folder's
``layout.yaml`` (or ``.json``) when it has one, else the built-in layout that fits the joint and
coordinate count of most files (a graph-less ``joints<V>`` when none does).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skelctl.atomic import replacing
from skelctl.data.formats.base import (
    META_INT_FIELDS, TRAIN, UNUSED, VAL, DatasetError, DatasetFormat, Inventory, RawSample,
    SampleError, check_finite, check_raw_dir, find_duplicates,
)
from skelctl.skeletons import Layout, get_layout, layout_by_shape

SPLIT_CODES = {"train": TRAIN, "val": VAL, "test": VAL}
RULE_PARTS = ("train", "val")
LAYOUT_FILES = ("layout.yaml", "layout.yml", "layout.json")  # a raw folder's own layout


@dataclass(frozen=True)
class ImportOptions:
    """How to read a generic raw folder: the layout, protocol rules and where labels start
    (``None``: labels must start at 0)."""

    layout: str | Layout = "auto"
    protocols: dict[str, Any] = field(default_factory=dict)
    labels_from: int | None = None

    def __post_init__(self) -> None:
        check_rules(self.protocols)


def check_rules(protocols: Any) -> None:
    """Protocol rules are ``{name: {"train": {column: [values]}, "val": {...}}}``, val optional."""
    if not isinstance(protocols, dict):
        raise DatasetError(f"protocol rules must map protocol names to rules, not {protocols!r}")
    for name, rule in protocols.items():
        if not isinstance(rule, dict) or "train" not in rule or set(rule) - set(RULE_PARTS):
            raise DatasetError(f"protocol {name!r}: a rule is {{train: {{column: [values]}}}}, "
                               f"optionally with val: {{column: [values]}} (others: the rest)")
        for part, conditions in rule.items():
            if not isinstance(conditions, dict) or not conditions or not all(
                    isinstance(v, list) and v for v in conditions.values()):
                raise DatasetError(f"protocol {name!r}: {part} must map columns to non-empty "
                                   f"lists of values, not {conditions!r}")


def _value(text: Any) -> Any:
    """Compare CSV cells and rule values as integers where both are (``"01"`` is 1)."""
    try:
        return int(str(text).strip())
    except ValueError:
        return str(text).strip()


def matches(row: dict[str, str], conditions: dict[str, list]) -> bool:
    """Whether each named column of a table row holds one of its listed values."""
    return all(_value(row.get(c, "")) in {_value(v) for v in values}
               for c, values in conditions.items())


class GenericFormat(DatasetFormat):
    name = "generic"
    max_bodies = 2

    def __init__(self, options: ImportOptions = ImportOptions()):
        self.options = options
        self.protocols = ()

    def inventory(self, raw_dir: Path) -> Inventory:
        raw_dir = check_raw_dir(raw_dir)
        table, columns, rows = read_table(raw_dir)
        split_columns = split_columns_of(columns)
        clash = sorted(set(split_columns.values()) & set(self.options.protocols))
        if clash:
            raise DatasetError(f"{table}: protocol(s) {', '.join(clash)} defined both by a "
                               f"split column and by a rule")
        for protocol, rule in self.options.protocols.items():
            for part in rule.values():
                missing = sorted(set(part) - set(columns))
                if missing:
                    raise DatasetError(f"{table}: protocol {protocol!r} tests column(s) "
                                       f"{', '.join(missing)}, which the table lacks "
                                       f"(columns: {', '.join(columns)})")
        start = self.options.labels_from or 0
        items, rejected, names, where = [], [], [], []
        for number, row in enumerate(rows, start=2):
            try:
                item = {"path": str(raw_dir / f"{row['name']}.npy"), "name": row["name"],
                        **{f: int(row[f]) if row.get(f) else -1 for f in META_INT_FIELDS}}
                if any((row.get(c) or "").lower() not in ("", *SPLIT_CODES)
                       for c in split_columns):
                    raise ValueError
            except ValueError:
                rejected.append((f"{table}:{number}", f"bad row {row}: label must be an integer, "
                                 f"other ids integers, split columns one of train/val/test"))
                continue
            if item["label"] < start:
                rejected.append((f"{table}:{number}", f"label {item['label']} is below the "
                                 f"first label, {start}"))
                continue
            item["label"] -= start
            items.append(item)
            names.append(item["name"])
            where.append(f"{table}:{number}")
        keep, duplicates = find_duplicates(names, where)
        items = [items[i] for i in keep]
        labels = sorted({item["label"] for item in items})
        if labels and labels[0] > 0 and self.options.labels_from is None:
            raise DatasetError(
                f"{table}: labels run from {labels[0]} to {labels[-1]}: no sample has label 0, "
                f"so class 0 would be empty and the classifier one class too wide. If the labels "
                f"count from {labels[0]}, pass --labels-from {labels[0]} (params: labels_from: "
                f"{labels[0]}); pass --labels-from 0 if class 0 is meant to be empty")
        self.num_classes = labels[-1] + 1 if labels else 0
        self.protocols = tuple(dict.fromkeys([*split_columns.values(), *self.options.protocols]))
        self.layout = self.decide_layout(raw_dir, items)
        return Inventory(items, rejected + duplicates, {})

    def decide_layout(self, raw_dir: Path, items: list[dict]) -> Layout:
        """The option's layout, else ``RAW/layout.yaml`` (or ``.json``), else the one that fits
        most files (never one file alone)."""
        if self.options.layout != "auto":
            layout = self.options.layout
            return layout if isinstance(layout, Layout) else get_layout(layout)
        for file in LAYOUT_FILES:
            if (raw_dir / file).is_file():
                return get_layout(raw_dir / file)
        shapes: Counter = Counter()
        for item in items:
            try:
                shape = np.load(item["path"], mmap_mode="r").shape
            except (OSError, ValueError):
                continue  # read() rejects it, naming the file
            if len(shape) in (3, 4) and shape[-1] in (2, 3):
                shapes[shape[-2:]] += 1
        if not shapes:
            raise DatasetError(f"{raw_dir}: no readable (T, V, C) or (M, T, V, C) array (C = 2 or 3) "
                               "among the files listed, to decide the joint layout from")
        (best, count), *rest = shapes.most_common()
        if rest and rest[0][1] == count:
            counts = ", ".join(f"{n} files with {v} joints x {c}" for (v, c), n in
                               shapes.most_common())
            raise DatasetError(f"{raw_dir}: no joint layout fits most files ({counts}); choose "
                               f"one with --layout")
        return layout_by_shape(*best)

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
        dims = self.layout.dims
        if array.ndim != 4 or array.shape[-1] != dims:
            raise SampleError(path, f"array has shape {array.shape}, expected (T, V, {dims}) or "
                                    f"(M, T, V, {dims}) for the {dims}D layout "
                                    f"{self.layout.name!r}")
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
        _, columns, rows = read_table(Path(raw_dir))
        by_name = {row["name"]: row for row in rows}
        chunk = [by_name[n] for n in meta["name"]]
        out = {}
        for column, protocol in split_columns_of(columns).items():
            out[protocol] = np.array([SPLIT_CODES.get((row.get(column) or "").lower(), UNUSED)
                                      for row in chunk], dtype=np.int8)
        for protocol, rule in self.options.protocols.items():
            out[protocol] = np.array(
                [TRAIN if matches(row, rule["train"]) else
                 VAL if "val" not in rule or matches(row, rule["val"]) else UNUSED
                 for row in chunk], dtype=np.int8)
        return out


def split_columns_of(columns: list[str]) -> dict[str, str]:
    """Split column -> the protocol it defines (``split`` -> ``default``, ``split_xsub`` -> ``xsub``)."""
    return {c: "default" if c == "split" else c.removeprefix("split_")
            for c in columns if c == "split" or (c.startswith("split_") and len(c) > 6)}


def read_table(raw_dir: Path) -> tuple[Path, list[str], list[dict[str, str]]]:
    table = raw_dir / "samples.csv"
    if not table.is_file():
        raise DatasetError(f"{raw_dir}: no samples.csv (columns name,label[,subject,view,"
                           f"setup,replication,split,split_<protocol>])")
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not {"name", "label"} <= set(columns):
        raise DatasetError(f"{table}: needs the columns 'name' and 'label', found {columns}")
    if not rows:
        raise DatasetError(f"{table}: no samples listed")
    return table, columns, rows


def write_samples(out_dir: Path, samples: list[RawSample],
                  columns: dict[str, list[str]] | None = None) -> Path:
    """Write ``samples`` as a generic raw folder (one ``<name>.npy`` each, ``samples.csv`` last),
    e.g. to bring a dataset read by another format into the generic one. ``columns`` adds CSV
    columns, one value per sample (``split`` or ``split_<protocol>``). Returns the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = columns or {}
    for sample in samples:
        bodies = sample.bodies[0] if sample.bodies.shape[0] == 1 else sample.bodies
        np.save(out_dir / f"{sample.name}.npy", bodies)
    table = out_dir / "samples.csv"
    with replacing(table) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", *META_INT_FIELDS, *columns])
        for i, sample in enumerate(samples):
            writer.writerow([sample.name, *(getattr(sample, k) for k in META_INT_FIELDS),
                             *(values[i] for values in columns.values())])
    return table
