"""SkeletonCLR (CrosSCLR paper, Sec. 3.1): MoCo on one view of two augmented copies of a sample."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from skelctl.data.views import compute_view
from skelctl.methods.queue import MomentumContrast, gather_from_all_ranks, info_nce
from skelctl.skeletons import Layout


class SkeletonCLR(nn.Module):
    """Single-view contrastive learning. The view (joint, motion, bone, velocity) is derived on the
    device from each augmented joint sequence, as the reference code does."""

    multi_view = False

    def __init__(self, views: tuple[str, ...], layout: Layout, build_encoder: Callable[[], nn.Module],
                 augment: Callable, feature_dim: int = 128, queue_size: int = 30000,
                 momentum: float = 0.999, temperature: float = 0.07, **_: Any):
        super().__init__()
        if len(views) != 1:
            raise ValueError(f"SkeletonCLR learns one view, got {views}")
        self.views = tuple(views)
        self.layout = layout
        self.augment = augment
        self.temperature = temperature
        self.moco = MomentumContrast(build_encoder(), feature_dim, queue_size, momentum)

    def encoder(self, view: str) -> nn.Module:
        if view not in self.views:
            raise ValueError(f"this model learned {self.views}, not {view!r}")
        return self.moco.encoder_q

    def forward(self, joint: torch.Tensor, generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        view = self.views[0]
        x_q = compute_view(view, self.augment(joint, generator), self.layout)
        x_k = compute_view(view, self.augment(joint, generator), self.layout)
        z = self.moco.query(x_q)
        self.moco.momentum_update()
        key = self.moco.key(x_k)
        loss = info_nce((z * key).sum(dim=1), self.moco.similarities(z), self.temperature)
        self.moco.enqueue(gather_from_all_ranks(key))
        return {"loss": loss, f"infonce_{view}": loss.detach()}
