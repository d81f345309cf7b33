"""Fault injection: prepare, pretrain and linear evaluation killed with SIGKILL at seeded random
moments. After each kill the same command is run again; it completes, leaves no partial file, and
its outputs equal those of an uninterrupted run: the stores' data arrays byte for byte, and, by
the exact-resume guarantee, the same loss history, encoder weights and linear-evaluation metrics.

Each command gets one workspace and 10 kills. A moment is drawn uniformly within the wall time
of the command's uninterrupted reference run (``random.Random(0)``); the command is started again
on what the previous kill left, so a rerun is itself killed, until 10 kills have landed; then a
last run completes. A run that ends before its moment must have succeeded, and its outputs are
checked at once; the workspace's outputs are then removed, so that the later moments fall in a
fresh run's timeline again (a finished pretraining run would otherwise only be resumed).
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch

from conftest import write_params

pytestmark = pytest.mark.slow

KILLS = 10
MAX_STARTS = 3 * KILLS
SPLIT = "ntu60-xsub"
RUN = "skeletonclr-joint"
VARIANT = "25-shoulder"
# small enough for a 2-core CPU, with a checkpoint every epoch so that a resume has something
# to resume from
PARAMS = {
    "profile": "fault injection",
    "splits": [SPLIT],
    "defaults": {"variant": VARIANT, "encoder": "gru",
                 "encoder_options": {"hidden": 8, "layers": 1},
                 "train": {"epochs": 20, "batch_size": 16, "lr_steps": [10],
                           "checkpoint_every": 1, "seed": 0, "device": "cpu"}},
    "runs": {RUN: {"method": "skeletonclr", "streams": ["joint"],
                   "options": {"queue_size": 32}}},
    "linear": {"epochs": 20, "lr_steps": [15], "seed": 0, "device": "cpu", "figures": False},
}
STORES = ("interim/ntu60/parsed.h5", "interim/ntu60/clean.h5", f"processed/ntu60/{VARIANT}.h5")
REPORTS = ("interim/ntu60/parse-report.json", "interim/ntu60/clean-report.json",
           "interim/ntu60/rejected.tsv")
# one thread: the same floating-point sums in every run, and the machine's other jobs unhurt
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def skelctl(*args: object) -> list[str]:
    return [sys.executable, "-m", "skelctl", *map(str, args)]


def prepare_args(raw: Path) -> list[object]:
    return ["prepare", "ntu60", "--raw", raw, "--variant", VARIANT, "--max-bodies", "1",
            "--data-dir", "data"]


def pretrain_args(data: Path) -> list[object]:
    return ["pretrain", RUN, "--split", SPLIT, "--data-dir", data, "--models-dir", "models"]


def linear_args(data: Path, models: Path) -> list[object]:
    return ["linear", RUN, "--split", SPLIT, "--data-dir", data, "--models-dir", models,
            "--results-dir", "results"]


def workspace(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_params(folder, PARAMS)
    return folder


def complete(args: list[object], cwd: Path) -> float:
    """Run a command to the end (it must succeed); its wall time in seconds."""
    began = time.monotonic()
    result = subprocess.run(skelctl(*args), cwd=cwd, env={**os.environ, **ENV},
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return time.monotonic() - began


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").replace("\r", "\n")
             .splitlines() if line.strip()]
    return lines[-1][:70] if lines else ""


def kill_and_rerun(name: str, args: list[object], cwd: Path, reference_seconds: float,
                   check: Callable[[], None], outputs: list[Path]) -> int:
    """Start ``args`` in ``cwd`` and SIGKILL it (its whole process group) at moments drawn
    uniformly within ``reference_seconds``, each start on what the last kill left, until
    ``KILLS`` kills have landed; then run it to the end and ``check`` the outputs. A run that
    ends before its moment must succeed and pass ``check``; ``outputs`` are then removed. Returns
    the number of kills survived."""
    rng = random.Random(0)
    kills, starts, finished, moments = 0, 0, 0, []
    log = cwd.parent / f"{cwd.name}.log"
    while kills < KILLS:
        assert starts < MAX_STARTS, f"{name}: {kills} kills in {starts} starts"
        delay = rng.uniform(0, reference_seconds)
        starts += 1
        before = partial_files(cwd)
        with open(log, "w") as out:
            process = subprocess.Popen(skelctl(*args), cwd=cwd, env={**os.environ, **ENV},
                                       stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # kill -9, any worker processes too
                process.wait()
                kills += 1
                left = sorted(Path(file).name for file, written in partial_files(cwd).items()
                              if before.get(file) != written)  # by this run
                moments.append(f"{delay:.2f} s, after: {last_line(log)!r}"
                               + (f"; left {', '.join(left)}" if left else ""))
                continue
        # ended before its moment: a rerun that completed
        assert code == 0, f"{name}: a rerun failed (exit {code}):\n{log.read_text()[-3000:]}"
        finished += 1
        check()
        for path in outputs:
            shutil.rmtree(path, ignore_errors=True)
    seconds = complete(args, cwd)
    check()
    print(f"\n{name}: {kills} kills survived ({starts} starts, {finished} finished before their "
          f"moment); reference run {reference_seconds:.1f} s, final rerun {seconds:.1f} s")
    for moment in moments:
        print(f"  killed at {moment}")
    return kills


def partial_files(folder: Path) -> dict[str, int]:
    """The partial files (and lock files, which a kill leaves and the next run takes over) under
    ``folder``, with the time each was last written."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if ".partial" in p.name or p.name.endswith(".lock")}


