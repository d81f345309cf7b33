"""The one training loop, for self-supervised pretraining and supervised fine-tuning alike.

Data: the samples of the training split held in memory (:class:`Samples`: the views a model asks
for, 1.2 GB for NTU-60 joints at 50 frames; labels; store indices; optionally the real
variable-length frames as one ragged array) and fed in seeded random batches of dicts; models
augment and derive their views on the device. Training runs in phases (:class:`Phase`), each with
its own optimiser, schedule and trainable parameters. Checkpoints are written atomically
(temporary file, then rename) every ``checkpoint_every`` epochs, at the end of each phase and at
the end, and the one before is kept; ``resume`` continues from the newest readable one (read
with ``weights_only=True``: no pickled objects) and, because every random draw is
seeded from (seed, epoch, step, rank), gives the same weights as an uninterrupted run. Under
``torchrun`` each rank trains on its shard of every epoch's permutation with DDP (gloo on CPU, nccl
on CUDA); keys from all ranks enter the queues, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import nn

from skelctl.atomic import write_text
from skelctl.methods.base import Phase
from skelctl.models import read_torch_file, write_torch_file
from skelctl.options import (NonNegativeFloat, NonNegativeInt, PositiveFloat,
                             PositiveInt)
from skelctl.parallel import progress
from skelctl.plots import save_curves


@dataclass
class TrainConfig:
    """A run's training settings (``train`` in a run entry); a method turns the optimiser part
    into its phases."""

    epochs: PositiveInt = 300
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 1e-4
    lr_steps: list[PositiveInt] = field(default_factory=lambda: [250])
    lr_gamma: PositiveFloat = 0.1
    checkpoint_every: PositiveInt = 10
    seed: int = 0
    amp: bool = False  # bf16 autocast on CPU, fp16 autocast + loss scaling on CUDA
    grad_clip: PositiveFloat | None = None  # the gradients' largest total norm (None: not clipped)
    knn_every: NonNegativeInt = 0  # KNN on the split's test part every so many epochs (0: never)
    device: str = "auto"
    # sgd (momentum, weight decay) or adam (lr and weight decay only; ISC's fine-tuning); a
    # phase may name its own
    optimizer: Literal["sgd", "adam"] = "sgd"

    def __post_init__(self) -> None:  # params are checked by type; this guards library callers
        check_optimizer(self.optimizer)

    def schedule(self) -> dict[str, Any]:
        """The arguments of :meth:`Method.phases`."""
        return {k: getattr(self, k) for k in ("epochs", "lr", "lr_steps", "lr_gamma", "momentum",
                                              "weight_decay")}


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


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """Per-epoch losses as CSV (a DVC plot), written atomically."""
    buffer = io.StringIO()
    names = list(dict.fromkeys(k for row in history for k in row)) or ["epoch", "loss"]
    writer = csv.DictWriter(buffer, fieldnames=names)
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


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


def save_history_plots(history: list[dict[str, float]], loss_names: set[str],
                       path: Path, plots: HistoryPlots | str) -> None:
    """The loss curves beside the history CSV (``<name>.png``) and, when the rows carry
    evaluation figures, those too (``<name>.eval.png``), a baseline column as a dashed line
    labelled with its value."""
    plots = HistoryPlots(plots) if isinstance(plots, str) else plots
    others = [k for k in dict.fromkeys(k for row in history for k in row)
              if k not in loss_names and k not in ("epoch", "lr", "phase")
              and k not in plots.baselines]
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


OPTIMIZERS = ("sgd", "adam")


def check_optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return name


def make_optimizer(name: str, groups: list[dict[str, Any]], phase: Phase
                   ) -> torch.optim.Optimizer:
    """The phase's optimiser over ``groups``: SGD with the phase's momentum, or Adam (whose
    moments replace momentum), both with its learning rate and weight decay."""
    if check_optimizer(name) == "adam":
        return torch.optim.Adam(groups, lr=phase.lr, weight_decay=phase.weight_decay)
    return torch.optim.SGD(groups, lr=phase.lr, momentum=phase.momentum,
                           weight_decay=phase.weight_decay)


def training_settings(config: TrainConfig) -> dict[str, Any]:
    """The training settings that decide what is trained: monitoring (``knn_every``) is left out,
    so a run resumes across a change of it."""
    return {k: v for k, v in config.__dict__.items() if k not in ("knn_every", "optimizer")}


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


def fit(model: nn.Module, samples: Samples, phases: list[Phase], config: TrainConfig,
        checkpoint: Path | None, device: torch.device, history_csv: Path | None = None,
        identity: dict[str, Any] | None = None, resume: bool = True,
        log: Callable[[str], None] = log_line,
        evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None,
        plots: HistoryPlots | None = None, desc: str | None = None,
        ) -> list[dict[str, float]]:
    """Train ``model`` (``model(batch, generator, epoch)`` returns named losses, ``"loss"`` the
    one to minimise) through ``phases``; returns the per-epoch history.

    ``evaluate(model, epoch)``, when given, runs after every epoch and its figures join that
    epoch's row (e.g. test accuracy while fine-tuning). Rank 0 writes ``checkpoint`` and the
    history ``history_csv``, and its plots labelled by ``plots``. ``identity`` (the model's and
    data's settings) is stored in the checkpoint; a checkpoint made with different settings is
    not resumed from. Progress (:class:`Progress`): a bar named ``desc`` (default ``train``),
    and off a terminal a line an epoch, starting with ``desc`` when given.
    """
    rank, world = distributed()
    model.to(device)
    epochs = sum(p.epochs for p in phases)
    amp_dtype = amp_precision(device)
    amp = config.amp and amp_available(device)
    if config.amp and not amp and rank == 0:
        log("amp: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 matrix products "
            "fall back to a reference kernel tens of times slower; training in float32")
    # loss scaling only for fp16, whose narrow exponent underflows small gradients
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    trainable = {p: p.requires_grad for p in model.parameters()}
    optimizers = [check_optimizer(p.optimizer or config.optimizer) for p in phases]
    identity = training_identity(identity or {}, config, phases)
    history: list[dict[str, float]] = []
    start, saved = 0, None
    found = load_checkpoint(checkpoint, device, log if rank == 0 else (lambda _: None)) \
        if resume and checkpoint else None
    if found is not None:
        source, saved = found
        if saved.get("identity") == identity:
            model.load_state_dict(saved["model"])
            scaler.load_state_dict(saved["scaler"])
            history, start = saved["history"], saved["epoch"]
            if rank == 0:
                log(f"resuming from {source} after epoch {start}")
        else:
            saved = None
            if rank == 0:
                log(f"{source} was made with other settings; starting afresh")

    samples = samples.to(device)
    steps = len(samples) // (config.batch_size * world)
    if steps == 0 and epochs > start:
        raise ValueError(f"{len(samples)} training samples are fewer than one batch of "
                         f"{config.batch_size} x {world} process(es)")
    shown = Progress(epochs, desc or "train", "epoch", log, start, prefix=None if desc else "")
    plots = plots or HistoryPlots(history_csv.stem if history_csv else "training")
    loss_names: set[str] = {k for row in history for k in row
                            if k not in ("epoch", "lr", "phase")}
    trained = 0
    try:
        first = 0
        for index, phase in enumerate(phases):
            last = first + phase.epochs
            if last <= start:
                first = last
                continue
            groups = phase.groups(model)
            members = {p for group in groups for p in group["params"]}
            for p, was in trainable.items():  # only this phase's parameters get gradients
                p.requires_grad_(was and p in members)
            optimizer = make_optimizer(optimizers[index], groups, phase)
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, phase.lr_steps,
                                                             phase.lr_gamma)
            if saved is not None and start > first:  # resuming inside this phase
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
            wrapped = model
            if world > 1:
                wrapped = nn.parallel.DistributedDataParallel(
                    model, device_ids=[device.index] if device.type == "cuda" else None)

            def save(epoch: int) -> None:
                if rank == 0 and checkpoint:
                    save_checkpoint({"epoch": epoch, "phase": index, "identity": identity,
                                 "model": model.state_dict(),
                                 "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(),
                                 "scaler": scaler.state_dict(), "history": history}, checkpoint)
                if rank == 0 and history_csv:
                    write_history(history, history_csv)
                    save_history_plots(history, loss_names, history_csv, plots)

            for epoch in range(max(start, first), last):
                wrapped.train()
                torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout: same draws on resume
                order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(
                    config.seed * 7919 + epoch)).to(device)
                totals: dict[str, float] = {}
                for step in range(steps):
                    chunk = order[(step * world + rank) * config.batch_size:
                                  (step * world + rank + 1) * config.batch_size]
                    generator = step_generator(config.seed, epoch, step, rank, device)
                    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp \
                        else contextlib.nullcontext()
                    with autocast:
                        losses = wrapped(samples.batch(chunk), generator, epoch)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(losses["loss"].float()).backward()
                    if config.grad_clip and phase.clip:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(
                            [p for g in optimizer.param_groups for p in g["params"]],
                            config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    for name, value in losses.items():
                        totals[name] = totals.get(name, 0.0) + float(value.detach())
                lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trained with
                scheduler.step()
                row = {"epoch": epoch + 1, "lr": lr,
                       **{name: total / steps for name, total in totals.items()}}
                if world > 1:  # the mean over ranks, so every rank logs the same numbers
                    values = torch.tensor([row[k] for k in totals], device=device,
                                          dtype=torch.float64)
                    torch.distributed.all_reduce(values)
                    row.update({k: float(v) / world for k, v in zip(totals, values)})
                if len(phases) > 1:
                    row["phase"] = index
                if not math.isfinite(row["loss"]):  # later epochs could only train on NaN
                    raise FloatingPointError(
                        f"loss is {row['loss']} in epoch {epoch + 1} (lr {lr:g}); lower the "
                        f"learning rate or clip the gradients (train: grad_clip)")
                loss_names.update(totals)
                if evaluate is not None:
                    row.update(evaluate(model, epoch + 1))
                history.append(row)
                trained += 1
                shown.step(row=row, postfix={"loss": f"{row['loss']:.4f}"})
                if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == last:
                    save(epoch + 1)
                elif rank == 0 and history_csv:
                    write_history(history, history_csv)
            first = last
        if rank == 0 and history_csv and history and trained == 0:
            # a finished run resumed: its history and plots again, in case a kill came between
            # the last checkpoint's rename and theirs
            write_history(history, history_csv)
            save_history_plots(history, loss_names, history_csv, plots)
    finally:  # the caller's trainable flags come back, however training stopped
        for p, was in trainable.items():
            p.requires_grad_(was)
        shown.close()
    return history
