"""STARS: a masked-prediction encoder tuned by nearest-neighbour contrast (Mehraban et al., 2024,
``TaatiTeam/STARS``).

A run of it continues a ``mamp`` run (an entry of ``continued`` with ``start: <mamp run>``): the
MAMP-trained transformer is tuned for a few epochs by NNCLR. Each sample's mean-pooled feature
goes through a projector (a batch norm) and a predictor (Linear 256 -> 4,096 without bias, batch
norm, ReLU, Linear 4,096 -> 256); the unit-length projections fill a support queue (32,768,
FIFO), each sample's nearest neighbour in it (its own earlier entries excluded) is the positive
of the other copy's prediction, against the batch's other predictions (temperature 0.07), both
ways averaged. Only the second half of the blocks, the final norm and the heads train (the
code's ``third_stage``; ``tuned_blocks: all`` is its ``fully_tune``, every block but never the
embeddings), block i at
``lr * layer_decay ** (depth - i)`` (the run's ``train.layer_decay``, 0.45).

Settings of the authors' ``clrtuning_*`` configs and code: AdamW, lr 1e-3 constant for 10
epochs, betas (0.9, 0.95); the input is the whole real sequence resized to the encoder's 120
frames (``p_interval [1.0]``) and no augmentation, so the two copies are the same sequence (the
negatives and the neighbour differ, not the views); a chain in ``augment`` makes them differ.
Where the code departs from its configs (docs/methods/stars.md): its NNCLR declares a momentum
0.999 but has no momentum encoder (both copies go through the one encoder, as here); AdamW is
built without the config's weight decay 0.05, so torch's 0.01 applies to every parameter (here
the run's ``weight_decay``, none on biases and norm weights); gradients are clipped per
parameter at norm 3 (here the run's ``grad_clip`` bounds their total norm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from skelctl.augment import AugmentChain
from skelctl.data.views import compute_view
from skelctl.methods.base import EncoderFactory, Method, Phase
from skelctl.methods.losses import nnclr_loss
from skelctl.methods.mamp import sequence_chain, transformer_of
from skelctl.methods.moco import gather_from_all_ranks
from skelctl.options import PositiveFloat, PositiveInt
from skelctl.skeletons import Layout


def whole_sequence() -> dict[str, dict[str, object]]:
    """STARS' input (``p_interval [1.0]``): every real frame, resized to the encoder's frames."""
    return {"crop_resize": {"min_ratio": 1.0, "max_ratio": 1.0, "min_frames": 1}}


@dataclass
class STARSOptions:
    queue_size: PositiveInt = 32768
    temperature: PositiveFloat = 0.07
    predictor_hidden: PositiveInt = 4096
    # second_half: the code's third stage (blocks depth/2 on, the final norm and the heads);
    # all: its fully_tune (every block; the patch and position embeddings stay as MAMP left them)
    tuned_blocks: Literal["second_half", "all"] = "second_half"
    augment: AugmentChain = field(default_factory=whole_sequence)


class STARS(Method):
    title = "STARS"  # its name in the tables
    Options = STARSOptions
    inputs: tuple[str, ...] = ()
    sequences = True

    def __init__(self, streams: tuple[str, ...], layout: Layout, build_encoder: EncoderFactory,
                 options: STARSOptions):
        super().__init__(streams, layout, build_encoder, options)
        self.encoder = encoder = transformer_of(build_encoder, "STARS tunes")
        self.augment = sequence_chain(options.augment, encoder, layout)
        dim = encoder.out_dim
        self.projector = nn.BatchNorm1d(dim)
        self.predictor = nn.Sequential(
            nn.Linear(dim, options.predictor_hidden, bias=False),
            nn.BatchNorm1d(options.predictor_hidden), nn.ReLU(),
            nn.Linear(options.predictor_hidden, dim))
        # the authors' initialisation of the model before MAMP's weights load over the encoder:
        # Linear weights N(0, 0.02) and biases 0, batch-norm weights N(1, 0.02)
        for module in (self.projector, *self.predictor):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm1d):
                nn.init.normal_(module.weight, 1.0, 0.02)
        self.register_buffer("queue", F.normalize(torch.randn(options.queue_size, dim), dim=1))
        # the sample each entry came from (-1: none yet), so a sample is not its own neighbour
        self.register_buffer("queue_ids", torch.full((options.queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.started_from: str | None = None

    def encoders(self) -> dict[str, nn.Module]:
        return {self.streams[0]: self.encoder}

    def start_from(self, encoders: dict[str, nn.Module], run: str) -> None:
        """The transformer a ``mamp`` run trained is the one tuned here."""
        self.encoder.load_state_dict(encoders[self.streams[0]].state_dict())
        self.started_from = run

    def tuned_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        """The parameters STARS trains: the heads, the final norm and the second half of the
        blocks (every block with ``tuned_blocks: all``; the embeddings never, as in the code)."""
        encoder = model.encoder
        first = 0 if self.options.tuned_blocks == "all" else len(encoder.blocks) // 2
        tuned = [*encoder.blocks[first:].parameters(), *encoder.norm.parameters()]
        return [{"params": [*tuned, *model.projector.parameters(),
                            *model.predictor.parameters()]}]

    def phases(self, epochs: int, lr: float, lr_steps: list[int], lr_gamma: float,
               momentum: float, weight_decay: float) -> list[Phase]:
        return [Phase(epochs, lr, list(lr_steps), lr_gamma, momentum, weight_decay,
                      parameters=self.tuned_parameters)]

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length predictions and projections of an input ``(N, C, T, V, M)``."""
        projection = self.projector(self.encoder(x))
        return (F.normalize(self.predictor(projection), dim=1),
                F.normalize(projection, dim=1))

    @torch.no_grad()
    def neighbours(self, projections: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Each projection's most similar queue entry, its own sample's entries excluded."""
        similarity = projections @ self.queue.T
        similarity[self.queue_ids[None, :] == ids[:, None]] = -1.0
        return self.queue[similarity.argmax(dim=1)]

    @torch.no_grad()
    def enqueue(self, projections: torch.Tensor, ids: torch.Tensor) -> None:
        projections, ids = gather_from_all_ranks(projections), gather_from_all_ranks(ids)
        size = len(self.queue)
        projections, ids = projections[-size:], ids[-size:]
        index = (self.queue_ptr + torch.arange(len(ids), device=ids.device)) % size
        self.queue[index] = projections.detach().to(self.queue.dtype)
        self.queue_ids[index] = ids
        self.queue_ptr.copy_((self.queue_ptr + len(ids)) % size)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        sequence, lengths = batch["sequence"].float(), batch["length"]
        copies = [compute_view(self.streams[0], self.augment(sequence, generator, lengths=lengths),
                               self.layout) for _ in range(2)]
        first = self.embed(copies[0])
        # the same input twice (the configs' default) gives the same output: computed once
        second = first if torch.equal(copies[0], copies[1]) else self.embed(copies[1])
        ids = batch["index"]
        loss = (nnclr_loss(self.neighbours(second[1], ids), first[0], self.options.temperature)
                + nnclr_loss(self.neighbours(first[1], ids), second[0],
                             self.options.temperature)) / 2
        self.enqueue(first[1], ids)
        return {"loss": loss}
