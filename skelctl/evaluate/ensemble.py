"""Multi-stream ensembles of per-stream classifiers, by two protocols, each over the groups of
:func:`ensemble_groups` (each stream alone, the first two, all of them):

- post hoc (AimCLR's): a weighted sum of the streams' linear-evaluation logits (:func:`fuse`);
- joint (CrosSCLR's own): the streams' linear heads trained together on the mean of their
  logits, on fixed features (:func:`joint_ensembles`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from skelctl.evaluate.features import accuracy
from skelctl.evaluate.linear import train_linear
from skelctl.settings import LinearConfig

JOINT_METRICS = ("top1_last", "top5_last", "top1_best", "top5_best", "best_epoch")


def fuse(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    if len(logits) != len(weights) or not logits:
        raise ValueError(f"{len(logits)} streams but {len(weights)} weights")
    shapes = {tuple(x.shape) for x in logits}
    if len(shapes) != 1:
        raise ValueError(f"stream logits differ in shape: {sorted(shapes)}")
    return sum(w * x.float() for w, x in zip(weights, logits))


def ensemble_groups(streams: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each stream alone, the first two (2s) and, with three or more, all of them (3s)."""
    groups = {s: (s,) for s in streams}
    groups["2s"] = streams[:2]
    if len(streams) >= 3:
        groups[f"{len(streams)}s"] = streams
    return groups


def posthoc_ensembles(logits: dict[str, dict[str, torch.Tensor]], weights: dict[str, float],
                      target: torch.Tensor) -> dict[str, dict[str, float]]:
    """Top-1 and top-5 of each group's weighted sum of logits, for the ``last`` and ``best``
    epochs' logits of each stream (``logits[stream][which]``)."""
    results: dict[str, dict[str, float]] = {}
    for group, members in ensemble_groups(tuple(logits)).items():
        results[group] = {}
        for which in ("last", "best"):
            fused = fuse([logits[s][which] for s in members], [weights[s] for s in members])
            results[group][f"top1_{which}"] = accuracy(fused, target, 1)
            results[group][f"top5_{which}"] = accuracy(fused, target, 5)
    return results


def joint_ensembles(train: dict[str, torch.Tensor], train_labels: torch.Tensor,
                    test: dict[str, torch.Tensor], target: torch.Tensor, num_classes: int,
                    config: LinearConfig, device: torch.device, name: str
                    ) -> dict[str, dict[str, Any]]:
    """Each group of two or more streams: linear heads trained together on the mean of their
    logits over the streams' fixed features (``train[stream]``, ``test[stream]``)."""
    results = {}
    for group, members in ensemble_groups(tuple(train)).items():
        if len(members) > 1:
            joint = train_linear([train[s] for s in members], train_labels,
                                 [test[s] for s in members], target, num_classes, config, device,
                                 f"{name} {group} joint linear")
            results[group] = {k: joint.metrics[k] for k in JOINT_METRICS}
    return results
