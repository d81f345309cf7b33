"""Cleaning sequences: drop invalid frames, normalise, resample to a fixed length.

Every function works on a ragged batch: the frames of n sequences concatenated along the first
axis, ``frames`` of shape ``(sum of lengths, C, V, M)`` (C = 3, or 2 for image keypoints), plus ``offsets`` ``(n + 1,)`` so that
sequence i is ``frames[offsets[i]:offsets[i + 1]]`` (the layout of the store). A single sequence
is a batch with ``offsets = [0, L]``. Whole chunks are thus processed with a few array operations.

Two normalisation conventions exist in the field (see the notes), and both are provided:

``shoulder`` (CrosSCLR/AimCLR line, 50 frames): every frame of every body is centred on that body's
    own spine-shoulder joint, then rotated about the vertical y axis so that the shoulder vector
    (right minus left) lies along +x.
``spine`` (ISC/PCM3 line, 64 frames): every body is centred, frame by frame, on body 0's spine-mid
    joint; then each sequence is rotated so that body 0's hip-to-spine vector of its first frame
    points along +z and its shoulder vector (right minus left) along +x.
``bodyframe`` (Predict & Cluster, whose NW-UCLA arrays the CRRL line takes): one rotation and one
    translation per sequence, from body 0's first frame: the origin at the hip centre, z along
    hip centre -> spine, x along left hip - right hip made orthogonal to z, y = z cross x. The
    frame is orthonormal, so the output does not depend on where the camera stood (``spine``,
    two successive alignments of the hip-spine and shoulder vectors, is not). P&C's own matrix
    takes y = x cross z, a mirror image of this frame; a proper rotation is used here, which
    carries the same information. Layouts without a hip centre use the hips' midpoint, and
    without a spine joint the spine shoulder (or the shoulders' midpoint).
``meanbodyframe``: ``bodyframe``'s axes and origin taken from body 0's mean pose over the frames
    in which it is tracked instead of from its first frame, a single noisy estimate (on
    NW-UCLA, 1-NN on the flattened input after ``+minmax`` rises from 72.2 to 78.9 %). The mean
    of a rigidly moved sequence is the moved mean, so the output is as independent of the camera
    as ``bodyframe``'s.
``seqcentre`` (CTR-GCN's ``seq_translation``, whose arrays MAMP takes): one translation per
    sequence, no rotation and no scaling: every frame of every body minus body 0's spine-mid
    joint in the first frame where body 0 is tracked. Layouts without a spine-mid joint use
    their centre joint; a sequence in which body 0 is never tracked is left as it is.
``minmax`` (CRRL, Sec. IV-B): each dimension (axis) of each body of each sequence is scaled to
    [-1, 1] by its minimum and maximum over the sequence's frames and joints; a constant dimension
    becomes 0.
``coordminmax`` (the paper's "each dimension normalized individually" read per coordinate): each
    coordinate (joint and axis) of each body of each sequence scaled to [-1, 1] by its minimum
    and maximum over the frames in which that joint is present; a constant coordinate becomes 0
    and an absent joint stays 0. It discards the pose's proportions (an untrained encoder
    retrieves far worse than after ``minmax``): it is offered to compare the two readings.
``none``: coordinates as recorded.

Steps compose with ``+``, applied left to right: ``bodyframe+minmax`` puts each sequence in its
body's frame, then scales each axis (P&C's and CRRL's input); ``meanbodyframe+coordminmax``
turns by the mean pose, then scales each coordinate. A chain names each step once, and ``none``
stands alone.

Joints of an absent body stay exactly zero in every convention.

A variant (:func:`parse_variant`: ``[upto|stride]<frames>-<normalisation>``) names the frames,
the sampling and the normalisation of a processed store; :func:`views_range` applies one to a
range of samples of a cleaned store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from skelctl.keys import closest
from skelctl.skeletons import Layout

if TYPE_CHECKING:
    from skelctl.data.store import Store

NORMALISATIONS = ("shoulder", "spine", "bodyframe", "meanbodyframe", "seqcentre", "minmax",
                  "coordminmax", "none")
SAMPLINGS = ("", "upto", "stride")  # interpolate to F frames; at most F, evenly; P&C's stride


def lengths_of(offsets: np.ndarray) -> np.ndarray:
    return np.diff(np.asarray(offsets, dtype=np.int64))


def valid_frames(frames: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frames in which some body is tracked, as a mask ``(F,)``, and the offsets of the
    sequences they leave; the mask selects the same frames of any array parallel to ``frames``
    (per-joint scores)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    valid = frames.reshape(len(frames), -1).any(axis=1)
    counts = np.add.reduceat(valid, offsets[:-1]) if len(frames) else np.zeros(0, np.int64)
    counts[lengths_of(offsets) == 0] = 0  # reduceat reads one element for empty sequences
    return valid, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def drop_invalid_frames(frames: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove the frames in which every body is all zero (the sensor tracked nobody)."""
    valid, offsets = valid_frames(frames, offsets)
    return frames[valid], offsets


