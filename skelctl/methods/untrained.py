"""The untrained baseline: freshly initialised encoders, seeded, that every evaluation is compared
with (``method: untrained`` in a run entry; ``random``, its name before, is accepted with a
warning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from skelctl.methods.base import Method, Phase
from skelctl.skeletons import Layout


@dataclass
class UntrainedOptions:
    pass


class Untrained(Method):
    title = "untrained"  # its name in the tables
    Options = UntrainedOptions
    multi_view = None

    def __init__(self, streams: tuple[str, ...], layout: Layout,
                 build_encoder: Callable[[], nn.Module], options: UntrainedOptions):
        super().__init__(streams, layout, build_encoder, options)
        self.encoder = nn.ModuleDict({view: build_encoder() for view in self.streams})

    def encoders(self) -> dict[str, nn.Module]:
        return dict(self.encoder.items())

    def phases(self, *args: object, **kwargs: object) -> list[Phase]:
        return []  # nothing to train

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        raise RuntimeError("an untrained baseline has no training step")
