"""The one training loop, for self-supervised pretraining and supervised fine-tuning alike.

Data: the samples of the training split held in memory (:class:`Samples`: the views a model asks
for, 1.2 GB for NTU-60 joints at 50 frames; labels; store indices; optionally the real
variable-length frames as one ragged array) and fed in seeded random batches of dicts; models
augment and derive their views on the device. Training runs in phases (:class:`Phase`), each with
its own optimiser, schedule and trainable parameters; the run's :class:`TrainConfig` chooses SGD,
Adam or AdamW, the per-epoch step schedule or the per-step warmup and cosine, and layer-wise
learning-rate decay. Checkpoints are written atomically (temporary file, then rename) every
``checkpoint_every`` epochs, at the end of each phase and at the end, and the one before is
kept; ``resume`` continues from the newest readable one (read with ``weights_only=True``: no
pickled objects) and, because every random draw is seeded from (seed, epoch, step, rank), gives
the same weights as an uninterrupted run. Under
``torchrun`` each rank trains on its shard of every epoch's permutation with DDP (gloo on CPU, nccl
on CUDA); keys from all ranks enter the queues, and only rank 0 writes files. The per-epoch
history goes to a :class:`Recorder` (by default :class:`HistoryFiles`: a CSV and its plots).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from skelctl.atomic import write_text
from skelctl.methods.base import Phase
from skelctl.settings import TrainConfig, check_optimizer
from skelctl.models import read_torch_file, write_torch_file
from skelctl.parallel import progress
from skelctl.plots import save_curves

if TYPE_CHECKING:
    from skelctl.data.store import Store


@dataclass
class Samples:
    """Training samples in memory: ``arrays`` maps a name (a view, ``label``, ``index``) to a
    tensor whose first axis is the sample; ``frames`` ``(F, C, V, M)`` and ``offsets`` ``(N + 1,)``
    optionally hold the real variable-length sequences, sample i being
    ``frames[offsets[i]:offsets[i + 1]]``."""

    arrays: dict[str, torch.Tensor]
    frames: torch.Tensor | None = None
    offsets: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def to(self, device: torch.device) -> "Samples":
        move = (lambda t: None if t is None else t.to(device))
        return Samples({k: v.to(device) for k, v in self.arrays.items()}, move(self.frames),
                       move(self.offsets))

    def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows as a dict of batched tensors; with sequences, ``sequence`` ``(B, C, L, V, M)``
        padded with zeros to the longest ``length`` in the batch."""
        out = {name: values[rows] for name, values in self.arrays.items()}
        if self.frames is not None:
            start = self.offsets[rows]
            length = self.offsets[rows + 1] - start
            steps = torch.arange(int(length.max()), device=rows.device)
            valid = steps[None] < length[:, None]
            picked = self.frames[start[:, None] + torch.minimum(steps[None], length[:, None] - 1)]
            picked = picked * valid[:, :, None, None, None].to(picked.dtype)
            out["sequence"] = picked.permute(0, 2, 1, 3, 4)
            out["length"] = length
        return out


def training_samples(store: Store, indices: np.ndarray, inputs: tuple[str, ...],
                     sequences: bool = False) -> Samples:
    """The named views, labels and store indices of ``indices`` (and, when asked, the real
    variable-length frames) as tensors, for the training loop."""
    arrays = {name: torch.from_numpy(store.take(name, indices)) for name in inputs}
    arrays["label"] = torch.from_numpy(store.meta(["label"])["label"][indices]).long()
    arrays["index"] = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    if not sequences:
        return Samples(arrays)
    # one read of the range the indices span, then one gather of their frames
    low = int(indices.min())
    data, offsets = store.sequences(low, int(indices.max()) + 1)
    first, lengths = offsets[indices - low], offsets[indices - low + 1] - offsets[indices - low]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = np.arange(starts[-1]) + np.repeat(first - starts[:-1], lengths)
    return Samples(arrays, torch.from_numpy(data[rows]), torch.from_numpy(starts))

