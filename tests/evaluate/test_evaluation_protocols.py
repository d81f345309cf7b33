"""Linear heads (single and multi-view), semi-supervised subsets and occlusion robustness."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from skelctl.evaluate.linear import LinearHead, linear_label, predict, train_linear
from skelctl.settings import LinearConfig
from skelctl.evaluate.occlusion import OCCLUSIONS, occlude
from skelctl.evaluate.subsets import sample_per_class
from skelctl.skeletons import KINECT20, NTU25

CPU = torch.device("cpu")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(seed: int, n: int = 600, dim: int = 16, classes: int = 6, noise: float = 0.5):
    """Linearly separable Gaussian clusters: train on the first 400, test on the rest."""
    g = gen(seed)
    centres = torch.randn(classes, dim, generator=g) * 2
    labels = torch.arange(n) % classes
    features = centres[labels] + torch.randn(n, dim, generator=g) * noise
    return features[:400], labels[:400], features[400:], labels[400:]


# ---------------------------------------------------------------- linear head

def test_one_view_head_is_a_linear_layer():
    head = LinearHead([8], 3)
    reference = nn.Linear(8, 3)
    reference.load_state_dict({"weight": head.fcs[0].weight, "bias": head.fcs[0].bias})
    x = torch.randn(5, 8, generator=gen(0))
    assert torch.allclose(head([x]), reference(x))
    assert torch.allclose(predict(head, x), reference(x))  # a bare tensor is one view


def test_two_view_head_averages_the_logits():
    head = LinearHead([2, 3], 2)
    with torch.no_grad():
        head.fcs[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        head.fcs[0].bias.copy_(torch.tensor([1.0, 0.0]))
        head.fcs[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, -1.0]]))
        head.fcs[1].bias.copy_(torch.tensor([0.0, 4.0]))
    a, b = torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 2.0, 3.0]])
    # view a: [3 + 1, 2] = [4, 2]; view b: [6, 4 - 3] = [6, 1]; mean: [5, 1.5]
    assert torch.allclose(head([a, b]), torch.tensor([[5.0, 1.5]]))
    with pytest.raises(ValueError, match="2 views but got 1"):
        head([a])


def test_head_initialisation():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = LinearHead([2048, 256], 60)
    for fc in head.fcs:
        assert fc.weight.std().item() == pytest.approx(0.02, rel=0.03)
        assert abs(fc.weight.mean().item()) < 1e-3
        assert torch.equal(fc.bias, torch.zeros(60))
    assert LinearHead([4096], 64, init_std=0.01).fcs[0].weight.std().item() == pytest.approx(
        0.01, rel=0.03)


def test_linear_learns_separable_features_and_returns_its_heads():
    train_x, train_y, test_x, test_y = blobs(0)
    config = LinearConfig(epochs=12, lr_steps=[10])
    result = train_linear(train_x, train_y, test_x, test_y, 6, config, CPU)
    m = result.metrics
    assert m["top1_last"] > 95 and m["top5_last"] == 100.0
    assert (m["train_samples"], m["test_samples"], m["epochs"]) == (400, 200, 12)
    top1 = [row["top1"] for row in result.curve]
    assert m["top1_best"] == max(top1) and m["best_epoch"] == top1.index(max(top1)) + 1
    assert [row["epoch"] for row in result.curve] == list(range(1, 13))
    for which in ("last", "best"):
        head = getattr(result, f"head_{which}")
        assert not head.training and head.fcs[0].weight.device.type == "cpu"
        assert torch.equal(predict(head, test_x), getattr(result, f"logits_{which}"))


def test_same_seed_same_numbers():
    data = blobs(1)
    config = LinearConfig(epochs=5, lr_steps=[4], seed=3)
    first = train_linear(*data, 6, config, CPU)
    second = train_linear(*data, 6, config, CPU)
    assert first.metrics == second.metrics and first.curve == second.curve
    assert torch.equal(first.logits_last, second.logits_last)
    other = train_linear(*data, 6, LinearConfig(epochs=5, lr_steps=[4], seed=4), CPU)
    assert not torch.equal(first.logits_last, other.logits_last)


@pytest.mark.parametrize("scale", [1e-3, 1e-6])
def test_standardise_rescues_tiny_features(scale):
    # Measured on these blobs at lr 3.0: features x1e-3 leave the plain probe at chance
    # (16.5%) after 20 epochs while the standardised one reaches 100%. 1e-6 is an untrained
    # ST-GCN's scale (variance ~1e-13), far below batch norm's epsilon of 1e-5.
    train_x, train_y, test_x, test_y = blobs(0)
    train_x, test_x = train_x * scale, test_x * scale
    plain = train_linear(train_x, train_y, test_x, test_y, 6,
                         LinearConfig(epochs=20, lr_steps=[16]), CPU)
    standard = train_linear(train_x, train_y, test_x, test_y, 6,
                            LinearConfig(epochs=20, lr_steps=[16], standardise=True), CPU)
    assert plain.metrics["top1_last"] < 30
    assert standard.metrics["top1_last"] > 95


def test_the_standardised_probe_is_blind_to_the_feature_scale():
    """The same features at any scale give the same classifier, and a near-constant feature is
    not blown up to unit variance (the overall scale is divided out, not each feature's)."""
    train_x, train_y, test_x, test_y = blobs(1)
    config = LinearConfig(epochs=5, lr_steps=[4], standardise=True)
    plain = train_linear(train_x, train_y, test_x, test_y, 6, config, CPU)
    tiny = train_linear(train_x * 1e-6, train_y, test_x * 1e-6, test_y, 6, config, CPU)
    torch.testing.assert_close(tiny.logits_last, plain.logits_last, rtol=1e-3, atol=1e-3)
    noise = torch.randn(len(train_x) + len(test_x), 1, generator=gen(3)) * 1e-7
    with_constant = train_linear(torch.cat([train_x, noise[:400]], 1), train_y,
                                 torch.cat([test_x, noise[400:]], 1), test_y, 6, config, CPU)
    assert with_constant.metrics["top1_last"] >= plain.metrics["top1_last"] - 2


def test_standardised_test_logits_use_running_statistics():
    train_x, train_y, test_x, test_y = blobs(2)
    result = train_linear(train_x, train_y, test_x, test_y, 6,
                          LinearConfig(epochs=10, lr_steps=[8], standardise=True), CPU)
    head = result.head_last
    norm, fc = head.norms[0], head.fcs[0]
    assert isinstance(norm, nn.BatchNorm1d) and not norm.affine
    # the features are first divided by the training set's root mean square; the running
    # statistics started at zero and after 40 updates at momentum 0.1 track the scaled data
    scale = train_x.pow(2).mean().sqrt()
    torch.testing.assert_close(head.scales, scale[None])
    assert torch.allclose(norm.running_mean, train_x.mean(0) / scale, atol=0.15)
    manual = (test_x / scale - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    assert torch.allclose(result.logits_last, manual @ fc.weight.T + fc.bias, atol=1e-5)
    scaled = test_x / scale
    batch = (scaled - scaled.mean(0)) / torch.sqrt(scaled.var(0, unbiased=False) + norm.eps)
    assert not torch.allclose(result.logits_last, batch @ fc.weight.T + fc.bias, atol=1e-3)


def test_multi_view_ensemble_head():
    train_x, train_y, test_x, test_y = blobs(3)
    noise_train = torch.randn(400, 5, generator=gen(9))
    noise_test = torch.randn(200, 5, generator=gen(10))
    result = train_linear([train_x, noise_train], train_y, [test_x, noise_test], test_y, 6,
                          LinearConfig(epochs=12, lr_steps=[10]), CPU)
    assert result.metrics["top1_last"] > 95
    head = result.head_last
    assert [fc.in_features for fc in head.fcs] == [16, 5]
    assert torch.equal(predict(head, [test_x, noise_test]), result.logits_last)
    mean = (head.fcs[0](test_x) + head.fcs[1](noise_test)) / 2
    assert torch.allclose(result.logits_last, mean.detach(), atol=1e-5)
    with pytest.raises(ValueError, match="2 train views but 1 test views"):
        train_linear([train_x, noise_train], train_y, test_x, test_y, 6, LinearConfig(), CPU)


# ---------------------------------------------------------------- semi-supervised subsets

def shuffled_labels(sizes: list[int], seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(labels)


@pytest.mark.parametrize("percent, expected", [(10, [1, 1, 1]), (50, [5, 2, 1]),
                                               (100, [10, 3, 1]), (1, [1, 1, 1])])
def test_sample_per_class_counts(percent, expected):
    labels = shuffled_labels([10, 3, 1])
    chosen = sample_per_class(labels, percent, seed=0)
    assert chosen.dtype == np.int64 and np.all(np.diff(chosen) > 0)  # sorted, no repeats
    assert np.bincount(labels[chosen], minlength=3).tolist() == expected


def test_sample_per_class_rounds_half_up():
    # 2.5 -> 3 and 0.5 -> 1 (banker's rounding would give 2 and 0)
    labels = shuffled_labels([50, 10, 2, 30])
    counts = np.bincount(labels[sample_per_class(labels, 25, seed=1)], minlength=4)
    assert counts.tolist() == [13, 3, 1, 8]  # 12.5, 2.5, 0.5, 7.5


def test_sample_per_class_seeds():
    labels = shuffled_labels([40, 40, 40])
    a = sample_per_class(labels, 10, seed=5)
    assert np.array_equal(a, sample_per_class(labels, 10, seed=5))
    assert not np.array_equal(a, sample_per_class(labels, 10, seed=6))
    assert np.array_equal(sample_per_class(labels, 100, seed=6), np.arange(120))


@pytest.mark.parametrize("percent", [0, 150, -5])
def test_sample_per_class_rejects_bad_percent(percent):
    with pytest.raises(ValueError, match=r"percent must be in \(0, 100\]"):
        sample_per_class(np.zeros(10, dtype=int), percent, seed=0)


# ---------------------------------------------------------------- occlusion

def joints(n: int = 64, t: int = 20, v: int = 25, m: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, t, v, m, generator=gen(seed)) + 1.0  # never zero


@pytest.mark.parametrize("layout", [NTU25, KINECT20])
def test_spatial_occlusion_zeroes_whole_parts(layout):
    x = joints(v=layout.num_joints)
    before = x.clone()
    out = occlude(x, "spatial", layout, gen(0))
    assert torch.equal(x, before)  # input untouched
    zero = out == 0
    # a joint is either zero everywhere (all coordinates, frames, bodies) or untouched
    joint_zero = zero.all(dim=(1, 2, 4))
    assert torch.equal(zero, joint_zero[:, None, None, :, None].expand_as(zero))
    assert torch.equal(out[~zero], x[~zero])
    masked_parts = []
    for part in layout.parts.values():
        in_part = joint_zero[:, list(part)]
        assert torch.equal(in_part.all(1), in_part.any(1))  # whole parts only
        masked_parts.append(in_part.all(1))
    covered = torch.zeros(layout.num_joints, dtype=torch.bool)
    for part in layout.parts.values():
        covered[list(part)] = True
    assert not joint_zero[:, ~covered].any()
    counts = torch.stack(masked_parts, 1).sum(1)
    # 5 parts, r in [0.3, 0.7): round-half-up(1.5 .. 3.5) -> 2 or 3 parts
    assert counts.min() >= 2 and counts.max() <= 4 and set(counts.tolist()) == {2, 3}


def test_temporal_occlusion_zeroes_one_block():
    x = joints(n=128, t=50)
    before = x.clone()
    out = occlude(x, "temporal", NTU25, gen(1))
    assert torch.equal(x, before)
    zero = out == 0
    frame_zero = zero.all(dim=(1, 3, 4))
    assert torch.equal(zero, frame_zero[:, None, :, None, None].expand_as(zero))
    assert torch.equal(out[~zero], x[~zero])
    lengths = frame_zero.sum(1)
    assert lengths.min() >= 15 and lengths.max() <= 35  # round(0.3 * 50), round(0.7 * 50)
    # contiguous: exactly one rising edge in each row
    edges = torch.diff(frame_zero.int(), dim=1, prepend=torch.zeros(128, 1, dtype=torch.int))
    assert torch.equal((edges == 1).sum(1), torch.ones(128, dtype=torch.long))
    starts = frame_zero.int().argmax(1)
    assert len(set(starts.tolist())) > 5


def test_fixed_ratio_gives_exact_sizes():
    x = joints(n=32, t=10)
    spatial = occlude(x, "spatial", NTU25, gen(2), ratio=(0.5, 0.5))
    parts = [(spatial[:, :, :, list(p)] == 0).all(dim=(1, 2, 3, 4)) for p in NTU25.parts.values()]
    assert torch.equal(torch.stack(parts, 1).sum(1), torch.full((32,), 3))  # 2.5 -> 3
    temporal = occlude(x, "temporal", NTU25, gen(2), ratio=(0.5, 0.5))
    assert torch.equal((temporal == 0).all(dim=(1, 3, 4)).sum(1), torch.full((32,), 5))
    full = occlude(x, "temporal", NTU25, gen(2), ratio=(1.0, 1.0))
    assert not full.any()


def test_occlusion_is_reproducible_and_checked():
    x = joints()
    for kind in OCCLUSIONS:
        assert torch.equal(occlude(x, kind, NTU25, gen(7)), occlude(x, kind, NTU25, gen(7)))
        assert not torch.equal(occlude(x, kind, NTU25, gen(7)), occlude(x, kind, NTU25, gen(8)))
    with pytest.raises(ValueError, match="spatial, temporal"):
        occlude(x, "random", NTU25, gen(0))
    with pytest.raises(ValueError, match="20 joints"):
        occlude(x, "spatial", KINECT20, gen(0))


def test_probes_find_what_features_encode():
    from skelctl.evaluate.probe import cross_validated_probe, net_displacement

    g = torch.Generator().manual_seed(0)
    length = torch.randint(10, 60, (200,), generator=g).double()
    noise = torch.randn(200, 8, generator=g)
    encoded = torch.cat([length[:, None] * 0.1, noise], dim=1)
    assert cross_validated_probe(encoded, length.numpy(), False)["score"] > 0.99
    assert cross_validated_probe(noise, length.numpy(), False)["score"] < 0.1
    view = (torch.arange(200) % 3).numpy()
    by_view = torch.nn.functional.one_hot(torch.from_numpy(view), 3).double() * 5 + noise[:, :3]
    found = cross_validated_probe(by_view, view, True)
    assert found["score"] > 95 and found["chance"] == pytest.approx(100 * 67 / 200)
    assert cross_validated_probe(noise, view, True)["score"] < 50
    # the centre joint moves by (3, 4, 0) from the first frame to the last real one
    joint = np.zeros((2, 3, 6, 4, 1), np.float32)
    joint[:, :, :, 1:] = 1.0
    joint[0, :, 3, 0, 0] = [3, 4, 0]  # sample 0 ends at frame 3 (zero padding after)
    joint[0, :, 4:] = 0
    joint[1, :, :, 0, 0] = 2.0
    np.testing.assert_allclose(net_displacement(joint, centre=0), [5.0, 0.0])


def test_probe_command_writes_its_figures(prepared_ntu60, tmp_path, monkeypatch):
    import yaml
    from click.testing import CliRunner

    from skelctl.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "defaults": {"variant": "50-shoulder", "encoder": "gru",
                     "encoder_options": {"hidden": 8, "layers": 1}, "train": {"device": "cpu"}},
        "runs": {"rand": {"method": "untrained", "streams": ["joint"]}}, "knn": {"device": "cpu"}}))
    monkeypatch.chdir(tmp_path)
    args = ["--split", "ntu60-xview", "--data-dir", str(prepared_ntu60)]
    assert CliRunner().invoke(main, ["pretrain", "rand", *args]).exit_code == 0
    result = CliRunner().invoke(main, ["probe", "rand", *args])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "results" / "ntu60-xview" / "probe" / "rand" / "joint"
                          / "metrics.json").read_text())
    assert set(figures) == {"length", "displacement", "view", "action", "spectrum", "knn"}
    assert 1 <= figures["spectrum"]["effective_rank"] <= 2 * 8  # a 1-layer BiGRU of 8: 16-d
    # the probe's plain KNN is the knn stage's figure on the same encoder and split
    assert CliRunner().invoke(main, ["knn", "rand", *args]).exit_code == 0
    knn = json.loads((tmp_path / "results" / "ntu60-xview" / "knn" / "rand" / "joint"
                      / "metrics.json").read_text())
    assert figures["knn"]["plain"] == pytest.approx(knn["top1"])
    assert figures["view"]["samples"] == "all samples"  # xview: one camera in the test part
    assert figures["action"]["samples"] == "test part" and figures["action"]["metric"] == "accuracy"
    assert "length R2" in result.output and "after whitening" in result.output


