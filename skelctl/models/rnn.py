"""Recurrent encoders over the flattened pose of each frame.

A frame's ``(C, V, M)`` coordinates are flattened in ``(V, C, M)`` order (the ISC line's layout:
index ``v * C * M + c * M + m``), so NTU's 25 joints x 3 x 2 bodies give 150 inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from skelctl.skeletons import Layout


class RecurrentEncoder(nn.Module):
    """A (bi)directional GRU or LSTM over the whole sequence in one call.

    ``pooling="last"`` concatenates the final hidden state of the top layer in each direction
    (the forward state after the last frame, the backward state after the first): the ISC/PCM3
    BiGRU feature. The authors' code feeds one frame at a time in a Python loop, so its "backward"
    direction never sees the future; here the backward direction reads the whole sequence, as a
    bidirectional network should. ``pooling="mean"`` averages the top layer's outputs over time
    (temporal average pooling, CRRL).
    """

    def __init__(self, layout: Layout, in_channels: int = 3, num_persons: int = 2,
                 cell: str = "gru", hidden: int = 1024, layers: int = 3,
                 bidirectional: bool = True, pooling: str = "last", dropout: float = 0.0,
                 input_norm: bool = False):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', not {pooling!r}")
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        size = layout.num_joints * in_channels * num_persons
        self.input_norm = nn.BatchNorm1d(size) if input_norm else None
        self.rnn = rnn(size, hidden, num_layers=layers, bidirectional=bidirectional,
                       batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.pooling = pooling
        self.num_persons = num_persons
        self.out_dim = hidden * (2 if bidirectional else 1)
        for name, weight in self.rnn.named_parameters():
            if weight.dim() == 2:
                nn.init.xavier_uniform_(weight)
            else:
                nn.init.zeros_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's output at every step, ``(N, T, out_dim)``."""
        n, c, t, v, m = x.shape
        if m != self.num_persons:
            raise ValueError(f"encoder built for {self.num_persons} bodies, got {m}")
        seq = x.permute(0, 2, 3, 1, 4).reshape(n, t, v * c * m)
        if self.input_norm is not None:
            seq = self.input_norm(seq.transpose(1, 2)).transpose(1, 2)
        return self.rnn(seq)[0]

    def pool(self, steps: torch.Tensor) -> torch.Tensor:
        """``(N, T, out_dim)`` to ``(N, out_dim)``. For ``"last"``: the forward direction's output
        after the last frame and the backward direction's after the first, which are the top
        layer's final hidden states."""
        if self.pooling == "mean":
            return steps.mean(dim=1)
        if not self.rnn.bidirectional:
            return steps[:, -1]
        half = steps.shape[2] // 2
        return torch.cat([steps[:, -1, :half], steps[:, 0, half:]], dim=1)
