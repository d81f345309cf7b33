"""The MoCo core: the key projector's momentum and the projector's initialisation."""

from __future__ import annotations


import torch
from torch import nn

from skelctl.methods import build_method
from skelctl.methods.moco import MomentumContrast
from skelctl.skeletons import NTU25

from conftest import tiny_gru


def constant_moco(projector_momentum):
    moco = MomentumContrast(tiny_gru(), feature_dim=4, queue_size=8, momentum=0.9,
                            projector_momentum=projector_momentum)
    with torch.no_grad():
        for q, k in ((moco.encoder_q, moco.encoder_k), (moco.projector_q, moco.projector_k)):
            for p in q.parameters():
                p.fill_(1.0)
            for p in k.parameters():
                p.fill_(0.0)
    return moco


def all_equal(module, value):
    return all(torch.allclose(p, torch.full_like(p, value)) for p in module.parameters())


def test_key_projector_momentum():
    moco = constant_moco(1.0)
    moco.momentum_update()
    assert all_equal(moco.encoder_k, 0.1) and all_equal(moco.projector_k, 0.0)
    moco.momentum_update()
    assert all_equal(moco.encoder_k, 0.19) and all_equal(moco.projector_k, 0.0)
    moco = constant_moco(None)
    assert moco.projector_momentum == 0.9
    moco.momentum_update()
    assert all_equal(moco.encoder_k, 0.1) and all_equal(moco.projector_k, 0.1)
    moco = constant_moco(0.5)
    moco.momentum_update()
    assert all_equal(moco.encoder_k, 0.1) and all_equal(moco.projector_k, 0.5)
    assert all_equal(moco.projector_q, 1.0) and all_equal(moco.encoder_q, 1.0)


# --- 7. encoder feature maps --------------------------------------------------------------------


class Wide(nn.Module):
    out_dim = 1024

    def forward(self, x):
        return x


def test_projector_starts_from_n_0_002_with_zero_bias():
    torch.manual_seed(0)
    moco = MomentumContrast(Wide(), feature_dim=512, queue_size=4)
    linears = [m for m in moco.projector_q if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(1024, 1024), (512, 1024)]
    for linear in linears:
        weight = linear.weight.detach()
        assert abs(float(weight.std()) - 0.02) < 2e-4
        assert abs(float(weight.mean())) < 2e-4
        assert not linear.bias.any()
    for q, k in zip(moco.projector_q.parameters(), moco.projector_k.parameters()):
        assert torch.equal(q, k) and not k.requires_grad


def test_projector_init_std_none_keeps_torchs_default():
    torch.manual_seed(0)
    moco = MomentumContrast(Wide(), feature_dim=512, queue_size=4, projector_init_std=None)
    first = moco.projector_q[0].requires_grad_(False)
    # PyTorch's Linear default: uniform within +-1/sqrt(fan_in), so std 1/sqrt(3 fan_in)
    assert abs(float(first.weight.std()) - (3 * 1024) ** -0.5) < 2e-4
    assert float(first.weight.abs().max()) <= 1024 ** -0.5 and first.bias.abs().sum() > 0
    method = build_method("skeletonclr", ("joint",), NTU25, 2, encoder="gru",
                          encoder_options={"hidden": 8, "layers": 1},
                          options={"projector_init_std": 0.5, "queue_size": 4})
    assert abs(float(method.moco.projector_q[0].weight.detach().std()) - 0.5) < 0.05
