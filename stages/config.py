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

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from skelctl.data.clean import parse_variant
from skelctl.data.views import VIEWS
from skelctl.keys import closest, unknown_keys, unknown_name
from skelctl.methods import (ALIASES, METHODS, Method, MethodSpec, OptionsError, check_method,
                             encoder_kinds, make_options, method_class, method_name)
from skelctl.methods.base import encoder_names
from skelctl.options import check_mapping, check_value, describe, field_types
from skelctl.skeletons import Layout
from skelctl.settings import TrainConfig
from skelctl.stages.common import ParamsError, StageError
from skelctl.stages.params import parse_params, read_params
from skelctl.stages.sections import check_sections, section_defaults

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

# The evaluation protocols' settings: each section's typed defaults (stages/sections.py).
DEFAULTS: dict[str, dict[str, Any]] = {
    name: section_defaults(name)
    for name in ("linear", "knn", "ensemble", "finetune", "semi", "occlusion", "transfer")}


@functools.lru_cache(maxsize=16)
def check_runs(name: str, raw: bytes) -> None:
    """The runs of a params file's content (read by :func:`read_params`) checked, once per
    content: see :func:`check_document`."""
    check_document(parse_params(name, raw), name)


def check_document(document: dict[str, Any], name: str) -> None:
    """Every value of a params file by type and range, every run resolved (its method's and
    encoder's options, its training settings) and every name that refers to a run, split or view
    checked, before any work starts: ParamsError in one line."""
    try:
        check_sections(document, name)
        entries = run_entries(document, name)
        for run in entries:
            split_keys = ((entries[run] or {}).get("per_split") or {}) \
                if isinstance(entries[run], dict) else {}
            for split in [None, *(split_keys if isinstance(split_keys, dict) else [])]:
                resolve_run(document, name, run, None, split)
        check_references(document, name, list(entries))
    except OptionsError as err:
        raise ParamsError(str(err)) from None


def check_references(document: dict[str, Any], name: str, runs: list[str]) -> None:
    """The runs that other sections name exist; splits are DATASET-PROTOCOL."""
    for split in document.get("splits") or []:
        if "-" not in split.strip("-"):
            raise OptionsError(f"{name}: splits: {split!r} must be <dataset>-<protocol>, e.g. "
                               f"ntu60-xsub")
    named = [("downstream." + k, v) for k, v in (document.get("downstream") or {}).items()]
    named += [("reproduce.runs", (document.get("reproduce") or {}).get("runs")),
              ("transfer.runs", (document.get("transfer") or {}).get("runs"))]
    for where, listed in named:
        for run in listed or []:
            if run not in runs and adhoc_entry(run) is None:
                raise OptionsError(unknown_name("run", run, runs, f"{name}: {where}"))


