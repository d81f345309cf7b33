"""The four input views (streams) computed from joint coordinates.

Arrays are ``(..., C, T, V, M)``: any leading batch dimensions, then channel, frame, joint, body.
The functions take numpy arrays or torch tensors alike (training derives views on the device,
after augmentation).

- joint: the coordinates themselves;
- motion: ``x[t+1] - x[t]``, the last frame zero;
- bone: ``x[v] - x[parent(v)]`` for the layout's child-parent pairs, the root bone zero;
- velocity: as motion, but the last frame repeats the one before it.
"""

from __future__ import annotations

import numpy as np

from skelctl.skeletons import Layout

VIEWS = ("joint", "motion", "bone", "velocity")
TIME_AXIS = -3


def motion(x: np.ndarray) -> np.ndarray:
    out = x * 0
    out[..., :-1, :, :] = x[..., 1:, :, :] - x[..., :-1, :, :]
    return out


def velocity(x: np.ndarray) -> np.ndarray:
    out = motion(x)
    if x.shape[TIME_AXIS] > 1:
        out[..., -1, :, :] = out[..., -2, :, :]
    return out


def bone(x: np.ndarray, layout: Layout) -> np.ndarray:
    return x - x[..., layout.parents, :]


def compute_view(name: str, joint: np.ndarray, layout: Layout) -> np.ndarray:
    """One named view of ``joint`` coordinates."""
    if name == "joint":
        return joint
    if name == "motion":
        return motion(joint)
    if name == "velocity":
        return velocity(joint)
    if name == "bone":
        return bone(joint, layout)
    raise ValueError(f"unknown view {name!r}; known: {', '.join(VIEWS)}")
