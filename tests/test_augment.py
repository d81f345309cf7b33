"""skelctl/augment.py: every augmentation in AUGMENTATIONS on known inputs and by its invariants
(shape and dtype kept, the same draws for the same seed, the identity at its zero setting),
compose()'s order, layout, lengths and ``either`` branch, check_chain's messages, and PCM3's
masking and mixing by body part."""

import inspect
import math

import pytest
import torch

from skelctl import augment
from skelctl.options import OptionsError
from skelctl.skeletons import KINECT20, LAYOUTS, NTU25, PART_NAMES, graphless

from conftest import gen

COCO2D = LAYOUTS["coco17-2d"]  # 17 joints, 2 coordinates


def run(name, x, generator, layout=NTU25, **options):
    """``AUGMENTATIONS[name]`` on ``x`` as compose() calls it (flip is given the layout)."""
    function = augment.AUGMENTATIONS[name]
    if function is augment.flip:
        options["layout"] = layout
    return function(x, generator, **options)


def batch(layout=NTU25, n=8, t=12, m=2, dtype=torch.float32, seed=0):
    return torch.randn(n, layout.dims, t, layout.num_joints, m, generator=gen(seed), dtype=dtype)


# --- moved from tests/methods/test_learning.py ------------------------------------------------

def test_shear_matrix_has_unit_diagonal_and_bounded_shear():
    x = torch.zeros(6, 3, 1, 3, 1)
    x[:, :, 0, :, 0] = torch.eye(3)  # joint j holds the unit vector e_j
    out = augment.shear(x, gen(), amplitude=0.3)
    matrices = out[:, :, 0, :, 0]  # column j = A e_j
    assert torch.allclose(torch.diagonal(matrices, dim1=1, dim2=2), torch.ones(6, 3))
    off = matrices[:, ~torch.eye(3, dtype=torch.bool)]
    assert off.abs().max() <= 0.3 and off.abs().min() > 0
    assert not torch.allclose(matrices[0], matrices[1])  # per sample


def test_temporal_crop_is_a_shifted_window_with_reflection():
    t, pad = 12, 2
    x = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).repeat(50, 3, 1, 25, 2)
    out = augment.temporal_crop(x, gen(), padding_ratio=6)
    assert out.shape == x.shape
    padded = torch.cat([torch.arange(pad).flip(0), torch.arange(t),
                        torch.arange(t - pad, t).flip(0)]).float()
    starts = set()
    for row in out[:, 0, :, 0, 0]:
        matches = [s for s in range(2 * pad + 1) if torch.equal(row, padded[s:s + t])]
        assert matches, row
        starts.add(matches[0])
    assert len(starts) > 1 and max(starts) <= 2 * pad


def test_crop_resize_bounds():
    x = torch.arange(40, dtype=torch.float32).view(1, 1, 40, 1, 1).repeat(20, 3, 1, 2, 1)
    same = augment.crop_resize(x, gen(), min_ratio=1.0, max_ratio=1.0)
    assert torch.allclose(same, x)
    out = augment.crop_resize(x, gen(), min_ratio=0.5, max_ratio=0.5, frames=10)
    assert out.shape == (20, 3, 10, 2, 1)
    values = out[:, 0, :, 0, 0]
    assert (values.diff(dim=1) >= 0).all()  # a resampled increasing window
    assert (values[:, -1] - values[:, 0] <= 20).all() and values.min() >= 0 and values.max() <= 39
    lengths = torch.full((20,), 10)
    padded = augment.crop_resize(x, gen(), min_ratio=1.0, max_ratio=1.0, lengths=lengths)
    assert padded[:, 0, :, 0, 0].max() <= 9  # only the valid frames are read


def test_other_augmentations_invariants():
    x = torch.randn(8, 3, 10, 25, 2)
    flipped = augment.flip(x, gen(), NTU25, p=1.0)
    assert torch.equal(augment.flip(flipped, gen(), NTU25, p=1.0), x)
    assert torch.equal(flipped[:, :, :, 4], x[:, :, :, 8])
    rotated = augment.rotate(x, gen())
    assert torch.allclose(rotated.norm(dim=1), x.norm(dim=1), atol=1e-5)
    assert torch.equal(augment.gaussian_noise(x, gen(), p=0.0), x)
    const = torch.ones(4, 3, 20, 25, 2)
    assert torch.allclose(augment.gaussian_blur(const, gen(), p=1.0), const, atol=1e-6)
    masked = augment.axis_mask(x, gen(), p=1.0)
    zero_axes = (masked.abs().sum(dim=(2, 3, 4)) == 0).sum(dim=1)
    assert (zero_axes == 1).all()
    jittered = augment.joint_jitter(x, gen(), joints=5)
    assert ((jittered - x).abs().sum(dim=(1, 2, 4)) > 0).sum(dim=1).eq(5).all()
    pipeline = augment.compose({"crop": {}, "shear": {"amplitude": 0.5}, "flip": {}}, NTU25)
    assert torch.equal(pipeline(x, gen(3)), pipeline(x, gen(3)))  # seeded
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.compose({"cutout": {}}, NTU25)


