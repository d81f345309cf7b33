"""Synthetic occlusion of joint sequences, for recognition-with-occlusion (PCM3 Table 4).

PCM3 (Sec. 4.3, "3) Action Recognition with Occlusion"), following RA-GCN (Song et al., ICIP 2019):
"For spatial occlusion, we randomly masked the body parts, e.g. trunk and right-hand. For temporal
occlusion, we randomly mask a block of frames to zeros. All masks are generated randomly with the
masking ratio sampled from [0.3, 0.7]." The body parts are those of its topology-based masking
(Sec. 3.2): trunk, two arms, two legs, i.e. ``layout.parts``. Where the paper is silent this module
chooses: the ratio is drawn per sample; for spatial occlusion it is the fraction of the parts
(``round(r * parts)``, at least one) and masked joints are zeroed like masked frames, in every
frame and every body; the temporal block is ``round(r * T)`` frames at a uniform start, over the
whole array (padding included). Rounding is round-half-up.

Occlude the joint sequence; motion and bone views are then derived from the occluded joints.
"""

from __future__ import annotations

import torch

from skelctl.skeletons import Layout

OCCLUSIONS = ("spatial", "temporal")


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5).long()


def _ratios(n: int, ratio: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    low, high = ratio
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"ratio must satisfy 0 <= low <= high <= 1, got {ratio}")
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def _spatial_mask(n: int, layout: Layout, generator: torch.Generator,
                  ratio: tuple[float, float]) -> torch.Tensor:
    """(N, V) True where a joint belongs to one of the sample's masked parts."""
    if not layout.parts:
        raise ValueError(f"layout {layout.name!r} has no body parts to occlude")
    parts = len(layout.parts)
    count = _round_half_up(_ratios(n, ratio, generator) * parts).clamp(1, parts)
    # a random order of the parts per sample; the first `count` of it are masked
    noise = torch.rand(n, parts, generator=generator, device=generator.device)
    rank = noise.argsort(1).argsort(1)
    masked = rank < count[:, None]
    membership = torch.zeros(parts, layout.num_joints, dtype=torch.bool)
    for p, joints in enumerate(layout.parts.values()):
        membership[p, list(joints)] = True
    return (masked.float() @ membership.to(masked.device).float()) > 0


def _temporal_mask(n: int, frames: int, generator: torch.Generator,
                   ratio: tuple[float, float]) -> torch.Tensor:
    """(N, T) True inside each sample's contiguous masked block of frames."""
    length = _round_half_up(_ratios(n, ratio, generator) * frames).clamp(0, frames)
    u = torch.rand(n, generator=generator, device=generator.device)
    start = torch.floor(u * (frames - length + 1)).long().clamp(max=frames - length)
    t = torch.arange(frames, device=length.device)
    return (t >= start[:, None]) & (t < (start + length)[:, None])


def occlude(x: torch.Tensor, kind: str, layout: Layout, generator: torch.Generator,
            ratio: tuple[float, float] = (0.3, 0.7)) -> torch.Tensor:
    """A copy of the joints ``x`` ``(N, C, T, V, M)`` with random ``spatial`` (body parts) or
    ``temporal`` (a block of frames) occlusion set to zero, independently per sample; all
    randomness comes from ``generator``."""
    if kind not in OCCLUSIONS:
        raise ValueError(f"unknown occlusion {kind!r}; known: {', '.join(OCCLUSIONS)}")
    if x.dim() != 5:
        raise ValueError(f"expected joints of shape (N, C, T, V, M), got {tuple(x.shape)}")
    n, _, frames, joints, _ = x.shape
    if kind == "spatial":
        if joints != layout.num_joints:
            raise ValueError(f"layout {layout.name!r} has {layout.num_joints} joints, "
                             f"the input {joints}")
        mask = _spatial_mask(n, layout, generator, ratio)[:, None, None, :, None]
    else:
        mask = _temporal_mask(n, frames, generator, ratio)[:, None, :, None, None]
    return x.masked_fill(mask.to(x.device), 0)
