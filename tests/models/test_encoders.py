"""Encoders: feature maps that pool to the output, and the graph partition option."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from skelctl.models import build_encoder, encoder_option_names
from skelctl.models.graph import PARTITIONS, spatial_partition
from skelctl.models.stgcn import STGCN
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


# --- 9. CrosSCLR's options ----------------------------------------------------------------------
