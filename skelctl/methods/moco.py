"""MoCo (He et al., CVPR 2020; v2's MLP projector), as every contrastive method here uses it:
query and momentum key encoders with MLP projectors, L2-normalised embeddings and a FIFO queue of
keys (:class:`MomentumContrast`); and :class:`MoCoMethod`, the base of the single-stream methods
built on it (SkeletonCLR, CrosNNCLR, AimCLR, CrosNNCLR*): the augmentation, one MoCo, the two
augmented copies of a sample, and the step's end (enqueue the keys, return the losses). The
losses themselves are in :mod:`skelctl.methods.losses`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from skelctl.augment import AugmentChain, compose, crop_and_shear
from skelctl.data.views import compute_view
from skelctl.methods.base import Method
from skelctl.options import Fraction, PositiveFloat, PositiveInt
from skelctl.skeletons import Layout


@dataclass
class ContrastOptions:
    """The options every MoCo-based method shares; the defaults are CrosSCLR's (Sec. 4.2)."""

    feature_dim: PositiveInt = 128
    queue_size: PositiveInt = 30000  # the paper's 30k (the authors' code: 32,768)
    momentum: Fraction = 0.999
    temperature: PositiveFloat = 0.07
    augment: AugmentChain = field(default_factory=crop_and_shear)
    # the query projector's initial weights: N(0, std) and zero bias, as the reference code's
    # weights_init (0.02); null: PyTorch's default (uniform, +-1/sqrt(fan_in))
    projector_init_std: float | None = 0.02


def projector(in_dim: int, out_dim: int) -> nn.Module:
    """MoCo v2 projection head: Linear(in, in) - ReLU - Linear(in, out)."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True),
                         nn.Linear(in_dim, out_dim))


def gather_from_all_ranks(keys: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every DDP rank (itself when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return keys
    parts = [torch.empty_like(keys) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, keys.contiguous())
    return torch.cat(parts)


class MomentumContrast(nn.Module):
    """One stream's query encoder + projector, their momentum copies, and its queue of keys."""

    def __init__(self, encoder: nn.Module, feature_dim: int = 128, queue_size: int = 30000,
                 momentum: float = 0.999, projector_momentum: float | None = None,
                 projector_init_std: float | None = 0.02, own_key_projector: bool = False):
        super().__init__()
        self.encoder_q = encoder
        self.projector_q = self.new_projector(encoder.out_dim, feature_dim, projector_init_std)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        # own_key_projector: the key MLP is its own random initialisation, not a copy of the
        # query MLP (the CRRL authors' code)
        self.projector_k = (self.new_projector(encoder.out_dim, feature_dim, projector_init_std)
                            if own_key_projector else copy.deepcopy(self.projector_q))
        for p in (*self.encoder_k.parameters(), *self.projector_k.parameters()):
            p.requires_grad_(False)
        self.momentum = momentum
        # the key projector may follow its query projector at another rate (CRRL: m_mlp = 1.0,
        # a key projector that is never updated)
        self.projector_momentum = momentum if projector_momentum is None else projector_momentum
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, feature_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @staticmethod
    def new_projector(in_dim: int, out_dim: int, init_std: float | None) -> nn.Module:
        head = projector(in_dim, out_dim)
        if init_std is not None:
            for layer in head:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, 0.0, init_std)
                    nn.init.zeros_(layer.bias)
        return head

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector_q(self.encoder_q(x)), dim=1)

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector_k(self.encoder_k(x)), dim=1)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q, for the encoder (m = ``momentum``) and the
        projector (m = ``projector_momentum``)."""
        for q, k, m in ((self.encoder_q, self.encoder_k, self.momentum),
                        (self.projector_q, self.projector_k, self.projector_momentum)):
            if m == 1.0:
                continue
            for p_q, p_k in zip(q.parameters(), k.parameters()):
                p_k.mul_(m).add_(p_q.detach(), alpha=1 - m)

    def similarities(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` dot products with the queue (a copy, so enqueueing cannot alter autograd)."""
        return z @ self.queue.clone().detach().T

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """FIFO: overwrite the oldest entries, wrapping round; the queue size need not be a
        multiple of the batch size."""
        keys = keys.detach().to(self.queue.dtype)[-len(self.queue):]
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % len(self.queue)
        self.queue[index] = keys
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % len(self.queue))


def momentum_contrast(encoder: nn.Module, options: ContrastOptions) -> MomentumContrast:
    """A :class:`MomentumContrast` on ``encoder`` with the options' embedding, queue, momentum
    and projector initialisation."""
    return MomentumContrast(encoder, options.feature_dim, options.queue_size, options.momentum,
                            projector_init_std=options.projector_init_std)


class MoCoMethod(Method):
    """A method on one stream built on MoCo: two augmented copies of each joint sequence, the
    stream derived from each on the device (as the reference code does), a query and a momentum
    key embedding. A subclass writes ``forward``: its losses from :meth:`embed` and
    :meth:`finish`."""

    def __init__(self, streams: tuple[str, ...], layout: Layout,
                 build_encoder: Callable[[], nn.Module], options: ContrastOptions):
        super().__init__(streams, layout, build_encoder, options)
        self.augment = compose(options.augment, layout)
        self.moco = momentum_contrast(build_encoder(), options)

    def encoders(self) -> dict[str, nn.Module]:
        return {self.streams[0]: self.moco.encoder_q}

    def copy(self, joint: torch.Tensor, generator: torch.Generator,
             augment: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
        """An augmented copy of the joint sequences, as the method's stream."""
        return compute_view(self.streams[0], (augment or self.augment)(joint, generator),
                            self.layout)

    def embed(self, batch: dict[str, torch.Tensor], generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The query and (after the momentum update) key embeddings of two augmented copies."""
        x_q, x_k = self.copy(batch["joint"], generator), self.copy(batch["joint"], generator)
        z = self.moco.query(x_q)
        self.moco.momentum_update()
        return z, self.moco.key(x_k)

    def finish(self, key: torch.Tensor, losses: dict[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
        """Enqueue the step's keys (every rank's); the losses' sum is the one to minimise."""
        self.moco.enqueue(gather_from_all_ranks(key))
        return {"loss": sum(losses.values()), **{k: v.detach() for k, v in losses.items()}}