# --- every augmentation: shape, dtype, seeded draws, the identity at its zero setting -------

# each augmentation with settings under which it always acts (p = 1 where it has a chance)
ACTING = {"shear": {}, "crop": {}, "crop_resize": {"min_ratio": 0.3, "max_ratio": 0.8},
          "jitter": {}, "rotate": {}, "flip": {"p": 1.0}, "noise": {"p": 1.0},
          "blur": {"kernel": 5, "p": 1.0}, "axis_mask": {"p": 1.0}, "time_flip": {"p": 1.0},
          "corrupt": {}}

# the settings at which an augmentation leaves the batch as it is
IDENTITY = [("shear", {"amplitude": 0.0}), ("crop", {"padding_ratio": 13}),
            ("crop_resize", {"min_ratio": 1.0, "max_ratio": 1.0}), ("jitter", {"std": 0.0}),
            ("jitter", {"joints": 0}), ("rotate", {"max_degrees": 0.0, "minor_degrees": 0.0}),
            ("flip", {"p": 0.0}), ("noise", {"p": 0.0}), ("noise", {"std": 0.0}),
            ("blur", {"p": 0.0}), ("axis_mask", {"p": 0.0}), ("time_flip", {"p": 0.0})]
NO_IDENTITY = {"corrupt"}  # at least one joint is always corrupted (see its test)


def test_every_augmentation_is_covered_here():
    assert set(ACTING) == set(augment.AUGMENTATIONS)
    assert {name for name, _ in IDENTITY} | NO_IDENTITY == set(augment.AUGMENTATIONS)


@pytest.mark.parametrize("layout", [NTU25, COCO2D], ids=["ntu25", "coco17-2d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(ACTING))
def test_shape_and_dtype_kept_and_seeded(name, dtype, layout):
    x = batch(layout, dtype=dtype)
    before = x.clone()
    out = run(name, x, gen(3), layout, **ACTING[name])
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.equal(x, before)  # the input is not changed in place
    assert not torch.equal(out, x)  # it acted
    assert torch.equal(run(name, x, gen(3), layout, **ACTING[name]), out)  # same seed, same draws


@pytest.mark.parametrize("name, options", IDENTITY,
                         ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in IDENTITY])
def test_identity_at_the_zero_setting(name, options):
    x = batch()
    assert torch.equal(run(name, x, gen(), **options), x)


# --- shear -------------------------------------------------------------------------------------

def test_shear_is_one_matrix_per_sample_for_every_frame_joint_and_body():
    eye = torch.zeros(6, 3, 1, 3, 1)
    eye[:, :, 0, :, 0] = torch.eye(3)
    matrices = augment.shear(eye, gen(5), amplitude=0.4)[:, :, 0, :, 0]  # column j = A e_j
    x = torch.randn(6, 3, 7, 3, 2, generator=gen(1))  # the matrix draw depends on N and C only
    expected = torch.einsum("nij,njtvm->nitvm", matrices, x)
    torch.testing.assert_close(augment.shear(x, gen(5), amplitude=0.4), expected)


def test_shear_of_2d_keypoints_is_a_2x2_matrix():
    x = torch.zeros(16, 2, 1, 2, 1)
    x[:, :, 0, :, 0] = torch.eye(2)
    matrices = augment.shear(x, gen(), amplitude=0.2)[:, :, 0, :, 0]
    assert torch.equal(torch.diagonal(matrices, dim1=1, dim2=2), torch.ones(16, 2))
    off = torch.stack([matrices[:, 0, 1], matrices[:, 1, 0]])
    assert off.abs().max() <= 0.2 and (off > 0).any() and (off < 0).any()


# --- temporal crop -----------------------------------------------------------------------------

def test_temporal_crop_shifts_every_channel_joint_and_body_alike():
    n, c, t, v, m = 16, 3, 12, 5, 2
    frame = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1)
    offset = 100 * torch.arange(c * v * m, dtype=torch.float32).view(1, c, 1, v, m)
    out = augment.temporal_crop((frame + offset).expand(n, -1, -1, -1, -1), gen(),
                                padding_ratio=4)
    frames = out - offset  # the source frame each output frame was taken from
    assert torch.equal(frames, frames[:, :1, :, :1, :1].expand_as(frames))
    assert frames.min() >= 0 and frames.max() <= t - 1


# --- crop and resize ---------------------------------------------------------------------------

def test_crop_resize_of_the_whole_sequence_is_linear_interpolation():
    x = torch.randn(3, 3, 10, 4, 2, generator=gen())
    for frames in (24, 7):
        out = augment.crop_resize(x, gen(), min_ratio=1.0, max_ratio=1.0, frames=frames)
        flat = x.permute(0, 1, 3, 4, 2).reshape(-1, 1, 10)
        expected = torch.nn.functional.interpolate(flat, size=frames, mode="linear",
                                                   align_corners=False)
        expected = expected.reshape(3, 3, 4, 2, frames).permute(0, 1, 4, 2, 3)
        torch.testing.assert_close(out, expected)


