"""PCM3: topology-based masks, the mix positive, the distillation, the predicted view, the
prompts' gradients and placements, and the gradient paths the paper states."""

from __future__ import annotations

import math

import pytest
import torch

from skelctl.methods import OptionsError, build_method
from skelctl.methods.pcm3 import (add_task_prompt, mask_first_body, mix_batch, part_mask,
                                  random_mask,
                                  part_matrix)
from skelctl.models import load_encoder, save_encoder
from skelctl.skeletons import NTU25, PART_NAMES, graphless

from conftest import gen

TINY_BIGRU = {"hidden": 8, "layers": 1, "input_norm": True}


def pcm3(encoder: str = "bigru", encoder_options: dict | None = None, **options):
    torch.manual_seed(0)
    return build_method("pcm3", ("joint",), NTU25, 2, encoder,
                        TINY_BIGRU if encoder_options is None else encoder_options,
                        {"queue_size": 16, "decoder_dim": 16, **options})


def batch(n: int = 6, frames: int = 20) -> dict[str, torch.Tensor]:
    x = torch.randn(n, 3, frames, 25, 2, generator=gen(3))
    return {"sequence": x, "length": torch.full((n,), frames), "label": torch.zeros(n),
            "index": torch.arange(n)}


# --- masking ----------------------------------------------------------------------------------

def test_part_matrix_is_the_layouts_five_parts():
    parts = part_matrix(NTU25)
    assert parts.shape == (5, 25) and parts.sum(dim=0).eq(1).all()  # every joint in one part
    for row, name in enumerate(PART_NAMES):
        assert parts[row].nonzero().flatten().tolist() == sorted(NTU25.parts[name])
    with pytest.raises(OptionsError, match="trunk, left_arm, right_arm, left_leg, right_leg"):
        part_matrix(graphless(25))


def test_mask_covers_exactly_the_chosen_parts_in_each_chunk_and_only_the_first_body():
    parts = part_matrix(NTU25)
    mask = part_mask(parts, 50, 64, 3, 8, gen())  # the authors' 3 of 5 parts, 8 chunks of 8
    assert mask.shape == (50, 64, 25)
    chunks = mask.view(50, 8, 8, 25)
    assert (chunks == chunks[:, :, :1]).all()  # the same joints in all of a chunk's frames
    per_part = chunks[:, :, 0, :, None] & parts.T  # (N, chunks, V, 5)
    covered = per_part.any(dim=2)  # which parts the chunk's mask touches
    assert covered.sum(dim=-1).eq(3).all()
    # a touched part is masked whole, and nothing outside the touched parts is masked
    assert torch.equal(chunks[:, :, 0], (covered.float() @ parts.float()) > 0)
    assert not torch.equal(chunks[:, 0], chunks[:, 1])  # drawn per chunk
    short = part_mask(parts, 4, 20, 2, 8, gen())  # 20 frames: chunks of 8, 8 and 4
    assert short.shape == (4, 20, 25) and (short.sum(dim=-1) > 0).all()

    x = torch.rand(50, 3, 64, 25, 2) + 1.0  # no zero coordinate
    masked, full = mask_first_body(x, mask)
    assert torch.equal(masked[..., 1], x[..., 1]) and not full[..., 1].any()
    assert torch.equal(masked[..., 0] == 0, mask[:, None].expand(-1, 3, -1, -1))
    assert torch.equal(masked[~full], x[~full]) and (masked[full] == 0).all()


def test_random_mask_draws_the_ratio_of_cells_anywhere():
    mask = random_mask(200, 64, 25, 0.6, gen())
    assert mask.shape == (200, 64, 25)
    assert mask.sum(dim=(1, 2)).eq(960).all()  # round(0.6 * 64 * 25)
    assert random_mask(3, 7, 5, 0.2, gen()).sum(dim=(1, 2)).eq(7).all()  # 0.2 * 35
    # unlike topology-based masking, not whole parts over whole chunks: cells are spread
    # uniformly, so each joint and each frame is masked about 60 % of the time
    assert torch.allclose(mask.float().mean(dim=(0, 1)), torch.full((25,), 0.6), atol=0.03)
    assert torch.allclose(mask.float().mean(dim=(0, 2)), torch.full((64,), 0.6), atol=0.03)
    assert not torch.equal(mask[0], mask[1])


