"""Every command ends by naming where its outputs are, shows progress while it works, and the
in-training KNN plot carries the untrained encoder's figure as a labelled baseline."""

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from skelctl.cli import main

PARAMS = {
    "profile": "test",
    "splits": ["ntu60-xsub"],
    "defaults": {"variant": "50-shoulder", "encoder": "gru",
                 "encoder_options": {"hidden": 8, "layers": 1},
                 "train": {"epochs": 1, "batch_size": 16, "lr_steps": [5],
                           "checkpoint_every": 1}},
    "runs": {"untrained-joint": {"method": "untrained", "streams": ["joint"]},
             "skeletonclr-joint": {"method": "skeletonclr", "streams": ["joint"],
                                   "options": {"queue_size": 32}, "train": {"knn_every": 1}}},
    "linear": {"epochs": 2, "lr_steps": [1]},
}
SPLIT = ("--split", "ntu60-xsub")


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def outputs(stdout: str) -> dict[str, list[Path]]:
    """The ``outputs:`` block a command ends with: kind -> the paths (or the shared folder of a
    kind listed by count) it names."""
    named = {}
    for line in stdout.split("\noutputs:\n", 1)[1].splitlines():
        assert line.startswith("  "), line
        kind, _, rest = line.strip().partition(": ")
        many = re.fullmatch(r"(\d+) files under (.+)/ \((.+)\)", rest)
        named[kind] = [Path(many[2])] if many else [Path(p) for p in rest.split(", ")]
    return named


def test_commands_name_their_outputs_and_the_knn_plot_has_the_untrained_baseline(
        prepared_ntu60, tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    monkeypatch.chdir(tmp_path)
    data = ("--data-dir", prepared_ntu60)
    run("pretrain", "untrained-joint", *SPLIT, *data)
    untrained = outputs(run("knn", "untrained-joint", *SPLIT, *data))
    baseline = json.loads(untrained["summary"][0].read_text())["joint"]["top1"]

    stdout = run("pretrain", "skeletonclr-joint", *SPLIT, *data)
    assert f"KNN top-1 of the untrained encoder (untrained-joint) joint: {baseline:.1f}" in stdout
    named = outputs(stdout)
    models = Path("models") / "ntu60-xsub"
    assert named["encoders"] == [models / "skeletonclr-joint" / "joint.encoder.pt"]
    assert named["loss history"] == [models / "skeletonclr-joint.loss.csv"]
    assert named["plots"] == [models / "skeletonclr-joint.loss.png",
                              models / "skeletonclr-joint.loss.eval.png"]
    assert models / "skeletonclr-joint" / "checkpoint.pt" in named["checkpoints"]
    assert all(p.is_file() for paths in named.values() for p in paths)
    # the baseline in the history's text, measured the way the KNN stage measures it
    with open(models / "skeletonclr-joint.loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["knn_joint_untrained"]) for r in rows] == pytest.approx([baseline])

    # a stale file of an earlier evaluation is not named as this one's
    stale = Path("results/ntu60-xsub/linear/skeletonclr-joint/joint/old.png")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    printed = {}
    for command, kinds in (("linear", {"summary", "metrics", "arrays", "tables", "figures"}),
                           ("knn", {"summary", "metrics", "arrays"})):
        printed[command] = stdout = run(command, "skeletonclr-joint", *SPLIT, *data)
        named = outputs(stdout)
        assert set(named) == kinds, stdout
        assert all(p.exists() for paths in named.values() for p in paths), stdout
        assert stale not in named.get("figures", []) and "old.png" not in stdout
        # progress off a terminal: a line per chunk of features, per epoch of a linear head
        assert "skeletonclr-joint joint train features: 78/78 samples" in stdout
    for head in ("linear", "linear, standardised"):
        assert f"skeletonclr-joint joint {head}: epoch 2/2 top1 " in printed["linear"]


def test_the_knn_plot_draws_the_baseline_with_its_label_and_axes(tmp_path, monkeypatch):
    from skelctl import plots
    from skelctl.train import HistoryPlots, save_history_plots

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.setdefault(path.name, figure))
    history = [{"epoch": epoch, "lr": 0.1, "loss": loss, "knn_joint": knn,
                "knn_joint_untrained": 41.25} for epoch, loss, knn in ((1, 2.0, 30.0),
                                                                      (2, 1.5, 45.0))]
    save_history_plots(history, {"loss"}, tmp_path / "run.loss.csv", HistoryPlots(
        "run on ntu60-xsub", "KNN top-1 on the test part", "KNN top-1 (%)",
        {"knn_joint_untrained": "untrained (untrained-joint)"}))
    axis = figures["run.loss.eval.png"].axes[0]
    assert axis.get_title() == "run on ntu60-xsub: KNN top-1 on the test part"
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("epoch", "KNN top-1 (%)")
    lines = {line.get_label(): line for line in axis.get_lines()}
    assert set(lines) == {"knn_joint", "untrained (untrained-joint): 41.2"}
    dashed = lines["untrained (untrained-joint): 41.2"]
    assert dashed.get_linestyle() == "--" and set(dashed.get_ydata()) == {41.25}
    assert list(lines["knn_joint"].get_ydata()) == [30.0, 45.0]
    loss = figures["run.loss.png"].axes[0]
    assert loss.get_title() == "run on ntu60-xsub: training loss"
    assert (loss.get_xlabel(), loss.get_ylabel()) == ("epoch", "loss")


def test_outputs_text_lists_few_paths_and_counts_many():
    from skelctl.stages.common import outputs_text

    text = outputs_text({"summary": ["r/linear/run.json"],
                         "figures": [f"r/linear/run/{s}/{n}.png" for s in ("joint", "motion")
                                     for n in ("curve", "tsne", "confusion")]})
    assert text.splitlines() == [
        "outputs:", "  summary: r/linear/run.json",
        "  figures: 6 files under r/linear/run/ (confusion.png, curve.png, tsne.png)"]


def test_progress_off_a_terminal_logs_epochs_and_chunks(capsys):
    import torch

    from skelctl.evaluate.features import extract_features
    from skelctl.evaluate.linear import train_linear
    from skelctl.settings import LinearConfig

    x, y = torch.randn(40, 4), torch.arange(40) % 2
    train_linear(x, y, x, y, 2, LinearConfig(epochs=3, lr_steps=[2]), torch.device("cpu"),
                 "probe")
    extract_features(torch.nn.Flatten(), torch.zeros(30, 2, 1, 1, 1), torch.device("cpu"),
                     batch_size=10, desc="feats")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" top1 ")[0] for line in lines[:3]] == [
        f"probe: epoch {e}/3" for e in (1, 2, 3)]
    assert "lr 3 " in lines[0] and "min left" in lines[2]
    assert [line.split(" samples ")[0] for line in lines[3:]] == [
        "feats: 10/30", "feats: 20/30", "feats: 30/30"]
    # without a description, silent (the KNN monitor inside pretraining)
    extract_features(torch.nn.Flatten(), torch.zeros(30, 2, 1, 1, 1), torch.device("cpu"))
    assert capsys.readouterr().out == ""
