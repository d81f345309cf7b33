"""A rerun never deletes a finished model: other settings are refused, naming what differs;
``--restart`` trains beside the old run and replaces it only when complete, so an interrupted
restart leaves the old encoder bit for bit, and a rerun resumes the restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from skelctl.cli import main

PARAMS = {
    "splits": ["ntu60-xsub"],
    "defaults": {"variant": "50-shoulder", "encoder": "gru",
                 "encoder_options": {"hidden": 8, "layers": 1},
                 "train": {"epochs": 2, "batch_size": 16, "lr_steps": [100],
                           "checkpoint_every": 1}},
    "runs": {"skeletonclr-joint": {"method": "skeletonclr", "streams": ["joint"],
                                   "options": {"queue_size": 32}}},
}


@pytest.fixture
def finished(prepared_ntu60, tmp_path, monkeypatch):
    """A project whose run skeletonclr-joint has finished its 2 epochs."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    monkeypatch.chdir(tmp_path)
    args = ["pretrain", "skeletonclr-joint", "--split", "ntu60-xsub", "--data-dir",
            str(prepared_ntu60)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return tmp_path, args


def test_a_rerun_with_other_settings_is_refused_naming_each_change(finished):
    root, args = finished
    encoder = root / "models" / "ntu60-xsub" / "skeletonclr-joint" / "joint.encoder.pt"
    before = encoder.read_bytes()
    result = CliRunner().invoke(main, [*args, "--epochs", "3", "--lr", "0.5"])
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.output
    assert "holds a finished run (checkpoint.pt, epoch 2 of 2) made with other settings" in message
    assert "train.epochs 2 -> 3" in message and "train.lr 0.1 -> 0.5" in message
    assert "phases" not in message  # they follow from the training settings
    assert "--restart" in message
    assert encoder.read_bytes() == before
    # the same settings resume: the finished run is exported again, nothing trained
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "resuming from" in result.stdout


def test_a_finished_run_without_checkpoints_is_compared_by_its_encoder_files(finished):
    root, args = finished
    run_dir = root / "models" / "ntu60-xsub" / "skeletonclr-joint"
    for checkpoint in run_dir.glob("checkpoint*.pt"):
        checkpoint.unlink()
    result = CliRunner().invoke(main, [*args, "--seed", "3"])
    assert result.exit_code == 2
    assert "holds a finished run (joint.encoder.pt) made with other settings" in result.stderr
    assert "train.seed 0 -> 3" in result.stderr


def test_an_interrupted_restart_keeps_the_old_encoder_bit_for_bit(finished):
    root, args = finished
    run_dir = root / "models" / "ntu60-xsub" / "skeletonclr-joint"
    encoder, checkpoint = run_dir / "joint.encoder.pt", run_dir / "checkpoint.pt"
    old_encoder, old_checkpoint = encoder.read_bytes(), checkpoint.read_bytes()
    history = root / "models" / "ntu60-xsub" / "skeletonclr-joint.loss.csv"
    old_history = history.read_text()
    command = [sys.executable, "-m", "skelctl", *args, "--epochs", "400", "--restart"]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    staged = root / "models" / "ntu60-xsub" / "skeletonclr-joint.restart" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not staged.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert staged.exists(), process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert encoder.read_bytes() == old_encoder and checkpoint.read_bytes() == old_checkpoint
    assert history.read_text() == old_history
    # the interrupted restart continues from its own checkpoint, then replaces the old run
    result = CliRunner().invoke(main, [*args, "--epochs", "6", "--restart"])
    assert result.exit_code == 0, result.output
    assert "was made with other settings" in result.stdout  # epochs 400 -> 6: not resumed
    assert not staged.parent.exists() and not (run_dir.parent / "skeletonclr-joint.replaced").exists()
    assert encoder.read_bytes() != old_encoder
    assert len(history.read_text().splitlines()) == 1 + 6
    result = CliRunner().invoke(main, [*args, "--epochs", "6"])  # now the run of 6 epochs
    assert result.exit_code == 0 and "resuming from" in result.stdout


def test_a_restart_interrupted_and_rerun_the_same_way_resumes(finished):
    """A restart whose process was killed after its second epoch (its scratch folder holds the
    checkpoint) continues from there when rerun with --restart."""
    import shutil

    root, args = finished
    models = root / "models" / "ntu60-xsub"
    result = CliRunner().invoke(main, [*args, "--epochs", "4", "--restart"])
    assert result.exit_code == 0, result.output
    done = (models / "skeletonclr-joint" / "joint.encoder.pt").read_bytes()
    # the state a kill after epoch 2 leaves: the scratch folder with that epoch's checkpoint
    scratch = models / "skeletonclr-joint.restart"
    shutil.copytree(models / "skeletonclr-joint", scratch)
    (scratch / "joint.encoder.pt").unlink()
    os.replace(scratch / "checkpoint.previous.pt", scratch / "checkpoint.pt")
    result = CliRunner().invoke(main, [*args, "--epochs", "4", "--restart"])
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.stdout and "after epoch 3" in result.stdout
    assert (models / "skeletonclr-joint" / "joint.encoder.pt").read_bytes() == done
    assert not scratch.exists()


def test_a_kill_between_the_two_renames_is_recovered(tmp_path):
    from skelctl.stages.pretrain import recover_replacement

    out = tmp_path / "run"
    old = tmp_path / "run.replaced"
    old.mkdir()
    (old / "joint.encoder.pt").write_bytes(b"old")
    recover_replacement(out)  # killed after moving the old run aside: it comes back
    assert (out / "joint.encoder.pt").read_bytes() == b"old" and not old.exists()
    old.mkdir()
    recover_replacement(out)  # killed after the new run was in place: the old one goes
    assert not old.exists() and out.exists()


def test_settings_changes_name_keys_and_both_values():
    from skelctl.stages.pretrain import settings_changes

    old = {"method": "ser", "train": {"lr": 0.1, "epochs": 60}, "phases": [{"epochs": 60}]}
    new = {"method": "ser", "train": {"lr": 0.1, "epochs": 3}, "phases": [{"epochs": 3}]}
    assert settings_changes(old, new) == ["train.epochs 60 -> 3"]
    assert settings_changes(old, {**old, "phases": [{"epochs": 5}]}) == [
        "phases [{'epochs': 60}] -> [{'epochs': 5}]"]
    # an encoder file's provenance: only the keys it records are compared
    assert settings_changes({"method": "ser", "epochs": 60}, new) == []
    assert settings_changes({"method": "crrl"}, new) == ["method 'crrl' -> 'ser'"]
