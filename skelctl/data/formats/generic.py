"""A user's own recordings: a folder of per-sample ``.npy`` arrays plus ``samples.csv``.

    RAW/samples.csv      header ``name,label`` and optionally ``subject,view,setup,replication``,
                         ``split`` and ``split_<protocol>`` columns, and any other columns
    RAW/<name>.npy       float array ``(T, V, C)`` (one body) or ``(M, T, V, C)``, C = 3 (or 2 for
                         image keypoints); all-zero frames or bodies mean "not tracked"; a name
                         may hold subfolders but never leads out of RAW (``..``, ``/abs``)

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
import io
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from skelctl.atomic import replacing
from skelctl.data.formats.base import (
    META_INT_FIELDS, TRAIN, UNUSED, VAL, DatasetError, DatasetFormat, Inventory, RawSample,
    SampleError, check_finite, check_raw_dir, find_duplicates,
)
from skelctl.skeletons import Layout, get_layout, layout_by_shape, syntax_error_message

SPLIT_CODES = {"train": TRAIN, "val": VAL, "test": VAL}
RULE_PARTS = ("train", "val")
LAYOUT_FILES = ("layout.yaml", "layout.yml", "layout.json")  # a raw folder's own layout
# metadata ids are stored as int64 and labels size the classifier: a CSV value beyond this is a
# typo or corruption, not an id
MAX_ID = 2 ** 31 - 1
# what a corrupt .npy header makes numpy raise besides ValueError (it tokenizes the header, then
# parses it with literal_eval)
NPY_HEADER_ERRORS = (ValueError, TypeError, OverflowError, EOFError, SyntaxError, RecursionError,
                     tokenize.TokenError)


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
        table, columns, rows, rejected = read_table(raw_dir)
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
        items, _, bad = self._items(raw_dir, table, columns, rows)
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
        return Inventory(items, rejected + bad, {})

    def _items(self, raw_dir: Path, table: Path, columns: list[str],
               rows: list[tuple[int, dict[str, str]]]
               ) -> tuple[list[dict], list[dict[str, str]], list[tuple[str, str]]]:
        """The items of the table's rows, the row of each, and the rows rejected; the first valid
        row of a name wins (inventory and splits both take their rows from here)."""
        for line, row in rows:  # before anything is read: no file outside the raw folder
            if leaves_folder(row["name"]):
                raise DatasetError(f"{table}:{line}: sample name {row['name']!r} leaves the raw "
                                   f"folder {raw_dir}; RAW/<name>.npy must lie inside it (no "
                                   f"'..' above it, no absolute path)")
        split_columns = split_columns_of(columns)
        start = self.options.labels_from or 0
        items, kept, rejected, names, where = [], [], [], [], []
        for line, row in rows:
            name = row["name"]
            if not name or any(ord(c) < 32 or ord(c) == 127 for c in name):
                rejected.append((f"{table}:{line}", f"bad row {row}: the name is empty or holds "
                                 f"control characters"))
                continue
            try:
                if not row["label"]:
                    raise ValueError
                item = {"path": str(raw_dir / f"{name}.npy"), "name": name,
                        **{f: int(row[f]) if row.get(f) else -1 for f in META_INT_FIELDS}}
                if any(abs(item[f]) > MAX_ID for f in META_INT_FIELDS):
                    raise ValueError
                if any((row.get(c) or "").lower() not in ("", *SPLIT_CODES)
                       for c in split_columns):
                    raise ValueError
            except ValueError:
                rejected.append((f"{table}:{line}", f"bad row {row}: label must be an integer, "
                                 f"other ids integers (at most {MAX_ID} either way), split "
                                 f"columns one of train/val/test"))
                continue
            if item["label"] < start:
                rejected.append((f"{table}:{line}", f"label {item['label']} is below the "
                                 f"first label, {start}"))
                continue
            item["label"] -= start
            items.append(item)
            kept.append(row)
            names.append(name)
            where.append(f"{table}:{line}")
        keep, duplicates = find_duplicates(names, where)
        return [items[i] for i in keep], [kept[i] for i in keep], rejected + duplicates

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
                shape, _ = npy_header(Path(item["path"]))
            except SampleError:
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
        # the header first: shape and type are checked, and the data's size against the file's,
        # before anything is allocated
        declared, dtype = npy_header(path)
        shape = (1, *declared) if len(declared) == 3 else declared
        dims = self.layout.dims
        if len(shape) != 4 or shape[-1] != dims:
            raise SampleError(path, f"array has shape {declared}, expected (T, V, {dims}) or "
                                    f"(M, T, V, {dims}) for the {dims}D layout "
                                    f"{self.layout.name!r}")
        if shape[2] != self.layout.num_joints:
            raise SampleError(path, f"{shape[2]} joints, but the layout "
                                    f"{self.layout.name!r} has {self.layout.num_joints}")
        if shape[1] == 0:
            raise SampleError(path, "zero frames")
        if dtype.kind not in "iuf":
            raise SampleError(path, f"array dtype {dtype} is not numeric (int, uint or float)")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, EOFError, ValueError) as err:
            raise SampleError(path, f"not a readable .npy array ({err})") from None
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused just below
            array = array.reshape(shape).astype(np.float32)
        check_finite(path, array, ("body", "frame", "joint", "coordinate"))
        return [RawSample(name=item["name"], bodies=array, source=str(path),
                          **{f: item[f] for f in META_INT_FIELDS})]

    def splits(self, meta: dict[str, np.ndarray], raw_dir: Path) -> dict[str, np.ndarray]:
        if not self.protocols:
            return {}
        raw_dir = Path(raw_dir)
        table, columns, rows, _ = read_table(raw_dir)
        # the row inventory kept for each name (the first valid one, as for the arrays)
        items, kept, _ = self._items(raw_dir, table, columns, rows)
        by_name = {item["name"]: row for item, row in zip(items, kept)}
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


def read_table(raw_dir: Path) -> tuple[Path, list[str], list[tuple[int, dict[str, str]]],
                                       list[tuple[str, str]]]:
    """``samples.csv``: its path, columns, rows (each with the line it starts on, its cells
    stripped) and the rows rejected for holding more or fewer cells than the header. A file that
    is no CSV text (bad quoting, not UTF-8) is refused whole, naming the line."""
    table = raw_dir / "samples.csv"
    if not table.is_file():
        raise DatasetError(f"{raw_dir}: no samples.csv (columns name,label[,subject,view,"
                           f"setup,replication,split,split_<protocol>])")
    data = table.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # the byte-order mark spreadsheets write is no error
    except UnicodeDecodeError as err:
        raise DatasetError(syntax_error_message(table, err)) from None
    # strict: a stray quote is an error, not a field that swallows the lines after it
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    try:
        while True:
            line = reader.line_num + 1
            fields = next(reader, None)
            if fields is None:
                break
            if fields:  # a blank line is no row
                records.append((line, fields))
    except csv.Error as err:
        raise DatasetError(f"{table}:{reader.line_num}: not a CSV row ({err}); a cell holding a "
                           f"comma, quote or line break is quoted whole, its quotes doubled")\
            from None
    header = records.pop(0)[1] if records else []
    columns = [c for c in header if c]
    twice = sorted(c for c, n in Counter(columns).items() if n > 1)
    if twice:
        raise DatasetError(f"{table}:1: column(s) {', '.join(twice)} appear more than once in "
                           f"the header")
    if not {"name", "label"} <= set(columns):
        raise DatasetError(f"{table}: needs the columns 'name' and 'label', found {columns}")
    if not records:
        raise DatasetError(f"{table}: no samples listed")
    rows, rejected = [], []
    for line, fields in records:
        if len(fields) != len(header):
            rejected.append((f"{table}:{line}", f"bad row: {len(fields)} cells, but the header "
                             f"has {len(header)} (a cell holding a comma is quoted)"))
            continue
        rows.append((line, {c: v.strip() for c, v in zip(header, fields) if c}))
    return table, columns, rows, rejected


def leaves_folder(name: str) -> bool:
    """Whether ``RAW/<name>.npy`` lies outside the raw folder, judged on the name alone (an
    absolute path, a drive, or more ``..`` than folders before them; a backslash counts as the
    separator it is on Windows). Symbolic links inside the folder are the user's to make."""
    if PureWindowsPath(name).drive:
        return True
    relative = PurePosixPath(name.replace("\\", "/") + ".npy")
    if relative.is_absolute():
        return True
    depth = 0
    for part in relative.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a ``.npy`` file declares, checked against the file's size: a corrupt
    header that claims a huge array is refused here, before anything is allocated."""
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):  # 3.0 holds only structured (non-numeric) arrays
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                    np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
            offset = f.tell()
    except OSError as err:
        raise SampleError(path, f"cannot be read ({err.strerror or err})") from None
    except NPY_HEADER_ERRORS as err:
        raise SampleError(path, f"not a readable .npy array ({err})") from None
    if any(n < 0 for n in shape):
        raise SampleError(path, f"the .npy header declares a negative shape {shape}")
    needed = dtype.itemsize
    for n in shape:
        needed *= n  # Python integers: no overflow, however large the shape claimed
    held = path.stat().st_size - offset
    if needed > held:
        raise SampleError(path, f"truncated: the .npy header declares shape {shape} of {dtype} "
                                f"({needed} bytes), the file holds {held} bytes of data")
    return shape, dtype


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