def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def distributed() -> tuple[int, int]:
    """(rank, world size); 0, 1 outside torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> torch.device:
    """Join the process group torchrun describes in the environment (a no-op without it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
    return device


def step_generator(seed: int, epoch: int, step: int, rank: int,
                   device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(((seed * 1_000_003 + epoch) * 100_003 + step) * 101 + rank)
    return generator


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint before the newest is kept: a resume falls back on it when the newest
    is unreadable."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` as the newest checkpoint; the one it replaces becomes the previous (the
    last two are kept). Killed between the two renames, the previous alone is left: resumable."""
    write_torch_file(state, path, previous=previous_checkpoint(path))


def load_checkpoint(path: Path, device: torch.device,
                    log: Callable[[str], None]) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable of the last two checkpoints, ``(file, state)``; None when there is
    none. An unreadable one is named and passed over; when both are, the error says how to
    restart."""
    found = [p for p in (path, previous_checkpoint(path)) if p.exists()]
    problems = []
    for candidate in found:
        try:
            state = read_torch_file(candidate, "checkpoint", map_location=device)
        except ValueError as err:
            problems.append(str(err))
            log(f"{err}; trying the checkpoint before it" if candidate == path else str(err))
            continue
        if not isinstance(state, dict) or "identity" not in state:
            problems.append(f"{candidate}: not a skelctl checkpoint")
            continue
        return candidate, state
    if problems:
        raise ValueError(f"{'; '.join(problems)}. No readable checkpoint is left: delete "
                         f"{', '.join(str(p) for p in found)} and rerun to train from the start")
    return None


def remove_checkpoints(path: Path) -> None:
    """Delete a finished run's checkpoints (its outputs now stand for it)."""
    path.unlink(missing_ok=True)
    previous_checkpoint(path).unlink(missing_ok=True)


def log_line(line: str) -> None:
    """Print at once: under DVC or a pipe, stdout is otherwise flushed only at exit."""
    print(line, flush=True)


def epoch_line(row: dict[str, float], epochs: int, seconds: float, left: float) -> str:
    """The log line of an epoch: its losses, learning rate, duration and the time left."""
    figures = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "lr", "phase"))
    return (f"epoch {int(row['epoch'])}/{epochs} {figures} lr {row['lr']:.4g} "
            f"{seconds:.1f} s/epoch, {left / 60:.1f} min left")


def chunk_line(done: int, total: int, unit: str, seconds: float, left: float) -> str:
    """The log line of a loop that is not an epoch's (features of a chunk of samples)."""
    return f"{done}/{total} {unit}s {seconds:.1f} s, {left / 60:.1f} min left"


class Progress:
    """How far a loop is, shown the one way every command shows it: a bar on a terminal
    (:func:`skelctl.parallel.progress`); off a terminal (under DVC, in a pipe or a log file) a
    line through ``log`` every ``every`` steps and at the last: an epoch's figures
    (:func:`epoch_line`, given its history row), else the count done. Lines start with
    ``prefix``; only rank 0 shows anything."""

    def __init__(self, total: int, desc: str, unit: str = "epoch",
                 log: Callable[[str], None] = log_line, done: int = 0, every: int = 1,
                 prefix: str | None = None) -> None:
        rank = distributed()[0]
        self.total, self.done, self.unit, self.every = total, done, unit, max(1, every)
        self.prefix = f"{desc}: " if prefix is None else prefix
        self.bar = progress(total - done, desc, unit) if rank == 0 and total > done else None
        self.log = log if rank == 0 and not sys.stderr.isatty() else None
        self.began, self.counted, self.logged = time.monotonic(), 0, done

    def step(self, n: int = 1, row: dict[str, float] | None = None,
             postfix: dict[str, str] | None = None) -> None:
        """``n`` more steps done; ``row``, an epoch's figures (with ``epoch`` and ``lr``)."""
        self.done += n
        self.counted += n
        elapsed = time.monotonic() - self.began
        left = elapsed / self.counted * max(self.total - self.done, 0)
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix)
        if self.log is not None and (self.done - self.logged >= self.every
                                     or self.done >= self.total):
            self.logged = self.done
            self.log(self.prefix + (
                epoch_line(row, self.total, elapsed / self.counted, left) if row is not None
                else chunk_line(self.done, self.total, self.unit, elapsed, left)))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class HistoryPlots:
    """The words on a history's plots: ``title`` what trained (``"<run> on <split>"``);
    ``evaluation`` and ``ylabel`` what the evaluation figures are; ``baselines`` maps a column
    of the history that holds a reference figure (an untrained encoder's) to the label of the
    dashed line drawn at its value."""

    title: str
    evaluation: str = "evaluation"
    ylabel: str = ""
    baselines: dict[str, str] = field(default_factory=dict)


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """Per-epoch losses as CSV (a DVC plot), written atomically."""
    buffer = io.StringIO()
    names = list(dict.fromkeys(k for row in history for k in row)) or ["epoch", "loss"]
    writer = csv.DictWriter(buffer, fieldnames=names)
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def save_history_plots(history: list[dict[str, float]], loss_names: set[str],
                       path: Path, plots: HistoryPlots | str) -> None:
    """The loss curves beside the history CSV (``<name>.png``) and, when the rows carry
    evaluation figures, those too (``<name>.eval.png``), a baseline column as a dashed line
    labelled with its value. The clip statistics are in the CSV alone."""
    plots = HistoryPlots(plots) if isinstance(plots, str) else plots
    others = [k for k in dict.fromkeys(k for row in history for k in row)
              if k not in loss_names and k not in ("epoch", "lr", "phase")
              and k not in CLIP_STATISTICS and k not in plots.baselines]
    save_curves(history, "epoch", sorted(loss_names), path.with_suffix(".png"),
                f"{plots.title}: training loss", "loss")
    baselines = {}
    for column, label in plots.baselines.items():
        values = [row[column] for row in history if row.get(column) not in (None, "")]
        if values:
            baselines[f"{label}: {float(values[-1]):.1f}"] = float(values[-1])
    if others:
        save_curves(history, "epoch", others, path.with_suffix(".eval.png"),
                    f"{plots.title}: {plots.evaluation}", plots.ylabel, baselines)