def load_section(params: Path | None, section: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then the params file's section, then the non-None command-line overrides."""
    values = section_defaults(section)
    values.update(read_params(params).get(section) or {})  # checked as the file was read
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
    spec: MethodSpec = dataclasses.field(repr=False, compare=False)  # checked: what build needs
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
            return self.spec.build(layout, num_persons)
        except OptionsError as err:  # a method's check of its options against its encoder
            raise StageError(f"runs.{self.name}: {err}") from None

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
        raise OptionsError(f"{where}: 'runs' must map run names to entries (method, streams, ...)")
    continued = document.get("continued") or []
    if not isinstance(continued, list) or not all(isinstance(e, dict) and "run" in e
                                                   and "start" in e for e in continued):
        raise OptionsError(f"{where}: 'continued' must be a list of run entries, each with 'run' "
                         f"(its name) and 'start' (the run it starts from)")
    entries = dict(runs)
    for index, entry in enumerate(continued):
        for key in ("run", "start"):
            check_value(entry[key], str, f"{where}: continued[{index}].{key}")
        if entry["run"] in entries:
            raise OptionsError(f"{where}: run {entry['run']!r} is given twice (in 'runs' and "
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
    unknown name is offered the closest run; an unknown key or a value of the wrong type names
    the file, the key path, what was expected and what was found.

    An entry's ``per_split`` maps a split to the method options and training settings that
    differ on it (ISC: a queue of 8,192 and 600 epochs on PKU-MMD I), merged key by key over the
    entry's when ``split`` is given (pretraining); evaluation needs only what the run exports."""
    document = read_params(params)
    try:
        return resolve_run(document, str(params) if params else "", name, overrides, split)
    except OptionsError as err:
        raise ParamsError(str(err)) from None


def unknown_run(document: dict[str, Any], params: str, name: str) -> str:
    """The one-line error for a run name that params do not list."""
    runs = run_names(document, params)
    head = f"{params}: " if params else ""
    hint = closest(name, runs)
    if not runs:
        where = (f"the params file {params} lists no runs" if params else
                 "no params file was given (--params FILE; params.yaml is read when present)")
        return (f"unknown run {name!r}: {where}, and it is not an ad-hoc <method>-<stream> name "
                f"(methods: {', '.join(METHODS)}; streams: {', '.join(VIEWS)})")
    return (f"{head}unknown run {name!r}{hint} (runs: {', '.join(runs)}; or an ad-hoc "
            f"<method>-<stream> name, methods: {', '.join(METHODS)}; streams: {', '.join(VIEWS)})")


def resolve_run(document: dict[str, Any], params: str, name: str,
                overrides: dict[str, Any] | None = None, split: str | None = None) -> Run:
    """:func:`load_run` on a params document already read (``params``: its file name, for the
    messages); raises OptionsError."""
    head = f"{params}: " if params else ""
    entries = run_entries(document, params)
    continued = [e["run"] for e in document.get("continued") or []]
    where = (f"{head}continued[{continued.index(name)}]" if name in continued
             else f"{head}runs.{name}")
    entry = entries.get(name)
    if entry is None:
        entry = adhoc_entry(name)
        if entry is None:
            raise OptionsError(unknown_run(document, params, name))
        where = f"run {name!r}"
    if not RUN_NAME.fullmatch(name):
        raise OptionsError(f"{where}: a run name is letters, digits, '-' and '_'")
    defaults = document.get("defaults") or {}
    for place, mapping, accepted in (
            (f"{head}defaults", defaults, RUN_KEYS[2:-1]),
            (where, entry, CONTINUED_KEYS if name in continued else RUN_KEYS)):
        if not isinstance(mapping, dict):
            raise OptionsError(f"{place}: expected a mapping of {', '.join(accepted)}, found "
                               f"{describe(mapping)}")
        problem = unknown_keys(mapping, accepted)
        if problem:
            hint = ("; a run that starts from another run is an entry of the 'continued' list, "
                    "so that DVC sees the dependency") if "start" in mapping else ""
            raise OptionsError(f"{place}: {problem}{hint}")
    start = entry.get("start") if name in continued else None
    if name in continued and (start == name or start not in entries):
        raise OptionsError(unknown_name("start run", start, [r for r in entries if r != name],
                                        f"{where}.start"))
    if "method" not in entry or "streams" not in entry:
        raise OptionsError(f"{where}: an entry needs 'method' and 'streams'")
    streams = check_value(entry["streams"], list[str], f"{where}.streams")
    for stream in streams:
        if stream not in VIEWS:
            raise OptionsError(unknown_name("stream", stream, VIEWS, f"{where}.streams"))
    if not streams:
        raise OptionsError(f"{where}.streams: expected at least one of {', '.join(VIEWS)}")
    method = method_name(check_value(entry["method"], str, f"{where}.method"), where)
    cls = method_class(method, f"{where}.method")
    # each value is checked where it is written: the defaults, the entry or its per_split
    per_split = check_value(entry.get("per_split") or {}, dict[str, dict[str, Any]],
                            f"{where}.per_split")
    levels = [(f"{head}defaults", defaults), (where, entry)]
    for key, values in per_split.items():
        problem = unknown_keys(values, PER_SPLIT_KEYS)
        if problem:
            raise OptionsError(f"{where}.per_split.{key}: {problem}")
        levels.append((f"{where}.per_split.{key}", values))
    for place, mapping in levels:
        for key, kind in (("variant", str), ("encoder", str | list[str]),
                          ("encoder_options", dict[str, Any] | None),
                          ("options", dict[str, Any] | None)):
            if key in mapping:
                check_value(mapping[key], kind, f"{place}.{key}")
        check_mapping(mapping.get("train"), field_types(TrainConfig), f"{place}.train")
        check_mapping(mapping.get("options"), field_types(cls.Options), f"{place}.options",
                      "option(s)")
    own = per_split.get(split) or {}
    if own:
        entry = {**entry, **{k: {**(entry.get(k) or {}), **(own.get(k) or {})} for k in own}}
    merged = {**RUN_DEFAULTS, **defaults, **entry}
    # encoder options belong to their encoder: a level that switches encoders without giving
    # options starts from that encoder's own defaults, not from the options of the one before
    encoder, encoder_options = RUN_DEFAULTS["encoder"], RUN_DEFAULTS["encoder_options"]
    options_place = where
    for place, level in levels[:2]:
        if level.get("encoder", encoder) != encoder:
            encoder, encoder_options, options_place = level["encoder"], {}, place
        if "encoder_options" in level:
            encoder_options, options_place = level["encoder_options"], place
    merged["encoder_options"] = encoder_options
    train = {**RUN_DEFAULTS["train"], **(defaults.get("train") or {}), **(entry.get("train") or {}),
             **{k: v for k, v in (overrides or {}).items() if v is not None}}
    check_variant(merged["variant"], f"{where}.variant" if "variant" in entry
                  else f"{head}defaults.variant")
    # the method, its streams, options and encoders as a whole (the type of each was checked)
    spec = check_method(method, streams, merged["encoder"], merged["encoder_options"] or {},
                        merged.get("options"), where, options_place)
    return Run(name, spec.name, spec.streams, str(merged["variant"]),
               spec.kinds[0] if len(spec.kinds) == 1 else spec.kinds,
               dict(merged["encoder_options"] or {}), dict(merged.get("options") or {}),
               make_options(TrainConfig, train, f"{where}.train"), spec, start)


def check_variant(variant: str, where: str) -> None:
    """A variant's form (``[upto|stride]FRAMES-NORMALISATION``), the normalisation's steps
    checked against the known ones with the closest offered."""
    try:
        parse_variant(variant)
    except ValueError as err:
        raise OptionsError(f"{where}: {err}") from None


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
