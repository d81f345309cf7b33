"""pretrain: one self-supervised run on the training part of a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from skelctl.data.store import Store
from skelctl.methods import build_method
from skelctl.models import build_encoder
from skelctl.skeletons import get_layout
from skelctl.train import TrainConfig, distributed, init_distributed, pretrain, resolve_device
from stages import paths
from stages.common import StageError
from stages.config import Run, load_section, parse_run

METHOD_KEYS = ("encoder", "encoder_options", "feature_dim", "queue_size", "momentum",
               "temperature", "augment", "topk", "cross_epoch", "context")


def train_joints(store: Store, protocol: str) -> torch.Tensor:
    return torch.from_numpy(store.take("joint", store.split(f"{protocol}/train")))


def build(run: Run, config: dict[str, Any], store: Store) -> torch.nn.Module:
    """A fresh method (or, for ``random-<view>``, a fresh encoder) seeded by ``config['seed']``."""
    torch.manual_seed(config["seed"])
    layout = get_layout(store.attr("layout"))
    persons = int(store.attr("max_bodies"))
    return build_method(run.method, run.views, layout, persons,
                        **{k: config[k] for k in METHOD_KEYS})


def run(split: str, run_name: str, data_dir: Path, models_dir: Path, params: Path | None,
        overrides: dict[str, Any], resume: bool = True) -> dict[str, Any]:
    run_ = parse_run(run_name)
    if not run_.trained:
        raise StageError(f"run {run_name!r} is the untrained baseline: nothing to pretrain")
    config = {**load_section(params, "pretrain", overrides), **run_.overrides}
    dataset, protocol = paths.split_parts(split)
    store = Store(paths.views(data_dir, dataset, config["variant"]))
    device = init_distributed(resolve_device(config["device"]))
    method = build(run_, config, store)
    train = TrainConfig(epochs=config["epochs"], batch_size=config["batch_size"], lr=config["lr"],
                        momentum=config["sgd_momentum"], weight_decay=config["weight_decay"],
                        lr_steps=list(config["lr_steps"]),
                        checkpoint_every=config["checkpoint_every"], seed=config["seed"],
                        amp=config["amp"])
    identity = {"split": split, "run": run_name, "data": str(store.path),
                **{k: config[k] for k in (*METHOD_KEYS, "variant")}}
    out = paths.model_dir(models_dir, split, run_name)
    rank, _ = distributed()
    history = pretrain(method, train_joints(store, protocol), train, out / "checkpoint.pt", device,
                       paths.loss_history(models_dir, split, run_name), identity, resume=resume,
                       log=print if rank == 0 else (lambda _: None))
    return {"output": str(out), "epochs": len(history), "loss": history[-1]["loss"],
            "rank": rank}


def load_encoder(split: str, run_name: str, view: str, data_dir: Path, models_dir: Path,
                 params: Path | None) -> tuple[torch.nn.Module, Store, dict[str, Any]]:
    """The frozen query encoder of ``view`` from a finished run (a fresh one for ``random``)."""
    run_ = parse_run(run_name)
    if view not in run_.views:
        raise StageError(f"run {run_name!r} learns {', '.join(run_.views)}, not {view!r}")
    config = {**load_section(params, "pretrain", {}), **run_.overrides}
    dataset, _ = paths.split_parts(split)
    store = Store(paths.views(data_dir, dataset, config["variant"]))
    if not run_.trained:
        torch.manual_seed(config["seed"])
        encoder = build_encoder(config["encoder"], get_layout(store.attr("layout")),
                                int(store.attr("max_bodies")), **config["encoder_options"])
        return encoder, store, config
    checkpoint = paths.model_dir(models_dir, split, run_name) / "checkpoint.pt"
    if not checkpoint.is_file():
        raise StageError(f"{checkpoint}: no checkpoint; run `skelctl pretrain {run_name} --split "
                         f"{split}` first")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if state["epoch"] < config["epochs"]:
        raise StageError(f"{checkpoint}: pretraining stopped after epoch {state['epoch']} of "
                         f"{config['epochs']}; rerun pretrain to finish it")
    made_with = {k: state["identity"].get(k) for k in (*METHOD_KEYS, "variant")}
    if made_with != {k: config[k] for k in made_with}:
        raise StageError(f"{checkpoint}: made with other pretrain settings than the params now "
                         f"give; rerun pretrain")
    method = build(run_, config, store)
    method.load_state_dict(state["method"])
    return method.encoder(view), store, config


def labels_of(store: Store, indices: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(store.meta(["label"])["label"][indices]).long()
