"""Linear evaluation: a linear classifier trained on the frozen encoder's features.

With the encoder frozen in eval mode and no augmentation (the protocol of CrosSCLR and the
reference code), its features are fixed, so they are computed once and the classifier trains on
them: the same result as running the encoder every epoch, at a fraction of the cost.
The last epoch's accuracy is the headline; the best epoch's (selected on the test set, as the
reference code reports it) is given beside it, labelled.
``standardise`` divides the features by their root mean square and puts a batch norm without
affine parameters before the linear layer: an untrained or small-scale encoder's features are
tiny, and at lr 3.0 a plain linear probe on them can sit at chance while KNN on the same features
does well; the masked-autoencoder literature puts such a non-affine batch norm before its linear
probe for the same reason.

ISC's protocol (``LinearConfig.crop``) is the exception: the head trains on features of a fresh
random crop of each training sample's real sequence every epoch, so they are recomputed every
epoch (:func:`train_linear_on_crops`, :mod:`skelctl.evaluate.crops`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from skelctl.evaluate.crops import crop_features
from skelctl.evaluate.encoder import EvaluatedEncoder, Features
from skelctl.evaluate.features import accuracy
from skelctl.settings import LinearConfig
from skelctl.skeletons import Layout
from skelctl.train import Progress, Samples, warmup_cosine


class LinearHead(nn.Module):
    """One linear layer per input (view); the logits are the MEAN of the per-view logits.

    One view = an ordinary linear classifier. Several views = CrosSCLR's own ensemble protocol
    (linear heads of the views trained jointly on the mean of their logits).

    ``standardise``: each view is first divided by ``scales`` (the training features' root mean
    square, set by :func:`train_linear`), then batch-normalised without affine parameters. The
    division makes the probe blind to the encoder's overall scale: batch norm's epsilon (1e-5)
    alone exceeds the variance of an untrained ST-GCN's features (about 1e-13, weights from
    N(0, 0.02)) and would leave them tiny, while a vanishing epsilon would blow near-constant
    features of a trained encoder up to unit variance.
    """

    def __init__(self, dims: list[int], num_classes: int, standardise: bool = False,
                 init_std: float = 0.02) -> None:
        super().__init__()
        if not dims:
            raise ValueError("a linear head needs at least one input view")
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(d, affine=False) if standardise else nn.Identity() for d in dims)
        self.register_buffer("scales", torch.ones(len(dims)))
        self.fcs = nn.ModuleList(nn.Linear(d, num_classes) for d in dims)
        for fc in self.fcs:
            nn.init.normal_(fc.weight, 0.0, init_std)
            nn.init.zeros_(fc.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.fcs):
            raise ValueError(f"head has {len(self.fcs)} views but got {len(features)} inputs")
        logits = [fc(norm(x / scale))
                  for x, scale, norm, fc in zip(features, self.scales, self.norms, self.fcs)]
        return torch.stack(logits).mean(0)


@dataclass
class LinearResult:
    """A trained head's record: its metrics (last and best epoch, labelled), the per-epoch
    curve, and the test logits and the head (CPU, eval mode) of the last and the best epoch."""

    metrics: dict[str, Any]
    curve: list[dict[str, float]]
    logits_last: torch.Tensor
    logits_best: torch.Tensor
    head_last: LinearHead
    head_best: LinearHead


def _views(x: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else list(x)


@torch.no_grad()
def predict(head: LinearHead, features: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Logits of ``features`` (one tensor or one per view) with the head in eval mode (batch norm
    on its running statistics), e.g. to score occluded test features with a trained head."""
    was_training = head.training
    head.eval()
    device = head.fcs[0].weight.device
    logits = head([x.to(device) for x in _views(features)])
    head.train(was_training)
    return logits


def train_linear(train_x: torch.Tensor | list[torch.Tensor], train_y: torch.Tensor,
                 test_x: torch.Tensor | list[torch.Tensor], test_y: torch.Tensor,
                 num_classes: int, config: LinearConfig, device: torch.device,
                 desc: str | None = None) -> LinearResult:
    """Train and evaluate every epoch; returns metrics, the accuracy curve, the test logits and
    the heads (CPU, eval mode) of the last and of the best epoch.

    ``train_x``/``test_x`` are ``(N, D)`` features, or a list of one such tensor per view (same
    ``N``, own ``D``) for the multi-view ensemble head. With ``desc``, progress an epoch
    (:class:`skelctl.train.Progress`).
    """
    if config.crop is not None:
        raise ValueError("the crop protocol recomputes the training features every epoch: "
                         "use train_linear_on_crops, not fixed features")
    train_x = _views(train_x)
    return train_heads(lambda epoch: train_x, train_y, test_x, test_y, num_classes, [config],
                       device, desc)[0]


