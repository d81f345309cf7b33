"""parse: a raw dataset folder to one HDF5 store of every tracked body of every sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skelctl.data.formats import get_format
from skelctl.data.formats.base import META_INT_FIELDS, DatasetFormat, SampleError
from skelctl.data.store import SPLIT_PREFIX, StoreWriter, to_ragged
from skelctl.parallel import chunks, map_chunks, progress
from stages import paths
from stages.common import StageError, check_on_error, write_json_atomic, write_text_atomic

FILES_PER_TASK = 32


def read_items(fmt: DatasetFormat, items: list[Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Parse a chunk of raw items (runs in a worker): samples as store columns, plus rejections."""
    samples, rejected = [], []
    for item in items:
        try:
            samples.extend(fmt.read(item))
        except SampleError as err:
            rejected.append((err.path, err.problem))
        except OSError as err:
            rejected.append((str(err.filename or item), f"cannot read: {err.strerror or err}"))
    meta = {"name": np.array([s.name for s in samples], dtype=object),
            "source": np.array([s.source for s in samples], dtype=object),
            **{f: np.array([getattr(s, f) for s in samples], dtype=np.int64)
               for f in META_INT_FIELDS},
            "n_tracks": np.array([s.bodies.shape[0] for s in samples], dtype=np.int64),
            "n_frames": np.array([s.bodies.shape[1] for s in samples], dtype=np.int64)}
    # a sample's tracks are stored as (K * T, V, 3) rows; n_tracks and n_frames reshape them
    sequences = to_ragged([s.bodies.reshape(-1, *s.bodies.shape[2:]) for s in samples])
    return {"meta": meta, "sequences": sequences}, rejected


def run(dataset: str, raw_dir: Path, data_dir: Path, jobs: int = 1, on_error: str = "skip",
        layout: str = "auto") -> dict[str, Any]:
    """Parse ``raw_dir``; write the parsed store, a JSON report and the rejected-files list."""
    check_on_error(on_error)
    fmt = get_format(dataset, layout)
    inventory = fmt.inventory(Path(raw_dir))
    if on_error == "fail" and inventory.rejected:
        path, problem = inventory.rejected[0]
        raise StageError(f"{path}: {problem}")
    rejected = list(inventory.rejected)
    out = paths.parsed(data_dir, dataset)
    attrs = {"dataset": dataset, "layout": fmt.layout.name, "num_classes": fmt.num_classes,
             "max_bodies": fmt.max_bodies, "protocols": list(fmt.protocols),
             "raw_dir": str(raw_dir)}
    items = inventory.items
    tasks = [(fmt, items[a:b]) for a, b in chunks(len(items), FILES_PER_TASK)]
    samples = 0
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
                writer.append(meta, sequences=chunk["sequences"])
                samples += len(meta["name"])
            bar.update(len(task_items))
        if samples == 0:
            raise StageError(f"{raw_dir}: no sample could be read ({len(rejected)} files rejected"
                             + (f"; first: {rejected[0][0]}: {rejected[0][1]}" if rejected else "")
                             + ")")
        report = {"dataset": dataset,
                  "files": len(items) + len(inventory.rejected) + sum(inventory.excluded.values()),
                  "samples": samples, "rejected_files": len(rejected),
                  "excluded": inventory.excluded}
        writer.close(report)
    write_text_atomic(paths.rejected(data_dir, dataset),
                      "file\tproblem\n" + "".join(f"{p}\t{why}\n" for p, why in rejected))
    write_json_atomic(paths.parse_report(data_dir, dataset), report)
    return {**report, "rejected": rejected, "output": str(out)}

