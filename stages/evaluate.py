"""linear, knn and ensemble: the evaluation stages over pretrained runs."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skelctl.evaluate.ensemble import fuse
from skelctl.methods import METHODS
from skelctl.evaluate.features import accuracy, extract_features
from skelctl.evaluate.knn import knn_scores, nearest_neighbours
from skelctl.evaluate.linear import LinearConfig, train_linear
from skelctl.train import resolve_device
from stages import paths
from stages.common import StageError, write_json_atomic, write_text_atomic
from stages.config import ensemble_runs, load_section, parse_run
from stages.pretrain import labels_of, load_encoder


def features(split: str, run_name: str, view: str, data_dir: Path, models_dir: Path,
             params: Path | None, device: torch.device) -> dict[str, Any]:
    encoder, store, _ = load_encoder(split, run_name, view, data_dir, models_dir, params)
    _, protocol = paths.split_parts(split)
    out = {"num_classes": int(store.attr("num_classes"))}
    for part in ("train", "val"):
        indices = store.split(f"{protocol}/{part}")
        out[part] = (extract_features(encoder, store.take(view, indices), device),
                     labels_of(store, indices), indices)
    return out


def save_logits(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.partial.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def run_linear(split: str, run_name: str, data_dir: Path, models_dir: Path, results_dir: Path,
               params: Path | None, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Linear evaluation of every view a run learned; writes metrics.json, logits.npz and
    curve.csv per view."""
    config = load_section(params, "linear", overrides)
    device = resolve_device(config.pop("device"))
    linear = LinearConfig(**{k: config[k] for k in LinearConfig.__dataclass_fields__ if k in config})
    results = {}
    for view in parse_run(run_name).views:
        data = features(split, run_name, view, data_dir, models_dir, params, device)
        (train_x, train_y, _), (test_x, test_y, test_idx) = data["train"], data["val"]
        result = train_linear(train_x, train_y, test_x, test_y, data["num_classes"], linear,
                              device)
        out = paths.result_dir(results_dir, split, run_name, "linear", view)
        out.mkdir(parents=True, exist_ok=True)
        save_logits(out / "logits.npz", last=result["logits_last"].numpy(),
                    best=result["logits_best"].numpy(), labels=test_y.numpy(), indices=test_idx)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["epoch", "top1", "top5"])
        writer.writeheader()
        writer.writerows(result["curve"])
        write_text_atomic(out / "curve.csv", buffer.getvalue())
        write_json_atomic(out / "metrics.json", result["metrics"])
        results[view] = result["metrics"]
    write_json_atomic(paths.result_summary(results_dir, split, run_name, "linear"), results)
    return results


def run_knn(split: str, run_name: str, data_dir: Path, models_dir: Path, results_dir: Path,
            params: Path | None, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """KNN retrieval (cosine, k from params) for every view a run learned."""
    config = load_section(params, "knn", overrides)
    device = resolve_device(config["device"])
    results = {}
    for view in parse_run(run_name).views:
        data = features(split, run_name, view, data_dir, models_dir, params, device)
        (train_x, train_y, train_idx), (test_x, test_y, test_idx) = data["train"], data["val"]
        neighbours, similarities = nearest_neighbours(train_x, test_x, config["k"])
        scores = knn_scores(train_y[neighbours], similarities, data["num_classes"])
        metrics = {"top1": accuracy(scores, test_y, 1), "k": config["k"],
                   "train_samples": len(train_x), "test_samples": len(test_x)}
        out = paths.result_dir(results_dir, split, run_name, "knn", view)
        out.mkdir(parents=True, exist_ok=True)
        save_logits(out / "neighbours.npz", neighbours=train_idx[neighbours.numpy()],
                    similarities=similarities.numpy(), scores=scores.numpy(),
                    labels=test_y.numpy(), indices=test_idx)
        write_json_atomic(out / "metrics.json", metrics)
        results[view] = metrics
    write_json_atomic(paths.result_summary(results_dir, split, run_name, "knn"), results)
    return results


def run_ensemble(split: str, name: str, streams: tuple[str, ...] | None, results_dir: Path,
                 params: Path | None, weights: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Fuse the linear classifiers' logits of the streams: each alone, the first two (2s) and,
    with three or more, all of them (3s); headline from the last epoch, best epoch beside it.
    ``name`` is a single-view method (one run per stream) or a multi-view run."""
    section = load_section(params, "ensemble", {})
    if streams is None and name in METHODS:  # a single-view method: the streams from params
        streams = tuple(section["streams"])
    runs = ensemble_runs(name, streams)
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
    groups = {s: (s,) for s in streams}
    groups["2s"] = streams[:2]
    if len(streams) >= 3:
        groups[f"{len(streams)}s"] = streams
    metrics: dict[str, Any] = {"ensemble": name, "weights": dict(zip(streams, weights)),
                               "runs": runs}
    for group, members in groups.items():
        for which in ("last", "best"):
            fused = fuse([logits[s][which] for s in members],
                         [weights[streams.index(s)] for s in members])
            metrics[f"{group}_top1_{which}"] = accuracy(fused, target, 1)
            metrics[f"{group}_top5_{which}"] = accuracy(fused, target, 5)
    write_json_atomic(paths.ensemble_dir(results_dir, split, name) / "metrics.json", metrics)
    return metrics