def train_linear_on_crops(encoder: nn.Module, view: str, layout: Layout, train: Samples,
                          test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
                          configs: list[LinearConfig], device: torch.device,
                          desc: str | None = None) -> list[LinearResult]:
    """ISC's linear protocol: every epoch, the training features are recomputed from a fresh
    random crop-resize (``config.crop``) of each training sample's real sequence (``train``:
    samples with frames, and ``label``), the encoder frozen in eval mode; ``test_x`` are the
    features of the test samples' centre crops. The heads of ``configs`` (the same crops and
    seed) train side by side on the same features, so the encoder runs once an epoch."""
    crops = {(c.crop, c.seed) for c in configs}
    if len(crops) != 1 or configs[0].crop is None:
        raise ValueError("heads trained on crops side by side need the same crop and seed")
    crop, seed = configs[0].crop, configs[0].seed
    train = train.to(device)
    return train_heads(
        lambda epoch: crop_features(encoder, view, layout, train, crop, device, epoch, seed),
        train.arrays["label"], test_x, test_y, num_classes, configs, device, desc)


class _Trainer:
    """One head, its optimiser and its record, trained an epoch at a time."""

    def __init__(self, config: LinearConfig, train_x: list[torch.Tensor], num_classes: int,
                 device: torch.device) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
            torch.manual_seed(config.seed)
            self.head = LinearHead([x.shape[1] for x in train_x], num_classes,
                                   config.standardise, config.init_std).to(device)
        if config.standardise:
            self.head.scales.copy_(torch.stack([x.float().pow(2).mean().sqrt().clamp_min(1e-30)
                                                for x in train_x]))
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=config.lr,
                                         momentum=config.momentum,
                                         nesterov=config.nesterov,
                                         weight_decay=config.weight_decay)
        if config.lr_schedule == "cosine":  # per step, from lr down to 0 (MAMP's probe)
            steps = -(-len(train_x[0]) // config.batch_size)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: warmup_cosine(step / steps, 1.0, 0.0, 0.0,
                                                           config.epochs))
        else:
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer,
                                                                  config.lr_steps,
                                                                  config.lr_gamma)
        self.curve: list[dict[str, float]] = []
        self.best: tuple | None = None
        self.logits: torch.Tensor | None = None

    def epoch(self, epoch: int, train_x: list[torch.Tensor], train_y: torch.Tensor,
              test_x: list[torch.Tensor], test_y: torch.Tensor) -> None:
        config, head = self.config, self.head
        head.train()
        order = torch.randperm(len(train_y), generator=self.generator).to(train_y.device)
        for start in range(0, len(order), config.batch_size):
            chunk = order[start:start + config.batch_size]
            if config.standardise and len(chunk) < 2:
                continue  # batch statistics of a single sample are undefined
            loss = nn.functional.cross_entropy(head([x[chunk] for x in train_x]), train_y[chunk])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.config.lr_schedule == "cosine":
                self.scheduler.step()
        if self.config.lr_schedule == "step":
            self.scheduler.step()
        self.logits = predict(head, test_x)
        top1, top5 = accuracy(self.logits, test_y, 1), accuracy(self.logits, test_y, 5)
        self.curve.append({"epoch": epoch + 1, "top1": top1, "top5": top5})
        if self.best is None or top1 > self.best[1]:
            self.best = (epoch + 1, top1, top5, self.logits.cpu(),
                         copy.deepcopy(head).cpu().eval())

    def result(self, train_samples: int, test_samples: int) -> LinearResult:
        last, best = self.curve[-1], self.best
        return LinearResult(
            metrics={"top1_last": last["top1"], "top5_last": last["top5"],
                     "top1_best": best[1], "top5_best": best[2], "best_epoch": best[0],
                     "epochs": self.config.epochs, "train_samples": train_samples,
                     "test_samples": test_samples},
            curve=self.curve, logits_last=self.logits.cpu(), logits_best=best[3],
            head_last=self.head.cpu().eval(), head_best=best[4])


