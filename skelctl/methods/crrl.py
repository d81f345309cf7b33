"""CRRL (Wang et al., TIP 2022): Contrast-Reconstruction Representation Learning.

Three parts, all on recurrent encoders over variable-length sequences (packed, Sec. IV-B):

* SER, the Sequence Reconstructor (Sec. III-A): a GRU decoder reconstructs the input from the
  encoder's first hidden state forwards and from its last hidden state in reverse; the loss is the
  squared distance of both (Eq. 1), per frame.
* CML, the Contrastive Motion Learner (Sec. III-B): MoCo between coordinates (query encoder) and
  velocities (key encoder, Eq. 2), temporal average pooling, a queue of 64, temperature 0.1, key
  encoder momentum 0.999 and a key MLP that is never updated (m_mlp = 1.0, Table XII).
* INF, the Information Fuser (Sec. III-C): the frozen CML encoder teaches SER's encoder; a two-layer
  MLP maps the student's pooled state onto the teacher's, ``L = L_r + 0.1 L_d`` with ``L_d`` the
  squared distance (Eqs. 7, 8).

``student`` and ``fusion`` express every strategy of Table VIII: ``fusion: none`` trains the
student's objective alone (CML, SER); ``joint`` one encoder on both losses (CML-SER-joint);
``pretrain`` trains the other objective first and the student continues from those weights
(CML-pretrain-SER with student ser, SER-pretrain-CML with student cml); ``distill`` trains the other
objective's encoder first, freezes it and distils it into the student (CRRL with student ser,
SER-distill-CML with student cml). The first step is a phase of the same run with its own schedule
(``first``), as Algorithm 1 trains CML and then SER in one procedure, or another run's exported
encoder (:meth:`CRRL.start_from`: CRRL's teacher is then the ``cml`` run, trained once for every
row of Table VIII that needs it). ``directions`` gives the
forward-only and reverse-only SER of Table X; ``key_input: coordinate`` with ``key_augment`` the
coordinate-coordinate contrast of Table IX. ``velocity_scale: sequence`` scales each sequence's
velocities to the root mean square of its coordinates (the paper's Eq. 2 does not scale them).

The teacher's features are taken in evaluation mode (no dropout), so the distillation target of a
sample does not change from step to step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from skelctl.augment import AugmentChain, compose
from skelctl.methods.base import Method, OptionsError, Phase
from skelctl.methods.losses import info_nce
from skelctl.options import (Check, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt,
                             check_mapping)
from skelctl.methods.moco import MomentumContrast, gather_from_all_ranks
from skelctl.models.rnn import RecurrentEncoder, run_recurrence, sequence_lengths, step_mask
from skelctl.skeletons import Layout

Objective = Literal["cml", "ser"]
Fusion = Literal["none", "joint", "pretrain", "distill"]
Direction = Literal["forward", "reverse"]
OBJECTIVES, FUSIONS, DIRECTIONS = get_args(Objective), get_args(Fusion), get_args(Direction)


def some_direction(value: list[str], path: str) -> None:
    if not value:
        raise OptionsError(f"{path}: expected some of {', '.join(DIRECTIONS)}, found none")


# the first step's schedule (``first``): some of these keys, the others from its defaults
FIRST_STEP = {"epochs": PositiveInt, "lr": PositiveFloat, "lr_steps": list[PositiveInt],
              "lr_gamma": PositiveFloat}
FirstStep = Annotated[dict[str, Any],
                      Check(lambda value, path: check_mapping(value, FIRST_STEP, path))]


@dataclass
class CRRLOptions:
    student: Objective = "ser"       # the exported encoder's objective: ser or cml
    fusion: Fusion = "distill"       # none, joint, pretrain or distill (Table VIII)
    # the first step of pretrain/distill, which trains the other objective (CML on NW-UCLA:
    # 100 epochs at 0.01, Sec. IV-B); the run's `train` is the student's step
    first: FirstStep = field(default_factory=lambda: {
        "epochs": 100, "lr": 0.01, "lr_steps": [], "lr_gamma": 0.5})
    # SER
    directions: Annotated[list[Direction], Check(some_direction)] = field(default_factory=lambda: list(DIRECTIONS))
    decoder_hidden: PositiveInt = 256
    decoder_layers: PositiveInt = 2
    decoder_dropout: Fraction = 0.2
    # the paper's decoder: GRUs of decoder_hidden units and a linear read-out; false: the authors'
    # code, a GRU whose hidden state is the reconstruction (as many units as coordinates)
    decoder_readout: bool = True
    # CML. The paper gives no MLP sizes: the authors' 512 -> 512 -> 512 (on the 512-d pooled
    # feature of the 2 x 256 GRU) is the default
    feature_dim: PositiveInt = 512
    queue_size: PositiveInt = 64
    temperature: PositiveFloat = 0.1
    momentum: Fraction = 0.999          # key encoder
    projector_momentum: Fraction = 1.0  # key MLP: 1.0 never updates it (Table XII's best)
    projector_init_std: float | None = None
    # the key MLP its own random initialisation (the paper's "remain its random initialization",
    # the authors' code); false: a copy of the query MLP
    own_key_projector: bool = True
    # the run's grad_clip in the CML step too; the authors' code clips nothing
    cml_grad_clip: bool = False
    key_input: Literal["velocity", "coordinate"] = "velocity"  # velocity (CML) or coordinate (Table IX)
    # none: Eq. 2's velocities as they are (on NW-UCLA about a fifth of the coordinates' RMS);
    # sequence: each sequence's velocities scaled to the RMS of its own coordinates
    velocity_scale: Literal["none", "sequence"] = "none"
    key_augment: AugmentChain = field(default_factory=dict)
    # INF
    distill_weight: NonNegativeFloat = 0.1
    # the teacher's mode while it gives its targets: eval (no dropout; a fixed target per
    # sample) or train, as the authors' code leaves it (dropout on)
    teacher_mode: Literal["eval", "train"] = "eval"


def velocity(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Eq. 2 on zero-padded ``(N, C, T, V, M)``: ``v^t = x^{t+1} - x^t`` inside each sequence and
    the last frame repeats the one before it; zero after each sequence's length."""
    t = x.shape[2]
    steps = torch.arange(t, device=x.device)[None]
    lengths = lengths.to(x.device)[:, None]
    diff = torch.zeros_like(x)
    diff[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    last = (lengths - 2).clamp(min=0)  # the frame whose velocity the last one repeats
    source = torch.where(steps == lengths - 1, last, steps)  # (N, T)
    index = source[:, None, :, None, None].expand_as(x)
    v = diff.gather(2, index)
    valid = (steps < lengths) & (lengths > 1)
    return v * valid[:, None, :, None, None]


def rms_matched(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``v`` ``(N, ...)`` scaled per sample so that its root mean square equals ``x``'s (both
    zero after each sequence's length, so the ratio of their sums of squares is the ratio of
    their mean squares over the real frames); a sample whose ``v`` is all zero stays zero."""
    v_square = v.pow(2).flatten(1).sum(dim=1)
    x_square = x.pow(2).flatten(1).sum(dim=1)
    scale = torch.where(v_square > 0, x_square / v_square.clamp(min=1e-30), 0.0).sqrt()
    return v * scale.view(-1, *[1] * (v.dim() - 1))


def reverse_within(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(N, T, D)`` with each sample's first ``lengths`` steps reversed (padding stays put)."""
    t = seq.shape[1]
    steps = torch.arange(t, device=seq.device)[None]
    lengths = lengths.to(seq.device)[:, None]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return seq.gather(1, index[..., None].expand_as(seq))


class SequenceDecoder(nn.Module):
    """SER's decoder: a unidirectional GRU fed the repeated hint state. With ``readout`` (the
    paper, Sec. IV-B) its ``hidden`` units are read out by a linear layer; without, as in the
    authors' code, the GRU has ``out_dim`` units and its state is the reconstruction, bounded to
    (-1, 1) like the min-max scaled input."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, layers: int, dropout: float,
                 readout: bool = True):
        super().__init__()
        self.rnn = nn.GRU(in_dim, hidden if readout else out_dim, num_layers=layers,
                          batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.readout = nn.Linear(hidden, out_dim) if readout else nn.Identity()

    def forward(self, hints: torch.Tensor, t: int, lengths: torch.Tensor) -> torch.Tensor:
        """``(N, H)`` hints to ``(N, T, out_dim)`` reconstructions (packed to ``lengths``)."""
        repeated = hints[:, None].expand(-1, t, -1).contiguous()
        return self.readout(run_recurrence(self.rnn, repeated, lengths))


def reconstruction_loss(decoder: SequenceDecoder, steps: torch.Tensor, target: torch.Tensor,
                        lengths: torch.Tensor, directions: list[str]) -> torch.Tensor:
    """Eq. 1: the squared distance ``||x - x_hat||^2`` of each direction, summed over a frame's
    coordinates, averaged over the real frames and the batch (the authors' variable-length
    MSE), and summed over directions. ``steps`` are the encoder's ``(N, T, H)`` outputs,
    ``target`` ``(N, T, D)``. Both directions go through the decoder as one batch."""
    n, t = target.shape[:2]
    device_lengths = lengths.to(steps.device)
    hints, targets = [], []
    if "forward" in directions:  # from the first state (Fig. 3, Algorithm 1 line 24)
        hints.append(steps[:, 0])
        targets.append(target)
    if "reverse" in directions:  # from the last real state, the sequence read backwards
        hints.append(steps[torch.arange(n, device=steps.device), device_lengths - 1])
        targets.append(reverse_within(target, lengths))
    out = decoder(torch.cat(hints), t, lengths.repeat(len(hints)))
    valid = step_mask(device_lengths, t).repeat(len(hints), 1)[..., None]
    per_sequence = ((out - torch.cat(targets)) ** 2 * valid).sum(dim=(1, 2))
    return (per_sequence / lengths.repeat(len(hints)).to(per_sequence)).sum() / n


class CRRL(Method):
    """SER, CML and their fusions on one recurrent encoder per objective (see the module)."""

    title = "CRRL"  # its name in the tables
    Options = CRRLOptions

    def __init__(self, streams: tuple[str, ...], layout: Layout,
                 build_encoder: Callable[[], nn.Module], options: CRRLOptions):
        super().__init__(streams, layout, build_encoder, options)
        self.inputs = (self.streams[0],)
        self.encoder = build_encoder()
        if not isinstance(self.encoder, RecurrentEncoder):
            raise OptionsError("CRRL needs a recurrent encoder (gru, bigru or lstm), not "
                               f"{type(self.encoder).__name__}")
        self.other = "cml" if options.student == "ser" else "ser"
        self.teacher = build_encoder() if options.fusion == "distill" else None
        self.key_augment = compose(options.key_augment, layout)
        if options.velocity_scale != "none" and options.key_input != "velocity":
            raise OptionsError(f"velocity_scale {options.velocity_scale} scales CML's velocity "
                               f"key input; key_input {options.key_input} has none (use "
                               f"velocity_scale: none)")
        # which encoder each objective trains
        owners = {options.student: self.encoder}
        if options.fusion in ("joint", "pretrain"):
            owners[self.other] = self.encoder
        elif options.fusion == "distill":
            owners[self.other] = self.teacher
        self.objectives = tuple(owners)
        self.contrast = self.decoder = None
        if "cml" in owners:
            self.contrast = MomentumContrast(owners["cml"], options.feature_dim, options.queue_size,
                                             options.momentum, options.projector_momentum,
                                             options.projector_init_std,
                                             options.own_key_projector)
        if "ser" in owners:
            width = self.encoder.rnn.input_size
            self.decoder = SequenceDecoder(self.encoder.out_dim, width, options.decoder_hidden,
                                           options.decoder_layers, options.decoder_dropout,
                                           options.decoder_readout)
            self.ser_encoder = owners["ser"]
        if self.teacher is not None:
            dim = self.encoder.out_dim
            self.distill_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                              nn.Linear(dim, self.teacher.out_dim))
        # set once the key encoder has been copied from a query encoder trained by SER first
        self.register_buffer("key_synced", torch.zeros((), dtype=torch.bool))
        self.started_from: str | None = None  # the run whose encoder is the first step

    def start_from(self, encoders: dict[str, nn.Module], run: str) -> None:
        """The other objective's encoder taken from ``run`` (the first step's result): the
        teacher under distillation, the student's starting weights under pretrain."""
        if self.options.fusion not in ("pretrain", "distill"):
            raise OptionsError(f"CRRL with fusion {self.options.fusion} has no first step to "
                               f"take from run {run!r} (pretrain and distill have one)")
        target = self.teacher if self.teacher is not None else self.encoder
        target.load_state_dict(encoders[self.streams[0]].state_dict())
        self.started_from = run

    def encoders(self) -> dict[str, nn.Module]:
        return {self.streams[0]: self.encoder}

    def objective_parameters(self, objective: str) -> list[nn.Parameter]:
        if objective == "cml":
            return [*self.contrast.encoder_q.parameters(), *self.contrast.projector_q.parameters()]
        return [*self.ser_encoder.parameters(), *self.decoder.parameters()]

    def phases(self, epochs: int, lr: float, lr_steps: list[int], lr_gamma: float,
               momentum: float, weight_decay: float) -> list[Phase]:
        # CML alone is not clipped unless cml_grad_clip (the authors' code clips nothing)
        clips = {o: o == "ser" or self.options.cml_grad_clip for o in OBJECTIVES}
        if self.options.fusion in ("none", "joint"):
            return [Phase(epochs, lr, list(lr_steps), lr_gamma, momentum, weight_decay,
                          clip=any(clips[o] for o in self.objectives))]
        first = {"lr_steps": [], "lr_gamma": 0.5, **self.options.first}
        student = self.options.student

        def first_parameters(model: nn.Module) -> list[dict[str, Any]]:
            return [{"params": model.objective_parameters(model.other)}]

        def student_parameters(model: nn.Module) -> list[dict[str, Any]]:
            params = model.objective_parameters(student)
            if model.teacher is not None:
                params += list(model.distill_head.parameters())
            return [{"params": params}]

        phases = [Phase(self.first_epochs(), float(first["lr"]), list(first["lr_steps"]),
                        float(first["lr_gamma"]), momentum, weight_decay, name=self.other,
                        parameters=first_parameters, clip=clips[self.other]),
                  Phase(epochs, lr, list(lr_steps), lr_gamma, momentum, weight_decay,
                        name=student, parameters=student_parameters, clip=clips[student])]
        return [phase for phase in phases if phase.epochs > 0]

    def active(self, epoch: int) -> tuple[str, ...]:
        """The objectives trained at ``epoch``."""
        if self.options.fusion in ("none", "joint"):
            return self.objectives
        return (self.other,) if epoch < self.first_epochs() else (self.options.student,)

    def first_epochs(self) -> int:
        """The first step's epochs in this run: none when another run trained it."""
        return 0 if self.started_from is not None else int(self.options.first["epochs"])

    def contrastive_loss(self, x: torch.Tensor, lengths: torch.Tensor,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 6 and the query encoder's pooled features (the student's, under distillation)."""
        moco = self.contrast
        if self.options.fusion == "pretrain" and self.other == "ser" \
                and not bool(self.key_synced):
            # SER-pretrain-CML: the key encoder starts as a copy of the pretrained query encoder
            # (Algorithm 1, line 2)
            moco.encoder_k.load_state_dict(moco.encoder_q.state_dict())
            self.key_synced.fill_(True)
        pooled = moco.encoder_q(x, lengths)
        q = F.normalize(moco.projector_q(pooled), dim=1)
        moco.momentum_update()
        if self.options.key_input == "velocity":
            key_in = velocity(x, lengths)
            if self.options.velocity_scale == "sequence":
                key_in = rms_matched(key_in, x)
        else:
            valid = step_mask(lengths.to(x.device), x.shape[2])
            key_in = self.key_augment(x, generator) * valid[:, None, :, None, None]
        with torch.no_grad():
            k = F.normalize(moco.projector_k(moco.encoder_k(key_in, lengths)), dim=1)
        loss = info_nce((q * k).sum(dim=1), moco.similarities(q), self.options.temperature)
        moco.enqueue(gather_from_all_ranks(k))
        return loss, pooled

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                epoch: int) -> dict[str, torch.Tensor]:
        x = batch[self.streams[0]]
        lengths = sequence_lengths(x)
        losses: dict[str, torch.Tensor] = {}
        active = self.active(epoch)
        total = x.new_zeros(())
        if "cml" in active:
            losses["contrast"], pooled = self.contrastive_loss(x, lengths, generator)
            total = total + losses["contrast"]
        if "ser" in active:
            encoder = self.ser_encoder
            steps = encoder.features(x, lengths)
            target = encoder.flatten(x)
            losses["reconstruction"] = reconstruction_loss(self.decoder, steps, target, lengths,
                                                           self.options.directions)
            total = total + losses["reconstruction"]
        if self.teacher is not None and self.options.student in active:
            student = self.encoder.pool(steps, lengths) if self.options.student == "ser" \
                else pooled
            self.teacher.train(self.options.teacher_mode == "train")
            with torch.no_grad():
                target = self.teacher(x, lengths)
            # Eq. 7: the squared distance, summed over the features, averaged over the batch
            losses["distill"] = ((self.distill_head(student) - target) ** 2).sum(dim=1).mean()
            total = total + self.options.distill_weight * losses["distill"]
        return {"loss": total, **{name: value.detach() for name, value in losses.items()}}
