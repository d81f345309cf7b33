"""KNN retrieval (k = 1 by default): each test sample takes the class of its most similar
training samples under cosine similarity of pre-projector features.

Similarities are computed in batches of test rows, so memory is ``batch x N_train``, never
``N_test x N_train``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
