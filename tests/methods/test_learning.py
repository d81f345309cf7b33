"""The learning core on small hand-made inputs with known answers."""

import math

import numpy as np
import pytest
import torch

from skelctl import augment
from skelctl.data.views import compute_view
from skelctl.evaluate.ensemble import fuse
from skelctl.evaluate.features import accuracy
from skelctl.evaluate.knn import knn_scores, nearest_neighbours
from skelctl.evaluate.linear import LinearConfig, train_linear
from skelctl.methods import OptionsError, build_method
from skelctl.methods.losses import cross_view_loss, info_nce, top_k_mask
from skelctl.methods.moco import MomentumContrast
from skelctl.models import build_encoder
from skelctl.models.graph import hop_distance, spatial_partition
from skelctl.models.stgcn import GraphBlock
from skelctl.skeletons import KINECT20, NTU25
from skelctl.train import Samples, TrainConfig, fit
from stages.common import StageError
from stages.config import ensemble_runs


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- losses -----------------------------------------------------------------------------------

def test_info_nce_known_value():
    loss = info_nce(torch.tensor([1.0]), torch.tensor([[0.0, 0.0]]), temperature=1.0)
    assert float(loss) == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    loss = info_nce(torch.tensor([0.5, 0.1]), torch.tensor([[0.2], [0.3]]), temperature=0.5)
    expected = np.mean([-math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(0.4))),
                        -math.log(math.exp(0.2) / (math.exp(0.2) + math.exp(0.6)))])
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_top_k_mask():
    sims = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.1]])
    assert top_k_mask(sims, 1).tolist() == [[False, True, False, False],
                                            [False, False, True, False]]
    assert top_k_mask(sims, 2).sum(dim=1).tolist() == [2, 2]
    assert top_k_mask(sims, 2)[0, 3] and not top_k_mask(sims, 0).any()


def test_cross_view_loss_known_values():
    pos_u = torch.tensor([0.5])
    neg_u = torch.tensor([[0.2, 0.8]])
    neg_v = torch.tensor([[0.9, 0.1]])  # view v's nearest neighbour is entry 0
    t = 0.5
    # embedding context: s_u * s_v = [0.18, 0.08]; positives: the pair and entry 0
    context = [0.18, 0.08]
    expected = -math.log((math.exp(0.5 / t) + math.exp(context[0] / t))
                         / (math.exp(0.5 / t) + sum(math.exp(c / t) for c in context)))
    assert float(cross_view_loss(pos_u, neg_u, neg_v, 1, t)) == pytest.approx(expected, rel=1e-6)
    # without context the similarities of u are used as they are
    expected = -math.log((math.exp(1.0) + math.exp(0.4))
                         / (math.exp(1.0) + math.exp(0.4) + math.exp(1.6)))
    assert float(cross_view_loss(pos_u, neg_u, neg_v, 1, t, context=False)) == pytest.approx(
        expected, rel=1e-6)
    # K = 0 without context is InfoNCE
    assert float(cross_view_loss(pos_u, neg_u, neg_v, 0, t, context=False)) == pytest.approx(
        float(info_nce(pos_u, neg_u, t)), rel=1e-6)


def test_cross_view_loss_trains_both_views_unless_the_teacher_is_detached():
    for detach in (False, True):
        neg_v = torch.tensor([[0.9, 0.1]], requires_grad=True)
        neg_u = torch.tensor([[0.2, 0.8]], requires_grad=True)
        cross_view_loss(torch.tensor([0.5]), neg_u, neg_v, 1, 0.5,
                        detach_teacher=detach).backward()
        assert neg_u.grad.abs().sum() > 0
        assert (neg_v.grad is None) if detach else (neg_v.grad.abs().sum() > 0)


# --- the MoCo core ----------------------------------------------------------------------------

def tiny_encoder():
    return build_encoder("gru", NTU25, 2, hidden=8, layers=1)


def test_queue_is_fifo_and_wraps():
    moco = MomentumContrast(tiny_encoder(), feature_dim=2, queue_size=5)
    keys = torch.arange(16, dtype=torch.float32).view(8, 2)
    moco.enqueue(keys[:3])
    assert moco.queue[:3].tolist() == keys[:3].tolist() and int(moco.queue_ptr) == 3
    moco.enqueue(keys[3:6])  # 5 is not a multiple of 3: wraps round
    assert moco.queue.tolist() == [keys[5].tolist(), *keys[1:5].tolist()]
    assert int(moco.queue_ptr) == 1
    moco.enqueue(keys)  # more keys than slots: the newest five remain
    assert sorted(map(tuple, moco.queue.tolist())) == sorted(map(tuple, keys[3:].tolist()))


