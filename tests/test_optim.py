"""Optimisation every run can choose: AdamW (no weight decay on parameters of fewer than 2
dimensions), the per-step warmup-and-cosine schedule, layer-wise learning-rate decay; exact
resume under them, their place in a checkpoint's identity, and their errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from skelctl.methods import build_method
from skelctl.methods.base import Phase
from skelctl.options import OptionsError, make_options
from skelctl.skeletons import NTU25
from skelctl.train import Samples, fit, start_phase, training_identity, training_settings, warmup_cosine
from skelctl.settings import TrainConfig

from conftest import CPU, Interrupted, gen, interrupt_after, write_params


class Layered(nn.Module):
    """A fake encoder that numbers its layers as the transformer does: 0 the embedding, i + 1
    block i, ``num_layers`` (3) the final norm."""

    num_layers = 3

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.norm = nn.LayerNorm(4)
        self.out_dim = 4

    def layer_of(self, name: str) -> int:
        if name.startswith("embed"):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # a joint sequence (N, C, T, V, M): its mean over frames, joints, bodies
            x = x.mean(dim=(2, 3, 4))
        x = self.embed(x)
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.norm(x)


class Toy(nn.Module):
    """The layered encoder and a head outside it, trained to regress ``y``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = Layered()
        self.head = nn.Linear(4, 2)

    def forward(self, batch, generator, epoch):
        x = batch["x"] + 0.1 * torch.randn(batch["x"].shape, generator=generator)
        return {"loss": ((self.head(self.encoder(x)) - batch["y"]) ** 2).mean()}


def toy_samples(n=12):
    g = gen(3)
    return Samples({"x": torch.randn(n, 3, generator=g), "y": torch.randn(n, 2, generator=g)})


MAMP_LIKE = TrainConfig(epochs=5, batch_size=4, lr=0.1, weight_decay=0.05, lr_steps=[],
                        optimizer="adamw", lr_schedule="cosine", warmup_epochs=1, min_lr=0.01,
                        checkpoint_every=1)


def groups_by_parameter(optimizer, model):
    """Each named parameter's optimiser group."""
    found = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    return {name: found[id(p)] for name, p in model.named_parameters()}


def optimizer_of(model, config, phase=None, steps=3):
    trainable = {p: p.requires_grad for p in model.parameters()}
    return start_phase(model, phase or Phase(config.epochs, config.lr,
                                             weight_decay=config.weight_decay),
                       config, trainable, steps)


# --- the schedule ------------------------------------------------------------------------------

def test_warmup_cosine_is_mae_s_formula_at_known_points():
    # MAMP's pretraining: lr 1e-3, min_lr 5e-4, 20 warmup epochs of 400
    rate = lambda epoch: warmup_cosine(epoch, 1e-3, 5e-4, 20, 400)  # noqa: E731
    assert rate(0) == 0.0  # the warmup starts from 0
    assert rate(5) == pytest.approx(2.5e-4)  # a quarter of the way up
    assert rate(20) == pytest.approx(1e-3)  # the warmup's end is the peak
    assert rate(210) == pytest.approx(7.5e-4)  # half-way down the cosine: midway to min_lr
    assert rate(400) == pytest.approx(5e-4)  # the cosine ends at min_lr


def test_the_rate_changes_every_step_as_the_formula_says(monkeypatch):
    """12 samples in batches of 4: 3 steps an epoch; step k trains at f(k / 3)."""
    import skelctl.train as train

    seen = []
    original = train.train_step

    def recording(model, batch, generator, epoch, optimizer, precision, clip):
        seen.append(optimizer.param_groups[0]["lr"])
        return original(model, batch, generator, epoch, optimizer, precision, clip)

    monkeypatch.setattr(train, "train_step", recording)
    config = dataclasses.replace(MAMP_LIKE, optimizer="sgd", weight_decay=1e-4)
    history = fit(Toy(), toy_samples(), [Phase(5, 0.1)], config, None, CPU, log=lambda _: None)
    assert len(seen) == 15
    # the warmup: 0, then a third and two thirds of lr; the peak at the first step of epoch 2
    assert seen[:4] == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])
    # mid-cosine (epoch 3 of the 4 after the warmup): midway between lr and min_lr
    assert seen[9] == pytest.approx(0.055)
    # the last step, epoch 14/3: 11/12 of the way down
    assert seen[14] == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 11 / 12)))
    assert seen[14] == pytest.approx(0.0115333, abs=1e-7)
    assert seen == pytest.approx([warmup_cosine(k / 3, 0.1, 0.01, 1, 5) for k in range(15)])
    # an epoch's history row gives the rate of its first step
    assert [row["lr"] for row in history] == pytest.approx(seen[::3])