def train_heads(train_x: Callable[[int], torch.Tensor | list[torch.Tensor]],
                train_y: torch.Tensor, test_x: torch.Tensor | list[torch.Tensor],
                test_y: torch.Tensor, num_classes: int, configs: list[LinearConfig],
                device: torch.device, desc: str | None = None) -> list[LinearResult]:
    """A head for each of ``configs``, each trained and evaluated every epoch as
    :func:`train_linear` describes, all on the training features ``train_x(epoch)`` of each
    epoch (fixed, or recomputed from fresh crops); the first epoch's set a standardised head's
    scales. Returns each head's result, as :func:`train_linear`'s. With ``desc``, progress: a
    bar, or off a terminal a line an epoch with each head's test top-1."""
    if not configs or len({c.epochs for c in configs}) != 1:
        raise ValueError("heads trained side by side need the same number of epochs")
    first, test_x = _views(train_x(0)), _views(test_x)
    if len(first) != len(test_x):
        raise ValueError(f"{len(first)} train views but {len(test_x)} test views")
    if any(a.shape[1] != b.shape[1] for a, b in zip(first, test_x)):
        raise ValueError("train and test features of a view must have the same dimension")
    if any(len(x) != len(train_y) for x in first) or any(len(x) != len(test_y) for x in test_x):
        raise ValueError("every view must have one feature row per label")
    trainers = [_Trainer(config, first, num_classes, device) for config in configs]
    test_x = [x.to(device) for x in test_x]
    train_y, test_y = train_y.to(device), test_y.to(device)
    epochs = configs[0].epochs
    with Progress(epochs if desc else 0, desc or "", "epoch") as shown:
        for epoch in range(epochs):
            lr = trainers[0].optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
            views = first if epoch == 0 else _views(train_x(epoch))
            views = [x.to(device) for x in views]
            for trainer in trainers:
                trainer.epoch(epoch, views, train_y, test_x, test_y)
            if desc:
                top1 = {"top1" if len(trainers) == 1 else f"top1_head{i + 1}": t.curve[-1]["top1"]
                        for i, t in enumerate(trainers)}
                shown.step(row={"epoch": epoch + 1, "lr": lr, **top1},
                           postfix={k: f"{v:.1f}" for k, v in top1.items()})
    return [trainer.result(len(train_y), len(test_y)) for trainer in trainers]


@dataclass
class LinearEvaluation:
    """The linear protocol's outcome for an encoder: the headline classifier's result, the
    metrics to report (the headline's, the protocol in words, the standardised classifier's
    figures beside) and the test features the classifiers were tested on."""

    paper: LinearResult
    metrics: dict[str, Any]
    test: Features


def linear_label(config: LinearConfig) -> str:
    """The linear protocol in words, for the metrics' ``protocol``."""
    schedule = (f"lr {config.lr} x{config.lr_gamma} at {config.lr_steps}, {config.epochs} epochs"
                if config.lr_schedule == "step" else
                f"lr {config.lr} cosine to 0 per step, {config.epochs} epochs")
    if config.nesterov:
        schedule = f"Nesterov {schedule}, batch {config.batch_size}"
    if config.standardise:
        schedule = f"standardised, {schedule}"
    if config.crop is None:
        return f"paper (frozen features, {schedule})"
    return f"ISC ({config.crop.label()}, {schedule})"


def _evaluation(results: list[LinearResult], config: LinearConfig, test: Features
                ) -> LinearEvaluation:
    """The headline (the first result) and, beside it, the standardised classifier's figures
    (the second result; the headline itself when ``config`` is the standardised probe)."""
    paper, standardised = results[0], results[-1]
    return LinearEvaluation(paper, {**paper.metrics, "protocol": linear_label(config),
                                    "standardised": standardised.metrics}, test)


def _with_standardised(config: LinearConfig) -> list[LinearConfig]:
    """``config`` and, unless it is already the standardised probe, its standardised twin."""
    if config.standardise:
        return [config]
    return [config, dataclasses.replace(config, standardise=True)]


def linear_protocols(train: Features, test: Features, num_classes: int, config: LinearConfig,
                     device: torch.device, desc: str | None = None) -> LinearEvaluation:
    """The paper's protocol (the headline) and, labelled beside it, the same classifier on
    standardised features, on fixed features. With ``desc`` (the encoder), progress an
    epoch."""
    results = [train_linear(train.x, train.labels, test.x, test.labels, num_classes, c, device,
                            desc and f"{desc} linear" + (", standardised" if i else ""))
               for i, c in enumerate(_with_standardised(config))]
    return _evaluation(results, config, test)


def crop_linear(encoder: EvaluatedEncoder, indices: np.ndarray, test: Features,
                configs: list[LinearConfig], device: torch.device) -> list[LinearResult]:
    """ISC's linear protocol: heads of ``configs`` trained on fresh random crops of the store
    ``indices``' sequences every epoch, tested on ``test`` (centre-crop features)."""
    return train_linear_on_crops(encoder.module, encoder.view, encoder.info["layout"],
                                 encoder.sequences(indices), test.x, test.labels,
                                 encoder.num_classes, configs, device,
                                 f"{encoder.label} linear (random crops)")


def evaluate_linear(encoder: EvaluatedEncoder, config: LinearConfig, device: torch.device
                    ) -> LinearEvaluation:
    """The linear protocol of ``config`` on the encoder's split (fixed features, or ISC's crops
    with ``config.crop``), the standardised classifier beside it."""
    if config.crop is None:
        return linear_protocols(encoder.features("train", device),
                                encoder.features("val", device), encoder.num_classes, config,
                                device, encoder.label)
    test = encoder.features("val", device, config.crop)
    return _evaluation(crop_linear(encoder, encoder.part("train"), test,
                                   _with_standardised(config), device), config, test)
