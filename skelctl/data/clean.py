"""Cleaning a sample's chosen bodies: drop invalid frames, normalise, resample to a fixed length.

Arrays here are ``(M, T, V, 3)`` (body, frame, joint, xyz). Two normalisation conventions exist in
the field (see the notes), and both are provided:

``shoulder`` (CrosSCLR/AimCLR line, 50 frames): every frame of every body is centred on that body's
    own spine-shoulder joint, then rotated about the vertical y axis so that the shoulder vector
    (right minus left) lies along +x.
``spine`` (ISC/PCM3 line, 64 frames): every body is centred, frame by frame, on body 0's spine-mid
    joint; then the whole sequence is rotated so that body 0's hip-to-spine vector of the first
    frame points along +z and its shoulder vector (right minus left) along +x.
``none``: coordinates as recorded.

Joints of an absent body stay exactly zero in every convention.
"""

from __future__ import annotations

import numpy as np

from skelctl.skeletons import Layout

NORMALISATIONS = ("shoulder", "spine", "none")


def drop_invalid_frames(bodies: np.ndarray) -> np.ndarray:
    """Remove the frames in which every body is all zero (the sensor tracked nobody)."""
    return bodies[:, bodies.any(axis=(0, 2, 3))]


def normalise(bodies: np.ndarray, layout: Layout, convention: str) -> np.ndarray:
    """Apply a normalisation convention to ``(M, T, V, 3)``; returns a new float32 array."""
    if convention not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {convention!r}; known: {', '.join(NORMALISATIONS)}")
    if convention == "none":
        return bodies.astype(np.float32, copy=True)
    needed = ("spine_shoulder", "left_shoulder", "right_shoulder") if convention == "shoulder" \
        else ("spine_base", "spine_mid", "left_shoulder", "right_shoulder")
    if any(getattr(layout, j) is None for j in needed):
        raise ValueError(f"normalisation {convention!r} needs the joints {needed}, which layout "
                         f"{layout.name!r} does not name; use 'none'")
    present = bodies.any(axis=-1, keepdims=True)  # (M, T, V, 1): keeps absent joints at zero
    if convention == "shoulder":
        x = bodies - bodies[:, :, layout.spine_shoulder:layout.spine_shoulder + 1]
        across = x[:, :, layout.right_shoulder] - x[:, :, layout.left_shoulder]  # (M, T, 3)
        norm = np.hypot(across[..., 0], across[..., 2])
        safe = np.where(norm > 1e-8, norm, 1.0)
        cos = np.where(norm > 1e-8, across[..., 0] / safe, 1.0)[..., None]  # (M, T, 1)
        sin = np.where(norm > 1e-8, across[..., 2] / safe, 0.0)[..., None]
        out = np.empty_like(x)
        out[..., 0] = cos * x[..., 0] + sin * x[..., 2]
        out[..., 1] = x[..., 1]
        out[..., 2] = cos * x[..., 2] - sin * x[..., 0]
    else:
        x = (bodies - bodies[0:1, :, layout.spine_mid:layout.spine_mid + 1]) * present
        first = x[0, 0].astype(np.float64)
        rot_z = rotation_between(first[layout.spine_mid] - first[layout.spine_base], (0, 0, 1))
        first = first @ rot_z.T
        rot_x = rotation_between(first[layout.right_shoulder] - first[layout.left_shoulder],
                                 (1, 0, 0))
        out = x @ (rot_x @ rot_z).T.astype(np.float32)
    return (out * present).astype(np.float32, copy=False)


def rotation_between(vector: np.ndarray, target: tuple[float, float, float]) -> np.ndarray:
    """The 3x3 rotation turning ``vector`` towards ``target`` about their common normal.

    Identity when ``vector`` is zero or already parallel to the target.
    """
    v = np.asarray(vector, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    norm = np.linalg.norm(v)
    if norm < 1e-8:
        return np.eye(3)
    v = v / norm
    axis = np.cross(v, t)
    sin = np.linalg.norm(axis)
    cos = float(np.clip(v @ t, -1.0, 1.0))
    if sin < 1e-8:
        if cos > 0:
            return np.eye(3)
        # opposite: half turn about any axis normal to the target
        normal = np.cross(t, (1.0, 0.0, 0.0) if abs(t[0]) < 0.9 else (0.0, 1.0, 0.0))
        axis, sin, cos = normal / np.linalg.norm(normal), 0.0, -1.0
    else:
        axis = axis / sin
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + sin * k + (1 - cos) * (k @ k)


def resample(bodies: np.ndarray, frames: int, axis: int = 1) -> np.ndarray:
    """Linear interpolation of a sequence to ``frames`` frames along ``axis``.

    Sample positions follow ``align_corners=False`` (the convention of cv2.resize and
    F.interpolate used by the reference code): output frame i reads input position
    ``(i + 0.5) * L / frames - 0.5``, clamped to the valid range.
    """
    length = bodies.shape[axis]
    if length == 0:
        raise ValueError("cannot resample a sequence with no frames")
    pos = np.clip((np.arange(frames) + 0.5) * length / frames - 0.5, 0, length - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, length - 1)
    shape = [1] * bodies.ndim
    shape[axis] = frames
    weight = (pos - lo).reshape(shape).astype(np.float32)
    return (np.take(bodies, lo, axis=axis) * (1 - weight)
            + np.take(bodies, hi, axis=axis) * weight).astype(np.float32)
