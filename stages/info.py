"""What a file holds: a store (dataset, layout, variant, views, per-joint scores, splits, classes,
the params that made it, the toolkit version) or an encoder file (encoder, options, layout, view,
parameter count, provenance), as a mapping for ``--json`` and as text for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stages.common import StageError

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
    views = {name: list(store.view(name).shape[1:]) for name in store.views}
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
        "views": views, "scores": scores,
        "variable_length_sequences": "sequences" in store.file,
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


def describe(path: Path) -> dict[str, Any]:
    """What ``path`` holds; a file that is neither a store nor an encoder file is an error."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == HDF5_SIGNATURE:
        return describe_store(path)
    if head[:2] == b"PK":  # torch's zip container
        return describe_encoder(path)
    raise StageError(f"{path}: neither a skelctl store (HDF5) nor an encoder file")


def as_plain(value: Any) -> Any:
    """HDF5 attributes come back as numpy scalars; JSON wants Python's."""
    return value.item() if isinstance(value, np.generic) else value


def render(described: dict[str, Any]) -> str:
    """``key: value`` lines, nested mappings indented, for the terminal."""
    lines = []

    def add(key: str, value: Any, indent: int) -> None:
        pad = "  " * indent
        if isinstance(value, dict) and value and key not in ("options",):
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
