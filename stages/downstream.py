"""semi, finetune, transfer and occlusion: the downstream protocols over exported encoders.

Each writes ``results/<split>/<protocol>/<name>/<view>/metrics.json`` (last- and best-epoch
accuracy, labelled) and a summary ``results/<split>/<protocol>/<name>.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skelctl.data.views import compute_view
from skelctl.evaluate.crops import centre_crops
from skelctl.evaluate.encoder import EvaluatedEncoder
from skelctl.evaluate.features import accuracy, extract_features
from skelctl.evaluate.finetune import finetune
from skelctl.evaluate.linear import (crop_linear, evaluate_linear, linear_label,
                                     linear_protocols, predict, train_linear)
from skelctl.evaluate.occlusion import OCCLUSIONS, occlude
from skelctl.evaluate.subsets import sample_per_class
from skelctl.models import load_encoder
from skelctl.options import OptionsError, make_options
from skelctl.stages.common import ParamsError, Result, StageError, write_json_atomic
from skelctl.stages.config import load_section
from skelctl.stages.encoders import (evaluate_each, linear_config, protocol_settings,
                                     run_encoders, write_curve)
from skelctl.train import remove_checkpoints, resolve_device, training_samples
from skelctl.settings import TrainConfig


def finetune_settings(params: Path | None, overrides: dict[str, Any], run_name: str | None = None
                      ) -> tuple[TrainConfig, dict[str, Any], torch.device]:
    """The loop's settings (the ``finetune`` section, then the run's own under its ``runs``,
    then the command line's), the rest (augmentations, test interval, crops, the protocol in
    words), the device."""
    section = protocol_settings(params, "finetune", run_name, overrides)
    settings = {key: section.pop(key) for key in ("augment", "eval_every", "crop")}
    try:  # each value's type was checked as params were read; here their combination
        config = make_options(TrainConfig, {k: v for k, v in section.items()
                                            if k in TrainConfig.__dataclass_fields__},
                              f"{params}: finetune" + (f".runs.{run_name}" if run_name else ""))
    except OptionsError as err:
        raise ParamsError(str(err)) from None
    augment = f", augment {', '.join(settings['augment'])}" if settings["augment"] else ""
    rate = (f"lr {config.lr} x{config.lr_gamma} at {config.lr_steps}"
            if config.lr_schedule == "step" else
            f"lr {config.lr} after {config.warmup_epochs} warmup epochs, cosine to "
            f"{config.min_lr}")
    decay = f", layer decay {config.layer_decay}" if config.layer_decay else ""
    schedule = f"{config.optimizer} {rate}{decay}, {config.epochs} epochs{augment}"
    crop = settings["crop"]
    settings["protocol"] = (f"fixed view ({schedule})" if crop is None
                            else f"ISC ({crop.label()}, {schedule})")
    return config, settings, resolve_device(config.device)


def finetune_encoder(encoder: EvaluatedEncoder, train_indices: np.ndarray, config: TrainConfig,
                     settings: dict[str, Any], device: torch.device, out: Path,
                     desc: str | None = None) -> dict[str, Any]:
    """Fine-tune a fresh copy of the encoder file on ``train_indices``, test on the split's val
    part, write curve.csv under ``out``; returns the metrics. With crops, the model trains on
    random crops of the real sequences and is tested on their centre crops. Progress is named
    ``desc`` (default: the encoder and ``finetune``)."""
    module, _ = load_encoder(encoder.path)  # a fresh copy: fine-tuning changes the weights
    crop = settings["crop"]
    test = encoder.part("val")
    if crop is None:
        samples = training_samples(encoder.store, train_indices, ("joint",))
        test_joint = encoder.store.take("joint", test)
    else:
        samples = encoder.sequences(train_indices)
        test_joint = centre_crops(encoder.sequences(test), crop)
    out.mkdir(parents=True, exist_ok=True)
    result = finetune(module, encoder.view, encoder.info["layout"], samples, test_joint,
                      encoder.labels(test), encoder.num_classes, config, settings["augment"],
                      device, checkpoint=out / "checkpoint.pt",
                      identity={"encoder": str(encoder.path),
                                "labelled": train_indices.tolist()},
                      eval_every=settings["eval_every"], crop=crop,
                      desc=desc or f"{encoder.label} finetune")
    write_curve(out / "curve.csv", result.curve)
    remove_checkpoints(out / "checkpoint.pt")  # finished: the metrics stand for it
    return {**result.metrics, "protocol": settings["protocol"]}


def mean(values: list[float]) -> float:
    return float(np.mean(values))


SEMI_PROTOCOLS = ("finetune", "linear")


def run_semi(split: str, run_name: str | None, data_dir: Path, models_dir: Path,
             results_dir: Path, params: Path | None, overrides: dict[str, Any],
             percents: tuple[float, ...] | None = None, seeds: tuple[int, ...] | None = None,
             encoder_file: Path | None = None) -> Result:
    """Semi-supervised evaluation on p % of the training labels (sampled per class,
    round(p n_c / 100), at least one), for every percent and seed, seeds averaged, by the
    protocols params name: ``finetune`` (encoder + linear head fine-tuned, ISC Table 2) and
    ``linear`` (a linear classifier on the frozen features, CrosSCLR Table 7)."""
    section = load_section(params, "semi", {})
    percents = tuple(percents or section["percents"])
    seeds = tuple(seeds if seeds is not None else section["seeds"])
    protocols = tuple(section["protocols"])
    unknown = set(protocols) - set(SEMI_PROTOCOLS)
    if unknown or not protocols:
        raise StageError(f"semi protocols must be among {', '.join(SEMI_PROTOCOLS)}, not "
                         f"{', '.join(protocols) or 'none'}")
    config, settings, device = finetune_settings(params, overrides, run_name)
    linear, _ = linear_config(params, {}, run_name)
    described = {"finetune": settings["protocol"], "linear": linear_label(linear)}

    def evaluate(encoder: EvaluatedEncoder, view_out: Path) -> dict[str, Any]:
        train = encoder.part("train")
        labels = encoder.labels(train).numpy()
        frozen = test_crops = None
        if "linear" in protocols and linear.crop is None:
            frozen = encoder.features("train", device), encoder.features("val", device)
        elif "linear" in protocols:  # ISC's crops: the training features differ every epoch
            test_crops = encoder.features("val", device, linear.crop)
        per_view: dict[str, Any] = {}
        for percent in percents:
            results: dict[str, list[dict[str, Any]]] = {p: [] for p in protocols}
            counts = []
            for seed in seeds:
                picked = sample_per_class(labels, percent, seed)
                chosen = train[picked]
                counts.append(len(chosen))
                out = view_out / f"p{percent:g}-s{seed}"
                out.mkdir(parents=True, exist_ok=True)
                np.save(out / "indices.npy", chosen)  # the labelled samples, as store indices
                if "finetune" in protocols:
                    metrics = finetune_encoder(encoder, chosen,
                                               dataclasses.replace(config, seed=seed), settings,
                                               device, out, f"{encoder.label} {percent:g} % "
                                               f"seed {seed} finetune")
                    write_json_atomic(out / "metrics.json", metrics)
                    results["finetune"].append(metrics)
                if "linear" in protocols and linear.crop is None:
                    frozen_train, frozen_test = frozen
                    results["linear"].append(train_linear(
                        frozen_train.x[picked], frozen_train.labels[picked], frozen_test.x,
                        frozen_test.labels, encoder.num_classes,
                        dataclasses.replace(linear, seed=seed), device,
                        f"{encoder.label} {percent:g} % seed {seed} linear").metrics)
                elif "linear" in protocols:
                    results["linear"].append(crop_linear(
                        encoder, chosen, test_crops, [dataclasses.replace(linear, seed=seed)],
                        device)[0].metrics)
            per_view[f"{percent:g}"] = {"percent": percent, "seeds": list(seeds),
                                        "labelled_samples": counts, **{
                protocol: {"protocol": described[protocol],
                           "top1_last": mean([r["top1_last"] for r in runs]),
                           "top1_best": mean([r["top1_best"] for r in runs]),
                           "top1_last_per_seed": [r["top1_last"] for r in runs],
                           "top1_best_per_seed": [r["top1_best"] for r in runs]}
                for protocol, runs in results.items()}}
        return per_view

    return evaluate_each(run_encoders(split, run_name, encoder_file, data_dir, models_dir,
                                      params), split, "semi", results_dir, evaluate)


def run_finetune(split: str, run_name: str | None, data_dir: Path, models_dir: Path,
                 results_dir: Path, params: Path | None, overrides: dict[str, Any],
                 encoder_file: Path | None = None) -> Result:
    """Fine-tune the whole network on all training labels of ``split``."""
    config, settings, device = finetune_settings(params, overrides, run_name)
    return evaluate_each(
        run_encoders(split, run_name, encoder_file, data_dir, models_dir, params), split,
        "finetune", results_dir, lambda encoder, out: finetune_encoder(
            encoder, encoder.part("train"), config, settings, device, out))


def run_transfer(split: str, run_name: str, source: str, data_dir: Path, models_dir: Path,
                 results_dir: Path, params: Path | None, overrides: dict[str, Any]
                 ) -> Result:
    """Transfer: a run pretrained on ``source`` is linear-evaluated and fine-tuned on ``split``
    (another dataset); results under ``results/<split>/transfer/<run>@<source>/``."""
    if source == split:
        raise StageError(f"transfer from {source} to itself: name another target split")
    linear, device = linear_config(params, {}, run_name)
    config, settings, _ = finetune_settings(params, overrides, run_name)

    def evaluate(encoder: EvaluatedEncoder, out: Path) -> dict[str, Any]:
        metrics = evaluate_linear(encoder, linear, device).metrics
        return {"source": source, "linear": metrics, "finetune": finetune_encoder(
            encoder, encoder.part("train"), config, settings, device, out)}

    return evaluate_each(run_encoders(split, run_name, None, data_dir, models_dir, params,
                                      source), split, "transfer", results_dir, evaluate)


def run_occlusion(split: str, run_name: str | None, data_dir: Path, models_dir: Path,
                  results_dir: Path, params: Path | None, encoder_file: Path | None = None
                  ) -> Result:
    """Occlusion robustness (PCM3 Sec. 4.3): the paper's linear protocol trained on clean
    features, tested on clean data and on test data with body parts masked (spatial) or a block
    of frames zeroed (temporal), masking ratio ~ U(ratio), seeded; the drop against clean."""
    section = load_section(params, "occlusion", {})
    unknown = set(section["kinds"]) - set(OCCLUSIONS)
    if unknown:
        raise StageError(f"unknown occlusion kind(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(OCCLUSIONS)}")
    config, device = linear_config(params, {})
    # PCM3's protocol: the head on fixed features, tested on occluded fixed-length views
    config = dataclasses.replace(config, crop=None)

    def evaluate(encoder: EvaluatedEncoder, out: Path) -> dict[str, Any]:
        train, test = encoder.features("train", device), encoder.features("val", device)
        paper = linear_protocols(train, test, encoder.num_classes, config, device,
                                 encoder.label).paper
        clean = {k: paper.metrics[k] for k in ("top1_last", "top1_best", "best_epoch")}
        metrics: dict[str, Any] = {"clean": clean, "ratio": list(section["ratio"]),
                                   "seed": section["seed"]}
        test_joint = torch.from_numpy(encoder.store.take("joint", test.indices))
        layout = encoder.info["layout"]
        for kind in section["kinds"]:
            generator = torch.Generator().manual_seed(int(section["seed"]))
            masked = occlude(test_joint, kind, layout, generator, tuple(section["ratio"]))
            x = extract_features(encoder.module, compute_view(encoder.view, masked, layout),
                                 device, desc=f"{encoder.label} {kind}-occluded test features")
            metrics[kind] = {}
            for which in ("last", "best"):
                top1 = accuracy(predict(getattr(paper, f"head_{which}"), x), test.labels, 1)
                metrics[kind][f"top1_{which}"] = top1
                metrics[kind][f"drop_{which}"] = clean[f"top1_{which}"] - top1
        return metrics

    return evaluate_each(run_encoders(split, run_name, encoder_file, data_dir, models_dir,
                                      params), split, "occlusion", results_dir, evaluate)
