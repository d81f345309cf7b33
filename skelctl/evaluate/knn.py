"""KNN retrieval (k = 1 by default): each test sample takes the class of its most similar
training samples under cosine similarity of pre-projector features.

Similarities are computed in batches of test rows, so memory is ``batch x N_train``, never
``N_test x N_train``. :func:`knn_monitor` measures it while :func:`skelctl.train.fit` trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F

from skelctl.evaluate.features import accuracy, extract_features
from skelctl.methods.base import stream_of
from skelctl.train import Samples, distributed, log_line

if TYPE_CHECKING:
    from skelctl.data.store import Store


@torch.no_grad()
def nearest_neighbours(train: torch.Tensor, test: torch.Tensor, k: int = 1,
                       batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and cosine similarities ``(N_test, k)`` of each test sample's k nearest."""
    train = F.normalize(train.float(), dim=1)
    test = F.normalize(test.float(), dim=1)
    k = min(k, len(train))
    indices, similarities = [], []
    for start in range(0, len(test), batch_size):
        sims = test[start:start + batch_size] @ train.T
        top = sims.topk(k, dim=1)
        indices.append(top.indices)
        similarities.append(top.values)
    return torch.cat(indices), torch.cat(similarities)


def knn_scores(neighbour_labels: torch.Tensor, similarities: torch.Tensor,
               num_classes: int) -> torch.Tensor:
    """``(N, num_classes)`` votes: one per neighbour, plus its similarity / 1000 so that a tie
    goes to the class of the more similar neighbours."""
    votes = torch.zeros((len(neighbour_labels), num_classes))
    votes.scatter_add_(1, neighbour_labels, 1 + similarities / 1000)
    return votes


def knn_classify(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                 num_classes: int, k: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each test sample's neighbours ``(N_test, k)``, their similarities and the class votes
    ``(N_test, num_classes)``."""
    neighbours, similarities = nearest_neighbours(train, test, k)
    return neighbours, similarities, knn_scores(train_labels[neighbours], similarities,
                                                num_classes)


def knn_monitor(store: Store, protocol: str, training: Samples, names: list[str], every: int,
                device: torch.device,
                baselines: dict[str, tuple[str, torch.nn.Module]] | None = None
                ) -> Callable[[Any, int], dict[str, float]]:
    """``evaluate(method, epoch)`` for :func:`fit`: every ``every`` epochs, the KNN top-1
    accuracy (k = 1, cosine) of each encoder on the split's test part against its training
    samples (those already in memory for training), named ``knn_<encoder name>``, so the
    history and its plot show whether pretraining is helping. The ``baselines`` (an untrained
    run's encoders, by encoder name) are measured once, now, the same way, and join those rows
    as ``knn_<encoder name>_untrained``."""
    test_rows = store.split(f"{protocol}/val")
    classes = int(store.attr("num_classes"))
    # a stream the method derives while training (CrosSCLR's motion) is read from the store
    streams = list(dict.fromkeys(stream_of(name) for name in names))
    train_x = {stream: training.arrays[stream] if stream in training.arrays
               else store.take(stream, training.arrays["index"].numpy()) for stream in streams}
    test_x = {stream: store.take(stream, test_rows) for stream in streams}
    train_y = training.arrays["label"]
    test_y = torch.from_numpy(store.meta(["label"])["label"][test_rows]).long()

    def knn(encoder: torch.nn.Module, name: str) -> float:
        train = extract_features(encoder, train_x[stream_of(name)], device)
        test = extract_features(encoder, test_x[stream_of(name)], device)
        return accuracy(knn_classify(train, train_y, test, classes)[2], test_y)

    reference = {}
    for name, (run, encoder) in (baselines or {}).items():
        reference[f"knn_{name}_untrained"] = knn(encoder, name)
        if distributed()[0] == 0:
            log_line(f"KNN top-1 of the untrained encoder ({run}) {name}: "
                     f"{reference[f'knn_{name}_untrained']:.1f}")

    def evaluate(method: Any, epoch: int) -> dict[str, float]:
        if epoch % every:
            return {}
        figures = {f"knn_{name}": knn(encoder, name)
                   for name, encoder in method.encoders().items()}
        return {**figures, **reference}
    return evaluate
