"""Encoders, by the name params and the CLI use. Each maps ``(N, C, T, V, M)`` to ``(N, out_dim)``
and is parameterised by the joint layout, so every encoder works with every dataset."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from skelctl.models.rnn import RecurrentEncoder
from skelctl.models.stgcn import STGCN
from skelctl.skeletons import Layout


def _bigru(layout: Layout, num_persons: int, **options: Any) -> nn.Module:
    """ISC/PCM3 BiGRU: 3 layers, 1024 per direction, final hidden states (2048-d)."""
    return RecurrentEncoder(layout, num_persons=num_persons, **{
        "cell": "gru", "hidden": 1024, "layers": 3, "pooling": "last", **options})


def _gru(layout: Layout, num_persons: int, **options: Any) -> nn.Module:
    """CRRL GRU: 2 bidirectional layers of 256, dropout 0.2, temporal average pooling (512-d)."""
    return RecurrentEncoder(layout, num_persons=num_persons, **{
        "cell": "gru", "hidden": 256, "layers": 2, "pooling": "mean", "dropout": 0.2,
        **options})


def _lstm(layout: Layout, num_persons: int, **options: Any) -> nn.Module:
    """LSTM encoder: the CRRL configuration with LSTM cells. CrosSCLR's LSTM variant is specified
    only as "following AS-CAL"; this is the configuration used for it here."""
    return RecurrentEncoder(layout, num_persons=num_persons, **{
        "cell": "lstm", "hidden": 256, "layers": 2, "pooling": "mean", "dropout": 0.2,
        **options})


def _stgcn(layout: Layout, num_persons: int, **options: Any) -> nn.Module:
    return STGCN(layout, **options)


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "stgcn": _stgcn, "bigru": _bigru, "gru": _gru, "lstm": _lstm,
}


def build_encoder(name: str, layout: Layout, num_persons: int = 2, **options: Any) -> nn.Module:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    return ENCODERS[name](layout, num_persons, **options)
