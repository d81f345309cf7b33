"""MAMP: motion-aware masking against its distribution, the decoder's mask tokens, the loss and the
motion target by hand, the input chain, the options it refuses, and a narrow MAMP learning on the
real NTU recordings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skelctl.data.formats.ntu import read_skeleton_file
from skelctl.methods import mamp as mamp_module
from skelctl.methods import OptionsError, build_method
from skelctl.methods.mamp import (choose_visible, mamp_augmentations, masked_mse,
                                  motion_intensity, visible_count)
from skelctl.models.transformer import fold_bodies, patchify
from skelctl.skeletons import NTU25, graphless

from conftest import NTU_SAMPLES, gen, need

TWO_JOINTS = graphless(2)
# a token is 2 frames of a joint: 4 frames x 2 joints are 4 tokens
TINY = {"dim": 4, "depth": 1, "heads": 1, "t_patch": 2, "frames": 4}
TINY_DECODER = {"decoder_dim": 4, "decoder_depth": 1, "decoder_heads": 1}
NARROW = {"dim": 32, "depth": 2, "heads": 4, "frames": 32}
NARROW_DECODER = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 4}


def mamp(layout=NTU25, persons=2, encoder=None, **options):
    torch.manual_seed(0)
    return build_method("mamp", ("joint",), layout, persons, "transformer",
                        encoder or NARROW, {**NARROW_DECODER, **options})


def sequences(n=4, length=40, frames=(40, 30, 25, 40), persons=2, seed=1):
    """A zero-padded batch of real-frame sequences as the training loop hands it over."""
    x = torch.randn(n, 3, length, 25, persons, generator=gen(seed))
    lengths = torch.tensor(frames[:n])
    x = x * (torch.arange(length)[None] < lengths[:, None])[:, None, :, None, None]
    return {"sequence": x, "length": lengths}


# --- masking ----------------------------------------------------------------------------------

def test_visible_count_is_the_papers_ten_percent():
    assert visible_count(750, 0.9) == 75  # the authors' int(750 * (1 - 0.9)) gives 74
    assert visible_count(200, 0.9) == 20 and visible_count(60, 0.9) == 6
    assert visible_count(8, 0.5) == 4 and visible_count(8, 0.0) == 8
    assert visible_count(5, 0.9) == 1  # at least one token stays visible


def test_motion_intensity_by_hand():
    x = torch.zeros(1, 3, 6, 2, 1)  # 6 frames, 2 joints; with 2 frames a token: 3 x 2 tokens
    x[0, 0, :, 0, 0] = torch.arange(6.0) ** 2  # joint 0 accelerates along x, joint 1 is still
    intensity = motion_intensity(patchify(fold_bodies(x), 2))
    # token t' of joint 0 holds x = (2t')^2, (2t'+1)^2; against the token before: t'=1: |4 - 0|
    # and |9 - 1|; t'=2: |16 - 4| and |25 - 9|; the other four values (y, z) are 0; t'=0
    # copies t'=1
    expected = torch.tensor([[12 / 6, 0, 12 / 6, 0, 28 / 6, 0]])  # (t', v) order
    torch.testing.assert_close(intensity, expected)


def moving_and_still(draws):
    """Intensities of 8 x 25 tokens (32 frames, 4 a token) where joints 0-4 swing along x and
    the others are still, repeated ``draws`` times; and which tokens move."""
    x = torch.zeros(1, 3, 32, 25, 1)
    x[0, 0, :, :5, 0] = torch.sin(torch.arange(32.0) * 0.7)[:, None]
    intensity = motion_intensity(patchify(fold_bodies(x), 4))
    moving = torch.zeros(8, 25, dtype=torch.bool)
    moving[:, :5] = True
    return intensity.expand(draws, -1), moving.flatten()


def test_visible_tokens_are_exact_counts_in_order():
    intensity = torch.rand(50, 200, generator=gen(2))
    for tau in (0.8, 0.0):
        visible = choose_visible(intensity, 20, tau, gen(3))
        assert visible.shape == (50, 20)
        assert (visible[:, 1:] > visible[:, :-1]).all()  # ascending, so no repeats
        assert visible.min() >= 0 and visible.max() < 200


def test_motion_aware_masking_masks_moving_joints_more_often():
    draws = 4000
    intensity, moving = moving_and_still(draws)
    visible = choose_visible(intensity, 20, 0.8, gen(4))
    masked = torch.ones(draws, 200).scatter(1, visible, 0.0)
    assert (masked.sum(dim=1) == 180).all()  # 90 % of 200, every sample
    moving_rate, still_rate = masked[:, moving].mean(), masked[:, ~moving].mean()
    # measured: 0.9988 and 0.8753. A still token stays visible about 100 times as often.
    assert moving_rate > 0.995 and 0.86 < still_rate < 0.89
    assert (1 - still_rate) / (1 - moving_rate) > 50
    # the same distribution as drawing the 180 masked tokens one by one without replacement
    # from softmax(intensity / (0.8 x max)) (a Plackett-Luce draw, torch.multinomial)
    p = torch.softmax(intensity / (intensity.amax(dim=1, keepdim=True) * 0.8), dim=1)
    drawn = torch.multinomial(p, 180, replacement=False, generator=gen(5))
    reference = torch.zeros(draws, 200).scatter(1, drawn, 1.0)
    assert abs(reference[:, moving].mean() - moving_rate) < 0.005
    assert abs(reference[:, ~moving].mean() - still_rate) < 0.005


def test_tau_zero_masks_uniformly():
    draws = 4000
    intensity, moving = moving_and_still(draws)
    visible = choose_visible(intensity, 20, 0.0, gen(6))
    masked = torch.ones(draws, 200).scatter(1, visible, 0.0)
    assert abs(masked[:, moving].mean() - 0.9) < 0.005
    assert abs(masked[:, ~moving].mean() - 0.9) < 0.005
    per_token = masked.mean(dim=0)  # each token: binomial(4000, 0.9), sd 0.0047
    assert per_token.min() > 0.875 and per_token.max() < 0.925


# --- decoder, target and loss -----------------------------------------------------------------

def test_decoder_gets_mask_tokens_exactly_at_the_masked_positions(monkeypatch):
    method = mamp()
    seen = {}
    place = method.decoder.place

    def spy(latent, visible):
        seen.update(latent=latent, visible=visible, placed=place(latent, visible))
        return seen["placed"]

    monkeypatch.setattr(method.decoder, "place", spy)
    method(sequences(), gen(7), 0)
    visible, placed = seen["visible"], seen["placed"]
    assert visible.shape == (8, 20)  # 4 samples x 2 bodies; 10 % of 8 x 25 tokens
    masked = torch.ones(8, 200, dtype=torch.bool).scatter(1, visible, False)
    assert (masked.sum(dim=1) == 180).all()
    mask_token = method.decoder.mask_token[0, 0]
    assert torch.equal(placed[masked], mask_token.expand(8 * 180, -1))
    expected = method.decoder.embed(seen["latent"])
    torch.testing.assert_close(placed.gather(1, visible[..., None].expand(-1, -1, 32)),
                               expected, rtol=0, atol=0)
    assert not torch.isclose(expected, mask_token).all(dim=-1).any()


def hand_patches(values, t_patch=2):
    """(C, T, V) to a list of tokens in (t', v) order, each [frame 0's C values, frame 1's ...]."""
    t, v = values.shape[1:]
    return torch.stack([torch.cat([values[:, t0 * t_patch + k, joint] for k in range(t_patch)])
                        for t0 in range(t // t_patch) for joint in range(v)])


def hand_normalised(patch):
    n = patch.numel()
    mean = patch.sum() / n
    var = ((patch - mean) ** 2).sum() / (n - 1)  # unbiased, as the authors' torch.var
    return (patch - mean) / math.sqrt(var + 1e-6)


@pytest.mark.parametrize("target", ["motion", "joint"])
def test_loss_by_hand_on_masked_tokens_only(target):
    method = mamp(TWO_JOINTS, 1, TINY, **TINY_DECODER, target=target).eval()
    x = torch.randn(1, 3, 4, 2, 1, generator=gen(8))
    visible = torch.tensor([[0, 3]])  # tokens (t'=0, v=0) and (t'=1, v=1); 1 and 2 are masked
    outputs = []
    method.decoder.register_forward_hook(lambda module, args, out: outputs.append(out))
    with torch.no_grad():
        loss = method.loss(x, gen(0), visible)
    prediction = outputs[0][0]  # (4 tokens, 2 frames x 3 coordinates)
    values = x[0, :, :, :, 0]  # (C, T, V)
    if target == "motion":
        moved = torch.zeros_like(values)
        for t in range(3):
            moved[:, t] = values[:, t + 1] - values[:, t]
        values = moved  # the last frame's motion is 0
        # token 2 is (t'=1, joint 0): frames 2 and 3, so its last three values are 0
        assert torch.equal(hand_patches(values)[2, 3:], torch.zeros(3))
    targets = [hand_normalised(patch) for patch in hand_patches(values)]
    per_token = [float(((prediction[i] - targets[i]) ** 2).mean()) for i in range(4)]
    assert float(loss) == pytest.approx((per_token[1] + per_token[2]) / 2, rel=1e-5)
    assert float(loss) != pytest.approx(np.mean(per_token), rel=1e-3)


def test_loss_ignores_the_visible_tokens_predictions():
    method = mamp(TWO_JOINTS, 1, TINY, **TINY_DECODER).eval()
    x = torch.randn(1, 3, 4, 2, 1, generator=gen(9))
    visible = torch.tensor([[0, 3]])
    shift = torch.zeros(1, 4, 1)
    method.decoder.register_forward_hook(lambda module, args, out: out + shift)
    with torch.no_grad():
        plain = method.loss(x, gen(0), visible)
        shift[0, [0, 3]] = 5.0  # the visible tokens' predictions
        assert torch.equal(method.loss(x, gen(0), visible), plain)
        shift[0, 1] = 5.0  # a masked token's
        assert method.loss(x, gen(0), visible) > plain + 1
    prediction, target = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    masked = torch.tensor([[0.0, 1, 1, 0], [1, 0, 0, 0]])
    expected = (((prediction - target) ** 2).mean(dim=-1) * masked).sum() / 3
    torch.testing.assert_close(masked_mse(prediction, target, masked), expected)


# --- input, options and export ----------------------------------------------------------------

def test_input_chain_crops_real_frames_to_the_encoders_frames_and_rotates_every_axis():
    limit = math.degrees(0.3)
    assert mamp_augmentations() == {
        "crop_resize": {"min_ratio": 0.5, "max_ratio": 1.0, "min_frames": 64},
        "rotate": {"max_degrees": limit, "minor_degrees": limit, "symmetric": True}}
    method = mamp(encoder={**NARROW, "frames": 16})
    n = 600
    pose = torch.randn(1, 3, 1, 25, 1, generator=gen(10))
    lengths = torch.randint(20, 51, (n,), generator=gen(11))
    real = torch.arange(50)[None] < lengths[:, None]  # the same pose in every real frame
    x = pose.expand(n, -1, 50, -1, -1) * real[:, None, :, None, None]
    out = method.augment(x, gen(12), lengths=lengths)
    assert out.shape == (n, 3, 16, 25, 1)  # the encoder's frames
    # only real frames are read (never the zero padding), and each sample is one rotation
    first = out[:, :, :1]
    torch.testing.assert_close(out, first.expand_as(out))
    torch.testing.assert_close(first.norm(dim=1), pose.norm(dim=1).expand(n, -1, -1, -1))
    source = pose[0, :, 0, :, 0]  # (3, 25)
    rotation = first[:, :, 0, :, 0] @ torch.linalg.pinv(source)  # (n, 3, 3)
    # R = Rz(c) Ry(b) Rx(a): a from R[2, 1] and R[2, 2], b from R[2, 0], c from R[1, 0] and R[0, 0]
    angles = torch.stack([torch.atan2(rotation[:, 2, 1], rotation[:, 2, 2]),
                          -torch.asin(rotation[:, 2, 0]),
                          torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0])], dim=1)
    assert angles.abs().max() <= 0.3 + 1e-4
    assert (angles.amin(dim=0) < -0.28).all() and (angles.amax(dim=0) > 0.28).all()
    assert (angles.mean(dim=0).abs() < 0.03).all()  # U(-0.3, 0.3): mean 0, sd 0.007 here


def test_options_it_refuses():
    with pytest.raises(OptionsError, match="MAMP masks the tokens of a transformer: it needs "
                                           "encoder 'transformer', not STGCN"):
        build_method("mamp", ("joint",), NTU25, 2, "stgcn", {"hidden": 4, "out_dim": 8})
    with pytest.raises(OptionsError, match="crop_resize.frames is 64, but the encoder reads 32"):
        mamp(augment={"crop_resize": {"frames": 64}})
    with pytest.raises(OptionsError, match="its chain needs crop_resize"):
        mamp(augment={"rotate": {}})
    with pytest.raises(OptionsError, match=r"mask_ratio: expected a ratio in \[0, 1\)"):
        mamp(mask_ratio=1.0)
    with pytest.raises(OptionsError, match=r"decoder_dim \(30\) must be a multiple of "
                                           r"decoder_heads \(4\)"):
        mamp(decoder_dim=30)
    with pytest.raises(OptionsError, match="tau: expected a number at least 0"):
        mamp(tau=-0.5)
    with pytest.raises(OptionsError, match="target: expected one of motion, joint"):
        mamp(target="bone")
    with pytest.raises(OptionsError, match="one stream"):
        build_method("mamp", ("joint", "motion"), NTU25, 2, "transformer", NARROW)


def test_exported_encoder_is_the_transformer_without_masking():
    method = mamp()
    method(sequences(), gen(13), 0)["loss"].backward()  # a step leaves the encoder as it was
    encoder = method.encoders()["joint"]
    assert list(method.encoders()) == ["joint"] and encoder is method.encoder
    encoder.eval()
    x = torch.randn(2, 3, 32, 25, 2, generator=gen(14))
    with torch.no_grad():
        features = encoder(x)
        tokens = encoder.encode_tokens(encoder.embed(x).flatten(1, 2))  # all 200 tokens
    torch.testing.assert_close(features, tokens.view(2, 2 * 200, 32).mean(dim=1), rtol=1e-5,
                               atol=1e-6)


# --- learning ---------------------------------------------------------------------------------

def real_sequences():
    """The 11 real NTU recordings as a zero-padded batch ``(11, 3, 158, 25, 2)``, each centred
    on the first frame's spine middle (MAMP's data: no rotation, no scaling)."""
    arrays = [read_skeleton_file(path)[:2] for path in sorted(need(NTU_SAMPLES).glob("*.skeleton"))]
    longest = max(a.shape[1] for a in arrays)
    batch = torch.zeros(len(arrays), 3, longest, 25, 2)
    for i, array in enumerate(arrays):
        bodies = torch.from_numpy(array)  # (K, T, V, C)
        bodies = bodies - bodies[0, 0, 1]
        batch[i, :, :bodies.shape[1], :, :bodies.shape[0]] = bodies.permute(3, 1, 2, 0)
    return {"sequence": batch, "length": torch.tensor([a.shape[1] for a in arrays])}


def test_narrow_mamp_learns_on_real_recordings():
    batch = real_sequences()
    method = mamp()
    optimiser = torch.optim.AdamW(method.parameters(), lr=1e-3, betas=(0.9, 0.95),
                                  weight_decay=0.05)
    losses = []
    for step in range(30):
        loss = method(batch, gen(step), 0)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    # measured: 1.10 -> 0.47. Predicting 0 everywhere scores at most 11/12 (a normalised patch
    # of 12 values has mean square 11/12 with the unbiased variance): it beats that too.
    assert last < 0.6 * first and last < 0.7


def test_input_and_target_stay_float32_under_mixed_precision(monkeypatch):
    seen = {}
    plain = mamp_module.masked_mse

    def spy(prediction, target, masked):
        seen.update(target=target.dtype, masked=masked.dtype)
        return plain(prediction, target, masked)

    monkeypatch.setattr(mamp_module, "masked_mse", spy)
    method, batch = mamp(), sequences()
    with torch.no_grad():
        full = method(batch, gen(15), 0)["loss"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = method(batch, gen(15), 0)["loss"]
    # the rotation is a matrix product, which autocast would round to bf16
    assert seen == {"target": torch.float32, "masked": torch.float32}
    assert float(mixed) == pytest.approx(float(full), rel=0.02)


# ---- real data ----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_narrow_mamp_beats_its_untrained_transformer_on_nw_ucla_under_knn(prepared_nw_ucla,
                                                                             tmp_path):
    """A transformer 64 wide with 2 blocks, tokens of 5 of the 25-frame view's frames (5 x 20
    tokens), MAMP's crops, rotation and motion-aware masking, 30 epochs of AdamW with warmup and
    cosine (about 50 s on one thread): measured KNN 48.7 against the untrained 32.5."""
    import yaml

    from skelctl.stages import evaluate, pretrain

    data, models, results = prepared_nw_ucla, tmp_path / "models", tmp_path / "results"
    narrow = {"dim": 64, "depth": 2, "heads": 4, "frames": 25, "t_patch": 5}
    chain = {"crop_resize": {"min_ratio": 0.5, "max_ratio": 1.0, "min_frames": 16},
             "rotate": {"max_degrees": 17.19, "minor_degrees": 17.19, "symmetric": True}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "defaults": {"variant": "25-shoulder", "encoder": "transformer", "encoder_options": narrow,
                     "train": {"epochs": 30, "batch_size": 32, "optimizer": "adamw", "lr": 0.002,
                               "weight_decay": 0.05, "lr_schedule": "cosine", "warmup_epochs": 2,
                               "min_lr": 0.001, "lr_steps": [], "checkpoint_every": 100,
                               "seed": 0, "device": "cpu"}},
        "runs": {"untrained": {"method": "untrained", "streams": ["joint"]},
                 "mamp": {"method": "mamp", "streams": ["joint"],
                          "options": {"decoder_dim": 64, "decoder_depth": 1,
                                      "decoder_heads": 4, "augment": chain}}},
        "knn": {"k": 1, "device": "cpu"}}))
    accuracy = {}
    for run in ("untrained", "mamp"):
        pretrain.run("nw-ucla-xview", run, data, models, params, {})
        accuracy[run] = evaluate.run_knn("nw-ucla-xview", run, data, models, results, params,
                                         {})["joint"]["top1"]
    history = (models / "nw-ucla-xview" / "mamp.loss.csv").read_text().splitlines()
    assert len(history) == 1 + 30
    assert accuracy["mamp"] > accuracy["untrained"] + 8, accuracy