def normalisation_steps(convention: str) -> tuple[str, ...]:
    """``"bodyframe+minmax"`` to ``("bodyframe", "minmax")``; an unknown, repeated or combined
    ``none`` step is a ValueError naming the convention."""
    steps = tuple(convention.split("+"))
    unknown = [s for s in steps if s not in NORMALISATIONS]
    if unknown or len(set(steps)) < len(steps) or ("none" in steps and len(steps) > 1):
        hint = closest(unknown[0], NORMALISATIONS) if unknown else ""
        raise ValueError(f"unknown normalisation {convention!r}: steps joined by '+', each one "
                         f"of {', '.join(NORMALISATIONS)}, none repeated ('none' alone){hint}")
    return steps


def normalise(frames: np.ndarray, offsets: np.ndarray, layout: Layout,
              convention: str) -> np.ndarray:
    """Apply a normalisation convention (one step, or steps joined by ``+``) to a ragged batch;
    returns a new float32 array."""
    offsets = np.asarray(offsets, dtype=np.int64)
    out = frames.astype(np.float32, copy=True)
    for step in normalisation_steps(convention):
        if step == "minmax":
            out = min_max(out, offsets)
        elif step == "coordminmax":
            out = coordinate_min_max(out, offsets)
        elif step == "seqcentre":
            out = sequence_centring(out, offsets, layout)
        elif step != "none":
            out = body_alignment(out, offsets, layout, step)
    return out


def check_joints(layout: Layout, step: str) -> None:
    """A ValueError naming the joints a body-alignment step reads that the layout lacks."""
    needed = {"shoulder": ("spine_shoulder", "left_shoulder", "right_shoulder"),
              "spine": ("spine_base", "spine_mid", "left_shoulder", "right_shoulder"),
              "bodyframe": ("left_hip", "right_hip"),
              "meanbodyframe": ("left_hip", "right_hip")}[step]
    missing = [name for name in needed if getattr(layout, name) is None]
    has_up = any(getattr(layout, name) is not None for name in ("spine_mid", "spine_shoulder")) \
        or (layout.left_shoulder is not None and layout.right_shoulder is not None)
    if step in ("bodyframe", "meanbodyframe") and not has_up:  # z: a spine joint, or shoulders
        missing.append("spine_mid")
    if missing:
        raise ValueError(f"normalisation {step!r} needs the joints {', '.join(missing)}, which "
                         f"layout {layout.name!r} does not name: use 'minmax' or 'none', or "
                         f"name them under 'normalisation' in a layout file")


def body_alignment(frames: np.ndarray, offsets: np.ndarray, layout: Layout,
                   step: str) -> np.ndarray:
    """One of the steps that centre and turn the body: ``shoulder``, ``spine``, ``bodyframe``,
    ``meanbodyframe``."""
    if frames.shape[1] != 3:
        raise ValueError(f"normalisation {step!r} turns the body in 3D; the layout "
                         f"{layout.name!r} has {frames.shape[1]}D coordinates: use 'minmax' or "
                         f"'none'")
    check_joints(layout, step)
    present = frames.any(axis=1, keepdims=True)  # (F, 1, V, M): keeps absent joints at zero
    lengths = lengths_of(offsets)
    nonempty = lengths > 0
    if step == "shoulder":
        x = frames - frames[:, :, layout.spine_shoulder:layout.spine_shoulder + 1]
        across = x[:, :, layout.right_shoulder] - x[:, :, layout.left_shoulder]  # (F, 3, M)
        norm = np.hypot(across[:, 0], across[:, 2])  # (F, M)
        aligned = norm > 1e-8
        safe = np.where(aligned, norm, 1.0)
        cos = np.where(aligned, across[:, 0] / safe, 1.0)[:, None]  # (F, 1, M)
        sin = np.where(aligned, across[:, 2] / safe, 0.0)[:, None]
        out = np.empty_like(x)
        out[:, 0] = cos * x[:, 0] + sin * x[:, 2]
        out[:, 1] = x[:, 1]
        out[:, 2] = cos * x[:, 2] - sin * x[:, 0]
        return (out * present).astype(np.float32, copy=False)
    if step == "spine":
        x = (frames - frames[:, :, layout.spine_mid:layout.spine_mid + 1, :1]) * present
        first = x[offsets[:-1][nonempty], :, :, 0].astype(np.float64)  # (n, 3, V)
        rot_z = rotations_between(first[:, :, layout.spine_mid] - first[:, :, layout.spine_base],
                                  (0.0, 0.0, 1.0))
        first = rot_z @ first
        rot_x = rotations_between(first[:, :, layout.right_shoulder]
                                  - first[:, :, layout.left_shoulder], (1.0, 0.0, 0.0))
        rotation = rot_x @ rot_z
    else:
        pose = (mean_poses(frames, offsets) if step == "meanbodyframe"
                else frames[offsets[:-1][nonempty], :, :, 0].astype(np.float64))  # (n, 3, V)
        origin, rotation = body_frames(pose, layout)
        x = (frames - np.repeat(origin.astype(np.float32), lengths[nonempty],
                                axis=0)[:, :, None, None]) * present
    per_frame = np.repeat(rotation.astype(np.float32), lengths[nonempty], axis=0)  # (F, 3, 3)
    out = np.einsum("fij,fjvm->fivm", per_frame, x)
    return (out * present).astype(np.float32, copy=False)


