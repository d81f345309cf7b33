"""Body selection, invalid frames, normalisation, resampling and the four views."""

import numpy as np
import pytest

from skelctl.data.bodies import Denoising, select_bodies, track_energy
from skelctl.data.clean import drop_invalid_frames, normalise, resample, rotations_between
from skelctl.data.synth import MOTIONS, perform, pose_sequence, rotation
from skelctl.data.views import bone, compute_view, motion, velocity
from skelctl.skeletons import KINECT20, NTU25

from conftest import random_rigid_motion


def person(motion_name="walk", frames=40, seed=0, shift=(0.0, 0.0, 3.0)):
    rng = np.random.default_rng(seed)
    body = pose_sequence(perform(motion_name, frames, rng), {"arm": 1, "leg": 1, "torso": 1})
    return (body + np.array(shift)).astype(np.float32)


def test_energy_ranking_keeps_the_most_active_bodies():
    still = np.repeat(person(frames=1), 40, axis=0)
    active = person("jump", 40)
    tracks = np.stack([still, active, person("walk", 40, seed=1)])
    chosen, dropped = select_bodies(tracks, 2, Denoising(enabled=False))
    energy = track_energy(tracks, tracks.any(axis=(2, 3)))
    order = np.argsort(-energy)
    np.testing.assert_array_equal(chosen, tracks[order[:2]])
    assert order[-1] == 0 and dropped == {"short track": 0, "spread noise": 0, "low energy": 1}


def test_energy_ignores_absent_frames():
    body = person()
    gappy = body.copy()
    gappy[10:20] = 0
    present = np.stack([body, gappy]).any(axis=(2, 3))
    energy = track_energy(np.stack([body, gappy]), present)
    expected = sum(np.concatenate([body[:10], body[20:]])[..., c].std() for c in range(3))
    assert energy[1] == pytest.approx(expected, rel=1e-5)


def test_denoising_drops_short_and_wide_tracks_and_counts_them():
    main = person("walk", 60)
    flicker = np.zeros_like(main)
    flicker[5:10] = person("jump", 5, seed=2)  # 5 frames <= 11
    furniture = np.zeros_like(main)
    furniture[..., 0] = np.linspace(-1, 1, 25)  # wide and flat, and very "energetic"
    furniture[..., 0] += np.random.default_rng(0).normal(0, 1.0, (60, 1))
    furniture[..., 2] = 3
    tracks = np.stack([furniture, main, flicker])
    chosen, dropped = select_bodies(tracks, 2)
    np.testing.assert_array_equal(chosen[0], main)
    assert not chosen[1].any()
    assert dropped == {"short track": 1, "spread noise": 1, "low energy": 0}
    # without denoising the furniture wins on energy
    chosen, _ = select_bodies(tracks, 2, Denoising(enabled=False))
    np.testing.assert_array_equal(chosen[0], furniture)


def test_denoising_never_drops_the_last_track():
    short = np.zeros((30, 25, 3), dtype=np.float32)
    short[:5] = person(frames=5)
    chosen, dropped = select_bodies(short[None], 2)
    np.testing.assert_array_equal(chosen[0], short)
    assert dropped["short track"] == 0


def ragged(*bodies):
    """(M, T, V, 3) samples to the (frames, offsets) layout of the store."""
    frames = [b.transpose(1, 3, 2, 0) for b in bodies]
    return np.concatenate(frames), np.cumsum([0] + [len(f) for f in frames])


def unragged(frames, offsets, i=0):
    return frames[offsets[i]:offsets[i + 1]].transpose(3, 0, 2, 1)


def test_drop_invalid_frames():
    bodies = np.stack([person(frames=10), np.zeros((10, 25, 3), np.float32)])
    bodies[:, [0, 4, 9]] = 0
    bodies[1, 5] = 1.0  # body 1 alone keeps frame 5
    empty = np.zeros((2, 4, 25, 3), np.float32)
    frames, offsets = drop_invalid_frames(*ragged(bodies, empty, bodies))
    np.testing.assert_array_equal(offsets, [0, 7, 7, 14])
    kept = unragged(frames, offsets)
    assert kept.shape == (2, 7, 25, 3)
    np.testing.assert_array_equal(kept[0, :3], bodies[0, 1:4])
    np.testing.assert_array_equal(unragged(frames, offsets, 2), kept)


