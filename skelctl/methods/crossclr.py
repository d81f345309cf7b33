"""CrosSCLR (CVPR 2021): parallel SkeletonCLR models, one per view, that exchange high-confidence
neighbours and embedding context across views after ``cross_epoch``.

Follows the paper where the authors' code differs: every view has its own projector and its own
momentum update at every step (the code shares the joint projector and stops updating the joint and
bone key encoders after epoch 150); the cross-view loss is Eq. 6, the log of the summed
probabilities of the positive set, summed over all ordered view pairs (Eq. 8) (the code averages
log-probabilities over positives and averages the two pairs of each view); and the queue holds
30,000 keys (the code: 32,768).

Options express the paper's ablations: ``topk`` (Table 2; K = 0 mines no neighbour),
``context`` (embedding context, Table 4), ``cross_loss: false`` (the views trained independently,
with no cross-view term at any epoch), and ``detach_teacher`` (stop the cross-view term's gradient
into view v's similarities, a variant that neither Eq. 6 nor the authors' code has).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from skelctl.augment import compose
from skelctl.data.views import compute_view
from skelctl.methods.base import Method
from skelctl.methods.losses import cross_view_loss, info_nce
from skelctl.methods.moco import ContrastOptions, gather_from_all_ranks, momentum_contrast
from skelctl.skeletons import Layout


@dataclass
class CrosSCLROptions(ContrastOptions):
    topk: int = 1                    # knowledge mining K
    cross_epoch: int = 150           # single-view loss before, cross-view loss from this epoch
    context: bool = True             # embedding context (Eq. 6)
    cross_loss: bool = True          # false: the views never exchange knowledge
    detach_teacher: bool = False     # not in the paper: see the module docstring


class CrosSCLR(Method):
    title = "CrosSCLR"  # its name in the tables
    Options = CrosSCLROptions
    multi_view = True

    def __init__(self, streams: tuple[str, ...], layout: Layout,
                 build_encoder: Callable[[], nn.Module], options: CrosSCLROptions):
        super().__init__(streams, layout, build_encoder, options)
        self.augment = compose(options.augment, layout)
        self.moco = nn.ModuleDict({v: momentum_contrast(build_encoder(), options)
                                   for v in self.streams})

    def encoders(self) -> dict[str, nn.Module]:
        return {view: moco.encoder_q for view, moco in self.moco.items()}

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        options, joint = self.options, batch["joint"]
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
        if epoch < options.cross_epoch or not options.cross_loss:
            for view in self.streams:  # stage 1: each view on its own (Eq. 1)
                losses[f"infonce_{view}"] = info_nce(positive[view], negatives[view],
                                                     options.temperature)
        else:  # stage 2: cross-view consistent knowledge mining (Eq. 8)
            for u in self.streams:
                for v in self.streams:
                    if u != v:
                        losses[f"cross_{v}_to_{u}"] = cross_view_loss(
                            positive[u], negatives[u], negatives[v], options.topk,
                            options.temperature, options.context, options.detach_teacher)
        for view, moco in self.moco.items():
            moco.enqueue(gather_from_all_ranks(keys[view]))
        total = sum(losses.values())
        return {"loss": total, **{name: value.detach() for name, value in losses.items()}}
