"""PCM3: the distillation, the predicted view, the prompts' gradients and placements, and the
gradient paths the paper states. Its masking and mixing are tested with the other augmentations
(tests/test_augment.py), its domain prompts with the recurrent encoder
(tests/models/test_rnn_prompts.py)."""

from __future__ import annotations

import math

import pytest
import torch

from skelctl.augment import body_part_mask, mask_first_body
from skelctl.methods import OptionsError, build_method
from skelctl.methods.pcm3 import add_task_prompt
from skelctl.models import load_encoder, save_encoder
from skelctl.models.rnn import run_causal
from skelctl.skeletons import NTU25, graphless

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
    masked, mask = mask_first_body(x, body_part_mask(method.parts, 1, 16, 3, 8, gen(2)))
    steps = method.moco.encoder_q.features(masked)
    view = method.predicted_view(steps, masked, mask, gen(4))
    prediction = method.predict(steps, gen(4))
    assert torch.equal(view[mask], prediction[mask])
    assert torch.equal(view[~mask], masked[~mask])
    assert not torch.equal(prediction[~mask], masked[~mask])


def test_the_predict_branch_sends_no_gradient_into_the_masked_features():
    method = pcm3()
    x = torch.randn(4, 3, 16, 25, 2, generator=gen(1))
    masked, mask = mask_first_body(x, body_part_mask(method.parts, 1, 16, 3, 8, gen(2)))
    steps = method.moco.encoder_q.features(masked, prompt=method.prompt("mask"))
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


def test_the_domain_prompts_go_in_through_the_encoder_before_or_after_its_input_norm():
    x = torch.randn(4, 3, 16, 25, 2, generator=gen(1))
    for placement, after_norm in (("authors", False), ("active", True)):
        method = pcm3(prompts=placement)
        method.train()
        assert method.prompt_after_norm == after_norm
        encoder, domain = method.moco.encoder_q, method.prompts["mix"]
        # PCM3's own reading before the hook: the prompt added, the input normed (or the reverse)
        before, after = (0.0, domain) if after_norm else (domain, 0.0)
        seq = encoder.input_norm((encoder.flatten(x) + before).transpose(1, 2)).transpose(1, 2)
        by_hand = encoder.pool(run_causal(encoder.rnn, seq + after, None))
        unit = method.embed(x, "mix", gen(7))
        assert torch.equal(unit, method.project(by_hand, method.moco.projector_q, gen(7)))


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
