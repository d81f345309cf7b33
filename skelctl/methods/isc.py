"""ISC: inter- and intra-skeleton contrast (Thoker et al., ACM MM 2021).

Each training sample's real frames (its variable-length sequence, not a fixed-length view) are
augmented twice by the spatio-temporal augmentation (Eq. 4: temporal crop-resize to 64 frames,
then shear or joint corruption); both copies are read by every representation the run trains,
one encoder kind each (``encoder: [bigru, agcn]`` in the run entry: the sequence, graph and
image representations are the ``bigru``, ``agcn`` and ``hcn`` encoders).

- One kind: intra-skeleton contrast, MoCo with InfoNCE (Eq. 5).
- Several kinds: inter-skeleton contrast (Eqs. 6-8), one MoCo per representation, crossed: a
  representation's query has the other representation's key as its positive and the other's
  queue as its negatives; each queue holds its own representation's keys. With three kinds (which
  the authors' code cannot run; the paper reports it in Table 6) each query is contrasted with
  each other representation and its two losses are averaged, so that every representation weighs
  as it does in a pair.

Settings follow the authors' code where the paper is silent: projectors Linear(d, d)-ReLU-
Linear(d, 128) with PyTorch's initialisation, momentum 0.999, temperature 0.07, a queue of
16,384 (the paper's NTU value; PKU-MMD I 8,192, II 2,048), the crop's 64-frame minimum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from skelctl.augment import AugmentChain, compose, isc_augmentations
from skelctl.data.views import compute_view
from skelctl.methods.base import EncoderFactory, Method, OptionsError, encoder_names
from skelctl.methods.losses import info_nce
from skelctl.methods.moco import ContrastOptions, gather_from_all_ranks, momentum_contrast
from skelctl.skeletons import Layout


@dataclass
class ISCOptions(ContrastOptions):
    queue_size: int = 16384
    augment: AugmentChain = field(default_factory=isc_augmentations)
    projector_init_std: float | None = None  # the authors' projectors keep PyTorch's init


class ISC(Method):
    title = "ISC"  # its name in the tables
    Options = ISCOptions
    several_encoders = True
    inputs: tuple[str, ...] = ()
    sequences = True

    def __init__(self, streams: tuple[str, ...], layout: Layout, build_encoder: EncoderFactory,
                 options: ISCOptions):
        super().__init__(streams, layout, build_encoder, options)
        self.augment = compose(options.augment, layout)
        kinds = build_encoder.kinds
        self.names = dict(zip(kinds, encoder_names(self.streams, kinds)))
        self.moco = nn.ModuleDict({kind: momentum_contrast(build_encoder(kind), options)
                                   for kind in kinds})
        # an encoder of a fixed length (HCN) must get the crop-resize's frame count
        frames = (options.augment.get("crop_resize") or {}).get("frames")
        for kind, moco in self.moco.items():
            needs = getattr(moco.encoder_q, "frames", None)
            if needs is not None and needs != frames:
                raise OptionsError(f"encoder {kind!r} reads {needs} frames, but the "
                                   f"augmentation's crop_resize gives {frames}: set "
                                   f"options.augment.crop_resize.frames to {needs}")

    def encoders(self) -> dict[str, nn.Module]:
        return {self.names[kind]: moco.encoder_q for kind, moco in self.moco.items()}

    def copy(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """An augmented copy of the batch's real sequences, as the run's stream."""
        joint = self.augment(batch["sequence"], generator, lengths=batch["length"])
        return compute_view(self.streams[0], joint, self.layout)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        x_q, x_k = self.copy(batch, generator), self.copy(batch, generator)
        queries, keys = {}, {}
        for kind, moco in self.moco.items():
            queries[kind] = moco.query(x_q)
            moco.momentum_update()
            keys[kind] = moco.key(x_k)
        temperature, losses = self.options.temperature, {}
        for kind, z in queries.items():
            others = [o for o in self.moco if o != kind] or [kind]
            terms = [info_nce((z * keys[o]).sum(dim=1), self.moco[o].similarities(z), temperature)
                     for o in others]
            name = "intra" if others == [kind] else "inter"
            losses[f"{name}_{kind}"] = sum(terms) / len(terms)
        for kind, moco in self.moco.items():
            moco.enqueue(gather_from_all_ranks(keys[kind]))
        return {"loss": sum(losses.values()), **{k: v.detach() for k, v in losses.items()}}
