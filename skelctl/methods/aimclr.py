"""AimCLR (Guo et al., AAAI 2022; as CrosNNCLR's Sec. 3.1.2 restates it): SkeletonCLR with a third,
extremely augmented copy, energy-based attention-guided drop (D3M) on it, a distribution
divergence loss, and nearest-neighbour mining.

Per sample: two normally augmented copies (query ``z`` and momentum key ``k``) and one extreme copy,
encoded by the query encoder twice, plainly (``z_e``) and with D3M on the encoder's last feature
map (``z_ed``). Losses (Eqs. 2-5 of the CrosNNCLR paper):

- InfoNCE of ``z`` against ``k`` and the queue;
- the divergence loss: the normal copy's similarity distribution over ``[k, queue]``, detached,
  teaches the extreme and the extreme-dropped copies (a divergence each, averaged);
- from ``mining_epoch``, the ``topk`` queue entries most similar to any of the three query copies
  are positives as well (Eq. 5), in place of plain InfoNCE.

The machinery shared with CrosNNCLR* (the extreme copy, D3M, the two terms) is
:mod:`skelctl.methods.extreme`; the losses are :mod:`skelctl.methods.losses`. The reference
facts (notes, Sec. 3) are followed where the paper is silent; the augmentation
details found only in the code are params of the shared augmentation module (the blur kernel's
normalisation, the rotation direction), set to the paper's reading by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skelctl.methods.extreme import ExtremeMoCo, ExtremeOptions


@dataclass
class AimCLROptions(ExtremeOptions):
    """AimCLR's options: the extreme copy, D3M and the mining (:class:`ExtremeOptions`)."""


class AimCLR(ExtremeMoCo):
    """AimCLR on one stream: InfoNCE (or mining) plus the divergence of the extreme copies."""

    title = "AimCLR"  # its name in the tables
    Options = AimCLROptions

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        embedded = self.embed_copies(batch, generator)
        return self.finish(embedded["key"], self.aim_losses(embedded, epoch))