def test_the_step_schedule_is_unchanged():
    model = Toy()
    optimizer, scheduler = optimizer_of(model, TrainConfig(epochs=4, lr=0.3, lr_steps=[2]),
                                        Phase(4, 0.3, [2], lr_gamma=0.5))
    assert type(optimizer) is torch.optim.SGD and type(scheduler).__name__ == "MultiStepLR"
    assert len(optimizer.param_groups) == 1  # the phase's one group, as before
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.3, 0.3, 0.15, 0.15])


# --- AdamW and weight decay --------------------------------------------------------------------

def test_adamw_decays_only_parameters_of_two_or_more_dimensions():
    model = Toy()
    optimizer, _ = optimizer_of(model, MAMP_LIKE)
    assert type(optimizer) is torch.optim.AdamW
    groups = groups_by_parameter(optimizer, model)
    for name, parameter in model.named_parameters():
        expected = 0.05 if parameter.ndim >= 2 else 0.0
        assert groups[name]["weight_decay"] == expected, name
        assert groups[name]["betas"] == (0.9, 0.95)  # MAMP's pretraining betas by default
    assert {name for name, group in groups.items() if group["weight_decay"] == 0.0} == {
        "encoder.embed.bias", "encoder.blocks.0.bias", "encoder.blocks.1.bias",
        "encoder.norm.weight", "encoder.norm.bias", "head.bias"}
    assert len(optimizer.param_groups) == 2  # no layer decay: one decayed group, one not
    # betas as given (MAMP's fine-tuning keeps torch's)
    given, _ = optimizer_of(model, dataclasses.replace(MAMP_LIKE, betas=(0.9, 0.999)))
    assert all(group["betas"] == (0.9, 0.999) for group in given.param_groups)


