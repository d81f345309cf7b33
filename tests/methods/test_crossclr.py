"""CrosSCLR's ablation options and SkeletonCLR's knowledge mining."""

from __future__ import annotations

import copy
import dataclasses

import torch

from skelctl.data.views import compute_view
from skelctl.methods import build_method
from skelctl.methods.crossclr import CrosSCLROptions
from skelctl.methods.losses import cross_view_loss, info_nce
from skelctl.skeletons import NTU25

from conftest import gen


def test_detach_teacher_stops_the_gradient_into_view_v_only():
    positive = torch.tensor([0.5, 0.1])
    base_u = torch.tensor([[0.2, 0.8, -0.3], [0.4, -0.1, 0.6]])
    base_v = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.7, -0.4]])
    results = {}
    for detach in (False, True):
        neg_u = base_u.clone().requires_grad_(True)
        neg_v = base_v.clone().requires_grad_(True)
        loss = cross_view_loss(positive, neg_u, neg_v, 1, 0.5, detach_teacher=detach)
        loss.backward()
        results[detach] = (float(loss.detach()), neg_u.grad, neg_v.grad)
    (loss_free, grad_u, grad_v), (loss_detached, grad_u_d, grad_v_d) = results[False], results[True]
    assert loss_free == loss_detached  # the same value either way
    torch.testing.assert_close(grad_u, grad_u_d, rtol=0, atol=0)
    assert grad_v_d is None
    # through the product c = s_u * s_v: dL/ds_v * s_v == dL/ds_u * s_u, element by element
    assert grad_v.abs().sum() > 0
    torch.testing.assert_close(grad_v * base_v, grad_u * base_u, rtol=1e-6, atol=1e-8)
    # without context, view v only chooses the positives: no gradient into it
    neg_v = base_v.clone().requires_grad_(True)
    cross_view_loss(positive, base_u.clone().requires_grad_(True), neg_v, 1, 0.5,
                    context=False).backward()
    assert neg_v.grad is None or not neg_v.grad.any()
    assert CrosSCLROptions().detach_teacher is False


def tiny_crosclr(**options):
    torch.manual_seed(0)
    return build_method("crosclr", ("joint", "motion"), NTU25, 2, encoder="gru",
                        encoder_options={"hidden": 8, "layers": 1},
                        options={"queue_size": 16, "feature_dim": 8,
                                 "augment": {"crop": {}, "shear": {}}, **options})


def test_crosclr_passes_detach_teacher_and_cross_loss(monkeypatch):
    import skelctl.methods.crossclr as crossclr

    x = torch.randn(4, 3, 10, 25, 2, generator=gen(5))
    seen = []
    original = crossclr.cross_view_loss

    def spy(*args):
        seen.append(args[5:])
        return original(*args)

    monkeypatch.setattr(crossclr, "cross_view_loss", spy)
    for detach in (False, True):
        seen.clear()
        losses = tiny_crosclr(cross_epoch=1, detach_teacher=detach)({"joint": x}, gen(), 1)
        assert set(losses) == {"loss", "cross_motion_to_joint", "cross_joint_to_motion"}
        assert seen == [(True, detach)] * 2
        torch.testing.assert_close(losses["loss"].detach(),
                                   losses["cross_motion_to_joint"]
                                   + losses["cross_joint_to_motion"])
    seen.clear()
    method = tiny_crosclr(cross_epoch=0, cross_loss=False)
    for epoch in (0, 3, 500):
        losses = method({"joint": x}, gen(epoch), epoch)
        assert set(losses) == {"loss", "infonce_joint", "infonce_motion"}
    assert seen == []
    before = tiny_crosclr(cross_epoch=2)({"joint": x}, gen(), 1)
    assert set(before) == {"loss", "infonce_joint", "infonce_motion"}


def test_skeletonclr_knowledge_mining_loss():
    torch.manual_seed(0)
    method = build_method("skeletonclr", ("joint",), NTU25, 2, encoder="gru",
                          encoder_options={"hidden": 8, "layers": 1},
                          options={"queue_size": 16, "feature_dim": 8, "topk": 1,
                                   "mining_epoch": 0, "temperature": 0.2,
                                   "augment": {"crop": {}, "shear": {}}})
    replica = copy.deepcopy(method)
    x = torch.randn(6, 3, 10, 25, 2, generator=gen(6))
    losses = method({"joint": x}, gen(7), 0)
    assert set(losses) == {"loss", "mining_joint"}
    # the same step by hand on a copy
    generator = gen(7)
    x_q = compute_view("joint", replica.augment(x, generator), NTU25)
    x_k = compute_view("joint", replica.augment(x, generator), NTU25)
    z = replica.moco.query(x_q)
    replica.moco.momentum_update()
    key = replica.moco.key(x_k)
    positive, negatives = (z * key).sum(dim=1), replica.moco.similarities(z)
    expected = cross_view_loss(positive, negatives, negatives, 1, 0.2, context=False)
    torch.testing.assert_close(losses["loss"], expected, rtol=1e-6, atol=1e-7)
    assert float(losses["mining_joint"]) == float(losses["loss"].detach())
    # the nearest queue entry counted as a positive lowers the loss below InfoNCE's
    assert float(expected.detach()) < float(info_nce(positive.detach(), negatives.detach(), 0.2))
    # before mining_epoch: plain InfoNCE
    later = copy.deepcopy(replica)
    later.options = dataclasses.replace(later.options, mining_epoch=5)
    assert set(later({"joint": x}, gen(8), 4)) == {"loss", "infonce_joint"}


# --- 10. projector initialisation ---------------------------------------------------------------