class Recorder:
    """What becomes of the history while :func:`fit` trains (on rank 0): each hook is given the
    history so far and the names of its loss columns. This one keeps nothing; subclass it to keep
    something."""

    def epoch(self, history: list[dict[str, float]], losses: set[str]) -> None:
        """An epoch ended without a checkpoint."""

    def checkpoint(self, history: list[dict[str, float]], losses: set[str]) -> None:
        """An epoch ended and a checkpoint holding ``history`` was written."""

    def finished(self, history: list[dict[str, float]], losses: set[str]) -> None:
        """Training is over (also when a finished run was resumed: nothing left to train)."""


class HistoryFiles(Recorder):
    """The history as files (the default recorder): the CSV at ``path`` (:func:`write_history`)
    after every epoch, and with it its plots labelled by ``plots`` (:func:`save_history_plots`)
    at every checkpoint; when a finished run is resumed, both again, in case a kill came between
    the last checkpoint's rename and theirs."""

    def __init__(self, path: Path, plots: HistoryPlots | None = None) -> None:
        self.path, self.plots = path, plots or HistoryPlots(path.stem)
        self.recorded = False

    def epoch(self, history: list[dict[str, float]], losses: set[str]) -> None:
        """The CSV."""
        write_history(history, self.path)
        self.recorded = True

    def checkpoint(self, history: list[dict[str, float]], losses: set[str]) -> None:
        """The CSV and the plots."""
        write_history(history, self.path)
        save_history_plots(history, losses, self.path, self.plots)
        self.recorded = True

    def finished(self, history: list[dict[str, float]], losses: set[str]) -> None:
        """The CSV and the plots again when this run trained nothing (a finished run resumed)."""
        if history and not self.recorded:
            self.checkpoint(history, losses)


# a training row's figures that are not losses: how hard the gradients were clipped (in the rows
# of the epochs that clip; computing the norm without clipping would cost a pass over every
# gradient at every step, so unclipped epochs record none)
CLIP_STATISTICS = ("grad_norm", "clipped")


def loss_columns(rows: list[dict[str, float]]) -> set[str]:
    """The columns of ``rows`` other than ``epoch``, ``lr``, ``phase`` and the
    :data:`CLIP_STATISTICS`: a training row's losses (in the rows of a checkpoint older than its
    ``losses`` key, evaluation figures too)."""
    return {k for row in rows for k in row
            if k not in ("epoch", "lr", "phase") and k not in CLIP_STATISTICS}


