"""Faults a user meets: SIGTERM, a second writer, a full disk, corrupt checkpoints and encoder
files, broken input files. Each ends in one line of ours, leaves no partial file and keeps the
previous outputs."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from skelctl.atomic import DiskFullError, write_text
from skelctl.cli import main
from skelctl.data.store import StoreWriter
from skelctl.lock import LockError, exclusive, lock_path
from skelctl.models import read_torch_file, save_encoder
from skelctl.train import load_checkpoint, previous_checkpoint, save_checkpoint
from conftest import tiny_gru

TINY = {
    "splits": ["ntu60-xsub"],
    "defaults": {"variant": "50-shoulder", "encoder": "gru",
                 "encoder_options": {"hidden": 8, "layers": 1},
                 "train": {"epochs": 4, "batch_size": 16, "lr_steps": [9],
                           "checkpoint_every": 1}},
    "runs": {"skeletonclr-joint": {"method": "skeletonclr", "streams": ["joint"],
                                   "options": {"queue_size": 32}}},
    "linear": {"epochs": 2, "lr_steps": [5]},
}
SPLIT = ("--split", "ntu60-xsub")


@pytest.fixture
def project(prepared_ntu60, tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    handler = signal.getsignal(signal.SIGTERM)  # the CLI installs its own
    yield tmp_path, ("--data-dir", str(prepared_ntu60))
    signal.signal(signal.SIGTERM, handler)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def run_as_the_console_script(capsys, *args) -> tuple[int, str]:
    """``skelctl ARGS`` in this process as the console script runs it (skelctl.__main__, with
    its signal handling), then this process's handlers back: (exit status, stderr)."""
    import skelctl.__main__ as entry
    from skelctl import interrupts

    saved = {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS}
    hook, argv = sys.unraisablehook, sys.argv
    interrupts.install()
    sys.argv = ["skelctl", *map(str, args)]
    try:
        with pytest.raises(SystemExit) as ended:
            entry.main()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        sys.unraisablehook, sys.argv = hook, argv
    return ended.value.code, capsys.readouterr().err


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".partial" in p.name or p.name.endswith(".lock")]