def test_momentum_update():
    moco = MomentumContrast(tiny_encoder(), feature_dim=4, queue_size=8, momentum=0.9)
    for p in moco.encoder_q.parameters():
        torch.nn.init.constant_(p, 1.0)
    for p in moco.encoder_k.parameters():
        torch.nn.init.constant_(p, 0.0)
    moco.momentum_update()
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in moco.encoder_k.parameters())
    assert not any(p.requires_grad for p in moco.encoder_k.parameters())


@pytest.mark.parametrize("name, views", [("skeletonclr", ("bone",)),
                                         ("crosclr", ("joint", "motion", "bone"))])
def test_methods_train_and_fill_their_queues(name, views):
    torch.manual_seed(0)
    options = {"queue_size": 12, "augment": {"crop": {}, "shear": {}}}
    if name == "crosclr":
        options["cross_epoch"] = 1
    method = build_method(name, views, NTU25, 2, encoder="gru",
                          encoder_options={"hidden": 16, "layers": 1}, options=options)
    x = torch.randn(4, 3, 12, 25, 2)
    for epoch in (0, 1):
        losses = method({"joint": x}, gen(epoch), epoch)
        losses["loss"].backward()
        assert torch.isfinite(losses["loss"])
    names = set(losses) - {"loss"}
    if name == "crosclr":  # after cross_epoch: one term per ordered pair of views
        assert names == {f"cross_{v}_to_{u}" for u in views for v in views if u != v}
        assert all(int(m.queue_ptr) == 8 for m in method.moco.values())
        assert method.encoders()["motion"] is method.moco["motion"].encoder_q
    else:
        assert names == {"infonce_bone"} and int(method.moco.queue_ptr) == 8
    assert list(method.encoders()) == list(views)
    with pytest.raises(OptionsError, match="learns one stream" if name == "skeletonclr"
                       else "two or more streams"):
        build_method(name, ("joint", "bone") if name == "skeletonclr" else ("joint",), NTU25, 2,
                     encoder="gru", encoder_options={"hidden": 8, "layers": 1})


# --- augmentations ----------------------------------------------------------------------------

def test_shear_matrix_has_unit_diagonal_and_bounded_shear():
    x = torch.zeros(6, 3, 1, 3, 1)
    x[:, :, 0, :, 0] = torch.eye(3)  # joint j holds the unit vector e_j
    out = augment.shear(x, gen(), amplitude=0.3)
    matrices = out[:, :, 0, :, 0]  # column j = A e_j
    assert torch.allclose(torch.diagonal(matrices, dim1=1, dim2=2), torch.ones(6, 3))
    off = matrices[:, ~torch.eye(3, dtype=torch.bool)]
    assert off.abs().max() <= 0.3 and off.abs().min() > 0
    assert not torch.allclose(matrices[0], matrices[1])  # per sample


def test_temporal_crop_is_a_shifted_window_with_reflection():
    t, pad = 12, 2
    x = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1).repeat(50, 3, 1, 25, 2)
    out = augment.temporal_crop(x, gen(), padding_ratio=6)
    assert out.shape == x.shape
    padded = torch.cat([torch.arange(pad).flip(0), torch.arange(t),
                        torch.arange(t - pad, t).flip(0)]).float()
    starts = set()
    for row in out[:, 0, :, 0, 0]:
        matches = [s for s in range(2 * pad + 1) if torch.equal(row, padded[s:s + t])]
        assert matches, row
        starts.add(matches[0])
    assert len(starts) > 1 and max(starts) <= 2 * pad


