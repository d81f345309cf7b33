"""linear, knn and ensemble: the frozen-encoder protocols.

Every evaluation starts from exported encoder files (a run's ``<stream>.encoder.pt``, or any file
given with ``--encoder``), never from the pretraining method or the current pretrain params.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from skelctl.atomic import replacing, write_text
from skelctl.data.store import Store
from skelctl.evaluate.ensemble import joint_ensembles, posthoc_ensembles
from skelctl.evaluate.features import accuracy, extract_features
from skelctl.plots import confusion_matrix, save_confusion, save_curves, save_embedding
from skelctl.evaluate.crops import Crop, crop_features
from skelctl.evaluate.knn import knn_classify
from skelctl.evaluate.linear import LinearConfig, train_linear, train_linear_on_crops
from skelctl.evaluate.probe import cross_validated_probe, net_displacement, spectrum, whiten
from skelctl.keys import unknown_keys
from skelctl.methods import METHODS
from skelctl.models import load_encoder
from skelctl.train import Samples, resolve_device, training_samples
from skelctl.stages import paths
from skelctl.stages.common import (Result, StageError, by_kind, file_states, store_of, write_json_atomic,
                           writing, written_since)
from skelctl.stages.config import ensemble_runs, load_run, load_section


@dataclass
class Encoder:
    """An exported encoder opened for evaluation on a split's store."""

    module: nn.Module
    view: str
    info: dict[str, Any]
    store: Store
    protocol: str
    name: str  # the results folder: the run's name, or <run>@<split> for a file given by path
    path: Path  # the encoder file (fine-tuning starts from a fresh copy of it)
    key: str = ""  # the encoder's name in its run (stream, or stream.kind); default: the view

    def __post_init__(self) -> None:
        self.key = self.key or self.view

    def part(self, part: str) -> np.ndarray:
        return self.store.split(f"{self.protocol}/{part}")

    @property
    def label(self) -> str:
        """The encoder in words, for progress: ``<run> <encoder name>``."""
        return f"{self.name} {self.key}"

    def labels(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.store.meta(["label"])["label"][indices]).long()

    @property
    def num_classes(self) -> int:
        return int(self.store.attr("num_classes"))


def open_encoder(path: Path, split: str, data_dir: Path, name: str | None = None,
                 hint: str = "", key: str = "") -> Encoder:
    """Load an encoder file and the store it is evaluated on (the split's dataset, in the
    variant the encoder was trained on), checking that the skeletons match."""
    try:
        module, info = load_encoder(path)
    except FileNotFoundError:
        raise StageError(f"{path}: no encoder file{hint}") from None
    except ValueError as err:
        raise StageError(str(err)) from None
    variant = info["provenance"].get("variant")
    if not variant:
        raise StageError(f"{path}: the encoder file names no data variant")
    store, protocol = store_of(data_dir, split, variant)
    layout, store_layout = info["layout"], store.layout()
    if layout != store_layout or int(store.attr("max_bodies")) != info["num_persons"]:
        raise StageError(f"{path}: encoder made for layout {layout.name} with "
                         f"{info['num_persons']} bodies; {store.path} holds {store_layout.name} with "
                         f"{store.attr('max_bodies')} bodies")
    provenance = info["provenance"]
    name = name or (f"{provenance['run']}@{provenance['split']}" if "run" in provenance
                    else Path(path).name.split(".")[0])
    return Encoder(module, info["view"], info, store, protocol, name, Path(path), key)


def run_encoders(split: str, run_name: str | None, encoder_file: Path | None, data_dir: Path,
                 models_dir: Path, params: Path | None, source: str | None = None
                 ) -> list[Encoder]:
    """The encoders to evaluate on ``split``: one file, or every encoder a run exported (one per
    stream, or per stream and kind; trained on ``source``, by default the same split)."""
    if (run_name is None) == (encoder_file is None):
        raise StageError("name either a RUN or an --encoder FILE")
    if encoder_file is not None:
        return [open_encoder(encoder_file, split, data_dir)]
    source = source or split
    run = load_run(params, run_name)
    store_of(data_dir, split, run.variant)  # the split (a typo is named) before the encoders
    hint = f"; run `skelctl pretrain {run_name} --split {source}` first"
    return [open_encoder(paths.encoder_file(models_dir, source, run_name, key), split,
                         data_dir, run_name if source == split else f"{run_name}@{source}", hint,
                         key)
            for key in run.encoder_names()]