# --- the mix positive -------------------------------------------------------------------------

def distinct(n: int = 8, frames: int = 64) -> torch.Tensor:
    """Sample i holds i + 1 at frame t, joint v: every value tells its sample."""
    ids = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1, 1)
    return ids.expand(n, 3, frames, 25, 2).clone()


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_lambda_is_the_swapped_fraction_of_part_and_chunk_cells(seed):
    x, parts = distinct(), part_matrix(NTU25)
    mixed, partner, lam = mix_batch(x, gen(seed), parts, kind="cutmix")
    assert 1 <= int((partner - torch.arange(8)).remainder(8)[0]) <= 6
    assert torch.equal(partner, (torch.arange(8) + partner[0]) % 8)  # the batch rolled
    swapped = mixed != x  # (N, C, T, V, M): taken from the partner
    assert torch.equal(mixed[swapped], x[partner][swapped])
    cells = swapped[0, 0, :, :, 0]  # the same region for every sample, coordinate and body
    assert (swapped == cells[None, None, :, :, None]).all()
    assert float(lam) == pytest.approx(cells.float().mean().item())
    frames, joints = cells.any(dim=1), cells.any(dim=0)
    touched = (joints[:, None] & parts.T).any(dim=0)
    assert 2 <= int(touched.sum()) <= 3
    assert torch.equal(joints, (touched.float() @ parts.float()) > 0)
    run = frames.nonzero().flatten()
    assert run[0] % 4 == 0 and len(run) % 4 == 0 and 28 <= len(run) <= 44
    assert torch.equal(run, torch.arange(int(run[0]), int(run[0]) + len(run)))


