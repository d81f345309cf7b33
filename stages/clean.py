"""clean: choose at most ``max_bodies`` bodies per sample and drop invalid frames.

The output keeps variable-length sequences (no normalisation or resampling yet: the views stage
applies those per variant, so one cleaned store serves every (frames, normalisation) pair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skelctl.data.bodies import DROP_REASONS, Denoising, select_bodies
from skelctl.data.clean import drop_invalid_frames
from skelctl.data.store import Store, StoreWriter
from skelctl.parallel import chunks, map_chunks, progress
from stages import paths
from stages.common import StageError, write_json_atomic

SAMPLES_PER_TASK = 128


def clean_range(parsed: Store, start: int, stop: int, max_bodies: int,
                denoising: Denoising) -> dict[str, Any]:
    """Clean samples ``start..stop-1`` of a parsed store (runs in a worker)."""
    meta = parsed.meta(["n_tracks", "n_frames"], slice(start, stop))
    kept, sequences, dropped_frames = [], [], 0
    dropped_bodies = dict.fromkeys(DROP_REASONS, 0)
    for k, rows in enumerate(parsed.sequences(start, stop)):
        tracks = rows.reshape(meta["n_tracks"][k], meta["n_frames"][k], *rows.shape[1:])
        bodies, dropped = select_bodies(tracks, max_bodies, denoising)
        for reason, count in dropped.items():
            dropped_bodies[reason] += count
        valid = drop_invalid_frames(bodies)
        dropped_frames += bodies.shape[1] - valid.shape[1]
        if valid.shape[1] == 0:
            continue
        kept.append(k)
        sequences.append(valid.transpose(1, 3, 2, 0))  # (L, C, V, M)
    return {"kept": np.asarray(kept, dtype=np.int64), "sequences": sequences,
            "dropped_bodies": dropped_bodies, "dropped_frames": dropped_frames}


def run(dataset: str, data_dir: Path, max_bodies: int = 2, denoising: Denoising = Denoising(),
        jobs: int = 1) -> dict[str, Any]:
    parsed = Store(paths.parsed(data_dir, dataset))
    max_bodies = min(max_bodies, int(parsed.attr("max_bodies")))
    n = len(parsed)
    attrs = {k: parsed.attr(k) for k in ("dataset", "layout", "num_classes", "protocols")}
    attrs["max_bodies"] = max_bodies
    attrs["params"] = {"max_bodies": max_bodies, **denoising.__dict__}
    tasks = [(parsed, a, b, max_bodies, denoising) for a, b in chunks(n, SAMPLES_PER_TASK)]
    totals = {"dropped_bodies": dict.fromkeys(DROP_REASONS, 0), "dropped_frames": 0,
              "samples_without_valid_frames": []}
    out = paths.cleaned(data_dir, dataset)
    with StoreWriter(out, attrs) as writer, progress(n, f"clean {dataset}", "sample") as bar:
        for (_, start, stop, *_), result in zip(tasks, map_chunks(clean_range, tasks, jobs)):
            meta = parsed.meta(rows=slice(start, stop))
            kept = result["kept"]
            gone = np.setdiff1d(np.arange(stop - start), kept)
            totals["samples_without_valid_frames"] += meta["name"][gone].tolist()
            meta = {k: v[kept] for k, v in meta.items() if k not in ("n_tracks",)}
            meta["n_frames"] = np.array([len(s) for s in result["sequences"]], dtype=np.int64)
            meta["n_bodies"] = np.array([np.count_nonzero(s.any(axis=(0, 1, 2)))
                                         for s in result["sequences"]], dtype=np.int64)
            writer.append(meta, sequences=result["sequences"])
            for reason, count in result["dropped_bodies"].items():
                totals["dropped_bodies"][reason] += count
            totals["dropped_frames"] += result["dropped_frames"]
            bar.update(stop - start)
        if writer.count == 0:
            raise StageError(f"{paths.parsed(data_dir, dataset)}: no sample has a valid frame")
        report = {"dataset": dataset, "samples": writer.count, **totals}
        writer.close(report)
    write_json_atomic(paths.clean_report(data_dir, dataset), report)
    return report