def test_crop_resize_bounds():
    x = torch.arange(40, dtype=torch.float32).view(1, 1, 40, 1, 1).repeat(20, 3, 1, 2, 1)
    same = augment.crop_resize(x, gen(), min_ratio=1.0, max_ratio=1.0)
    assert torch.allclose(same, x)
    out = augment.crop_resize(x, gen(), min_ratio=0.5, max_ratio=0.5, frames=10)
    assert out.shape == (20, 3, 10, 2, 1)
    values = out[:, 0, :, 0, 0]
    assert (values.diff(dim=1) >= 0).all()  # a resampled increasing window
    assert (values[:, -1] - values[:, 0] <= 20).all() and values.min() >= 0 and values.max() <= 39
    lengths = torch.full((20,), 10)
    padded = augment.crop_resize(x, gen(), min_ratio=1.0, max_ratio=1.0, lengths=lengths)
    assert padded[:, 0, :, 0, 0].max() <= 9  # only the valid frames are read


def test_other_augmentations_invariants():
    x = torch.randn(8, 3, 10, 25, 2)
    flipped = augment.flip(x, gen(), NTU25, p=1.0)
    assert torch.equal(augment.flip(flipped, gen(), NTU25, p=1.0), x)
    assert torch.equal(flipped[:, :, :, 4], x[:, :, :, 8])
    rotated = augment.rotate(x, gen())
    assert torch.allclose(rotated.norm(dim=1), x.norm(dim=1), atol=1e-5)
    assert torch.equal(augment.gaussian_noise(x, gen(), p=0.0), x)
    const = torch.ones(4, 3, 20, 25, 2)
    assert torch.allclose(augment.gaussian_blur(const, gen(), p=1.0), const, atol=1e-6)
    masked = augment.axis_mask(x, gen(), p=1.0)
    zero_axes = (masked.abs().sum(dim=(2, 3, 4)) == 0).sum(dim=1)
    assert (zero_axes == 1).all()
    jittered = augment.joint_jitter(x, gen(), joints=5)
    assert ((jittered - x).abs().sum(dim=(1, 2, 4)) > 0).sum(dim=1).eq(5).all()
    pipeline = augment.compose({"crop": {}, "shear": {"amplitude": 0.5}, "flip": {}}, NTU25)
    assert torch.equal(pipeline(x, gen(3)), pipeline(x, gen(3)))  # seeded
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.compose({"cutout": {}}, NTU25)


# --- encoders ---------------------------------------------------------------------------------

def test_spatial_partition():
    a = spatial_partition(NTU25)
    assert a.shape == (3, 25, 25)
    np.testing.assert_allclose(a[0], np.diag(np.diag(a[0])))  # the root subset: self loops
    hops = hop_distance(NTU25)
    adjacency = (hops <= 1).astype(float)
    np.testing.assert_allclose(a.sum(axis=0), adjacency / adjacency.sum(axis=0), atol=1e-6)
    # the spine base (0) is farther from the centre than the spine mid (1): centripetal
    assert a[2, 1, 0] > 0 and a[1, 1, 0] == 0


@pytest.mark.parametrize("name, dim", [("stgcn", 256), ("bigru", 2048), ("gru", 512),
                                       ("lstm", 512)])
def test_encoders(name, dim):
    encoder = build_encoder(name, NTU25, 2)
    assert encoder(torch.randn(2, 3, 16, 25, 2)).shape == (2, dim) and encoder.out_dim == dim
    small = build_encoder(name, KINECT20, 1)  # NW-UCLA: 20 joints, one body
    assert small(torch.randn(2, 3, 16, 20, 1)).shape == (2, dim)


@pytest.mark.parametrize("channels_last", [True, False])
def test_graph_block_computes_the_spatial_graph_convolution(channels_last):
    """sum_k (W_k x + b_k) A_k over the joints, in either memory format."""
    torch.manual_seed(0)
    block = GraphBlock(4, 6, 3, 25, residual=False).eval()
    torch.nn.init.normal_(block.edge_importance, 1.0, 0.3)
    adjacency = torch.from_numpy(spatial_partition(NTU25))
    x = torch.randn(2, 4, 5, 25)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.nn.functional.conv2d(x, block.gcn.weight, block.gcn.bias).view(2, 3, 6, 5, 25)
    graph = torch.einsum("nkctv,kvw->nctw", y, adjacency * block.edge_importance)
    expected = torch.relu(block.tcn(graph))
    torch.testing.assert_close(block(x, adjacency), expected, rtol=1e-5, atol=1e-5)


