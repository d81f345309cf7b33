"""ISC's three encoders: the authors' causal "BiGRU" (equal to their per-frame loop), the 2s-AGCN
joint stream and HCN; their shapes on several layouts, sizes, and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from skelctl.models import ENCODERS, build_encoder
from skelctl.models.agcn import AGCN, agcn_subsets
from skelctl.models.hcn import HCN
from skelctl.skeletons import KINECT20, LAYOUTS, NTU25, graphless

from conftest import gen

COCO2D = LAYOUTS["coco17-2d"]  # 17 joints, 2 coordinates: neither Kinect, nor 3D


def per_frame_loop(rnn: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    """The ISC authors' way: a bidirectional ``rnn`` fed one frame at a time, carrying its state;
    ``(N, T, 2H)``, every step's output."""
    state, outputs = None, []
    for t in range(seq.shape[1]):
        out, state = rnn(seq[:, t:t + 1], state)
        outputs.append(out)
    return torch.cat(outputs, dim=1)


def reference_rnn(encoder: nn.Module, cell: str) -> nn.Module:
    """A fresh bidirectional nn.GRU/nn.LSTM of the encoder's sizes holding its weights: the
    authors' state dict loads as it is."""
    rnn = encoder.rnn
    reference = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](
        rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers, bidirectional=True,
        batch_first=True)
    assert list(reference.state_dict()) == list(rnn.state_dict())
    reference.load_state_dict(rnn.state_dict())
    return reference


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_causal_encoder_equals_the_authors_per_frame_loop(cell):
    torch.manual_seed(0)
    encoder = build_encoder("bigru", NTU25, 2, cell=cell, hidden=24).eval()
    assert encoder.direction == "causal" and encoder.rnn.num_layers == 3
    reference = reference_rnn(encoder, cell).eval()
    x = torch.randn(4, 3, 12, 25, 2, generator=gen(1))
    steps = encoder.features(x)
    out = encoder(x)
    expected = per_frame_loop(reference, encoder.flatten(x))
    assert steps.shape == (4, 12, 48) and out.shape == (4, 48) and encoder.out_dim == 48
    torch.testing.assert_close(steps, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out, expected[:, -1], rtol=0, atol=1e-5)
    # and so are the gradients (the same network, not just the same outputs)
    weights = dict(encoder.rnn.named_parameters())
    grads = torch.autograd.grad(out.square().sum(), list(weights.values()))
    reference_grads = torch.autograd.grad(expected[:, -1].square().sum(),
                                          [dict(reference.named_parameters())[k] for k in weights])
    for name, grad, reference_grad in zip(weights, grads, reference_grads):
        torch.testing.assert_close(grad, reference_grad, rtol=0, atol=1e-5, msg=name)


def test_causal_encoder_on_variable_length_input_equals_the_loop():
    """Packed input (zero padding after each sample's end): the feature is the output at each
    sample's last real frame, as the authors' loop picks it (``seq_len - 1``)."""
    torch.manual_seed(0)
    encoder = build_encoder("bigru", NTU25, 2, hidden=16, packed=True).eval()
    reference = reference_rnn(encoder, "gru").eval()
    lengths = torch.tensor([10, 4, 7, 1])
    x = torch.randn(4, 3, 10, 25, 2, generator=gen(2))
    x = x * (torch.arange(10)[None] < lengths[:, None])[:, None, :, None, None]
    with torch.no_grad():
        assert torch.equal(encoder.lengths(x), lengths)
        steps = encoder.features(x)
        out = encoder(x)
        expected = per_frame_loop(reference, encoder.flatten(x))
    for i, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(steps[i, :length], expected[i, :length], rtol=0, atol=1e-5)
        assert not steps[i, length:].any()  # zero past the end, as packed
        torch.testing.assert_close(out[i], expected[i, length - 1], rtol=0, atol=1e-5)
    torch.testing.assert_close(encoder.pool(steps, lengths), out, rtol=0, atol=0)
    # the padding changes nothing: the same samples cut to their own lengths
    with torch.no_grad():
        for i, length in enumerate(lengths.tolist()):
            alone = encoder(x[i:i + 1, :, :length])
            torch.testing.assert_close(alone[0], out[i], rtol=0, atol=1e-6)


