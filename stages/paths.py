"""The project's file layout, in one place."""

from __future__ import annotations

from pathlib import Path


def parsed(data_dir: Path, dataset: str) -> Path:
    return Path(data_dir) / "interim" / dataset / "parsed.h5"


def parse_report(data_dir: Path, dataset: str) -> Path:
    return Path(data_dir) / "interim" / dataset / "parse-report.json"


def rejected(data_dir: Path, dataset: str) -> Path:
    return Path(data_dir) / "interim" / dataset / "rejected.tsv"


def cleaned(data_dir: Path, dataset: str) -> Path:
    return Path(data_dir) / "interim" / dataset / "clean.h5"


def clean_report(data_dir: Path, dataset: str) -> Path:
    return Path(data_dir) / "interim" / dataset / "clean-report.json"


def views(data_dir: Path, dataset: str, variant: str) -> Path:
    """One file per (dataset, frames, normalisation): ``processed/<dataset>/<frames>-<norm>.h5``."""
    return Path(data_dir) / "processed" / dataset / f"{variant}.h5"


def split_parts(split: str) -> tuple[str, str]:
    """``"ntu60-xsub"`` to ``("ntu60", "xsub")`` (dataset names may contain dashes)."""
    dataset, _, protocol = split.rpartition("-")
    if not dataset or not protocol:
        raise ValueError(f"split {split!r} must be <dataset>-<protocol>, e.g. ntu60-xsub")
    return dataset, protocol


def model_dir(models_dir: Path, split: str, run: str) -> Path:
    """Checkpoint and loss history of one pretraining run: ``models/<split>/<run>/``."""
    return Path(models_dir) / split / run


def restart_dir(run_dir: Path) -> Path:
    """Where a restarted run trains until it is complete and replaces ``run_dir``."""
    return run_dir.with_name(f"{run_dir.name}.restart")


def replaced_dir(run_dir: Path) -> Path:
    """Where the old run waits, between the two renames that replace it, to be removed."""
    return run_dir.with_name(f"{run_dir.name}.replaced")


def loss_history(models_dir: Path, split: str, run: str) -> Path:
    """Per-epoch losses of a run (a DVC plot), beside its checkpoint folder."""
    return Path(models_dir) / split / f"{run}.loss.csv"


def result_dir(results_dir: Path, split: str, run: str, protocol: str, view: str) -> Path:
    """``results/<split>/<linear|knn>/<run>/<view>/``."""
    return Path(results_dir) / split / protocol / run / view


def result_summary(results_dir: Path, split: str, run: str, protocol: str) -> Path:
    """Metrics of every view of a run: ``results/<split>/<linear|knn>/<run>.json``."""
    return Path(results_dir) / split / protocol / f"{run}.json"


def ensemble_dir(results_dir: Path, split: str, method: str) -> Path:
    return Path(results_dir) / split / "ensemble" / method


def encoder_file(models_dir: Path, split: str, run: str, stream: str) -> Path:
    """The exported encoder of one stream of a run: ``models/<split>/<run>/<stream>.encoder.pt``."""
    return Path(models_dir) / split / run / f"{stream}.encoder.pt"


def downstream_dir(results_dir: Path, split: str, protocol: str, name: str) -> Path:
    """``results/<split>/<semi|finetune|transfer|occlusion>/<name>/``."""
    return Path(results_dir) / split / protocol / name
