"""Contract over the method registry: every registered method, whatever its name, builds with its
default options (a small queue and tiny encoders aside) for a small layout, takes one training step
that gives finite losses whose gradients reach its parameters, and exports encoders that round-trip
through the encoder file bit for bit. A newly registered method is tested without a test of its
own."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from skelctl.methods import METHODS, OptionsError, build_method
from skelctl.models import ENCODERS, load_encoder, save_encoder
from skelctl.skeletons import KINECT20

LAYOUT = KINECT20  # 20 joints: a graph that is not NTU's, kept small
PERSONS, BATCH, FRAMES = 2, 6, 12
TINY_ENCODERS = {"stgcn": {"hidden": 4, "out_dim": 16}, "bigru": {"hidden": 8, "layers": 1},
                 "gru": {"hidden": 8, "layers": 1}, "lstm": {"hidden": 8, "layers": 1},
                 "agcn": {"hidden": 4}, "hcn": {"frames": 12, "channels": 8},
                 "transformer": {"dim": 16, "depth": 1, "heads": 2, "frames": 12}}
# the settings of a run (epochs, lr, lr_steps, lr_gamma, momentum, weight decay)
RUN_SETTINGS = (4, 0.1, [3], 0.1, 0.9, 1e-4)


def small_options(cls: type) -> dict[str, int]:
    """Default options, except a queue that fits the tiny batch (the default holds 30,000 keys)."""
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    return {"queue_size": 2 * BATCH} if "queue_size" in fields else {}


def streams_of(cls: type) -> tuple[str, ...]:
    """Two streams for a multi-view method, one otherwise."""
    return ("joint", "motion") if cls.multi_view else ("joint",)


def accepted_encoders(name: str) -> dict[str, nn.Module]:
    """The method built on each registered encoder it accepts (a method may need a recurrent
    encoder, or one with a feature map; it says so with an OptionsError)."""
    cls = METHODS[name]
    built = {}
    for encoder in ENCODERS:
        torch.manual_seed(0)
        try:
            built[encoder] = build_method(name, streams_of(cls), LAYOUT, PERSONS, encoder,
                                          TINY_ENCODERS[encoder], small_options(cls))
        except OptionsError:
            continue
    return built


def tiny_batch(method: nn.Module) -> dict[str, torch.Tensor]:
    """A batch as the training loop hands it over: the views the method reads, label and index,
    and the variable-length sequences when the method asks for them."""
    g = torch.Generator().manual_seed(1)
    shape = (BATCH, LAYOUT.dims, FRAMES, LAYOUT.num_joints, PERSONS)
    batch = {view: torch.randn(shape, generator=g) for view in method.inputs}
    batch["label"] = torch.arange(BATCH) % 3
    batch["index"] = torch.arange(BATCH)
    if method.sequences:
        length = torch.tensor([FRAMES, FRAMES - 4] * (BATCH // 2))
        valid = torch.arange(FRAMES)[None] < length[:, None]  # zero after each sample's end
        sequence = torch.randn(shape, generator=g) * valid[:, None, :, None, None]
        batch["sequence"], batch["length"] = sequence, length
    return batch


def test_the_registry_holds_every_method_class_once():
    assert METHODS and len(set(METHODS.values())) == len(METHODS)
    for name, cls in METHODS.items():
        assert name == name.lower() and " " not in name
        assert cls.title, f"{name}: no title for the tables"


@pytest.mark.parametrize("name", list(METHODS))
def test_method_refuses_the_wrong_number_of_streams(name):
    cls = METHODS[name]
    if cls.multi_view is None:  # any number of streams
        return
    wrong = ("joint",) if cls.multi_view else ("joint", "motion")
    encoder = next(iter(accepted_encoders(name)))
    with pytest.raises(OptionsError, match="stream"):
        build_method(name, wrong, LAYOUT, PERSONS, encoder, TINY_ENCODERS[encoder],
                     small_options(cls))


@pytest.mark.parametrize("name", list(METHODS))
def test_method_takes_a_training_step_with_finite_losses_and_gradients(name):
    built = accepted_encoders(name)
    assert built, f"{name} accepts none of the registered encoders {list(ENCODERS)}"
    for encoder, method in built.items():
        assert tuple(method.streams) == streams_of(METHODS[name])
        phases = method.phases(*RUN_SETTINGS)
        batch = tiny_batch(method)
        if not phases:  # nothing to train, so no training step either
            with pytest.raises(RuntimeError):
                method(batch, torch.Generator().manual_seed(0), 0)
            continue
        method.train()
        losses = method(batch, torch.Generator().manual_seed(0), 0)
        assert "loss" in losses, f"{name}/{encoder}: no 'loss' among {list(losses)}"
        for key, value in losses.items():
            assert value.dim() == 0 and torch.isfinite(value), f"{name}/{encoder}: {key}={value}"
        losses["loss"].backward()
        trained = [p for group in phases[0].groups(method) for p in group["params"]]
        assert trained, f"{name}/{encoder}: its first phase trains no parameter"
        grads = [p.grad for p in trained if p.grad is not None]
        assert grads, f"{name}/{encoder}: the loss reaches none of the first phase's parameters"
        assert all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads), f"{name}/{encoder}: all gradients zero"


@pytest.mark.parametrize("name", list(METHODS))
def test_method_encoders_round_trip_through_the_encoder_file(name, tmp_path):
    for encoder, method in accepted_encoders(name).items():
        exported = method.encoders()
        assert set(exported) == set(method.streams), f"{name}/{encoder}"
        x = torch.randn(3, LAYOUT.dims, FRAMES, LAYOUT.num_joints, PERSONS,
                        generator=torch.Generator().manual_seed(2))
        for view, module in exported.items():
            path = tmp_path / f"{name}-{encoder}-{view}.encoder.pt"
            save_encoder(path, module, view, {"run": name})
            loaded, info = load_encoder(path)
            assert (info["name"], info["view"], info["layout"]) == (encoder, view, LAYOUT)
            weights, loaded_weights = module.state_dict(), loaded.state_dict()
            assert list(loaded_weights) == list(weights)
            for key, value in weights.items():
                assert torch.equal(loaded_weights[key], value), f"{name}/{encoder}: {key}"
            module.eval()
            with torch.no_grad():
                features = module(x)
                assert features.shape == (3, module.out_dim) and torch.isfinite(features).all()
                assert torch.equal(loaded(x), features)
