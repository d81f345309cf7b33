"""Multi-stream ensembles: a weighted sum of the streams' classifier logits."""

from __future__ import annotations

from typing import Sequence

import torch


def fuse(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    if len(logits) != len(weights) or not logits:
        raise ValueError(f"{len(logits)} streams but {len(weights)} weights")
    shapes = {tuple(x.shape) for x in logits}
    if len(shapes) != 1:
        raise ValueError(f"stream logits differ in shape: {sorted(shapes)}")
    return sum(w * x.float() for w, x in zip(weights, logits))
