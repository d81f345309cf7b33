"""ISC's evaluation protocol beside the default: linear heads on features of fresh random crops of
the real sequences every epoch, KNN and testing on centre crops, fine-tuning with Adam, each
selected per run in params and named in the results."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from skelctl.evaluate.crops import centre_crops, crop_features
from skelctl.evaluate.linear import train_linear, train_linear_on_crops
from skelctl.methods.base import Phase
from skelctl.skeletons import NTU25
from skelctl.train import Samples, fit
from skelctl.settings import Crop, LinearConfig, TrainConfig
from skelctl.stages.common import StageError

from conftest import CPU, gen, tiny_gru, write_params

ISC_CROP = {"train": [0.5, 1.0], "test": 0.95, "frames": 64}


def ragged(lengths: list[int], values: str = "random", seed: int = 0) -> Samples:
    """Samples of real sequences ``(C=3, n, V=25, M=2)`` of the given lengths: random
    coordinates, or a ramp whose every coordinate at frame t is t."""
    total = sum(lengths)
    if values == "ramp":
        frames = torch.cat([torch.arange(n, dtype=torch.float32) for n in lengths])
        frames = frames[:, None, None, None].expand(total, 3, 25, 2).contiguous()
    else:
        frames = torch.randn(total, 3, 25, 2, generator=gen(seed))
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    labels = torch.arange(len(lengths)) % 3
    return Samples({"label": labels, "index": torch.arange(len(lengths))}, frames, offsets)


# ---------------------------------------------------------------- crops

def test_centre_crop_resizes_iscs_central_frames():
    """ISC's test crop of n frames drops int(0.05 n / 2) at each end and resizes the rest to 64
    (linear, align_corners=False); frames after a sample's end in the padded batch are unused."""
    lengths = [100, 41, 300]
    samples = ragged(lengths, "ramp")
    batch = samples.batch(torch.arange(3))
    sequence = batch["sequence"].clone()
    for row, n in enumerate(lengths):
        sequence[row, :, n:] = 1e6  # padding must never be read
    out = Crop(**ISC_CROP).centre(sequence, batch["length"])
    assert out.shape == (3, 3, 64, 25, 2)
    for row, n in enumerate(lengths):
        start = int((1 - 0.95) * n / 2)
        kept = torch.arange(start, n - start, dtype=torch.float32)
        expected = nn.functional.interpolate(kept[None, None], size=64, mode="linear",
                                             align_corners=False)[0, 0]
        torch.testing.assert_close(out[row, 0, :, 0, 0], expected, rtol=0, atol=1e-4)
        assert torch.equal(out[row], out[row, :1, :, :1, :1].expand(3, 64, 25, 2))
    # n = 100: frames 2..97 (96 of them), so frame i sits at 2 + 1.5 i + 0.25
    torch.testing.assert_close(out[0, 0, :, 0, 0], 2.25 + 1.5 * torch.arange(64.0))
    assert centre_crops(samples, Crop(**ISC_CROP), batch_size=2).shape == (3, 3, 64, 25, 2)