def test_strided_residual_is_the_strided_1x1_convolution():
    torch.manual_seed(0)
    block = GraphBlock(4, 8, 3, 25, stride=2).eval()
    x = torch.randn(2, 4, 9, 25).contiguous(memory_format=torch.channels_last)
    conv, norm = block.residual
    expected = norm(torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride=(2, 1)))
    torch.testing.assert_close(block.residual(x[:, :, ::block.stride]), expected)
    assert block(x, torch.from_numpy(spatial_partition(NTU25))).shape == (2, 8, 5, 25)


def test_narrow_stgcn_trains_on_any_cpu():
    """Four channels into a strided block: oneDNN's strided 1x1 backward corrupts the heap on
    AVX2-only CPUs (a hang or a crash), so the encoder must not use it. In a child process, so a
    crash is a failure of this test alone."""
    import os
    import subprocess
    import sys

    script = ("import torch\n"
              "from skelctl.models import build_encoder\n"
              "from skelctl.skeletons import NTU25\n"
              "encoder = build_encoder('stgcn', NTU25, 2, hidden=4, out_dim=16)\n"
              "for seed in range(6):\n"
              "    torch.manual_seed(seed)\n"
              "    encoder(torch.randn(4, 3, 50, 25, 2)).square().sum().backward()\n"
              "print('ok')\n")
    for threads in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "OMP_NUM_THREADS": threads})
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_stgcn_size_matches_the_reference():
    params = sum(p.numel() for p in build_encoder("stgcn", NTU25).parameters())
    assert 0.80e6 < params < 0.84e6  # ~0.82 M per ST-GCN backbone (1/4 channels)


def test_bigru_bidirectional_form_reads_the_future_and_the_causal_form_does_not():
    torch.manual_seed(0)
    causal = build_encoder("bigru", NTU25, 2, hidden=8, layers=2).eval()
    x = torch.randn(1, 3, 10, 25, 2)
    later = x.clone()
    later[:, :, -1] += 1.0
    # the authors' form: every step's output depends on earlier frames only
    assert torch.equal(causal.features(x)[:, :-1], causal.features(later)[:, :-1])
    encoder = build_encoder("bigru", NTU25, 2, hidden=8, layers=2,
                            direction="bidirectional").eval()
    x = torch.randn(1, 3, 10, 25, 2)
    later = x.clone()
    later[:, :, -1] += 1.0  # change only the last frame
    a, b = encoder(x), encoder(later)
    # the backward direction's final state has read the last frame first, and it changes
    assert not torch.allclose(a[:, 8:], b[:, 8:])
    earlier = x.clone()
    earlier[:, :, 0] += 1.0
    assert not torch.allclose(encoder(earlier)[:, :8], a[:, :8])


# --- training loop ----------------------------------------------------------------------------

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


# --- evaluation -------------------------------------------------------------------------------

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
    m = result["metrics"]
    assert m["top1_last"] == pytest.approx(100.0) and m["top1_best"] >= m["top1_last"]
    assert len(result["curve"]) == 10 and result["logits_last"].shape == (50, 5)


def test_ensemble_runs():
    assert ensemble_runs("skeletonclr", ("joint", "bone"), None) == {
        "joint": "skeletonclr-joint", "bone": "skeletonclr-bone"}
    assert ensemble_runs("crosclr-joint-motion-bone", None, None) == dict.fromkeys(
        ("joint", "motion", "bone"), "crosclr-joint-motion-bone")
    with pytest.raises(StageError, match="did not learn velocity"):
        ensemble_runs("crosclr-joint-motion", ("joint", "velocity"), None)


def reference_moco_step(moco, queue: torch.Tensor, x_q, x_k, temperature: float):
    """One MoCo step written out: the query embedding, the momentum update, the key embedding,
    the positive and queue similarities; the queue is updated in place. Returns (positive,
    negatives, key)."""
    z = torch.nn.functional.normalize(moco.projector_q(moco.encoder_q(x_q)), dim=1)
    with torch.no_grad():
        for q_part, k_part in ((moco.encoder_q, moco.encoder_k),
                               (moco.projector_q, moco.projector_k)):
            for p_q, p_k in zip(q_part.parameters(), k_part.parameters()):
                p_k.copy_(moco.momentum * p_k + (1 - moco.momentum) * p_q)
        key = torch.nn.functional.normalize(moco.projector_k(moco.encoder_k(x_k)), dim=1)
    return (z * key).sum(dim=1), z @ queue.T, key