def features(encoder: Encoder, part: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Pre-projector features, labels and store indices of a split part."""
    indices = encoder.part(part)
    x = extract_features(encoder.module, encoder.store.take(encoder.view, indices), device,
                         desc=f"{encoder.label} {part} features")
    return x, encoder.labels(indices), indices


def evaluate_each(encoders: list[Encoder], split: str, protocol: str, results_dir: Path,
                  evaluate: Callable[[Encoder, Path], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``evaluate(encoder, out)`` for each encoder, ``out`` its result folder
    (``results/<split>/<protocol>/<run>/<encoder name>/``, created; the name is the stream, or
    stream.kind); writes each one's metrics.json and the run's summary of every encoder
    (``results/<split>/<protocol>/<run>.json``). The result names the files written."""
    results, written = {}, []
    summary = paths.result_summary(results_dir, split, encoders[0].name, protocol)
    with writing(summary.with_suffix("")):  # the run's result folder: one writer
        for encoder in encoders:
            out = paths.result_dir(results_dir, split, encoder.name, protocol, encoder.key)
            out.mkdir(parents=True, exist_ok=True)
            before = file_states(out)
            results[encoder.key] = evaluate(encoder, out)
            write_json_atomic(out / "metrics.json", results[encoder.key])
            written += written_since(out, before)
        write_json_atomic(summary, results)
    return Result(results, {"summary": [summary], **by_kind(written)})


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    with replacing(path, ".npz") as tmp:
        np.savez(tmp, **arrays)


def write_curve(path: Path, curve: list[dict[str, float]], title: str = "") -> None:
    """The per-epoch curve as CSV and, beside it, its accuracy (and loss) lines as PNG."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(curve[0]))
    writer.writeheader()
    writer.writerows(curve)
    write_text(path, buffer.getvalue())
    save_curves(curve, "epoch", [k for k in curve[0] if k != "epoch"], path.with_suffix(".png"),
                title or path.parent.name, "accuracy (%)")


def write_class_figures(out: Path, features_x: torch.Tensor, labels: torch.Tensor,
                        logits: torch.Tensor, num_classes: int, title: str) -> None:
    """The confusion matrix of the classifier (CSV and PNG) and a t-SNE of the evaluated test
    features coloured by class (PNG), as CRRL's Figs. 6 and 8."""
    matrix = confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), num_classes)
    write_text(out / "confusion.csv", "\n".join(",".join(map(str, row))
                                                        for row in matrix) + "\n")
    save_confusion(matrix, out / "confusion.png", f"{title}: confusion (last epoch)")
    save_embedding(features_x.numpy(), labels.numpy(), out / "tsne.png",
                   f"{title}: t-SNE of test features")


# the keys of a protocol's `crop` (ISC's crops of the real sequences); KNN has no training, so
# both its sides take the centre crop
CROP_KEYS = {"linear": ("train", "test", "frames", "min_frames"), "knn": ("test", "frames"),
             "finetune": ("train", "test", "frames", "min_frames")}


def parse_crop(value: Any, where: str, section: str) -> Crop | None:
    """A ``crop`` setting (null: the fixed-length view, no crops) as :class:`Crop`, checked."""
    if value is None:
        return None
    keys = CROP_KEYS[section]
    if not isinstance(value, dict):
        raise StageError(f"{where} must map {', '.join(keys)} to values, or be null; "
                         f"not {value!r}")
    problem = unknown_keys(value, keys)
    if problem:
        raise StageError(f"{where}: {problem}")
    try:
        return Crop(**value) if "train" in keys else Crop(train=None, **value)
    except ValueError as err:
        raise StageError(f"{where}: {err}") from None


def protocol_settings(params: Path | None, section: str, run_name: str | None,
                      overrides: dict[str, Any]) -> dict[str, Any]:
    """A protocol's settings for a run: the params' ``section``, then the run's own entry under
    its ``runs`` (a paper's own protocol for that run: the section's keys that differ), then the
    command line's overrides; ``crop`` as a :class:`Crop` or None."""
    config = load_section(params, section, {})  # keys and types checked as the file was read
    own = (config.pop("runs") or {}).get(run_name) or {}
    config.update(own)
    config.update({k: v for k, v in overrides.items() if v is not None})
    where = f"{params}: {section}.runs.{run_name}" if "crop" in own else f"{params}: {section}"
    config["crop"] = parse_crop(config["crop"], f"{where}.crop", section)
    return config