def test_crop_resize_reads_each_sample_within_its_length():
    t = 40
    x = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).repeat(3, 3, 1, 2, 1)
    lengths = torch.tensor([5, 12, 40])
    out = augment.crop_resize(x, gen(), min_ratio=1.0, max_ratio=1.0, frames=16,
                              lengths=lengths)
    assert out.shape == (3, 3, 16, 2, 1)
    for sample, length in enumerate(lengths.tolist()):  # the valid frames, resized
        expected = torch.nn.functional.interpolate(
            torch.arange(length, dtype=torch.float32).view(1, 1, -1), size=16, mode="linear",
            align_corners=False).view(16)
        torch.testing.assert_close(out[sample, 0, :, 0, 0], expected)
    random = augment.crop_resize(x.repeat(20, 1, 1, 1, 1), gen(), lengths=lengths.repeat(20))
    assert (random[:, 0, :, 0, 0].amax(dim=1) <= lengths.repeat(20) - 1).all()


def test_crop_resize_takes_at_least_min_frames_but_never_past_the_length():
    t = 40
    x = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).repeat(10, 3, 1, 1, 1)
    # floor(0.1 * 40) = 4 frames: from the first to the last frame of the crop is 3
    short = augment.crop_resize(x, gen(), min_ratio=0.1, max_ratio=0.1)[:, 0, :, 0, 0]
    assert torch.equal(short[:, -1] - short[:, 0], torch.full((10,), 3.0))
    # min_frames 20: a 20-frame window, resized to 40 frames, spans 19
    wide = augment.crop_resize(x, gen(), min_ratio=0.1, max_ratio=0.1, min_frames=20)
    assert torch.equal(wide[:, 0, -1, 0, 0] - wide[:, 0, 0, 0, 0], torch.full((10,), 19.0))
    # a sample shorter than min_frames is taken whole
    whole = augment.crop_resize(x, gen(), min_ratio=0.1, max_ratio=0.1, min_frames=20,
                                lengths=torch.full((10,), 8))[:, 0, :, 0, 0]
    assert torch.equal(whole[:, 0], torch.zeros(10)) and torch.equal(whole[:, -1],
                                                                    torch.full((10,), 7.0))


# --- joint jitter ------------------------------------------------------------------------------

def test_joint_jitter_noises_the_same_joints_in_every_frame_and_body_at_its_std():
    x = torch.zeros(64, 3, 50, 25, 2)
    out = augment.joint_jitter(x, gen(), joints=5, std=0.02)
    moved = out != 0  # (N, C, T, V, M)
    per_joint = moved.any(dim=(1, 2, 4))  # (N, V)
    assert per_joint.sum(dim=1).eq(5).all()
    chosen = per_joint[:, None, None, :, None].expand_as(moved)
    assert moved[chosen].all() and not moved[~chosen].any()  # every frame and body of each
    assert out[chosen].std().item() == pytest.approx(0.02, rel=0.03)


# --- rotation ----------------------------------------------------------------------------------

def unit_vectors(n, c=3):
    x = torch.zeros(n, c, 1, c, 1)
    x[:, :, 0, :, 0] = torch.eye(c)
    return x