def test_causal_directions_never_read_a_later_frame_and_bidirectional_does():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 10, 25, 2, generator=gen(3))
    later = x.clone()
    later[:, :, 6:] += 1.0
    for direction, sees_later in (("causal", False), ("bidirectional", True)):
        encoder = build_encoder("bigru", NTU25, 2, hidden=8, layers=2,
                                direction=direction).eval()
        with torch.no_grad():
            a, b = encoder.features(x), encoder.features(later)
        # frames before the change: equal in the causal form only (both directions)
        assert torch.equal(a[:, :6], b[:, :6]) == (not sees_later), direction


def test_bigru_registry_entry_is_the_authors_encoder():
    kind = ENCODERS["bigru"]
    assert {k: kind.defaults[k] for k in ("hidden", "layers", "direction", "pooling", "init")} == {
        "hidden": 1024, "layers": 3, "direction": "causal", "pooling": "last",
        "init": "xavier_weights"}
    torch.manual_seed(0)
    encoder = build_encoder("bigru", NTU25, 2, hidden=64)
    bound = 1 / 64 ** 0.5  # PyTorch's default bias init: U(-1/sqrt(H), 1/sqrt(H))
    for name, weight in encoder.rnn.named_parameters():
        if weight.dim() == 2:  # Xavier-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
            fan_out, fan_in = weight.shape
            assert weight.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5
        else:  # left at PyTorch's default, not zeroed
            assert 0 < weight.abs().max() <= bound, name
    with pytest.raises(ValueError, match="direction must be one of bidirectional, causal"):
        build_encoder("bigru", NTU25, 2, hidden=8, direction="backward")
    # xavier (other runs' choice) still zeroes the biases
    zeroed = build_encoder("bigru", NTU25, 2, hidden=8, init="xavier")
    assert all(w.abs().max() == 0 for n, w in zeroed.rnn.named_parameters() if "bias" in n)


# --- shapes on several layouts ------------------------------------------------------------

SMALL = {"bigru": {"hidden": 16, "layers": 2}, "agcn": {}, "hcn": {"frames": 32}}


@pytest.mark.parametrize("name", ["bigru", "agcn", "hcn"])
@pytest.mark.parametrize("layout, persons", [(NTU25, 2), (KINECT20, 1), (COCO2D, 2)],
                         ids=["ntu25", "kinect20", "coco17-2d"])
def test_output_and_feature_map_shapes(name, layout, persons):
    torch.manual_seed(0)
    encoder = build_encoder(name, layout, persons, **SMALL[name]).eval()
    frames = SMALL[name].get("frames", 20)
    x = torch.randn(3, layout.dims, frames, layout.num_joints, persons, generator=gen(4))
    with torch.no_grad():
        features = encoder.features(x)
        out = encoder(x)
        assert out.shape == (3, encoder.out_dim) and torch.isfinite(out).all()
        torch.testing.assert_close(encoder.pool(features), out, rtol=0, atol=0)
    expected = {"bigru": (3, frames, 32),
                "agcn": (3, persons, 256, 5, layout.num_joints),  # frames / 4
                "hcn": (3, persons, 256, 2, 2)}[name]  # frames / 16, twice
    assert features.shape == expected
    assert encoder.out_dim == {"bigru": 32, "agcn": 256, "hcn": 256 * 2 * 2}[name]


def test_default_agcn_and_hcn_on_64_frames():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 25, 2, generator=gen(5))
    agcn, hcn = build_encoder("agcn", NTU25, 2).eval(), build_encoder("hcn", NTU25, 2).eval()
    with torch.no_grad():
        assert agcn.features(x).shape == (2, 2, 256, 16, 25) and agcn(x).shape == (2, 256)
        assert hcn.features(x).shape == (2, 2, 256, 4, 4) and hcn(x).shape == (2, 4096)
    # 20 joints: the joints are the channels after HCN's transpose, so only that convolution's
    # input changes, and the feature stays 4096-d
    small = build_encoder("hcn", KINECT20, 1).eval()
    assert small.position.joints[0].in_channels == 20
    with torch.no_grad():
        assert small(torch.randn(2, 3, 64, 20, 1, generator=gen(6))).shape == (2, 4096)


