"""The ``seqcentre`` normalisation: CTR-GCN's ``seq_translation`` (one translation per sequence,
from body 0's spine-mid joint in its first tracked frame), alone, chained, and in a variant."""

import numpy as np
import pytest

from skelctl.data.clean import normalise, parse_variant, sequence_centring
from skelctl.skeletons import KINECT20, NTU25, get_layout


def two_sequences() -> tuple[np.ndarray, np.ndarray]:
    """A ragged batch (F, 3, 25, 2): sequence 0 of 3 frames whose body 0 is untracked in frame 0
    (only body 1 there), sequence 1 of 2 frames with body 0 alone. Joint v of body m in frame f
    of the batch sits at (100 f + v, 10 m, -v)."""
    frames = np.zeros((5, 3, 25, 2), dtype=np.float32)
    f, v, m = np.meshgrid(np.arange(5), np.arange(25), np.arange(2), indexing="ij")
    frames[:, 0], frames[:, 1], frames[:, 2] = 100 * f + v, 10 * m, -v
    frames[0, :, :, 0] = 0  # body 0 untracked in the first frame of sequence 0
    frames[3:, :, :, 1] = 0  # sequence 1: no second body
    return frames, np.array([0, 3, 5])


def test_every_frame_and_body_minus_body_zero_spine_mid_in_its_first_tracked_frame():
    frames, offsets = two_sequences()
    out = normalise(frames, offsets, NTU25, "seqcentre")
    # sequence 0: body 0 is first tracked in frame 1, whose spine mid (joint 1) is (101, 0, -1)
    np.testing.assert_array_equal(out[:3], (frames[:3] - np.float32([101, 0, -1])[:, None, None])
                                  * frames[:3].any(axis=1, keepdims=True))
    # by hand: body 1, frame 0, joint 4 was (4, 10, -4); body 0, frame 2, joint 1 (201, 0, -1)
    assert out[0, :, 4, 1].tolist() == [4 - 101, 10, -4 + 1]
    assert out[2, :, 1, 0].tolist() == [100, 0, 0]
    assert not out[0, :, :, 0].any()  # the untracked body stays zero
    # sequence 1: its own first frame (batch frame 3), spine mid (301, 0, -1): frame 3 ends at 0
    np.testing.assert_array_equal(out[3, :, 1, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[4, :, 1, 0], [100, 0, 0])
    assert not out[3:, :, :, 1].any()
    assert out.dtype == np.float32


def test_one_point_per_sequence_so_the_motion_and_the_pose_are_kept():
    frames, offsets = two_sequences()
    out = normalise(frames, offsets, NTU25, "seqcentre")
    np.testing.assert_allclose(out[2] - out[1], frames[2] - frames[1])  # no rotation, no scale
    np.testing.assert_allclose(out[1, :, 5, 0] - out[1, :, 9, 0],
                               frames[1, :, 5, 0] - frames[1, :, 9, 0])


def test_centring_twice_changes_nothing():
    """CTR-GCN's arrays come centred: centring them again on import leaves them as they are."""
    frames, offsets = two_sequences()
    once = normalise(frames, offsets, NTU25, "seqcentre")
    np.testing.assert_array_equal(normalise(once, offsets, NTU25, "seqcentre"), once)


def test_the_joint_comes_from_the_layout():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(4, 3, KINECT20.num_joints, 1)).astype(np.float32)
    out = normalise(frames, np.array([0, 4]), KINECT20, "seqcentre")
    assert KINECT20.joint_names[KINECT20.spine_mid] == "spine"
    spine = KINECT20.spine_mid
    np.testing.assert_allclose(out, frames - frames[0, :, spine:spine + 1])
    # COCO-17 names no spine joint: its centre (the nose, joint 0); 2D works as well
    coco = get_layout("coco17-2d")
    frames = rng.normal(size=(4, 2, 17, 1)).astype(np.float32)
    out = normalise(frames, np.array([0, 4]), coco, "seqcentre")
    np.testing.assert_allclose(out, frames - frames[0, :, coco.center:coco.center + 1])
    assert coco.joint_names[coco.center] == "nose"


def test_a_sequence_without_body_zero_and_an_empty_one_are_left_as_they_are():
    frames = np.zeros((3, 3, 25, 2), dtype=np.float32)
    frames[:2, :, :, 1] = 5.0  # sequence 0: only body 1
    frames[2, :, :, 0] = 7.0  # sequence 2 (after an empty sequence 1): body 0
    out = sequence_centring(frames, np.array([0, 2, 2, 3]), NTU25)
    np.testing.assert_array_equal(out[:2], frames[:2])
    assert not out[2].any()  # centred on its own spine mid (7, 7, 7)


def test_chained_after_and_before_other_steps():
    frames, offsets = two_sequences()
    centred = normalise(frames, offsets, NTU25, "seqcentre")
    np.testing.assert_array_equal(normalise(frames, offsets, NTU25, "seqcentre+minmax"),
                                  normalise(centred, offsets, NTU25, "minmax"))
    shoulder = normalise(frames, offsets, NTU25, "shoulder")
    np.testing.assert_array_equal(normalise(frames, offsets, NTU25, "shoulder+seqcentre"),
                                  normalise(shoulder, offsets, NTU25, "seqcentre"))
    # after the shoulder step every body sits on its own spine shoulder, so the spine mid of
    # body 0 in sequence 0's frame 1 is the origin: (1 - 20, 0, -1 + 20) turned about y
    turned = shoulder[1, :, 1, 0]
    np.testing.assert_allclose(normalise(frames, offsets, NTU25, "shoulder+seqcentre")[1, :, 1, 0],
                               [0, 0, 0], atol=1e-6)
    assert np.linalg.norm(turned) == pytest.approx(np.sqrt(19 ** 2 + 19 ** 2), rel=1e-6)


def test_variants_name_it():
    assert parse_variant("120-seqcentre") == (120, "seqcentre", "")
    assert parse_variant("upto300-seqcentre+minmax") == (300, "seqcentre+minmax", "upto")
    with pytest.raises(ValueError, match=r"variant '64-seqcenter' \(did you mean 'seqcentre'"):
        parse_variant("64-seqcenter")
