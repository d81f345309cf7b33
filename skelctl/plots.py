"""PNG figures beside the CSVs, for a user without a DVC workspace: training curves, confusion
matrices and 2-D embeddings of evaluated features. Each image is written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from skelctl.atomic import replacing  # noqa: E402

EMBEDDING_POINTS = 1500  # exact t-SNE costs O(N^2) a step; larger test sets show a seeded sample


def _save(figure: plt.Figure, path: Path) -> None:
    with replacing(path, ".png") as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(figure)


def save_curves(rows: Sequence[dict[str, float]], x: str, ys: Sequence[str], path: Path,
                title: str, ylabel: str = "", baselines: dict[str, float] | None = None) -> None:
    """One line per column of ``ys`` (those present) against column ``x``; each of
    ``baselines`` (label: value, e.g. an untrained encoder's accuracy) a horizontal dashed line."""
    figure, axis = plt.subplots(figsize=(6.4, 4))
    for name in ys:
        points = [(row[x], row[name]) for row in rows if row.get(name) not in (None, "")]
        if points:
            axis.plot(*zip(*points), label=name)
    for label, value in (baselines or {}).items():
        axis.axhline(value, linestyle="--", linewidth=1.2, color=f"C{len(axis.lines)}",
                     label=label)
    axis.set_xlabel(x)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if axis.lines:
        axis.legend()
    _save(figure, path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` counts, rows the true class, columns the predicted one."""
    return np.bincount(np.asarray(labels) * num_classes + np.asarray(predictions),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def save_confusion(matrix: np.ndarray, path: Path, title: str,
                   class_names: Sequence[str] | None = None) -> None:
    """Row-normalised confusion matrix; values under 0.02 are left blank (as CRRL's Fig. 6)."""
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(matrix)
    size = min(max(4.0, 0.45 * n), 24.0)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i, j in zip(*np.nonzero(rates >= 0.02)):
            axis.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if rates[i, j] > 0.5 else "black")
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if n <= 60:
        axis.set_xticks(range(n), names, rotation=90, fontsize=7)
        axis.set_yticks(range(n), names, fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.046)
    _save(figure, path)


def embed_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE (scikit-learn) of ``(N, D)`` features to ``(N, 2)``.

    The exact method, on one thread: scikit-learn's Barnes-Hut code runs on its own OpenMP
    runtime, which crashed the process (a segmentation fault) beside torch's in one test run.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    with threadpool_limits(1, user_api="openmp"):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", method="exact",
                    random_state=seed).fit_transform(np.asarray(features, dtype=np.float64))


def save_embedding(features: np.ndarray, labels: np.ndarray, path: Path, title: str,
                   seed: int = 0) -> np.ndarray:
    """A t-SNE scatter coloured by class; at most ``EMBEDDING_POINTS`` points (a seeded sample).
    Returns the indices of the points shown."""
    shown = np.arange(len(features))
    if len(shown) > EMBEDDING_POINTS:
        shown = np.sort(np.random.default_rng(seed).choice(len(shown), EMBEDDING_POINTS,
                                                            replace=False))
    points = embed_2d(features[shown], seed)
    figure, axis = plt.subplots(figsize=(6.4, 5.6))
    scatter = axis.scatter(points[:, 0], points[:, 1], c=np.asarray(labels)[shown], s=6,
                           cmap="tab10" if labels.max() < 10 else "nipy_spectral")
    figure.colorbar(scatter, ax=axis, label="class")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title)
    _save(figure, path)
    return shown
