"""Encoders: output sizes, the spatial graph convolution, feature maps that pool to the output,
the graph partition option and the recurrent directions."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from skelctl.models import build_encoder, encoder_option_names
from skelctl.models.graph import PARTITIONS, hop_distance, spatial_partition
from skelctl.models.stgcn import STGCN, GraphBlock
from skelctl.skeletons import KINECT20, NTU25

from conftest import gen


def test_stgcn_feature_map_pools_to_the_output():
    torch.manual_seed(0)
    encoder = build_encoder("stgcn", NTU25, 2, hidden=4, out_dim=8).eval()
    x = torch.randn(3, 3, 16, 25, 2, generator=gen(2))
    with torch.no_grad():
        feature_map = encoder.features(x)
        assert feature_map.shape == (3, 2, 8, 4, 25)  # two temporal strides of 2
        out = encoder(x)
        assert out.shape == (3, 8)
        torch.testing.assert_close(encoder.pool(feature_map), out, rtol=0, atol=0)
        torch.testing.assert_close(out, feature_map.mean(dim=(1, 3, 4)), rtol=1e-6, atol=1e-7)
        # persons are folded into the batch: swapping them swaps their feature maps
        swapped = encoder.features(x.flip(-1))
        torch.testing.assert_close(swapped[:, 0], feature_map[:, 1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(swapped[:, 1], feature_map[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_recurrent_feature_steps_pool_to_the_output(pooling):
    torch.manual_seed(0)
    encoder = build_encoder("gru", NTU25, 2, hidden=6, layers=2, pooling=pooling).eval()
    x = torch.randn(3, 3, 7, 25, 2, generator=gen(4))
    with torch.no_grad():
        steps = encoder.features(x)
        assert steps.shape == (3, 7, 12) and encoder.out_dim == 12
        out = encoder(x)
        torch.testing.assert_close(encoder.pool(steps), out, rtol=0, atol=0)
        # the input is each frame's pose flattened as (V, C, M)
        sequence = x.permute(0, 2, 3, 1, 4).reshape(3, 7, 150)
        assert sequence[0, 0, 1 * 3 * 2 + 2 * 2 + 1] == x[0, 2, 0, 1, 1]
        outputs, hidden = encoder.rnn(sequence)
        torch.testing.assert_close(steps, outputs, rtol=0, atol=0)
        if pooling == "mean":
            expected = outputs.mean(dim=1)
        else:  # the top layer's final hidden states, forward then backward
            expected = torch.cat([hidden[-2], hidden[-1]], dim=1)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)


# --- 8. the graph partition option --------------------------------------------------------------

def reference_partition(layout, center_hops):
    """ST-GCN's ``Graph(strategy="spatial")``: adjacency within one hop, column-normalised, split
    by comparing hop distances to the centre computed up to ``center_hops``."""
    v = layout.num_joints
    a = np.eye(v)
    for i, j in layout.edges:
        a[i, j] = a[j, i] = 1

    def hop_distance(max_hop):
        dist = np.full((v, v), np.inf)
        arrive = np.stack([np.linalg.matrix_power(a, d) for d in range(max_hop + 1)]) > 0
        for d in range(max_hop, -1, -1):
            dist[arrive[d]] = d
        return dist

    hops, centre = hop_distance(1), hop_distance(center_hops)[:, layout.center]
    adjacency = (hops <= 1).astype(float)
    normalised = adjacency / adjacency.sum(axis=0, keepdims=True)
    subsets = []
    for hop in (0, 1):
        root, close, further = (np.zeros((v, v)) for _ in range(3))
        for i in range(v):
            for j in range(v):
                if hops[j, i] == hop:
                    if centre[j] == centre[i]:
                        root[j, i] = normalised[j, i]
                    elif centre[j] > centre[i]:
                        close[j, i] = normalised[j, i]
                    else:
                        further[j, i] = normalised[j, i]
        subsets += [root] if hop == 0 else [root + close, further]
    return np.stack(subsets)


def test_graph_partition_option():
    assert PARTITIONS == ("spatial", "spatial-max-hop-1")
    true_hops = spatial_partition(NTU25)
    max_hop_1 = spatial_partition(NTU25, "spatial-max-hop-1")
    assert not np.array_equal(true_hops, max_hop_1)
    # the reference code's graph, and the same construction with true distances to the centre
    np.testing.assert_allclose(max_hop_1, reference_partition(NTU25, 1), atol=1e-7)
    np.testing.assert_allclose(true_hops, reference_partition(NTU25, 25), atol=1e-7)
    np.testing.assert_allclose(max_hop_1.sum(0), true_hops.sum(0), atol=1e-7)  # one adjacency
    np.testing.assert_array_equal(max_hop_1[0], true_hops[0])  # self loops
    shoulder, elbow, wrist = 4, 5, 6  # 1, 2 and 3 hops from the spine shoulder (20)
    # the elbow is closer to the centre than the wrist: centripetal with true distances; with
    # max_hop=1 both are at distance inf, so the pair counts as equally far (with centrifugal)
    assert true_hops[2, elbow, wrist] > 0 and true_hops[1, elbow, wrist] == 0
    assert max_hop_1[2, elbow, wrist] == 0 and max_hop_1[1, elbow, wrist] > 0
    # the shoulder is within one hop: centripetal in both
    assert true_hops[2, shoulder, elbow] > 0 and max_hop_1[2, shoulder, elbow] > 0
    # with max_hop=1 a joint beyond one hop takes only joints within one hop as centripetal;
    # its other neighbours are all "as far" (the reference's root-distance group, subset 1)
    one_hop = {20, 1, 2, 4, 8}  # the centre and its neighbours
    for i in set(range(25)) - one_hop:
        assert set(np.flatnonzero(max_hop_1[2][:, i])) <= one_hop
        far = [j for j in np.flatnonzero(max_hop_1.sum(0)[:, i]) if j not in one_hop and j != i]
        assert all(max_hop_1[1, j, i] > 0 for j in far)
    with pytest.raises(ValueError, match="unknown graph partition 'distance'; known: spatial, "
                                         "spatial-max-hop-1"):
        spatial_partition(NTU25, "distance")
    with pytest.raises(ValueError, match="known: spatial, spatial-max-hop-1"):
        STGCN(NTU25, hidden=4, out_dim=8, partition="distance")
    assert "partition" in encoder_option_names("stgcn")
    encoder = build_encoder("stgcn", NTU25, 2, hidden=4, out_dim=8, partition="spatial-max-hop-1")
    assert torch.equal(encoder.adjacency, torch.from_numpy(max_hop_1))
    assert encoder.spec["options"]["partition"] == "spatial-max-hop-1"
    assert torch.equal(STGCN(NTU25, hidden=4, out_dim=8).adjacency, torch.from_numpy(true_hops))
    kinect = spatial_partition(KINECT20, "spatial-max-hop-1")
    np.testing.assert_allclose(kinect, reference_partition(KINECT20, 1), atol=1e-7)


# --- encoders on small hand-made inputs ----------------------------------------------------------

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
