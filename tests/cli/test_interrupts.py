"""SIGINT and SIGTERM at 20 seeded moments of real ``python -m skelctl`` processes: synth and
prepare (one and two worker processes) within 2 s, pretrain within 5 s (so that some moments land
in its training, after about 2 s of imports), each signal sent to the process or, as Ctrl-C in a
terminal does, to its whole process group (the workers too).

Every run ends in exactly one of two ways: the command finished before its moment (exit 0, its
outputs complete), or exit 128 + the signal's number with exactly the one line ``skelctl.cli``
writes for that command on stderr: never ``Aborted!``, a traceback, a native abort or a hang.
Either way no partial file (``.NAME.partial``), no lock file and no incomplete store is left.

A moment is counted from skelctl's first line (when the handler is installed, which
``/proc/PID/status`` shows as SIGTERM caught): before it the process is Python's own start-up
(tens of milliseconds), which ends on a signal as Python does.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from conftest import write_params
from skelctl.cli import interrupted_line

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="reads /proc/PID/status to see skelctl's handler installed")

SPAN_S = 2.0  # moments are drawn uniformly from [0, SPAN_S) seconds
PRETRAIN_SPAN_S = 5.0  # pretrain imports for about 2 s: some moments land in its training
FORBIDDEN = ("Traceback", "Aborted!", "pybind11", "terminate called", "Fatal Python error",
             "Exception ignored", "KeyboardInterrupt")
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SPLIT, RUN = "ntu60-xsub", "skeletonclr-joint"
PARAMS = {
    "splits": [SPLIT],
    "defaults": {"variant": "50-shoulder", "encoder": "gru",
                 "encoder_options": {"hidden": 8, "layers": 1},
                 "train": {"epochs": 30, "batch_size": 16, "checkpoint_every": 1, "seed": 0,
                           "device": "cpu"}},
    "runs": {RUN: {"method": "skeletonclr", "streams": ["joint"],
                   "options": {"queue_size": 32}}},
}


def handler_installed(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True  # ended already
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def interrupt(args: list[str], cwd: Path, delay: float, signum: int,
              group: bool) -> subprocess.CompletedProcess:
    """``python -m skelctl ARGS`` in ``cwd``, sent ``signum`` ``delay`` seconds after skelctl's
    handler is installed (to the process group when ``group``)."""
    process = subprocess.Popen([sys.executable, "-m", "skelctl", *args], cwd=cwd,
                               env={**os.environ, **ENV}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not handler_installed(process.pid):
            assert time.monotonic() < deadline, "skelctl did not start"
            time.sleep(0.001)
        time.sleep(delay)
        try:
            (os.killpg if group else os.kill)(process.pid, signum)
        except ProcessLookupError:
            pass  # finished before its moment
        out, err = process.communicate(timeout=60)  # a hang fails here
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def leftovers(folder: Path) -> list[str]:
    """Partial files, lock files and stores not marked complete under ``folder``."""
    left = [str(p.relative_to(folder)) for p in folder.rglob("*")
            if ".partial" in p.name or p.name.endswith(".lock")]
    for store in folder.rglob("*.h5"):
        with h5py.File(store, "r") as file:
            if not file.attrs.get("complete"):
                left.append(f"{store.relative_to(folder)} (incomplete)")
    return left


def check(result: subprocess.CompletedProcess, signum: int, folder: Path, finished) -> str:
    """Assert one of the two endings; returns which, for the summary."""
    what = f"{' '.join(result.args)}: exit {result.returncode}, stderr {result.stderr!r}"
    assert not [word for word in FORBIDDEN if word in result.stderr], what
    assert not leftovers(folder), f"{what}; left {leftovers(folder)}"
    if result.returncode == 0:
        assert not [line for line in result.stderr.splitlines()
                    if line.startswith(("interrupted:", "terminated:"))], what
        finished(folder, result)
        return "finished"
    assert result.returncode == 128 + signum, what
    assert result.stderr == interrupted_line(signum, list(result.args)) + "\n", what
    return signal.Signals(signum).name


def moments(seed: int, count: int, span: float) -> list[tuple[float, int, bool]]:
    """(delay, signal, to the whole group) for ``count`` runs: one in three a SIGTERM."""
    rng = random.Random(seed)
    return [(rng.uniform(0, span), signal.SIGTERM if rng.random() < 1 / 3 else signal.SIGINT,
             rng.random() < 0.5) for _ in range(count)]


def run_moments(name: str, args_for, folder: Path, seed: int, count: int, finished,
                span: float = SPAN_S) -> None:
    endings = []
    for k, (delay, signum, group) in enumerate(moments(seed, count, span)):
        cwd = folder / f"{name}-{k}"
        cwd.mkdir(parents=True)
        args = args_for(k)
        result = interrupt(args, cwd, delay, signum, group)
        ending = check(result, signum, cwd, finished)
        endings.append(f"{delay:.2f} s {signal.Signals(signum).name}"
                       f"{' to the group' if group else ''}: {ending}")
        shutil.rmtree(cwd)
    print(f"\n{name}: " + "; ".join(endings))


def synth_finished(folder: Path, result: subprocess.CompletedProcess) -> None:
    assert "ntu60: wrote 81 raw files to raw" in result.stdout
    assert len(list((folder / "raw").glob("*.skeleton"))) == 81


def prepare_finished(folder: Path, result: subprocess.CompletedProcess) -> None:
    assert "samples written to" in result.stdout
    assert (folder / "data" / "processed" / "ntu60" / "25-shoulder.h5").is_file()


def pretrain_finished(folder: Path, result: subprocess.CompletedProcess) -> None:
    assert f"{SPLIT} {RUN}: 30 epochs" in result.stdout
    assert list((folder / "models").rglob("joint.encoder.pt"))


def test_synth_and_prepare_interrupted_at_any_moment(tmp_path, synth_ntu60):
    run_moments("synth", lambda k: ["synth", "ntu60", "--subjects", "2", "--replications", "1",
                                    "--out", "raw"], tmp_path, seed=1, count=6,
                finished=synth_finished)
    run_moments("prepare", lambda k: ["prepare", "ntu60", "--raw", str(synth_ntu60),
                                      "--variant", "25-shoulder", "--data-dir", "data",
                                      "-j", str(1 + k % 2)], tmp_path, seed=2, count=8,
                finished=prepare_finished)


@pytest.mark.slow
def test_pretrain_interrupted_at_any_moment(tmp_path, prepared_ntu60):
    params = write_params(tmp_path, PARAMS)
    run_moments("pretrain", lambda k: ["pretrain", RUN, "--split", SPLIT, "--params",
                                       str(params), "--data-dir", str(prepared_ntu60),
                                       "--models-dir", "models"], tmp_path, seed=5, count=6,
                finished=pretrain_finished, span=PRETRAIN_SPAN_S)


FINALISER = """
from skelctl import interrupts
interrupts.install()
import os, signal, time
class Slow:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # handled in here, where an exception is ignored
        time.sleep(0.1)
