"""Choosing the bodies of a sample: optional denoising of spurious tracks, then energy ranking.

Denoising follows the SGN/PYSKL rules described in the notes: when a sample has more than one track,
tracks present in at most ``length_threshold`` frames are dropped, then tracks whose frames are
mostly "too wide" (x-extent > ``spread_ratio`` x y-extent in at least ``spread_noise_ratio`` of
their frames: furniture and other false detections) are dropped. The last remaining track is never
dropped. Ranking uses the 2s-AGCN energy: the sum over x, y, z of the standard deviation of the
track's coordinates over its present frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Denoising:
    enabled: bool = True
    length_threshold: int = 11
    spread_ratio: float = 0.8
    spread_noise_ratio: float = 0.69754


DROP_REASONS = ("short track", "spread noise", "low energy")


def track_energy(bodies: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per track ``(K,)``: sum over the axes (x, y, z) of the std of its coordinates over present
    frames.

    Absent frames are all zero, so plain sums over all frames equal sums over present ones.
    """
    count = np.maximum(present.sum(axis=1) * bodies.shape[2], 1)[:, None]  # (K, 1)
    flat = bodies.reshape(len(bodies), -1, bodies.shape[-1]).astype(np.float64)
    mean = flat.sum(axis=1) / count
    var = np.maximum(np.einsum("kfc,kfc->kc", flat, flat) / count - mean ** 2, 0)
    return np.sqrt(var).sum(axis=-1)


def choose_bodies(bodies: np.ndarray, max_bodies: int,
                  denoising: Denoising = Denoising()) -> tuple[np.ndarray, dict[str, int]]:
    """Which of the ``(K, T, V, C)`` tracks to keep, highest energy first: at most ``max_bodies``
    track indices, and how many tracks were dropped for each reason.

    The indices, not the chosen arrays, so that what travels with the tracks (per-joint scores)
    follows exactly the same choice and order.
    """
    dropped = dict.fromkeys(DROP_REASONS, 0)
    if len(bodies) == 1:  # the common case: nothing to denoise or rank
        return np.zeros(1, dtype=np.int64), dropped
    present = bodies.any(axis=(2, 3))  # (K, T)
    keep = present.any(axis=1)
    if denoising.enabled:
        for reason, bad in (("short track", present.sum(axis=1) <= denoising.length_threshold),
                            ("spread noise", _spread_noise(bodies, present, denoising))):
            remove = keep & bad
            if remove.any() and (keep & ~bad).any():
                dropped[reason] += int(remove.sum())
                keep &= ~bad
    candidates = np.flatnonzero(keep)
    ranked = candidates[np.argsort(-track_energy(bodies[candidates], present[candidates]),
                                   kind="stable")]
    dropped["low energy"] = max(len(ranked) - max_bodies, 0)
    return ranked[:max_bodies], dropped


def take_bodies(tracks: np.ndarray, chosen: np.ndarray, max_bodies: int) -> np.ndarray:
    """Tracks ``chosen`` of ``(K, T, ...)`` as ``(max_bodies, T, ...)`` float32, zero-filled."""
    out = np.zeros((max_bodies, *tracks.shape[1:]), dtype=np.float32)
    out[:len(chosen)] = tracks[chosen]
    return out


def select_bodies(bodies: np.ndarray, max_bodies: int,
                  denoising: Denoising = Denoising()) -> tuple[np.ndarray, dict[str, int]]:
    """``(K, T, V, 3)`` tracks to ``(max_bodies, T, V, 3)``, highest energy first, zero-filled.

    Returns the selected bodies and how many tracks were dropped for each reason.
    """
    chosen, dropped = choose_bodies(bodies, max_bodies, denoising)
    return take_bodies(bodies, chosen, max_bodies), dropped


def _spread_noise(bodies: np.ndarray, present: np.ndarray, denoising: Denoising) -> np.ndarray:
    extent = bodies.max(axis=2) - bodies.min(axis=2)  # (K, T, 3)
    wide = extent[..., 0] > denoising.spread_ratio * extent[..., 1]
    frames = np.maximum(present.sum(axis=1), 1)
    return (wide & present).sum(axis=1) / frames >= denoising.spread_noise_ratio
