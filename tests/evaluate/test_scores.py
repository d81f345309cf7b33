"""Scores from features on small hand-made inputs with known answers: k-NN against brute force,
top-k accuracy, the ensemble's fusion and runs, and the linear probe."""

import pytest
import torch

from skelctl.evaluate.ensemble import fuse
from skelctl.evaluate.features import accuracy
from skelctl.evaluate.knn import knn_scores, nearest_neighbours
from skelctl.evaluate.linear import train_linear
from skelctl.settings import LinearConfig
from skelctl.stages.common import StageError
from skelctl.stages.config import ensemble_runs

from conftest import gen


def test_knn_matches_brute_force():
    train, test = torch.randn(300, 16, generator=gen(4)), torch.randn(70, 16, generator=gen(5))
    index, sims = nearest_neighbours(train, test, k=3, batch_size=16)
    cosine = torch.nn.functional.normalize(test, dim=1) @ torch.nn.functional.normalize(
        train, dim=1).T
    brute = cosine.topk(3, dim=1)
    assert torch.equal(index, brute.indices)
    assert torch.allclose(sims, brute.values)
    labels = torch.arange(300) % 7
    scores = knn_scores(labels[index], sims, 7)
    assert scores.shape == (70, 7) and torch.allclose(scores.sum(1).round(), torch.full((70,), 3.))
    one, _ = nearest_neighbours(train, test, k=1)
    assert torch.equal(knn_scores(labels[one], _, 7).argmax(1), labels[cosine.argmax(1)])


def test_accuracy_and_fuse():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.4, 0.1, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert accuracy(scores, labels, 1) == pytest.approx(100 / 3)
    assert accuracy(scores, labels, 2) == pytest.approx(100.0)
    fused = fuse([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])], [0.6, 0.4])
    assert torch.allclose(fused, torch.tensor([[0.6, 1.2]]))
    with pytest.raises(ValueError, match="2 streams but 1 weights"):
        fuse([fused, fused], [1.0])


def test_linear_evaluation_learns_separable_features():
    centres = torch.randn(5, 8, generator=gen(6)) * 3
    labels = torch.arange(200) % 5
    features = centres[labels] + torch.randn(200, 8, generator=gen(7)) * 0.3
    result = train_linear(features[:150], labels[:150], features[150:], labels[150:], 5,
                          LinearConfig(epochs=10, lr=0.5, lr_steps=[8]), torch.device("cpu"))
    m = result.metrics
    assert m["top1_last"] == pytest.approx(100.0) and m["top1_best"] >= m["top1_last"]
    assert len(result.curve) == 10 and result.logits_last.shape == (50, 5)


def test_ensemble_runs():
    assert ensemble_runs("skeletonclr", ("joint", "bone"), None) == {
        "joint": "skeletonclr-joint", "bone": "skeletonclr-bone"}
    assert ensemble_runs("crosclr-joint-motion-bone", None, None) == dict.fromkeys(
        ("joint", "motion", "bone"), "crosclr-joint-motion-bone")
    with pytest.raises(StageError, match="did not learn velocity"):
        ensemble_runs("crosclr-joint-motion", ("joint", "velocity"), None)


def test_posthoc_ensembles_weigh_each_group_s_logits():
    """Known logits: joint alone gets sample 1 wrong, motion alone sample 0; their weighted sum
    (0.6, 0.4) gets both right; the groups are each stream and the first two."""
    from skelctl.evaluate.ensemble import ensemble_groups, posthoc_ensembles

    joint = torch.tensor([[2.0, 0.0], [1.0, 0.0]])    # says 0, 0
    motion = torch.tensor([[0.0, 1.0], [0.0, 3.0]])   # says 1, 1
    logits = {"joint": {"last": joint, "best": joint}, "motion": {"last": motion, "best": joint}}
    results = posthoc_ensembles(logits, {"joint": 0.6, "motion": 0.4}, torch.tensor([0, 1]))
    assert list(results) == ["joint", "motion", "2s"]
    assert results["joint"]["top1_last"] == 50.0 and results["motion"]["top1_last"] == 50.0
    assert results["2s"]["top1_last"] == 100.0  # 0.6 * 2 > 0.4 * 1; 0.6 * 1 < 0.4 * 3
    assert results["2s"]["top1_best"] == 50.0   # the best epoch's logits: joint's twice
    assert ensemble_groups(("joint", "motion", "bone"))["3s"] == ("joint", "motion", "bone")
