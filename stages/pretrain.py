"""pretrain: one run on the training part of a split; ends by exporting each stream's encoder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from skelctl import __version__
from skelctl.evaluate.knn import knn_monitor
from skelctl.methods.moco import MomentumContrast
from skelctl.methods import OptionsError
from skelctl.methods.base import stream_of
from skelctl.models import load_encoder, save_encoder
from skelctl.keys import differences
from skelctl.train import (CLIP_STATISTICS, HistoryPlots, distributed, fit, init_distributed,
                           load_checkpoint, log_line, previous_checkpoint, resolve_device,
                           training_identity, training_samples, training_settings,
                           write_history)
from skelctl.stages import paths
from skelctl.stages.common import ParamsError, Result, StageError, file_digest, store_of, writing
from skelctl.stages.config import Run, load_run, read_params, run_names


def untrained_baselines(params: Path | None, models_dir: Path, split: str, spec: Run,
                        method: torch.nn.Module) -> dict[str, tuple[str, torch.nn.Module]]:
    """For each encoder of the run, an untrained one to compare its KNN figure with: that of the
    first untrained run of the params with the same encoder kind, encoder options and variant
    whose exported file on this split holds such an encoder, with that run's name; none for an
    encoder without one."""
    if not spec.trained or params is None:
        return {}
    found: dict[str, tuple[str, torch.nn.Module]] = {}
    for name in run_names(read_params(params)):  # every run was checked as the file was read
        other = load_run(params, name)
        if other.trained or (other.encoder, other.encoder_options, other.variant) != (
                spec.encoder, spec.encoder_options, spec.variant):
            continue
        for key, own in method.encoders().items():
            path = paths.encoder_file(models_dir, split, name, key)
            if key in found or not path.is_file():
                continue
            encoder, info = load_encoder(path)
            if encoder.spec == own.spec and info["provenance"].get("variant") == spec.variant:
                found[key] = (name, encoder)
    return found


def history_plots(split: str, run_name: str,
                  baselines: dict[str, tuple[str, torch.nn.Module]]) -> HistoryPlots:
    """The words on a run's loss and KNN plots; an untrained encoder's KNN figure (the history's
    ``knn_<encoder name>_untrained``) as a dashed line labelled with its run."""
    return HistoryPlots(f"{run_name} on {split}", "KNN top-1 on the test part", "KNN top-1 (%)", {
        f"knn_{key}_untrained": f"untrained ({run})" + (f" {key}" if len(baselines) > 1 else "")
        for key, (run, _) in baselines.items()})


def run_outputs(out: Path, history_csv: Path, encoders: list[Path]) -> dict[str, list[Path]]:
    """Where a run's outputs are: its encoder files, checkpoints, loss history and plots."""
    return {"encoders": encoders,
            "checkpoints": [p for p in (out / "checkpoint.pt",
                                        previous_checkpoint(out / "checkpoint.pt")) if p.is_file()],
            "loss history": [history_csv],
            "plots": [p for p in (history_csv.with_suffix(".png"),
                                  history_csv.with_suffix(".eval.png")) if p.is_file()]}


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


