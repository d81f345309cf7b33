"""MAMP: masked motion prediction (Mao et al., ICCV 2023).

A skeleton transformer (the ``transformer`` encoder) reads 10 % of its tokens (a token is one
joint over ``t_patch`` frames); a small transformer decoder fills the rest with mask tokens and
predicts, at every masked token, the *motion* of its frames (``x[t+1] - x[t]``, the last frame
0), each patch normalised by its own mean and variance. The loss is the per-token mean squared
error averaged over the masked tokens only. Which tokens stay visible is drawn per sample by
motion-aware masking: a token's motion intensity is the mean absolute difference between its
values and those of the same joint's previous token; intensities divided by ``tau`` times the
sample's largest give a softmax distribution, and the masked tokens are drawn from it without
replacement (Gumbel top-k), so moving joints are masked more often. ``tau: 0`` masks uniformly at
random; ``target: joint`` reconstructs the coordinates instead (MAE's target, MAMP's ablation).

Input: a random crop of U(0.5, 1) of the real frames (at least 64, or all), resized to the
encoder's frames (120), then a rotation by one draw of U(-0.3, 0.3) rad about each axis; the
bodies are folded into the batch (a zero second body included, as in the authors' code).

Where this follows the paper against the authors' code (``maoyunyao/MAMP``): their number of
visible tokens is ``int(L * (1 - 0.9))``, which floating point makes 74 of 750; here it is the
paper's 10 %, 75. Where the paper is silent the code's settings are used: the previous-token
difference for the intensity (a stride of ``t_patch`` frames; the first token copies the
second's), 1e-10 guards in the softmax and the Gumbel noise, the unbiased variance and eps 1e-6
of the patch normalisation, a decoder of width 256 with 8 heads, MLP ratio 4, its own position
embeddings and a mask token drawn from trunc-normal 0.02, Xavier-uniform Linear layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
from torch import nn

from skelctl.augment import AugmentChain, Augmentation, compose
from skelctl.data.views import compute_view, motion
from skelctl.methods.base import EncoderFactory, Method, OptionsError
from skelctl.models.transformer import (Block, SkeletonTransformer, fold_bodies, init_weights,
                                        patchify)
from skelctl.options import Check, NonNegativeFloat, PositiveInt
from skelctl.skeletons import Layout


def mamp_augmentations() -> dict[str, dict[str, object]]:
    """MAMP's input chain (its feeder): a crop of U(0.5, 1) of the real frames, at least 64 (or
    all), resized to the encoder's frames (filled in from the encoder), then a rotation by
    U(-0.3, 0.3) rad about every axis."""
    limit = math.degrees(0.3)
    return {"crop_resize": {"min_ratio": 0.5, "max_ratio": 1.0, "min_frames": 64},
            "rotate": {"max_degrees": limit, "minor_degrees": limit, "symmetric": True}}


def check_mask_ratio(value: float, path: str) -> None:
    if not 0 <= value < 1:
        raise OptionsError(f"{path}: expected a ratio in [0, 1) (some tokens must stay "
                           f"visible), found {value!r}")


@dataclass
class MAMPOptions:
    mask_ratio: Annotated[float, Check(check_mask_ratio)] = 0.9
    tau: NonNegativeFloat = 0.80  # motion-aware masking's temperature; NTU-120 0.75; 0: random
    target: Literal["motion", "joint"] = "motion"  # joint: MAE's target (MAMP's ablation)
    decoder_dim: PositiveInt = 256
    decoder_depth: PositiveInt = 3  # NTU-60; 5 for NTU-120 and PKU-MMD
    decoder_heads: PositiveInt = 8
    augment: AugmentChain = field(default_factory=mamp_augmentations)


def visible_count(tokens: int, mask_ratio: float) -> int:
    """How many of ``tokens`` stay visible: ``(1 - mask_ratio)`` of them, rounded down, at least
    one. Rounded to 9 places first, so that 10 % of 750 is 75 (the authors' ``int(750 * (1 -
    0.9))`` is 74 by floating point)."""
    return max(1, math.floor(round(tokens * (1 - mask_ratio), 9)))


def motion_intensity(patches: torch.Tensor) -> torch.Tensor:
    """``(B, T', V, P)`` patchified input to ``(B, T' V)``: the mean absolute difference between
    each token's values and the same joint's previous token's; the first token copies the
    second's."""
    change = (patches[:, 1:] - patches[:, :-1]).abs().mean(dim=-1)
    return torch.cat([change[:, :1], change], dim=1).flatten(1)


