"""The body frame from the mean pose (``meanbodyframe``) and per-coordinate min-max
(``coordminmax``): exact outputs on tiny inputs, the invariances they promise, composition."""

import numpy as np
import pytest

from skelctl.data.clean import (coordinate_min_max, mean_poses, normalisation_steps, normalise,
                                parse_variant)
from skelctl.skeletons import KINECT20, NTU25, Layout, graphless

from conftest import random_rigid_motion

# the four joints the body frame reads: origin, up, left and right hip
PELVIS = Layout(name="pelvis4", joint_names=("spine_base", "spine_mid", "left_hip", "right_hip"),
                spine_base=0, spine_mid=1, left_hip=2, right_hip=3)
SHIFT = np.array([1.0, 0.0, 3.0])  # no joint at the origin (an all-zero joint is an absent one)
R = 1 / np.sqrt(2)


def ragged(*sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sequences ``(M, T, V, 3)`` as one ragged batch ``(F, 3, V, M)`` and its offsets."""
    frames = np.concatenate([s.transpose(1, 3, 2, 0) for s in sequences]).astype(np.float32)
    return frames, np.cumsum([0] + [s.shape[1] for s in sequences])


def turning_pelvis() -> np.ndarray:
    """One body ``(1, 2, 4, 3)``, spine up along y: the hips along x in frame 0, along z in
    frame 1 (the body turned a quarter about the vertical)."""
    frame0 = [[0, 0, 0], [0, 1, 0], [1, 0, 0], [-1, 0, 0]]
    frame1 = [[0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1]]
    return (np.array([[frame0, frame1]], dtype=np.float64) + SHIFT).astype(np.float32)


def about_vertical(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)


def moved(body: np.ndarray, rotation: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``body`` ``(M, T, V, 3)`` rotated and shifted, its absent joints left at zero."""
    return ((body @ rotation.T + shift) * body.any(axis=-1, keepdims=True)).astype(np.float32)


# ---- meanbodyframe -------------------------------------------------------------------------

def test_mean_body_frame_known_output():
    """The mean pose has the hips along (1, 0, 1) / 2 and the spine along y: x = (1, 0, 1) / sqrt 2,
    z = y, y = z cross x = (1, 0, -1) / sqrt 2, origin at the spine base; each frame's hips lie
    45 degrees either side of the body's x axis. The first frame's body frame (``bodyframe``)
    puts frame 0's hips on x and frame 1's on -y instead."""
    frames, offsets = ragged(turning_pelvis())
    out = normalise(frames, offsets, PELVIS, "meanbodyframe")[..., 0].transpose(0, 2, 1)
    np.testing.assert_allclose(out, [[[0, 0, 0], [0, 0, 1], [R, R, 0], [-R, -R, 0]],
                                     [[0, 0, 0], [0, 0, 1], [R, -R, 0], [-R, R, 0]]], atol=1e-6)
    first = normalise(frames, offsets, PELVIS, "bodyframe")[..., 0].transpose(0, 2, 1)
    np.testing.assert_allclose(first[:, 2], [[1, 0, 0], [0, -1, 0]], atol=1e-6)


def test_mean_poses_average_body_zero_over_its_tracked_frames():
    """Sequence 0: body 0 at 2 and 4 in its tracked frames, absent in one (body 1 there); an
    empty sequence has no pose; sequence 2: one frame."""
    body0 = np.array([2.0, 0.0, 4.0, 7.0])[:, None, None] * np.ones((4, 3, 2))  # (F, C, V)
    body0[1] = 0
    body1 = np.ones((4, 3, 2))
    frames = np.stack([body0, body1], axis=-1).astype(np.float32)  # (F, C, V, M)
    poses = mean_poses(frames, np.array([0, 3, 3, 4]))
    np.testing.assert_allclose(poses, [np.full((3, 2), 3.0), np.full((3, 2), 7.0)])


def test_mean_body_frame_is_invariant_to_turning_about_the_vertical_and_to_any_rigid_motion():
    rng = np.random.default_rng(0)
    body = rng.normal(size=(2, 12, 25, 3)).astype(np.float32)
    body[1, 8:] = 0  # body 1 leaves
    body[0, 3] = 0  # body 0 untracked in one frame (body 1 still is)
    reference = normalise(*ragged(body), NTU25, "meanbodyframe")
    for angle in (0.3, np.pi / 2, 2.5):
        out = normalise(*ragged(moved(body, about_vertical(angle), SHIFT)), NTU25,
                        "meanbodyframe")
        np.testing.assert_allclose(out, reference, atol=1e-5)
    for seed in range(3):
        out = normalise(*ragged(moved(body, *random_rigid_motion(seed))), NTU25, "meanbodyframe")
        np.testing.assert_allclose(out, reference, atol=1e-5)
    assert not reference[3, :, :, 0].any() and not reference[8:, :, :, 1].any()  # absent: zero
    # the mean pose sits in its own frame: hip centre at 0, spine up along +z, hips along +x
    mean = mean_poses(reference, np.array([0, 12]))[0]
    np.testing.assert_allclose(mean[:, NTU25.spine_base], 0, atol=1e-5)
    up = mean[:, NTU25.spine_mid]
    across = mean[:, NTU25.left_hip] - mean[:, NTU25.right_hip]
    assert abs(up[0]) < 1e-5 and abs(up[1]) < 1e-5 and up[2] > 0
    assert abs(across[1]) < 1e-5 and across[0] > 0


def test_mean_body_frame_of_a_still_body_is_the_first_frames():
    rng = np.random.default_rng(1)
    still = np.repeat(rng.normal(size=(1, 1, 20, 3)), 5, axis=1).astype(np.float32)
    frames, offsets = ragged(still, rng.normal(size=(1, 4, 20, 3)))
    mean, first = (normalise(frames, offsets, KINECT20, step)
                   for step in ("meanbodyframe", "bodyframe"))
    np.testing.assert_allclose(mean[:5], first[:5], atol=1e-5)
    assert np.abs(mean[5:] - first[5:]).max() > 0.1  # a moving body: not the first frame's


def test_mean_body_frame_names_the_joints_a_layout_lacks():
    with pytest.raises(ValueError, match="normalisation 'meanbodyframe' needs the joints "
                                         "left_hip, right_hip, spine_mid, which layout 'joints5'"):
        normalise(np.ones((2, 3, 5, 1), np.float32), [0, 2], graphless(5), "meanbodyframe")


# ---- coordminmax ---------------------------------------------------------------------------

def test_coordinate_min_max_known_output():
    """Sequence 0 (3 frames): joint 0's x 1, 2, 5 to -1, -0.5, 1; its y constant (to 0); joint 1
    absent in frame 1 (left at 0, and out of its min and max). Sequence 1 (2 frames) scaled on
    its own."""
    joint0 = [[1, 4, 9], [2, 4, 8], [5, 4, 7], [10, 1, 1], [20, 3, 1]]
    joint1 = [[2, 2, 2], [0, 0, 0], [4, 6, 3], [1, 1, 1], [3, 3, 3]]
    frames = np.stack([joint0, joint1], axis=2)[..., None].astype(np.float32)  # (F, C, V, M)
    out = coordinate_min_max(frames, np.array([0, 3, 5]))[..., 0]
    np.testing.assert_allclose(out[:, :, 0], [[-1, 0, 1], [-0.5, 0, 0], [1, 0, -1],
                                              [-1, -1, 0], [1, 1, 0]])
    np.testing.assert_allclose(out[:, :, 1], [[-1, -1, -1], [0, 0, 0], [1, 1, 1],
                                              [-1, -1, -1], [1, 1, 1]])
    np.testing.assert_array_equal(normalise(frames, np.array([0, 3, 5]), graphless(2),
                                            "coordminmax")[..., 0], out)


def test_coordinate_min_max_spans_minus_one_to_one_in_every_coordinate():
    rng = np.random.default_rng(2)
    frames, offsets = ragged(rng.normal(size=(2, 9, 20, 3)), rng.normal(size=(2, 4, 20, 3)))
    out = normalise(frames, offsets, KINECT20, "coordminmax")
    for start, stop in zip(offsets[:-1], offsets[1:]):
        sequence = out[start:stop]  # every (axis, joint, body) reaches both ends
        np.testing.assert_allclose(sequence.min(axis=0), -1, atol=1e-6)
        np.testing.assert_allclose(sequence.max(axis=0), 1, atol=1e-6)
    # each coordinate's own affine map (a positive scale, any shift) changes nothing
    scale, shift = rng.uniform(0.5, 2, size=(1, 3, 20, 2)), rng.normal(size=(1, 3, 20, 2))
    np.testing.assert_allclose(normalise((frames * scale + shift).astype(np.float32), offsets,
                                         KINECT20, "coordminmax"), out, atol=1e-5)


def test_coordinate_min_max_of_a_single_joint_is_min_max_per_axis():
    frames, offsets = ragged(np.random.default_rng(3).normal(size=(1, 7, 1, 3)))
    np.testing.assert_allclose(normalise(frames, offsets, graphless(1), "coordminmax"),
                               normalise(frames, offsets, graphless(1), "minmax"), atol=1e-6)


def test_coordinate_min_max_keeps_an_absent_body_at_zero():
    rng = np.random.default_rng(4)
    body = rng.normal(size=(2, 6, 20, 3)).astype(np.float32)
    body[1] = 0
    out = normalise(*ragged(body), KINECT20, "coordminmax")
    assert not out[..., 1].any() and np.abs(out[..., 0]).max() == 1


# ---- composition ---------------------------------------------------------------------------

def test_the_new_steps_compose_in_order():
    rng = np.random.default_rng(5)
    body = rng.normal(size=(1, 10, 20, 3)).astype(np.float32)
    frames, offsets = ragged(body)
    chained = normalise(frames, offsets, KINECT20, "meanbodyframe+coordminmax")
    by_hand = normalise(normalise(frames, offsets, KINECT20, "meanbodyframe"), offsets, KINECT20,
                        "coordminmax")
    np.testing.assert_array_equal(chained, by_hand)
    # the other order turns the scaled coordinates: no longer within [-1, 1] coordinate-wise
    reversed_order = normalise(frames, offsets, KINECT20, "coordminmax+meanbodyframe")
    assert np.abs(reversed_order - chained).max() > 0.1
    # turned by its mean pose first, the scaled result does not depend on the camera
    out = normalise(*ragged(moved(body, *random_rigid_motion(7))), KINECT20,
                    "meanbodyframe+coordminmax")
    np.testing.assert_allclose(out, chained, atol=1e-4)
    # without the turn it does: the camera's axes are what gets scaled
    camera = normalise(*ragged(moved(body, *random_rigid_motion(7))), KINECT20, "coordminmax")
    assert np.abs(camera - normalise(frames, offsets, KINECT20, "coordminmax")).max() > 0.1


def test_the_new_steps_are_named_in_variants():
    assert normalisation_steps("meanbodyframe+coordminmax") == ("meanbodyframe", "coordminmax")
    assert parse_variant("upto50-meanbodyframe+minmax") == (50, "meanbodyframe+minmax", "upto")
    with pytest.raises(ValueError, match="did you mean 'coordminmax'"):
        parse_variant("50-coordminmx")
