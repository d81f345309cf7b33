"""Params: each learning stage reads its own section of params.yaml; command-line options
override single values for ad-hoc runs. Run names say what a pretraining run is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skelctl.data.views import VIEWS
from skelctl.methods import METHODS
from stages.common import StageError

# The paper's settings (CrosSCLR, Sec. 4.2); params.yaml repeats them so that DVC tracks them.
DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {
        "variant": "50-shoulder", "encoder": "stgcn",
        "encoder_options": {"hidden": 16, "out_dim": 256, "dropout": 0.5},
        "feature_dim": 128, "queue_size": 30000, "momentum": 0.999, "temperature": 0.07,
        "augment": {"crop": {"padding_ratio": 6}, "shear": {"amplitude": 0.5}},
        "topk": 1, "cross_epoch": 150, "context": True,
        "epochs": 300, "batch_size": 128, "lr": 0.1, "sgd_momentum": 0.9,
        "weight_decay": 1.0e-4, "lr_steps": [250], "checkpoint_every": 10, "seed": 0,
        "amp": False, "device": "auto",
    },
    "linear": {"epochs": 100, "lr": 3.0, "momentum": 0.9, "weight_decay": 0.0,
               "batch_size": 128, "lr_steps": [80], "seed": 0, "device": "auto"},
    "knn": {"k": 1, "device": "auto"},
    # AimCLR's weights (joint 0.6, motion 0.4, bone 0.6); velocity as motion
    "ensemble": {"weights": {"joint": 0.6, "motion": 0.4, "bone": 0.6, "velocity": 0.4},
                 "streams": ["joint", "motion", "bone"]},
}


def load_section(params: Path | None, section: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then the params file's section, then the non-None command-line overrides."""
    values = dict(DEFAULTS.get(section, {}))
    if params is not None:
        params = Path(params)
        if not params.is_file():
            raise StageError(f"{params}: params file does not exist")
        document = yaml.safe_load(params.read_text()) or {}
        unknown = set(document.get(section) or {}) - set(values)
        if unknown and section in DEFAULTS:
            raise StageError(f"{params}: unknown key(s) in '{section}': {', '.join(sorted(unknown))}")
        values.update(document.get(section) or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def load_document(params: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(params).read_text()) or {}


@dataclass(frozen=True)
class Run:
    """A pretraining run: ``<method>-<view>[-<view>...][-k<K>]``, e.g. ``skeletonclr-joint``,
    ``crosclr-joint-motion-bone``, ``crosclr-joint-motion-k3``; ``random-<view>`` is an untrained
    encoder (the baseline every evaluation is compared with)."""

    name: str
    method: str
    views: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def trained(self) -> bool:
        return self.method != "random"


def parse_run(name: str) -> Run:
    method, *tokens = name.split("-")
    views, overrides = [], {}
    for token in tokens:
        if token in VIEWS:
            views.append(token)
        elif token[:1] == "k" and token[1:].isdigit():
            overrides["topk"] = int(token[1:])
        else:
            raise StageError(f"run {name!r}: {token!r} is neither a view ({', '.join(VIEWS)}) "
                             f"nor k<K>")
    if method not in (*METHODS, "random"):
        raise StageError(f"run {name!r}: unknown method {method!r}; known: "
                         f"{', '.join((*METHODS, 'random'))}")
    if not views:
        raise StageError(f"run {name!r} names no view")
    multi = method != "random" and METHODS[method].multi_view
    if (len(views) > 1) != multi:
        raise StageError(f"run {name!r}: {method} learns " +
                         ("two or more views" if multi else "exactly one view"))
    return Run(name, method, tuple(views), overrides)


def ensemble_runs(name: str, streams: tuple[str, ...] | None) -> dict[str, str]:
    """Which run provides each stream of an ensemble. ``name`` is a single-view method (one run
    per stream: ``skeletonclr`` -> ``skeletonclr-joint``, ...) or a multi-view run, whose views
    are the streams (``crosclr-joint-motion-bone``)."""
    if name in METHODS and not METHODS[name].multi_view:
        if not streams:
            raise StageError(f"ensemble {name!r} needs its streams")
        return {s: f"{name}-{s}" for s in streams}
    run = parse_run(name)
    if not run.trained or len(run.views) < 2:
        raise StageError(f"ensemble {name!r}: name a single-view method or a multi-view run")
    streams = streams or run.views
    missing = [s for s in streams if s not in run.views]
    if missing:
        raise StageError(f"run {name!r} did not learn {', '.join(missing)}")
    return {s: name for s in streams}