def linear_config(params: Path | None, overrides: dict[str, Any], run_name: str | None = None
                  ) -> tuple[LinearConfig, torch.device]:
    """The linear protocol: the params' ``linear`` section, then the run's own entry under its
    ``runs`` (a paper's own protocol for that method), then the command line's overrides."""
    config = protocol_settings(params, "linear", run_name, overrides)
    device = resolve_device(config.pop("device"))
    return LinearConfig(**{k: config[k] for k in LinearConfig.__dataclass_fields__
                           if k in config}), device


def linear_label(config: LinearConfig) -> str:
    """The linear protocol in words, for the metrics' ``protocol``."""
    schedule = f"lr {config.lr} x{config.lr_gamma} at {config.lr_steps}, {config.epochs} epochs"
    if config.nesterov:
        schedule = f"Nesterov {schedule}, batch {config.batch_size}"
    if config.crop is None:
        return f"paper (frozen features, {schedule})"
    return f"ISC ({config.crop.label()}, {schedule})"


def sequence_samples(encoder: Encoder, indices: np.ndarray) -> Samples:
    """The real variable-length sequences and labels of store ``indices``, for crops."""
    return training_samples(encoder.store, indices, (), sequences=True)


def part_features(encoder: Encoder, part: str, device: torch.device,
                  crop: Crop | None) -> tuple[torch.Tensor, ...]:
    """:func:`features` of a split part: of the fixed-length view, or with ``crop`` of the
    centre crops of the real sequences."""
    if crop is None:
        return features(encoder, part, device)
    indices = encoder.part(part)
    x = crop_features(encoder.module, encoder.view, encoder.info["layout"],
                      sequence_samples(encoder, indices), crop, device,
                      desc=f"{encoder.label} {part} features (centre crops)")
    return x, encoder.labels(indices), indices