def test_shoulder_normalisation_centres_and_aligns_every_frame():
    body = person("turn", 30)  # turns round: each frame needs its own rotation
    second = np.zeros_like(body)
    second[:15] = person("wave_left", 15, shift=(1, 0, 3))
    frames, offsets = ragged(np.stack([body, second]))
    out = unragged(normalise(frames, offsets, NTU25, "shoulder"), offsets)
    assert np.abs(out[0, :, NTU25.spine_shoulder]).max() < 1e-6
    np.testing.assert_allclose(out[1, :15, NTU25.spine_shoulder], 0, atol=1e-6)
    for b, frames in ((0, slice(None)), (1, slice(0, 15))):
        d = out[b, frames, NTU25.right_shoulder] - out[b, frames, NTU25.left_shoulder]
        np.testing.assert_allclose(d[:, 2], 0, atol=1e-5)
        assert (d[:, 0] > 0).all()
    assert not out[1, 15:].any()  # an absent body stays zero
    # lengths are preserved: rotation and translation only
    np.testing.assert_allclose(np.linalg.norm(out[0, :, 3] - out[0, :, 0], axis=-1),
                               np.linalg.norm(body[:, 3] - body[:, 0], axis=-1), rtol=1e-5)


def test_spine_normalisation_uses_body_zero_at_the_first_frame():
    tilt = rotation("x", np.array(0.3)) @ rotation("y", np.array(1.0))
    body = (person("bow", 20) - [0, 0, 3]) @ tilt.T + [0.5, 0.2, 3]
    partner = body + np.float32([1.0, 0, 0])
    scene = np.stack([body, partner]).astype(np.float32)
    other = np.stack([person("walk", 9), np.zeros((9, 25, 3), np.float32)])
    frames, offsets = ragged(other, scene)
    batch = normalise(frames, offsets, NTU25, "spine")
    out = unragged(batch, offsets, 1)
    alone, alone_offsets = ragged(scene)
    np.testing.assert_allclose(out, unragged(normalise(alone, alone_offsets, NTU25, "spine"),
                                             alone_offsets), atol=1e-6)  # batch-independent
    np.testing.assert_allclose(out[0, :, NTU25.spine_mid], 0, atol=1e-5)  # every frame
    first = out[0, 0]
    up = first[NTU25.spine_mid] - first[NTU25.spine_base]
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-5)
    across = first[NTU25.right_shoulder] - first[NTU25.left_shoulder]
    assert abs(across[1]) < 1e-5 and across[0] > 0  # in the x-z plane, pointing to +x
    # the partner keeps its offset from body 0 (one rigid motion for the whole scene)
    np.testing.assert_allclose(np.linalg.norm(out[1] - out[0], axis=-1), 1.0, rtol=1e-4)


@pytest.mark.parametrize("layout_name", ["ntu25", "kinect20", "openni15", "coco17"])
def test_body_frame_is_invariant_to_where_the_camera_stands(layout_name):
    """The body frame's output under a random rotation and translation of the whole recording is
    the same to 1e-5; the spine's ``spine`` convention is not (its second alignment moves)."""
    from skelctl.skeletons import LAYOUTS

    layout = LAYOUTS[layout_name]
    rng = np.random.default_rng(0)
    body = rng.normal(size=(2, 12, layout.num_joints, 3)).astype(np.float32)
    body[1, 8:] = 0  # body 1 leaves
    frames, offsets = ragged(body)
    reference = normalise(frames, offsets, layout, "bodyframe")
    for seed in range(5):
        rotation, shift = random_rigid_motion(seed)
        moved = (body @ rotation.T + shift) * body.any(axis=-1, keepdims=True)
        out = normalise(*ragged(moved.astype(np.float32)), layout, "bodyframe")
        np.testing.assert_allclose(out, reference, atol=1e-5)
    first = unragged(reference, offsets)[0, 0]  # body 0, frame 0: the frame's own axes
    hip_centre = (first[layout.spine_base] if layout.spine_base is not None
                  else (first[layout.left_hip] + first[layout.right_hip]) / 2)
    np.testing.assert_allclose(hip_centre, 0, atol=1e-5)
    if layout.spine_mid is not None:
        up = first[layout.spine_mid] - hip_centre
        np.testing.assert_allclose(up[:2], 0, atol=1e-5)
        assert up[2] > 0
    across = first[layout.left_hip] - first[layout.right_hip]
    assert abs(across[1]) < 1e-5 and across[0] > 0
    assert not unragged(reference, offsets)[1, 8:].any()  # an absent body stays zero


def test_the_spine_convention_depends_on_the_camera():
    rng = np.random.default_rng(1)
    body = rng.normal(size=(1, 12, 25, 3)).astype(np.float32)
    rotation, shift = random_rigid_motion(3)
    a = normalise(*ragged(body), NTU25, "spine")
    b = normalise(*ragged((body @ rotation.T + shift).astype(np.float32)), NTU25, "spine")
    assert np.abs(a - b).max() > 0.1


