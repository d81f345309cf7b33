"""Methods learning on small hand-made inputs with known answers: the contrastive losses, the MoCo
core (queue, momentum update) and the methods' steps against hand-written references."""

import math

import numpy as np
import pytest
import torch

from skelctl.data.views import compute_view
from skelctl.methods import OptionsError, build_method
from skelctl.methods.losses import cross_view_loss, info_nce, top_k_mask
from skelctl.methods.moco import MomentumContrast
from skelctl.skeletons import NTU25

from conftest import gen, tiny_gru


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

def test_queue_is_fifo_and_wraps():
    moco = MomentumContrast(tiny_gru(), feature_dim=2, queue_size=5)
    keys = torch.arange(16, dtype=torch.float32).view(8, 2)
    moco.enqueue(keys[:3])
    assert moco.queue[:3].tolist() == keys[:3].tolist() and int(moco.queue_ptr) == 3
    moco.enqueue(keys[3:6])  # 5 is not a multiple of 3: wraps round
    assert moco.queue.tolist() == [keys[5].tolist(), *keys[1:5].tolist()]
    assert int(moco.queue_ptr) == 1
    moco.enqueue(keys)  # more keys than slots: the newest five remain
    assert sorted(map(tuple, moco.queue.tolist())) == sorted(map(tuple, keys[3:].tolist()))


def test_momentum_update():
    moco = MomentumContrast(tiny_gru(), feature_dim=4, queue_size=8, momentum=0.9)
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


# --- the methods against a hand-written MoCo step ----------------------------------------------

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