def test_random_crops_keep_isc_lengths_and_are_seeded():
    lengths = [100, 41, 300, 64]
    batch = ragged(lengths, "ramp").batch(torch.arange(4))
    crop = Crop(**ISC_CROP)
    out = crop.random(batch["sequence"], batch["length"], gen(0))
    first, last = out[:, 0, 0, 0, 0], out[:, 0, -1, 0, 0]
    for row, n in enumerate(lengths):
        # inside the sequence, and at least half of it or 64 frames (all of a shorter one)
        assert 0 <= first[row] and last[row] <= n - 1
        assert last[row] - first[row] >= min(n, max(64, n // 2)) * 63 / 64 - 1
    assert torch.equal(out, crop.random(batch["sequence"], batch["length"], gen(0)))
    assert not torch.equal(out, crop.random(batch["sequence"], batch["length"], gen(1)))
    # 64 frames or fewer: the whole sequence, as ISC's code
    whole = Crop(test=1.0).centre(batch["sequence"], batch["length"])
    torch.testing.assert_close(out[1], whole[1], rtol=0, atol=0)
    torch.testing.assert_close(out[3], batch["sequence"][3, :, :64], rtol=0, atol=0)


def test_crop_settings_are_checked():
    assert Crop(train=[0.5, 1]).train == (0.5, 1.0)
    assert Crop(**ISC_CROP).label() == "crop [0.5, 1] -> 64, centre 0.95 at test"
    assert Crop(train=None).label() == "centre 0.95 -> 64 for train and test"
    for bad in ({"train": [1.0, 0.5]}, {"train": 0.5}, {"test": 0}, {"test": "all"},
                {"frames": 0}, {"frames": 6.4}):
        with pytest.raises(ValueError):
            Crop(**bad)
    with pytest.raises(ValueError, match="no random training crop"):
        Crop(train=None).random(torch.zeros(1, 3, 5, 25, 2), torch.tensor([5]), gen(0))


def test_crop_features_differ_each_epoch_and_repeat_for_a_seed():
    samples, encoder = ragged([90, 70, 120, 50, 80]), tiny_gru()
    crop = Crop(**ISC_CROP)

    def features(epoch, seed=0):
        return crop_features(encoder, "motion", NTU25, samples, crop, CPU, epoch, seed,
                             batch_size=2)

    assert features(0).shape == (5, encoder.out_dim)
    assert torch.equal(features(0), features(0))
    assert not torch.equal(features(0), features(1))
    assert not torch.equal(features(0), features(0, seed=1))
    # the centre crop is fixed; the view (motion) is derived after the crop
    centre = crop_features(encoder, "motion", NTU25, samples, crop, CPU)
    from skelctl.data.views import compute_view
    from skelctl.evaluate.features import extract_features
    joint = centre_crops(samples, crop)
    torch.testing.assert_close(centre, extract_features(encoder, compute_view("motion", joint,
                                                                              NTU25), CPU))


class Recording(nn.Module):
    """A tiny frozen encoder that records what it sees."""

    out_dim = 4

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.fc(x.mean(dim=(2, 3, 4)))


def test_linear_heads_train_on_fresh_crops_every_epoch():
    samples = ragged([90, 70, 120, 50, 80, 66], seed=1)
    test_x, test_y = torch.randn(4, 4, generator=gen(2)), torch.tensor([0, 1, 2, 0])
    config = LinearConfig(epochs=3, lr=0.1, lr_steps=[2], batch_size=4, init_std=0.01,
                          crop=Crop(**ISC_CROP))

    def run(seed):
        encoder = Recording()
        torch.manual_seed(0)
        encoder.fc.reset_parameters()
        results = train_linear_on_crops(
            encoder, "joint", NTU25, samples, test_x, test_y, 3,
            [dataclasses.replace(config, seed=seed),
             dataclasses.replace(config, seed=seed, standardise=True)], CPU)
        return encoder, results

    encoder, (paper, standardised) = run(0)
    # one encoder pass over the 6 samples an epoch (batches of 256), shared by both heads
    assert len(encoder.seen) == 3 and all(x.shape == (6, 3, 64, 25, 2) for x in encoder.seen)
    assert not torch.equal(encoder.seen[0], encoder.seen[1])
    assert not torch.equal(encoder.seen[1], encoder.seen[2])
    assert paper.metrics["epochs"] == 3 and len(paper.curve) == 3
    assert not torch.equal(paper.logits_last, standardised.logits_last)
    again, (paper_again, _) = run(0)
    assert all(torch.equal(a, b) for a, b in zip(encoder.seen, again.seen))
    assert torch.equal(paper.logits_last, paper_again.logits_last)
    other, _ = run(1)
    assert not torch.equal(encoder.seen[0], other.seen[0])
    with pytest.raises(ValueError, match="use train_linear_on_crops"):
        train_linear(torch.zeros(6, 4), samples.arrays["label"], test_x, test_y, 3, config, CPU)


@pytest.mark.parametrize("nesterov, gamma", [(False, 0.1), (True, 0.5)])
def test_fixed_features_train_exactly_as_before(nesterov, gamma):
    """crop: null is the reference protocol, step for step: SGD on one seeded permutation per
    epoch, the head N(0, init_std) from the seed, x gamma at the steps; Nesterov momentum and
    halving are CRRL's evaluation code's."""
    g = gen(5)
    train_x, train_y = torch.randn(50, 6, generator=g), torch.randint(0, 3, (50,), generator=g)
    test_x, test_y = torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g)
    config = LinearConfig(epochs=4, lr=0.5, lr_steps=[3], batch_size=16, seed=3,
                          nesterov=nesterov, lr_gamma=gamma)
    result = train_linear(train_x, train_y, test_x, test_y, 3, config, CPU)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        head = nn.Linear(6, 3)
        nn.init.normal_(head.weight, 0.0, 0.02)
        nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9, weight_decay=0.0,
                                nesterov=nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [3], gamma)
    order_generator = gen(3)
    for _ in range(4):
        order = torch.randperm(50, generator=order_generator)
        for start in range(0, 50, 16):
            chunk = order[start:start + 16]
            loss = nn.functional.cross_entropy(head(train_x[chunk]), train_y[chunk])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    assert torch.equal(result.logits_last, head(test_x).detach())


