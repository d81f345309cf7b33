"""Params: pretraining runs are entries of their own; every other stage reads its own section.

``params.yaml`` holds a ``defaults`` block (the settings every run shares, written once) and a
``runs`` mapping, run name -> entry::

    defaults:
      variant: 50-shoulder
      encoder: stgcn
      encoder_options: {hidden: 16, out_dim: 256, dropout: 0.5}
      train: {epochs: 300, batch_size: 128, lr: 0.1, lr_steps: [250], ...}
    runs:
      crosclr-joint-motion-k3:
        method: crosclr
        streams: [joint, motion]
        options: {topk: 3}          # the method's own options (its file has the defaults)

A run entry may override any default (``train`` key by key). DVC tracks ``defaults`` and the run's
own entry, so editing one run re-runs that run's stages only. Command-line options override
single training values for ad-hoc runs.

A run that starts from another run's exported encoders (CRRL's CML teacher is the ``cml`` run) is
an entry of the ``continued`` list, with ``run`` (its name) and ``start`` (the other run's)::

    continued:
      - {run: crrl, start: cml, method: crrl, streams: [joint]}

DVC can read the ``start`` of a list entry (not of a mapping's value), so dvc.yaml declares the
other run's folder as the continued run's dependency: ``dvc repro`` trains ``cml`` once, then
``crrl`` from it, and again when ``cml`` changes. DVC tracks the ``continued`` list as a whole.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from skelctl.data.views import VIEWS
from skelctl.keys import unknown_keys
from skelctl.skeletons import syntax_error_message
from skelctl.methods import (ALIASES, METHODS, Method, OptionsError, build_method,
                             check_encoder_options, encoder_kinds, make_options, method_class,
                             method_name)
from skelctl.methods.base import encoder_names
from skelctl.skeletons import Layout
from skelctl.train import TrainConfig
from stages.common import StageError

# The settings every run starts from: CrosSCLR's (Sec. 4.2); params.yaml repeats them so that DVC
# tracks them.
RUN_DEFAULTS: dict[str, Any] = {
    "variant": "50-shoulder", "encoder": "stgcn",
    "encoder_options": {"hidden": 16, "out_dim": 256, "dropout": 0.5},
    "train": dataclasses.asdict(TrainConfig()),
}
RUN_KEYS = ("method", "streams", "variant", "encoder", "encoder_options", "options", "train",
            "per_split")
PER_SPLIT_KEYS = ("options", "train")
CONTINUED_KEYS = ("run", "start", *RUN_KEYS)
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

# The evaluation protocols' settings.
DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": {"epochs": 100, "lr": 3.0, "momentum": 0.9, "nesterov": False,
               "weight_decay": 0.0, "batch_size": 128, "lr_steps": [80], "lr_gamma": 0.1,
               "seed": 0, "device": "auto",
               # each evaluation's confusion matrix (CSV, PNG) and t-SNE of the test features
               "figures": True,
               # the head's initial weights N(0, init_std) (ISC's: 0.01)
               "init_std": 0.02,
               # ISC's crops of the real sequences instead of the fixed-length view
               "crop": None,
               # a run's own protocol where its paper gives one (CrosNNCLR: lr 0.3):
               # run name -> the keys above that differ for it
               "runs": {}},
    "knn": {"k": 1, "device": "auto", "crop": None, "runs": {}},
    # AimCLR's weights (joint 0.6, motion 0.4, bone 0.6); velocity as motion
    "ensemble": {"weights": {"joint": 0.6, "motion": 0.4, "bone": 0.6, "velocity": 0.4},
                 "streams": ["joint", "motion", "bone"]},
    # fine-tuning (semi-supervised, fine-tune, transfer): the whole network and a linear head,
    # AimCLR's fine-tune settings, the pretraining augmentations
    "finetune": {"epochs": 100, "batch_size": 128, "lr": 0.1, "momentum": 0.9,
                 "weight_decay": 1.0e-4, "lr_steps": [80], "seed": 0, "device": "auto",
                 "checkpoint_every": 10, "eval_every": 1,
                 "augment": {"crop": {"padding_ratio": 6}, "shear": {"amplitude": 0.5}},
                 "optimizer": "sgd", "crop": None, "runs": {}},
    "semi": {"percents": [1, 5, 10, 20], "seeds": [0], "protocols": ["finetune", "linear"]},
    "occlusion": {"kinds": ["spatial", "temporal"], "ratio": [0.3, 0.7], "seed": 0},
    "transfer": {"source": None, "targets": [], "runs": []},
}


def read_params(params: Path | None) -> dict[str, Any]:
    """The params file as a mapping of sections (a fresh copy: callers may change it)."""
    if params is None:
        return {}
    params = Path(params)
    if not params.is_file():
        raise StageError(f"{params}: params file does not exist")
    raw = params.read_bytes()
    return copy.deepcopy(parse_params(str(params), raw))


@functools.lru_cache(maxsize=16)
def parse_params(name: str, raw: bytes) -> dict[str, Any]:
    """``raw`` parsed, once per content: the tables stage reads a run's entry for every row,
    and PyYAML takes a fifth of a second for the project's params."""
    try:
        text = raw.decode("utf-8-sig")
        document = yaml.safe_load(text) or {}
    except UnicodeDecodeError as err:
        raise StageError(syntax_error_message(name, err, raw, "not a readable params file: "))\
            from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: "!!int abc"
        raise StageError(syntax_error_message(name, err, text, "not a readable params file: "))\
            from None
    if not isinstance(document, dict):
        raise StageError(f"{name}: not a mapping of sections")
    return document


