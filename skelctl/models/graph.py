"""The ST-GCN spatial-configuration graph of a joint layout."""

from __future__ import annotations

import numpy as np

from skelctl.skeletons import Layout


def hop_distance(layout: Layout, max_hop: int = 1) -> np.ndarray:
    """Shortest-path hop counts between joints, ``inf`` beyond ``max_hop``."""
    v = layout.num_joints
    step = (layout.adjacency() + np.eye(v)) > 0
    reach = np.eye(v, dtype=bool)
    dist = np.full((v, v), np.inf)
    dist[reach] = 0
    for hop in range(1, max_hop + 1):
        reach_next = (reach.astype(np.int64) @ step.astype(np.int64)) > 0
        dist[reach_next & ~reach] = hop
        reach = reach_next
    return dist


PARTITIONS = ("spatial", "spatial-max-hop-1")


def spatial_partition(layout: Layout, partition: str = "spatial") -> np.ndarray:
    """``(3, V, V)``: ST-GCN's spatial configuration partition of the 1-hop neighbourhood.

    Subsets: the root itself; neighbours at the same distance from the centre as the root or
    farther (centrifugal); neighbours closer to the centre (centripetal). The adjacency with self
    loops is column-normalised (``A D^-1``); entry ``[j, i]`` carries joint j to joint i.
    Distances to the centre are true hop counts, as the ST-GCN paper defines them: the reference
    code computes them with ``max_hop=1``, so every joint beyond one hop from the centre is at
    distance inf, and two such neighbours count as equally far from the centre (the subset of
    neighbours at the same distance or farther) whatever their true distances. ``partition="spatial-max-hop-1"``
    reproduces that (the graph behind the published CrosSCLR/AimCLR numbers).
    """
    if partition not in PARTITIONS:
        raise ValueError(f"unknown graph partition {partition!r}; known: {', '.join(PARTITIONS)}")
    if not layout.has_graph:
        raise ValueError(f"layout {layout.name!r} has no skeleton graph, which the ST-GCN "
                         f"needs: describe the skeleton with a layout file (--layout FILE; "
                         f"skelctl layouts lists the built-ins), or use a graph-free encoder "
                         f"(gru, bigru or lstm)")
    hops = hop_distance(layout)
    adjacency = (hops <= 1).astype(np.float64)
    normalised = adjacency / adjacency.sum(axis=0, keepdims=True)
    reach = layout.num_joints if partition == "spatial" else 1
    to_centre = hop_distance(layout, max_hop=reach)[:, layout.center]
    closer = to_centre[:, None] < to_centre[None, :]  # j closer to the centre than i
    root = np.where(hops == 0, normalised, 0)
    centrifugal = np.where((hops == 1) & ~closer, normalised, 0)
    centripetal = np.where((hops == 1) & closer, normalised, 0)
    return np.stack([root, centrifugal, centripetal]).astype(np.float32)
