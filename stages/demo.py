"""demo and reproduce: run the identical dvc.yaml with another profile (params.demo.yaml: a
synthetic corpus; params.nw-ucla.yaml: the real NW-UCLA recordings) in a scratch workspace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

import skelctl
from skelctl.data.store import Store
from skelctl.stages import paths
from skelctl.stages.common import StageError

PROJECT = Path(skelctl.__file__).resolve().parent.parent
CODE = ("skelctl", "stages")


PROFILES = {"demo": "params.demo.yaml", "nw-ucla": "params.nw-ucla.yaml"}


def select_runs(params: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``params`` with only the runs ``names`` (and the runs they start from), and the ensembles
    and downstream protocols of those runs."""
    continued = {e["run"]: e for e in params.get("continued") or []}
    unknown = sorted(set(names) - set(params.get("runs") or {}) - set(continued))
    if unknown:
        raise StageError(f"reproduce.runs names run(s) the profile lacks: {', '.join(unknown)}")
    keep, pending = set(), list(names)
    while pending:  # a continued run needs the run it starts from
        name = pending.pop()
        if name not in keep:
            keep.add(name)
            if name in continued:
                pending.append(continued[name]["start"])
    selected = dict(params)
    selected["runs"] = {k: v for k, v in (params.get("runs") or {}).items() if k in keep}
    selected["continued"] = [e for e in continued.values() if e["run"] in keep]
    streams = (params.get("ensemble") or {}).get("streams") or []
    selected["ensembles"] = [e for e in params.get("ensembles") or []
                             if e in keep or all(f"{e}-{s}" in keep for s in streams)]
    selected["downstream"] = {k: [r for r in v if r in keep]
                              for k, v in (params.get("downstream") or {}).items()}
    # a paper row is reproduced by a run (its first word) or by an ensemble
    selected["reproduces"] = {k: v for k, v in (params.get("reproduces") or {}).items()
                              if k.split()[0] in keep or k.split()[0] in selected["ensembles"]}
    return selected


def create_workspace(workdir: Path | None, profile: str = "demo",
                     raw: dict[str, Path] | None = None, full: bool = True) -> Path:
    """A DVC workspace with the pipeline, the profile's params as params.yaml (``raw`` replacing
    its raw folders), and the code it runs. Unless ``full``, a profile's ``reproduce.runs``
    (what fits the hour) are the only runs."""
    if not (PROJECT / "dvc.yaml").is_file():
        raise StageError(f"{PROJECT}: no dvc.yaml next to the skelctl package; the {profile} "
                         f"profile runs from a source checkout (pip install -e .)")
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"skelctl-{profile}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "dvc.yaml", workdir / "dvc.yaml")
    text = (PROJECT / PROFILES[profile]).read_text()
    params = yaml.safe_load(text)
    if raw or "reproduce" in params:
        quick = params.pop("reproduce", {}).get("runs")
        if quick and not full:
            params = select_runs(params, quick)
        params["raw"] = {**params["raw"], **{k: str(Path(v).resolve())
                                             for k, v in (raw or {}).items()}}
        text = yaml.safe_dump(params, sort_keys=False, width=100)
    (workdir / "params.yaml").write_text(text)
    for package in CODE:
        shutil.rmtree(workdir / package, ignore_errors=True)
        shutil.copytree(PROJECT / package, workdir / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if not (workdir / ".dvc").is_dir():
        dvc(workdir, "init", "--no-scm", "-q")
        dvc(workdir, "config", "core.analytics", "false")
    return workdir


def dvc(workdir: Path, *args: str) -> None:
    # stage commands call `python`: make it this interpreter, whose environment has skelctl's deps;
    # `python -m skelctl` runs the installed package (PYTHONSAFEPATH: not the workspace's copy of
    # the code, which is there for DVC to hash as the stages' dependencies)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONSAFEPATH": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workdir, env=env)
    if result.returncode != 0:
        raise StageError(f"{workdir}: `dvc {' '.join(args)}` failed with exit code "
                         f"{result.returncode}")


def summary(workdir: Path) -> str:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    lines = [f"{params['profile']}\nworkspace: {workdir}"]
    for dataset in params["raw"]:
        for variant in params["views"]["variants"]:
            store = Store(paths.views(workdir / "data", dataset, variant))
            splits = ", ".join(f"{p} {len(store.split(p + '/train'))}/{len(store.split(p + '/val'))}"
                               for p in store.protocols)
            lines.append(f"  {dataset} {variant}: {len(store)} samples, views "
                         f"{', '.join(store.views)}; train/val {splits}")
    return "\n".join(lines)


def run(workdir: Path | None = None, profile: str = "demo",
        raw: dict[str, Path] | None = None, full: bool = True) -> str:
    """``dvc repro`` of the profile in a workspace; returns a summary and the tables."""
    workdir = create_workspace(workdir, profile, raw, full)
    dvc(workdir, "repro")
    tables = "\n".join(sorted(p.read_text() for p in (workdir / "tables").glob("*.md")))
    return f"{summary(workdir)}\n\n{tables}"
