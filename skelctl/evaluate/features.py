"""Pre-projector features of a frozen encoder."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from skelctl.train import Progress

FEATURE_LINES = 10  # off a terminal, feature extraction logs about this many lines


@torch.no_grad()
def extract_features(encoder: nn.Module, inputs: torch.Tensor | np.ndarray, device: torch.device,
                     batch_size: int = 256, desc: str | None = None) -> torch.Tensor:
    """``(N, D)`` features of ``inputs`` ``(N, C, T, V, M)``, the encoder in eval mode (batch-norm
    uses its running statistics, dropout is off), returned on the CPU. With ``desc``, progress
    (:class:`skelctl.train.Progress`): a bar, or off a terminal a line about every tenth."""
    was_training = encoder.training
    encoder.eval().to(device)
    out = []
    with Progress(len(inputs) if desc else 0, desc or "", "sample",
                  every=-(-len(inputs) // FEATURE_LINES)) as shown:
        for start in range(0, len(inputs), batch_size):
            batch = torch.as_tensor(np.asarray(inputs[start:start + batch_size]))
            out.append(encoder(batch.to(device)).float().cpu())
            if desc:
                shown.step(len(batch))
    encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, getattr(encoder, "out_dim", 0)))


def accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy in percent."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean() * 100)
