"""PCM3: prompted contrast with masked motion modeling (Zhang, Lin and Liu, ACM MM 2023).

MoCo on ISC's causal sequence encoder (``bigru``; the authors add a batch norm on the input,
``encoder_options: {input_norm: true}``), reading each sample's real frames as ISC does
(``sequences = True``). Three views per sample: the query and the key (ISC's chain: crop-resize
to 64 frames, then shear or joint corruption) and a third one (crop-resize, then shear), which is
masked. Four positives share the key and the queue (Eq. 5), each with InfoNCE (Eq. 1) and the
relational distillation (Eq. 3):

- *intra*: the query;
- *mix*: the query batch mixed with itself rolled by a random offset (CutMix, ResizeMix or Mixup
  over body parts x chunks of frames, Sec. 3.1); its key is the key mixed the same way, with
  lambda the fraction of the (frame x joint) cells taken from the partner (Eq. 2);
- *mask*: the masked view (topology-based masking, Sec. 3.2: in each temporal chunk some of the
  layout's five body parts of the first body zeroed);
- *predict*: the masked view with the decoder's prediction written into the masked region.

The masking and the mix are batch functions of :mod:`skelctl.augment` (``body_part_mask``,
``random_cell_mask``, ``mask_first_body``, ``mix_with_rolled_batch``), which return the mask and
the partners the losses read.

The decoder reads the masked view's per-step features (an adapter Linear-BN-ReLU-Linear, a 2-layer
GRU, a per-frame read-out of the frame's coordinates) and is trained by the masked-region MSE
(Eq. 4, x40). Gradient paths as Sec. 3.3 states them: the MSE reaches the encoder through the
masked view; the predicted view's contrastive gradient reaches the decoder (and the encoder only
through the re-encoding of the predicted view), not the masked branch's features, which the
decoder reads detached for that pass (the authors' second, detached decoder pass).

Prompts (Sec. 3.4) are parameters of this module, never of the exported encoder: domain prompts
(one per view, the size of a flattened frame) added to the inputs (the encoder's ``prompt``
argument), and task prompts (``cl`` before the projector, ``mp`` before the decoder) added, as
two halves, at a random offset to each half of the feature (the two directions of a
bidirectional encoder). ``prompts: authors`` places
them as the authors' code does: the domain prompts before the encoder's input batch norm and
``mp`` before the adapter's batch norm, where a batch norm in training mode removes a constant
shift exactly, so those five prompts are inert (zero gradient) and only ``cl`` acts.
``prompts: active`` adds the domain prompts after the input batch norm and ``mp`` after the
adapter's batch norm, where each can act; ``none`` has no prompts. ``woprompt: true`` is the
authors' variant for the motion and bone streams: no prompts, no distillation, and the predicted
view detached (no contrastive gradient into the decoder).

Settings from the authors' code where the paper is silent (shared notes, section 11): the views
above; 3 of 5 parts in each chunk of 8 frames, one draw for the whole batch; the mix region of
2-3 parts x 7-11 chunks of 4 frames, CutMix / ResizeMix / Mixup with probabilities 0.5 / 0.25 /
0.25, one draw per batch, the partner the batch rolled by a random offset in [1, N - 2]; ResizeMix
pastes the partner's first ``2 x`` region length frames, nearest-resized to the region; the
distillation over the whole queue (``batchmean`` KL, the mixed key as the mix term's teacher);
the MSE divided by the number of masked coordinates; projectors with PyTorch's initialisation;
momentum 0.999; queue 16,384; prompts Xavier-initialised, task prompts 256 wide.

Where the code and the paper part, and what this module does:

- Prompt placement: the paper says each prompt guides its view or task; the code's placement
  makes five of six inert. Both are offered; the default is the code's until a real-data
  measurement decides (docs/methods/pcm3.md).
- Task prompt width: the paper's r = 128 of d = 1024 is the code's 256-wide prompt as two
  128-wide halves, one per 1024-d direction: the same. The code draws the offset with
  ``randint(0, 1024 - 128 - 1)``, never using the last one; here every offset can be drawn. A
  prompt is at most as wide as the feature it decorates (a narrow encoder), which the code cannot
  run.
- Eq. 3 writes the cross-entropy ``-p log q``; this is the code's KL divergence, which differs
  by the teacher's entropy (no gradient) and is 0 when the distributions agree.
- Eq. 4 and the text call the masked-region loss an MSE: the code's mean of the squared errors
  over the masked coordinates.
- The paper trains 450 epochs with the drop at 350; the run entries use the code's 451 and 351,
  as for ISC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from skelctl.augment import (AugmentChain, Mix, body_part_mask, body_part_matrix, compose,
                              isc_augmentations, mask_first_body, mix_with_rolled_batch,
                              random_cell_mask)
from skelctl.data.views import compute_view
from skelctl.methods.base import EncoderFactory, Method, OptionsError
from skelctl.methods.losses import divergence_loss, info_nce
from skelctl.methods.moco import ContrastOptions, gather_from_all_ranks, momentum_contrast
from skelctl.models.rnn import RecurrentEncoder
from skelctl.options import Check, NonNegativeFloat, PositiveFloat, PositiveInt, Range
from skelctl.skeletons import PART_NAMES, Layout

PromptPlacement = Literal["authors", "active", "none"]
MaskStrategy = Literal["topology", "random"]  # PCM3 Table 10
PROMPT_PLACEMENTS, MASK_STRATEGIES = get_args(PromptPlacement), get_args(MaskStrategy)
Positive = Literal["intra", "mix", "mask", "predict"]
POSITIVES = get_args(Positive)
DOMAIN_PROMPTS = ("base", "mask", "predict", "mix")  # base: the query and the key


def pcm3_mask_view() -> dict[str, dict[str, object]]:
    """The third (masked) view's chain in the authors' code: ISC's crop-resize, then always the
    shear with off-diagonals from U(-1, 1)."""
    return {"crop_resize": {"min_ratio": 0.1, "max_ratio": 1.0, "frames": 64, "min_frames": 64},
            "shear": {"amplitude": 1.0}}


def low_high(top: int | None) -> Check:
    """A ``[low, high]`` pair with ``1 <= low <= high`` (``<= top`` when given)."""
    def check(value: list[int], path: str) -> None:
        if len(value) != 2 or not 1 <= value[0] <= value[1] or (top and value[1] > top):
            raise OptionsError(f"{path}: expected [low, high] with 1 <= low <= high"
                               + (f" <= {top}" if top else "") + f", found {value}")
    return Check(check)


def some_nonzero(value: dict[str, float], path: str) -> None:
    if not value or not any(value.values()):
        raise OptionsError(f"{path}: expected some weight above 0, found {value}")


def even(value: int, path: str) -> None:
    if value % 2:
        raise OptionsError(f"{path}: expected an even number (two halves), found {value}")


@dataclass
class PCM3Options(ContrastOptions):
    queue_size: PositiveInt = 16384
    augment: AugmentChain = field(default_factory=isc_augmentations)
    mask_augment: AugmentChain = field(default_factory=pcm3_mask_view)
    projector_init_std: PositiveFloat | None = None  # the authors' projectors: PyTorch's init
    # topology-based masking: int(5 * mask_ratio) of the five parts in each chunk of frames
    # (1 to 5 of them); random (Table 10's comparison): round(mask_ratio * T * V) cells
    mask_strategy: MaskStrategy = "topology"
    mask_ratio: Annotated[float, Range(1 / len(PART_NAMES), 1)] = 0.6
    mask_chunk_frames: PositiveInt = 8
    # the mix positive: parts and chunks (of mix_chunk_frames frames) of the region, and the
    # chance of each kind of mix
    mix_parts: Annotated[list[int], low_high(len(PART_NAMES))] = field(
        default_factory=lambda: [2, 3])
    mix_chunks: Annotated[list[int], low_high(None)] = field(default_factory=lambda: [7, 11])
    mix_chunk_frames: PositiveInt = 4
    mix: Annotated[dict[Mix, NonNegativeFloat], Check(some_nonzero)] = field(
        default_factory=lambda: {"cutmix": 0.5, "resizemix": 0.25, "mixup": 0.25})
    # the loss: each positive's InfoNCE weight, the distillation's and the MSE's (Eq. 7)
    weights: Annotated[dict[Positive, float], Check(some_nonzero)] = field(
        default_factory=lambda: dict.fromkeys(POSITIVES, 1.0))
    kl_weight: float = 1.0
    mse_weight: float = 40.0
    teacher_temperature: PositiveFloat = 0.05
    student_temperature: PositiveFloat = 0.1
    # whether the predicted view's contrastive gradient reaches the decoder (Sec. 3.3)
    predict_gradient: bool = True
    prompts: PromptPlacement = "authors"
    # which prompts a run has (Table 9): domain (on the inputs) and task (on the features)
    prompt_kinds: list[Literal["domain", "task"]] = field(default_factory=lambda: ["domain", "task"])
    prompt_dim: Annotated[int, Range(2), Check(even)] = 256  # the task prompts' width r
    woprompt: bool = False    # the authors' motion/bone variant: no prompts, no KL, detached
    decoder_dim: PositiveInt = 512
    decoder_layers: PositiveInt = 2

    def __post_init__(self) -> None:
        if self.woprompt and self.prompts == "active":
            raise ValueError("woprompt runs without prompts: drop prompts: active")


def add_task_prompt(features: torch.Tensor, prompt: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """Add ``prompt`` ``(1, r)`` to a random r/2-wide slice of each half of ``features``
    ``(..., D)`` (one offset for both halves and the whole batch): the authors' task prompt,
    whose halves fall into the two directions of a bidirectional encoder's feature."""
    size = features.shape[-1]
    half, width = size // 2, prompt.shape[-1] // 2
    offset = int(torch.randint(0, half - width + 1, (1,), generator=generator,
                               device=features.device).item())
    shift = torch.cat([F.pad(prompt[:, :width], (offset, half - width - offset)),
                       F.pad(prompt[:, width:], (offset, size - half - width - offset))], dim=-1)
    return features + shift.to(features.dtype)