# ---------------------------------------------------------------- fine-tuning with Adam

class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 2)

    def forward(self, batch, generator, epoch):
        return {"loss": ((self.fc(batch["x"]) - batch["y"]) ** 2).mean()}


def toy_samples() -> Samples:
    g = gen(3)
    return Samples({"x": torch.randn(8, 4, generator=g), "y": torch.randn(8, 2, generator=g)})


class Interrupted(Exception):
    pass


def test_adam_is_used_when_asked_and_resumes(tmp_path):
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, weight_decay=1e-3, lr_steps=[],
                         checkpoint_every=1, optimizer="adam")
    model = Toy()
    fit(model, toy_samples(), [Phase(1, 1e-2, weight_decay=1e-3)], config, tmp_path / "a.pt",
        CPU, log=lambda _: None)
    # one full batch: exactly one Adam step from the same start
    reference = Toy()
    adam = torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=1e-3)
    samples = toy_samples()
    loss = reference(samples.batch(torch.randperm(8, generator=gen(0))), None, 0)["loss"]
    adam.zero_grad()
    loss.backward()
    adam.step()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=1e-7)
    saved = torch.load(tmp_path / "a.pt", weights_only=False)
    assert "exp_avg" in saved["optimizer"]["state"][0]
    assert saved["identity"]["optimizers"] == ["adam"]

    # interrupted after 2 of 4 epochs, resumed: the straight run's weights
    phases = [Phase(4, 1e-2, [3], weight_decay=1e-3)]
    longer = dataclasses.replace(config, epochs=4)
    straight = Toy()
    fit(straight, toy_samples(), phases, longer, tmp_path / "b.pt", CPU, log=lambda _: None)

    def stop_after_two(model, epoch):
        if epoch > 2:
            raise Interrupted
        return {}

    with pytest.raises(Interrupted):
        fit(Toy(), toy_samples(), phases, longer, tmp_path / "c.pt", CPU, log=lambda _: None,
            evaluate=stop_after_two)
    resumed, messages = Toy(), []
    fit(resumed, toy_samples(), phases, longer, tmp_path / "c.pt", CPU, log=messages.append)
    assert messages[0].startswith("resuming from")
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    # the same settings with SGD are other settings
    messages.clear()
    fit(Toy(), toy_samples(), phases, dataclasses.replace(longer, optimizer="sgd"),
        tmp_path / "c.pt", CPU, log=messages.append)
    assert messages[0].endswith("was made with other settings; starting afresh")


def test_sgd_is_the_default_and_a_phase_may_name_its_own(tmp_path):
    model = Toy()
    fit(model, toy_samples(), [Phase(1, 0.1, optimizer="sgd")],
        TrainConfig(epochs=1, batch_size=8, optimizer="adam", checkpoint_every=1),
        tmp_path / "a.pt", CPU, log=lambda _: None)
    saved = torch.load(tmp_path / "a.pt", weights_only=False)
    assert "momentum_buffer" in saved["optimizer"]["state"][0]
    fit(Toy(), toy_samples(), [Phase(1, 0.1)], TrainConfig(epochs=1, batch_size=8),
        tmp_path / "b.pt", CPU, log=lambda _: None)
    identity = torch.load(tmp_path / "b.pt", weights_only=False)["identity"]
    # SGD leaves the identity as it was before the choice existed: old checkpoints resume
    assert "optimizers" not in identity and "optimizer" not in identity["train"]
    assert all("optimizer" not in phase for phase in identity["phases"])
    with pytest.raises(ValueError, match="unknown optimizer 'adan'; known: sgd, adam, adamw"):
        TrainConfig(optimizer="adan")
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        fit(Toy(), toy_samples(), [Phase(1, 0.1, optimizer="lbfgs")],
            TrainConfig(epochs=1, batch_size=8), None, CPU, log=lambda _: None)


# ---------------------------------------------------------------- params

# CRRL's evaluation code (notes section 9): Nesterov SGD lr 0.1, batch 16, 85 epochs, halved
CRRL_LINEAR = {"lr": 0.1, "nesterov": True, "batch_size": 16, "epochs": 85,
               "lr_steps": [15, 35, 50, 66, 75], "lr_gamma": 0.5, "init_std": 0.01}