def test_a_chained_variant_equals_its_steps_by_hand():
    rng = np.random.default_rng(2)
    frames, offsets = ragged(rng.normal(size=(1, 9, 20, 3)).astype(np.float32),
                             rng.normal(size=(1, 4, 20, 3)).astype(np.float32))
    by_hand = normalise(normalise(frames, offsets, KINECT20, "bodyframe"), offsets, KINECT20,
                        "minmax")
    np.testing.assert_array_equal(normalise(frames, offsets, KINECT20, "bodyframe+minmax"),
                                  by_hand)
    assert by_hand.min() == -1 and by_hand.max() == 1
    with pytest.raises(ValueError, match="none repeated"):
        normalise(frames, offsets, KINECT20, "minmax+minmax")


def test_body_frame_names_the_joints_a_layout_lacks():
    from skelctl.skeletons import graphless

    with pytest.raises(ValueError, match="normalisation 'bodyframe' needs the joints left_hip, "
                                         "right_hip, spine_mid, which layout 'joints5'"):
        normalise(np.ones((2, 3, 5, 1), np.float32), [0, 2], graphless(5), "bodyframe+minmax")


def test_rotations_between_edge_cases():
    same, zero, flip, general = rotations_between([[0, 0, 2], [0, 0, 0], [0, 0, -1], [1, 2, 3]],
                                                  (0, 0, 1))
    np.testing.assert_allclose(same, np.eye(3))
    np.testing.assert_allclose(zero, np.eye(3))
    np.testing.assert_allclose(flip @ [0, 0, -1], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(general @ [1, 2, 3], [0, 0, np.sqrt(14)], atol=1e-12)
    np.testing.assert_allclose(general @ general.T, np.eye(3), atol=1e-12)
    [r] = rotations_between([[1, 2, 3]], (1, 0, 0))
    np.testing.assert_allclose(r @ [1, 2, 3], [np.sqrt(14), 0, 0], atol=1e-12)


def test_normalisation_needs_named_joints():
    from skelctl.skeletons import graphless

    with pytest.raises(ValueError, match="needs the joints spine_base, spine_mid, left_shoulder, "
                                         "right_shoulder, which layout 'joints5' does not name: "
                                         "use 'minmax' or 'none', or name them under "
                                         "'normalisation' in a layout file"):
        normalise(np.ones((2, 3, 5, 1), np.float32), [0, 2], graphless(5), "spine")
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(np.ones((2, 3, 25, 1), np.float32), [0, 2], NTU25, "zscore")


def test_resample_linear_known_values():
    ramps = np.concatenate([np.arange(4), np.arange(10), [7]]).astype(np.float32)  # 3 sequences
    out = resample(ramps[:, None], [0, 4, 14, 15], 8)[..., 0]
    np.testing.assert_allclose(out[0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    np.testing.assert_allclose(out[2], [7] * 8)  # one frame repeats
    down = resample(ramps[4:14, None], [0, 10], 5)[0, :, 0]
    np.testing.assert_allclose(down, [0.5, 2.5, 4.5, 6.5, 8.5])
    same = np.random.default_rng(0).normal(size=(7, 3, 25, 2)).astype(np.float32)
    np.testing.assert_allclose(resample(same, [0, 7], 7)[0], same)
    with pytest.raises(ValueError, match="no frames"):
        resample(same, [0, 0, 7], 5)


def test_views_known_values():
    x = np.zeros((3, 4, 25, 2), dtype=np.float32)  # (C, T, V, M)
    x[0, :, 0, 0] = [0, 1, 3, 6]
    m = motion(x)
    np.testing.assert_array_equal(m[0, :, 0, 0], [1, 2, 3, 0])
    v = velocity(x)
    np.testing.assert_array_equal(v[0, :, 0, 0], [1, 2, 3, 3])
    b = bone(x, NTU25)
    # spine base (0) has parent spine mid (1): bone = x0 - x1; the root (20) is zero
    np.testing.assert_array_equal(b[0, :, 0, 0], [0, 1, 3, 6])
    np.testing.assert_array_equal(b[0, :, 1, 0], [0, 0, 0, 0])
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(5, 3, 6, 25, 2)).astype(np.float32)
    b = compute_view("bone", batch, NTU25)
    assert not b[..., NTU25.center, :].any()
    for child, parent in NTU25.edges:
        np.testing.assert_array_equal(b[..., child, :], batch[..., child, :] - batch[..., parent, :])
    assert compute_view("joint", batch, NTU25) is batch
    with pytest.raises(ValueError, match="unknown view 'speed'"):
        compute_view("speed", batch, NTU25)


def test_every_synthetic_motion_moves():
    for name in MOTIONS:
        body = person(name, 60)
        assert np.abs(np.diff(body, axis=0)).sum() > 1.0, name