def amp_available(device: torch.device) -> bool:
    """Whether mixed precision pays on ``device``: CUDA, or a CPU with native bf16."""
    return device.type == "cuda" or (device.type == "cpu"
                                     and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def amp_precision(device: torch.device) -> torch.dtype:
    """The autocast type on ``device``: bf16 (a CPU, or a GPU from Ampere on), else fp16 (older
    GPUs, with loss scaling)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@dataclass
class Precision:
    """How the steps compute on ``device``: under autocast to ``dtype`` (None: float32
    throughout), with ``scaler``'s loss scaling (on for fp16 alone, whose narrow exponent
    underflows small gradients)."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def of(cls, config: TrainConfig, device: torch.device,
           log: Callable[[str], None]) -> "Precision":
        """``config.amp`` where it pays on ``device``; where it does not, float32, said
        through ``log``."""
        amp = config.amp and amp_available(device)
        if config.amp and not amp:
            log("amp: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 matrix "
                "products fall back to a reference kernel tens of times slower; training in "
                "float32")
        dtype = amp_precision(device) if amp else None
        return cls(device, dtype, torch.amp.GradScaler(device.type,
                                                       enabled=dtype == torch.float16))

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context a forward pass runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


DEFAULT_BETAS = {"adam": (0.9, 0.999), "adamw": (0.9, 0.95)}  # torch's; MAMP's pretraining


def make_optimizer(name: str, groups: list[dict[str, Any]], phase: Phase,
                   betas: tuple[float, float] | None = None) -> torch.optim.Optimizer:
    """The phase's optimiser over ``groups``: SGD with the phase's momentum, or Adam or AdamW
    (whose moments, decaying by ``betas``, replace momentum; None: :data:`DEFAULT_BETAS`), each
    with its learning rate and weight decay (where a group sets none of its own)."""
    if check_optimizer(name) == "sgd":
        return torch.optim.SGD(groups, lr=phase.lr, momentum=phase.momentum,
                               weight_decay=phase.weight_decay)
    kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return kind(groups, lr=phase.lr, betas=betas or DEFAULT_BETAS[name],
                weight_decay=phase.weight_decay)


def layer_scales(model: nn.Module, decay: float) -> dict[nn.Parameter, float]:
    """Layer-wise learning-rate decay (mae's ``param_groups_lrd``): each parameter of a module
    that numbers its layers (``num_layers``, and ``layer_of(name)``: 0 the embeddings, i + 1
    block i, ``num_layers`` what follows the blocks) scaled by ``decay ** (num_layers -
    layer)``; a parameter outside every such module (a classifier head) is absent (scale 1)."""
    scales: dict[nn.Parameter, float] = {}
    for _, module in model.named_modules():  # outer modules first: theirs is the numbering
        if callable(getattr(module, "layer_of", None)):
            for name, parameter in module.named_parameters():
                scales.setdefault(parameter, decay ** (module.num_layers - module.layer_of(name)))
    if not scales:
        raise ValueError(f"layer_decay {decay:g} needs an encoder that numbers its layers "
                         f"(num_layers and layer_of, as the transformer has); "
                         f"{type(model).__name__} has none")
    return scales


def optimizer_groups(model: nn.Module, groups: list[dict[str, Any]], lr: float,
                     decay_matrices_only: bool, layer_decay: float | None
                     ) -> list[dict[str, Any]]:
    """``groups`` (a phase's) split so that each part has one learning-rate scale and one
    weight-decay rule: with ``decay_matrices_only``, parameters of fewer than 2 dimensions
    (biases, norm weights) get no weight decay (timm's ``add_weight_decay``, as MAMP); with
    ``layer_decay``, each part's ``lr`` is its group's (or ``lr``) times its layer's scale,
    kept as ``lr_scale``. Neither: ``groups`` as they are."""
    if not decay_matrices_only and layer_decay is None:
        return groups
    scales = {} if layer_decay is None else layer_scales(model, layer_decay)
    parts: list[dict[str, Any]] = []
    for group in groups:
        split: dict[tuple[float, bool], dict[str, Any]] = {}
        for parameter in group["params"]:
            scale = scales.get(parameter, 1.0)
            decayed = not decay_matrices_only or parameter.ndim >= 2
            if (scale, decayed) not in split:
                part = {**group, "params": []}
                if scales:
                    part.update(lr=group.get("lr", lr) * scale, lr_scale=scale)
                if not decayed:
                    part["weight_decay"] = 0.0
                split[scale, decayed] = part
            split[scale, decayed]["params"].append(parameter)
        parts += split.values()
    return parts