def test_per_run_settings_override_and_unknown_keys_name_the_file(tmp_path):
    from skelctl.stages.downstream import finetune_settings
    from skelctl.evaluate.linear import linear_label
    from skelctl.stages.encoders import linear_config, protocol_settings

    params = write_params(tmp_path, {
        "linear": {"runs": {"isc": {"crop": ISC_CROP, "lr": 0.1, "epochs": 80,
                                    "lr_steps": [50, 70], "batch_size": 64, "init_std": 0.01},
                            "crrl": CRRL_LINEAR}},
        "knn": {"runs": {"isc": {"crop": {"test": 0.95, "frames": 64}}}},
        "finetune": {"runs": {"isc": {"optimizer": "adam", "lr": 1e-4, "epochs": 50,
                                      "lr_steps": [30, 40], "crop": ISC_CROP, "augment": {}}}}})
    own, _ = linear_config(params, {}, "isc")
    assert own.crop == Crop(**ISC_CROP) and (own.lr, own.batch_size, own.init_std) == (
        0.1, 64, 0.01)
    assert own.lr_steps == [50, 70] and own.epochs == 80 and own.weight_decay == 0
    crrl, _ = linear_config(params, {}, "crrl")
    assert (crrl.nesterov, crrl.lr_gamma, crrl.lr_steps) == (True, 0.5, [15, 35, 50, 66, 75])
    assert linear_label(crrl) == ("paper (frozen features, Nesterov lr 0.1 x0.5 at "
                                  "[15, 35, 50, 66, 75], 85 epochs, batch 16)")
    other, _ = linear_config(params, {}, "skeletonclr-joint")
    assert not other.nesterov and other.lr_gamma == 0.1
    assert other.crop is None and other.lr == 3.0
    assert linear_config(params, {"lr": 1.0}, "isc")[0].lr == 1.0  # the command line wins
    assert protocol_settings(params, "knn", "isc", {})["crop"] == Crop(train=None)
    assert protocol_settings(params, "knn", "other", {})["crop"] is None
    config, settings, _ = finetune_settings(params, {}, "isc")
    assert (config.optimizer, config.lr, config.epochs, config.lr_steps) == (
        "adam", 1e-4, 50, [30, 40])
    assert settings["crop"] == Crop(**ISC_CROP) and settings["augment"] == {}
    assert settings["protocol"] == ("ISC (crop [0.5, 1] -> 64, centre 0.95 at test, adam lr "
                                    "0.0001 x0.1 at [30, 40], 50 epochs)")
    plain, settings, _ = finetune_settings(params, {}, None)
    assert plain.optimizer == "sgd" and settings["crop"] is None
    assert settings["protocol"].startswith("fixed view (sgd lr 0.1 x0.1 at [80], 100 epochs, "
                                           "augment crop, shear")

    def error(document, section, *parts):
        bad = write_params(tmp_path, document, "bad.yaml")
        with pytest.raises(StageError) as info:
            protocol_settings(bad, section, "isc", {})
        for part in (str(bad), *parts):
            assert part in str(info.value), (part, str(info.value))

    error({"knn": {"runs": {"isc": {"kk": 1}}}}, "knn",
          "knn.runs.isc: unknown key(s) kk (did you mean 'k'?)")
    error({"knn": {"neighbours": 1}}, "knn", "knn: unknown key(s) neighbours")
    error({"knn": {"runs": {"isc": {"crop": ISC_CROP}}}}, "knn",
          "knn.runs.isc.crop: unknown key(s) train")
    error({"finetune": {"runs": {"isc": {"optimizer": "adan"}}}}, "finetune",
          "finetune.runs.isc.optimizer: expected one of sgd, adam, adamw, found 'adan' (text); "
          "did you mean 'adam'?")
    error({"finetune": {"runs": {"isc": {"optimiser": "adam"}}}}, "finetune",
          "finetune.runs.isc: unknown key(s) optimiser (did you mean 'optimizer'?)")
    error({"linear": {"crop": {"train": [0.5, 2]}}}, "linear", "linear.crop: train must be")
    error({"linear": {"runs": {"isc": {"crop": 0.95}}}}, "linear",
          "linear.runs.isc.crop: expected a mapping of names to values or empty (null), found "
          "0.95 (a number)")


# ---------------------------------------------------------------- the stages

