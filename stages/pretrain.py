"""pretrain: one run on the training part of a split; ends by exporting each stream's encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from skelctl import __version__
from skelctl.data.store import Store
from skelctl.evaluate.features import accuracy, extract_features
from skelctl.evaluate.knn import knn_classify
from skelctl.methods.moco import MomentumContrast
from skelctl.methods import OptionsError
from skelctl.methods.base import stream_of
from skelctl.models import load_encoder, save_encoder
from skelctl.train import (Samples, distributed, fit, init_distributed, log_line,
                           resolve_device, write_history)
from stages import paths
from stages.common import StageError, file_digest, store_of, writing
from stages.config import Run, load_run


def training_samples(store: Store, indices: np.ndarray, inputs: tuple[str, ...],
                     sequences: bool = False) -> Samples:
    """The named views, labels and store indices of ``indices`` (and, when asked, the real
    variable-length frames) as tensors, for the training loop."""
    arrays = {name: torch.from_numpy(store.take(name, indices)) for name in inputs}
    arrays["label"] = torch.from_numpy(store.meta(["label"])["label"][indices]).long()
    arrays["index"] = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    if not sequences:
        return Samples(arrays)
    # one read of the range the indices span, then one gather of their frames
    low = int(indices.min())
    data, offsets = store.sequences(low, int(indices.max()) + 1)
    first, lengths = offsets[indices - low], offsets[indices - low + 1] - offsets[indices - low]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = np.arange(starts[-1]) + np.repeat(first - starts[:-1], lengths)
    return Samples(arrays, torch.from_numpy(data[rows]), torch.from_numpy(starts))


def knn_monitor(store: Store, protocol: str, training: Samples, names: list[str], every: int,
                device: torch.device) -> Callable[[Any, int], dict[str, float]]:
    """``evaluate(method, epoch)`` for :func:`fit`: every ``every`` epochs, the KNN top-1
    accuracy (k = 1, cosine) of each encoder on the split's test part against its training
    samples (those already in memory for training), named ``knn_<encoder name>``, so the
    history and its plot show whether pretraining is helping."""
    test_rows = store.split(f"{protocol}/val")
    classes = int(store.attr("num_classes"))
    # a stream the method derives while training (CrosSCLR's motion) is read from the store
    streams = list(dict.fromkeys(stream_of(name) for name in names))
    train_x = {stream: training.arrays[stream] if stream in training.arrays
               else store.take(stream, training.arrays["index"].numpy()) for stream in streams}
    test_x = {stream: store.take(stream, test_rows) for stream in streams}
    train_y = training.arrays["label"]
    test_y = torch.from_numpy(store.meta(["label"])["label"][test_rows]).long()

    def evaluate(method: Any, epoch: int) -> dict[str, float]:
        if epoch % every:
            return {}
        figures = {}
        for name, encoder in method.encoders().items():
            train = extract_features(encoder, train_x[stream_of(name)], device)
            test = extract_features(encoder, test_x[stream_of(name)], device)
            scores = knn_classify(train, train_y, test, classes)[2]
            figures[f"knn_{name}"] = accuracy(scores, test_y)
        return figures
    return evaluate


def queue_warning(method: torch.nn.Module, num_samples: int) -> str | None:
    """A warning when a method's queue holds as many keys as there are training samples or more:
    the queue then holds several stale keys of every sample, its own earlier keys among a
    sample's negatives."""
    sizes = [m.queue.shape[0] for m in method.modules() if isinstance(m, MomentumContrast)]
    if not sizes or max(sizes) < num_samples:
        return None
    return (f"warning: a queue of {max(sizes)} keys for {num_samples} training samples; every "
            f"sample then meets its own earlier keys as negatives. Choose queue_size below "
            f"{num_samples} (a quarter of it, {num_samples // 4}, suits small datasets).")


def start_encoders(models_dir: Path, split: str, spec: Run,
                   method: torch.nn.Module) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """The encoders of the run ``spec.start`` on this split, one per stream of ``spec``, and each
    file's digest; checked to be what this run's own encoders are (kind, options, layout) and
    trained on the same input variant."""
    encoders, digests = {}, {}
    for name, own in method.encoders().items():
        path = paths.encoder_file(models_dir, split, spec.start, name)
        if not path.is_file():
            raise StageError(f"run {spec.name!r} starts from run {spec.start!r}, which has no "
                             f"{name} encoder at {path}: pretrain {spec.start!r} first")
        encoder, info = load_encoder(path)
        variant = info["provenance"].get("variant")
        if encoder.spec != own.spec or variant != spec.variant:
            raise StageError(f"{path}: run {spec.name!r} starts from this encoder, but it is "
                             f"{encoder.spec['name']} {encoder.spec['options']} on {variant}, "
                             f"and the run needs {own.spec['name']} {own.spec['options']} on "
                             f"{spec.variant}")
        encoders[name], digests[name] = encoder, file_digest(path)
    return encoders, digests


def run(split: str, run_name: str, data_dir: Path, models_dir: Path, params: Path | None,
        overrides: dict[str, Any], resume: bool = True) -> dict[str, Any]:
    spec: Run = load_run(params, run_name, overrides, split)
    store, protocol = store_of(data_dir, split, spec.variant)
    device = init_distributed(resolve_device(spec.train.device))
    layout, persons = store.layout(), int(store.attr("max_bodies"))
    method = spec.build(layout, persons)
    out = paths.model_dir(models_dir, split, run_name)
    files = {name: paths.encoder_file(models_dir, split, run_name, name)
             for name in spec.encoder_names()}
    with writing(out):
        rank, _ = distributed()
        if rank == 0:  # an encoder file stands only for a finished run of these settings
            for path in files.values():
                path.unlink(missing_ok=True)
        identity = {"split": split, "run": run_name, "data": str(store.path), **spec.settings()}
        if spec.start:  # a checkpoint made from another version of the start run is not resumed
            encoders, identity["start_digests"] = start_encoders(models_dir, split, spec, method)
            try:
                method.start_from(encoders, spec.start)
            except OptionsError as err:
                raise StageError(f"run {run_name!r}: {err}") from None
        phases = method.phases(**spec.train.schedule())
        history: list[dict[str, float]] = []
        if phases:
            indices = store.split(f"{protocol}/train")
            samples = training_samples(store, indices, method.inputs, method.sequences)
            warning = queue_warning(method, len(indices))
            if warning and rank == 0:
                log_line(warning)
            monitor = None if spec.train.knn_every <= 0 else knn_monitor(
                store, protocol, samples, list(method.encoders()), spec.train.knn_every, device)
            history = fit(method, samples, phases, spec.train, out / "checkpoint.pt", device,
                          paths.loss_history(models_dir, split, run_name), identity, resume=resume,
                          log=log_line if rank == 0 else (lambda _: None), evaluate=monitor)
        if rank == 0:
            if not phases:  # an untrained baseline: an empty loss history (a DVC plot) still
                write_history([], paths.loss_history(models_dir, split, run_name))
            metrics = {k: v for k, v in (history[-1] if history else {}).items()
                       if k not in ("epoch", "lr", "phase")}  # the last epoch's losses, KNN
            for name, encoder in method.encoders().items():
                save_encoder(files[name], encoder, stream_of(name), {
                    "run": run_name, "split": split, "epochs": len(history),
                    "metrics": metrics, "skelctl_version": __version__, **spec.settings()})
    return {"output": str(out), "epochs": len(history),
            "loss": history[-1]["loss"] if history else None, "rank": rank,
            "encoders": [str(p) for p in files.values()]}
