"""Labelled subsets for the semi-supervised protocol.

AimCLR's ``Feeder_semi`` keeps ``percent`` of each class (not of the whole set), so every class
keeps its share of labels and a rare class is not lost by chance.
"""

from __future__ import annotations

import numpy as np


def sample_per_class(labels: np.ndarray, percent: float, seed: int) -> np.ndarray:
    """Positions into ``labels`` of a per-class random subset, sorted ascending (int64).

    Class ``c`` with ``n_c`` samples keeps ``round(percent / 100 * n_c)`` of them, at least one,
    drawn without replacement. The rounding is round-half-up (``floor(x + 0.5)``), not Python's
    banker's ``round`` that the reference feeder uses, so 1.5 keeps 2 and 2.5 keeps 3.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        positions = np.flatnonzero(labels == c)
        # percent * n / 100 is exact for integer percents, so halves are not lost to float error
        keep = max(1, int(np.floor(percent * len(positions) / 100 + 0.5)))
        chosen.append(rng.choice(positions, size=keep, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)
