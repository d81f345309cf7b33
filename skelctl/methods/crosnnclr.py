"""CrosNNCLR and CrosNNCLR* (Zhang et al., 2023, Sec. 3.2): cross-view nearest-neighbour
contrastive learning, a block plugged into SkeletonCLR and into AimCLR.

The support set is the queue. The nearest neighbour in it of each of the two augmented copies, the
query and the key (highest cosine similarity, the same as the smallest distance between unit
vectors), becomes a positive for the other copy (Eqs. 6-8; the paper calls the copies views)::

    L_q->k = -log (e^{z.k/t} + e^{NN(z).k/t}) / (e^{z.k/t} + sum_i e^{z.m_i/t})
    L_k->q = -log (e^{z.k/t} + e^{NN(k).z/t}) / (e^{z.k/t} + sum_i e^{k.m_i/t})
    L = (L_q->k + L_k->q) / 2

with ``z`` the query, ``k`` the momentum key and ``m_i`` the queue. These are the paper's
equations as printed; its Algorithm 1 writes a batch-wise variant (the neighbours against the other
copy's batch, as NNCLR does), which is not followed here. The neighbour of the key, and the key,
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

from skelctl.methods.extreme import ExtremeMoCo, ExtremeOptions
from skelctl.methods.losses import info_nce, nearest_neighbour_loss
from skelctl.methods.moco import ContrastOptions, MoCoMethod


@dataclass
class CrosNNCLROptions(ContrastOptions):
    queue_size: int = 32768          # the paper's M (Sec. 4.2; Table 10's best)
    nn_epoch: int = 0                # neighbours are positives from this epoch (0-based) on


@dataclass
class CrosNNCLRStarOptions(ExtremeOptions):
    nn_epoch: int = 0


class CrosNNCLR(MoCoMethod):
    """SkeletonCLR with the nearest-neighbour loss in place of InfoNCE (one stream)."""

    title = "CrosNNCLR"  # its name in the tables
    Options = CrosNNCLROptions

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        stream, options = self.streams[0], self.options
        z, key = self.embed(batch, generator)
        if epoch >= options.nn_epoch:
            loss = {f"crosnn_{stream}": nearest_neighbour_loss(z, key, self.moco.queue,
                                                               options.temperature)}
        else:
            loss = {f"infonce_{stream}": info_nce((z * key).sum(dim=1),
                                                  self.moco.similarities(z), options.temperature)}
        return self.finish(key, loss)


class CrosNNCLRStar(ExtremeMoCo):
    """AimCLR with the nearest-neighbour loss added (CrosNNCLR*)."""

    title = "CrosNNCLR*"  # its name in the tables
    Options = CrosNNCLRStarOptions

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        embedded = self.embed_copies(batch, generator)
        losses = self.aim_losses(embedded, epoch)
        if epoch >= self.options.nn_epoch:
            losses["crosnn"] = nearest_neighbour_loss(embedded["z"], embedded["key"],
                                                      self.moco.queue, self.options.temperature)
        return self.finish(embedded["key"], losses)
