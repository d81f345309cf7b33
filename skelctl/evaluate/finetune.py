"""Fine-tuning: the whole encoder and a linear head trained with labels, on the one training loop.

Used by the semi-supervised protocol (a per-class fraction of the training labels), full
fine-tuning (all labels) and transfer (an encoder pretrained on another dataset). The model sees
the joint sequences, augments them on the device as pretraining did, and derives its input view
after augmentation. Test accuracy is measured after every epoch (encoder in eval mode, no
augmentation); the last epoch's is the headline, the best epoch's is given beside it, labelled.

The optimisation is the config's, as in pretraining: SGD, ISC's Adam or MAMP's AdamW, the step
or the warmup-and-cosine schedule, and layer-wise learning-rate decay over an encoder that
numbers its layers (the head, outside the encoder, keeps the full rate). With ISC's crops
(``crop``) the model sees each training sample's real sequence, randomly cropped and resized
(then augmented), and the test samples' centre crops (:mod:`skelctl.evaluate.crops`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from skelctl.augment import compose
from skelctl.data.views import compute_view
from skelctl.evaluate.features import accuracy
from skelctl.methods.base import Phase
from skelctl.models.stgcn import init_weights
from skelctl.skeletons import Layout
from skelctl.train import Samples, fit, log_line
from skelctl.settings import Crop, TrainConfig


class Classifier(nn.Module):
    """An encoder with a linear head (N(0, 0.02) as the reference code) on one input view; with
    ``crop``, trained on random crops of the real sequences (``sequence``, ``length``) rather
    than on the fixed view (``joint``)."""

    def __init__(self, encoder: nn.Module, view: str, layout: Layout, num_classes: int,
                 augment: dict[str, dict[str, Any]] | None = None, crop: Crop | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, num_classes)
        init_weights(self.head)
        self.view = view
        self.layout = layout
        self.augment = compose(augment or {}, layout)
        self.crop = crop

    def logits(self, joint: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(compute_view(self.view, joint, self.layout)))

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        joint = (batch["joint"] if self.crop is None else
                 self.crop.random(batch["sequence"], batch["length"], generator))
        loss = nn.functional.cross_entropy(self.logits(self.augment(joint, generator)),
                                           batch["label"])
        return {"loss": loss}



@dataclass
class FinetuneResult:
    """A fine-tuning's record: its metrics (the last and the best tested epoch, labelled) and
    the per-epoch curve (loss, and top-1 and top-5 where tested)."""

    metrics: dict[str, Any]
    curve: list[dict[str, Any]]

@torch.no_grad()
def classify(model: Classifier, joint: torch.Tensor | np.ndarray, device: torch.device,
             batch_size: int = 256) -> torch.Tensor:
    """Logits of un-augmented joint sequences, the model in eval mode; on the CPU."""
    was_training = model.training
    model.eval()
    out = [model.logits(torch.as_tensor(np.asarray(joint[i:i + batch_size])).to(device)).float()
           .cpu() for i in range(0, len(joint), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def finetune(encoder: nn.Module, view: str, layout: Layout, train: Samples,
             test_joint: torch.Tensor | np.ndarray, test_labels: torch.Tensor, num_classes: int,
             config: TrainConfig, augment: dict[str, dict[str, Any]] | None,
             device: torch.device, checkpoint: Path | None = None,
             identity: dict[str, Any] | None = None, eval_every: int = 1,
             log: Callable[[str], None] = log_line, crop: Crop | None = None,
             desc: str | None = None) -> FinetuneResult:
    """Fine-tune ``encoder`` (changed in place) with a fresh head on ``train`` (``joint`` and
    ``label``; with ``crop``, the real sequences instead of ``joint``, and ``test_joint`` the
    test samples' centre crops); returns metrics (last and best tested epoch) and the curve.
    The test set is classified every ``eval_every`` epochs and after the last one. Progress as
    :func:`~skelctl.train.fit` shows it, named ``desc``."""
    if crop is not None and train.frames is None:
        raise ValueError("fine-tuning on crops needs the training samples' real sequences")
    # a small labelled subset (1 % of a small dataset) still gets one batch per epoch
    config = dataclasses.replace(config, batch_size=min(config.batch_size, len(train)))
    torch.manual_seed(config.seed)
    model = Classifier(encoder, view, layout, num_classes, augment, crop)
    phase = Phase(config.epochs, config.lr, list(config.lr_steps), config.lr_gamma,
                  config.momentum, config.weight_decay, name="finetune")

    def evaluate(model: nn.Module, epoch: int) -> dict[str, float]:
        if epoch % eval_every and epoch != config.epochs:
            return {}
        logits = classify(model, test_joint, device)
        return {"top1": accuracy(logits, test_labels, 1), "top5": accuracy(logits, test_labels, 5)}

    if crop is not None:  # a checkpoint made without these crops is not resumed from
        identity = {**(identity or {}), "crop": dataclasses.asdict(crop)}
    history = fit(model, train, [phase], config, checkpoint, device, identity=identity, log=log,
                  evaluate=evaluate, desc=desc)
    tested = [row for row in history if "top1" in row]
    best = max(tested, key=lambda row: (row["top1"], -row["epoch"]))
    last = tested[-1]
    return FinetuneResult(
        metrics={"top1_last": last["top1"], "top5_last": last["top5"],
                 "top1_best": best["top1"], "top5_best": best["top5"],
                 "best_epoch": best["epoch"], "epochs": config.epochs,
                 "train_samples": len(train), "test_samples": len(test_labels)},
        curve=[{k: row.get(k, "") for k in ("epoch", "loss", "top1", "top5")} for row in history])
