"""An exported encoder opened on a store for evaluation, and the features it gives.

Every frozen-encoder protocol (linear, KNN, probes, ensembles, fine-tuning's starting point)
works on an :class:`EvaluatedEncoder`: the encoder module and its file's description, the store
of the split it is evaluated on (in the data variant it was trained on) and the protocol whose
``train``/``val`` parts it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skelctl.data.store import Store
from skelctl.evaluate.crops import crop_features
from skelctl.evaluate.features import extract_features
from skelctl.settings import Crop
from skelctl.train import Samples, training_samples


@dataclass
class Features:
    """Pre-projector features ``x`` ``(N, D)`` of samples, their ``labels`` ``(N,)`` and store
    ``indices`` ``(N,)``."""

    x: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray


@dataclass
class EvaluatedEncoder:
    """An exported encoder opened for evaluation on a split's store."""

    module: nn.Module
    view: str
    info: dict[str, Any]  # the encoder file's description (layout, bodies, provenance...)
    store: Store
    protocol: str
    name: str  # the results folder: the run's name, or <run>@<split> for a file given by path
    path: Path  # the encoder file (fine-tuning starts from a fresh copy of it)
    key: str = ""  # the encoder's name in its run (stream, or stream.kind); default: the view

    def __post_init__(self) -> None:
        self.key = self.key or self.view
        layout, store_layout = self.info["layout"], self.store.layout()
        bodies = int(self.store.attr("max_bodies"))
        if layout != store_layout or bodies != self.info["num_persons"]:
            raise ValueError(f"{self.path}: encoder made for layout {layout.name} with "
                             f"{self.info['num_persons']} bodies; {self.store.path} holds "
                             f"{store_layout.name} with {bodies} bodies")

    def part(self, part: str) -> np.ndarray:
        """The store indices of the protocol's ``train`` or ``val`` part."""
        return self.store.split(f"{self.protocol}/{part}")

    @property
    def label(self) -> str:
        """The encoder in words, for progress: ``<run> <encoder name>``."""
        return f"{self.name} {self.key}"

    def labels(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.store.meta(["label"])["label"][indices]).long()

    @property
    def num_classes(self) -> int:
        return int(self.store.attr("num_classes"))

    def sequences(self, indices: np.ndarray) -> Samples:
        """The real variable-length sequences and labels of store ``indices``, for crops."""
        return training_samples(self.store, indices, (), sequences=True)

    def features(self, part: str, device: torch.device, crop: Crop | None = None) -> Features:
        """The features of a split part: of the fixed-length view, or with ``crop`` of the
        centre crops of the real sequences."""
        indices = self.part(part)
        if crop is None:
            x = extract_features(self.module, self.store.take(self.view, indices), device,
                                 desc=f"{self.label} {part} features")
        else:
            x = crop_features(self.module, self.view, self.info["layout"],
                              self.sequences(indices), crop, device,
                              desc=f"{self.label} {part} features (centre crops)")
        return Features(x, self.labels(indices), indices)
