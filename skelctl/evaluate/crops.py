"""ISC's temporal crops for evaluation (Thoker et al. 2021, ``feeder/augmentations.py``
``crop_subsequence``): the model sees each sample's real variable-length sequence, cropped and
resized to a fixed number of frames, never the store's fixed-length view.

- training: a random crop of ``floor(U(low, high) * n)`` frames of a sequence of ``n`` (at least
  ``min_frames``, at most ``n``) at a uniform start, drawn afresh every epoch;
- test (and KNN's both sides): the centre, ``start = floor((1 - ratio) * n / 2)`` frames off each
  end (ISC's ``int((1 - p) * n / 2)``, so the crop keeps ``n - 2 * start`` frames);

both resized to ``frames`` by linear interpolation (``align_corners=False``), with
:func:`skelctl.augment.crop_resize` and :func:`skelctl.augment.centre_crop_resize`. The input view
(motion, bone...) is derived from the cropped joints.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from skelctl.data.views import compute_view
from skelctl.evaluate.features import FEATURE_LINES
from skelctl.settings import Crop
from skelctl.skeletons import Layout
from skelctl.train import Progress, Samples, step_generator


def batches(samples: Samples, batch_size: int = 256
            ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(step, sequence, length)`` of ``samples`` in order, ``batch_size`` at a time, on the
    samples' device."""
    if samples.frames is None:
        raise ValueError("crops need the real sequences: samples without frames")
    device = samples.offsets.device
    for step, start in enumerate(range(0, len(samples), batch_size)):
        batch = samples.batch(torch.arange(start, min(start + batch_size, len(samples)),
                                           device=device))
        yield step, batch["sequence"], batch["length"]


@torch.no_grad()
def centre_crops(samples: Samples, crop: Crop, batch_size: int = 256) -> torch.Tensor:
    """The centre crops of every sample's sequence ``(N, C, frames, V, M)``, on the CPU."""
    return torch.cat([crop.centre(sequence, length).cpu()
                      for _, sequence, length in batches(samples, batch_size)])


@torch.no_grad()
def crop_features(encoder: nn.Module, view: str, layout: Layout, samples: Samples, crop: Crop,
                  device: torch.device, epoch: int | None = None, seed: int = 0,
                  batch_size: int = 256, desc: str | None = None) -> torch.Tensor:
    """``(N, D)`` pre-projector features of the crops of ``samples``' sequences, the encoder in
    eval mode, on the CPU: the centre crops, or with ``epoch`` a random crop of each sample,
    drawn from (``seed``, ``epoch``, batch), so an epoch's crops are reproducible and every
    epoch's differ. With ``desc``, progress as :func:`~skelctl.evaluate.features.extract_features`
    shows it."""
    was_training = encoder.training
    encoder.eval().to(device)
    out = []
    with Progress(len(samples) if desc else 0, desc or "", "sample",
                  every=-(-len(samples) // FEATURE_LINES)) as shown:
        for step, sequence, length in batches(samples, batch_size):
            sequence, length = sequence.to(device), length.to(device)
            joint = (crop.centre(sequence, length) if epoch is None else
                     crop.random(sequence, length, step_generator(seed, epoch, step, 0, device)))
            out.append(encoder(compute_view(view, joint, layout)).float().cpu())
            if desc:
                shown.step(len(length))
    encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, getattr(encoder, "out_dim", 0)))
