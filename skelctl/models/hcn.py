"""HCN: the Hierarchical Co-occurrence Network (Li et al. 2018), ISC's image-based encoder.

A body's sequence is an image: frames by joints, the coordinates its channels. Two branches read
it, one on the positions and one on the motion (frame differences, resized back to the frame
count), each

- point level: a 1x1 convolution (``channels``, ReLU), then a (3, 1) convolution over time to
  ``frames`` channels;
- then the joints become the channels (the co-occurrence step: every later convolution mixes all
  joints), the image now frames by the previous channels: a 3x3 convolution to ``channels / 2``
  and a 2x2 max-pool, a 3x3 convolution to ``channels``, channel dropout and a max-pool.

The two branches' maps are concatenated, then two 3x3 convolutions (``2 * channels`` and
``4 * channels``, each with ReLU, channel dropout and a max-pool). Persons share the weights and
are fused by the element-wise maximum of their maps; no batch norm. The feature is the fused map
flattened: ``4 * channels * ceil(frames / 16) ** 2`` (4096 for the defaults, 64 frames; the
width after the transpose is the (3, 1) convolution's ``frames`` channels, not the joints, so the
joint count changes only the input of the first convolution after the transpose).

This follows the ISC authors' ``moco/HCN.py`` (which follows the HCN authors' PyTorch port): its
ReLUs only after the point-level and the two fusion convolutions, Xavier-uniform convolutions with
zero biases, and the classifier left out (ISC's feature is the 4096-d map). Its max-pools round
down; these round up (``ceil_mode``), the same network whenever ``frames`` is a multiple of 16
(ISC's 64), and one that still pools to at least one cell for a short clip.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from skelctl.skeletons import Layout


class HCNBranch(nn.Module):
    """One branch (positions or motion) up to its second max-pool: ``(B, C, T, V)`` to
    ``(B, channels, ceil(T / 4), ceil(frames / 4))``."""

    def __init__(self, in_channels: int, num_joints: int, frames: int, channels: int,
                 dropout: float):
        super().__init__()
        self.point = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
        self.temporal = nn.Conv2d(channels, frames, (3, 1), padding=(1, 0))
        self.joints = nn.Sequential(nn.Conv2d(num_joints, channels // 2, 3, padding=1),
                                    nn.MaxPool2d(2, ceil_mode=True))
        self.cooccurrence = nn.Sequential(nn.Conv2d(channels // 2, channels, 3, padding=1),
                                          nn.Dropout2d(dropout), nn.MaxPool2d(2, ceil_mode=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.temporal(self.point(x))  # (B, frames, T, V)
        # the joints become the channels: (B, V, T, frames)
        return self.cooccurrence(self.joints(y.transpose(1, 3)))


class HCN(nn.Module):
    """HCN over exactly ``frames`` frames (the ISC line resamples every clip to 64)."""

    def __init__(self, layout: Layout, in_channels: int | None = None, num_persons: int = 2,
                 frames: int = 64, channels: int = 64, dropout: float = 0.5):
        super().__init__()
        if frames < 2:
            raise ValueError(f"HCN needs at least 2 frames (its motion branch reads frame "
                             f"differences), not frames={frames}")
        in_channels = in_channels or layout.dims  # coordinates per joint
        v = layout.num_joints
        self.frames = frames
        self.num_persons = num_persons
        self.position = HCNBranch(in_channels, v, frames, channels, dropout)
        self.motion = HCNBranch(in_channels, v, frames, channels, dropout)
        self.fusion = nn.Sequential(
            nn.Conv2d(2 * channels, 2 * channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(2 * channels, 4 * channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout), nn.MaxPool2d(2, ceil_mode=True))
        cells = -(-frames // 16)  # four max-pools of 2 along both axes, rounding up
        self.out_dim = 4 * channels * cells * cells
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # the authors' init
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        """``(N, M, C, T', F')`` to ``(N, C T' F')``: the element-wise maximum over the bodies,
        flattened."""
        return feature_map.amax(dim=1).flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Each body's last map ``(N, M, 4 * channels, ceil(frames / 16), ceil(frames / 16))``,
        before the bodies are fused."""
        n, c, t, v, m = x.shape
        if t != self.frames:
            raise ValueError(f"HCN built for {self.frames} frames got {t}: its image is "
                             f"frames wide, so resample the clips to {self.frames} frames (the "
                             f"ISC line's crop-resize) or build it with frames={t}")
        if m != self.num_persons:
            raise ValueError(f"encoder built for {self.num_persons} bodies, got {m}")
        # the bodies share the weights: folded into the batch
        x = x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)
        # frame differences, stretched back to t frames by linear interpolation
        motion = F.interpolate(x[:, :, 1:] - x[:, :, :-1], size=(t, v), mode="bilinear",
                               align_corners=False)
        y = self.fusion(torch.cat([self.position(x), self.motion(motion)], dim=1))
        return y.view(n, m, *y.shape[1:])
