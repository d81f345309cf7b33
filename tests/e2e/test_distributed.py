"""DDP: the same pretrain command under torchrun with two CPU processes (gloo)."""

import os
import subprocess
import sys

import pytest
import torch

TINY = """
defaults:
  variant: 50-shoulder
  encoder: gru
  encoder_options: {hidden: 8, layers: 1}
  train: {epochs: 2, batch_size: 8, lr_steps: [10], checkpoint_every: 1}
runs:
  skeletonclr-joint: {method: skeletonclr, streams: [joint], options: {queue_size: 50}}
"""


@pytest.mark.slow
def test_torchrun_two_processes(prepared_ntu60, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(TINY)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "skelctl", "pretrain", "skeletonclr-joint", "--split", "ntu60-xsub",
         "--params", str(params), "--data-dir", str(prepared_ntu60),
         "--models-dir", str(tmp_path / "models"), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("2 epochs, final loss") == 1  # only rank 0 reports and writes
    state = torch.load(tmp_path / "models" / "ntu60-xsub" / "skeletonclr-joint" / "checkpoint.pt",
                       weights_only=False)
    assert state["identity"]["world_size"] == 2 and state["epoch"] == 2
    # 78 training samples: 4 steps per epoch of 8 samples on each of 2 ranks; every step
    # enqueues the keys gathered from both ranks (16), so 128 keys went into a queue of 50
    assert int(state["model"]["moco.queue_ptr"]) == 128 % 50
    assert sorted(p.name for p in (tmp_path / "models" / "ntu60-xsub").iterdir()) == [
        "skeletonclr-joint", "skeletonclr-joint.loss.csv", "skeletonclr-joint.loss.png"]
    run_dir = tmp_path / "models" / "ntu60-xsub" / "skeletonclr-joint"
    assert sorted(p.name for p in run_dir.iterdir()) == [  # the last two checkpoints kept
        "checkpoint.previous.pt", "checkpoint.pt", "joint.encoder.pt"]