def test_rotate_is_a_proper_rotation_bounded_by_its_angles():
    matrices = augment.rotate(unit_vectors(200), gen())[:, :, 0, :, 0]
    eye = torch.eye(3).expand(200, 3, 3)
    torch.testing.assert_close(matrices @ matrices.transpose(1, 2), eye, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(matrices), torch.ones(200))
    # one axis by up to 30 degrees, the two others by up to 1: at most 32 degrees in all
    angle = torch.acos(((matrices.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1))
    assert angle.max() <= math.radians(32) and angle.max() > math.radians(20)


@pytest.mark.parametrize("options, low, high", [({}, 0, 30), ({"sign": -1.0}, -30, 0),
                                                ({"symmetric": True}, -30, 30)])
def test_rotate_turns_2d_keypoints_in_the_image_plane(options, low, high):
    turned = augment.rotate(unit_vectors(300, c=2), gen(), **options)[:, :, 0, 0, 0]  # R e_x
    degrees = torch.rad2deg(torch.atan2(turned[:, 1], turned[:, 0]))
    assert degrees.min() >= low - 1e-4 and degrees.max() <= high + 1e-4
    assert (degrees > 1).any() == (high > 0) and (degrees < -1).any() == (low < 0)
    x = batch(COCO2D)
    back = augment.rotate(augment.rotate(x, gen(4), **options), gen(4),
                          **{**options, "sign": -options.get("sign", 1.0)})
    torch.testing.assert_close(back, x, atol=1e-5, rtol=0)  # the same angles, turned back


# --- flip --------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_flip_uses_the_layouts_mirror_permutation(layout):
    mirror = list(layout.flip)
    assert sorted(mirror) == list(range(layout.num_joints))  # a permutation
    assert [mirror[j] for j in mirror] == list(range(layout.num_joints))  # that is its inverse
    x = batch(layout)
    assert torch.equal(augment.flip(x, gen(), layout, p=1.0), x[:, :, :, mirror])
    for left, right in layout.mirror_pairs:
        assert torch.equal(augment.flip(x, gen(), layout, p=1.0)[:, :, :, left],
                           x[:, :, :, right])


def test_flip_mirrors_whole_samples_with_probability_p():
    x = batch(KINECT20, n=64)
    out = augment.flip(x, gen(), KINECT20, p=0.5)
    mirrored = x[:, :, :, list(KINECT20.flip)]
    kept = [torch.equal(a, b) for a, b in zip(out, x)]
    flipped = [torch.equal(a, b) for a, b in zip(out, mirrored)]
    assert all(k != f for k, f in zip(kept, flipped))  # each sample: one or the other
    assert 16 < sum(flipped) < 48
    chance = torch.rand(64, generator=gen()) < 0.5  # the one draw flip makes
    assert flipped == chance.tolist()


# --- Gaussian noise ----------------------------------------------------------------------------

def test_gaussian_noise_has_its_std_and_zero_mean():
    x = torch.zeros(32, 3, 20, 25, 2)
    out = augment.gaussian_noise(x, gen(), std=0.1, p=1.0)
    assert out.std().item() == pytest.approx(0.1, rel=0.02)
    assert abs(out.mean().item()) < 0.002


def test_gaussian_noise_touches_whole_samples_with_probability_p():
    x = batch(n=64)
    out = augment.gaussian_noise(x, gen(), std=0.05, p=0.5)
    changed = (out != x).flatten(1)
    assert (changed.all(dim=1) | ~changed.any(dim=1)).all()  # all of a sample or none
    assert 16 < int(changed.all(dim=1).sum()) < 48


# --- Gaussian blur -----------------------------------------------------------------------------

@pytest.mark.parametrize("normalised", [True, False])
def test_gaussian_blur_of_an_impulse_is_the_kernel(normalised):
    x = torch.zeros(2, 3, 21, 4, 1)
    x[:, :, 10] = 1.0
    out = augment.gaussian_blur(x, gen(), kernel=5, sigma=(1.0, 1.0), p=1.0,
                                normalised=normalised)
    weights = torch.exp(-torch.arange(-2, 3, dtype=torch.float32) ** 2 / 2)
    if normalised:
        weights = weights / weights.sum()
    expected = torch.zeros(21)
    expected[8:13] = weights
    torch.testing.assert_close(out, expected.view(1, 1, 21, 1, 1).expand_as(x))


def test_unnormalised_blur_scales_a_constant_by_the_kernel_sum():
    const = torch.ones(4, 3, 20, 25, 2)
    out = augment.gaussian_blur(const, gen(), kernel=15, sigma=(1.0, 1.0), p=1.0,
                                normalised=False)
    total = sum(math.exp(-k * k / 2) for k in range(-7, 8))  # about sqrt(2 pi)
    torch.testing.assert_close(out, const * total)
    assert total == pytest.approx(math.sqrt(2 * math.pi), rel=1e-3)


def test_gaussian_blur_replicates_the_edge_frames():
    x = torch.zeros(1, 1, 12, 1, 1)
    x[:, :, :6] = 1.0  # a step: the first half at 1
    out = augment.gaussian_blur(x, gen(), kernel=5, sigma=(1.0, 1.0), p=1.0)[0, 0, :, 0, 0]
    assert out[0] == pytest.approx(1.0) and out[-1] == pytest.approx(0.0)  # edges held
    assert (out.diff() <= 1e-7).all() and 0 < out[5] < 1 and 0 < out[6] < 1


# --- axis mask ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", [NTU25, COCO2D], ids=["ntu25", "coco17-2d"])
def test_axis_mask_zeroes_exactly_one_axis_when_it_fires(layout):
    x = batch(layout, n=64)
    out = augment.axis_mask(x, gen(), p=0.5)
    zeroed = (out == 0).flatten(2).all(dim=2)  # (N, C): an axis zero everywhere
    fired = zeroed.any(dim=1)
    assert (zeroed.sum(dim=1) <= 1).all() and 16 < int(fired.sum()) < 48
    keep = ~zeroed[:, :, None, None, None].expand_as(x)
    assert torch.equal(out[keep], x[keep])  # the other axes and the other samples as they were


# --- time flip ---------------------------------------------------------------------------------

def test_time_flip_plays_backwards_and_twice_is_the_identity():
    x = batch(n=32)
    assert torch.equal(augment.time_flip(x, gen(), p=1.0), x.flip(2))
    assert torch.equal(augment.time_flip(x.flip(2), gen(), p=1.0), x)
    once = augment.time_flip(x, gen(7), p=0.5)
    assert torch.equal(augment.time_flip(once, gen(7), p=0.5), x)  # the same samples flipped
    flipped = [torch.equal(a, b.flip(1)) for a, b in zip(once, x)]
    assert 0 < sum(flipped) < 32


# --- joint corruption --------------------------------------------------------------------------

def test_corrupt_changes_round_fraction_of_joints_the_same_in_every_frame_and_body():
    x = batch(n=32, t=6)
    out = augment.joint_corruption(x, gen(), fraction=0.6, p_zero=0.5)
    changed = (out != x).any(dim=1)  # (N, T, V, M)
    per_joint = changed.any(dim=(1, 3))
    assert per_joint.sum(dim=1).eq(15).all()  # ISC: 15 of 25 joints
    assert torch.equal(changed, per_joint[:, None, :, None].expand_as(changed))
    zeroed = (out == 0).flatten(1).sum(dim=1) == 15 * 3 * 6 * 2
    assert 4 < int(zeroed.sum()) < 28  # p_zero: whole samples zeroed, or multiplied
    # fraction 0 still corrupts one joint
    least = augment.joint_corruption(x, gen(), fraction=0.0)
    assert (least != x).any(dim=(1, 2, 4)).sum(dim=1).eq(1).all()


def test_corrupt_multiplies_by_a_matrix_with_entries_in_minus_one_to_one():
    matrices = augment.joint_corruption(unit_vectors(40), gen(2), fraction=1.0,
                                        p_zero=0.0)[:, :, 0, :, 0]
    assert matrices.abs().max() <= 1 and (matrices.diagonal(dim1=1, dim2=2) != 1).any()
    x = torch.randn(40, 3, 4, 3, 2, generator=gen())  # V = 3: the same draws as above
    out = augment.joint_corruption(x, gen(2), fraction=1.0, p_zero=0.0)
    torch.testing.assert_close(out, torch.einsum("nij,njtvm->nitvm", matrices, x))
    zeroed = augment.joint_corruption(x, gen(2), fraction=1.0, p_zero=1.0)
    assert torch.equal(zeroed, torch.zeros_like(x))


# --- compose -----------------------------------------------------------------------------------

def test_compose_applies_the_chain_in_its_order_with_one_generator():
    x = batch()
    crop_then_shear = augment.compose({"crop": {}, "shear": {"amplitude": 0.5}}, NTU25)(x, gen(1))
    g = gen(1)
    assert torch.equal(crop_then_shear, augment.shear(augment.temporal_crop(x, g), g, 0.5))
    shear_then_crop = augment.compose({"shear": {"amplitude": 0.5}, "crop": {}}, NTU25)(x, gen(1))
    g = gen(1)
    assert torch.equal(shear_then_crop, augment.temporal_crop(augment.shear(x, g, 0.5), g))
    assert not torch.allclose(crop_then_shear, shear_then_crop)


def test_compose_defaults_empty_chains_and_the_layout():
    x = batch(KINECT20)
    assert torch.equal(augment.compose({}, KINECT20)(x, gen()), x)
    # no options: the function's defaults
    assert torch.equal(augment.compose({"shear": None}, KINECT20)(x, gen()),
                       augment.shear(x, gen()))
    # flip is given the layout compose was built with
    assert torch.equal(augment.compose({"flip": {"p": 1.0}}, KINECT20)(x, gen()),
                       x[:, :, :, list(KINECT20.flip)])


def test_compose_passes_the_lengths_to_crop_resize():
    x = torch.arange(20, dtype=torch.float32).view(1, 1, 20, 1, 1).repeat(4, 3, 1, 25, 2)
    lengths = torch.tensor([4, 8, 12, 20])
    chain = augment.compose({"shear": {"amplitude": 0.0},
                             "crop_resize": {"min_ratio": 1.0, "max_ratio": 1.0}}, NTU25)
    g = gen()
    expected = augment.crop_resize(augment.shear(x, g, 0.0), g, 1.0, 1.0, lengths=lengths)
    assert torch.equal(chain(x, gen(), lengths=lengths), expected)
    assert (chain(x, gen(), lengths=lengths)[:, 0, -1, 0, 0] == lengths - 1).all()
    assert torch.equal(chain(x, gen()), x)  # without lengths: every frame valid


@pytest.mark.parametrize("p, firsts", [(1.0, "all"), (0.0, "none"), (0.5, "drawn")])
def test_either_applies_the_first_chain_with_probability_p_else_the_second(p, firsts):
    x = batch(n=64)
    # first: play backwards (a chain of two steps); second: a shear of amplitude 0, the identity
    spec = {"either": {"p": p, "first": {"time_flip": {"p": 1.0}, "noise": {"p": 0.0}},
                       "second": {"shear": {"amplitude": 0.0}}}}
    out = augment.compose(spec, NTU25)(x, gen(3))
    first = [torch.equal(a, b.flip(1)) for a, b in zip(out, x)]
    second = [torch.equal(a, b) for a, b in zip(out, x)]
    assert all(f != s for f, s in zip(first, second))
    chosen = (torch.rand(64, generator=gen(3)) < p).tolist()  # either draws its choice first
    assert first == chosen
    assert {"all": all(first), "none": not any(first), "drawn": 16 < sum(first) < 48}[firsts]


def test_either_draws_with_p_one_half_by_default():
    x = batch(n=64)
    spec = {"either": {"first": {"time_flip": {"p": 1.0}}, "second": {"noise": {"p": 0.0}}}}
    out = augment.compose(spec, NTU25)(x, gen(5))
    first = [torch.equal(a, b.flip(1)) for a, b in zip(out, x)]
    assert first == (torch.rand(64, generator=gen(5)) < 0.5).tolist()


@pytest.mark.parametrize("chain", [augment.crop_and_shear, augment.aimclr_extreme,
                                   augment.isc_augmentations])
def test_the_built_in_chains_check_and_run(chain):
    augment.check_chain(chain(), "augmentations")
    x = batch(n=4, t=20)
    out = augment.compose(chain(), NTU25)(x, gen(), lengths=torch.tensor([20, 15, 10, 5]))
    frames = 64 if chain is augment.isc_augmentations else 20
    assert out.shape == (4, 3, frames, 25, 2) and torch.isfinite(out).all()


# --- check_chain -------------------------------------------------------------------------------

def chain_error(spec, where="augmentations"):
    with pytest.raises(OptionsError) as caught:
        augment.check_chain(spec, where)
    return str(caught.value)


def test_check_chain_accepts_every_augmentations_own_keywords():
    for name, function in augment.AUGMENTATIONS.items():
        defaults = {key: list(p.default) if isinstance(p.default, tuple) else p.default
                    for key, p in inspect.signature(function).parameters.items()
                    if key not in augment.AUGMENT_INPUTS}
        augment.check_chain({name: defaults}, "augmentations")
        augment.check_chain({name: ACTING[name]}, "augmentations")
        augment.check_chain({name: None}, "augmentations")


def test_unknown_augmentation_says_did_you_mean():
    message = chain_error({"crop": {}, "sheer": {}})
    assert message.startswith("augmentations: unknown augmentation 'sheer'; did you mean "
                              "'shear'? (known: ")
    assert all(name in message for name in [*augment.AUGMENTATIONS, "either"])
    assert chain_error({"cutout": {}}, "methods.aimclr.augment").startswith(
        "methods.aimclr.augment: unknown augmentation 'cutout'")


@pytest.mark.parametrize("spec, message", [
    ({"shear": {"amplitude": "x"}},
     "augmentations.shear.amplitude: expected a number, found 'x' (text)"),
    ({"crop": {"padding_ratio": 1.5}},
     "augmentations.crop.padding_ratio: expected an integer, found 1.5 (a number)"),
    ({"rotate": {"symmetric": "yes"}},
     "augmentations.rotate.symmetric: expected true or false, found 'yes' (text)"),
    ({"blur": {"sigma": "a"}},
     "augmentations.blur.sigma: expected a list of 2: a number, a number, found 'a' (text)"),
    ({"shear": 3}, "augmentations.shear: expected a mapping of amplitude, found 3 (an integer)"),
    (["shear"], "augmentations: expected a mapping of names to values, found ['shear'] (a list)"),
    ({"shear": {"amplitud": 0.3}},
     "augmentations.shear: unknown key(s) amplitud (did you mean 'amplitude'?); accepted: "
     "amplitude"),
    ({"flip": {"layout": "ntu25"}}, "augmentations.flip: unknown key(s) layout; accepted: p"),
    ({"crop_resize": {"lengths": [4]}},
     "augmentations.crop_resize: unknown key(s) lengths; accepted: min_ratio, max_ratio, "
     "frames, min_frames"),
], ids=["number", "integer", "bool", "list", "options-not-a-mapping", "chain-not-a-mapping",
        "unknown-key", "layout-is-no-option", "lengths-are-no-option"])
def test_wrong_options_name_the_key_path(spec, message):
    assert chain_error(spec) == message


def test_either_is_checked_with_its_chains():
    first, second = {"shear": {}}, {"flip": {}}
    assert chain_error({"either": {"p": 0.5, "first": first}}) == (
        "augmentations.either: takes first and second (chains) and p")
    assert chain_error({"either": {"p": 1.5, "first": first, "second": second}}) == (
        "augmentations.either.p: expected a number at least 0 and at most 1, found 1.5 "
        "(a number)")
    assert chain_error({"either": {"first": {"shear": {"amplitude": "x"}}, "second": second}}) == (
        "augmentations.either.first.shear.amplitude: expected a number, found 'x' (text)")
    assert chain_error({"either": {"first": first, "second": {"flip": {"p": "x"}}}}) == (
        "augmentations.either.second.flip.p: expected a number at least 0 and at most 1, found "
        "'x' (text)")
    assert chain_error({"either": {"first": {"sheer": {}}, "second": second}}).startswith(
        "augmentations.either.first: unknown augmentation 'sheer'; did you mean 'shear'?")
    augment.check_chain({"either": {"first": first, "second": second}}, "augmentations")


def test_compose_checks_the_chain_before_building_it():
    with pytest.raises(OptionsError, match=r"^augmentations\.shear\.amplitude: expected a "
                                           r"number, found 'x' \(text\)$"):
        augment.compose({"crop": {}, "shear": {"amplitude": "x"}}, NTU25)
    assert issubclass(OptionsError, ValueError)  # as the moved test's ValueError expects


# --- masking and mixing by body part (PCM3) ----------------------------------------------------

def test_body_part_matrix_is_the_layouts_five_parts():
    parts = augment.body_part_matrix(NTU25)
    assert parts.shape == (5, 25) and parts.dtype == torch.bool
    assert parts.sum(dim=0).eq(1).all()  # every joint in exactly one part
    for row, name in enumerate(PART_NAMES):
        assert parts[row].nonzero().flatten().tolist() == sorted(NTU25.parts[name])
    with pytest.raises(OptionsError, match="layout 'joints25' does not name trunk, left_arm, "
                                           "right_arm, left_leg, right_leg"):
        augment.body_part_matrix(graphless(25))


def test_body_part_mask_masks_exactly_the_chosen_parts_of_each_chunk():
    parts = augment.body_part_matrix(NTU25)
    mask = augment.body_part_mask(parts, 50, 64, 3, 8, gen())  # PCM3's 3 of 5, chunks of 8
    assert mask.shape == (50, 64, 25) and mask.dtype == torch.bool
    chunks = mask.view(50, 8, 8, 25)
    assert (chunks == chunks[:, :, :1]).all()  # the same joints in all of a chunk's frames
    covered = (chunks[:, :, 0, :, None] & parts.T).any(dim=2)  # the parts a chunk touches
    assert covered.sum(dim=-1).eq(3).all()
    # a touched part is masked whole, and nothing outside the touched parts is masked
    assert torch.equal(chunks[:, :, 0], (covered.float() @ parts.float()) > 0)
    assert not torch.equal(chunks[:, 0], chunks[:, 1])  # drawn per chunk
    assert not torch.equal(mask[0], mask[1])  # and per sample
    assert torch.equal(augment.body_part_mask(parts, 50, 64, 3, 8, gen()), mask)  # seeded
    short = augment.body_part_mask(parts, 4, 20, 2, 8, gen())  # 20 frames: chunks of 8, 8, 4
    assert short.shape == (4, 20, 25)
    assert (short[:, 16:] == short[:, 16:17]).all() and (short.sum(dim=-1) > 0).all()


def test_body_part_mask_of_one_joint_parts_masks_the_exact_fraction():
    parts = torch.eye(5, dtype=torch.bool)  # five parts of one joint each
    for per_chunk in range(6):
        mask = augment.body_part_mask(parts, 7, 12, per_chunk, 4, gen(per_chunk))
        assert mask.sum(dim=-1).eq(per_chunk).all()  # per_chunk of 5 joints in every frame
        assert mask.float().mean().item() == pytest.approx(per_chunk / 5)


def test_random_cell_mask_draws_the_ratio_of_cells_anywhere():
    mask = augment.random_cell_mask(200, 64, 25, 0.6, gen())
    assert mask.shape == (200, 64, 25) and mask.dtype == torch.bool
    assert mask.sum(dim=(1, 2)).eq(960).all()  # round(0.6 * 64 * 25)
    assert augment.random_cell_mask(3, 7, 5, 0.2, gen()).sum(dim=(1, 2)).eq(7).all()  # 0.2 x 35
    # unlike topology-based masking, cells are spread uniformly: each joint and each frame is
    # masked about 60 % of the time
    assert torch.allclose(mask.float().mean(dim=(0, 1)), torch.full((25,), 0.6), atol=0.03)
    assert torch.allclose(mask.float().mean(dim=(0, 2)), torch.full((64,), 0.6), atol=0.03)
    assert not torch.equal(mask[0], mask[1])
    assert torch.equal(augment.random_cell_mask(200, 64, 25, 0.6, gen()), mask)  # seeded


def test_mask_first_body_zeroes_the_mask_in_the_first_body_only():
    x = torch.rand(6, 3, 16, 25, 2) + 1.0  # no zero coordinate
    cells = augment.body_part_mask(augment.body_part_matrix(NTU25), 1, 16, 3, 8, gen())
    masked, full = augment.mask_first_body(x, cells)  # one mask for the whole batch
    assert masked.shape == full.shape == x.shape and full.dtype == torch.bool
    assert torch.equal(masked[..., 1], x[..., 1]) and not full[..., 1].any()
    assert torch.equal(full[..., 0], cells[:, None].expand(6, 3, -1, -1))
    assert (masked[full] == 0).all() and torch.equal(masked[~full], x[~full])
    assert int(full.sum()) == 6 * 3 * int(cells.sum())


def distinct(n: int = 8, frames: int = 64) -> torch.Tensor:
    """Sample i holds 100 (i + 1) + t at frame t: every value tells its sample and frame."""
    ids = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1, 1) * 100
    time = torch.arange(frames, dtype=torch.float32).view(1, 1, frames, 1, 1)
    return (ids + time).expand(n, 3, frames, 25, 2).clone()


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_takes_a_part_and_chunk_region_from_the_rolled_batch(seed):
    x, parts = distinct(), augment.body_part_matrix(NTU25)
    mixed, partner, lam = augment.mix_with_rolled_batch(x, gen(seed), parts, kind="cutmix")
    assert mixed.shape == x.shape and partner.shape == (8,) and lam.shape == ()
    assert 1 <= int((partner - torch.arange(8)).remainder(8)[0]) <= 6  # offset in [1, N - 2]
    assert torch.equal(partner, (torch.arange(8) + partner[0]) % 8)  # the batch rolled
    swapped = mixed != x  # taken from the partner
    assert torch.equal(mixed[swapped], x[partner][swapped])
    cells = swapped[0, 0, :, :, 0]  # the same region for every sample, coordinate and body
    assert (swapped == cells[None, None, :, :, None]).all()
    assert float(lam) == pytest.approx(cells.float().mean().item())  # the swapped fraction
    frames, joints = cells.any(dim=1), cells.any(dim=0)
    touched = (joints[:, None] & parts.T).any(dim=0)
    assert 2 <= int(touched.sum()) <= 3  # 2-3 whole parts
    assert torch.equal(joints, (touched.float() @ parts.float()) > 0)
    run = frames.nonzero().flatten()  # 7-11 consecutive chunks of 4 frames
    assert run[0] % 4 == 0 and len(run) % 4 == 0 and 28 <= len(run) <= 44
    assert torch.equal(run, torch.arange(int(run[0]), int(run[0]) + len(run)))
    assert float(lam) == pytest.approx(len(run) * int(joints.sum()) / (64 * 25))
    same = augment.mix_with_rolled_batch(x, gen(seed), parts, kind="cutmix")
    assert all(torch.equal(a, b) for a, b in zip(same, (mixed, partner, lam)))  # seeded