def test_adam_and_sgd_decay_every_parameter_as_before():
    model = Toy()
    for name, kind in (("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        config = TrainConfig(epochs=2, lr=0.1, weight_decay=0.05, optimizer=name)
        optimizer, _ = optimizer_of(model, config)
        assert type(optimizer) is kind and len(optimizer.param_groups) == 1
        assert optimizer.param_groups[0]["weight_decay"] == 0.05
    adam, _ = optimizer_of(model, TrainConfig(epochs=2, optimizer="adam"))
    assert adam.param_groups[0]["betas"] == (0.9, 0.999)


def test_one_adamw_step_leaves_a_bias_undecayed():
    """With no gradient signal (a loss of 0 through the weights: zero gradients) an AdamW step
    moves a decayed weight by exactly -lr x weight_decay x weight, and a bias not at all."""
    model = Toy()
    config = dataclasses.replace(MAMP_LIKE, lr_schedule="step", warmup_epochs=0, min_lr=0.0)
    optimizer, _ = optimizer_of(model, config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (0.0 * sum(p.sum() for p in model.parameters())).backward()
    optimizer.step()
    after = model.state_dict()
    torch.testing.assert_close(after["head.weight"], before["head.weight"] * (1 - 0.1 * 0.05))
    assert torch.equal(after["head.bias"], before["head.bias"])
    assert torch.equal(after["encoder.norm.weight"], before["encoder.norm.weight"])


# --- layer-wise decay --------------------------------------------------------------------------

def test_layer_decay_scales_each_layer_by_hand_values():
    model = Toy()
    config = dataclasses.replace(MAMP_LIKE, layer_decay=0.5)
    optimizer, scheduler = optimizer_of(model, config, steps=3)
    groups = groups_by_parameter(optimizer, model)
    # 0.5 ** (3 - layer): embedding 1/8, block 0 1/4, block 1 1/2, the final norm and the head 1
    expected = {"encoder.embed": 0.125, "encoder.blocks.0": 0.25, "encoder.blocks.1": 0.5,
                "encoder.norm": 1.0, "head": 1.0}
    for name, group in groups.items():
        scale = expected[name.rsplit(".", 1)[0]]
        assert group["lr_scale"] == scale, name
        assert group["weight_decay"] == (0.05 if name.endswith("weight") and "norm" not in name
                                         else 0.0), name
    # one group a (layer, decay) pair: 4 scales x decayed or not (the norm and the head share 1)
    assert len(optimizer.param_groups) == 8
    # the scale multiplies whatever the schedule sets, at every step
    for step in range(15):
        rate = warmup_cosine(step / 3, 0.1, 0.01, 1, 5)
        for name, group in groups.items():
            assert group["lr"] == pytest.approx(rate * expected[name.rsplit(".", 1)[0]]), (
                step, name)
        optimizer.step()
        scheduler.step()


def test_layer_decay_under_the_step_schedule_and_off_at_one():
    model = Toy()
    config = TrainConfig(epochs=4, lr=0.2, lr_steps=[1], layer_decay=0.5)
    optimizer, scheduler = optimizer_of(model, config, Phase(4, 0.2, [1]))
    groups = groups_by_parameter(optimizer, model)
    assert groups["encoder.embed.weight"]["lr"] == pytest.approx(0.2 * 0.125)
    optimizer.step()
    scheduler.step()
    assert groups["encoder.embed.weight"]["lr"] == pytest.approx(0.02 * 0.125)
    assert groups["head.weight"]["lr"] == pytest.approx(0.02)
    assert len(optimizer.param_groups) == 4  # SGD decays every parameter: one group a layer
    off = TrainConfig(layer_decay=1.0)
    assert off.layer_decay is None and training_settings(off) == training_settings(TrainConfig())


def test_layer_decay_needs_an_encoder_that_numbers_its_layers():
    method = build_method("skeletonclr", ("joint",), NTU25, 2, encoder="gru",
                          encoder_options={"hidden": 8, "layers": 1}, options={"queue_size": 8})
    config = TrainConfig(epochs=1, batch_size=8, layer_decay=0.8)
    with pytest.raises(ValueError, match=r"^layer_decay 0.8 needs an encoder that numbers its "
                                         r"layers \(num_layers and layer_of, as the transformer "
                                         r"has\); SkeletonCLR has none$"):
        fit(method, Samples({"joint": torch.randn(8, 3, 12, 25, 2, generator=gen(1))}),
            method.phases(**config.schedule()), config, None, CPU, log=lambda _: None)


# --- resume and identity -----------------------------------------------------------------------


@pytest.mark.parametrize("stop", [1, 3])  # inside the warmup's end, and well into the cosine
def test_resume_under_adamw_cosine_and_layer_decay_gives_the_same_weights(tmp_path, stop):
    config = dataclasses.replace(MAMP_LIKE, layer_decay=0.5)
    phases = lambda: [Phase(5, 0.1, weight_decay=0.05)]  # noqa: E731
    straight = Toy()
    expected = fit(straight, toy_samples(), phases(), config, tmp_path / "a.pt", CPU,
                   log=lambda _: None)
    checkpoint = tmp_path / "b.pt"
    with pytest.raises(Interrupted):
        fit(Toy(), toy_samples(), phases(), config, checkpoint, CPU, log=lambda _: None,
            evaluate=interrupt_after(stop))
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] == stop and saved["scheduler"]["last_epoch"] == 3 * stop
    resumed = Toy()
    with torch.no_grad():
        for p in resumed.parameters():
            p.add_(1.0)  # the weights must come from the checkpoint
    messages = []
    history = fit(resumed, toy_samples(), phases(), config, checkpoint, CPU, log=messages.append)
    assert messages[0] == f"resuming from {checkpoint} after epoch {stop}"
    assert history == expected
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # other schedule settings: not resumed from
    for other in ({"warmup_epochs": 2}, {"min_lr": 0.0}, {"layer_decay": 0.6},
                  {"betas": (0.9, 0.999)}, {"lr_schedule": "step", "warmup_epochs": 0,
                                            "min_lr": 0.0}):
        messages.clear()
        fit(Toy(), toy_samples(), phases(), dataclasses.replace(config, **other), checkpoint,
            CPU, log=messages.append)
        assert messages[0] == f"{checkpoint} was made with other settings; starting afresh", other


def test_the_defaults_keep_the_identity_older_checkpoints_have():
    before = {"epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_steps", "lr_gamma",
              "checkpoint_every", "seed", "amp", "grad_clip", "device"}
    assert set(training_settings(TrainConfig())) == before
    identity = training_identity({}, TrainConfig(), [Phase(300, 0.1, [250])])
    assert set(identity) == {"train", "phases", "world_size"}
    assert identity["phases"] == [{"epochs": 300, "lr": 0.1, "lr_steps": [250], "lr_gamma": 0.1,
                                   "momentum": 0.9, "weight_decay": 1e-4, "name": "train",
                                   "clip": True}]
    # set, they are part of it
    cosine = dataclasses.replace(MAMP_LIKE, layer_decay=0.8, betas=(0.9, 0.999))
    settings = training_settings(cosine)
    assert {k: settings[k] for k in ("lr_schedule", "warmup_epochs", "min_lr", "layer_decay",
                                     "betas")} == {
        "lr_schedule": "cosine", "warmup_epochs": 1, "min_lr": 0.01, "layer_decay": 0.8,
        "betas": (0.9, 0.999)}
    assert training_identity({}, cosine, [Phase(5, 0.1)])["optimizers"] == ["adamw"]


# --- the settings and their errors -------------------------------------------------------------

def test_the_settings_are_checked_with_the_key_named():
    def error(values, message):
        with pytest.raises(OptionsError) as info:
            make_options(TrainConfig, values, "runs.mamp.train")
        assert str(info.value) == f"runs.mamp.train{message}"

    error({"optimizer": "adamw", "betas": [0.9, 1.0]},
          ".betas: expected a list of 2: a number at least 0 and below 1, a number at least 0 "
          "and below 1 or empty (null), found [0.9, 1.0] (a list)")
    error({"optimizer": "adamw", "betas": [0.9]},
          ".betas: expected a list of 2: a number at least 0 and below 1, a number at least 0 "
          "and below 1 or empty (null), found [0.9] (a list)")
    error({"lr_schedule": "cosin"},
          ".lr_schedule: expected one of step, cosine, found 'cosin' (text); did you mean "
          "'cosine'?")
    error({"layer_decay": 0}, ".layer_decay: expected a number above 0 and at most 1 or empty "
                              "(null), found 0 (an integer)")
    error({"warmup_epochs": 5}, ": warmup_epochs and min_lr belong to the cosine schedule; set "
                                "lr_schedule: cosine (the step schedule uses lr_steps and "
                                "lr_gamma)")
    error({"betas": [0.9, 0.95]}, ": betas are adam's and adamw's; optimizer is sgd")
    error({"lr_schedule": "cosine", "epochs": 20, "warmup_epochs": 20},
          ": warmup_epochs 20 leaves none of the 20 epochs to the cosine")
    error({"lr_schedule": "cosine", "lr": 1e-3, "min_lr": 0.01},
          ": min_lr 0.01 is above lr 0.001: the cosine schedule falls from lr to min_lr")
    made = make_options(TrainConfig, {"optimizer": "adamw", "betas": [0.9, 0.95]}, "train")
    assert made.betas == (0.9, 0.95)  # a tuple, as a checkpoint's identity holds it
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'; known: sgd, adam, adamw"):
        TrainConfig(optimizer="lamb")


def test_a_phase_shorter_than_the_warmup_is_refused():
    config = dataclasses.replace(MAMP_LIKE, warmup_epochs=3)
    with pytest.raises(ValueError, match="warmup_epochs 3 leaves none of phase 'first''s 2 "
                                         "epochs to the cosine"):
        fit(Toy(), toy_samples(), [Phase(2, 0.1, name="first"), Phase(3, 0.1)], config, None,
            CPU, log=lambda _: None)


# --- fine-tuning -------------------------------------------------------------------------------

def test_the_finetune_section_reaches_fine_tuning(tmp_path):
    from skelctl.evaluate.finetune import finetune
    from skelctl.stages.downstream import finetune_settings
    from skelctl.stages.sections import check_sections

    mamp = {"optimizer": "adamw", "betas": [0.9, 0.999], "lr": 5e-4, "weight_decay": 0.05,
            "lr_schedule": "cosine", "warmup_epochs": 1, "min_lr": 1e-6, "layer_decay": 0.8,
            "epochs": 3, "batch_size": 4, "lr_steps": [], "augment": {}}
    params = write_params(tmp_path, {"finetune": {"runs": {"mamp": mamp}}})
    config, _, _ = finetune_settings(params, {}, "mamp")
    assert (config.optimizer, config.betas, config.lr_schedule, config.warmup_epochs,
            config.min_lr, config.layer_decay) == ("adamw", (0.9, 0.999), "cosine", 1, 1e-6, 0.8)
    assert finetune_settings(params, {}, None)[0] == TrainConfig(
        epochs=100, lr_steps=[80], checkpoint_every=10)  # the section's defaults: as before
    with pytest.raises(OptionsError, match=r"^p.yaml: finetune.layer_decay: expected a number "
                                           r"above 0 and at most 1 or empty \(null\), found 1.5"):
        check_sections({"finetune": {"layer_decay": 1.5}}, "p.yaml")

    joint = torch.randn(8, 3, 6, 25, 1, generator=gen(4))
    labels = torch.tensor([0, 1] * 4)
    encoder = Layered()
    result = finetune(encoder, "joint", NTU25, Samples({"joint": joint, "label": labels}),
                      joint, labels, 2, config, {}, CPU, checkpoint=tmp_path / "c.pt",
                      log=lambda _: None)
    assert [row["epoch"] for row in result.curve] == [1, 2, 3]
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    groups = saved["optimizer"]["param_groups"]
    assert {g["lr_scale"] for g in groups} == {0.8 ** 3, 0.8 ** 2, 0.8, 1.0}
    assert all(g["betas"] == (0.9, 0.999) for g in groups)
    # each layer's scale with and without decay; the final norm and the head at the full rate
    assert {(g["lr_scale"], g["weight_decay"]) for g in groups} == {
        (scale, decay) for scale in (0.8 ** 3, 0.8 ** 2, 0.8, 1.0) for decay in (0.05, 0.0)}
    assert saved["scheduler"]["last_epoch"] == 6  # 2 steps an epoch, stepped once a step
    assert saved["identity"]["train"]["layer_decay"] == 0.8