def warmup_cosine(epoch: float, lr: float, min_lr: float, warmup_epochs: float,
                  epochs: float) -> float:
    """The learning rate at ``epoch`` (fractional: step / steps per epoch) of a phase of
    ``epochs``: linear from 0 over the warmup, then half a cosine from ``lr`` to ``min_lr``
    (mae's ``adjust_learning_rate``, MAMP's schedule)."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    done = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * done))


# the training settings added after checkpoints had been made (see training_settings)
LATER_SETTINGS = ("betas", "lr_schedule", "warmup_epochs", "min_lr", "layer_decay")


def training_settings(config: TrainConfig) -> dict[str, Any]:
    """The training settings that decide what is trained: monitoring (``knn_every``) is left out,
    so a run resumes across a change of it; so are the optimiser (:func:`training_identity`
    records it) and the keys added later while they hold their defaults, so that a run with
    the defaults keeps the settings it had before they existed (older checkpoints resume)."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    return {k: v for k, v in config.__dict__.items() if k not in ("knn_every", "optimizer")
            and not (k in LATER_SETTINGS and v == defaults[k])}


def training_identity(identity: dict[str, Any], config: TrainConfig,
                      phases: list[Phase]) -> dict[str, Any]:
    """What a checkpoint must have been made with to be resumed: ``identity`` (the model's and
    data's settings), the training settings, the phases and the number of processes."""
    optimizers = [check_optimizer(p.optimizer or config.optimizer) for p in phases]
    identity = {**identity, "train": training_settings(config),
                "phases": [{k: v for k, v in p.__dict__.items()
                            if k not in ("parameters", "optimizer")} for p in phases],
                "world_size": distributed()[1]}
    if any(name != "sgd" for name in optimizers):  # SGD left out: older checkpoints resume
        identity["optimizers"] = optimizers
    return identity


def save_state(path: Path, *, epoch: int, phase: int, identity: dict[str, Any],
               model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
               history: list[dict[str, float]], losses: set[str]) -> None:
    """Checkpoint the run after ``epoch`` (counted from 1), in its ``phase``-th phase:
    everything :func:`resume_state` needs to go on as if never stopped (``losses``: which of
    the history's columns are losses, the others being evaluation figures)."""
    save_checkpoint({"epoch": epoch, "phase": phase, "identity": identity,
                     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                     "history": history, "losses": sorted(losses)}, path)


def resume_state(path: Path, identity: dict[str, Any], model: nn.Module,
                 scaler: torch.amp.GradScaler, device: torch.device,
                 log: Callable[[str], None]) -> dict[str, Any] | None:
    """The state :func:`save_state` left in the newest readable checkpoint at ``path``, its
    weights and loss scaling already loaded into ``model`` and ``scaler``; None when there is
    none, or it was made with other settings than ``identity`` (said through ``log``)."""
    found = load_checkpoint(path, device, log)
    if found is None:
        return None
    source, saved = found
    if saved.get("identity") != identity:
        log(f"{source} was made with other settings; starting afresh")
        return None
    model.load_state_dict(saved["model"])
    scaler.load_state_dict(saved["scaler"])
    log(f"resuming from {source} after epoch {saved['epoch']}")
    return saved


def steps_per_epoch(samples: Samples, batch_size: int, world: int) -> int:
    """The batches of ``batch_size`` each of ``world`` processes trains on in an epoch."""
    return len(samples) // (batch_size * world)


def check_one_batch(samples: Samples, batch_size: int, world: int) -> None:
    """Fail at once when the samples do not make a single step."""
    if steps_per_epoch(samples, batch_size, world) == 0:
        raise ValueError(f"{len(samples)} training samples are fewer than one batch of "
                         f"{batch_size} x {world} process(es)")


def phase_epochs(phases: list[Phase]) -> list[tuple[int, int]]:
    """Each phase's epochs as ``(first, last)``: epochs ``first`` to ``last - 1``, from 0."""
    ends = [sum(p.epochs for p in phases[:i + 1]) for i in range(len(phases))]
    return list(zip([0] + ends[:-1], ends))


