"""AimCLR (Guo et al., AAAI 2022; as CrosNNCLR's Sec. 3.1.2 restates it): SkeletonCLR with a third,
extremely augmented view, energy-based attention-guided drop (D3M) on it, a distribution
divergence loss, and nearest-neighbour mining.

Per sample: two normally augmented views (query ``z`` and momentum key ``k``) and one extreme view,
encoded by the query encoder twice, plainly (``z_e``) and with D3M on the encoder's last feature
map (``z_ed``). Losses (Eqs. 2-5 of the CrosNNCLR paper):

- InfoNCE of ``z`` against ``k`` and the queue;
- the divergence loss: the normal view's similarity distribution over ``[k, queue]``, detached,
  teaches the extreme and the extreme-dropped views (a divergence each, averaged);
- from ``mining_epoch``, the ``topk`` queue entries most similar to any of the three query views
  are positives as well (Eq. 5), in place of plain InfoNCE.

The reference facts (notes, Sec. 3) are followed where the paper is silent; the augmentation
details found only in the code are params of the shared augmentation module (the blur kernel's
normalisation, the rotation direction), set to the paper's reading by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from skelctl.augment import aimclr_extreme, compose
from skelctl.data.views import compute_view
from skelctl.methods.base import Method, OptionsError
from skelctl.methods.queue import ContrastOptions, MomentumContrast, gather_from_all_ranks
from skelctl.models.stgcn import STGCN
from skelctl.skeletons import Layout


@dataclass
class AimCLROptions(ContrastOptions):
    queue_size: int = 32768          # AimCLR's (and CrosNNCLR's M)
    extreme: dict[str, dict[str, Any]] = field(default_factory=aimclr_extreme)
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


def divergence_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` averaged over the batch, with ``p = softmax(teacher_logits)`` detached and
    ``q = softmax(student_logits)`` (logits already divided by the temperature). Eqs. 2 and 3
    write the cross-entropy ``-sum_i p_i log q_i``; the two differ by the teacher's entropy,
    which carries no gradient, so they train alike, and this one is 0 when the distributions
    agree."""
    target = F.log_softmax(teacher_logits.detach(), dim=1)
    return (target.exp() * (target - F.log_softmax(student_logits, dim=1))).sum(dim=1).mean()


def mining_loss(logits: torch.Tensor, negatives: list[torch.Tensor], topk: int) -> torch.Tensor:
    """Eq. 5: the positive (column 0 of ``logits``) and, for each row, the ``topk`` queue entries
    most similar to any of the views in ``negatives`` (each ``(N, K)``) are positives; the loss is
    minus the mean log-probability of the positives (over each row's positives, then the batch)."""
    mask = torch.zeros_like(logits)
    mask[:, 0] = 1
    for similarities in negatives:
        mask[:, 1:].scatter_(1, similarities.topk(topk, dim=1).indices, 1.0)
    log_probability = F.log_softmax(logits, dim=1)
    return -((log_probability * mask).sum(dim=1) / mask.sum(dim=1)).mean()


class AimCLR(Method):
    """AimCLR on one stream, the view derived on the device from each augmented joint sequence.
    The encoder must expose a ``(N, M, C, T, V)`` feature map (the ST-GCN) for D3M."""

    title = "AimCLR"  # its name in the tables
    Options = AimCLROptions

    def __init__(self, streams: tuple[str, ...], layout: Layout,
                 build_encoder: Callable[[], nn.Module], options: AimCLROptions):
        super().__init__(streams, layout, build_encoder, options)
        self.normal = compose(options.augment, layout)
        self.strong = compose(options.extreme, layout)
        self.moco = MomentumContrast(build_encoder(), options.feature_dim, options.queue_size,
                                     options.momentum,
                                     projector_init_std=options.projector_init_std)
        if not isinstance(self.moco.encoder_q, STGCN):
            raise OptionsError(f"{type(self).__name__}'s D3M drops joints and frames of the "
                               f"encoder's feature map: use the stgcn encoder")

    def encoders(self) -> dict[str, nn.Module]:
        return {self.streams[0]: self.moco.encoder_q}

    def dropped_query(self, x: torch.Tensor) -> torch.Tensor:
        """The query encoder with D3M on its last feature map, then pooled and projected."""
        encoder, options = self.moco.encoder_q, self.options
        feature_map = encoder.features(x)  # (N, M, C, T, V)
        n, m = feature_map.shape[:2]
        dropped = attention_drop(feature_map.flatten(0, 1), options.keep_threshold,
                                 options.energy_lambda).view(n, m, *feature_map.shape[2:])
        return F.normalize(self.moco.projector_q(encoder.pool(dropped)), dim=1)

    def views(self, batch: dict[str, torch.Tensor], generator: torch.Generator
              ) -> dict[str, torch.Tensor]:
        """Query, key, extreme and extreme-dropped embeddings of the batch (the key's after the
        momentum update, as in MoCo)."""
        view, joint = self.streams[0], batch["joint"]
        x_q = compute_view(view, self.normal(joint, generator), self.layout)
        x_k = compute_view(view, self.normal(joint, generator), self.layout)
        x_e = compute_view(view, self.strong(joint, generator), self.layout)
        z = self.moco.query(x_q)
        z_e = self.moco.query(x_e)
        z_ed = self.dropped_query(x_e)
        self.moco.momentum_update()
        return {"z": z, "key": self.moco.key(x_k), "z_e": z_e, "z_ed": z_ed}

    def aim_losses(self, views: dict[str, torch.Tensor], epoch: int
                   ) -> dict[str, torch.Tensor]:
        """AimCLR's contrastive term (InfoNCE, or mining from ``mining_epoch``) and the D3M
        divergence term, each divided by the temperature where the paper does."""
        options, key = self.options, views["key"]
        t = options.temperature
        logits = {name: torch.cat([(views[name] * key).sum(dim=1, keepdim=True),
                                   self.moco.similarities(views[name])], dim=1) / t
                  for name in ("z", "z_e", "z_ed")}
        divergence = (divergence_loss(logits["z"], logits["z_e"])
                      + divergence_loss(logits["z"], logits["z_ed"])) / 2
        if epoch >= options.mining_epoch:
            contrast = mining_loss(logits["z"], [logits[n][:, 1:] for n in logits], options.topk)
        else:  # InfoNCE (Eq. 1): the positive is column 0
            contrast = F.cross_entropy(logits["z"], torch.zeros(len(key), dtype=torch.long,
                                                                device=key.device))
        return {"contrast": contrast, "divergence": divergence}

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        views = self.views(batch, generator)
        losses = self.aim_losses(views, epoch)
        self.moco.enqueue(gather_from_all_ranks(views["key"]))
        loss = losses["contrast"] + losses["divergence"]
        return {"loss": loss, **{k: v.detach() for k, v in losses.items()}}
