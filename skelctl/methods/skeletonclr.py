"""SkeletonCLR (CrosSCLR paper, Sec. 3.1): MoCo on one view of two augmented copies of a sample.

With ``topk > 0`` it becomes the paper's "SkeletonCLR + L_KM" (Table 4): from ``mining_epoch`` on,
the k queue entries most similar to the query are positives too (single-view knowledge mining).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from skelctl.augment import compose
from skelctl.data.views import compute_view
from skelctl.methods.base import Method
from skelctl.methods.crosclr import cross_view_loss
from skelctl.methods.queue import (ContrastOptions, MomentumContrast, gather_from_all_ranks,
                                  info_nce)
from skelctl.skeletons import Layout


@dataclass
class SkeletonCLROptions(ContrastOptions):
    topk: int = 0                    # single-view knowledge mining (L_KM); 0: plain SkeletonCLR
    mining_epoch: int = 150


class SkeletonCLR(Method):
    """Single-view contrastive learning. The view (joint, motion, bone, velocity) is derived on the
    device from each augmented joint sequence, as the reference code does."""

    title = "SkeletonCLR"  # its name in the tables

    Options = SkeletonCLROptions

    def __init__(self, streams: tuple[str, ...], layout: Layout,
                 build_encoder: Callable[[], nn.Module], options: SkeletonCLROptions):
        super().__init__(streams, layout, build_encoder, options)
        self.augment = compose(options.augment, layout)
        self.moco = MomentumContrast(build_encoder(), options.feature_dim, options.queue_size,
                                     options.momentum,
                                     projector_init_std=options.projector_init_std)

    def encoders(self) -> dict[str, nn.Module]:
        return {self.streams[0]: self.moco.encoder_q}

    def embed(self, batch: dict[str, torch.Tensor], generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The query and (after the momentum update) key embeddings of two augmented copies."""
        view, joint = self.streams[0], batch["joint"]
        x_q = compute_view(view, self.augment(joint, generator), self.layout)
        x_k = compute_view(view, self.augment(joint, generator), self.layout)
        z = self.moco.query(x_q)
        self.moco.momentum_update()
        return z, self.moco.key(x_k)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        view, options = self.streams[0], self.options
        z, key = self.embed(batch, generator)
        positive, negatives = (z * key).sum(dim=1), self.moco.similarities(z)
        if options.topk > 0 and epoch >= options.mining_epoch:
            loss = cross_view_loss(positive, negatives, negatives, options.topk,
                                   options.temperature, context=False)
            name = f"mining_{view}"
        else:
            loss = info_nce(positive, negatives, options.temperature)
            name = f"infonce_{view}"
        self.moco.enqueue(gather_from_all_ranks(key))
        return {"loss": loss, name: loss.detach()}