def start_phase(model: nn.Module, phase: Phase, config: TrainConfig,
                trainable: dict[nn.Parameter, bool], steps: int
                ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Let only the phase's parameters get gradients (of those ``trainable`` at the start);
    the phase's optimiser over them (its own or the run's, with the run's betas, layer-wise
    decay and, for adamw, no weight decay on parameters of fewer than 2 dimensions) and its
    learning-rate schedule: the step schedule, stepped once an epoch, or the cosine one, over
    the phase's epochs of ``steps`` optimiser steps each, stepped once a step."""
    groups = phase.groups(model)
    members = {p for group in groups for p in group["params"]}
    for p, was in trainable.items():
        p.requires_grad_(was and p in members)
    name = check_optimizer(phase.optimizer or config.optimizer)
    groups = optimizer_groups(model, groups, phase.lr, name == "adamw", config.layer_decay)
    made = make_optimizer(name, groups, phase, config.betas)
    if config.lr_schedule == "step":
        return made, torch.optim.lr_scheduler.MultiStepLR(made, phase.lr_steps, phase.lr_gamma)
    if config.warmup_epochs >= phase.epochs:
        raise ValueError(f"warmup_epochs {config.warmup_epochs} leaves none of phase "
                         f"{phase.name!r}'s {phase.epochs} epochs to the cosine")

    def factor(step: int) -> float:  # of each group's own lr (its layer's share of phase.lr)
        return warmup_cosine(step / steps, phase.lr, config.min_lr, config.warmup_epochs,
                             phase.epochs) / phase.lr

    return made, torch.optim.lr_scheduler.LambdaLR(made, factor)


