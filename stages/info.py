"""What a file holds: a store (dataset, layout, variant, views, per-joint scores, splits, classes,
the params that made it, the toolkit version), an encoder file (encoder, options, layout, view,
parameter count, provenance) or a training checkpoint (run, split, epoch reached of the total,
settings, the last losses), as a mapping for ``--json`` and as text for people.

Shapes leave out the file's first axis: a view's is per sample, ``[C, T, V, M]`` (the file's
dataset is ``(N, C, T, V, M)``), as is ``score``'s; the variable-length sequences' and their
scores' are per row, one frame of one sample (``[C, V, M]``; a parsed store's raw tracks
``[V, C]``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from skelctl.stages.common import StageError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def describe_store(path: Path) -> dict[str, Any]:
    from skelctl.data.store import Store

    store = Store(path)
    layout = store.layout()
    kind = ("views" if store.views else "parsed" if store.attr("format") is not None
            else "cleaned")
    labels = store.meta(["label"])["label"] if "meta" in store.file else np.zeros(0, int)
    splits = {protocol: {part: int(len(store.split(f"{protocol}/{part}")))
                         for part in ("train", "val")} for protocol in store.protocols}
    views = {name: list(store.view(name).shape[1:]) for name in store.views}  # per sample
    # per-joint detection scores (pyskl's 2D keypoints) are kept beside the views, not as one
    scores = {name: list(store.file[path].shape[1:]) for name, path in
              (("score", "scores/score"), ("sequences", "sequences/scores")) if path in store.file}
    described = {
        "file": str(path), "kind": f"{kind} store", "dataset": store.attr("dataset"),
        "variant": path.stem if kind == "views" else None,
        "layout": layout.name, "joints": layout.num_joints, "dims": layout.dims,
        "max_bodies": as_plain(store.attr("max_bodies")), "samples": len(store),
        "classes": as_plain(store.attr("num_classes")),
        "classes_present": int(len(np.unique(labels))),
        "views": views,
        # the views' frame axis: each sample's own frames, at most T, zero-padded after (upto,
        # stride), or every sample resampled to exactly T frames (the cleaned and parsed stores
        # have no frame axis of fixed size, so no such field)
        "variable_length": (as_plain(store.attr("variable_length"))
                            if kind == "views" else None),
        # the cleaned variable-length sequences every store keeps (crop-resize samples them),
        # per row: one frame of one sample
        "sequences": (list(store.file["sequences/data"].shape[1:])
                      if "sequences/data" in store.file else None),
        "scores": scores,
        "splits": splits, "params": store.attr("params"),
        "skelctl_version": as_plain(store.attr("skelctl_version")),
        "format_version": as_plain(store.attr("format_version")),
    }
    return {k: v for k, v in described.items() if v is not None}


def describe_encoder(path: Path) -> dict[str, Any]:
    from skelctl.models import load_encoder

    encoder, info = load_encoder(path)
    layout = info["layout"]
    provenance = dict(info["provenance"])
    return {"file": str(path), "kind": "encoder file", "encoder": info["name"],
            "options": info["options"], "layout": layout.name, "joints": layout.num_joints,
            "dims": layout.dims, "bodies": info["num_persons"], "view": info["view"],
            "feature_dim": int(getattr(encoder, "out_dim", 0)) or None,
            "parameters": int(sum(p.numel() for p in encoder.parameters())),
            "provenance": provenance}


def describe_checkpoint(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint (skelctl/train.py's ``fit``): the run and split, the epoch reached
    of the total, the settings it was made with (its identity) and the last epoch's losses."""
    from skelctl.train import CLIP_STATISTICS  # torch: loaded already, to read the checkpoint

    identity = dict(state.get("identity") or {})
    phases = identity.pop("phases", None) or []
    history = state.get("history") or []
    last = history[-1] if history else {}
    phase = state.get("phase")
    previous = path.stem.endswith(".previous")
    described = {
        "file": str(path),
        "kind": "previous training checkpoint" if previous else "training checkpoint",
        "newest": str(path.with_name(path.name.replace(".previous", ""))) if previous else None,
        "run": identity.pop("run", None), "split": identity.pop("split", None),
        "epoch": as_plain(state.get("epoch")),
        "epochs": sum(int(p.get("epochs", 0)) for p in phases) if phases else None,
        "phase": (f"{phases[phase].get('name', phase)} ({phase + 1} of {len(phases)})"
                  if isinstance(phase, int) and 0 <= phase < len(phases) else None),
        "train": identity.pop("train", None),
        # everything else that makes the run what it is: method, streams, variant, encoder,
        # options, the data file (a fine-tuning checkpoint: the encoder file it started from)
        "settings": {k: v for k, v in identity.items() if k != "start_digests"},
        "losses": {k: v for k, v in last.items()  # and the KNN figures
                   if k not in ("epoch", "lr", "phase", *CLIP_STATISTICS)} or None,
        "lr": last.get("lr"),
    }
    return {k: v for k, v in described.items() if v is not None}


