"""The skeleton transformer of MAMP (Mao et al., ICCV 2023): every joint of every ``t_patch``
frames is a token.

Input ``(N, C, T, V, M)`` with ``T == frames``; the M bodies are folded into the batch. A token
is one joint over ``t_patch`` frames: its ``t_patch x C`` values go through a linear patch
embedding, then a learned spatial position ``(1, 1, V, dim)`` and a learned temporal position
``(1, frames / t_patch, 1, dim)`` are added (MAMP: 4 frames, 120 frames, 30 x 25 tokens).
``depth`` pre-norm blocks of global attention over all tokens (``heads`` heads, MLP ratio
``mlp_ratio``, qkv bias, GELU) and a final LayerNorm follow. The feature is the mean of the final
norm's output over bodies, token times and joints (a zero second body counts, as in MAMP's
linear probe).

``embed`` and ``encode_tokens`` split the forward pass so that a masked method (MAMP) runs the
blocks on its visible tokens only; ``num_layers`` and ``layer_of`` number the parameters for a
layer-wise learning-rate decay as MAE's ``param_groups_lrd`` does.

Initialisation as MAMP's code: position embeddings trunc-normal 0.02, Linear layers
Xavier-uniform with zero bias, LayerNorms 1 and 0; the patch embedding keeps PyTorch's default
(MAMP's is a Conv2d, which its Linear-only Xavier rule skips; a Linear's default is the same
draw).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from skelctl.options import Fraction, PositiveFloat, PositiveInt
from skelctl.skeletons import Layout


def fold_bodies(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, T, V, M)`` to ``(N M, T, V, C)``: each body a sequence of its own."""
    n, c, t, v, m = x.shape
    return x.permute(0, 4, 2, 3, 1).reshape(n * m, t, v, c)


def patchify(x: torch.Tensor, t_patch: int) -> torch.Tensor:
    """``(B, T, V, C)`` to ``(B, T / t_patch, V, t_patch C)``: a joint's values over each
    ``t_patch`` frames, frame-major (``[x_t0, y_t0, z_t0, x_t1, ...]``)."""
    b, t, v, c = x.shape
    return x.view(b, t // t_patch, t_patch, v, c).transpose(2, 3).reshape(
        b, t // t_patch, v, t_patch * c)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: each sample's residual branch is dropped with probability p, the kept
    ones scaled by 1 / (1 - p)."""
    if not training or p == 0:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
    return x * keep.ge_(p).div_(1 - p)


class Attention(nn.Module):
    """Multi-head self-attention over all tokens: ``softmax(Q K^T / sqrt(d)) V`` per head of
    width d, the heads concatenated and projected."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(
            2, 0, 3, 1, 4)
        # the fused kernel never holds the (tokens x tokens) weights of all heads at once
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, length, dim))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


def init_weights(module: nn.Module) -> None:
    """MAMP's (MAE's) initialisation: Linear Xavier-uniform with zero bias, LayerNorm 1 and 0."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SkeletonTransformer(nn.Module):
    """MAMP's encoder: 8 blocks of width 256, 8 heads, tokens of 4 frames, 120 frames."""

    def __init__(self, layout: Layout, dim: PositiveInt = 256, depth: PositiveInt = 8,
                 heads: PositiveInt = 8, mlp_ratio: PositiveFloat = 4.0,
                 t_patch: PositiveInt = 4, frames: PositiveInt = 120,
                 drop_path: Fraction = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        if drop_path >= 1:
            raise ValueError(f"drop_path ({drop_path}) must be below 1: at 1 every block would "
                             f"be dropped")
        if frames % t_patch:
            raise ValueError(f"frames ({frames}) must be a multiple of t_patch ({t_patch}): a "
                             f"token holds t_patch frames")
        self.in_channels, self.num_joints = layout.dims, layout.num_joints
        self.t_patch, self.frames, self.mlp_ratio = t_patch, frames, mlp_ratio
        self.out_dim = dim
        self.num_layers = depth + 1  # the embeddings are layer 0, block i layer i + 1
        self.patch_embed = nn.Linear(t_patch * layout.dims, dim)
        self.spatial_position = nn.Parameter(torch.zeros(1, 1, layout.num_joints, dim))
        self.temporal_position = nn.Parameter(torch.zeros(1, frames // t_patch, 1, dim))
        # stochastic depth grows linearly from 0 at the first block to drop_path at the last
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, rate) for rate in rates)
        self.norm = nn.LayerNorm(dim)
        self.apply(init_weights)
        self.patch_embed.reset_parameters()  # PyTorch's default, as MAMP's Conv2d embedding
        nn.init.trunc_normal_(self.spatial_position, std=0.02)
        nn.init.trunc_normal_(self.temporal_position, std=0.02)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, V, M)`` to the tokens ``(N M, T / t_patch, V, dim)``, positions added."""
        c, t, v = x.shape[1:4]
        if (c, v) != (self.in_channels, self.num_joints):
            raise ValueError(f"transformer built for {self.in_channels} coordinates of "
                             f"{self.num_joints} joints, got input of shape {tuple(x.shape)} "
                             f"(N, C, T, V, M)")
        if t % self.t_patch:
            raise ValueError(f"transformer input has {t} frames, not a multiple of t_patch "
                             f"({self.t_patch}): a token holds t_patch frames")
        if t != self.frames:
            raise ValueError(f"transformer built for {self.frames} frames (its temporal position "
                             f"embedding's length) got {t}: resample the clips to "
                             f"{self.frames} frames or build it with frames={t}")
        tokens = self.patch_embed(patchify(fold_bodies(x), self.t_patch))
        return tokens + self.spatial_position + self.temporal_position

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The blocks and the final norm over ``(B, L, dim)`` tokens (all, or the visible ones)."""
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm's output ``(N, M, T / t_patch, V, dim)``."""
        n, m = x.shape[0], x.shape[-1]
        tokens = self.embed(x)
        encoded = self.encode_tokens(tokens.flatten(1, 2))
        return encoded.view(n, m, *tokens.shape[1:])

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        """``(N, M, T', V, dim)`` to ``(N, dim)``: the mean over bodies, token times and joints."""
        return feature_map.mean(dim=(1, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    def layer_of(self, name: str) -> int:
        """The layer of a parameter (by its name in ``named_parameters()``) for layer-wise
        learning-rate decay, as MAE's ``param_groups_lrd``: 0 for the patch and position
        embeddings, i + 1 for block i, ``num_layers`` (depth + 1) for the final norm."""
        if name not in dict(self.named_parameters()):
            raise ValueError(f"transformer has no parameter {name!r}")
        if name.startswith(("patch_embed.", "spatial_position", "temporal_position")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers
