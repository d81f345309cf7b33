"""Encoders, by the name params and the CLI use, and the self-describing encoder file.

Each encoder maps ``(N, C, T, V, M)`` to ``(N, out_dim)`` (``forward``) and also exposes its last
feature map before pooling (``features``; ``forward(x) == pool(features(x))``). Encoders are
parameterised by the joint layout, so every encoder works with every dataset.
"""

from __future__ import annotations

import inspect
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skelctl.atomic import replacing
from skelctl.keys import unknown_keys
from skelctl.keys import unknown_name
from skelctl.options import keyword_types
from skelctl.models.agcn import AGCN
from skelctl.models.hcn import HCN
from skelctl.models.rnn import RecurrentEncoder
from skelctl.models.stgcn import STGCN
from skelctl.models.transformer import SkeletonTransformer
from skelctl.skeletons import Layout

ENCODER_FILE_FORMAT = "skelctl-encoder"
ENCODER_FILE_VERSION = 1


@dataclass(frozen=True)
class EncoderKind:
    """A registered encoder: its class and the configuration its name stands for (a run's
    ``encoder_options`` override it)."""

    cls: type[nn.Module]
    defaults: dict[str, Any]
    description: str

    def option_names(self) -> list[str]:
        return list(self.option_types())

    def option_types(self) -> dict[str, Any]:
        """The options (the constructor's keywords, less layout and persons) and their types."""
        return keyword_types(self.cls, skip=("layout", "num_persons"))

    def build(self, layout: Layout, num_persons: int, options: dict[str, Any]) -> nn.Module:
        takes_persons = "num_persons" in inspect.signature(self.cls).parameters
        return self.cls(layout, **({"num_persons": num_persons} if takes_persons else {}),
                        **{**self.defaults, **options})


# the one encoder registry, by the name a run gives in `encoder`
ENCODERS: dict[str, EncoderKind] = {
    "stgcn": EncoderKind(STGCN, {}, "CrosSCLR's ST-GCN: 10 blocks, 16 base channels, 256-d"),
    # the ISC authors' encoder as their code runs it, which gives the published numbers; the
    # paper describes a truly bidirectional GRU: direction "bidirectional" builds that one
    "bigru": EncoderKind(RecurrentEncoder, {
        "cell": "gru", "hidden": 1024, "layers": 3, "direction": "causal", "pooling": "last",
        "init": "xavier_weights"},
        "ISC/PCM3 BiGRU as the authors' code runs it: 3 layers, 1024 per direction, both "
        "directions reading forward in time (direction: bidirectional gives the paper's truly "
        "bidirectional GRU), the top layer's output at the last frame (2048-d); Xavier weights, "
        "default biases; 45.0 M parameters"),
    "agcn": EncoderKind(AGCN, {},
                        "ISC's graph encoder, the 2s-AGCN joint stream: 10 units 64-256, fixed "
                        "bone graph + learnable graph + attention, 256-d; 3.45 M parameters"),
    "hcn": EncoderKind(HCN, {},
                       "ISC's image encoder, HCN: point and motion branches, joints as channels, "
                       "bodies fused by maximum, no batch norm; exactly `frames` (64) frames in, "
                       "4096-d; 0.52 M parameters"),
    "gru": EncoderKind(RecurrentEncoder, {
        "cell": "gru", "hidden": 256, "layers": 2, "pooling": "mean", "dropout": 0.2,
        "packed": True},
        "CRRL GRU: 2 bidirectional layers of 256, dropout 0.2, temporal average pooling "
        "(512-d), over the real frames of variable-length input (packed)"),
    # CrosSCLR's LSTM variant is specified only as "following AS-CAL"; this is the configuration
    # used for it here
    "lstm": EncoderKind(RecurrentEncoder, {
        "cell": "lstm", "hidden": 256, "layers": 2, "pooling": "mean", "dropout": 0.2},
        "the CRRL configuration with LSTM cells"),
    "transformer": EncoderKind(SkeletonTransformer, {},
                               "MAMP's skeleton transformer: a token per joint per 4 frames of "
                               "120, 8 pre-norm blocks of 256, 8 heads, the mean token (256-d)"),
}


def encoder_option_names(name: str) -> list[str]:
    """The options an encoder accepts (its constructor's keywords, less layout and persons)."""
    return list(encoder_option_types(name))


def encoder_option_types(name: str) -> dict[str, Any]:
    """The options an encoder accepts and their types."""
    if name not in ENCODERS:
        raise ValueError(unknown_name("encoder", name, ENCODERS))
    return ENCODERS[name].option_types()


def build_encoder(name: str, layout: Layout, num_persons: int = 2, **options: Any) -> nn.Module:
    """A fresh encoder; ``encoder.spec`` records how it was built (for the encoder file)."""
    problem = unknown_keys(options, encoder_option_names(name), "option(s)")
    if problem:
        raise ValueError(f"encoder {name!r}: {problem}")
    encoder = ENCODERS[name].build(layout, num_persons, options)
    # the registry's defaults are written out, so a file keeps its meaning if they change
    encoder.spec = {"name": name, "options": {**ENCODERS[name].defaults, **options},
                    "num_persons": num_persons,
                    "layout": layout.to_dict()}
    return encoder


def save_encoder(path: Path, encoder: nn.Module, view: str,
                 provenance: dict[str, Any] | None = None) -> None:
    """Write ``encoder`` as a self-describing file: its name, options, layout, input view, weights
    and where it came from (``provenance``: run, split, variant, epochs ...). Atomic: the file is
    either absent or complete."""
    state = {"format": ENCODER_FILE_FORMAT, "version": ENCODER_FILE_VERSION, **encoder.spec,
             "view": view, "provenance": dict(provenance or {}),
             "weights": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}
    write_torch_file(state, path)


def write_torch_file(obj: Any, path: Path, previous: Path | None = None) -> None:
    """``torch.save`` atomically; with ``previous``, the file it replaces is moved there once the
    new one is complete. The bytes are made in memory and written as a plain file, so that a
    full disk is reported as one (torch's own writer hides the errno)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with replacing(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
        if previous is not None and path.exists():
            os.replace(path, previous)


def read_torch_file(path: Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """A file ``torch.save`` wrote, read with ``weights_only=True``: tensors, numbers, strings,
    None and dicts, lists and tuples of them; any other Python object is refused, since
    unpickling it could run code. A bad file raises ValueError in one line of ours naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: not a readable {what}: it holds Python objects other than "
                         f"tensors and plain values, which are refused (loading them could run "
                         f"code)") from None
    except Exception:  # noqa: BLE001 - torch's many corrupt-file errors get one message
        raise ValueError(f"{path}: not a readable {what} (truncated or corrupt)") from None


def load_encoder(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """An encoder file back as ``(encoder in eval mode, description)``; the description has
    ``name``, ``options``, ``layout`` (a Layout), ``num_persons``, ``view`` and ``provenance``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no encoder file")
    state = read_torch_file(path, "encoder file")
    if not isinstance(state, dict) or state.get("format") != ENCODER_FILE_FORMAT:
        raise ValueError(f"{path}: not a skelctl encoder file")
    if state.get("version") != ENCODER_FILE_VERSION:
        raise ValueError(f"{path}: encoder file version {state.get('version')}, this skelctl "
                         f"reads {ENCODER_FILE_VERSION}")
    layout = Layout.from_dict(state["layout"])
    encoder = build_encoder(state["name"], layout, state["num_persons"], **state["options"])
    encoder.load_state_dict(state["weights"])
    info = {k: state[k] for k in ("name", "options", "num_persons", "view", "provenance")}
    return encoder.eval(), {**info, "layout": layout}
