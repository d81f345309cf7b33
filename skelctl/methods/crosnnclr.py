"""CrosNNCLR and CrosNNCLR* (Zhang et al., 2023, Sec. 3.2): cross-view nearest-neighbour
contrastive learning, a block plugged into SkeletonCLR and into AimCLR.

The support set is the queue. Each view's nearest neighbour in it (highest cosine similarity, the
same as the smallest distance between unit vectors) becomes a positive for the other view (Eqs.
6-8)::

    L_q->k = -log (e^{z.k/t} + e^{NN(z).k/t}) / (e^{z.k/t} + sum_i e^{z.m_i/t})
    L_k->q = -log (e^{z.k/t} + e^{NN(k).z/t}) / (e^{z.k/t} + sum_i e^{k.m_i/t})
    L = (L_q->k + L_k->q) / 2

with ``z`` the query, ``k`` the momentum key and ``m_i`` the queue. These are the paper's
equations as printed; its Algorithm 1 writes a batch-wise variant (the neighbours against the other
view's batch, as NNCLR does), which is not followed here. The neighbour of the key, and the key,
carry no gradient (the key encoder is a momentum copy), so the second term pulls the query towards
the key's neighbour.

When the neighbours start to count is ``nn_epoch``. The paper uses them from the first epoch, and
so does the default; the only public code of the method (an SGCLR fork, ``cross_epoch: 150``)
trains with InfoNCE alone until epoch 150. Which is better depends on the data: on NW-UCLA (the
learning test's 10 epochs) KNN 41.6 % from the first epoch against 34.7 % from epoch 5
(SkeletonCLR's InfoNCE drifts towards chance there); on the synthetic demo corpus, 40 epochs,
45.7 % against 63.4 % from epoch 20. CrosNNCLR* with neighbours from the first epoch collapses on
NW-UCLA within two epochs, and with them from epoch 50 is the best method there (docs/demo.md
and docs/small-data.md).

- ``crosnnclr``: on SkeletonCLR, the loss above in place of InfoNCE (Sec. 3.2.1, Algorithm 1).
- ``crosnnclr_star`` (CrosNNCLR*): on AimCLR, the loss above added to AimCLR's (InfoNCE or
  mining, and the D3M divergence loss; Sec. 3.2.2, Fig. 3(b)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skelctl.methods.aimclr import AimCLR, AimCLROptions
from skelctl.methods.queue import ContrastOptions, gather_from_all_ranks, info_nce
from skelctl.methods.skeletonclr import SkeletonCLR


def nearest_neighbours(queries: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """For each unit-length row of ``queries`` ``(N, D)``, the row of ``support`` ``(K, D)``
    (unit length too) with the highest cosine similarity."""
    return support[(queries @ support.T).argmax(dim=1)]


def cross_view_nn_loss(query: torch.Tensor, key: torch.Tensor, support: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Eq. 8, ``(L_q->k + L_k->q) / 2``, for unit-length ``query`` and ``key`` ``(N, D)`` and
    the queue ``support`` ``(K, D)``."""
    support = support.detach().clone()  # the queue changes in place after the step
    positive = (query * key).sum(dim=1) / temperature
    losses = []
    for anchor, other in ((query, key), (key, query)):
        neighbour = (nearest_neighbours(anchor.detach(), support) * other).sum(dim=1) / temperature
        numerator = torch.logsumexp(torch.stack([positive, neighbour], dim=1), dim=1)
        denominator = torch.logsumexp(torch.cat([positive[:, None], anchor @ support.T
                                                 / temperature], dim=1), dim=1)
        losses.append((denominator - numerator).mean())
    return (losses[0] + losses[1]) / 2


@dataclass
class CrosNNCLROptions(ContrastOptions):
    queue_size: int = 32768          # the paper's M (Sec. 4.2; Table 10's best)
    nn_epoch: int = 0                # neighbours are positives from this epoch (0-based) on


@dataclass
class CrosNNCLRStarOptions(AimCLROptions):
    nn_epoch: int = 0


class CrosNNCLR(SkeletonCLR):
    """SkeletonCLR with the cross-view nearest-neighbour loss in place of InfoNCE (one stream)."""

    title = "CrosNNCLR"  # its name in the tables
    Options = CrosNNCLROptions

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        options = self.options
        z, key = self.embed(batch, generator)
        if epoch >= options.nn_epoch:
            loss = cross_view_nn_loss(z, key, self.moco.queue, options.temperature)
            name = f"crosnn_{self.streams[0]}"
        else:
            loss = info_nce((z * key).sum(dim=1), self.moco.similarities(z), options.temperature)
            name = f"infonce_{self.streams[0]}"
        self.moco.enqueue(gather_from_all_ranks(key))
        return {"loss": loss, name: loss.detach()}


class CrosNNCLRStar(AimCLR):
    """AimCLR with the cross-view nearest-neighbour loss added (CrosNNCLR*)."""

    title = "CrosNNCLR*"  # its name in the tables
    Options = CrosNNCLRStarOptions

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        views = self.views(batch, generator)
        losses = self.aim_losses(views, epoch)
        if epoch >= self.options.nn_epoch:
            losses["crosnn"] = cross_view_nn_loss(views["z"], views["key"], self.moco.queue,
                                                  self.options.temperature)
        self.moco.enqueue(gather_from_all_ranks(views["key"]))
        return {"loss": sum(losses.values()), **{k: v.detach() for k, v in losses.items()}}