def test_resizemix_pastes_the_partners_first_frames_nearest_resized():
    x = distinct()
    mixed, partner, lam = augment.mix_with_rolled_batch(x, gen(1), augment.body_part_matrix(NTU25),
                                                        kind="resizemix")
    cells = (mixed != x)[0, 0, :, :, 0]
    assert float(lam) == pytest.approx(cells.float().mean().item())
    frames = cells.any(dim=1).nonzero().flatten()
    length, taken = len(frames), min(2 * len(frames), 64)
    joint = int(cells[frames[0]].nonzero()[0])
    # region frame i holds the partner's frame floor(i * taken / length)
    expected = x[partner][:, 0, torch.arange(length) * taken // length, joint, 0]
    assert torch.equal(mixed[:, 0, frames, joint, 0], expected)
    assert torch.equal(expected - 100 * (partner[:, None] + 1),
                       (torch.arange(length) * taken // length).float().expand(8, -1))


def test_mixup_interpolates_every_cell_with_the_partner():
    x = distinct()
    mixed, partner, lam = augment.mix_with_rolled_batch(x, gen(2), augment.body_part_matrix(NTU25),
                                                        kind="mixup")
    assert 0 < float(lam) < 1
    assert torch.allclose(mixed, (1 - lam) * x + lam * x[partner])
    # sample i's share of its partner, read back from the values: lambda exactly
    shares = (mixed - x) / (x[partner] - x)
    assert torch.allclose(shares, lam.expand_as(shares), atol=1e-5)


def mix_kind(x: torch.Tensor, mixed: torch.Tensor, partner: torch.Tensor) -> str:
    swapped = mixed != x
    if swapped.all():
        return "mixup"
    return "cutmix" if torch.equal(mixed[swapped], x[partner][swapped]) else "resizemix"


def test_the_mix_kind_is_drawn_with_its_chances():
    x, parts = distinct(6, 48), augment.body_part_matrix(NTU25)
    kinds = [mix_kind(x, *augment.mix_with_rolled_batch(x, gen(seed), parts)[:2])
             for seed in range(400)]
    shares = {kind: kinds.count(kind) / len(kinds) for kind in augment.MIXES}
    assert shares == pytest.approx({"cutmix": 0.5, "resizemix": 0.25, "mixup": 0.25}, abs=0.07)
    only = augment.mix_with_rolled_batch(x, gen(0), parts, chances={"mixup": 1.0})
    assert mix_kind(x, *only[:2]) == "mixup"
    assert torch.allclose(only[0], (1 - only[2]) * x + only[2] * x[only[1]])
    assert {mix_kind(x, *augment.mix_with_rolled_batch(x, gen(seed), parts,
                                                       chances={"resizemix": 1.0})[:2])
            for seed in range(5)} == {"resizemix"}