class Decoder(nn.Module):
    """The masked-prediction decoder on per-step features ``(N, T, D)``: an adapter
    Linear(D, 512)-BN-ReLU-Linear(512, 512), a GRU (2 layers of 512), and a per-frame read-out
    Linear(512, coordinates) to the frame's flattened coordinates ``(N, T, V * C * M)``.
    ``prompt`` (with its placement) is the ``mp`` task prompt."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 512, layers: int = 2):
        super().__init__()
        self.linear_in = nn.Linear(in_dim, width)
        self.norm = nn.BatchNorm1d(width)
        self.linear_out = nn.Linear(width, width)
        self.rnn = nn.GRU(width, width, num_layers=layers, batch_first=True)
        self.readout = nn.Linear(width, out_dim)

    def forward(self, steps: torch.Tensor, prompt: torch.Tensor | None = None,
                placement: str = "none", generator: torch.Generator | None = None
                ) -> torch.Tensor:
        n, t, d = steps.shape
        if prompt is not None and placement == "authors":
            steps = add_task_prompt(steps, prompt, generator)
        hidden = self.norm(self.linear_in(steps.reshape(n * t, d)))
        if prompt is not None and placement == "active":
            hidden = add_task_prompt(hidden, prompt, generator)
        hidden = self.linear_out(F.relu(hidden)).reshape(n, t, -1)
        return self.readout(self.rnn(hidden)[0])


class PCM3(Method):
    title = "PCM3"  # its name in the tables
    Options = PCM3Options
    inputs: tuple[str, ...] = ()
    sequences = True

    def __init__(self, streams: tuple[str, ...], layout: Layout, build_encoder: EncoderFactory,
                 options: PCM3Options):
        super().__init__(streams, layout, build_encoder, options)
        self.placement = "none" if options.woprompt else options.prompts
        # where the encoder adds the domain prompts: after its input batch norm for "active"
        self.prompt_after_norm = self.placement == "active"
        self.kl_weight = 0.0 if options.woprompt else options.kl_weight
        self.predict_gradient = options.predict_gradient and not options.woprompt
        self.augment = compose(options.augment, layout)
        self.mask_augment = compose(options.mask_augment, layout)
        self.register_buffer("parts", body_part_matrix(layout), persistent=False)
        encoder = build_encoder()
        if not isinstance(encoder, RecurrentEncoder):
            raise OptionsError("PCM3 needs a recurrent encoder (bigru, gru or lstm), not "
                               f"{type(encoder).__name__}")
        self.moco = momentum_contrast(encoder, options)
        coordinates = encoder.rnn.input_size  # V * C * M, a frame's flattened coordinates
        self.decoder = Decoder(encoder.out_dim, coordinates, options.decoder_dim,
                               options.decoder_layers)
        self.prompts = nn.ParameterDict()
        kinds = options.prompt_kinds if self.placement != "none" else ()
        for name in DOMAIN_PROMPTS if "domain" in kinds else ():
            self.prompts[name] = self.new_prompt((1, 1, coordinates))
        if "task" in kinds:
            # two equal halves, each at most half the feature it decorates
            self.prompts["cl"] = self.new_prompt((1, min(options.prompt_dim,
                                                         encoder.out_dim // 2 * 2)))
            mp_width = encoder.out_dim if self.placement == "authors" else options.decoder_dim
            self.prompts["mp"] = self.new_prompt((1, min(options.prompt_dim, mp_width // 2 * 2)))

    @staticmethod
    def new_prompt(shape: tuple[int, ...]) -> nn.Parameter:
        return nn.Parameter(nn.init.xavier_uniform_(torch.empty(shape)))

    def encoders(self) -> dict[str, nn.Module]:
        return {self.streams[0]: self.moco.encoder_q}

    # --- pieces ---------------------------------------------------------------------------

    def copy(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
             augment: Any) -> torch.Tensor:
        """An augmented copy of the batch's real sequences, as the run's stream."""
        joint = augment(batch["sequence"], generator, lengths=batch["length"])
        return compute_view(self.streams[0], joint, self.layout)

    def prompt(self, name: str) -> torch.Tensor | None:
        return self.prompts[name] if name in self.prompts else None

    def project(self, feature: torch.Tensor, projector: nn.Module,
                generator: torch.Generator) -> torch.Tensor:
        """The unit embedding of a pooled feature, with the ``cl`` task prompt."""
        if "cl" in self.prompts:
            feature = add_task_prompt(feature, self.prompts["cl"], generator)
        return F.normalize(projector(feature), dim=1)

    def embed(self, x: torch.Tensor, prompt: str, generator: torch.Generator) -> torch.Tensor:
        """The query side's unit embedding of ``x``, read with the domain prompt ``prompt``."""
        feature = self.moco.encoder_q(x, prompt=self.prompt(prompt),
                                      prompt_after_norm=self.prompt_after_norm)
        return self.project(feature, self.moco.projector_q, generator)

    @torch.no_grad()
    def key(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        feature = self.moco.encoder_k(x, prompt=self.prompt("base"),
                                      prompt_after_norm=self.prompt_after_norm)
        return self.project(feature, self.moco.projector_k, generator)

    def predict(self, steps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The decoder's prediction of every coordinate, ``(N, C, T, V, M)``, from per-step
        features."""
        n, t = steps.shape[:2]
        out = self.decoder(steps, self.prompt("mp"), self.placement, generator)
        # the flattened (V, C, M) order of RecurrentEncoder.flatten, undone
        v, m = self.layout.num_joints, self.moco.encoder_q.num_persons
        return out.reshape(n, t, v, -1, m).permute(0, 3, 1, 2, 4)

    def predicted_view(self, steps: torch.Tensor, masked: torch.Tensor, mask: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
        """The predict positive's input: the decoder's prediction inside the mask, the masked
        input elsewhere. The decoder reads the features detached, so this view's contrastive
        gradient reaches the decoder but not the masked branch's features (Sec. 3.3); without
        ``predict_gradient`` the whole view is detached."""
        prediction = self.predict(steps.detach(), generator)
        if not self.predict_gradient:
            prediction = prediction.detach()
        return torch.where(mask, prediction, masked)

    def distill(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Eq. 3: KL between the teacher's and the student's similarity distributions over the
        queue (teacher temperature 0.05, student 0.1)."""
        return divergence_loss(self.moco.similarities(teacher) / self.options.teacher_temperature,
                               self.moco.similarities(student) / self.options.student_temperature)

    # --- the step ---------------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        o = self.options
        x_q = self.copy(batch, generator, self.augment)
        x_k = self.copy(batch, generator, self.augment)
        x_m = self.copy(batch, generator, self.mask_augment)
        t = x_m.shape[2]
        if o.mask_strategy == "random":
            cells = random_cell_mask(1, t, self.parts.shape[1], o.mask_ratio, generator,
                                     x_m.device)
        else:
            cells = body_part_mask(self.parts, 1, t, int(len(PART_NAMES) * o.mask_ratio),
                                   o.mask_chunk_frames, generator)
        masked, mask = mask_first_body(x_m, cells)
        x_mix, partner, lam = mix_with_rolled_batch(x_q, generator, self.parts,
                                                    tuple(o.mix_parts), tuple(o.mix_chunks),
                                                    o.mix_chunk_frames, o.mix)

        # a positive of weight 0 (Table 8's ablations) is not computed, nor the masked
        # prediction when neither the MSE nor the predict positive needs it
        weights = {name: float(o.weights.get(name, 1.0)) for name in POSITIVES}
        used = [name for name in POSITIVES if weights[name]]
        encoder = self.moco.encoder_q
        z = {"intra": self.embed(x_q, "base", generator)} if "intra" in used else {}
        if {"mask", "predict"} & set(used) or o.mse_weight:
            lengths = encoder.lengths(masked)
            steps = encoder.features(masked, lengths, prompt=self.prompt("mask"),
                                     prompt_after_norm=self.prompt_after_norm)
            if "mask" in used:
                z["mask"] = self.project(encoder.pool(steps, lengths), self.moco.projector_q,
                                         generator)
            if o.mse_weight:
                prediction = self.predict(steps, generator)  # the MSE's pass reaches the encoder
            if "predict" in used:
                z["predict"] = self.embed(self.predicted_view(steps, masked, mask, generator),
                                          "predict", generator)
        if "mix" in used:
            z["mix"] = self.embed(x_mix, "mix", generator)

        self.moco.momentum_update()
        k = self.key(x_k, generator)
        k_mix = F.normalize((1 - lam) * k + lam * k[partner], dim=1)
        keys = {name: k_mix if name == "mix" else k for name in POSITIVES}

        losses = {name: info_nce((z[name] * keys[name]).sum(dim=1),
                                 self.moco.similarities(z[name]), o.temperature)
                  for name in used}
        total = sum(weights[name] * losses[name] for name in used)
        if self.kl_weight:
            losses["kl"] = sum(self.distill(z[name], keys[name]) for name in used)
            total = total + self.kl_weight * losses["kl"]
        if o.mse_weight:
            target = x_m.detach()
            losses["mse"] = ((prediction - target) ** 2 * mask).sum() / mask.sum().clamp(min=1)
            total = total + o.mse_weight * losses["mse"]
        self.moco.enqueue(gather_from_all_ranks(k))
        return {"loss": total, **{name: v.detach() for name, v in losses.items()}}
