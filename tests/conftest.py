"""Shared fixtures: the real recordings beside the project, and small synthetic corpora."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

PROJECT = Path(__file__).resolve().parents[1]  # the source checkout
# the real recordings: ../shared/data beside the checkout, or where SKELCTL_SHARED_DATA says
SHARED_DATA = Path(os.environ.get("SKELCTL_SHARED_DATA", PROJECT.parent / "shared" / "data"))
NTU_SAMPLES = SHARED_DATA / "ntu60_samples"
NTU_LISTS = SHARED_DATA / "ntu_lists"
PKU_SAMPLE = SHARED_DATA / "pku_mmd_sample"
NW_UCLA = SHARED_DATA / "nw_ucla"


def need(path: Path) -> Path:
    """Skip the test (with the reason) when a real-data folder is not beside the project."""
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it sits beside the project "
                    f"in ../shared/data)")
    return path


@pytest.fixture(autouse=True)
def _no_dvc_analytics(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    base = tmp_path_factory.getbasetemp()
    for var in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        monkeypatch.setenv(var, str(base / var.lower()))


@pytest.fixture(scope="session")
def synth_ntu60(tmp_path_factory) -> Path:
    """A small synthetic NTU-60 raw folder (3 subjects x 3 cameras x 13 actions + 3 missing)."""
    from skelctl.data.synth import write_ntu

    out = tmp_path_factory.mktemp("raw") / "ntu60"
    write_ntu("ntu60", out, subjects=3, replications=1, seed=0)
    return out


@pytest.fixture(scope="session")
def synth_pku1(tmp_path_factory) -> Path:
    from skelctl.data.synth import write_pku

    out = tmp_path_factory.mktemp("raw") / "pku1"
    write_pku(1, out, subjects=3, seed=0, clips_per_video=4)
    return out


@pytest.fixture(scope="session")
def prepared_ntu60(tmp_path_factory, synth_ntu60) -> Path:
    """The synthetic NTU-60 corpus prepared with both variants; returns the data folder."""
    from skelctl.stages import prepare

    data = tmp_path_factory.mktemp("data")
    prepare.run("ntu60", synth_ntu60, data, variants=("50-shoulder", "64-spine"))
    return data


@pytest.fixture(scope="session")
def prepared_nw_ucla(tmp_path_factory) -> Path:
    """The real NW-UCLA recordings prepared once for every slow test that learns on them: one
    body, 25 frames for the suite's ST-GCN runs and the CRRL line's variable length; returns
    the data folder (read only: runs write to their own models and results folders)."""
    from skelctl.stages import prepare

    raw = need(NW_UCLA)
    data = tmp_path_factory.mktemp("nw-ucla") / "data"
    prepare.run("nw-ucla", raw, data, variants=NW_UCLA_VARIANTS, jobs=2, max_bodies=1)
    return data


NW_UCLA_VARIANTS = ("25-shoulder", "upto50-bodyframe+minmax")


def copy_of(path: Path, tmp_path: Path, name: str | None = None) -> Path:
    target = tmp_path / (name or path.name)
    target.write_bytes(path.read_bytes())
    return target


os.environ.setdefault("DVC_NO_ANALYTICS", "1")


# --- helpers the tests share ---------------------------------------------------------------

CPU = torch.device("cpu")


def gen(seed: int = 0) -> torch.Generator:
    """A seeded generator for a test's random draws."""
    return torch.Generator().manual_seed(seed)


def tiny_gru(layout=None, persons: int = 2, **options):
    """A one-layer GRU encoder with 8 units (NTU's 25 joints unless ``layout``)."""
    from skelctl.models import build_encoder
    from skelctl.skeletons import NTU25

    return build_encoder("gru", layout or NTU25, persons, **{"hidden": 8, "layers": 1, **options})


def write_params(folder: Path, document: dict, name: str = "params.yaml") -> Path:
    """``document`` as a params file in ``folder``."""
    path = folder / name
    path.write_text(yaml.safe_dump(document))
    return path


class Interrupted(Exception):
    """Raised by :func:`interrupt_after` to stop a training between epochs."""


def interrupt_after(epochs):
    """An ``evaluate`` hook for ``fit`` that stops training once ``epochs`` epochs are done."""
    def evaluate(model, epoch):
        if epoch > epochs:
            raise Interrupted
        return {}
    return evaluate


def random_rigid_motion(seed):
    """A random rotation (a proper one, det +1) and translation."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.astype(np.float32), rng.uniform(-3, 3, size=3).astype(np.float32)