# --- sizes (NTU: 25 joints, 2 bodies) -------------------------------------------------------

def parameters(name: str, **options) -> int:
    return sum(p.numel() for p in build_encoder(name, NTU25, 2, **options).parameters())


def test_parameter_counts_match_the_authors_encoders():
    # ISC's notes: 45.0 M (the paper's Table 10 says 10.0 M), 3.45 M and 0.52 M
    counts = {"bigru": parameters("bigru"),
              "bigru-bidirectional": parameters("bigru", direction="bidirectional"),
              "agcn": parameters("agcn"), "hcn": parameters("hcn")}
    assert counts == {"bigru": 44_998_656, "bigru-bidirectional": 44_998_656,
                      "agcn": 3_451_274, "hcn": 519_424}
    for name, target in (("bigru", 45.0e6), ("agcn", 3.45e6), ("hcn", 0.52e6)):
        assert abs(counts[name] / target - 1) < 0.03, name


# --- HCN ----------------------------------------------------------------------------------

def test_hcn_rejects_another_frame_count():
    encoder = build_encoder("hcn", NTU25, 2)
    with pytest.raises(ValueError, match="HCN built for 64 frames got 50: .* resample the clips "
                                         "to 64 frames .* or build it with frames=50"):
        encoder(torch.zeros(1, 3, 50, 25, 2))
    with pytest.raises(ValueError, match="at least 2 frames"):
        build_encoder("hcn", NTU25, 2, frames=1)


def test_hcn_bodies_share_weights_and_fuse_by_maximum():
    torch.manual_seed(0)
    encoder = build_encoder("hcn", NTU25, 2, frames=16).eval()
    x = torch.randn(2, 3, 16, 25, 2, generator=gen(7))
    with torch.no_grad():
        maps = encoder.features(x)
        swapped = encoder.features(x.flip(-1))
        torch.testing.assert_close(swapped, maps.flip(1), rtol=0, atol=0)
        torch.testing.assert_close(encoder(x), maps.amax(dim=1).flatten(1), rtol=0, atol=0)
        # one body's map is that body alone through the same weights
        alone = build_encoder("hcn", NTU25, 1, frames=16).eval()
        alone.load_state_dict(encoder.state_dict())
        torch.testing.assert_close(alone.features(x[..., 1:]), maps[:, 1:], rtol=0, atol=1e-6)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())


def test_hcn_motion_branch_reads_frame_differences_resized_to_the_frame_count():
    torch.manual_seed(0)
    encoder = build_encoder("hcn", KINECT20, 1, frames=16).eval()
    x = torch.randn(2, 3, 16, 20, 1, generator=gen(11))
    seen = []
    encoder.motion.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        encoder(x)
    # 15 differences stretched to 16 frames, linear with align_corners=False: frame t reads
    # position (t + 0.5) * 15 / 16 - 0.5, held at the first difference below 0
    diff = x[..., 0].diff(dim=2)
    pos = ((torch.arange(16) + 0.5) * 15 / 16 - 0.5).clamp(min=0)
    low = pos.floor().long()
    high = (low + 1).clamp(max=14)
    w = (pos - low)[None, None, :, None]
    expected = diff[:, :, low] * (1 - w) + diff[:, :, high] * w
    torch.testing.assert_close(seen[0], expected, rtol=1e-6, atol=1e-6)


# --- AGCN ---------------------------------------------------------------------------------

