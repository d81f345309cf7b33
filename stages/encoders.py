"""What the evaluation stages (``evaluate``, ``downstream``) share: a run's encoder files opened
on a split, each protocol's settings from params, and the per-encoder result folders.

Every evaluation starts from exported encoder files (a run's ``<stream>.encoder.pt``, or any file
given with ``--encoder``), never from the pretraining method or the current pretrain params.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from skelctl.atomic import replacing, write_text
from skelctl.evaluate.encoder import EvaluatedEncoder
from skelctl.settings import Crop, LinearConfig
from skelctl.keys import unknown_keys
from skelctl.models import load_encoder
from skelctl.plots import save_curves
from skelctl.stages import paths
from skelctl.stages.common import (Result, StageError, by_kind, file_states, store_of,
                                   write_json_atomic, writing, written_since)
from skelctl.stages.config import load_run, load_section
from skelctl.train import resolve_device


def open_encoder(path: Path, split: str, data_dir: Path, name: str | None = None,
                 hint: str = "", key: str = "") -> EvaluatedEncoder:
    """Load an encoder file and the store it is evaluated on (the split's dataset, in the
    variant the encoder was trained on), checking that the skeletons match."""
    try:
        module, info = load_encoder(path)
    except FileNotFoundError:
        raise StageError(f"{path}: no encoder file{hint}") from None
    except ValueError as err:
        raise StageError(str(err)) from None
    provenance = info["provenance"]
    variant = provenance.get("variant")
    if not variant:
        raise StageError(f"{path}: the encoder file names no data variant")
    store, protocol = store_of(data_dir, split, variant)
    name = name or (f"{provenance['run']}@{provenance['split']}" if "run" in provenance
                    else Path(path).name.split(".")[0])
    try:
        return EvaluatedEncoder(module, info["view"], info, store, protocol, name, Path(path),
                                key)
    except ValueError as err:  # made for other skeletons than the store holds
        raise StageError(str(err)) from None


def run_encoders(split: str, run_name: str | None, encoder_file: Path | None, data_dir: Path,
                 models_dir: Path, params: Path | None, source: str | None = None
                 ) -> list[EvaluatedEncoder]:
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


def evaluate_each(encoders: list[EvaluatedEncoder], split: str, protocol: str,
                  results_dir: Path,
                  evaluate: Callable[[EvaluatedEncoder, Path], dict[str, Any]]) -> Result:
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