try:
    Slow()
    time.sleep(5)
    print("not interrupted")
except interrupts.Interrupted as err:
    print("interrupted", err.signum)
"""


def test_an_interrupt_swallowed_by_a_finaliser_is_raised_again():
    """Python ignores an exception raised in a ``__del__`` (it prints "Exception ignored in"
    and goes on): the interrupt is raised again right after, in the code that runs on."""
    result = subprocess.run([sys.executable, "-c", FINALISER], capture_output=True, text=True,
                            timeout=60)
    assert (result.stdout, result.stderr) == (f"interrupted {int(signal.SIGINT)}\n", ""), result


def test_a_warning_is_one_line(tmp_path):
    """A deprecated method name: ``warning: MESSAGE``, no category, file or source line."""
    params = write_params(tmp_path, {"runs": {"baseline": {"method": "random",
                                                           "streams": ["joint"]}}})
    result = subprocess.run([sys.executable, "-m", "skelctl", "pretrain", "baseline", "--split",
                             SPLIT, "--params", str(params), "--data-dir", str(tmp_path)],
                            cwd=tmp_path, env={**os.environ, **ENV}, capture_output=True,
                            text=True)
    warning, error = result.stderr.splitlines()
    assert warning == (f"warning: {params}: runs.baseline: method 'random' is deprecated; use "
                       f"'untrained'"), result.stderr
    assert error.startswith("Error: ") and result.returncode == 1, result.stderr