def mean_poses(frames: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Body 0's mean pose ``(n, C, V)`` (float64) over the frames in which it is tracked, for
    each of the n non-empty sequences; zero for a sequence in which it never is."""
    lengths = lengths_of(offsets)
    starts = offsets[:-1][lengths > 0]
    body = frames[..., 0].astype(np.float64)  # (F, C, V)
    if len(starts) == 0:
        return np.zeros((0, *body.shape[1:]))
    tracked = body.reshape(len(body), -1).any(axis=1)
    # untracked frames are zero, so summing every frame sums the tracked ones; over the
    # non-empty sequences only, each reduction spans exactly one sequence's frames
    sums = np.add.reduceat(body, starts, axis=0)
    counts = np.add.reduceat(tracked.astype(np.int64), starts)
    return sums / np.maximum(counts, 1)[:, None, None]


def body_frames(pose: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """P&C's body frame of each sequence from one pose of it ``(n, 3, V)`` (its first frame, or
    its mean pose): the origin ``(n, 3)`` and the rotation ``(n, 3, 3)`` whose rows are the
    body's x, y and z axes. A degenerate frame (the spine or the hips of zero length) gives the
    identity."""
    def joint(index: int | None) -> np.ndarray | None:
        return None if index is None else pose[:, :, index]

    hips = joint(layout.left_hip), joint(layout.right_hip)
    origin = joint(layout.spine_base)
    if origin is None:
        origin = (hips[0] + hips[1]) / 2
    up = joint(layout.spine_mid)
    if up is None:
        up = joint(layout.spine_shoulder)
    if up is None:
        up = (joint(layout.left_shoulder) + joint(layout.right_shoulder)) / 2
    z = up - origin
    z_norm = np.linalg.norm(z, axis=1, keepdims=True)
    z = z / np.where(z_norm > 1e-8, z_norm, 1.0)
    across = hips[0] - hips[1]
    x = across - (across * z).sum(axis=1, keepdims=True) * z
    x_norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(x_norm > 1e-8, x_norm, 1.0)
    rotation = np.stack([x, np.cross(z, x), z], axis=1)
    degenerate = (z_norm[:, 0] <= 1e-8) | (x_norm[:, 0] <= 1e-8)
    rotation[degenerate] = np.eye(3)
    return origin, rotation


def sequence_centring(frames: np.ndarray, offsets: np.ndarray, layout: Layout) -> np.ndarray:
    """CTR-GCN's ``seq_translation``: each sequence, every frame and body, minus one point: the
    spine-mid joint (else the layout's centre) of body 0 in the first frame where body 0 has a
    non-zero coordinate. Absent joints stay zero; a sequence without body 0 is unchanged."""
    joint = layout.spine_mid if layout.spine_mid is not None else layout.center
    lengths = lengths_of(offsets)
    nonempty = lengths > 0
    tracked = frames[..., 0].reshape(len(frames), -1).any(axis=1)  # (F,): body 0 in frame f
    position = np.where(tracked, np.arange(len(frames)), len(frames))
    origin = np.zeros((len(lengths), frames.shape[1]), dtype=frames.dtype)  # (n, C)
    if nonempty.any():
        # over the non-empty sequences only, each reduction spans exactly one sequence's frames
        first = np.minimum.reduceat(position, offsets[:-1][nonempty])
        found = first < offsets[1:][nonempty]  # the first tracked frame is the sequence's own
        rows = np.flatnonzero(nonempty)[found]
        origin[rows] = frames[first[found], :, joint, 0]
    present = frames.any(axis=1, keepdims=True)  # (F, 1, V, M): keeps absent joints at zero
    out = frames - np.repeat(origin, lengths, axis=0)[:, :, None, None]
    return (out * present).astype(np.float32, copy=False)


def min_max(frames: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per sequence, axis and body, ``2 (x - min) / (max - min) - 1`` with the minimum and maximum
    over all frames and joints; 0 where max == min."""
    lengths = lengths_of(offsets)
    if (lengths == 0).any():
        raise ValueError("cannot normalise a sequence with no frames")
    per_frame = frames.min(axis=2, keepdims=True), frames.max(axis=2, keepdims=True)  # over V
    low = np.repeat(np.minimum.reduceat(per_frame[0], offsets[:-1], axis=0), lengths, axis=0)
    high = np.repeat(np.maximum.reduceat(per_frame[1], offsets[:-1], axis=0), lengths, axis=0)
    span = high - low
    scaled = 2 * (frames - low) / np.where(span > 0, span, 1) - 1
    return np.where(span > 0, scaled, 0).astype(np.float32)


def coordinate_min_max(frames: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per sequence, coordinate (axis and joint) and body, ``2 (x - min) / (max - min) - 1`` with
    the minimum and maximum over the frames in which the joint is present (not all zero); 0
    where max == min and wherever the joint is absent."""
    lengths = lengths_of(offsets)
    if (lengths == 0).any():
        raise ValueError("cannot normalise a sequence with no frames")
    present = frames.any(axis=1, keepdims=True)  # (F, 1, V, M)
    low = np.minimum.reduceat(np.where(present, frames, np.inf), offsets[:-1], axis=0)
    high = np.maximum.reduceat(np.where(present, frames, -np.inf), offsets[:-1], axis=0)
    never = np.isinf(low)  # a joint absent from every frame of its sequence
    low[never], high[never] = 0, 0
    low, high = np.repeat(low, lengths, axis=0), np.repeat(high, lengths, axis=0)
    span = high - low
    varies = present & (span > 0)
    scaled = 2 * (frames - low) / np.where(varies, span, 1) - 1
    return np.where(varies, scaled, 0).astype(np.float32)


def rotations_between(vectors: np.ndarray, target: tuple[float, float, float]) -> np.ndarray:
    """``(n, 3, 3)`` rotations turning each of ``vectors`` ``(n, 3)`` towards ``target`` about
    their common normal (Rodrigues). Identity for a zero vector or one already along the target;
    a half turn for one pointing the opposite way."""
    v = np.asarray(vectors, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(target, dtype=np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.where(norm > 1e-8, v / np.where(norm > 1e-8, norm, 1.0), t)
    axis = np.cross(v, t)
    sin = np.linalg.norm(axis, axis=1)
    cos = np.clip(v @ t, -1.0, 1.0)
    opposite = (sin < 1e-8) & (cos < 0)
    # half turn about an axis normal to the target
    normal = np.cross(t, (1.0, 0.0, 0.0) if abs(t[0]) < 0.9 else (0.0, 1.0, 0.0))
    axis = np.where((sin >= 1e-8)[:, None], axis / np.maximum(sin, 1e-12)[:, None],
                    normal / np.linalg.norm(normal))
    sin = np.where(opposite, 0.0, sin)
    k = np.zeros((len(v), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k[:, 1, 0], k[:, 2, 0], k[:, 2, 1] = axis[:, 2], -axis[:, 1], axis[:, 0]
    rot = np.eye(3) + sin[:, None, None] * k + (1 - cos)[:, None, None] * (k @ k)
    rot[(sin < 1e-8) & ~opposite] = np.eye(3)
    return rot


def subsample(frames: np.ndarray, offsets: np.ndarray, at_most: int,
              stride: bool = False) -> np.ndarray:
    """Every sequence with at most ``at_most`` frames, zero-padded to ``(n, at_most, ...)``.

    Longer sequences keep frames ``floor(i * L / at_most)`` (evenly spaced, the first included);
    with ``stride``, P&C's rule instead: every ``floor(L / at_most)``-th frame from the first,
    the first ``at_most`` of them (so the end of a sequence of fewer than ``2 at_most`` frames is
    cut). Shorter sequences keep all their frames. Padding frames are exactly zero, so a
    consumer recovers a sequence's length as one past its last non-zero frame (the CRRL line's
    variable-length input).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    sizes = lengths_of(offsets)
    if (sizes == 0).any():
        raise ValueError("cannot subsample a sequence with no frames")
    steps = np.arange(at_most)[None]
    long = sizes[:, None] > at_most
    if stride:
        index = steps * np.where(long, sizes[:, None] // at_most, 1)
    else:
        index = np.where(long, steps * sizes[:, None] // at_most, steps)
    valid = steps < sizes[:, None]
    picked = frames[offsets[:-1, None] + np.minimum(index, (sizes - 1)[:, None])]
    return (picked * valid.reshape(*valid.shape, *[1] * (frames.ndim - 1))).astype(np.float32)


def resample(frames: np.ndarray, offsets: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of every sequence to ``length`` frames: ``(n, length, ...)``.

    Sample positions follow ``align_corners=False`` (the convention of cv2.resize and
    F.interpolate used by the reference code): output frame i reads input position
    ``(i + 0.5) * L / length - 0.5``, clamped to the sequence.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    sizes = lengths_of(offsets)
    if (sizes == 0).any():
        raise ValueError("cannot resample a sequence with no frames")
    pos = np.clip((np.arange(length) + 0.5)[None] * sizes[:, None] / length - 0.5,
                  0, (sizes - 1)[:, None])  # (n, length)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, (sizes - 1)[:, None])
    weight = (pos - lo).astype(np.float32).reshape(*pos.shape, *[1] * (frames.ndim - 1))
    start = np.asarray(offsets[:-1], dtype=np.int64)[:, None]
    return (frames[start + lo] * (1 - weight) + frames[start + hi] * weight).astype(np.float32)


def parse_variant(variant: str) -> tuple[int, str, str]:
    """``"50-shoulder"`` to ``(50, "shoulder", "")``; ``"upto50-bodyframe+minmax"`` to
    ``(50, "bodyframe+minmax", "upto")`` (variable length, at most 50 frames). A malformed
    variant is a ValueError naming it."""
    frames, _, normalisation = variant.partition("-")
    sampling = next((p for p in SAMPLINGS[1:] if frames.startswith(p)), "")
    frames = frames.removeprefix(sampling)
    valid = frames.isdigit() and int(frames) >= 2
    try:
        normalisation_steps(normalisation)
    except ValueError:
        valid = False
    if not valid:
        unknown = [s for s in normalisation.split("+") if s not in NORMALISATIONS]
        hint = closest(unknown[0], NORMALISATIONS) if unknown else ""
        hint = f" ({hint[2:]})" if hint else ""
        raise ValueError(f"variant {variant!r}{hint} must be [upto|stride]<frames>-<normalisation> "
                         f"with frames >= 2 and normalisation one of {', '.join(NORMALISATIONS)}, "
                         f"or several joined by '+' (e.g. upto50-bodyframe+minmax)")
    return int(frames), normalisation, sampling


def views_range(cleaned: Store, start: int, stop: int, frames: int,
                normalisation: str, sampling: str = "") -> dict[str, Any]:
    """Normalised sequences and resampled joints of samples ``start..stop-1`` (in a worker).

    The other views are cheap whole-chunk array operations, done by the caller: returning only
    the joints keeps what crosses the process boundary small.
    """
    layout = cleaned.layout()
    data, offsets = cleaned.sequences(start, stop)  # (F, C, V, M)
    data = normalise(data, offsets, layout, normalisation)

    def to_frames(x: np.ndarray) -> np.ndarray:  # (F, ...) to (n, frames, ...)
        return (subsample(x, offsets, frames, stride=sampling == "stride") if sampling
                else resample(x, offsets, frames))

    joint = to_frames(data).transpose(0, 2, 1, 3, 4)  # (n, C, T, V, M)
    result = {"sequences": (data, offsets), "joint": np.ascontiguousarray(joint),
              "sequence_scores": None, "score": None}
    if cleaned.has_scores:
        # confidences are not coordinates: not normalised, but taken to T frames exactly as
        # the joints are (the same positions and weights: the same function on the same offsets)
        scores = cleaned.sequence_scores(start, stop)  # (F, V, M)
        result["sequence_scores"] = scores
        result["score"] = np.ascontiguousarray(to_frames(scores)[:, None])  # (n, 1, T, V, M)
    return result
