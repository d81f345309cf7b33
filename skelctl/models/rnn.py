"""Recurrent encoders over the flattened pose of each frame.

A frame's ``(C, V, M)`` coordinates are flattened in ``(V, C, M)`` order (the ISC line's layout:
index ``v * C * M + c * M + m``), so NTU's 25 joints x 3 x 2 bodies give 150 inputs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from skelctl.skeletons import Layout


class RecurrentEncoder(nn.Module):
    """A (bi)directional GRU or LSTM over the whole sequence.

    ``direction`` says how the two directions of a bidirectional network read time:

    - ``"bidirectional"``: the backward direction reads the sequence from its end, as a
      bidirectional network should (the ISC paper's description); one call for all layers.
    - ``"causal"``: both directions of every layer read forward in time, the ISC authors' "BiGRU"
      (their code feeds one frame at a time to a bidirectional ``nn.GRU``, carrying the hidden
      state, so the "backward" direction never sees a later frame): the network behind their
      published numbers. It is computed exactly as two unidirectional single-layer chains per
      layer, each run over the whole sequence in one call (``2 * layers`` calls, not one call per
      frame), the layer's output being their concatenation, the next layer's input. The weights
      stay those of the one bidirectional ``self.rnn``: ``weight_ih_l{k}``, ``weight_hh_l{k}``,
      ``bias_*_l{k}`` drive layer k's first chain and the ``*_l{k}_reverse`` ones its second, so
      the authors' state dict (their ``encoder.gru.*`` keys) loads into ``rnn.*`` as it is.

    ``pooling="last"`` with ``"bidirectional"`` concatenates the final hidden state of the top
    layer in each direction (the forward state after the last frame, the backward state after the
    first); with ``"causal"`` it is the top layer's output at the last real frame, both chains
    (2048-d for 1024 units; the authors' feature). ``pooling="mean"`` averages the top layer's
    outputs over time (temporal average pooling, CRRL).

    ``packed=True`` reads variable-length input: a sample's frames end at its last non-zero frame
    (the zero padding of an ``upto<F>`` store variant) and the recurrence runs over the real frames
    only (a packed sequence), so a sample's features do not depend on how much padding follows it.
    The causal form needs no packing for that (no step reads a later frame): it runs over the
    padding too and zeroes the steps past each sample's end.

    ``prompt`` (``forward`` and ``features``) is an input added to every step of the flattened
    sequence, before the input batch norm or, with ``prompt_after_norm``, after it: PCM3's domain
    prompts. The prompt is the caller's parameter, never the encoder's, so an exported encoder
    holds none.
    """

    def __init__(self, layout: Layout, in_channels: int | None = None, num_persons: int = 2,
                 cell: str = "gru", hidden: int = 1024, layers: int = 3,
                 bidirectional: bool = True, pooling: str = "last", dropout: float = 0.0,
                 input_norm: bool = False, packed: bool = False, init: str = "xavier",
                 direction: str = "bidirectional"):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', not {pooling!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, not {init!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not "
                             f"{direction!r}")
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        in_channels = in_channels or layout.dims  # coordinates per joint
        size = layout.num_joints * in_channels * num_persons
        self.input_norm = nn.BatchNorm1d(size) if input_norm else None
        self.rnn = rnn(size, hidden, num_layers=layers, bidirectional=bidirectional,
                       batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.pooling = pooling
        self.packed = packed
        self.direction = direction
        self.num_persons = num_persons
        self.out_dim = hidden * (2 if bidirectional else 1)
        # xavier: Xavier-uniform matrices and zero biases; xavier_weights: Xavier-uniform
        # matrices, biases left at PyTorch's default (the ISC authors' code initialises only the
        # 2-D parameters); default: PyTorch's U(-1/sqrt(hidden), 1/sqrt(hidden)) everywhere, as
        # the CRRL authors' code leaves it
        for name, weight in self.rnn.named_parameters() if init != "default" else ():
            if weight.dim() == 2:
                nn.init.xavier_uniform_(weight)
            elif init == "xavier":
                nn.init.zeros_(weight)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                prompt: torch.Tensor | None = None, prompt_after_norm: bool = False
                ) -> torch.Tensor:
        lengths = self.lengths(x) if lengths is None else lengths
        return self.pool(self.features(x, lengths, prompt, prompt_after_norm), lengths)

    def lengths(self, x: torch.Tensor) -> torch.Tensor | None:
        """Each sample's frame count ``(N,)`` when ``packed`` (None otherwise)."""
        return sequence_lengths(x) if self.packed else None

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, V, M)`` to the recurrence's input ``(N, T, V * C * M)``."""
        n, c, t, v, m = x.shape
        if m != self.num_persons:
            raise ValueError(f"encoder built for {self.num_persons} bodies, got {m}")
        return x.permute(0, 2, 3, 1, 4).reshape(n, t, v * c * m)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                 prompt: torch.Tensor | None = None, prompt_after_norm: bool = False
                 ) -> torch.Tensor:
        """The top layer's output at every step, ``(N, T, out_dim)``; packed to ``lengths``
        (found from the padding when ``packed`` and not given, from ``x`` without the prompt),
        zero after each sample's last frame. ``prompt``, broadcast to the flattened input
        ``(N, T, V * C * M)`` (PCM3's are ``(1, 1, V * C * M)``), is added to it before the input
        batch norm, or after it with ``prompt_after_norm``."""
        seq = self.flatten(x)
        if prompt is not None and not prompt_after_norm:
            seq = seq + prompt
        if self.input_norm is not None:
            seq = self.input_norm(seq.transpose(1, 2)).transpose(1, 2)
        if prompt is not None and prompt_after_norm:
            seq = seq + prompt
        lengths = self.lengths(x) if lengths is None else lengths
        if self.direction == "causal":
            return run_causal(self.rnn, seq, lengths)
        return run_recurrence(self.rnn, seq, lengths)

    def pool(self, steps: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, T, out_dim)`` to ``(N, out_dim)`` over each sample's first ``lengths`` steps
        (all when None). For ``"last"``: the forward direction's output after the last frame and
        the backward direction's after the first, which are the top layer's final hidden states
        (``"causal"``: both chains' output after the last frame)."""
        n, t = steps.shape[:2]
        if lengths is None:
            lengths = torch.full((n,), t, dtype=torch.long)
        lengths = lengths.to(steps.device)
        if self.pooling == "mean":
            valid = step_mask(lengths, t)
            return (steps * valid[..., None]).sum(dim=1) / lengths[:, None].to(steps.dtype)
        last = steps[torch.arange(n, device=steps.device), lengths - 1]
        if not self.rnn.bidirectional or self.direction == "causal":
            return last
        half = steps.shape[2] // 2
        return torch.cat([last[:, :half], steps[:, 0, half:]], dim=1)


# the encoder's init and direction options
INITS = ("xavier", "xavier_weights", "default")
DIRECTIONS = ("bidirectional", "causal")


def step_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """``(N, t)``: true at each sample's first ``lengths`` steps (on ``lengths``' device)."""
    return torch.arange(t, device=lengths.device)[None] < lengths[:, None]


def sequence_lengths(x: torch.Tensor) -> torch.Tensor:
    """One past the last frame with a non-zero value, per sample of ``(N, C, T, V, M)`` (at least
    1), on the CPU as packing wants it."""
    t = x.shape[2]
    nonzero = (x != 0).any(dim=(1, 3, 4))  # (N, T)
    trailing = nonzero.flip(1).int().cumsum(1).eq(0).sum(1)
    return (t - trailing).clamp(min=1).cpu()


def run_recurrence(rnn: nn.Module, seq: torch.Tensor,
                   lengths: torch.Tensor | None) -> torch.Tensor:
    """``rnn`` over ``(N, T, F)``; packed (no step past a sample's length) when ``lengths`` is
    given, the output zero-padded back to ``T`` steps."""
    if lengths is None:
        return rnn(seq)[0]
    packed = pack_padded_sequence(seq, lengths.cpu(), batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=seq.shape[1])[0]


def run_causal(rnn: nn.GRU | nn.LSTM, seq: torch.Tensor,
               lengths: torch.Tensor | None) -> torch.Tensor:
    """``rnn``'s layers over ``(N, T, F)`` with every direction reading forward in time: per layer,
    one single-layer unidirectional chain per direction (its ``_l{k}`` or ``_l{k}_reverse``
    weights), each over the whole sequence in one call, from a zero state; their outputs
    concatenated feed the next layer (with ``rnn``'s dropout between layers, as nn.GRU applies
    it). Zero after each sample's ``lengths`` steps when given: a step's output depends on no
    later frame, so running over the padding changes no real step and nothing needs packing."""
    n, t = seq.shape[:2]
    directions = ("", "_reverse") if rnn.bidirectional else ("",)
    run = {"GRU": torch.gru, "LSTM": torch.lstm}[rnn.mode]
    x = seq
    for layer in range(rnn.num_layers):
        if layer > 0 and rnn.dropout > 0:
            x = nn.functional.dropout(x, rnn.dropout, rnn.training)
        chains = []
        for suffix in directions:
            # the layer's parameters in nn.GRU's flat order: w_ih, w_hh, b_ih, b_hh
            weights = [getattr(rnn, f"{kind}_l{layer}{suffix}")
                       for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h0 = x.new_zeros(1, n, rnn.hidden_size)
            state = (h0, h0) if rnn.mode == "LSTM" else h0
            # torch.gru/torch.lstm are the kernels nn.GRU/nn.LSTM call (cuDNN on a GPU):
            # (input, state, weights, has_biases, layers, dropout, train, bidirectional,
            # batch_first)
            chains.append(run(x, state, weights, True, 1, 0.0, rnn.training, False, True)[0])
        x = torch.cat(chains, dim=2) if len(chains) > 1 else chains[0]
    if lengths is None:
        return x
    return x * step_mask(lengths.to(x.device), t)[..., None].to(x.dtype)
