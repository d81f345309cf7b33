"""CrosSCLR (CVPR 2021): parallel SkeletonCLR models, one per view, that exchange high-confidence
neighbours and embedding context across views after ``cross_epoch``.

Follows the paper where the authors' code differs: every view has its own projector and its own
momentum update at every step (the code shares the joint projector and stops updating the joint and
bone key encoders after epoch 150); the cross-view loss is Eq. 6, the log of the summed
probabilities of the positive set, summed over all ordered view pairs (Eq. 8) (the code averages
log-probabilities over positives and averages the two pairs of each view); and the queue holds
30,000 keys (the code: 32,768).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from skelctl.data.views import compute_view
from skelctl.methods.queue import MomentumContrast, gather_from_all_ranks, info_nce
from skelctl.skeletons import Layout


def top_k_mask(similarities: torch.Tensor, k: int) -> torch.Tensor:
    """Knowledge mining Gamma = Topk (Eq. 4): a boolean ``(N, K)`` mask of each row's k largest."""
    mask = torch.zeros_like(similarities, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, similarities.topk(k, dim=1).indices, True)
    return mask


def cross_view_loss(positive_u: torch.Tensor, negatives_u: torch.Tensor,
                    negatives_v: torch.Tensor, k: int, temperature: float,
                    context: bool = True) -> torch.Tensor:
    """Eq. 6, L_{v->u}: view v's top-k neighbours become positives of view u, and with embedding
    context the similarities of u are weighted by those of v (``s_u * s_v``).

    ``-log [exp(l+/t) + sum_{i in N+} exp(c_i/t)] / [exp(l+/t) + sum_i exp(c_i/t)]``, averaged.
    View v's similarities act as a teacher: no gradient flows into them from this term.
    """
    negatives_v = negatives_v.detach()
    contexts = negatives_u * negatives_v if context else negatives_u
    logits = torch.cat([positive_u[:, None], contexts], dim=1) / temperature
    positives = torch.cat([torch.ones_like(positive_u[:, None], dtype=torch.bool),
                           top_k_mask(negatives_v, k)], dim=1)
    return (torch.logsumexp(logits, dim=1)
            - torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)).mean()


class CrosSCLR(nn.Module):
    multi_view = True

    def __init__(self, views: tuple[str, ...], layout: Layout, build_encoder: Callable[[], nn.Module],
                 augment: Callable, feature_dim: int = 128, queue_size: int = 30000,
                 momentum: float = 0.999, temperature: float = 0.07, topk: int = 1,
                 cross_epoch: int = 150, context: bool = True, **_: Any):
        super().__init__()
        if len(views) < 2:
            raise ValueError(f"CrosSCLR needs at least two views, got {views}")
        self.views = tuple(views)
        self.layout = layout
        self.augment = augment
        self.temperature = temperature
        self.topk = topk
        self.cross_epoch = cross_epoch
        self.context = context
        self.moco = nn.ModuleDict({v: MomentumContrast(build_encoder(), feature_dim, queue_size,
                                                       momentum) for v in self.views})

    def encoder(self, view: str) -> nn.Module:
        if view not in self.views:
            raise ValueError(f"this model learned {self.views}, not {view!r}")
        return self.moco[view].encoder_q

    def forward(self, joint: torch.Tensor, generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        # one pair of augmented samples; every view is derived from the same pair
        aug_q, aug_k = self.augment(joint, generator), self.augment(joint, generator)
        positive, negatives, keys = {}, {}, {}
        for view, moco in self.moco.items():
            z = moco.query(compute_view(view, aug_q, self.layout))
            moco.momentum_update()
            keys[view] = moco.key(compute_view(view, aug_k, self.layout))
            positive[view] = (z * keys[view]).sum(dim=1)
            negatives[view] = moco.similarities(z)
        losses: dict[str, torch.Tensor] = {}
        if epoch < self.cross_epoch:  # stage 1: each view on its own (Eq. 1)
            for view in self.views:
                losses[f"infonce_{view}"] = info_nce(positive[view], negatives[view],
                                                     self.temperature)
        else:  # stage 2: cross-view consistent knowledge mining (Eq. 8)
            for u in self.views:
                for v in self.views:
                    if u != v:
                        losses[f"cross_{v}_to_{u}"] = cross_view_loss(
                            positive[u], negatives[u], negatives[v], self.topk, self.temperature,
                            self.context)
        for view, moco in self.moco.items():
            moco.enqueue(gather_from_all_ranks(keys[view]))
        total = sum(losses.values())
        return {"loss": total, **{name: value.detach() for name, value in losses.items()}}