def no_partial_files(folder: Path) -> None:
    left = sorted(partial_files(folder))
    assert not left, f"partial files left behind: {left}"


def datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as file:
        assert file.attrs["complete"], path
        file.visititems(lambda key, item: found.__setitem__(key, item[()])
                        if isinstance(item, h5py.Dataset) else None)
    return found


def assert_same_arrays(path: Path, reference: Path) -> None:
    """Every dataset of the two HDF5 stores, with its dtype and shape, byte for byte (the
    attributes hold no timestamps, but only the data arrays are the stores' content)."""
    got, want = datasets(path), datasets(reference)
    assert sorted(got) == sorted(want), path
    for key, expected in want.items():
        value = got[key]
        assert (value.dtype, value.shape) == (expected.dtype, expected.shape), f"{path}: {key}"
        if expected.dtype.kind == "O":  # variable-length strings
            assert value.tolist() == expected.tolist(), f"{path}: {key}"
        else:
            assert value.tobytes() == expected.tobytes(), f"{path}: {key}"


def loss_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def encoder_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth_ntu60) -> dict:
    """Uninterrupted runs of the three commands in one workspace, each timed."""
    root = workspace(tmp_path_factory.mktemp("fault-reference") / "uninterrupted")
    data, models = root / "data", root / "models"
    seconds = {"prepare": complete(prepare_args(synth_ntu60), root),
               "pretrain": complete(pretrain_args(data), root),
               "linear": complete(linear_args(data, models), root)}
    return {"root": root, "data": data, "models": models, "results": root / "results",
            "seconds": seconds, "raw": synth_ntu60}


def test_prepare_survives_kills(reference, tmp_path):
    root = workspace(tmp_path / "prepare")

    def check() -> None:
        no_partial_files(root)
        for store in STORES:
            assert_same_arrays(root / "data" / store, reference["data"] / store)
        for report in REPORTS:
            assert (root / "data" / report).read_text() == \
                (reference["data"] / report).read_text(), report

    assert kill_and_rerun("prepare", prepare_args(reference["raw"]), root,
                          reference["seconds"]["prepare"], check, [root / "data"]) == KILLS