def load_section(params: Path | None, section: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then the params file's section, then the non-None command-line overrides."""
    values = dict(DEFAULTS.get(section, {}))
    given = read_params(params).get(section) or {}
    if not isinstance(given, dict):
        raise StageError(f"{params}: '{section}' must map its keys to values")
    problem = unknown_keys(given, values, place=f"'{section}'")
    if problem and section in DEFAULTS:
        raise StageError(f"{params}: {problem}")
    values.update(given)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


@dataclass(frozen=True)
class Run:
    """One pretraining run, resolved from its params entry and the defaults."""

    name: str
    method: str
    streams: tuple[str, ...]
    variant: str
    encoder: str | tuple[str, ...]  # one encoder kind, or several (a method that trains several)
    encoder_options: dict[str, Any]
    options: dict[str, Any]
    train: TrainConfig
    start: str | None = None  # the run whose exported encoders this run starts from

    def encoder_names(self) -> list[str]:
        """The names of the encoders the run exports: its streams, or stream.kind for each kind
        when it trains several (``joint.bigru``, ``joint.agcn``)."""
        return encoder_names(self.streams, encoder_kinds(self.encoder))

    @property
    def trained(self) -> bool:
        return self.method != "untrained"

    def build(self, layout: Layout, num_persons: int) -> Method:
        """A fresh method (fresh encoders for ``untrained``) seeded by the run's seed."""
        torch.manual_seed(self.train.seed)
        try:
            return build_method(self.method, self.streams, layout, num_persons, self.encoder,
                                self.encoder_options, self.options, where=f"run {self.name!r}")
        except OptionsError as err:
            raise StageError(str(err)) from None

    def settings(self) -> dict[str, Any]:
        """What makes the run what it is (stored with its checkpoint and encoder files)."""
        return {"method": self.method, "streams": list(self.streams), "variant": self.variant,
                "encoder": self.encoder if isinstance(self.encoder, str) else list(self.encoder),
                "encoder_options": self.encoder_options,
                "options": self.options, **({"start": self.start} if self.start else {})}


def run_entries(document: dict[str, Any], where: str = "params") -> dict[str, dict[str, Any]]:
    """Every run's entry by name: ``runs`` and the ``continued`` list (whose entries keep their
    ``run`` and ``start``); a name given twice is an error."""
    runs = document.get("runs") or {}
    if not isinstance(runs, dict):
        raise StageError(f"{where}: 'runs' must map run names to entries (method, streams, ...)")
    continued = document.get("continued") or []
    if not isinstance(continued, list) or not all(isinstance(e, dict) and "run" in e
                                                   and "start" in e for e in continued):
        raise StageError(f"{where}: 'continued' must be a list of run entries, each with 'run' "
                         f"(its name) and 'start' (the run it starts from)")
    entries = dict(runs)
    for entry in continued:
        if entry["run"] in entries:
            raise StageError(f"{where}: run {entry['run']!r} is given twice (in 'runs' and "
                             f"'continued', or twice in 'continued')")
        entries[entry["run"]] = entry
    return entries


def run_names(document: dict[str, Any], where: str = "params") -> list[str]:
    return list(run_entries(document, where))


def adhoc_entry(name: str) -> dict[str, Any] | None:
    """``<method>-<stream>[-<stream>...]`` names a run that params need not list."""
    method, *streams = name.split("-")
    if (method in METHODS or method in ALIASES) and streams and all(
            s in VIEWS for s in streams):
        return {"method": method, "streams": streams}
    return None


def load_run(params: Path | None, name: str, overrides: dict[str, Any] | None = None,
             split: str | None = None) -> Run:
    """The run ``name`` from params (or an ad-hoc ``<method>-<stream>`` run), checked: an
    unknown key names the run, the key and the accepted keys.

    An entry's ``per_split`` maps a split to the method options and training settings that
    differ on it (ISC: a queue of 8,192 and 600 epochs on PKU-MMD I), merged key by key over the
    entry's when ``split`` is given (pretraining); evaluation needs only what the run exports."""
    document = read_params(params)
    where = f"{params}: run {name!r}" if params else f"run {name!r}"
    entries = run_entries(document, str(params))
    entry = entries.get(name)
    continued = name in {e["run"] for e in document.get("continued") or []}
    if entry is None:
        entry = adhoc_entry(name)
        if entry is None:
            listed = ", ".join(run_names(document)) or "none"
            raise StageError(f"{where}: not in the params' runs (listed: {listed}), and not an "
                             f"ad-hoc <method>-<stream> name (methods: {', '.join(METHODS)}; "
                             f"streams: {', '.join(VIEWS)})")
    if not RUN_NAME.fullmatch(name):
        raise StageError(f"{where}: a run name is letters, digits, '-' and '_'")
    defaults = document.get("defaults") or {}
    for what, mapping, accepted in (("defaults", defaults, RUN_KEYS[2:-1]),
                                    ("entry", entry, CONTINUED_KEYS if continued else RUN_KEYS)):
        if not isinstance(mapping, dict):
            raise StageError(f"{where}: the {what} must be a mapping")
        problem = unknown_keys(mapping, accepted, place=f"the {what}")
        if problem:
            hint = ("; a run that starts from another run is an entry of the 'continued' list, "
                    "so that DVC sees the dependency") if "start" in mapping else ""
            raise StageError(f"{where}: {problem}{hint}")
    start = entry.get("start") if continued else None
    if continued and (start == name or start not in entries):
        raise StageError(f"{where}: start {start!r} must name another run of the params "
                         f"(listed: {', '.join(entries)})")
    per_split = entry.get("per_split") or {}
    if not isinstance(per_split, dict) or not all(isinstance(v, dict) for v in per_split.values()):
        raise StageError(f"{where}: per_split must map a split to {{options: ..., train: ...}}")
    for key, values in per_split.items():
        problem = unknown_keys(values, PER_SPLIT_KEYS, place=f"per_split.{key}")
        if problem:
            raise StageError(f"{where}: {problem}")
    own = per_split.get(split) or {}
    if own:
        entry = {**entry, **{k: {**(entry.get(k) or {}), **(own.get(k) or {})} for k in own}}
    merged = {**RUN_DEFAULTS, **defaults, **entry}
    # encoder options belong to their encoder: a level that switches encoders without giving
    # options starts from that encoder's own defaults, not from the options of the one before
    encoder, encoder_options = RUN_DEFAULTS["encoder"], RUN_DEFAULTS["encoder_options"]
    for level in (defaults, entry):
        if level.get("encoder", encoder) != encoder:
            encoder, encoder_options = level["encoder"], {}
        encoder_options = level.get("encoder_options", encoder_options)
    merged["encoder_options"] = encoder_options
    train = {**RUN_DEFAULTS["train"], **(defaults.get("train") or {}), **(entry.get("train") or {}),
             **{k: v for k, v in (overrides or {}).items() if v is not None}}
    problem = unknown_keys(train, RUN_DEFAULTS["train"], place="train")
    if problem:
        raise StageError(f"{where}: {problem}")
    if "method" not in entry or "streams" not in entry:
        raise StageError(f"{where}: an entry needs 'method' and 'streams'")
    streams = entry["streams"]
    if isinstance(streams, str) or not streams or any(s not in VIEWS for s in streams):
        raise StageError(f"{where}: streams must be a list of views from {', '.join(VIEWS)}, "
                         f"not {streams!r}")
    try:  # the method's and the encoder's own options, checked now, with the file named
        method = method_name(entry["method"], where)
        cls = method_class(method)
        if cls.multi_view is not None and (len(streams) > 1) != cls.multi_view:
            raise OptionsError(f"{where}: {entry['method']} learns "
                               + ("two or more streams" if cls.multi_view else "one stream")
                               + f", not {', '.join(streams)}")
        make_options(cls.Options, merged.get("options"), where)
        check_encoder_options(merged["encoder"], merged["encoder_options"] or {}, where)
        if len(encoder_kinds(merged["encoder"])) > 1 and not cls.several_encoders:
            raise OptionsError(f"{method} trains one encoder per stream, not "
                               f"{', '.join(encoder_kinds(merged['encoder']))}")
    except OptionsError as err:
        raise StageError(str(err) if str(err).startswith(where) else f"{where}: {err}") from None
    kinds = encoder_kinds(merged["encoder"])
    return Run(name, method, tuple(streams), str(merged["variant"]),
               kinds[0] if len(kinds) == 1 else kinds,
               dict(merged["encoder_options"] or {}), dict(merged.get("options") or {}),
               TrainConfig(**train), start)


def ensemble_runs(name: str, streams: tuple[str, ...] | None,
                  params: Path | None) -> dict[str, str]:
    """Which run provides each stream of an ensemble. ``name`` is a single-stream method (one
    run per stream, named ``<method>-<stream>``: ``skeletonclr`` -> ``skeletonclr-joint``, ...)
    or a multi-stream run, whose streams are the ensemble's (``crosclr-joint-motion-bone``)."""
    if name in METHODS and not METHODS[name].multi_view:
        if not streams:
            raise StageError(f"ensemble {name!r} needs its streams")
        return {s: f"{name}-{s}" for s in streams}
    run = load_run(params, name)
    if len(run.streams) < 2:
        raise StageError(f"ensemble {name!r}: name a single-stream method or a multi-stream run")
    streams = streams or run.streams
    missing = [s for s in streams if s not in run.streams]
    if missing:
        raise StageError(f"run {name!r} did not learn {', '.join(missing)}")
    return {s: name for s in streams}