def describe_torch_file(path: Path) -> dict[str, Any]:
    """An encoder file or a training checkpoint, read with ``weights_only=True``."""
    from skelctl.models import ENCODER_FILE_FORMAT, read_torch_file

    try:
        state = read_torch_file(path, "encoder file or training checkpoint")
    except ValueError as err:
        raise StageError(str(err)) from None
    if isinstance(state, dict) and state.get("format") == ENCODER_FILE_FORMAT:
        return describe_encoder(path)
    if isinstance(state, dict) and {"epoch", "identity", "history"} <= set(state):
        return describe_checkpoint(path, state)
    raise StageError(f"{path}: a torch file, but neither a skelctl encoder file nor a training "
                     f"checkpoint")


def describe(path: Path) -> dict[str, Any]:
    """What ``path`` holds; a file that is neither a store, an encoder file nor a training
    checkpoint is an error."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == HDF5_SIGNATURE:
        return describe_store(path)
    if head[:2] == b"PK":  # torch's zip container
        return describe_torch_file(path)
    raise StageError(f"{path}: neither a skelctl store (HDF5) nor an encoder file or training "
                     f"checkpoint")


def as_plain(value: Any) -> Any:
    """HDF5 attributes come back as numpy scalars; JSON wants Python's."""
    return value.item() if isinstance(value, np.generic) else value


# what a top-level field's value means, after its name in the text form (not in --json)
NOTES = {
    "views": "per sample: C, T, V, M",
    "sequences": "per row: C, V, M; the rows are every sample's frames, one after another",
    "losses": "the last epoch's",
}
PARSED_SEQUENCES = "per row: V, C; the rows are every tracked body's frames, one after another"


def render(described: dict[str, Any]) -> str:
    """``key: value`` lines, nested mappings indented, for the terminal."""
    lines = []
    described = dict(described)
    if "variable_length" in described:  # the one field that says what the frame axis holds
        frames = described.get("params", {}).get("frames", "T")
        described["variable_length"] = (
            f"{described['variable_length']} (each sample's own frames, at most {frames}, "
            f"zero-padded after; meta/n_frames counts them)" if described["variable_length"]
            else f"{described['variable_length']} (every sample resampled to {frames} frames)")
    if "epoch" in described and "epochs" in described and "kind" in described \
            and "checkpoint" in str(described["kind"]):
        described["epoch"] = f"{described['epoch']} of {described.pop('epochs')}"

    parsed = described.get("kind") == "parsed store"

    def add(key: str, value: Any, indent: int) -> None:
        pad = "  " * indent
        if indent == 0 and key in NOTES:
            key = f"{key} ({PARSED_SEQUENCES if parsed and key == 'sequences' else NOTES[key]})"
        if isinstance(value, dict) and value and not key.startswith("options"):
            lines.append(f"{pad}{key}:")
            for k, v in value.items():
                add(str(k), v, indent + 1)
        elif isinstance(value, (dict, list)):
            lines.append(f"{pad}{key}: {json.dumps(value)}")
        else:
            lines.append(f"{pad}{key}: {value:,}" if isinstance(value, int)
                         and not isinstance(value, bool) and key == "parameters"
                         else f"{pad}{key}: {value}")

    for key, value in described.items():
        add(key, value, 0)
    return "\n".join(lines)
