"""ST-GCN as used by CrosSCLR: 10 spatial-temporal graph blocks at a quarter of the original width.

Input ``(N, C, T, V, M)``; the M persons are folded into the batch and their pooled features
averaged, so the output is ``(N, out_dim)`` (256 by default). ``features`` gives the last feature
map ``(N, M, out_dim, T', V)`` before pooling (for attention drops, decoders and masking).
"""

from __future__ import annotations

import torch
from torch import nn

from skelctl.models.graph import spatial_partition
from skelctl.skeletons import Layout


class Dropout(nn.Module):
    """Inverted dropout from a uniform draw: the same as nn.Dropout, but torch's CPU Bernoulli
    sampler is 2-4 times slower than comparing uniform numbers, and dropout was a quarter of a
    CPU training step."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        # ge_ writes 1.0/0.0 in the float tensor itself: no bool mask to cast back
        scale = torch.empty_like(x).uniform_().ge_(self.p).div_(1 - self.p)
        return x * scale


class GraphBlock(nn.Module):
    """Spatial graph convolution over K partition subsets, then a temporal convolution."""

    def __init__(self, in_channels: int, out_channels: int, num_subsets: int, num_joints: int,
                 stride: int = 1, dropout: float = 0.0, residual: bool = True,
                 kernel: int = 9):
        super().__init__()
        self.num_subsets = num_subsets
        self.gcn = nn.Conv2d(in_channels, out_channels * num_subsets, kernel_size=1)
        self.edge_importance = nn.Parameter(torch.ones(num_subsets, num_joints, num_joints))
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (kernel, 1), (stride, 1), ((kernel - 1) // 2, 0)),
            nn.BatchNorm2d(out_channels), Dropout(dropout))
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        self.stride = stride
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        n, _, t, v = x.shape
        k = self.num_subsets
        y = self.gcn(x)
        # sum_k A_k^T y_k over the joints. In channels-last memory every frame of y is a
        # (joints x subsets, channels) matrix, so this is one (V, K V) @ (K V, C) product per
        # frame: a batched matmul with the adjacency broadcast, and no transposing copies.
        mixing = (adjacency * self.edge_importance).permute(2, 1, 0).reshape(v, v * k)
        rows = y.permute(0, 2, 3, 1).reshape(n * t, v * k, -1)
        y = torch.bmm(mixing.expand(n * t, v, v * k), rows)
        y = self.tcn(y.view(n, t, v, -1).permute(0, 3, 1, 2))
        if self.residual is not None:
            # the frames a strided 1x1 convolution reads, then an unstrided one: the same sum,
            # without oneDNN's strided 1x1 channels-last backward, which on AVX2-only CPUs
            # writes past its buffer when there are fewer than 8 input channels (heap
            # corruption, then a hang or a crash; uxlfoundation/oneDNN#6035)
            y = y + self.residual(x[:, :, ::self.stride])
        return self.relu(y)


class STGCN(nn.Module):
    """ST-GCN encoder: ``hidden`` base channels (16 = a quarter of the original 64)."""

    def __init__(self, layout: Layout, in_channels: int | None = None, hidden: int = 16,
                 out_dim: int = 256, dropout: float = 0.5, partition: str = "spatial"):
        super().__init__()
        self.register_buffer("adjacency", torch.from_numpy(spatial_partition(layout, partition)))
        k, v = self.adjacency.shape[:2]
        in_channels = in_channels or layout.dims  # coordinates per joint
        self.data_bn = nn.BatchNorm1d(in_channels * v)
        widths = [(in_channels, hidden, 1), (hidden, hidden, 1), (hidden, hidden, 1),
                  (hidden, hidden, 1), (hidden, 2 * hidden, 2), (2 * hidden, 2 * hidden, 1),
                  (2 * hidden, 2 * hidden, 1), (2 * hidden, 4 * hidden, 2),
                  (4 * hidden, 4 * hidden, 1), (4 * hidden, out_dim, 1)]
        self.blocks = nn.ModuleList(
            GraphBlock(c_in, c_out, k, v, stride, dropout=0.0 if i == 0 else dropout,
                       residual=i > 0) for i, (c_in, c_out, stride) in enumerate(widths))
        self.out_dim = out_dim
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        """``(N, M, C, T', V)`` to ``(N, C)``: the mean over frames, joints and bodies."""
        return feature_map.mean(dim=(3, 4)).mean(dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's feature map ``(N, M, out_dim, T', V)``."""
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)
        x = self.data_bn(x)
        # (N M, C, T, V) in channels-last memory: the 1x1 and temporal convolutions, batch norms
        # and the graph product all run on it without reordering copies (a 1.4x faster CPU training step)
        x = x.view(n, m, v, c, t).permute(0, 1, 4, 2, 3).reshape(n * m, t, v, c).permute(0, 3, 1, 2)
        for block in self.blocks:
            x = block(x, self.adjacency)
        return x.view(n, m, *x.shape[1:])


def init_weights(module: nn.Module) -> None:
    """The CrosSCLR initialisation: conv/linear N(0, 0.02), bias 0; batch-norm scale N(1, 0.02)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
