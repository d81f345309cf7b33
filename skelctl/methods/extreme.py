"""AimCLR's extreme copy and D3M on MoCo: the part of AimCLR (:mod:`skelctl.methods.aimclr`,
which gives the paper's equations) that CrosNNCLR* builds on as well.

Per sample: two normally augmented copies (query ``z`` and momentum key ``k``) and one extremely
augmented copy, encoded by the query encoder twice, plainly (``z_e``) and with D3M (energy-based
attention-guided drop) on the encoder's last feature map (``z_ed``); the contrastive term
(InfoNCE, or nearest-neighbour mining from ``mining_epoch``) and the divergence term over them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from skelctl.augment import AugmentChain, aimclr_extreme, compose
from skelctl.methods.base import OptionsError
from skelctl.methods.losses import divergence_loss, mining_loss
from skelctl.methods.moco import ContrastOptions, MoCoMethod
from skelctl.models.stgcn import STGCN
from skelctl.skeletons import Layout


@dataclass
class ExtremeOptions(ContrastOptions):
    queue_size: int = 32768          # AimCLR's (and CrosNNCLR's M)
    extreme: AugmentChain = field(default_factory=aimclr_extreme)
    keep_threshold: float = 0.7      # D3M drops the elements whose attention is at least this
    energy_lambda: float = 1e-4      # SimAM's lambda
    mining_epoch: int = 150          # nearest-neighbour mining from this epoch (0-based) on
    topk: int = 1


def energy_attention(feature_map: torch.Tensor, energy_lambda: float = 1e-4) -> torch.Tensor:
    """SimAM's parameter-free attention of each element of ``(N, C, T, V)``: the sigmoid of its
    inverse minimal energy, ``(x - mu)^2 / (4 (var + lambda)) + 1/2`` with the mean and variance
    over the channel's T x V positions."""
    centred = (feature_map - feature_map.mean(dim=(2, 3), keepdim=True)) ** 2
    positions = feature_map.shape[2] * feature_map.shape[3] - 1
    variance = centred.sum(dim=(2, 3), keepdim=True) / max(positions, 1)
    return torch.sigmoid(centred / (4 * (variance + energy_lambda)) + 0.5)


def attention_drop(feature_map: torch.Tensor, keep_threshold: float = 0.7,
                   energy_lambda: float = 1e-4) -> torch.Tensor:
    """D3M on ``(N, C, T, V)``: drop (zero) the joints whose attention, averaged over channels and
    frames, is at least ``keep_threshold`` (spatial), and the elements whose own attention is
    (temporal); each mask rescales what it keeps by ``numel / kept`` so the mean activation is
    kept, as in dropout."""
    attention = energy_attention(feature_map, energy_lambda)
    spatial = (attention.mean(dim=(1, 2), keepdim=True) < keep_threshold).to(feature_map.dtype)
    temporal = (attention < keep_threshold).to(feature_map.dtype)
    out = feature_map
    for mask in (spatial.expand_as(feature_map), temporal):
        out = out * mask * (mask.numel() / mask.sum().clamp(min=1))
    return out


class ExtremeMoCo(MoCoMethod):
    """MoCo on one stream with AimCLR's extreme copy and D3M. The encoder must expose a
    ``(N, M, C, T, V)`` feature map (the ST-GCN) for D3M."""

    def __init__(self, streams: tuple[str, ...], layout: Layout,
                 build_encoder: Callable[[], nn.Module], options: ExtremeOptions):
        super().__init__(streams, layout, build_encoder, options)
        self.strong = compose(options.extreme, layout)
        if not isinstance(self.moco.encoder_q, STGCN):
            raise OptionsError(f"{type(self).__name__}'s D3M drops joints and frames of the "
                               f"encoder's feature map: use the stgcn encoder")

    def dropped_query(self, x: torch.Tensor) -> torch.Tensor:
        """The query encoder with D3M on its last feature map, then pooled and projected."""
        encoder, options = self.moco.encoder_q, self.options
        feature_map = encoder.features(x)  # (N, M, C, T, V)
        n, m = feature_map.shape[:2]
        dropped = attention_drop(feature_map.flatten(0, 1), options.keep_threshold,
                                 options.energy_lambda).view(n, m, *feature_map.shape[2:])
        return F.normalize(self.moco.projector_q(encoder.pool(dropped)), dim=1)

    def embed_copies(self, batch: dict[str, torch.Tensor], generator: torch.Generator
                     ) -> dict[str, torch.Tensor]:
        """Query, key, extreme and extreme-dropped embeddings of the batch's augmented copies
        (the key's after the momentum update, as in MoCo)."""
        joint = batch["joint"]
        x_q, x_k = self.copy(joint, generator), self.copy(joint, generator)
        x_e = self.copy(joint, generator, self.strong)
        z = self.moco.query(x_q)
        z_e = self.moco.query(x_e)
        z_ed = self.dropped_query(x_e)
        self.moco.momentum_update()
        return {"z": z, "key": self.moco.key(x_k), "z_e": z_e, "z_ed": z_ed}

    def aim_losses(self, embedded: dict[str, torch.Tensor], epoch: int
                   ) -> dict[str, torch.Tensor]:
        """AimCLR's contrastive term (InfoNCE, or mining from ``mining_epoch``) and the D3M
        divergence term, each divided by the temperature where the paper does."""
        options, key = self.options, embedded["key"]
        t = options.temperature
        logits = {name: torch.cat([(embedded[name] * key).sum(dim=1, keepdim=True),
                                   self.moco.similarities(embedded[name])], dim=1) / t
                  for name in ("z", "z_e", "z_ed")}
        divergence = (divergence_loss(logits["z"], logits["z_e"])
                      + divergence_loss(logits["z"], logits["z_ed"])) / 2
        if epoch >= options.mining_epoch:
            contrast = mining_loss(logits["z"], [logits[n][:, 1:] for n in logits], options.topk)
        else:  # InfoNCE (Eq. 1): the positive is column 0
            contrast = F.cross_entropy(logits["z"], torch.zeros(len(key), dtype=torch.long,
                                                                device=key.device))
        return {"contrast": contrast, "divergence": divergence}
