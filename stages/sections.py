"""The params file's sections, each a typed dataclass holding its defaults (the one place they
are written), and the check of a whole params file against them before any work starts.

A wrong value anywhere (a section, a run entry, its training settings, its method's or encoder's
options) gives one line naming the file, the key path, what was expected and what was found::

    params.yaml: linear.lr: expected a number above 0, found '0.o4' (text)

The run entries' own keys are checked where they are resolved (:func:`stages.config.resolve_run`,
against the method's ``Options`` and the encoder's keywords); names that refer to something (a
run, a split, a view, a variant) are checked against what exists, with the closest one offered.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from skelctl.data.views import VIEWS
from skelctl.settings import Crop, LinearConfig, TrainConfig
from skelctl.keys import unknown_keys, unknown_name
from skelctl.options import (Check, NonNegativeFloat, NonNegativeInt, OptionsError,
                             PositiveFloat, PositiveInt, Range, check_mapping, check_value,
                             field_types, make_options)

Device = str  # auto, cpu, cuda, cuda:1 ... (resolved by torch when the stage runs)


def check_crop(value: dict[str, Any] | None, path: str) -> None:
    if value is not None:
        make_options(Crop, value, path)


def check_augmentations(value: dict[str, Any], path: str) -> None:
    from skelctl.augment import check_chain  # torch: imported when a section sets a chain

    check_chain(value, path)


# ISC's crop protocol (skelctl.evaluate.crops.Crop), or null: the fixed-length view
CropSettings = Annotated[dict[str, Any] | None, Check(check_crop)]
# an augmentation chain (skelctl.augment.AugmentChain), checked without importing torch first
AugmentSettings = Annotated[dict[str, Any], Check(check_augmentations)]
Percent = Annotated[float, Range(0, 100, low_open=True)]
Ratio = Annotated[float, Range(0, 1)]


def default(value: Any) -> Any:
    """A field whose default is a fresh copy of ``value`` (a list or mapping)."""
    return field(default_factory=lambda: copy.deepcopy(value))


@dataclass
class LinearSection(LinearConfig):
    """``linear``: the frozen-encoder linear protocol (CrosSCLR's; ``runs`` holds a run's own
    protocol where its paper gives one): the library's :class:`LinearConfig` and the stage's
    own keys."""

    crop: CropSettings = None  # ISC's crops of the real sequences (a mapping here)
    device: Device = "auto"
    figures: bool = True  # each evaluation's confusion matrix (CSV, PNG) and t-SNE
    runs: dict[str, dict[str, Any]] = default({})  # run name -> the keys that differ for it


@dataclass
class KnnSection:
    """``knn``: retrieval with cosine similarity of pre-projector features."""

    k: PositiveInt = 1
    device: Device = "auto"
    crop: CropSettings = None
    runs: dict[str, dict[str, Any]] = default({})


@dataclass
class EnsembleSection:
    """``ensemble``: per-stream weights (AimCLR's: joint 0.6, motion 0.4, bone 0.6; velocity as
    motion) and the streams of the ensembles."""

    weights: dict[str, NonNegativeFloat] = default(
        {"joint": 0.6, "motion": 0.4, "bone": 0.6, "velocity": 0.4})
    streams: list[str] = default(["joint", "motion", "bone"])


@dataclass
class FinetuneSection(TrainConfig):
    """``finetune`` (semi-supervised, fine-tune, transfer): the whole network and a linear head,
    AimCLR's fine-tune settings, the pretraining augmentations; the training keys are a run's
    ``train`` keys (:class:`skelctl.settings.TrainConfig`: MAMP fine-tunes with adamw, cosine
    after 5 warmup epochs and layer_decay 0.8)."""

    epochs: PositiveInt = 100
    lr_steps: list[PositiveInt] = default([80])
    eval_every: PositiveInt = 1
    augment: AugmentSettings = default(
        {"crop": {"padding_ratio": 6}, "shear": {"amplitude": 0.5}})
    crop: CropSettings = None
    runs: dict[str, dict[str, Any]] = default({})


@dataclass
class SemiSection:
    """``semi``: the label fractions (percent, per class), seeds and protocols."""

    percents: list[Percent] = default([1, 5, 10, 20])
    seeds: list[int] = default([0])
    protocols: list[Literal["finetune", "linear"]] = default(["finetune", "linear"])


@dataclass
class OcclusionSection:
    """``occlusion``: test-time masking of body parts (spatial) or frames (temporal)."""

    kinds: list[Literal["spatial", "temporal"]] = default(["spatial", "temporal"])
    ratio: list[Ratio] = default([0.3, 0.7])  # the masking ratio ~ U(low, high)
    seed: int = 0


@dataclass
class TransferSection:
    """``transfer``: the split pretrained on and the splits fine-tuned on."""

    source: str | None = None
    targets: list[str] = default([])
    runs: list[str] = default([])


@dataclass
class ParseSection:
    jobs: PositiveInt = 1
    on_error: Literal["skip", "fail"] = "skip"


@dataclass
class CleanSection:
    jobs: PositiveInt = 1
    max_bodies: Annotated[int, Range(1, 4)] = 2
    denoise: bool = True
    length_threshold: NonNegativeInt = 11
    spread_ratio: PositiveFloat = 0.8
    spread_noise_ratio: Ratio = 0.69754


@dataclass
class ViewsSection:
    jobs: PositiveInt = 1
    variants: list[str] = default(["50-shoulder"])
    names: str = ",".join(VIEWS)  # the views to store, comma-separated


@dataclass
class SynthEntry:
    subjects: Annotated[int, Range(1, 40)] = 8
    replications: Annotated[int, Range(1, 9)] = 2
    seed: int = 0


@dataclass
class DatasetEntry:
    """A dataset of the ``datasets`` section: how ``skelctl parse NAME`` imports it."""

    format: str = "generic"
    layout: str | dict[str, Any] | None = None
    # protocol -> {train: {column: [values]}, val: ...}: the samples each part takes
    protocols: dict[str, dict[str, dict[str, list[int | str]]]] = default({})
    labels_from: int | None = None


@dataclass
class ReproduceSection:
    runs: list[str] = default([])


@dataclass
class DownstreamSection:
    """The runs each downstream protocol evaluates."""

    semi: list[str] = default([])
    finetune: list[str] = default([])
    occlusion: list[str] = default([])
    transfer: list[str] = default([])


@dataclass
class ParamsFile:
    """Every section a params file may hold. ``defaults``, ``runs`` and ``continued`` are the
    pretraining runs, checked entry by entry where they are resolved."""

    synth: dict[str, SynthEntry] = default({})
    raw: dict[str, str] = default({})
    datasets: dict[str, DatasetEntry] = default({})
    parse: ParseSection = field(default_factory=ParseSection)
    clean: CleanSection = field(default_factory=CleanSection)
    views: ViewsSection = field(default_factory=ViewsSection)
    profile: str = ""
    splits: list[str] = default([])
    defaults: dict[str, Any] = default({})
    runs: dict[str, dict[str, Any] | None] = default({})
    continued: list[dict[str, Any]] = default([])
    reproduce: ReproduceSection = field(default_factory=ReproduceSection)
    reproduces: dict[str, dict[str, str]] = default({})
    ensembles: list[str] = default([])
    downstream: DownstreamSection = field(default_factory=DownstreamSection)
    linear: LinearSection = field(default_factory=LinearSection)
    knn: KnnSection = field(default_factory=KnnSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    semi: SemiSection = field(default_factory=SemiSection)
    occlusion: OcclusionSection = field(default_factory=OcclusionSection)
    transfer: TransferSection = field(default_factory=TransferSection)


SECTIONS: dict[str, type] = {name: kind for name, kind in field_types(ParamsFile).items()
                             if dataclasses.is_dataclass(kind)}


def section_defaults(section: str) -> dict[str, Any]:
    """The defaults of a section (a fresh mapping)."""
    return dataclasses.asdict(SECTIONS[section]())


# the sections the data stages read (parse, clean, views): checked without importing torch
DATA_SECTIONS = ("synth", "raw", "datasets", "parse", "clean", "views", "profile", "splits")


def check_sections(document: dict[str, Any], name: str, only: tuple[str, ...] | None = None
                   ) -> None:
    """Every section's values by type and range (``only``: just these sections', after the
    sections' names), and the names they refer to; raises OptionsError in one line naming
    ``name`` (the file) and the key path."""
    given = {k: v for k, v in document.items() if v is not None}
    types = field_types(ParamsFile)
    problem = unknown_keys(given, types, "section(s)")
    if problem:
        raise OptionsError(f"{name}: {problem}")
    if only is not None:
        given = {k: v for k, v in given.items() if k in only}
    for section, value in given.items():
        check_value(value, types[section], f"{name}: {section}")
    for section, kind in SECTIONS.items():  # a protocol's per-run settings: its own keys' types
        own = field_types(kind)
        runs = (given.get(section) or {}).get("runs") if isinstance(given.get(section), dict) \
            else None
        if isinstance(runs, dict) and typing.get_origin(own.get("runs")) is dict:
            for run, values in runs.items():
                check_mapping(values, {k: t for k, t in own.items() if k != "runs"},
                              f"{name}: {section}.runs.{run}")
    check_views(given, name)


def check_views(document: dict[str, Any], name: str) -> None:
    """View names where a section lists them."""
    where = f"{name}: "
    names = (document.get("views") or {}).get("names")
    if isinstance(names, str):
        for view in (v.strip() for v in names.split(",")):
            if view not in VIEWS:
                raise OptionsError(unknown_name("view", view, VIEWS, f"{where}views.names"))
    ensemble = document.get("ensemble") or {}
    for view in [*(ensemble.get("weights") or {}), *(ensemble.get("streams") or [])]:
        if view not in VIEWS:
            raise OptionsError(unknown_name("view", view, VIEWS, f"{where}ensemble"))