@pytest.fixture(scope="module")
def untrained(prepared_ntu60, tmp_path_factory):
    """An untrained tiny GRU run's encoder file, and params selecting ISC's protocol for it."""
    from skelctl.stages import pretrain

    folder = tmp_path_factory.mktemp("isc")
    short = {"epochs": 3, "lr": 0.1, "lr_steps": [2], "batch_size": 16, "init_std": 0.01}
    params = write_params(folder, {
        "defaults": {"variant": "50-shoulder", "encoder": "gru",
                     "encoder_options": {"hidden": 8, "layers": 1}, "train": {"device": "cpu"}},
        "runs": {"rand": {"method": "untrained", "streams": ["joint"]},
                 "isc": {"method": "untrained", "streams": ["motion"]}},
        "linear": {"epochs": 3, "lr_steps": [2], "device": "cpu", "figures": False,
                   "runs": {"isc": {**short, "crop": ISC_CROP}}},
        "knn": {"device": "cpu", "runs": {"isc": {"crop": {"test": 0.95, "frames": 64}}}},
        "finetune": {"epochs": 2, "batch_size": 16, "lr_steps": [1], "device": "cpu",
                     "runs": {"isc": {"optimizer": "adam", "lr": 1e-4, "epochs": 2,
                                      "lr_steps": [1], "crop": ISC_CROP, "augment": {}}}},
        "semi": {"percents": [50], "seeds": [0, 1], "protocols": ["finetune", "linear"]}})
    for run in ("rand", "isc"):
        pretrain.run("ntu60-xsub", run, prepared_ntu60, folder / "models", params, {})
    return params, prepared_ntu60, folder


def test_linear_and_knn_stages_label_the_protocol(untrained):
    from skelctl.evaluate.linear import linear_protocols
    from skelctl.stages.encoders import linear_config, open_encoder
    from skelctl.stages.evaluate import run_knn, run_linear

    params, data, folder = untrained
    where = (data, folder / "models", folder / "results", params, {})
    isc = run_linear("ntu60-xsub", "isc", *where)["motion"]
    assert isc["protocol"] == ("ISC (crop [0.5, 1] -> 64, centre 0.95 at test, lr 0.1 x0.1 at "
                               "[2], 3 epochs)")
    assert isc["epochs"] == 3 and "top1_last" in isc["standardised"]
    assert run_linear("ntu60-xsub", "isc", *where)["motion"] == isc  # seeded crops
    plain = run_linear("ntu60-xsub", "rand", *where)["joint"]
    assert plain["protocol"] == "paper (frozen features, lr 3.0 x0.1 at [2], 3 epochs)"
    # crop: null is the fixed-feature path, bit for bit
    encoder = open_encoder(folder / "models" / "ntu60-xsub" / "rand" / "joint.encoder.pt",
                           "ntu60-xsub", data)
    config, _ = linear_config(params, {}, "rand")
    direct = linear_protocols(encoder.features("train", CPU), encoder.features("val", CPU),
                              encoder.num_classes, config, CPU)
    assert direct.metrics == plain

    knn = run_knn("ntu60-xsub", "isc", *where)["motion"]
    assert knn["protocol"] == "ISC (centre 0.95 -> 64 for train and test)" and knn["k"] == 1
    assert run_knn("ntu60-xsub", "rand", *where)["joint"]["protocol"] == (
        "fixed view (frozen features)")


def test_semi_and_finetune_stages_on_crops_with_adam(untrained):
    from skelctl.stages.downstream import run_finetune, run_semi

    params, data, folder = untrained
    where = (data, folder / "models", folder / "results", params, {})
    finetuned = run_finetune("ntu60-xsub", "isc", *where)["motion"]
    assert finetuned["protocol"].startswith("ISC (crop [0.5, 1] -> 64, centre 0.95 at test, "
                                            "adam lr 0.0001 x0.1 at [1], 2 epochs")
    assert finetuned["epochs"] == 2
    semi = run_semi("ntu60-xsub", "isc", *where)["motion"]["50"]
    assert semi["finetune"]["protocol"] == finetuned["protocol"]
    assert semi["linear"]["protocol"].startswith("ISC (crop [0.5, 1] -> 64")
    assert len(semi["linear"]["top1_last_per_seed"]) == 2
    plain = run_semi("ntu60-xsub", "rand", *where)["joint"]["50"]
    assert plain["finetune"]["protocol"].startswith("fixed view (sgd lr 0.1")
    assert plain["linear"]["protocol"].startswith("paper (frozen features")