def linear_protocols(train: tuple, test: tuple, num_classes: int, config: LinearConfig,
                     device: torch.device, desc: str | None = None
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paper's protocol (the headline) and, labelled beside it, the same classifier on
    standardised features; returns the paper protocol's full result and the merged metrics.
    With ``desc`` (the encoder), progress an epoch."""
    paper = train_linear(train[0], train[1], test[0], test[1], num_classes, config, device,
                         desc and f"{desc} linear")
    standardised = train_linear(train[0], train[1], test[0], test[1], num_classes,
                                dataclasses.replace(config, standardise=True), device,
                                desc and f"{desc} linear, standardised")
    return paper, linear_metrics(paper, standardised, config)


def linear_metrics(paper: dict[str, Any], standardised: dict[str, Any],
                   config: LinearConfig) -> dict[str, Any]:
    """The headline's metrics, the protocol in words and the standardised figures beside."""
    return {**paper["metrics"], "protocol": linear_label(config),
            "standardised": standardised["metrics"]}


def crop_linear(encoder: Encoder, indices: np.ndarray, test: tuple,
                configs: list[LinearConfig], device: torch.device) -> list[dict[str, Any]]:
    """ISC's linear protocol: heads of ``configs`` trained on fresh random crops of the store
    ``indices``' sequences every epoch, tested on ``test`` (centre-crop features, labels)."""
    return train_linear_on_crops(encoder.module, encoder.view, encoder.info["layout"],
                                 sequence_samples(encoder, indices), test[0], test[1],
                                 encoder.num_classes, configs, device,
                                 f"{encoder.label} linear (random crops)")


def evaluate_linear(encoder: Encoder, config: LinearConfig, device: torch.device
                    ) -> tuple[dict[str, Any], dict[str, Any], tuple]:
    """The linear protocol of ``config`` on the split (fixed features, or ISC's crops with
    ``config.crop``), the standardised classifier beside it; returns the headline's full result,
    the metrics and the test features, labels and indices."""
    if config.crop is None:
        train, test = features(encoder, "train", device), features(encoder, "val", device)
        return (*linear_protocols(train, test, encoder.num_classes, config, device,
                                  encoder.label), test)
    test = part_features(encoder, "val", device, config.crop)
    paper, standardised = crop_linear(encoder, encoder.part("train"), test,
                                      [config, dataclasses.replace(config, standardise=True)],
                                      device)
    return paper, linear_metrics(paper, standardised, config), test


def run_linear(split: str, run_name: str | None, data_dir: Path, models_dir: Path,
               results_dir: Path, params: Path | None, overrides: dict[str, Any],
               encoder_file: Path | None = None) -> dict[str, dict[str, Any]]:
    """Linear evaluation of every encoder; writes metrics.json, logits.npz and curve.csv per
    view."""
    config, device = linear_config(params, overrides, run_name)
    figures = protocol_settings(params, "linear", run_name, {})["figures"]

    def evaluate(encoder: Encoder, out: Path) -> dict[str, Any]:
        paper, metrics, test = evaluate_linear(encoder, config, device)
        save_arrays(out / "logits.npz", last=paper["logits_last"].numpy(),
                    best=paper["logits_best"].numpy(), labels=test[1].numpy(), indices=test[2])
        write_curve(out / "curve.csv", paper["curve"], f"{encoder.name} {encoder.view} linear")
        if figures:
            write_class_figures(out, test[0].cpu(), test[1].cpu(), paper["logits_last"],
                                encoder.num_classes, f"{encoder.name} {encoder.view}")
        return metrics

    return evaluate_each(run_encoders(split, run_name, encoder_file, data_dir, models_dir,
                                      params), split, "linear", results_dir, evaluate)


def run_knn(split: str, run_name: str | None, data_dir: Path, models_dir: Path,
            results_dir: Path, params: Path | None, overrides: dict[str, Any],
            encoder_file: Path | None = None) -> dict[str, dict[str, Any]]:
    """KNN retrieval (cosine, k from params) for every encoder: on the fixed-length view, or
    with ``crop`` (ISC's) on the centre crops of the real sequences, train and test alike."""
    config = protocol_settings(params, "knn", run_name, overrides)
    device, crop = resolve_device(config["device"]), config["crop"]
    label = "fixed view (frozen features)" if crop is None else f"ISC ({crop.label()})"

    def evaluate(encoder: Encoder, out: Path) -> dict[str, Any]:
        (train_x, train_y, train_idx) = part_features(encoder, "train", device, crop)
        (test_x, test_y, test_idx) = part_features(encoder, "val", device, crop)
        neighbours, similarities, scores = knn_classify(train_x, train_y, test_x,
                                                        encoder.num_classes, config["k"])
        save_arrays(out / "neighbours.npz", neighbours=train_idx[neighbours.numpy()],
                    similarities=similarities.numpy(), scores=scores.numpy(),
                    labels=test_y.numpy(), indices=test_idx)
        return {"top1": accuracy(scores, test_y, 1), "k": config["k"],
                "train_samples": len(train_x), "test_samples": len(test_x), "protocol": label}

    return evaluate_each(run_encoders(split, run_name, encoder_file, data_dir, models_dir,
                                      params), split, "knn", results_dir, evaluate)


def run_ensemble(split: str, name: str, streams: tuple[str, ...] | None, data_dir: Path,
                 models_dir: Path, results_dir: Path, params: Path | None,
                 weights: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Two ensemble protocols over the streams, each for the 2s and 3s groups:

    - ``posthoc`` (AimCLR's): a weighted sum of the streams' linear-evaluation logits;
    - ``joint`` (CrosSCLR's own): the streams' linear heads trained together on the mean of
      their logits (the paper protocol's settings).

    ``name`` is a single-stream method (one run per stream) or a multi-stream run.
    """
    section = load_section(params, "ensemble", {})
    if streams is None and name in METHODS:  # a single-stream method: the streams from params
        streams = tuple(section["streams"])
    runs = ensemble_runs(name, streams, params)
    streams = tuple(runs)
    if len(streams) < 2:
        raise StageError("an ensemble needs at least two streams")
    if weights is None:
        table = section["weights"]
        missing = [s for s in streams if s not in table]
        if missing:
            raise StageError(f"no ensemble weight for {', '.join(missing)} in params")
        weights = tuple(float(table[s]) for s in streams)
    if len(weights) != len(streams):
        raise StageError(f"{len(streams)} streams but {len(weights)} weights")
    logits, labels = {}, None
    for stream in streams:
        path = paths.result_dir(results_dir, split, runs[stream], "linear", stream) / "logits.npz"
        if not path.is_file():
            raise StageError(f"{path}: missing; run the linear stage of run {runs[stream]!r}")
        with np.load(path) as saved:
            logits[stream] = {k: torch.from_numpy(saved[k]) for k in ("last", "best")}
            if labels is not None and not np.array_equal(labels, saved["labels"]):
                raise StageError(f"{path}: test samples differ from the other streams'")
            labels = saved["labels"]
    target = torch.from_numpy(labels).long()
    config, device = linear_config(params, {})
    # CrosSCLR's joint protocol: the streams' heads trained together on fixed features
    config = dataclasses.replace(config, crop=None)
    by_stream = {e.view: e for run in dict.fromkeys(runs.values())
                 for e in run_encoders(split, run, None, data_dir, models_dir, params)
                 if runs.get(e.view) == run}
    feats = {s: (features(by_stream[s], "train", device), features(by_stream[s], "val", device))
             for s in streams}
    by_weight = dict(zip(streams, weights))
    metrics: dict[str, Any] = {
        "ensemble": name, "weights": by_weight, "runs": runs,
        "posthoc": posthoc_ensembles(logits, by_weight, target),
        "joint": joint_ensembles({s: feats[s][0][0] for s in streams}, feats[streams[0]][0][1],
                                 {s: feats[s][1][0] for s in streams}, target,
                                 by_stream[streams[0]].num_classes, config, device, name)}
    out = paths.ensemble_dir(results_dir, split, name) / "metrics.json"
    write_json_atomic(out, metrics)
    return Result(metrics, {"metrics": [out]})


def run_probe(split: str, run_name: str | None, data_dir: Path, models_dir: Path,
              results_dir: Path, params: Path | None, overrides: dict[str, Any],
              encoder_file: Path | None = None) -> dict[str, dict[str, Any]]:
    """What each encoder's features encode, on the split's test part: linear probes to the
    recording's length (frames), the body's net displacement, the camera view and the action,
    by 5-fold cross-validation (see :mod:`skelctl.evaluate.probe`). A target that is constant
    on the test part (the view of a cross-view protocol) is probed over all the split's
    samples instead. Beside them: the test features' covariance spectrum, and KNN (k = 1,
    cosine) before and after whitening fitted on the training part."""
    config = protocol_settings(params, "knn", run_name, {"device": overrides.get("device")})
    device = resolve_device(config["device"])

    def evaluate(encoder: Encoder, out: Path) -> dict[str, Any]:
        indices = np.sort(np.concatenate([encoder.part("train"), encoder.part("val")]))
        x = extract_features(encoder.module, encoder.store.take(encoder.view, indices),
                             device, desc=f"{encoder.label} features").cpu()
        meta = encoder.store.meta(["n_frames", "view", "label"])
        targets = {"length": (meta["n_frames"][indices], False),
                   "displacement": (net_displacement(encoder.store.take("joint", indices),
                                                     encoder.store.layout().center), False),
                   "view": (meta["view"][indices], True),
                   "action": (meta["label"][indices], True)}
        test = torch.from_numpy(np.isin(indices, encoder.part("val")))
        figures = {}
        for target, (values, categorical) in targets.items():
            on_test = len(np.unique(values[test.numpy()])) > 1
            rows = test if on_test else torch.ones_like(test)
            figures[target] = {**cross_validated_probe(x[rows], values[rows.numpy()],
                                                       categorical),
                               "samples": "test part" if on_test else "all samples"}
        # how the test features fill their space, and retrieval with every direction weighted
        # alike (KNN after whitening fitted on the training part) beside plain retrieval
        figures["spectrum"] = spectrum(x[test])
        labels = torch.from_numpy(meta["label"][indices]).long()
        train_y, test_y = labels[~test], labels[test]
        classes = int(encoder.store.attr("num_classes"))
        white_train, white_test = whiten(x[~test], x[test])
        figures["knn"] = {
            "plain": accuracy(knn_classify(x[~test], train_y, x[test], classes)[2], test_y),
            "whitened": accuracy(knn_classify(white_train, train_y, white_test, classes)[2],
                                 test_y)}
        return figures

    return evaluate_each(run_encoders(split, run_name, encoder_file, data_dir, models_dir,
                                      params), split, "probe", results_dir, evaluate)
