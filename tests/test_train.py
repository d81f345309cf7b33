"""The one training loop: variable-length batches, phases with their own parameters and learning
rates, exact resume across phases, the loss history and gradient clipping."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from skelctl.methods import build_method
from skelctl.methods.base import Phase
from skelctl.skeletons import NTU25
from skelctl.train import Recorder, Samples, fit, step_generator
from skelctl.settings import TrainConfig

from conftest import CPU, Interrupted, gen, interrupt_after


def test_samples_batch_pads_the_real_sequences():
    lengths = [2, 5, 3]
    offsets = torch.tensor([0, 2, 7, 10])
    c, v, m = 2, 3, 1
    f = torch.arange(10, dtype=torch.float32)
    frames = (100 * (f[:, None, None, None] + 1) + 10 * torch.arange(c)[None, :, None, None]
              + torch.arange(v)[None, None, :, None]).expand(10, c, v, m).contiguous()
    samples = Samples({"label": torch.tensor([7, 8, 9]), "index": torch.tensor([40, 41, 42])},
                      frames, offsets)
    batch = samples.batch(torch.tensor([2, 0]))
    assert batch["label"].tolist() == [9, 7] and batch["index"].tolist() == [42, 40]
    assert batch["length"].tolist() == [3, 2]
    sequence = batch["sequence"]
    assert sequence.shape == (2, c, 3, v, m)
    expected = torch.zeros(2, c, 3, v, m)
    for row, sample in enumerate((2, 0)):
        for t in range(lengths[sample]):
            expected[row, :, t] = frames[offsets[sample] + t]
    assert torch.equal(sequence, expected)
    # spot values: sample 2 is frames 7..9, sample 0 frames 0..1 then zeros
    assert sequence[0, 1, :, 2, 0].tolist() == [812.0, 912.0, 1012.0]
    assert sequence[1, 0, :, 0, 0].tolist() == [100.0, 200.0, 0.0]
    # a batch with the longest sample pads to it
    longest = samples.batch(torch.tensor([1]))
    assert longest["sequence"].shape == (1, c, 5, v, m) and longest["length"].tolist() == [5]
    # no sequences: no extra keys
    assert set(Samples({"label": torch.tensor([1, 2])}).batch(torch.tensor([1]))) == {"label"}


# --- 5. training in phases ----------------------------------------------------------------------

class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(3, 2)

    def forward(self, batch, generator, epoch):
        x = batch["x"] + 0.1 * torch.randn(batch["x"].shape, generator=generator)
        loss = ((self.b(torch.tanh(self.a(x))) - batch["y"]) ** 2).mean()
        return {"loss": loss, "mse": loss.detach()}


def toy_samples():
    g = gen(3)
    return Samples({"x": torch.randn(12, 4, generator=g), "y": torch.randn(12, 2, generator=g)})


def toy_phases():
    return [Phase(2, 0.1, parameters=lambda m: [{"params": list(m.a.parameters())}],
                  name="a"),
            Phase(1, 0.01, parameters=lambda m: [{"params": list(m.b.parameters())}],
                  name="b")]


TOY_CONFIG = TrainConfig(epochs=3, batch_size=4, lr_steps=[], checkpoint_every=1)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fit_trains_each_phases_parameters_at_its_learning_rate(tmp_path):
    model = Toy()
    model.a.bias.requires_grad_(False)  # frozen by the caller: stays frozen
    start = weights(model)
    snapshots = {}

    def evaluate(m, epoch):
        snapshots[epoch] = weights(m)
        return {"grad_a": float(m.a.weight.requires_grad),
                "grad_b": float(m.b.weight.requires_grad)}

    history = fit(model, toy_samples(), toy_phases(), TOY_CONFIG, tmp_path / "c.pt", CPU,
                  tmp_path / "loss.csv", log=lambda _: None, evaluate=evaluate)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["phase"] for row in history] == [0, 0, 1]
    assert [row["lr"] for row in history] == pytest.approx([0.1, 0.1, 0.01])
    assert [(row["grad_a"], row["grad_b"]) for row in history] == [(1, 0), (1, 0), (0, 1)]
    assert all(row["loss"] == row["mse"] for row in history)
    # phase 0 moves a (not its frozen bias), never b; phase 1 moves b, never a
    for epoch in (1, 2):
        assert not torch.equal(snapshots[epoch]["a.weight"], start["a.weight"])
        assert torch.equal(snapshots[epoch]["a.bias"], start["a.bias"])
        assert torch.equal(snapshots[epoch]["b.weight"], start["b.weight"])
        assert torch.equal(snapshots[epoch]["b.bias"], start["b.bias"])
    assert not torch.equal(snapshots[2]["a.weight"], snapshots[1]["a.weight"])
    for key in ("a.weight", "a.bias"):
        assert torch.equal(snapshots[3][key], snapshots[2][key])
    assert not torch.equal(snapshots[3]["b.weight"], snapshots[2]["b.weight"])
    # the flags are as the caller left them
    assert model.a.weight.requires_grad and not model.a.bias.requires_grad
    assert model.b.weight.requires_grad and model.b.bias.requires_grad
    assert (tmp_path / "loss.csv").read_text().splitlines()[0].startswith("epoch,lr,loss,mse")

    # phase 1 is exactly SGD at lr 0.01 (fresh momentum) on b over epoch 2's batches
    replay = Toy()
    replay.load_state_dict(snapshots[2])
    optimizer = torch.optim.SGD(replay.b.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    samples = toy_samples()
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0 * 7919 + 2))
    for step in range(3):
        loss = replay(samples.batch(order[step * 4:(step + 1) * 4]),
                      step_generator(0, 2, step, 0, CPU), 2)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for key, value in replay.state_dict().items():
        torch.testing.assert_close(value, snapshots[3][key], rtol=0, atol=1e-7)


def longer_phases():
    """The second phase over three epochs, with a step of its own (counted from its start)."""
    first, second = toy_phases()
    return [first, dataclasses.replace(second, epochs=3, lr=0.05, lr_steps=[1])]


@pytest.mark.parametrize("phases, stop, phase", [(toy_phases, 1, 0), (toy_phases, 2, 0),
                                                 (longer_phases, 3, 1)])
def test_resume_across_phases_gives_the_same_weights(tmp_path, phases, stop, phase):
    straight = Toy()
    expected = fit(straight, toy_samples(), phases(), TOY_CONFIG, tmp_path / "a.pt", CPU,
                   log=lambda _: None)
    checkpoint = tmp_path / "b.pt"
    with pytest.raises(Interrupted):  # stopped during epoch stop + 1
        fit(Toy(), toy_samples(), phases(), TOY_CONFIG, checkpoint, CPU,
            log=lambda _: None, evaluate=interrupt_after(stop))
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["epoch"] == stop and saved["phase"] == phase
    resumed = Toy()
    with torch.no_grad():
        for p in resumed.parameters():
            p.add_(1.0)  # the weights must come from the checkpoint
    messages = []
    history = fit(resumed, toy_samples(), phases(), TOY_CONFIG, checkpoint, CPU,
                  log=messages.append)
    assert messages[0] == f"resuming from {checkpoint} after epoch {stop}"
    assert len(messages) == 1 + len(history) - stop  # then one line per epoch trained
    assert history == expected
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # other phase settings: not resumed from
    other = phases()
    other[1].lr = 0.02
    messages.clear()
    fit(Toy(), toy_samples(), other, TOY_CONFIG, checkpoint, CPU, log=messages.append)
    assert messages[0] == f"{checkpoint} was made with other settings; starting afresh"


def test_requires_grad_flags_restored_when_training_stops(tmp_path):
    model = Toy()
    with pytest.raises(Interrupted):
        fit(model, toy_samples(), toy_phases(), TOY_CONFIG, None, CPU, log=lambda _: None,
            evaluate=interrupt_after(0))
    assert all(p.requires_grad for p in model.parameters())


def test_history_lr_is_the_rate_the_epoch_trained_with():
    phase = Phase(2, 0.1, lr_steps=[1])
    history = fit(Toy(), toy_samples(), [phase], TOY_CONFIG, None, CPU, log=lambda _: None)
    assert [row["lr"] for row in history] == pytest.approx([0.1, 0.01])


def test_phase_groups_default_to_the_trainable_parameters():
    model = Toy()
    model.b.bias.requires_grad_(False)
    groups = Phase(1, 0.1).groups(model)
    assert len(groups) == 1
    assert {id(p) for p in groups[0]["params"]} == {
        id(model.a.weight), id(model.a.bias), id(model.b.weight)}
    method = build_method("skeletonclr", ("joint",), NTU25, 2, encoder="gru",
                          encoder_options={"hidden": 8, "layers": 1},
                          options={"queue_size": 8})
    phases = method.phases(**TrainConfig(epochs=4, lr=0.3, lr_steps=[3]).schedule())
    assert [(p.epochs, p.lr, p.lr_steps, p.weight_decay) for p in phases] == [(4, 0.3, [3], 1e-4)]
    assert build_method("untrained", ("joint", "bone"), NTU25, 2, encoder="gru",
                        encoder_options={"hidden": 8, "layers": 1}).phases(
        **TrainConfig().schedule()) == []


def test_gradient_clipping_bounds_every_step():
    """With ``grad_clip`` each SGD step (no momentum, no decay) moves the weights by at most
    lr x grad_clip; without it the same data moves them further."""
    def largest_step(clip):
        model = Toy()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        config = dataclasses.replace(TOY_CONFIG, epochs=1, batch_size=12, grad_clip=clip)
        fit(model, toy_samples(), [Phase(1, 10.0, momentum=0.0, weight_decay=0.0)], config,
            None, CPU, log=lambda _: None)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm())

    assert largest_step(1e-3) == pytest.approx(10.0 * 1e-3, rel=1e-4)  # one step, clipped
    assert largest_step(None) > 0.1


def test_mixed_precision_is_bf16_where_the_device_has_it(monkeypatch):
    from skelctl.train import amp_precision

    assert amp_precision(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert amp_precision(torch.device("cuda")) == torch.bfloat16  # Ampere and later
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert amp_precision(torch.device("cuda")) == torch.float16  # older GPUs: loss scaling too


# --- self-supervised pretraining through fit: resume, amp, seeds --------------------------------

def small_method(seed=0):
    torch.manual_seed(seed)
    return build_method("skeletonclr", ("joint",), NTU25, 2, encoder="gru",
                        encoder_options={"hidden": 8, "layers": 1},
                        options={"queue_size": 16, "augment": {"crop": {}, "shear": {}}})


def pretrain(method, joints, config, checkpoint, device, log=print):
    """Self-supervised training as the pretrain stage runs it."""
    return fit(method, Samples({"joint": joints}), method.phases(**config.schedule()), config,
               checkpoint, device, log=log)


def test_resume_gives_the_same_weights(tmp_path):
    data = torch.randn(24, 3, 12, 25, 2, generator=gen(1))
    config = TrainConfig(epochs=4, batch_size=8, lr_steps=[3], checkpoint_every=2)
    straight = small_method()
    pretrain(straight, data, config, tmp_path / "a" / "checkpoint.pt", torch.device("cpu"),
             log=lambda _: None)
    first = small_method()
    half = TrainConfig(**{**config.__dict__, "epochs": 2})
    checkpoint = tmp_path / "b" / "checkpoint.pt"
    pretrain(first, data, half, checkpoint, torch.device("cpu"), log=lambda _: None)
    state = torch.load(checkpoint, weights_only=False)
    # as if the longer run had been interrupted
    state["identity"]["train"]["epochs"] = 4
    state["identity"]["phases"][0]["epochs"] = 4
    torch.save(state, checkpoint)
    resumed = small_method(seed=99)  # weights come from the checkpoint
    messages = []
    monitored = TrainConfig(**{**config.__dict__, "knn_every": 2})  # monitoring is no new run
    history = pretrain(resumed, data, monitored, checkpoint, torch.device("cpu"),
                       log=messages.append)
    assert messages[0] == f"resuming from {checkpoint} after epoch 2" and len(history) == 4
    # outside a terminal, one line per trained epoch
    assert [m.split(" loss ")[0] for m in messages[1:]] == ["epoch 3/4", "epoch 4/4"]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_amp_trains_in_float32_where_the_cpu_has_no_native_bf16(monkeypatch):
    import skelctl.train as train

    data = torch.randn(16, 3, 12, 25, 2, generator=gen(2))
    config = TrainConfig(epochs=1, batch_size=8, checkpoint_every=5, amp=True)
    monkeypatch.setattr(train, "amp_available", lambda device: False)
    messages = []
    amp_off = pretrain(small_method(), data, config, None, torch.device("cpu"),
                       log=messages.append)
    assert messages[0].startswith("amp: this CPU has no native bf16")
    plain = pretrain(small_method(), data, TrainConfig(**{**config.__dict__, "amp": False}), None,
                     torch.device("cpu"), log=lambda _: None)
    assert [row["loss"] for row in amp_off] == [row["loss"] for row in plain]


def test_same_seed_same_numbers(tmp_path):
    data = torch.randn(16, 3, 12, 25, 2, generator=gen(2))
    config = TrainConfig(epochs=2, batch_size=8, checkpoint_every=5)
    runs = []
    for _ in range(2):
        method = small_method()
        history = pretrain(method, data, config, None, torch.device("cpu"))
        runs.append((history, method.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1].values(), runs[1][1].values()))


class Recorded(Recorder):
    """The hooks' calls: (hook, epochs in the history, loss columns)."""

    def __init__(self):
        self.calls = []

    def epoch(self, history, losses):
        self.calls.append(("epoch", len(history), sorted(losses)))

    def checkpoint(self, history, losses):
        self.calls.append(("checkpoint", len(history), sorted(losses)))

    def finished(self, history, losses):
        self.calls.append(("finished", len(history), sorted(losses)))