def choose_visible(intensity: torch.Tensor, count: int, tau: float,
                   generator: torch.Generator) -> torch.Tensor:
    """Per sample, the ``count`` visible tokens ``(B, count)``, in ascending order. With
    ``tau > 0`` the masked ones are drawn without replacement from ``softmax(intensity / (tau x
    the sample's largest intensity))`` (Gumbel top-k: the highest log-probability plus Gumbel
    noise are masked, the lowest ``count`` stay); with ``tau == 0`` uniformly at random."""
    noise = torch.rand(intensity.shape, generator=generator, device=intensity.device,
                       dtype=intensity.dtype)
    if tau == 0:
        score = noise
    else:
        largest = intensity.amax(dim=1, keepdim=True)
        log_p = torch.log_softmax(intensity / (largest * tau + 1e-10), dim=1)
        score = log_p - torch.log(-torch.log(noise + 1e-10) + 1e-10)
    return score.topk(count, dim=1, largest=False).indices.sort(dim=1).values


def normalise_patches(patches: torch.Tensor) -> torch.Tensor:
    """Each patch (last axis) less its mean, over its standard deviation (unbiased, eps 1e-6:
    the authors' ``norm_skes_loss``)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + 1e-6).sqrt()


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, masked: torch.Tensor
               ) -> torch.Tensor:
    """The per-token mean squared error ``(B, L)`` averaged over the tokens where ``masked``."""
    per_token = (prediction - target).square().mean(dim=-1)
    return (per_token * masked).sum() / masked.sum()


class MotionDecoder(nn.Module):
    """MAMP's decoder: the visible tokens' latents projected to ``dim``, a learned mask token at
    every masked position, its own spatial and temporal position embeddings, ``depth`` blocks, a
    LayerNorm and a Linear to a token's ``out_dim`` (t_patch x C) values."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float,
                 time_tokens: int, joints: int, out_dim: int):
        super().__init__()
        if dim % heads:
            raise OptionsError(f"decoder_dim ({dim}) must be a multiple of decoder_heads "
                               f"({heads})")
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.spatial_position = nn.Parameter(torch.zeros(1, 1, joints, dim))
        self.temporal_position = nn.Parameter(torch.zeros(1, time_tokens, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.predict = nn.Linear(dim, out_dim)
        self.apply(init_weights)
        for parameter in (self.mask_token, self.spatial_position, self.temporal_position):
            nn.init.trunc_normal_(parameter, std=0.02)

    def place(self, latent: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """``(B, L, dim)``: the projected latents ``(B, K, in_dim)`` at the ``visible`` positions
        ``(B, K)``, the mask token everywhere else."""
        tokens = self.embed(latent)
        b, dim = tokens.shape[0], tokens.shape[-1]
        length = self.temporal_position.shape[1] * self.spatial_position.shape[2]
        grid = self.mask_token.to(tokens.dtype).expand(b, length, dim)  # bf16 under AMP
        return grid.scatter(1, visible[..., None].expand(-1, -1, dim), tokens)

    def forward(self, latent: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """The prediction ``(B, L, out_dim)`` at every token."""
        tokens = self.place(latent, visible)
        b, length, dim = tokens.shape
        tokens = tokens.view(b, -1, self.spatial_position.shape[2], dim)
        tokens = (tokens + self.spatial_position + self.temporal_position).view(b, length, dim)
        for block in self.blocks:
            tokens = block(tokens)
        return self.predict(self.norm(tokens))


def transformer_of(build_encoder: EncoderFactory, why: str) -> SkeletonTransformer:
    """The run's encoder, which must be the transformer (``why``: what the method does with its
    tokens, for the error)."""
    encoder = build_encoder()
    if not isinstance(encoder, SkeletonTransformer):
        raise OptionsError(f"{why} a transformer: it needs encoder 'transformer', not "
                           f"{type(encoder).__name__}")
    return encoder


def sequence_chain(augment: AugmentChain, encoder: SkeletonTransformer, layout: Layout
                   ) -> Augmentation:
    """The augmentation chain of a method that reads the real sequences into the transformer:
    its ``crop_resize`` (required) resizes to the encoder's frames, filled in when left out."""
    chain = {name: dict(values or {}) for name, values in augment.items()}
    if "crop_resize" not in chain:
        raise OptionsError("options.augment: the method reads the real sequences, so its chain "
                           "needs crop_resize (to the encoder's frames)")
    frames = chain["crop_resize"].setdefault("frames", encoder.frames)
    if frames != encoder.frames:
        raise OptionsError(f"options.augment.crop_resize.frames is {frames}, but the encoder "
                           f"reads {encoder.frames} frames: leave it out, or set the encoder's "
                           f"frames to {frames}")
    return compose(chain, layout)


class MAMP(Method):
    title = "MAMP"  # its name in the tables
    Options = MAMPOptions
    inputs: tuple[str, ...] = ()
    sequences = True

    def __init__(self, streams: tuple[str, ...], layout: Layout, build_encoder: EncoderFactory,
                 options: MAMPOptions):
        super().__init__(streams, layout, build_encoder, options)
        self.encoder = encoder = transformer_of(build_encoder, "MAMP masks the tokens of")
        self.augment = sequence_chain(options.augment, encoder, layout)
        self.decoder = MotionDecoder(
            encoder.out_dim, options.decoder_dim, options.decoder_depth, options.decoder_heads,
            encoder.mlp_ratio, encoder.frames // encoder.t_patch, layout.num_joints,
            encoder.t_patch * layout.dims)

    def encoders(self) -> dict[str, nn.Module]:
        return {self.streams[0]: self.encoder}

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        sequence = batch["sequence"]
        # float32 even under mixed precision: bf16 rounds coordinates near 1 m to steps of 4-8 mm,
        # about what a joint moves in a frame, and the target and the masking read differences
        with torch.autocast(sequence.device.type, enabled=False):
            joint = self.augment(sequence.float(), generator, lengths=batch["length"])
            x = compute_view(self.streams[0], joint, self.layout)
        return {"loss": self.loss(x, generator)}

    def loss(self, x: torch.Tensor, generator: torch.Generator,
             visible: torch.Tensor | None = None) -> torch.Tensor:
        """The masked prediction loss of an input ``(N, C, T, V, M)``; ``visible`` ``(N M, K)``
        fixes the visible tokens instead of drawing them."""
        encoder, t_patch = self.encoder, self.encoder.t_patch
        tokens = encoder.embed(x)
        b, time_tokens, joints, dim = tokens.shape
        tokens = tokens.flatten(1, 2)
        if visible is None:
            intensity = motion_intensity(patchify(fold_bodies(x), t_patch))
            count = visible_count(time_tokens * joints, self.options.mask_ratio)
            visible = choose_visible(intensity, count, self.options.tau, generator)
        latent = encoder.encode_tokens(tokens.gather(1, visible[..., None].expand(-1, -1, dim)))
        prediction = self.decoder(latent, visible)
        target = motion(x) if self.options.target == "motion" else x
        target = normalise_patches(patchify(fold_bodies(target), t_patch).flatten(1, 2))
        masked = torch.ones(b, time_tokens * joints, device=x.device,
                            dtype=target.dtype).scatter(1, visible, 0.0)
        return masked_mse(prediction, target, masked)