def distributed_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` under DDP when there are several processes, else itself."""
    if distributed()[1] == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator,
               epoch: int, optimizer: torch.optim.Optimizer, precision: Precision,
               clip: float | None) -> dict[str, torch.Tensor]:
    """One optimiser step on ``batch``, the gradients' norm clipped to ``clip`` when given;
    the step's named losses and, when clipping, its :data:`CLIP_STATISTICS`: ``grad_norm``,
    the gradients' total norm before clipping, and ``clipped``, 1 if the step was clipped
    (left out of a step whose fp16 gradients overflowed, which the loss scaling skips)."""
    with precision.autocast():
        losses = model(batch, generator, epoch)
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(losses["loss"].float()).backward()
    if clip:
        precision.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], clip).detach()
        if torch.isfinite(norm):
            losses = {**losses, "grad_norm": norm, "clipped": (norm > clip).float()}
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return losses


def mean_over_ranks(row: dict[str, float], names: list[str],
                    device: torch.device) -> dict[str, float]:
    """``row`` with its ``names`` averaged over the processes, so every rank logs the same."""
    world = distributed()[1]
    if world > 1:
        values = torch.tensor([row[k] for k in names], device=device, dtype=torch.float64)
        torch.distributed.all_reduce(values)
        row.update({k: float(v) / world for k, v in zip(names, values)})
    return row


def scheduled_lr(optimizer: torch.optim.Optimizer) -> float:
    """The rate the schedule sets now (the first group's, without its layer's scale)."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)


def train_epoch(model: nn.Module, samples: Samples, epoch: int,
                optimizer: torch.optim.Optimizer, precision: Precision, config: TrainConfig,
                clip: float | None,
                per_step: torch.optim.lr_scheduler.LRScheduler | None = None
                ) -> dict[str, float]:
    """Epoch ``epoch`` (from 0): a step a batch of this rank's share of the epoch's seeded
    permutation, ``per_step`` (a per-step schedule) stepped after each. Its history row:
    ``epoch`` (from 1), ``lr`` (the rate of its first step) and each loss averaged over the
    steps and the ranks; with ``clip``, the :data:`CLIP_STATISTICS` too, likewise averaged:
    the mean pre-clip norm and the share of the steps that were clipped."""
    rank, world = distributed()
    device = precision.device
    model.train()
    torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout: same draws on resume
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(
        config.seed * 7919 + epoch)).to(device)
    steps = steps_per_epoch(samples, config.batch_size, world)
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}  # the steps that gave each figure (clip statistics: not all)
    lr = scheduled_lr(optimizer)
    for step in range(steps):
        at = (step * world + rank) * config.batch_size
        generator = step_generator(config.seed, epoch, step, rank, device)
        losses = train_step(model, samples.batch(order[at:at + config.batch_size]), generator,
                            epoch, optimizer, precision, clip)
        if per_step is not None:
            per_step.step()
        for name, value in losses.items():
            totals[name] = totals.get(name, 0.0) + float(value.detach())
            counts[name] = counts.get(name, 0) + 1
    row = {"epoch": epoch + 1, "lr": lr,
           **{name: total / counts[name] for name, total in totals.items()}}
    return mean_over_ranks(row, list(totals), device)


def check_finite(row: dict[str, float]) -> None:
    """Stop on a loss that is not finite: later epochs could only train on NaN."""
    if not math.isfinite(row["loss"]):
        raise FloatingPointError(
            f"loss is {row['loss']} in epoch {row['epoch']} (lr {row['lr']:g}); lower the "
            f"learning rate or clip the gradients (train: grad_clip)")


def fit(model: nn.Module, samples: Samples, phases: list[Phase], config: TrainConfig,
        checkpoint: Path | None, device: torch.device, history_csv: Path | None = None,
        identity: dict[str, Any] | None = None, resume: bool = True,
        log: Callable[[str], None] = log_line,
        evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None,
        plots: HistoryPlots | None = None, desc: str | None = None,
        recorder: Recorder | None = None) -> list[dict[str, float]]:
    """Train ``model`` (``model(batch, generator, epoch)`` returns named losses, ``"loss"`` the
    one to minimise) through ``phases``; returns the per-epoch history.

    ``evaluate(model, epoch)``, when given, runs after every epoch and its figures join that
    epoch's row (e.g. test accuracy while fine-tuning). Rank 0 writes ``checkpoint`` and hands
    the history to ``recorder`` (default: :class:`HistoryFiles` at ``history_csv``, its plots
    labelled by ``plots``; none without ``history_csv``). ``identity`` (the model's and data's
    settings) is stored in the checkpoint; a checkpoint made with different settings is not
    resumed from. Progress (:class:`Progress`): a bar named ``desc`` (default ``train``), and
    off a terminal a line an epoch, starting with ``desc`` when given.
    """
    rank, world = distributed()
    say = log if rank == 0 else (lambda _: None)
    model.to(device)
    precision = Precision.of(config, device, say)
    trainable = {p: p.requires_grad for p in model.parameters()}
    identity = training_identity(identity or {}, config, phases)
    saved = resume_state(checkpoint, identity, model, precision.scaler, device, say) \
        if resume and checkpoint else None
    start, history = (saved["epoch"], saved["history"]) if saved is not None else (0, [])
    samples = samples.to(device)
    epochs = sum(p.epochs for p in phases)
    if epochs > start:
        check_one_batch(samples, config.batch_size, world)
    if rank != 0:
        recorder = Recorder()  # only rank 0 writes files
    elif recorder is None:
        recorder = HistoryFiles(history_csv, plots) if history_csv else Recorder()
    # a checkpoint names its loss columns (an older one: every column, evaluation figures too)
    losses = set(saved["losses"]) if saved and "losses" in saved else loss_columns(history)
    shown = Progress(epochs, desc or "train", "epoch", log, start, prefix=None if desc else "")
    try:
        for index, (phase, (first, last)) in enumerate(zip(phases, phase_epochs(phases))):
            if last <= start:
                continue
            optimizer, scheduler = start_phase(
                model, phase, config, trainable,
                steps_per_epoch(samples, config.batch_size, world))
            per_step = scheduler if config.lr_schedule == "cosine" else None
            if saved is not None and start > first:  # resuming inside this phase
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
            wrapped = distributed_model(model, device)
            clip = config.grad_clip if phase.clip else None
            for epoch in range(max(start, first), last):
                row = train_epoch(wrapped, samples, epoch, optimizer, precision, config, clip,
                                  per_step)
                if per_step is None:
                    scheduler.step()
                if len(phases) > 1:
                    row["phase"] = index
                check_finite(row)
                losses |= loss_columns([row])
                if evaluate is not None:
                    row.update(evaluate(model, epoch + 1))
                history.append(row)
                shown.step(row=row, postfix={"loss": f"{row['loss']:.4f}"})
                if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == last:
                    if rank == 0 and checkpoint:
                        save_state(checkpoint, epoch=epoch + 1, phase=index, identity=identity,
                                   model=model, optimizer=optimizer, scheduler=scheduler,
                                   scaler=precision.scaler, history=history, losses=losses)
                    recorder.checkpoint(history, losses)
                else:
                    recorder.epoch(history, losses)
        recorder.finished(history, losses)
    finally:  # the caller's trainable flags come back, however training stopped
        for p, was in trainable.items():
            p.requires_grad_(was)
        shown.close()
    return history