def no_traceback(result) -> None:
    """A user error: exit status 1 (or 128 + signal), one line of ours, no Python traceback."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


# --- SIGTERM ------------------------------------------------------------------------------------

def test_sigterm_during_pretrain_leaves_a_resumable_checkpoint(project, monkeypatch, capsys):
    import skelctl.train as train

    root, data = project
    write_history, calls = train.write_history, []

    def terminated_after_two_epochs(history, path):
        write_history(history, path)
        calls.append(len(history))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a batch scheduler does

    monkeypatch.setattr(train, "write_history", terminated_after_two_epochs)
    status, stderr = run_as_the_console_script(capsys, "pretrain", "skeletonclr-joint", *SPLIT,
                                               *data)
    assert status == 128 + signal.SIGTERM
    assert stderr.strip().splitlines()[-1] == (
        "terminated: no partial output was left in place; rerun the command to continue: "
        "training resumes from its last checkpoint")
    out = root / "models" / "ntu60-xsub" / "skeletonclr-joint"
    assert (out / "checkpoint.pt").exists() and not (out / "joint.encoder.pt").exists()
    assert partials(root) == []
    monkeypatch.setattr(train, "write_history", write_history)
    result = run("pretrain", "skeletonclr-joint", *SPLIT, *data)
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.stdout and "after epoch 2" in result.stdout
    assert (out / "joint.encoder.pt").exists()


def test_sigterm_during_prepare_removes_the_partial_store(synth_ntu60, tmp_path, monkeypatch,
                                                         capsys):
    append, calls = StoreWriter.append, []

    def terminated_while_writing(self, *args, **kwargs):
        append(self, *args, **kwargs)
        calls.append(1)
        assert self.tmp.exists()
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(StoreWriter, "append", terminated_while_writing)
    status, stderr = run_as_the_console_script(capsys, "prepare", "ntu60", "--raw", synth_ntu60,
                                               "--data-dir", tmp_path)
    assert calls and status == 143
    assert stderr.strip().splitlines()[-1] == (
        "terminated: no partial output was left in place; rerun the command to start again "
        "(parse, clean and views are all redone)")
    assert partials(tmp_path) == [] and not (tmp_path / "interim/ntu60/parsed.h5").exists()


def test_a_real_sigterm_to_prepare(synth_ntu60, tmp_path):
    """The signal from outside, to a running process: status 143, one line, nothing partial."""
    process = subprocess.Popen([sys.executable, "-m", "skelctl", "prepare", "ntu60", "--raw",
                                str(synth_ntu60), "--data-dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.rglob(".*.partial")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("prepare finished before the signal arrived")
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "terminated: no partial output" in stderr
    assert partials(tmp_path) == []


# --- checkpoints and encoder files --------------------------------------------------------------

def state(epoch: int) -> dict:
    return {"epoch": epoch, "identity": {"run": "x"}, "model": {"w": torch.full((3,), epoch)}}


def test_the_last_two_checkpoints_are_kept_and_a_corrupt_newest_is_passed_over(tmp_path):
    path, messages = tmp_path / "checkpoint.pt", []
    for epoch in (1, 2, 3):
        save_checkpoint(state(epoch), path)
    assert torch.load(previous_checkpoint(path), weights_only=True)["epoch"] == 2
    assert load_checkpoint(path, torch.device("cpu"), messages.append)[1]["epoch"] == 3
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a crash of the disk
    source, saved = load_checkpoint(path, torch.device("cpu"), messages.append)
    assert source == previous_checkpoint(path) and saved["epoch"] == 2
    assert messages == [f"{path}: not a readable checkpoint (truncated or corrupt); trying the "
                        f"checkpoint before it"]
    previous_checkpoint(path).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="No readable checkpoint is left: delete .*checkpoint.pt, "
                                         ".*checkpoint.previous.pt and rerun"):
        load_checkpoint(path, torch.device("cpu"), messages.append)
    assert load_checkpoint(tmp_path / "none.pt", torch.device("cpu"), messages.append) is None


class Payload:
    """An object a pickle would construct, which a checkpoint may not hold."""


def test_a_checkpoint_holding_objects_is_refused_without_running_them(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "identity": {}, "payload": Payload()}, path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(path, torch.device("cpu"), lambda _: None)
    assert "holds Python objects other than tensors and plain values, which are refused" \
        in str(err.value)


def test_a_corrupt_encoder_file_is_one_line_of_ours(project, tmp_path):
    root, data = project
    path = tmp_path / "joint.encoder.pt"
    save_encoder(path, tiny_gru(), "joint")
    path.write_bytes(path.read_bytes()[:-200])
    result = run("linear", "--encoder", path, *SPLIT, *data)
    no_traceback(result)
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"Error: {path}: not a readable encoder file (truncated or "
                                     f"corrupt)")
    with pytest.raises(ValueError, match="not a readable encoder file"):
        read_torch_file(path, "encoder file")


# --- one writer per output ----------------------------------------------------------------------

HOLDER = """
import sys, time
from skelctl.lock import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def hold(output: Path) -> subprocess.Popen:
    """A second process holding ``output``'s lock until its stdin closes (or it is killed)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(output)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(
        tmp_path):
    output = tmp_path / "models" / "run"
    holder = hold(output)
    try:
        with pytest.raises(LockError, match=rf"{output}: being written by another skelctl "
                                            rf"process, pid {holder.pid} on .* \(started "):
            with exclusive(output):
                pass
    finally:
        holder.kill()  # SIGKILL: no chance to remove its lock file
        holder.wait()
    assert lock_path(output).exists()
    warnings = []
    with exclusive(output, warnings.append):
        pass
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{output}: taking over the lock of pid {holder.pid} on ")
    assert warnings[0].endswith("which ended without releasing it")
    assert not lock_path(output).exists()  # released: the file is gone
    holder = hold(output)  # a clean holder removes its file when done
    holder.stdin.close()
    holder.wait()
    assert not lock_path(output).exists()


def test_pretrain_and_prepare_refuse_an_output_another_process_is_writing(project, synth_ntu60,
                                                                          tmp_path):
    root, data = project
    holder = hold(root / "models" / "ntu60-xsub" / "skeletonclr-joint")
    try:
        result = run("pretrain", "skeletonclr-joint", *SPLIT, *data)
        no_traceback(result)
        assert f"being written by another skelctl process, pid {holder.pid}" in result.stderr
    finally:
        holder.stdin.close()
        holder.wait()
    data_dir = tmp_path / "data"
    holder = hold(data_dir / "interim" / "ntu60" / "parsed.h5")
    try:
        result = run("prepare", "ntu60", "--raw", synth_ntu60, "--data-dir", data_dir)
        no_traceback(result)
        assert f"parsed.h5: being written by another skelctl process, pid {holder.pid}" \
            in result.stderr
    finally:
        holder.stdin.close()
        holder.wait()


# --- a full disk --------------------------------------------------------------------------------

def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("what", ["text", "checkpoint", "encoder", "store"])
def test_a_full_disk_keeps_the_previous_output_and_names_the_file(tmp_path, monkeypatch, what):
    path = tmp_path / {"text": "metrics.json", "checkpoint": "checkpoint.pt",
                       "encoder": "joint.encoder.pt", "store": "parsed.h5"}[what]

    def write() -> None:
        if what == "text":
            write_text(path, "{}")
        elif what == "checkpoint":
            save_checkpoint(state(1), path)
        elif what == "encoder":
            save_encoder(path, tiny_gru(), "joint")
        else:
            with StoreWriter(path, {"dataset": "x"}) as writer:
                writer.append({"name": ["a"], "label": [0]},
                              views={"joint": torch.zeros(1, 3, 4, 25, 1).numpy()})
                writer.close()

    write()
    before = path.read_bytes()
    if what == "store":  # HDF5 reports the errno inside its own message
        monkeypatch.setattr(StoreWriter, "append", lambda *a, **k: (_ for _ in ()).throw(
            OSError("Can't write data (file write failed: errno = 28, error message = 'No "
                    "space left on device')")))
    else:
        monkeypatch.setattr(Path, "write_bytes" if what in ("checkpoint", "encoder")
                            else "write_text", no_space)
    with pytest.raises(DiskFullError) as err:
        write()
    assert str(err.value).startswith(f"{path}: no space left on the disk while writing it (")
    assert "MiB free in " in str(err.value) and "no partial file was left" in str(err.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_full_disk_during_evaluation_is_one_line(project, monkeypatch):
    root, data = project
    assert run("pretrain", "skeletonclr-joint", *SPLIT, *data).exit_code == 0
    monkeypatch.setattr(Path, "write_text", no_space)
    result = run("knn", "skeletonclr-joint", *SPLIT, *data)
    no_traceback(result)
    assert result.exit_code == 1 and "no space left on the disk while writing it" in result.stderr
    assert partials(root) == []


# --- broken input files: one message naming the file, line and column; never a traceback -------

BROKEN_PARAMS = {
    "runs: {skeletonclr-joint: [1, 2}\n": "params.yaml:1:32: not a readable params file: ",
    "linear:\n  epochs: 3\n lr: 0.1\n": "params.yaml:3:2: not a readable params file: ",
    "linear:\n\tepochs: 3\n": "params.yaml:2:1: not a readable params file: ",
    b"linear: {epochs: 3}\n# caf\xe9\n": "params.yaml:2:6: not a readable params file: not UTF-8",
}


@pytest.mark.parametrize("text", list(BROKEN_PARAMS), ids=range(len(BROKEN_PARAMS)))
def test_a_params_syntax_error_names_the_file_line_and_column_in_every_command(project, text):
    root, data = project
    assert run("pretrain", "skeletonclr-joint", *SPLIT, *data).exit_code == 0
    params = root / "params.yaml"
    params.write_bytes(text if isinstance(text, bytes) else text.encode())
    for command in (["pretrain", "skeletonclr-joint", *SPLIT], ["linear", "skeletonclr-joint",
                    *SPLIT], ["knn", "skeletonclr-joint", *SPLIT], ["semi", "skeletonclr-joint",
                    *SPLIT], ["tables"]):
        result = run(*command, *(data if command != ["tables"] else ()))
        no_traceback(result)
        assert result.exit_code == 2  # the user's input: as click's usage errors
        assert result.stderr.startswith(f"Error: {BROKEN_PARAMS[text]}"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content, problem", [
    (b"", "checkpoint (truncated or corrupt)"),
    (b"PK\x03\x04 not really a zip", "checkpoint (truncated or corrupt)"),
])
def test_an_unreadable_checkpoint_says_how_to_restart(project, content, problem):
    root, data = project
    out = root / "models" / "ntu60-xsub" / "skeletonclr-joint"
    out.mkdir(parents=True)
    (out / "checkpoint.pt").write_bytes(content)
    result = run("pretrain", "skeletonclr-joint", *SPLIT, *data)
    no_traceback(result)
    assert result.exit_code == 1 and problem in result.stderr
    relative = out.relative_to(root) / "checkpoint.pt"
    assert f"No readable checkpoint is left: delete {relative} and rerun to train " \
           f"from the start" in result.stderr
    (out / "checkpoint.pt").unlink()
    assert run("pretrain", "skeletonclr-joint", *SPLIT, *data).exit_code == 0


def test_a_corrupt_store_is_named(project, tmp_path):
    root, data = project
    store = tmp_path / "data" / "processed" / "ntu60" / "50-shoulder.h5"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    result = run("pretrain", "skeletonclr-joint", *SPLIT, "--data-dir", tmp_path / "data")
    no_traceback(result)
    assert result.exit_code == 1 and str(store) in result.stderr
