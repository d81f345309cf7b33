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