def test_pretrain_resumes_exactly_after_kills(reference, tmp_path):
    root = workspace(tmp_path / "pretrain")
    history = Path(SPLIT) / f"{RUN}.loss.csv"
    encoder = Path(SPLIT) / RUN / "joint.encoder.pt"

    def check() -> None:
        no_partial_files(root)
        rows, expected = loss_rows(root / "models" / history), \
            loss_rows(reference["models"] / history)
        assert len(rows) == PARAMS["defaults"]["train"]["epochs"]
        assert rows == expected  # the same losses to the last digit: tolerance 0
        got, want = encoder_state(root / "models" / encoder), \
            encoder_state(reference["models"] / encoder)
        assert got.keys() == want.keys()
        assert {k: v for k, v in got.items() if k != "weights"} == \
            {k: v for k, v in want.items() if k != "weights"}
        assert got["weights"].keys() == want["weights"].keys()
        for key, weights in want["weights"].items():
            assert torch.equal(got["weights"][key], weights), key

    assert kill_and_rerun("pretrain", pretrain_args(reference["data"]), root,
                          reference["seconds"]["pretrain"], check, [root / "models"]) == KILLS


def test_linear_evaluation_survives_kills(reference, tmp_path):
    root = workspace(tmp_path / "linear")
    run = Path(SPLIT) / "linear"

    def check() -> None:
        no_partial_files(root)
        for metrics in (run / f"{RUN}.json", run / RUN / "joint" / "metrics.json"):
            assert json.loads((root / "results" / metrics).read_text()) == \
                json.loads((reference["results"] / metrics).read_text()), metrics
        folder = run / RUN / "joint"
        assert (root / "results" / folder / "curve.csv").read_text() == \
            (reference["results"] / folder / "curve.csv").read_text()
        with np.load(root / "results" / folder / "logits.npz") as got, \
                np.load(reference["results"] / folder / "logits.npz") as want:
            assert sorted(got.files) == sorted(want.files)
            for key in want.files:
                assert got[key].tobytes() == want[key].tobytes(), key

    assert kill_and_rerun("linear", linear_args(reference["data"], reference["models"]), root,
                          reference["seconds"]["linear"], check, [root / "results"]) == KILLS


# Run skelctl, SIGKILLing itself just before the first rename onto a file whose name ends with
# argv[2] once argv[1] checkpoints have been renamed into place (an atomic write's rename is
# where a kill changes what a rerun finds).
KILL_AT_RENAME = '''
import os, runpy, signal, sys
from pathlib import Path
checkpoints, target = int(sys.argv[1]), sys.argv[2]
rename, seen = os.replace, []
def replace(src, dst, *args, **kwargs):
    if len(seen) >= checkpoints and Path(dst).name.endswith(target):
        os.kill(os.getpid(), signal.SIGKILL)
    rename(src, dst, *args, **kwargs)
    if Path(dst).name == "checkpoint.pt":
        seen.append(dst)
os.replace = replace
sys.argv = ["skelctl", *sys.argv[3:]]
runpy.run_module("skelctl", run_name="__main__")
'''


def test_kill_after_the_last_checkpoint(reference, tmp_path):
    """The moment a random kill rarely meets: the last epoch's checkpoint is in place, its loss
    history written to the partial file but not yet renamed. The rerun resumes a finished run;
    the history must still hold every epoch, and no partial file may stay."""
    root = workspace(tmp_path / "pretrain")
    epochs = 2
    args = [*pretrain_args(reference["data"]), "--epochs", epochs]
    script = tmp_path / "kill_at_rename.py"
    script.write_text(KILL_AT_RENAME)
    killed = subprocess.run([sys.executable, script, str(epochs), ".loss.csv", *map(str, args)],
                            cwd=root, env={**os.environ, **ENV}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert (root / "models" / SPLIT / f".{RUN}.loss.csv.partial").is_file()
    complete(args, root)
    rows = loss_rows(root / "models" / SPLIT / f"{RUN}.loss.csv")
    assert [row["epoch"] for row in rows] == [str(e) for e in range(1, epochs + 1)]
    no_partial_files(root)
