"""export: a store written in a reference repository's layout, so that the authors' scripts run on
exactly our data (and ``skelctl prepare crossclr|isc|pyskl|ctrgcn`` reads it back).

``--to crossclr``  OUT/<protocol>/{train,val}_position.npy: the store's joint view, (N, C, T, V, M)
                   float32, as CrosSCLR's and AimCLR's feeders read it; {train,val}_label.pkl:
                   the pickled pair (sample names, labels). Needs a views store.
``--to isc``       OUT/<protocol>/{train,val}_data_joint.npy: the store's variable-length
                   sequences, (N, C, 300, V, M) float32, each repeated from its start up to 300
                   frames as 2s-AGCN's ``pre_normalization`` pads (longer ones cut at 300);
                   {train,val}_num_frame.npy (the real frames of each row); the label files.
``--to pyskl``     OUT/<dataset>_<store>.pkl: ``{'split': {'<protocol>_train': [names],
                   '<protocol>_val': [...]}, 'annotations': [{'frame_dir', 'label', 'keypoint'
                   (M, T, V, C) float32, 'total_frames'}]}`` from the variable-length sequences
                   (bodies absent throughout left out), and ``keypoint_score`` (M, T, V)
                   float32 when the store has per-joint scores.
``--to ctrgcn``    OUT/<file>.npz, one per protocol, named as CTR-GCN names it (NTU60_CS.npz...,
                   :func:`skelctl.data.formats.ctrgcn.file_name`): ``x_train``
                   (N, 300, M V C) float32, the variable-length sequences zero-padded to 300
                   frames (longer ones cut at 300), each frame body by body, joint by joint,
                   x y z; ``y_train`` (N, classes) one-hot; ``x_test`` and ``y_test`` from val.

A views store (``processed/<dataset>/<variant>.h5``) exports its variant: its normalisation and,
for crossclr, its frame count; for isc, pyskl and ctrgcn a cleaned store
(``interim/<dataset>/clean.h5``, coordinates as recorded) serves too. Each protocol's train and val
samples are written; a sample in no protocol has no place in the crossclr, isc and ctrgcn layouts
and is left out (counted). Every file is written under a partial name and all are renamed into
place together at the end, so an interrupted export leaves the previous files (or none), never a
mix.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from skelctl.data.formats import crossclr, ctrgcn, isc, pyskl
from skelctl.lock import exclusive
from skelctl.stages.common import StageError

TARGETS = ("crossclr", "isc", "pyskl", "ctrgcn")
BLOCK = 256  # samples read from the store at a time: memory is a block, not the dataset


def open_source(path: Path, target: str) -> Any:
    """The store to export, checked to hold what ``target`` needs."""
    from skelctl.data.store import Store

    if target not in TARGETS:
        raise StageError(f"--to must be one of {', '.join(TARGETS)}, not {target!r}")
    store = Store(path)
    if store.attr("format") is not None:
        raise StageError(f"{path}: a parsed store holds every raw track; export a views store "
                         f"(processed/<dataset>/<variant>.h5) or, for isc, pyskl and ctrgcn, a "
                         f"cleaned one (interim/<dataset>/clean.h5)")
    if target == "crossclr" and "joint" not in store.views:
        raise StageError(f"{path}: no joint view: the crossclr layout holds fixed-length joint "
                         f"arrays; export a views store (processed/<dataset>/<variant>.h5) "
                         f"written with the joint view")
    if target != "crossclr" and "sequences" not in store.file:
        raise StageError(f"{path}: holds no variable-length sequences, which the {target} "
                         f"layout is written from")
    if target != "pyskl" and not store.protocols:
        raise StageError(f"{path}: the store has no protocol, and the {target} layout is one "
                         f"folder of train and val arrays per protocol; export --to pyskl, "
                         f"whose annotations need no split")
    return store


def joint_blocks(store: Any, indices: np.ndarray) -> Iterator[np.ndarray]:
    """The joint view's rows ``indices`` (ascending), in order, a block of samples at a time."""
    view = store.view("joint")
    for start in range(0, len(store), BLOCK):
        hit = indices[(indices >= start) & (indices < start + BLOCK)]
        if hit.size:
            yield view[start:start + BLOCK][hit - start]


