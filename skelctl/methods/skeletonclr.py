"""SkeletonCLR (CrosSCLR paper, Sec. 3.1): MoCo on one stream of two augmented copies of a sample.

With ``topk > 0`` it becomes the paper's "SkeletonCLR + L_KM" (Table 4): from ``mining_epoch`` on,
the k queue entries most similar to the query are positives too (single-view knowledge mining).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skelctl.methods.losses import cross_view_loss, info_nce
from skelctl.methods.moco import ContrastOptions, MoCoMethod


@dataclass
class SkeletonCLROptions(ContrastOptions):
    topk: int = 0                    # single-view knowledge mining (L_KM); 0: plain SkeletonCLR
    mining_epoch: int = 150


class SkeletonCLR(MoCoMethod):
    """Single-stream contrastive learning (joint, motion, bone or velocity)."""

    title = "SkeletonCLR"  # its name in the tables
    Options = SkeletonCLROptions

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        stream, options = self.streams[0], self.options
        z, key = self.embed(batch, generator)
        positive, negatives = (z * key).sum(dim=1), self.moco.similarities(z)
        if options.topk > 0 and epoch >= options.mining_epoch:
            loss = {f"mining_{stream}": cross_view_loss(positive, negatives, negatives,
                                                        options.topk, options.temperature,
                                                        context=False)}
        else:
            loss = {f"infonce_{stream}": info_nce(positive, negatives, options.temperature)}
        return self.finish(key, loss)