def test_resizemix_pastes_the_partners_frames_nearest_resized_and_mixup_interpolates():
    n, t = 8, 64
    x = distinct(n, t) * 100 + torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1)
    mixed, partner, lam = mix_batch(x, gen(1), part_matrix(NTU25), kind="resizemix")
    cells = (mixed != x)[0, 0, :, :, 0]
    assert float(lam) == pytest.approx(cells.float().mean().item())
    frames = cells.any(dim=1).nonzero().flatten()
    length, taken = len(frames), min(2 * len(frames), t)
    joint = int(cells[frames[0]].nonzero()[0])
    expected = x[partner][:, 0, torch.arange(length) * taken // length, joint, 0]
    assert torch.equal(mixed[:, 0, frames, joint, 0], expected)

    mixed, partner, lam = mix_batch(x, gen(2), part_matrix(NTU25), kind="mixup")
    assert 0 < float(lam) < 1
    assert torch.allclose(mixed, (1 - lam) * x + lam * x[partner])


def test_the_mix_kind_follows_its_chances():
    x, parts = distinct(), part_matrix(NTU25)
    only = mix_batch(x, gen(0), parts, chances={"mixup": 1.0})
    assert torch.allclose(only[0], (1 - only[2]) * x + only[2] * x[only[1]])


# --- distillation -----------------------------------------------------------------------------

def test_distillation_is_zero_when_the_distributions_agree_and_matches_a_hand_value():
    method = pcm3()
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    method.moco.queue = torch.zeros(3, 128)
    method.moco.queue[:, :2] = queue
    teacher = torch.zeros(1, 128)
    teacher[0, :2] = torch.tensor([0.8, 0.6])
    # the student's similarities at T 0.1 equal the teacher's at T 0.05: the same distribution
    assert float(method.distill(2 * teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(1, 128)
    student[0, :2] = torch.tensor([0.0, 1.0])
    p = [math.exp(s / 0.05) for s in (0.8, 0.6, 0.96)]
    q = [math.exp(s / 0.1) for s in (0.0, 1.0, 0.8)]
    p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert float(method.distill(student, teacher)) == pytest.approx(expected, rel=1e-5)


# --- the predicted view and the gradient paths -------------------------------------------------

def test_the_predicted_view_is_the_prediction_inside_the_mask_and_the_input_outside():
    method = pcm3(prompts="none")
    x = torch.randn(4, 3, 16, 25, 2, generator=gen(1))
    masked, mask = mask_first_body(x, part_mask(method.parts, 1, 16, 3, 8, gen(2)))
    steps, _ = method.steps(method.moco.encoder_q, masked, "mask")
    view = method.predicted_view(steps, masked, mask, gen(4))
    prediction = method.predict(steps, gen(4))
    assert torch.equal(view[mask], prediction[mask])
    assert torch.equal(view[~mask], masked[~mask])
    assert not torch.equal(prediction[~mask], masked[~mask])


def test_the_predict_branch_sends_no_gradient_into_the_masked_features():
    method = pcm3()
    x = torch.randn(4, 3, 16, 25, 2, generator=gen(1))
    masked, mask = mask_first_body(x, part_mask(method.parts, 1, 16, 3, 8, gen(2)))
    steps = method.steps(method.moco.encoder_q, masked, "mask")[0]
    steps.retain_grad()
    method.predicted_view(steps, masked, mask, gen(4)).pow(2).sum().backward()
    assert steps.grad is None  # detached: the encoder's masked branch gets nothing
    assert all(p.grad is None for p in method.moco.encoder_q.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in method.decoder.parameters())  # the decoder gets the contrast's gradient
    # the MSE's pass reaches the encoder
    method.zero_grad()
    method.predict(steps, gen(4))[mask].pow(2).sum().backward()
    assert steps.grad is not None and steps.grad.abs().sum() > 0


def test_woprompt_detaches_the_predicted_view_and_drops_prompts_and_distillation():
    only_predict = {"weights": {"intra": 0.0, "mix": 0.0, "mask": 0.0, "predict": 1.0},
                    "mse_weight": 0.0}
    for woprompt, decoder_learns in ((False, True), (True, False)):
        method = pcm3(woprompt=woprompt, **only_predict)
        method.train()
        losses = method(batch(), gen(), 0)
        assert ("kl" in losses) != woprompt and (len(method.prompts) == 0) == woprompt
        losses["loss"].backward()
        grads = [p.grad for p in method.decoder.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == decoder_learns


# --- prompts ----------------------------------------------------------------------------------

def prompt_gradients(prompts: str) -> dict[str, float]:
    method = pcm3(prompts=prompts)
    method.train()
    method(batch(), gen(), 0)["loss"].backward()
    return {name: float(p.grad.abs().max()) if p.grad is not None else 0.0
            for name, p in method.prompts.items()}


def test_the_authors_placement_leaves_only_the_contrastive_task_prompt_acting():
    grads = prompt_gradients("authors")
    assert set(grads) == {"base", "mask", "predict", "mix", "cl", "mp"}
    assert grads["cl"] > 1e-3
    # before a batch norm in training mode: a constant shift removed exactly (to rounding)
    for name in ("base", "mask", "predict", "mix", "mp"):
        assert grads[name] < 1e-4 * grads["cl"], (name, grads)


def test_the_active_placement_lets_every_prompt_act():
    grads = prompt_gradients("active")
    assert all(value > 1e-6 for value in grads.values()), grads


def test_prompts_are_never_part_of_the_exported_encoder(tmp_path):
    for prompts in ("authors", "active", "none"):
        method = pcm3(prompts=prompts)
        exported = method.encoders()
        assert list(exported) == ["joint"] and exported["joint"] is method.moco.encoder_q
        assert not any("prompt" in key for key in exported["joint"].state_dict())
        path = tmp_path / f"{prompts}.encoder.pt"
        save_encoder(path, exported["joint"], "joint")
        loaded, _ = load_encoder(path)
        assert not any("prompt" in key for key in loaded.state_dict())
        assert list(loaded.state_dict()) == list(exported["joint"].state_dict())
    assert len(pcm3(prompts="none").prompts) == 0
    assert set(pcm3(prompt_kinds=["domain"]).prompts) == {"base", "mask", "predict", "mix"}
    assert set(pcm3(prompt_kinds=["task"]).prompts) == {"cl", "mp"}


def test_task_prompt_goes_into_each_half_at_one_offset():
    features = torch.zeros(3, 20)
    prompt = torch.arange(1.0, 7.0)[None]  # width 6: halves of 3
    out = add_task_prompt(features, prompt, gen(5))
    first, second = out[:, :10], out[:, 10:]
    assert torch.equal(first, second - 3 * (second != 0))  # the same offset in both halves
    start = int(first[0].nonzero()[0])
    assert first[0, start:start + 3].tolist() == [1.0, 2.0, 3.0]
    assert (out == out[:1]).all() and int((out[0] != 0).sum()) == 6
    odd = add_task_prompt(torch.zeros(2, 7), prompt[:, :4], gen(5))  # halves of 3 and 4
    assert odd.shape == (2, 7) and sorted(odd[0][odd[0] != 0].tolist()) == [1.0, 2.0, 3.0, 4.0]


def test_steps_without_a_prompt_are_the_encoders_features():
    method = pcm3(prompts="none")
    encoder = method.moco.encoder_q
    x = torch.randn(4, 3, 16, 25, 2, generator=gen(1))
    steps, lengths = method.steps(encoder, x)
    assert torch.equal(steps, encoder.features(x)) and torch.equal(encoder.pool(steps, lengths),
                                                                   encoder(x))


# --- options ----------------------------------------------------------------------------------

def test_bad_options_and_encoders_are_refused_by_name():
    with pytest.raises(OptionsError, match="recurrent encoder"):
        pcm3("stgcn", {"hidden": 4, "out_dim": 16})
    with pytest.raises(OptionsError, match="prompts"):
        pcm3(prompts="everywhere")
    with pytest.raises(OptionsError, match="mask_ratio"):
        pcm3(mask_ratio=0.1)
    with pytest.raises(OptionsError, match="mask_strategy"):
        pcm3(mask_strategy="joints")
    with pytest.raises(OptionsError, match="mix_parts"):
        pcm3(mix_parts=[3, 6])
    with pytest.raises(OptionsError, match="mix"):
        pcm3(mix={"cutout": 1.0})
    with pytest.raises(OptionsError, match="weights"):
        pcm3(weights={"inter": 1.0})
    with pytest.raises(OptionsError, match="prompt_dim"):
        pcm3(prompt_dim=7)
    with pytest.raises(OptionsError, match="prompt_kinds"):
        pcm3(prompt_kinds=["deep"])
    with pytest.raises(OptionsError, match="woprompt"):
        pcm3(woprompt=True, prompts="active")
    with pytest.raises(OptionsError, match="left_arm"):
        build_method("pcm3", ("joint",), graphless(25), 2, "bigru", TINY_BIGRU, {})


def test_a_step_on_each_stream_gives_finite_named_losses():
    for stream in ("joint", "motion", "bone"):
        torch.manual_seed(0)
        method = build_method("pcm3", (stream,), NTU25, 2, "gru", {"hidden": 8, "layers": 1},
                              {"queue_size": 16, "decoder_dim": 16,
                               "woprompt": stream != "joint"})
        losses = method(batch(), gen(), 0)
        expected = {"loss", "intra", "mix", "mask", "predict", "mse"} | (
            {"kl"} if stream == "joint" else set())
        assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    losses = pcm3(mask_strategy="random")(batch(), gen(), 0)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["mse"] > 0


def test_positives_of_weight_zero_and_an_unused_prediction_are_left_out():
    method = pcm3(prompts="none", kl_weight=0.0, mse_weight=0.0,
                  weights={"intra": 1.0, "mix": 1.0, "mask": 0.0, "predict": 0.0})
    losses = method(batch(), gen(), 0)
    assert set(losses) == {"loss", "intra", "mix"}
    assert float(losses["loss"].detach()) == pytest.approx(float(losses["intra"] + losses["mix"]))
    with pytest.raises(OptionsError, match="weights"):
        pcm3(weights=dict.fromkeys(("intra", "mix", "mask", "predict"), 0.0))


def test_a_narrow_odd_width_encoder_takes_prompts_at_most_its_width():
    method = pcm3("gru", {"hidden": 7, "layers": 1, "bidirectional": False})
    assert method.prompts["cl"].shape == (1, 6) and method.prompts["mp"].shape == (1, 6)
    losses = method(batch(), gen(), 0)
    assert torch.isfinite(losses["loss"])