def recorded_identity(out: Path, device: torch.device) -> tuple[str, dict[str, Any]] | None:
    """What the run folder ``out`` already holds, described, and the settings it was made with:
    its checkpoint's identity, else (a finished run whose checkpoints were removed) its encoder
    files' provenance; None when it holds neither."""
    encoders = sorted(out.glob("*.encoder.pt"))
    found = load_checkpoint(out / "checkpoint.pt", device, lambda _: None)
    if found is not None:
        source, state = found
        epochs = sum(p.get("epochs", 0) for p in state["identity"].get("phases", []))
        done = "a finished run" if encoders and state["epoch"] >= epochs else "a checkpoint"
        return f"{done} ({source.name}, epoch {state['epoch']} of {epochs})", state["identity"]
    if encoders:
        _, info = load_encoder(encoders[0])
        return f"a finished run ({encoders[0].name})", dict(info["provenance"])
    return None


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings in which ``new`` differs from ``old``, as ``key: old -> new``: every key of
    a checkpoint's identity, or the keys an encoder file's provenance records. The phases follow
    from the training settings, so they are named only when nothing else differs."""
    if "phases" not in old:  # an encoder file's provenance: the keys it records
        old = {k: v for k, v in old.items() if k in new}
        new = {k: v for k, v in new.items() if k in old}
    changes = differences(old, new)
    named = [c for c in changes if not c[0].startswith("phases")] or changes
    return [f"{key} {a!r} -> {b!r}" for key, a, b in named]


def training_folder(out: Path, identity: dict[str, Any], restart: bool,
                    device: torch.device) -> Path:
    """Where the run trains: its own folder when that is empty or holds this very run (which then
    resumes), else, with ``restart``, a scratch folder beside it whose result replaces the old run
    only once complete. Without ``restart``, a folder that holds a run made with other settings is
    refused, naming the settings that differ: nothing a user made is deleted unasked."""
    if restart:
        return paths.restart_dir(out)
    recorded = recorded_identity(out, device)
    if recorded is None:
        return out
    what, old = recorded
    changes = settings_changes(old, identity)
    if not changes:
        return out
    raise ParamsError(f"{out} holds {what} made with other settings: {'; '.join(changes)}. "
                      f"Nothing was changed. To train afresh with the new settings, rerun with "
                      f"--restart: the old run stays in place until the new one is complete")


def recover_replacement(out: Path) -> None:
    """Finish or undo a replacement that a kill interrupted between its two renames."""
    old = paths.replaced_dir(out)
    if old.exists():
        if out.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, out)


def replace_run(out: Path, folder: Path, history: Path) -> None:
    """Put the complete run trained in ``folder`` in place of ``out``: its loss history and plots
    beside ``out``, then the folder itself; the old run is removed only after both renames."""
    for made in folder.glob(f"{history.stem}.*"):
        os.replace(made, history.with_name(made.name))
    old = paths.replaced_dir(out)
    if out.exists():
        os.replace(out, old)
    os.replace(folder, out)
    shutil.rmtree(old, ignore_errors=True)


def run(split: str, run_name: str, data_dir: Path, models_dir: Path, params: Path | None,
        overrides: dict[str, Any], restart: bool = False) -> dict[str, Any]:
    """Pretrain ``run_name`` on ``split``. A folder that holds this run's checkpoint resumes from
    it; one that holds a run made with other settings is refused unless ``restart``, which trains
    afresh beside it and replaces it when complete (an interrupted restart resumes likewise)."""
    spec: Run = load_run(params, run_name, overrides, split)
    store, protocol = store_of(data_dir, split, spec.variant)
    device = init_distributed(resolve_device(spec.train.device))
    layout, persons = store.layout(), int(store.attr("max_bodies"))
    method = spec.build(layout, persons)
    out = paths.model_dir(models_dir, split, run_name)
    history_csv = paths.loss_history(models_dir, split, run_name)
    with writing(out):
        rank, world = distributed()
        if rank == 0:
            recover_replacement(out)
        if world > 1:
            torch.distributed.barrier()
        identity = {"split": split, "run": run_name, "data": str(store.path), **spec.settings()}
        if spec.start:  # a checkpoint made from another version of the start run is not resumed
            encoders, identity["start_digests"] = start_encoders(models_dir, split, spec, method)
            try:
                method.start_from(encoders, spec.start)
            except OptionsError as err:
                raise StageError(f"run {run_name!r}: {err}") from None
        phases = method.phases(**spec.train.schedule())
        identity = training_identity(identity, spec.train, phases)
        folder = training_folder(out, identity, restart, device)
        staged = folder != out
        files = {name: folder / paths.encoder_file(models_dir, split, run_name, name).name
                 for name in spec.encoder_names()}
        folder_history = folder / history_csv.name if staged else history_csv
        history: list[dict[str, float]] = []
        if phases:
            indices = store.split(f"{protocol}/train")
            samples = training_samples(store, indices, method.inputs, method.sequences)
            warning = queue_warning(method, len(indices))
            if warning and rank == 0:
                log_line(warning)
            if staged and rank == 0:
                log_line(f"training afresh in {folder}; {out} stays as it is until this run "
                         f"is complete")
            baselines = {} if spec.train.knn_every <= 0 else untrained_baselines(
                params, models_dir, split, spec, method)
            monitor = None if spec.train.knn_every <= 0 else knn_monitor(
                store, protocol, samples, list(method.encoders()), spec.train.knn_every, device,
                baselines)
            history = fit(method, samples, phases, spec.train, folder / "checkpoint.pt", device,
                          folder_history, identity,
                          log=log_line if rank == 0 else (lambda _: None), evaluate=monitor,
                          plots=history_plots(split, run_name, baselines))
        if rank == 0:
            if not phases:  # an untrained baseline: an empty loss history (a DVC plot) still
                folder.mkdir(parents=True, exist_ok=True)
                write_history([], folder_history)
            metrics = {k: v for k, v in (history[-1] if history else {}).items()  # the last
                       if k not in ("epoch", "lr", "phase", *CLIP_STATISTICS)}  # losses, KNN
            for name, encoder in method.encoders().items():
                save_encoder(files[name], encoder, stream_of(name), {
                    "run": run_name, "split": split, "epochs": len(history),
                    "metrics": metrics, "skelctl_version": __version__, **spec.settings(),
                    "seed": spec.train.seed, "train": training_settings(spec.train)})
            if staged:
                replace_run(out, folder, history_csv)
    final = {name: out / path.name for name, path in files.items()}
    return Result({"output": str(out), "epochs": len(history),
                   "loss": history[-1]["loss"] if history else None, "rank": rank,
                   "encoders": [str(p) for p in final.values()]},
                  run_outputs(out, history_csv, list(final.values())))
