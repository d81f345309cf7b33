"""RecurrentEncoder's prompt hook (PCM3's domain prompts): without a prompt the features are the
flattened input, normed and run as before; with one, it is added to the flattened input before or
after the input batch norm, as PCM3 added it when it ran the encoder's steps itself."""

from __future__ import annotations

import pytest
import torch

from skelctl.models import build_encoder
from skelctl.models.rnn import run_causal, run_recurrence, sequence_lengths
from skelctl.skeletons import NTU25

from conftest import gen

# (kind, options): PCM3's causal BiGRU with its input norm, the packed CRRL GRU, an LSTM and the
# truly bidirectional GRU with an input norm
ENCODERS = {
    "bigru-causal-norm": ("bigru", {"hidden": 6, "layers": 2, "input_norm": True}),
    "gru-packed": ("gru", {"hidden": 6, "layers": 2, "dropout": 0.0}),
    "lstm": ("lstm", {"hidden": 6, "layers": 2, "dropout": 0.0}),
    "bigru-bidirectional-norm": ("bigru", {"hidden": 6, "layers": 2, "input_norm": True,
                                           "direction": "bidirectional"}),
}
FEATURES = 25 * 3 * 2  # a frame's flattened coordinates


def encoder(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kind, options = ENCODERS[name]
    return build_encoder(kind, NTU25, 2, **options).train()


def batch() -> torch.Tensor:
    """Four samples of 10 frames; the second ends after 6 (zero padding), as a packed store's."""
    x = torch.randn(4, 3, 10, 25, 2, generator=gen(1))
    x[1, :, 6:] = 0.0
    return x


def by_hand(model, x: torch.Tensor, before: torch.Tensor | float = 0.0,
            after: torch.Tensor | float = 0.0) -> torch.Tensor:
    """The per-step features as PCM3 computed them beside the encoder: the flattened input plus
    ``before``, the input norm, plus ``after``, then the recurrence over the lengths of ``x``."""
    seq = model.flatten(x) + before
    if model.input_norm is not None:
        seq = model.input_norm(seq.transpose(1, 2)).transpose(1, 2)
    run = run_causal if model.direction == "causal" else run_recurrence
    return run(model.rnn, seq + after, sequence_lengths(x) if model.packed else None)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_without_a_prompt_the_features_are_those_of_the_input_as_it_is(name):
    model, x = encoder(name), batch()
    expected = by_hand(model, x)
    assert torch.equal(model.features(x), expected)
    assert torch.equal(model.features(x, prompt=None, prompt_after_norm=True), expected)
    assert torch.equal(model(x), model.pool(expected, model.lengths(x)))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_a_prompt_is_added_before_or_after_the_input_norm(name):
    model, x = encoder(name), batch()
    prompt = torch.randn(1, 1, FEATURES, generator=gen(2))
    before = model.features(x, prompt=prompt)
    after = model.features(x, prompt=prompt, prompt_after_norm=True)
    assert torch.equal(before, by_hand(model, x, before=prompt))
    assert torch.equal(after, by_hand(model, x, after=prompt))
    lengths = model.lengths(x)
    assert torch.equal(model(x, prompt=prompt), model.pool(before, lengths))
    assert torch.equal(model(x, prompt=prompt, prompt_after_norm=True), model.pool(after, lengths))
    assert not torch.allclose(after, model.features(x), atol=1e-3)  # it acts


def test_a_prompt_before_a_training_input_norm_is_removed_and_after_it_acts():
    """The reason PCM3's ``prompts: authors`` leaves its domain prompts inert: a batch norm in
    training mode subtracts the batch mean, so a constant shift before it changes nothing."""
    model, x = encoder("bigru-causal-norm"), batch()
    prompt = torch.full((1, 1, FEATURES), 3.0)
    assert torch.allclose(model.features(x, prompt=prompt), model.features(x), atol=1e-5)
    assert not torch.allclose(model.features(x, prompt=prompt, prompt_after_norm=True),
                              model.features(x), atol=1e-2)


def test_a_prompt_is_the_same_as_shifting_each_frames_coordinates_in_the_flattened_order():
    """Without an input norm a prompt ``(1, T, V * C * M)`` is the input moved by it, entry
    ``v * C * M + c * M + m`` moving coordinate c of joint v of body m; before or after is
    the same."""
    model, x = encoder("lstm"), batch()  # not packed: the shifted padding is read as frames
    prompt = torch.randn(1, 10, FEATURES, generator=gen(3))
    shift = prompt.view(1, 10, 25, 3, 2).permute(0, 3, 1, 2, 4)  # to (1, C, T, V, M)
    expected = model.features(x + shift)
    assert torch.equal(model.features(x, prompt=prompt), expected)
    assert torch.equal(model.features(x, prompt=prompt, prompt_after_norm=True), expected)


def test_packed_lengths_come_from_the_input_not_the_prompted_padding():
    model, x = encoder("gru-packed"), batch()
    prompt = torch.ones(1, 1, FEATURES)  # makes the padding frames non-zero
    steps = model.features(x, prompt=prompt)
    assert sequence_lengths(x).tolist() == [10, 6, 10, 10]
    assert (steps[1, 6:] == 0).all() and (steps[1, :6] != 0).any(dim=1).all()
    # a sample's features do not depend on the padding after it, with the prompt as without
    alone = model.features(x[1:2, :, :6], prompt=prompt)
    torch.testing.assert_close(steps[1:2, :6], alone, rtol=1e-5, atol=1e-6)
