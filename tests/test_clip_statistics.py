"""The clip statistics in the loss history: each clipping epoch's mean pre-clip gradient norm
(``grad_norm``) and share of clipped steps (``clipped``), which are not losses."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from skelctl.methods.base import Phase
from skelctl.settings import TrainConfig
from skelctl.train import Precision, Recorder, Samples, fit, train_step

from conftest import CPU

# a sample's gradient: its loss is w . c, so the gradient is c whatever w is; norms 5 and 1
STEEP, GENTLE = [3.0, 4.0], [0.6, 0.8]


class Linear(nn.Module):
    """``loss = w . c`` for the batch's ``c``: the gradient's norm is known exactly."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -1.0]))

    def forward(self, batch, generator, epoch):
        loss = (batch["c"] @ self.w).mean()
        return {"loss": loss, "slope": loss.detach()}


def samples(*gradients: list[float]) -> Samples:
    return Samples({"c": torch.tensor(gradients)})


def train(model: nn.Module, data: Samples, clip: float | None, phases: list[Phase] | None = None,
          **kwargs) -> list[dict[str, float]]:
    config = TrainConfig(epochs=2, batch_size=1, lr=0.1, lr_steps=[], grad_clip=clip)
    phases = phases or [Phase(2, 0.1, momentum=0.0, weight_decay=0.0)]
    return fit(model, data, phases, config, None, CPU, log=lambda _: None, **kwargs)


def test_a_tiny_clip_clips_every_step_and_records_the_norm_before_clipping():
    model = Linear()
    history = train(model, samples(STEEP, STEEP, STEEP), clip=1e-3)
    assert [row["clipped"] for row in history] == [1.0, 1.0]
    assert [row["grad_norm"] for row in history] == pytest.approx([5.0, 5.0])
    # the six steps moved w by lr x clip along -c each: clipped, not the norm-5 gradient
    assert model.w.tolist() == pytest.approx([1.0 - 6 * 0.1 * 1e-3 * 0.6,
                                              -1.0 - 6 * 0.1 * 1e-3 * 0.8], abs=1e-6)


def test_the_share_of_clipped_steps_and_the_mean_norm_over_an_epoch():
    """Two steps an epoch, of norms 5 and 1, clipped at 2: half clipped, mean norm 3."""
    history = train(Linear(), samples(STEEP, GENTLE), clip=2.0)
    assert [row["clipped"] for row in history] == [0.5, 0.5]
    assert [row["grad_norm"] for row in history] == pytest.approx([3.0, 3.0])
    history = train(Linear(), samples(STEEP, GENTLE), clip=10.0)
    assert [row["clipped"] for row in history] == [0.0, 0.0]
    assert [row["grad_norm"] for row in history] == pytest.approx([3.0, 3.0])


def test_without_clipping_there_are_no_clip_statistics(tmp_path):
    history = train(Linear(), samples(STEEP, GENTLE), clip=None, history_csv=tmp_path / "r.csv")
    assert set(history[0]) == {"epoch", "lr", "loss", "slope"}
    with open(tmp_path / "r.csv") as f:
        assert next(csv.reader(f)) == ["epoch", "lr", "loss", "slope"]


def test_only_the_phases_that_clip_record_them(tmp_path):
    phases = [Phase(1, 0.1, momentum=0.0, weight_decay=0.0, clip=False, name="free"),
              Phase(1, 0.1, momentum=0.0, weight_decay=0.0, name="clipped")]
    history = train(Linear(), samples(STEEP, GENTLE), clip=2.0, phases=phases,
                    history_csv=tmp_path / "r.csv")
    assert "grad_norm" not in history[0] and history[1]["clipped"] == 0.5
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["grad_norm"], row["clipped"]) for row in rows[:1]] == [("", "")]
    assert (float(rows[1]["grad_norm"]), float(rows[1]["clipped"])) == (pytest.approx(3.0), 0.5)


def test_the_clip_statistics_are_not_losses(tmp_path):
    class Kept(Recorder):
        def checkpoint(self, history, losses):
            self.losses = losses

    kept = Kept()
    train(Linear(), samples(STEEP, GENTLE), clip=2.0, recorder=kept)
    assert kept.losses == {"loss", "slope"}
    # the plots: the loss curves only; no evaluation plot for the clip statistics
    train(Linear(), samples(STEEP, GENTLE), clip=2.0, history_csv=tmp_path / "r.loss.csv")
    assert (tmp_path / "r.loss.png").is_file() and not (tmp_path / "r.loss.eval.png").exists()


def test_a_step_whose_scaled_gradients_overflow_gives_no_clip_statistics():
    """Under loss scaling an overflowing step is skipped by the scaler: its infinite norm is no
    figure of the epoch."""
    model = Linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision(CPU, None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 16))
    batch = {"c": torch.tensor([[3e38, 0.0]])}  # x 65536 overflows float32
    out = train_step(model, batch, torch.Generator(), 0, optimizer, precision, 1.0)
    assert set(out) == {"loss", "slope"} and model.w.tolist() == [1.0, -1.0]  # skipped
    out = train_step(model, {"c": torch.tensor([STEEP])}, torch.Generator(), 0, optimizer,
                     precision, 1.0)
    assert float(out["grad_norm"]) == pytest.approx(5.0) and float(out["clipped"]) == 1.0


def test_a_resumed_clipped_run_has_the_same_history_and_weights(tmp_path):
    class Stop(Exception):
        pass

    def stop_after_two(model, epoch):
        if epoch == 2:
            raise Stop
        return {}

    def run(checkpoint, **kwargs):
        config = TrainConfig(epochs=3, batch_size=1, lr=0.1, lr_steps=[], grad_clip=2.0,
                             checkpoint_every=1)
        model = Linear()
        history = fit(model, samples(STEEP, GENTLE, STEEP), [Phase(3, 0.1)], config, checkpoint,
                      CPU, log=lambda _: None, **kwargs)
        return model, history

    straight, expected = run(tmp_path / "a.pt")
    with pytest.raises(Stop):
        run(tmp_path / "b.pt", evaluate=stop_after_two)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["losses"] == ["loss", "slope"]
    resumed, history = run(tmp_path / "b.pt")
    assert history == expected and [row["clipped"] for row in history] == [pytest.approx(2 / 3)] * 3
    assert torch.equal(resumed.w, straight.w)
