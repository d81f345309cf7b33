"""What an encoder's features encode: linear probes from pooled features to properties of the
sequence (its length, the body's net displacement, the camera view, the action).

A contrastive loss can fall while retrieval stays at chance when the features encode something
other than the action (how long a sequence is, where the body went, which camera saw it). Each
probe is a ridge regression on standardised features (closed form, no training loop), scored by
k-fold cross-validation over the given samples: R^2 for a continuous target (0 = no better than
its mean), accuracy for a categorical one (one-hot targets, the largest prediction) beside the
majority class's share.

Two more figures say how the features fill their space, since cosine retrieval can fail while
a linear probe succeeds when a few directions of large variance carry no class information:
the spectrum of the feature covariance (the share of the variance in the top direction and the
top five, and the effective rank) and KNN retrieval after PCA whitening fitted on the training
part, which gives every direction unit variance.
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


def principal_axes(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mean of ``(N, D)`` features and the eigenvalues (descending, at least 0) and
    eigenvectors (columns) of their covariance, in float64."""
    x = features.double()
    mean = x.mean(dim=0)
    centred = x - mean
    eigenvalues, vectors = torch.linalg.eigh(centred.T @ centred / max(len(x) - 1, 1))
    return mean, eigenvalues.flip(0).clamp_min(0), vectors.flip(1)


def spectrum(features: torch.Tensor) -> dict[str, float]:
    """How the variance of ``(N, D)`` features spreads over directions: the share of the top
    principal direction and of the top five, and the effective rank (the exponential of the
    entropy of the normalised covariance eigenvalues: 1 when one direction holds all the
    variance, D when all hold the same)."""
    eigenvalues = principal_axes(features)[1]
    total = float(eigenvalues.sum())
    if total == 0:
        return {"top1_share": 0.0, "top5_share": 0.0, "effective_rank": 0.0}
    shares = eigenvalues / total
    nonzero = shares[shares > 0]
    return {"top1_share": float(shares[0]), "top5_share": float(shares[:5].sum()),
            "effective_rank": float(torch.exp(-(nonzero * nonzero.log()).sum()))}


def whiten(train: torch.Tensor, test: torch.Tensor,
           epsilon: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA whitening fitted on ``train``, applied to both: centred by the training mean and
    scaled to unit variance along each principal direction. Each eigenvalue is raised by
    ``epsilon`` times their mean, so directions of almost no variance are not blown up."""
    mean, eigenvalues, vectors = principal_axes(train)
    a, b = train.double() - mean, test.double() - mean
    scale = (eigenvalues + epsilon * eigenvalues.mean()).rsqrt()
    if not torch.isfinite(scale).all():  # constant features: nothing to whiten
        return a.float(), b.float()
    transform = vectors * scale
    return (a @ transform).float(), (b @ transform).float()
