"""AGCN: the joint stream of 2s-AGCN (Shi et al. 2019), ISC's graph-based encoder.

Ten units of an adaptive graph convolution followed by a temporal convolution (kernel 9), widths
64, 64, 64, 64, 128 (stride 2), 128, 128, 256 (stride 2), 256, 256 (``hidden=64``), with
residuals. A unit's graph
for each of its three subsets is the sum of

- the fixed graph of the layout's bones: identity, inward (a joint receives from its parent)
  and outward (from its children), each column-normalised (2s-AGCN's ``labeling_mode
  'spatial'``),
- a learnable additive graph (``B`` in the paper, initialised to 1e-6 so that it starts as
  nothing but can take any structure, edges between unconnected joints included),
- a data-dependent attention graph (``C``): the softmax over joints of the similarity of two
  embeddings of the input (a quarter of the unit's output channels each).

Input ``(N, C, T, V, M)``: a batch norm over the M * V * C coordinates of a frame, then the persons
are folded into the batch, and their pooled features averaged, so the output is ``(N, out_dim)``
(256 by default). ``features`` gives the last unit's feature map ``(N, M, out_dim, T', V)``, as the
ST-GCN's does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from skelctl.models.stgcn import STGCN
from skelctl.skeletons import Layout


def agcn_subsets(layout: Layout) -> np.ndarray:
    """``(3, V, V)``: identity, inward and outward graphs of ``layout``'s bones.

    Entry ``[j, i]`` carries joint j to joint i (the feature map is multiplied on the right):
    inward has ``[parent, child]`` set, outward ``[child, parent]``; each is column-normalised
    (``A D^-1``, a column with no entry stays zero), so the outward subset averages a joint's
    children.
    """
    if not layout.has_graph:
        raise ValueError(f"layout {layout.name!r} has no skeleton graph, which the AGCN needs: "
                         f"describe the skeleton with a layout file (--layout FILE; skelctl "
                         f"layouts lists the built-ins), or use a graph-free encoder (gru, bigru, "
                         f"lstm or hcn)")
    v = layout.num_joints
    inward = np.zeros((v, v))
    for child, parent in layout.edges:
        inward[parent, child] = 1.0
    outward = inward.T.copy()

    def normalise(a: np.ndarray) -> np.ndarray:
        degree = a.sum(axis=0, keepdims=True)
        return np.divide(a, degree, out=np.zeros_like(a), where=degree > 0)

    return np.stack([np.eye(v), normalise(inward), normalise(outward)]).astype(np.float32)


class AdaptiveGraphConv(nn.Module):
    """2s-AGCN's ``unit_gcn``, with its per-subset loop batched: the K subsets' attention
    embeddings are one convolution each, and the K graph products feed one 1x1 convolution over
    their concatenated channels (the sum of the K per-subset convolutions; it has one bias
    vector where the reference has K, whose sum is all that acts)."""

    def __init__(self, in_channels: int, out_channels: int, graph: torch.Tensor,
                 embedding: int = 4):
        super().__init__()
        k = graph.shape[0]
        self.num_subsets = k
        self.inter = out_channels // embedding
        self.register_buffer("graph", graph.clone())
        # the learnable additive graph B, starting near zero
        self.learned_graph = nn.Parameter(torch.full_like(graph, 1e-6))
        self.query = nn.Conv2d(in_channels, k * self.inter, 1)
        self.key = nn.Conv2d(in_channels, k * self.inter, 1)
        self.mix = nn.Conv2d(k * in_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.down = (nn.Identity() if in_channels == out_channels else
                     nn.Sequential(nn.Conv2d(in_channels, out_channels, 1),
                                   nn.BatchNorm2d(out_channels)))
        self.relu = nn.ReLU(inplace=True)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                conv_init(module)
            elif isinstance(module, nn.BatchNorm2d):
                bn_init(module, 1.0)
        bn_init(self.bn, 1e-6)  # the unit starts close to its residual path
        # the reference's per-subset N(0, 2 / (out * in * K)): the same std for the merged weight
        out, fan_in = self.mix.weight.shape[:2]
        nn.init.normal_(self.mix.weight, 0.0, math.sqrt(2.0 / (out * fan_in)))
        nn.init.zeros_(self.mix.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K, V, V)``: each subset's data-dependent graph, the embedded similarity of every
        joint pair over channels and frames, scaled by their count, softmax over the sending
        joint (each column sums to 1)."""
        n, _, t, v = x.shape
        k, d = self.num_subsets, self.inter
        a = self.query(x).view(n, k, d * t, v)
        b = self.key(x).view(n, k, d * t, v)
        return torch.softmax(a.transpose(2, 3) @ b / (d * t), dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        graphs = self.attention(x) + (self.graph + self.learned_graph)  # (N, K, V, V)
        # every subset's graph product x A_k, joints on the right: (N, K, C T, V)
        y = x.reshape(n, 1, c * t, v) @ graphs
        y = self.mix(y.view(n, self.num_subsets * c, t, v))
        return self.relu(self.bn(y) + self.down(x))


class AGCNUnit(nn.Module):
    """2s-AGCN's ``TCN_GCN_unit``: adaptive graph convolution, temporal convolution (kernel 9,
    batch norm), plus the unit's residual, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, graph: torch.Tensor,
                 stride: int = 1, residual: bool = True, kernel: int = 9):
        super().__init__()
        self.gcn = AdaptiveGraphConv(in_channels, out_channels, graph)
        self.tcn = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, (kernel, 1), (stride, 1),
                      ((kernel - 1) // 2, 0)),
            nn.BatchNorm2d(out_channels))
        self.stride = stride
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            # applied to every stride-th frame: a strided 1x1 convolution (see the ST-GCN's
            # GraphBlock for why it is not written as one)
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1),
                                          nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)
        for path in (self.tcn, self.residual):
            if isinstance(path, nn.Sequential):
                conv_init(path[0])
                bn_init(path[1], 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tcn(self.gcn(x))
        if self.residual is not None:
            y = y + self.residual(x[:, :, ::self.stride])
        return self.relu(y)


class AGCN(nn.Module):
    """The 2s-AGCN joint stream as ISC uses it (without its classifier): ``hidden`` base
    channels (64, the authors'), doubled at each of the two strides, so 256-d by default."""

    # (width in base channels, temporal stride) of the ten units
    UNITS = ((1, 1), (1, 1), (1, 1), (1, 1), (2, 2), (2, 1), (2, 1), (4, 2), (4, 1), (4, 1))

    def __init__(self, layout: Layout, in_channels: int | None = None, num_persons: int = 2,
                 hidden: int = 64):
        super().__init__()
        if hidden < 4:
            raise ValueError(f"AGCN needs at least 4 base channels (its attention embeds a "
                             f"quarter of them), not hidden={hidden}")
        graph = torch.from_numpy(agcn_subsets(layout))
        v = layout.num_joints
        in_channels = in_channels or layout.dims  # coordinates per joint
        self.num_persons = num_persons
        self.data_bn = nn.BatchNorm1d(num_persons * v * in_channels)
        bn_init(self.data_bn, 1.0)
        units, c_in = [], in_channels
        for i, (width, stride) in enumerate(self.UNITS):
            units.append(AGCNUnit(c_in, width * hidden, graph, stride, residual=i > 0))
            c_in = width * hidden
        self.units = nn.ModuleList(units)
        self.out_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    # (N, M, C, T', V) to (N, C): the mean over frames and joints, then bodies, as the ST-GCN's
    pool = staticmethod(STGCN.pool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last unit's feature map ``(N, M, out_dim, T', V)``."""
        n, c, t, v, m = x.shape
        if m != self.num_persons:
            raise ValueError(f"encoder built for {self.num_persons} bodies, got {m}")
        # the batch norm sees each frame's coordinates in (M, V, C) order
        x = self.data_bn(x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t))
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
        for unit in self.units:
            x = unit(x)
        return x.view(n, m, *x.shape[1:])


def conv_init(conv: nn.Conv2d) -> None:
    """2s-AGCN's convolution init: Kaiming-normal over the fan-out, zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    nn.init.zeros_(conv.bias)


def bn_init(bn: nn.Module, scale: float) -> None:
    nn.init.constant_(bn.weight, scale)
    nn.init.zeros_(bn.bias)
