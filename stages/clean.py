"""clean: choose at most ``max_bodies`` bodies per sample and drop invalid frames.

The output keeps variable-length sequences (no normalisation or resampling yet: the views stage
applies those per variant, so one cleaned store serves every (frames, normalisation) pair).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skelctl.data.bodies import DROP_REASONS, Denoising, choose_bodies, take_bodies
from skelctl.data.clean import lengths_of, valid_frames
from skelctl.data.joint_order import check_joint_order, sample_rows
from skelctl.data.store import Store, StoreWriter, to_ragged
from skelctl.parallel import chunks, map_chunks, progress
from skelctl.stages import paths
from skelctl.stages.common import (Result, StageError, check_dataset, read_store, source_of,
                           write_json_atomic)

SAMPLES_PER_TASK = 64


def clean_range(parsed: Store, start: int, stop: int, max_bodies: int,
                denoising: Denoising) -> dict[str, Any]:
    """Clean samples ``start..stop-1`` of a parsed store (runs in a worker)."""
    meta = parsed.meta(["n_tracks", "n_frames"], slice(start, stop))
    rows, row_offsets = parsed.sequences(start, stop)
    # per-joint scores, where the data have them, take the bodies and frames the tracks take
    score_rows = parsed.sequence_scores(start, stop) if parsed.has_scores else None
    chosen, chosen_scores = [], []
    dropped_bodies = dict.fromkeys(DROP_REASONS, 0)
    for k, (a, b) in enumerate(zip(row_offsets[:-1], row_offsets[1:])):
        shape = (meta["n_tracks"][k], meta["n_frames"][k])
        tracks = rows[a:b].reshape(*shape, *rows.shape[1:])
        picked, dropped = choose_bodies(tracks, max_bodies, denoising)
        for reason, count in dropped.items():
            dropped_bodies[reason] += count
        chosen.append(take_bodies(tracks, picked, max_bodies).transpose(1, 3, 2, 0))  # (T, C, V, M)
        if score_rows is not None:
            scores = score_rows[a:b].reshape(*shape, score_rows.shape[1])
            chosen_scores.append(take_bodies(scores, picked, max_bodies).transpose(1, 2, 0))
    frames, offsets = to_ragged(chosen)
    valid, offsets = valid_frames(frames, offsets)
    frames = frames[valid]
    scores = np.concatenate(chosen_scores)[valid] if score_rows is not None else None  # (F, V, M)
    lengths = lengths_of(offsets)
    kept = np.flatnonzero(lengths > 0)  # a sample with no valid frame is dropped
    offsets = np.concatenate([[0], np.cumsum(lengths[kept])]).astype(np.int64)
    bodies_present = np.logical_or.reduceat(frames.any(axis=(1, 2)), offsets[:-1], axis=0) \
        if len(kept) else np.zeros((0, max_bodies), dtype=bool)
    return {"kept": kept, "frames": frames, "offsets": offsets, "scores": scores,
            "n_bodies": bodies_present.sum(axis=1).astype(np.int64),
            "dropped_bodies": dropped_bodies,
            "dropped_frames": int(meta["n_frames"].sum() - len(frames))}


def run(dataset: str, data_dir: Path, max_bodies: int = 2, denoising: Denoising = Denoising(),
        jobs: int = 1) -> dict[str, Any]:
    check_dataset(paths.parsed(data_dir, dataset).parent, "clean")
    parsed = read_store(paths.parsed(data_dir, dataset),
                        f"`skelctl parse {source_of(dataset)} --raw RAW_FOLDER` (or `skelctl "
                        f"prepare`, which runs parse, clean and views)")
    max_bodies = min(max_bodies, int(parsed.attr("max_bodies")))
    n = len(parsed)
    attrs = {k: parsed.attr(k) for k in ("dataset", "layout", "skeleton", "num_classes",
                                          "protocols")}
    attrs["max_bodies"] = max_bodies
    attrs["params"] = {"max_bodies": max_bodies, **denoising.__dict__}
    tasks = [(parsed, a, b, max_bodies, denoising) for a, b in chunks(n, SAMPLES_PER_TASK)]
    totals = {"dropped_bodies": dict.fromkeys(DROP_REASONS, 0), "dropped_frames": 0,
              "samples_without_valid_frames": []}
    out = paths.cleaned(data_dir, dataset)
    all_meta = parsed.meta()  # one read: a few hundred bytes per sample
    checked = set(sample_rows(n).tolist())  # the sequences the joint-order check looks at
    check_frames: list[np.ndarray] = []
    with StoreWriter(out, attrs) as writer, progress(n, f"clean {dataset}", "sample") as bar:
        for (_, start, stop, *_), result in zip(tasks, map_chunks(clean_range, tasks, jobs)):
            meta = {k: v[start:stop] for k, v in all_meta.items()}
            kept = result["kept"]
            totals["samples_without_valid_frames"] += np.delete(meta["name"], kept).tolist()
            meta = {k: v[kept] for k, v in meta.items() if k != "n_tracks"}
            meta["n_frames"] = lengths_of(result["offsets"])
            meta["n_bodies"] = result["n_bodies"]
            writer.append(meta, sequences=(result["frames"], result["offsets"]),
                          sequence_scores=result["scores"])
            offsets = result["offsets"]
            check_frames += [result["frames"][offsets[k]:offsets[k + 1]]
                             for k, i in enumerate(kept) if start + i in checked]
            for reason, count in result["dropped_bodies"].items():
                totals["dropped_bodies"][reason] += count
            totals["dropped_frames"] += result["dropped_frames"]
            bar.update(stop - start)
        if writer.count == 0:
            raise StageError(f"{paths.parsed(data_dir, dataset)}: no sample has a valid frame")
        layout = parsed.layout()
        joint_order = check_joint_order(*to_ragged(check_frames), layout)
        report = {"dataset": dataset, "samples": writer.count, **totals,
                  "joint_order": joint_order.to_dict() if joint_order else None,
                  "joint_order_message": joint_order.message(layout.name) if joint_order else
                  f"layout {layout.name} has no bones: joint order not checked"}
        writer.close(report)
    write_json_atomic(paths.clean_report(data_dir, dataset), report)
    return Result(report, {"stores": [out], "reports": [paths.clean_report(data_dir, dataset)]})
