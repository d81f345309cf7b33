"""The contrastive losses of the methods, in one place: each is written once, for unit-length
embeddings and similarities already computed, and every method that needs one imports it from
here.

- :func:`info_nce`: MoCo's InfoNCE (CrosSCLR Eq. 1), the plain contrastive term of every method;
- :func:`top_k_mask` and :func:`cross_view_loss`: CrosSCLR's knowledge mining and cross-view
  loss (Eqs. 4 and 6), also SkeletonCLR's single-view mining (``context=False``);
- :func:`divergence_loss` and :func:`mining_loss`: AimCLR's distribution divergence between the
  normal and the extreme copies, and its nearest-neighbour mining (CrosNNCLR paper Eqs. 2-5);
- :func:`nearest_neighbours` and :func:`nearest_neighbour_loss`: CrosNNCLR's nearest-neighbour
  loss between the query and the key copy (the paper's "cross-view" loss, Eqs. 6-8);
- :func:`nnclr_loss`: NNCLR's loss (STARS' tuning): each sample's nearest neighbour in the
  support queue against the batch's predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(positive: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 1: ``-log exp(l+/t) / (exp(l+/t) + sum_i exp(l_i/t))``, averaged over the batch.

    ``positive`` is ``(N,)``, ``negatives`` ``(N, K)`` (already dot products of unit vectors).
    """
    logits = torch.cat([positive[:, None], negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long,
                                               device=logits.device))


def top_k_mask(similarities: torch.Tensor, k: int) -> torch.Tensor:
    """Knowledge mining Gamma = Topk (Eq. 4): a boolean ``(N, K)`` mask of each row's k largest."""
    mask = torch.zeros_like(similarities, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, similarities.topk(k, dim=1).indices, True)
    return mask


def cross_view_loss(positive_u: torch.Tensor, negatives_u: torch.Tensor,
                    negatives_v: torch.Tensor, k: int, temperature: float,
                    context: bool = True, detach_teacher: bool = False) -> torch.Tensor:
    """Eq. 6, L_{v->u}: view v's top-k neighbours become positives of view u, and with embedding
    context the similarities of u are weighted by those of v (``s_u * s_v``).

    ``-log [exp(l+/t) + sum_{i in N+} exp(c_i/t)] / [exp(l+/t) + sum_i exp(c_i/t)]``, averaged.
    As in Eq. 6, the gradient flows into both views' similarities through the context product;
    ``detach_teacher`` stops it on view v's side.
    """
    if detach_teacher:
        negatives_v = negatives_v.detach()
    contexts = negatives_u * negatives_v if context else negatives_u
    logits = torch.cat([positive_u[:, None], contexts], dim=1) / temperature
    positives = torch.cat([torch.ones_like(positive_u[:, None], dtype=torch.bool),
                           top_k_mask(negatives_v, k)], dim=1)
    return (torch.logsumexp(logits, dim=1)
            - torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)).mean()


def divergence_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` averaged over the batch, with ``p = softmax(teacher_logits)`` detached and
    ``q = softmax(student_logits)`` (logits already divided by the temperature). Eqs. 2 and 3
    write the cross-entropy ``-sum_i p_i log q_i``; the two differ by the teacher's entropy,
    which carries no gradient, so they train alike, and this one is 0 when the distributions
    agree."""
    target = F.log_softmax(teacher_logits.detach(), dim=1)
    return (target.exp() * (target - F.log_softmax(student_logits, dim=1))).sum(dim=1).mean()


def mining_loss(logits: torch.Tensor, negatives: list[torch.Tensor], topk: int) -> torch.Tensor:
    """Eq. 5: the positive (column 0 of ``logits``) and, for each row, the ``topk`` queue entries
    most similar to any of the copies in ``negatives`` (each ``(N, K)``) are positives; the loss
    is minus the mean log-probability of the positives (over each row's positives, then the
    batch)."""
    mask = torch.zeros_like(logits)
    mask[:, 0] = 1
    for similarities in negatives:
        mask[:, 1:].scatter_(1, similarities.topk(topk, dim=1).indices, 1.0)
    log_probability = F.log_softmax(logits, dim=1)
    return -((log_probability * mask).sum(dim=1) / mask.sum(dim=1)).mean()


def nearest_neighbours(queries: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """For each unit-length row of ``queries`` ``(N, D)``, the row of ``support`` ``(K, D)``
    (unit length too) with the highest cosine similarity."""
    return support[(queries @ support.T).argmax(dim=1)]


def nearest_neighbour_loss(query: torch.Tensor, key: torch.Tensor, support: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """CrosNNCLR Eq. 8, ``(L_q->k + L_k->q) / 2``, for unit-length ``query`` and ``key``
    ``(N, D)`` and the queue ``support`` ``(K, D)``."""
    support = support.detach().clone()  # the queue changes in place after the step
    positive = (query * key).sum(dim=1) / temperature
    losses = []
    for anchor, other in ((query, key), (key, query)):
        neighbour = (nearest_neighbours(anchor.detach(), support) * other).sum(dim=1) / temperature
        numerator = torch.logsumexp(torch.stack([positive, neighbour], dim=1), dim=1)
        denominator = torch.logsumexp(torch.cat([positive[:, None], anchor @ support.T
                                                 / temperature], dim=1), dim=1)
        losses.append((denominator - numerator).mean())
    return (losses[0] + losses[1]) / 2


def nnclr_loss(neighbours: torch.Tensor, predictions: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """NNCLR's loss for unit-length ``neighbours`` (each sample's nearest support entry, from
    one copy) and ``predictions`` (the predictor's output for the other copy), both ``(N, D)``:
    cross-entropy of each neighbour's similarities to every prediction of the batch, the
    sample's own prediction being the target."""
    logits = neighbours @ predictions.T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))
