"""parse: a raw dataset folder to one HDF5 store of every tracked body of every sample."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from skelctl.data.formats import DATASETS, FORMATS, ImportOptions, get_format
from skelctl.data.formats.base import DatasetError, read_items
from skelctl.data.store import SPLIT_PREFIX, StoreWriter
from skelctl.keys import closest, unknown_name
from skelctl.parallel import chunks, map_chunks, progress
from skelctl.skeletons import layout_from_spec
from skelctl.stages import paths
from skelctl.atomic import write_text
from skelctl.stages.common import ParamsError, Result, StageError, check_on_error, write_json_atomic
from skelctl.stages.params import read_params

FILES_PER_TASK = 32
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def import_settings(dataset: str, params: Path | None, name: str | None = None,
                    layout: str | None = None, protocols: dict[str, Any] | None = None,
                    labels_from: int | None = None) -> tuple[str, str, ImportOptions]:
    """``(format, dataset name, options)`` for ``dataset``: a format's name, or a dataset that
    the params' ``datasets`` section lists (``format``, ``layout``, ``protocols``,
    ``labels_from``); the arguments given override the entry."""
    # the entries' keys and types are checked as the file is read (stages/sections.py)
    listed = read_params(params, runs=False).get("datasets") or {}
    entry = listed.get(dataset)
    where = f"{params}: datasets.{dataset}" if entry is not None else dataset
    if entry is None:
        if dataset not in DATASETS:
            raise ParamsError(f"unknown dataset {dataset!r}{closest(dataset, [*DATASETS, *listed])}"
                              f": not a format ({', '.join(DATASETS)})"
                              + (f" nor listed in the 'datasets' of {params}" if params else
                                 " (a dataset of your own is listed in a params file's 'datasets'"
                                 ": --params FILE)"))
        entry = {"format": dataset}
    format_name = entry.get("format", "generic")
    if format_name not in DATASETS:
        raise ParamsError(unknown_name("format", format_name, DATASETS, f"{where}.format"))
    layout = layout or entry.get("layout") or "auto"
    if isinstance(layout, dict):  # a layout file's content, inline
        layout = layout_from_spec(layout, f"{where}: layout", default_name=dataset)
    try:
        options = ImportOptions(
            layout=layout,
            protocols={**(entry.get("protocols") or {}), **(protocols or {})},
            labels_from=labels_from if labels_from is not None else entry.get("labels_from"))
    except DatasetError as err:
        raise StageError(f"{where}: {err}") from None
    return format_name, name or dataset, options


def describe(report: dict[str, Any]) -> str:
    """The layout, joint and class counts of a parse report, in words."""
    empty = report.get("empty_classes") or []
    listed = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
    return (f"layout {report['layout']} ({report['joints']} joints, {report['dims']}D), "
            f"{report['classes']} classes"
            + (f" of which {len(empty)} empty (no sample): {listed}" if empty else ""))


def run(dataset: str, raw_dir: Path, data_dir: Path, jobs: int = 1, on_error: str = "skip",
        format_name: str | None = None, options: ImportOptions = ImportOptions()
        ) -> dict[str, Any]:
    """Parse ``raw_dir`` in format ``format_name`` (by default the dataset's name) into the
    dataset ``dataset``; write the parsed store, a JSON report and the rejected-files list."""
    check_on_error(on_error)
    format_name = format_name or dataset
    if not DATASET_NAME.fullmatch(dataset):
        raise StageError(f"dataset name {dataset!r}: use letters, digits, '-' and '_'")
    if format_name == "generic" and dataset in FORMATS:
        raise StageError(f"name your own dataset something other than {dataset!r}, which is a "
                         f"dataset format ({', '.join(FORMATS)})")
    fmt = get_format(format_name, options)
    inventory = fmt.inventory(Path(raw_dir))
    if on_error == "fail" and inventory.rejected:
        path, problem = inventory.rejected[0]
        raise StageError(f"{path}: {problem}")
    rejected = list(inventory.rejected)
    out = paths.parsed(data_dir, dataset)
    attrs = {"dataset": dataset, "format": format_name, "layout": fmt.layout.name,
             "skeleton": fmt.layout.to_dict(), "num_classes": fmt.num_classes,
             "max_bodies": fmt.max_bodies, "protocols": list(fmt.protocols),
             "raw_dir": str(raw_dir)}
    items = inventory.items
    tasks = [(fmt, items[a:b]) for a, b in chunks(len(items), FILES_PER_TASK)]
    samples, labels = 0, set()
    with StoreWriter(out, attrs) as writer, progress(len(items), f"parse {dataset}", "file") as bar:
        for (chunk, chunk_rejected), (_, task_items) in zip(map_chunks(read_items, tasks, jobs),
                                                             tasks):
            if on_error == "fail" and chunk_rejected:
                path, problem = chunk_rejected[0]
                raise StageError(f"{path}: {problem}")
            rejected.extend(chunk_rejected)
            meta = chunk["meta"]
            if len(meta["name"]):
                for protocol, code in fmt.splits(meta, Path(raw_dir)).items():
                    meta[SPLIT_PREFIX + protocol] = code
                writer.append(meta, sequences=chunk["sequences"],
                              sequence_scores=chunk["scores"])
                samples += len(meta["name"])
                labels.update(meta["label"].tolist())
            bar.update(len(task_items))
        if samples == 0:
            raise StageError(f"{raw_dir}: no sample could be read ({len(rejected)} files rejected"
                             + (f"; first: {rejected[0][0]}: {rejected[0][1]}" if rejected else "")
                             + ")")
        report = {"dataset": dataset, "format": format_name, "layout": fmt.layout.name,
                  "joints": fmt.layout.num_joints, "dims": fmt.layout.dims,
                  "classes": fmt.num_classes,
                  "empty_classes": sorted(set(range(fmt.num_classes)) - labels),
                  "protocols": list(fmt.protocols),
                  "files": len(items) + len(inventory.rejected) + sum(inventory.excluded.values()),
                  "samples": samples, "rejected_files": len(rejected),
                  "excluded": inventory.excluded,
                  **({"notes": inventory.notes} if inventory.notes else {})}
        writer.close(report)
    write_text(paths.rejected(data_dir, dataset),
                      "file\tproblem\n" + "".join(f"{p}\t{why}\n" for p, why in rejected))
    write_json_atomic(paths.parse_report(data_dir, dataset), report)
    return Result({**report, "rejected": rejected, "output": str(out)},
                  {"stores": [out], "reports": [paths.parse_report(data_dir, dataset),
                                                paths.rejected(data_dir, dataset)]})