def test_a_recorder_gets_its_hooks_in_order_and_a_resumed_run_keeps_evaluation_apart(tmp_path):
    """The history goes to the caller's recorder: every epoch, at each checkpoint, at the end;
    the loss columns exclude what ``evaluate`` adds, after a resume too (the checkpoint names
    them), so the KNN curve stays on its own plot."""
    config = TrainConfig(epochs=3, batch_size=4, lr_steps=[], checkpoint_every=2)
    recorder = Recorded()
    fit(Toy(), toy_samples(), [Phase(2, 0.1)], config, tmp_path / "c.pt", CPU,
        log=lambda _: None, evaluate=lambda model, epoch: {"top1": 50.0}, recorder=recorder)
    assert recorder.calls == [("epoch", 1, ["loss", "mse"]), ("checkpoint", 2, ["loss", "mse"]),
                              ("finished", 2, ["loss", "mse"])]
    assert torch.load(tmp_path / "c.pt", weights_only=True)["losses"] == ["loss", "mse"]
    recorder = Recorded()
    fit(Toy(), toy_samples(), [Phase(3, 0.1)], config, tmp_path / "d.pt", CPU,
        log=lambda _: None, evaluate=lambda model, epoch: {"top1": 50.0})
    resumed = fit(Toy(), toy_samples(), [Phase(3, 0.1)], config, tmp_path / "d.pt", CPU,
                  log=lambda _: None, evaluate=lambda model, epoch: {"top1": 50.0},
                  recorder=recorder)
    assert len(resumed) == 3 and recorder.calls[-1] == ("finished", 3, ["loss", "mse"])
