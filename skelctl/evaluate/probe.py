"""What an encoder's features encode: linear probes from pooled features to properties of the
sequence (its length, the body's net displacement, the camera view, the action).

A contrastive loss can fall while retrieval stays at chance when the features encode something
other than the action (how long a sequence is, where the body went, which camera saw it). Each
probe is a ridge regression on standardised features (closed form, no training loop), scored by
k-fold cross-validation over the given samples: R^2 for a continuous target (0 = no better than
its mean), accuracy for a categorical one (one-hot targets, the largest prediction) beside the
majority class's share.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def ridge_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                  alpha: float) -> torch.Tensor:
    """Ridge regression fitted on ``train`` (features standardised by its statistics, targets
    centred), predicting ``test``; ``train_y`` is ``(N,)`` or ``(N, K)``."""
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-8)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    y_mean = train_y.mean(dim=0)
    gram = a.T @ a + alpha * len(a) * torch.eye(a.shape[1], dtype=a.dtype)
    weights = torch.linalg.solve(gram, a.T @ (train_y - y_mean))
    return b @ weights + y_mean


def cross_validated_probe(features: torch.Tensor, target: np.ndarray, categorical: bool,
                          folds: int = 5, alpha: float = 1e-2, seed: int = 0) -> dict[str, Any]:
    """The probe's score over ``folds`` folds (samples shuffled with ``seed``) and its chance
    level."""
    x = features.double()
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if categorical:
        classes, codes = np.unique(target, return_inverse=True)
        y = torch.nn.functional.one_hot(torch.from_numpy(codes), len(classes)).double()
    else:
        y = torch.as_tensor(np.asarray(target, dtype=np.float64))
    predicted = torch.empty_like(y)
    for fold in order.chunk(folds):
        train = torch.ones(n, dtype=torch.bool)
        train[fold] = False
        predicted[fold] = ridge_predict(x[train], y[train], x[fold], alpha)
    if categorical:
        accuracy = float((predicted.argmax(dim=1) == y.argmax(dim=1)).double().mean() * 100)
        chance = float(np.bincount(codes).max() / n * 100)
        return {"metric": "accuracy", "score": accuracy, "chance": chance,
                "classes": len(classes)}
    residual = float(((y - predicted) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return {"metric": "r2", "score": 1 - residual / total if total > 0 else 0.0, "chance": 0.0}


def net_displacement(joint: np.ndarray, centre: int) -> np.ndarray:
    """From a joint view ``(N, C, T, V, M)`` (zero after a variable-length sample's end): how far
    body 0's centre joint moved from the first frame to the last that holds the body."""
    frames = joint[:, :, :, :, 0].any(axis=(1, 3))  # (N, T): the frames that hold the body
    last = np.where(frames.any(axis=1), frames.shape[1] - 1 - np.argmax(frames[:, ::-1], axis=1), 0)
    path = joint[:, :, :, centre, 0]  # (N, C, T)
    return np.linalg.norm(path[np.arange(len(joint)), :, last] - path[:, :, 0],
                          axis=1).astype(np.float64)
