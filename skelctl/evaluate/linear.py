"""Linear evaluation: a linear classifier trained on the frozen encoder's features.

With the encoder frozen in eval mode and no augmentation (the protocol of CrosSCLR and the
reference code), its features are fixed, so they are computed once and the classifier trains on
them: the same result as running the encoder every epoch, at a fraction of the cost.
The last epoch's accuracy is the headline; the best epoch's (selected on the test set, as the
reference code reports it) is given beside it, labelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from skelctl.evaluate.features import accuracy


@dataclass
class LinearConfig:
    epochs: int = 100
    lr: float = 3.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    lr_steps: list[int] = field(default_factory=lambda: [80])
    lr_gamma: float = 0.1
    seed: int = 0


def train_linear(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, num_classes: int, config: LinearConfig,
                 device: torch.device) -> dict:
    """Train and evaluate every epoch; returns metrics, the accuracy curve and the test logits of
    the last and of the best epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    classifier = nn.Linear(train_x.shape[1], num_classes).to(device)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.lr_steps, config.lr_gamma)
    train_x, train_y = train_x.to(device), train_y.to(device)
    test_x, test_y = test_x.to(device), test_y.to(device)
    curve, best = [], None
    for epoch in range(config.epochs):
        classifier.train()
        order = torch.randperm(len(train_x), generator=generator).to(device)
        for start in range(0, len(order), config.batch_size):
            chunk = order[start:start + config.batch_size]
            loss = nn.functional.cross_entropy(classifier(train_x[chunk]), train_y[chunk])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        with torch.no_grad():
            logits = classifier(test_x)
        top1, top5 = accuracy(logits, test_y, 1), accuracy(logits, test_y, 5)
        curve.append({"epoch": epoch + 1, "top1": top1, "top5": top5})
        if best is None or top1 > best[1]:
            best = (epoch + 1, top1, top5, logits.cpu())
    last = curve[-1]
    return {
        "metrics": {"top1_last": last["top1"], "top5_last": last["top5"],
                    "top1_best": best[1], "top5_best": best[2], "best_epoch": best[0],
                    "epochs": config.epochs, "train_samples": len(train_x),
                    "test_samples": len(test_x)},
        "curve": curve, "logits_last": logits.cpu(), "logits_best": best[3]}