def padded_blocks(store: Any, indices: np.ndarray, frames: int,
                  pad: Callable[..., np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """The sequences ``indices`` (ascending) loop-padded to ``frames`` (or padded by ``pad``,
    which takes the arguments of :func:`isc.loop_pad`), a block at a time."""
    for start in range(0, len(store), BLOCK):
        hit = indices[(indices >= start) & (indices < start + BLOCK)]
        if hit.size:
            data, offsets = store.sequences(start, min(start + BLOCK, len(store)))
            local = hit - start
            yield (pad or isc.loop_pad)(data, offsets[local], offsets[local + 1] - offsets[local],
                                        frames)


def annotations(store: Any, names: np.ndarray, labels: np.ndarray) -> Iterator[dict[str, Any]]:
    """Every sample's pyskl annotation, in store order (with ``keypoint_score`` where the store
    has scores)."""
    for start in range(0, len(store), BLOCK):
        stop = min(start + BLOCK, len(store))
        data, offsets = store.sequences(start, stop)
        scores = store.sequence_scores(start, stop) if store.has_scores else None
        for k in range(stop - start):
            rows = slice(offsets[k], offsets[k + 1])
            yield pyskl.annotation(names[start + k], labels[start + k], data[rows],
                                   None if scores is None else scores[rows])


def run(store_path: Path, target: str, out_dir: Path) -> dict[str, Any]:
    """Write the store at ``store_path`` into ``out_dir`` in the layout ``target``."""
    store_path, out_dir = Path(store_path), Path(out_dir)
    store = open_source(store_path, target)
    meta = store.meta(["name", "label"])
    names, labels = meta["name"], meta["label"]
    protocols = store.protocols
    splits = {p: {part: np.sort(store.split(f"{p}/{part}")) for part in ("train", "val")}
              for p in protocols}
    in_some = np.zeros(len(store), dtype=bool)
    for parts in splits.values():
        for indices in parts.values():
            in_some[indices] = True
    result: dict[str, Any] = {"to": target, "store": str(store_path), "output": str(out_dir),
                              "samples": len(store),
                              "splits": {p: {part: int(len(i)) for part, i in parts.items()}
                                         for p, parts in splits.items()}}
    files: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir), contextlib.ExitStack() as stack:
        if target == "pyskl":
            split = {f"{p}_{part}": names[i].tolist() for p, parts in splits.items()
                     for part, i in parts.items()}
            path = out_dir / f"{store.attr('dataset')}_{store_path.stem}.pkl"
            files.append(pyskl.write_annotations(path, split, annotations(store, names, labels)))
        elif target == "ctrgcn":
            lengths = np.diff(store.offsets)
            result["truncated"] = int((lengths[in_some] > ctrgcn.FRAMES).sum())
            columns = int(np.prod(store.file["sequences/data"].shape[1:]))  # C x V x M
            for p, parts in splits.items():
                try:
                    path = out_dir / ctrgcn.file_name(str(store.attr("dataset")), p)
                except ValueError as err:
                    raise StageError(f"{store_path}: {err}") from None
                files.append(ctrgcn.write_file(
                    stack, path, {ours: (labels[parts[part]], padded_blocks(
                        store, parts[part], ctrgcn.FRAMES, ctrgcn.zero_pad))
                        for part, ours in (("train", "train"), ("val", "test"))},
                    int(store.attr("num_classes")), columns))
            result["left_out"] = int((~in_some).sum())
        else:
            if target == "isc":
                lengths = np.diff(store.offsets)
                result["truncated"] = int((lengths[in_some] > isc.FRAMES).sum())
            for p, parts in splits.items():
                for part, indices in parts.items():
                    part_names, part_labels = names[indices].tolist(), labels[indices].tolist()
                    if target == "crossclr":
                        files += crossclr.write_part(
                            stack, out_dir / p, part, part_names, part_labels,
                            store.view("joint").shape[1:], joint_blocks(store, indices))
                    else:
                        data_shape = store.file["sequences/data"].shape[1:]  # (C, V, M)
                        files += isc.write_part(
                            stack, out_dir / p, part, part_names, part_labels,
                            lengths[indices], data_shape,
                            padded_blocks(store, indices, isc.FRAMES))
            result["left_out"] = int((~in_some).sum())
        # leaving the stack renames every file into place
    result["files"] = [str(f) for f in files]
    return result


def summary(result: dict[str, Any]) -> str:
    """The end-of-export lines for the terminal."""
    written = result["samples"] - result.get("left_out", 0)
    lines = [f"{result['store']}: {written} samples written in the {result['to']} "
             f"layout to {result['output']} ({len(result['files'])} files)"]
    for protocol, parts in result["splits"].items():
        lines.append(f"  {protocol}: train {parts['train']}, val {parts['val']}")
    if result.get("left_out"):
        lines.append(f"  left out (in no protocol): {result['left_out']}")
    if result.get("truncated"):
        frames = ctrgcn.FRAMES if result["to"] == "ctrgcn" else isc.FRAMES
        lines.append(f"  sequences longer than {frames} frames, cut to their first "
                     f"{frames}: {result['truncated']}")
    return "\n".join(lines)
