"""The one pretraining loop, for every method.

Data: the joint sequences of the training split, held in memory as one tensor (1.2 GB for NTU-60
at 50 frames) and fed in seeded random batches; methods augment and derive their views on the
device. Checkpoints are written atomically (temporary file, then rename) every ``checkpoint_every``
epochs and at the end; ``resume`` continues from the last one and, because every random draw is
seeded from (seed, epoch, step, rank), gives the same weights as an uninterrupted run. Under
``torchrun`` each rank trains on its shard of every epoch's permutation with DDP (gloo on CPU, nccl
on CUDA); keys from all ranks enter the queues, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from skelctl.parallel import progress


@dataclass
class TrainConfig:
    epochs: int = 300
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: list[int] = field(default_factory=lambda: [250])
    lr_gamma: float = 0.1
    checkpoint_every: int = 10
    seed: int = 0
    amp: bool = False  # bf16 autocast on CPU, fp16 autocast + loss scaling on CUDA


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


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """Per-epoch losses as CSV (a DVC plot), written atomically."""
    buffer = io.StringIO()
    names = list(dict.fromkeys(k for row in history for k in row))
    writer = csv.DictWriter(buffer, fieldnames=names)
    writer.writeheader()
    writer.writerows(history)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def pretrain(method: nn.Module, joints: torch.Tensor, config: TrainConfig,
             checkpoint: Path | None, device: torch.device, history_csv: Path | None = None,
             identity: dict[str, Any] | None = None, resume: bool = True,
             log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train ``method`` on ``joints`` ``(N, C, T, V, M)``; returns the per-epoch loss history.

    Rank 0 writes ``checkpoint`` and the loss history ``history_csv``. ``identity`` (the method's
    and data's settings) is stored in the checkpoint; a checkpoint made with different settings
    is not resumed from.
    """
    rank, world = distributed()
    method.to(device)
    parameters = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.lr_steps, config.lr_gamma)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
    model = method
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None)
    identity = {**(identity or {}), "train": config.__dict__, "world_size": world}
    history: list[dict[str, float]] = []
    start = 0
    if resume and checkpoint and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state.get("identity") == identity:
            method.load_state_dict(state["method"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            history, start = state["history"], state["epoch"]
            if rank == 0:
                log(f"resuming from {checkpoint} after epoch {start}")
        elif rank == 0:
            log(f"{checkpoint} was made with other settings; starting afresh")

    joints = joints.to(device)
    steps = len(joints) // (config.batch_size * world)
    if steps == 0:
        raise ValueError(f"{len(joints)} training samples are fewer than one batch of "
                         f"{config.batch_size} x {world} process(es)")
    bar = progress(config.epochs - start, "pretrain", "epoch") if rank == 0 else None

    def save(epoch: int) -> None:
        if rank == 0 and checkpoint:
            save_atomic({"epoch": epoch, "identity": identity, "method": method.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict(), "history": history}, checkpoint)
        if rank == 0 and history_csv:
            write_history(history, history_csv)

    model.train()
    for epoch in range(start, config.epochs):
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout: same draws after a resume
        order = torch.randperm(len(joints), generator=torch.Generator().manual_seed(
            config.seed * 7919 + epoch)).to(device)
        totals: dict[str, float] = {}
        for step in range(steps):
            chunk = order[(step * world + rank) * config.batch_size:
                          (step * world + rank + 1) * config.batch_size]
            generator = step_generator(config.seed, epoch, step, rank, device)
            autocast = torch.autocast(device.type, dtype=amp_dtype) if config.amp \
                else contextlib.nullcontext()
            with autocast:
                losses = model(joints[chunk], generator, epoch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"].float()).backward()
            scaler.step(optimizer)
            scaler.update()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
        scheduler.step()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               **{name: total / steps for name, total in totals.items()}}
        if world > 1:  # the mean over ranks, so every rank logs the same numbers
            values = torch.tensor([row[k] for k in totals], device=device, dtype=torch.float64)
            torch.distributed.all_reduce(values)
            row.update({k: float(v) / world for k, v in zip(totals, values)})
        history.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            save(epoch + 1)
    if bar is not None:
        bar.close()
    return history
