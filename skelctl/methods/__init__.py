"""Self-supervised methods, by name. A method turns a batch of joint sequences into named losses
(``"loss"`` is the one to minimise) and exposes, per view, the encoder used downstream."""

from __future__ import annotations

from typing import Any

from torch import nn

from skelctl.augment import compose
from skelctl.methods.crosclr import CrosSCLR
from skelctl.methods.skeletonclr import SkeletonCLR
from skelctl.models import build_encoder
from skelctl.skeletons import Layout

METHODS: dict[str, type[nn.Module]] = {"skeletonclr": SkeletonCLR, "crosclr": CrosSCLR}


def build_method(name: str, views: tuple[str, ...], layout: Layout, num_persons: int,
                 encoder: str = "stgcn", encoder_options: dict[str, Any] | None = None,
                 augment: dict[str, dict[str, Any]] | None = None,
                 **options: Any) -> nn.Module:
    """A method with fresh encoders of the named kind for the given views."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name](
        tuple(views), layout,
        build_encoder=lambda: build_encoder(encoder, layout, num_persons,
                                            **(encoder_options or {})),
        augment=compose(augment or {}, layout), **options)
