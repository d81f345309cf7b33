"""linear, knn, ensemble and probe: the frozen-encoder protocols over a run's exported encoder
files (see :mod:`skelctl.stages.encoders`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skelctl.atomic import write_text
from skelctl.evaluate.encoder import EvaluatedEncoder
from skelctl.evaluate.ensemble import joint_ensembles, posthoc_ensembles
from skelctl.evaluate.features import accuracy, extract_features
from skelctl.evaluate.knn import knn_classify
from skelctl.evaluate.linear import evaluate_linear
from skelctl.evaluate.probe import cross_validated_probe, net_displacement, spectrum, whiten
from skelctl.methods import METHODS
from skelctl.plots import confusion_matrix, save_confusion, save_embedding
from skelctl.stages import paths
from skelctl.stages.common import Result, StageError, write_json_atomic
from skelctl.stages.config import ensemble_runs, load_section
from skelctl.stages.encoders import (evaluate_each, linear_config, protocol_settings,
                                     run_encoders, save_arrays, write_curve)
from skelctl.train import resolve_device


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


def run_linear(split: str, run_name: str | None, data_dir: Path, models_dir: Path,
               results_dir: Path, params: Path | None, overrides: dict[str, Any],
               encoder_file: Path | None = None) -> Result:
    """Linear evaluation of every encoder; writes metrics.json, logits.npz and curve.csv per
    view."""
    config, device = linear_config(params, overrides, run_name)
    figures = protocol_settings(params, "linear", run_name, {})["figures"]

    def evaluate(encoder: EvaluatedEncoder, out: Path) -> dict[str, Any]:
        result = evaluate_linear(encoder, config, device)
        paper, test = result.paper, result.test
        save_arrays(out / "logits.npz", last=paper.logits_last.numpy(),
                    best=paper.logits_best.numpy(), labels=test.labels.numpy(),
                    indices=test.indices)
        write_curve(out / "curve.csv", paper.curve, f"{encoder.name} {encoder.view} linear")
        if figures:
            write_class_figures(out, test.x.cpu(), test.labels.cpu(), paper.logits_last,
                                encoder.num_classes, f"{encoder.name} {encoder.view}")
        return result.metrics

    return evaluate_each(run_encoders(split, run_name, encoder_file, data_dir, models_dir,
                                      params), split, "linear", results_dir, evaluate)


def run_knn(split: str, run_name: str | None, data_dir: Path, models_dir: Path,
            results_dir: Path, params: Path | None, overrides: dict[str, Any],
            encoder_file: Path | None = None) -> Result:
    """KNN retrieval (cosine, k from params) for every encoder: on the fixed-length view, or
    with ``crop`` (ISC's) on the centre crops of the real sequences, train and test alike."""
    config = protocol_settings(params, "knn", run_name, overrides)
    device, crop = resolve_device(config["device"]), config["crop"]
    label = "fixed view (frozen features)" if crop is None else f"ISC ({crop.label()})"

    def evaluate(encoder: EvaluatedEncoder, out: Path) -> dict[str, Any]:
        train = encoder.features("train", device, crop)
        test = encoder.features("val", device, crop)
        neighbours, similarities, scores = knn_classify(train.x, train.labels, test.x,
                                                        encoder.num_classes, config["k"])
        save_arrays(out / "neighbours.npz", neighbours=train.indices[neighbours.numpy()],
                    similarities=similarities.numpy(), scores=scores.numpy(),
                    labels=test.labels.numpy(), indices=test.indices)
        return {"top1": accuracy(scores, test.labels, 1), "k": config["k"],
                "train_samples": len(train.x), "test_samples": len(test.x), "protocol": label}

    return evaluate_each(run_encoders(split, run_name, encoder_file, data_dir, models_dir,
                                      params), split, "knn", results_dir, evaluate)


def run_ensemble(split: str, name: str, streams: tuple[str, ...] | None, data_dir: Path,
                 models_dir: Path, results_dir: Path, params: Path | None,
                 weights: tuple[float, ...] | None = None) -> Result:
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
    train = {s: by_stream[s].features("train", device) for s in streams}
    test = {s: by_stream[s].features("val", device) for s in streams}
    by_weight = dict(zip(streams, weights))
    metrics: dict[str, Any] = {
        "ensemble": name, "weights": by_weight, "runs": runs,
        "posthoc": posthoc_ensembles(logits, by_weight, target),
        "joint": joint_ensembles({s: train[s].x for s in streams}, train[streams[0]].labels,
                                 {s: test[s].x for s in streams}, target,
                                 by_stream[streams[0]].num_classes, config, device, name)}
    out = paths.ensemble_dir(results_dir, split, name) / "metrics.json"
    write_json_atomic(out, metrics)
    return Result(metrics, {"metrics": [out]})


def run_probe(split: str, run_name: str | None, data_dir: Path, models_dir: Path,
              results_dir: Path, params: Path | None, overrides: dict[str, Any],
              encoder_file: Path | None = None) -> Result:
    """What each encoder's features encode, on the split's test part: linear probes to the
    recording's length (frames), the body's net displacement, the camera view and the action,
    by 5-fold cross-validation (see :mod:`skelctl.evaluate.probe`). A target that is constant
    on the test part (the view of a cross-view protocol) is probed over all the split's
    samples instead. Beside them: the test features' covariance spectrum, and KNN (k = 1,
    cosine) before and after whitening fitted on the training part."""
    config = protocol_settings(params, "knn", run_name, {"device": overrides.get("device")})
    device = resolve_device(config["device"])

    def evaluate(encoder: EvaluatedEncoder, out: Path) -> dict[str, Any]:
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