def reference_info_nce(positive, negatives, temperature):
    """-log exp(l+/t) / (exp(l+/t) + sum exp(l_i/t)), in float64."""
    logits = torch.cat([positive[:, None], negatives], dim=1).double() / temperature
    return -(logits[:, 0].exp() / logits.exp().sum(dim=1)).log().mean()


def reference_cross_view_loss(positive_u, negatives_u, negatives_v, temperature):
    """CrosSCLR Eq. 6 with K = 1 and embedding context, in float64: the pair and view v's
    nearest queue entry are the positives of view u."""
    context = (negatives_u * negatives_v).double() / temperature
    nearest = torch.nn.functional.one_hot(negatives_v.argmax(dim=1), negatives_v.shape[1])
    pos = (positive_u.double() / temperature).exp()
    return -((pos + (context.exp() * nearest).sum(dim=1))
             / (pos + context.exp().sum(dim=1))).log().mean()


@pytest.mark.parametrize("name, streams", [("skeletonclr", ("joint",)),
                                           ("crosclr", ("joint", "motion", "bone"))])
def test_methods_match_a_hand_written_moco_step(name, streams):
    """SkeletonCLR and CrosSCLR on the platform against the papers' losses written out here,
    both computed in this process on the same weights, augmented batches and queue, for four
    SGD steps (two of CrosSCLR's single-view stage, two of its cross-view stage): the losses
    agree to 1e-5, the queues and weights to 1e-3 (the float64 reference's gradients differ in
    the last bits, which four steps amplify; with one thread the weights moved by more than 1e-5)
    on any CPU and thread count."""
    import copy

    torch.manual_seed(0)
    batches = torch.randn(4, 16, 3, 20, 25, 2)
    method = build_method(name, streams, NTU25, 2, encoder="stgcn",
                          encoder_options={"hidden": 8, "out_dim": 32, "dropout": 0.0},
                          options={"feature_dim": 16, "queue_size": 48, "momentum": 0.9,
                                   "temperature": 0.5, "cross_epoch": 1, "topk": 1}
                          if name == "crosclr" else {"feature_dim": 16, "queue_size": 48,
                                                     "momentum": 0.9, "temperature": 0.5})
    reference = copy.deepcopy(method)
    mocos = dict(reference.moco.items()) if name == "crosclr" else {streams[0]: reference.moco}
    queues = {view: moco.queue.clone() for view, moco in mocos.items()}
    optimisers = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1,
                                  momentum=0.9, weight_decay=1e-4) for m in (method, reference)]
    t = 0.5  # the losses stay far from 0 (at 0.07 a random queue gives about 1e-4)
    for step, (epoch, joints) in enumerate(zip((0, 0, 1, 1), batches)):
        losses = method({"joint": joints}, gen(step), epoch)
        generator = gen(step)
        aug_q, aug_k = (reference.augment(joints, generator), reference.augment(joints, generator))
        positive, negatives, keys = {}, {}, {}
        for view, moco in mocos.items():
            positive[view], negatives[view], keys[view] = reference_moco_step(
                moco, queues[view], compute_view(view, aug_q, NTU25),
                compute_view(view, aug_k, NTU25), t)
        if name == "crosclr" and epoch >= 1:
            expected = sum(reference_cross_view_loss(positive[u], negatives[u], negatives[v], t)
                           for u in streams for v in streams if u != v)
        else:
            expected = sum(reference_info_nce(positive[v], negatives[v], t) for v in streams)
        assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6), step
        for optimiser, loss in zip(optimisers, (losses["loss"], expected)):
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        for view in streams:  # FIFO: this step's keys overwrite the oldest 16 entries
            start = (16 * step) % 48
            queues[view][start:start + 16] = keys[view]
    for view, moco in mocos.items():
        platform = method.moco[view] if name == "crosclr" else method.moco
        torch.testing.assert_close(platform.queue, queues[view], rtol=1e-3, atol=1e-4)
        expected_state = moco.state_dict()  # its own queue buffer stayed unused: see queues
        for part, a in platform.state_dict().items():
            if not part.startswith("queue"):
                torch.testing.assert_close(a, expected_state[part], rtol=1e-3, atol=1e-4,
                                           msg=part)
