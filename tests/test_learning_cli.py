"""The learning commands end to end on a small prepared corpus, with a tiny configuration."""

import json

import pytest
import yaml
from click.testing import CliRunner

from skelctl.cli import main

TINY = {
    "profile": "test",
    "splits": ["ntu60-xsub"],
    "defaults": {"variant": "50-shoulder", "encoder": "gru",
                 "encoder_options": {"hidden": 8, "layers": 1},
                 "train": {"epochs": 2, "batch_size": 16, "lr_steps": [5],
                           "checkpoint_every": 1}},
    "runs": {
        "random-joint": {"method": "random", "streams": ["joint"]},
        "skeletonclr-joint": {"method": "skeletonclr", "streams": ["joint"],
                              "options": {"queue_size": 32}},
        "crosclr-joint-motion": {"method": "crosclr", "streams": ["joint", "motion"],
                                 "options": {"queue_size": 32, "cross_epoch": 1}},
    },
    "ensembles": ["crosclr-joint-motion"],
    "downstream": {"semi": ["crosclr-joint-motion"], "finetune": ["skeletonclr-joint"],
                   "occlusion": ["skeletonclr-joint"], "transfer": []},
    "linear": {"epochs": 3, "lr_steps": [2]},
    "finetune": {"epochs": 2, "batch_size": 16, "lr_steps": [5]},
    "semi": {"percents": [10, 50], "seeds": [0, 1]},
}


@pytest.fixture
def project(prepared_ntu60, tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    return tmp_path, ["--data-dir", str(prepared_ntu60)]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_pretrain_evaluate_ensemble_tables(project):
    root, data = project
    for name in ("skeletonclr-joint", "crosclr-joint-motion"):
        result = run("pretrain", name, "--split", "ntu60-xsub", *data)
        assert result.exit_code == 0, result.output
        assert "2 epochs, final loss" in result.stdout
        assert (root / "models" / "ntu60-xsub" / f"{name}.loss.csv").read_text().startswith(
            "epoch,lr,loss")
        for command in ("linear", "knn"):
            result = run(command, name, "--split", "ntu60-xsub", *data)
            assert result.exit_code == 0, result.output
    for command in ("linear", "knn"):
        assert run(command, "random-joint", "--split", "ntu60-xsub", *data).exit_code == 0
    metrics = json.loads((root / "results" / "ntu60-xsub" / "linear" / "crosclr-joint-motion"
                          / "motion" / "metrics.json").read_text())
    assert {"top1_last", "top1_best", "top5_last", "top5_best", "best_epoch"} <= set(metrics)
    assert metrics["test_samples"] == 39 and metrics["train_samples"] == 78
    result = run("ensemble", "--split", "ntu60-xsub", "--method", "crosclr-joint-motion",
                 "--weights", "1,1")
    assert result.exit_code == 0, result.output
    assert "2s: top-1" in result.stdout
    result = run("tables")
    assert result.exit_code == 0, result.output
    table = (root / "tables" / "crosclr_table1.md").read_text()
    for row in ("SkeletonCLR joint", "CrosSCLR motion", "random init joint",
                "2s-CrosSCLR (joint+motion)"):
        assert row in table
    assert "K=1" in (root / "tables" / "crosclr_table2_topk.md").read_text()
    # resuming a finished run does no more work
    result = run("pretrain", "skeletonclr-joint", "--split", "ntu60-xsub", *data)
    assert "resuming from" in result.stdout and "after epoch 2" in result.stdout


def test_errors_name_the_file(project):
    root, data = project
    result = run("linear", "skeletonclr-joint", "--split", "ntu60-xsub", *data)
    assert result.exit_code == 1 and "checkpoint.pt: no checkpoint" in result.stderr
    result = run("pretrain", "skeletonclr-joint", "--split", "ntu60-xsub", "--epochs", "1",
                 *data)
    assert result.exit_code == 0
    result = run("linear", "skeletonclr-joint", "--split", "ntu60-xsub", *data)
    assert result.exit_code == 1 and "stopped after epoch 1 of 2" in result.stderr
    result = run("pretrain", "simclr-joint", "--split", "ntu60-xsub", *data)
    assert result.exit_code == 1 and "unknown method 'simclr'" in result.stderr
    result = run("pretrain", "skeletonclr-joint", "--split", "ntu60-xset", *data)
    assert result.exit_code == 1 and "no split 'xset/train'" in result.stderr
    result = run("tables")
    assert result.exit_code == 1 and "missing" in result.stderr
    (root / "params.yaml").write_text(yaml.safe_dump({"pretrain": {"epoch": 3}}))
    result = run("pretrain", "skeletonclr-joint", "--split", "ntu60-xsub", *data)
    assert result.exit_code == 1 and "unknown key(s) in 'pretrain': epoch" in result.stderr
