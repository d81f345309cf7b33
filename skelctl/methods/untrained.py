"""The untrained baseline: freshly initialised encoders, seeded, that every evaluation is compared
with (``method: untrained`` in a run entry; ``random``, its name before, is accepted with a
warning)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from skelctl.methods.base import EncoderFactory, Method, Phase, encoder_names
from skelctl.skeletons import Layout


@dataclass
class UntrainedOptions:
    pass


class Untrained(Method):
    title = "untrained"  # its name in the tables
    Options = UntrainedOptions
    multi_view = None
    several_encoders = True  # the baseline of a run that trains several kinds (ISC)

    def __init__(self, streams: tuple[str, ...], layout: Layout,
                 build_encoder: EncoderFactory, options: UntrainedOptions):
        super().__init__(streams, layout, build_encoder, options)
        kinds = build_encoder.kinds
        names = encoder_names(self.streams, kinds)
        built = [build_encoder(kind) for _ in self.streams for kind in kinds]
        # a module's name has no dot: joint.agcn is held as joint_agcn
        self.names = {name.replace(".", "_"): name for name in names}
        self.encoder = nn.ModuleDict(dict(zip(self.names, built)))

    def encoders(self) -> dict[str, nn.Module]:
        return {self.names[key]: encoder for key, encoder in self.encoder.items()}

    def phases(self, *args: object, **kwargs: object) -> list[Phase]:
        return []  # nothing to train

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        raise RuntimeError("an untrained baseline has no training step")