def test_agcn_graph_subsets_from_the_layout_bones():
    a = agcn_subsets(NTU25)
    assert a.shape == (3, 25, 25)
    np.testing.assert_array_equal(a[0], np.eye(25))
    # inward: a joint receives its parent's features, one parent each (column sums 1; the
    # centre, the spine shoulder, has none)
    parents = NTU25.parents
    for child in range(25):
        column = a[1][:, child]
        if child == NTU25.center:
            assert column.sum() == 0
        else:
            assert column[parents[child]] == 1 and column.sum() == 1
    # outward: the mean of a joint's children (the spine shoulder has four)
    np.testing.assert_allclose(a[2][:, NTU25.center].sum(), 1.0)
    assert np.count_nonzero(a[2][:, NTU25.center]) == 4
    with pytest.raises(ValueError, match="no skeleton graph, which the AGCN needs"):
        AGCN(graphless(13))
    assert HCN(graphless(13)).out_dim == 4096  # HCN needs no graph


def test_agcn_graph_convolution_equals_the_per_subset_sum():
    """The batched unit is 2s-AGCN's loop over the subsets: per subset k an attention graph
    softmax(a_k^T b_k / (C' T)) over the sending joint, plus A_k + B_k, the product with x, a 1x1
    convolution; summed, batch norm, plus the down path, ReLU."""
    torch.manual_seed(0)
    unit = AGCN(NTU25).units[4].gcn.eval()  # 64 -> 128: a down path too
    nn.init.normal_(unit.learned_graph, 0.0, 0.1)
    nn.init.normal_(unit.bn.weight, 1.0, 0.1)
    x = torch.randn(2, 64, 6, 25, generator=gen(8))
    d, c = unit.inter, 64
    total = 0
    for k in range(3):
        rows = slice(k * d, (k + 1) * d)
        a = nn.functional.conv2d(x, unit.query.weight[rows], unit.query.bias[rows])
        b = nn.functional.conv2d(x, unit.key.weight[rows], unit.key.bias[rows])
        a = a.permute(0, 3, 1, 2).reshape(2, 25, d * 6)
        b = b.reshape(2, d * 6, 25)
        graph = torch.softmax(a @ b / (d * 6), dim=-2) + unit.graph[k] + unit.learned_graph[k]
        y = (x.reshape(2, c * 6, 25) @ graph).view(2, c, 6, 25)
        total = total + nn.functional.conv2d(y, unit.mix.weight[:, k * c:(k + 1) * c])
    total = total + unit.mix.bias[None, :, None, None]
    expected = torch.relu(unit.bn(total) + unit.down(x))
    with torch.no_grad():
        torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-5)


def test_agcn_learnable_graph_and_attention_receive_gradients():
    torch.manual_seed(0)
    encoder = build_encoder("agcn", KINECT20, 2).train()
    assert all(torch.equal(u.gcn.learned_graph, torch.full((3, 20, 20), 1e-6))
               for u in encoder.units)
    x = torch.randn(4, 3, 16, 20, 2, generator=gen(9))
    encoder(x).square().sum().backward()
    for i, unit in enumerate(encoder.units):
        for name in ("learned_graph", "query.weight", "key.weight"):
            grad = unit.gcn.get_parameter(name).grad
            assert grad is not None and torch.isfinite(grad).all(), (i, name)
            assert grad.abs().sum() > 0, (i, name)


# --- determinism --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bigru", "agcn", "hcn"])
def test_same_seed_same_encoder_and_same_training_outputs(name):
    """Built and run in train mode (HCN's channel dropout, AGCN's batch statistics) twice under
    one seed: the same weights and the same outputs; another seed, other weights."""
    def run(seed):
        torch.manual_seed(seed)
        encoder = build_encoder(name, NTU25, 2, **SMALL[name]).train()
        x = torch.randn(2, 3, SMALL[name].get("frames", 20), 25, 2, generator=gen(10))
        return encoder.state_dict(), encoder(x)

    (weights, out), (weights_again, out_again) = run(3), run(3)
    assert all(torch.equal(weights[k], weights_again[k]) for k in weights)
    assert torch.equal(out, out_again)
    other, _ = run(4)
    assert not all(torch.equal(weights[k], other[k]) for k in weights if "weight" in k)