def test_spectrum_measures_how_the_variance_spreads():
    from skelctl.evaluate.probe import spectrum

    g = torch.Generator().manual_seed(0)
    line = torch.randn(500, 1, generator=g) * torch.tensor([[1.0, 2.0, -1.0, 0.5]])
    one = spectrum(line)  # all the variance along one direction
    assert one["top1_share"] == pytest.approx(1.0) and one["effective_rank"] == pytest.approx(1.0)
    assert one["top5_share"] == pytest.approx(1.0)
    even = spectrum(torch.randn(20000, 16, generator=g))  # the same variance in every direction
    assert even["top1_share"] == pytest.approx(1 / 16, rel=0.1)
    assert even["effective_rank"] == pytest.approx(16, rel=0.02)
    assert spectrum(torch.ones(10, 4)) == {"top1_share": 0.0, "top5_share": 0.0,
                                           "effective_rank": 0.0}


def test_whitening_lets_cosine_retrieval_see_a_direction_of_small_variance():
    """Two classes apart along one direction of small variance, eight nuisance directions of
    large variance: cosine KNN sees the nuisance (chance), after whitening it sees the classes."""
    from skelctl.evaluate.knn import knn_classify
    from skelctl.evaluate.probe import whiten

    g = torch.Generator().manual_seed(0)

    def draw(n):
        labels = torch.randint(0, 2, (n,), generator=g)
        x = torch.cat([(labels - 0.5)[:, None] + 0.05 * torch.randn(n, 1, generator=g),
                       10 * torch.randn(n, 8, generator=g)], dim=1)
        return x, labels

    (train, train_y), (test, test_y) = draw(400), draw(200)
    plain = (knn_classify(train, train_y, test, 2)[2].argmax(1) == test_y).float().mean()
    white_train, white_test = whiten(train, test)
    whitened = (knn_classify(white_train, train_y, white_test, 2)[2].argmax(1)
                == test_y).float().mean()
    assert plain < 0.6 and whitened > 0.95  # measured: 0.485 and 0.98
    # the principal directions (largest first), uncorrelated, each with variance
    # l / (l + 1e-3 mean(l)): 1 for the nuisance, a little less for the small class direction
    eigenvalues = torch.linalg.eigvalsh(torch.cov(train.T.double())).flip(0)
    expected = torch.diag(eigenvalues / (eigenvalues + 1e-3 * eigenvalues.mean()))
    torch.testing.assert_close(torch.cov(white_train.T.double()), expected, atol=1e-4, rtol=0)
    assert white_test.shape == test.shape


def test_cosine_probe_schedule_falls_per_step_from_lr_to_zero():
    """MAMP's probe: the rate follows half a cosine from lr to 0 over every step of every
    epoch; the step schedule keeps its per-epoch drops."""
    from skelctl.evaluate.linear import _Trainer

    x, y = [torch.randn(40, 6)], torch.arange(40) % 4
    config = LinearConfig(epochs=4, lr=0.5, batch_size=10, lr_schedule="cosine")
    trainer = _Trainer(config, x, 4, CPU)
    rates = []
    for epoch in range(4):
        trainer.epoch(epoch, x, y, x, y)
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    steps = [4 * (epoch + 1) for epoch in range(4)]  # four steps an epoch
    expected = [0.5 * 0.5 * (1 + math.cos(math.pi * s / 16)) for s in steps]
    assert rates == pytest.approx(expected) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    stepped = _Trainer(LinearConfig(epochs=4, lr=0.5, batch_size=10, lr_steps=[2]), x, 4, CPU)
    for epoch in range(4):
        stepped.epoch(epoch, x, y, x, y)
    assert stepped.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert linear_label(config) == "paper (frozen features, lr 0.5 cosine to 0 per step, 4 epochs)"
