"""The learning commands end to end on a small prepared corpus, with a tiny configuration."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from skelctl.cli import main
from skelctl.models import ENCODERS

TINY = {
    "profile": "test",
    "splits": ["ntu60-xsub"],
    "defaults": {"variant": "50-shoulder", "encoder": "gru",
                 "encoder_options": {"hidden": 8, "layers": 1},
                 "train": {"epochs": 2, "batch_size": 16, "lr_steps": [5],
                           "checkpoint_every": 1}},
    "runs": {
        "untrained-joint": {"method": "untrained", "streams": ["joint"]},
        "skeletonclr-joint": {"method": "skeletonclr", "streams": ["joint"],
                              "options": {"queue_size": 32}, "train": {"knn_every": 2}},
        "crosclr-joint-motion": {"method": "crosclr", "streams": ["joint", "motion"],
                                 "options": {"queue_size": 32, "cross_epoch": 1}},
        "untrained": {"method": "untrained", "streams": ["joint"]},
        "crrl": {"method": "crrl", "streams": ["joint"],
                 "options": {"queue_size": 8, "first": {"epochs": 1, "lr": 0.01}},
                 "train": {"grad_clip": 1.0}},
    },
    "ensembles": ["crosclr-joint-motion"],
    "reproduces": {"crosclr-joint-motion 2s joint": {"CrosSCLR 2": "2s-CrosSCLR K=1"},
                   "untrained": {"CRRL VIII": "Rand-Enc"},
                   "crrl": {"CRRL VIII": "CRRL", "CRRL V": "CRRL", "CRRL VI": "CRRL"}},
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
    split = ("--split", "ntu60-xsub")
    for name in TINY["runs"]:
        result = run("pretrain", name, *split, *data)
        assert result.exit_code == 0, result.output
        if name != "untrained-joint" and name != "untrained":  # outside a terminal: a line an epoch
            assert "epoch 1/" in result.stdout and "min left" in result.stdout, result.stdout
        assert (root / "models" / "ntu60-xsub" / f"{name}.loss.csv").read_text().startswith(
            "epoch,")
        for command in ("linear", "knn"):
            result = run(command, name, *split, *data)
            assert result.exit_code == 0, result.output
    assert "2 epochs, final loss" in run("pretrain", "crosclr-joint-motion", *split, "--restart",
                                         *data).stdout
    metrics = json.loads((root / "results" / "ntu60-xsub" / "linear" / "crosclr-joint-motion"
                          / "motion" / "metrics.json").read_text())
    assert {"top1_last", "top1_best", "top5_last", "top5_best", "best_epoch"} <= set(metrics)
    assert metrics["test_samples"] == 39 and metrics["train_samples"] == 78
    assert {"top1_last", "top1_best"} <= set(metrics["standardised"])
    # figures beside the CSVs: loss curves, accuracy curve, confusion matrix, t-SNE
    out = root / "results" / "ntu60-xsub" / "linear" / "crosclr-joint-motion" / "motion"
    confusion = np.loadtxt(out / "confusion.csv", delimiter=",")
    assert confusion.shape == (60, 60) and confusion.sum() == 39  # NTU-60 classes, 39 tests
    assert np.trace(confusion) == round(metrics["top1_last"] * 39 / 100)
    for figure in (out / "confusion.png", out / "tsne.png", out / "curve.png",
                   root / "models" / "ntu60-xsub" / "crrl.loss.png"):
        assert figure.read_bytes().startswith(b"\x89PNG"), figure
    # the KNN monitor: every second epoch, the same figure as the KNN stage for the final encoder
    monitored = (root / "models" / "ntu60-xsub" / "skeletonclr-joint.loss.csv").read_text()
    header, first, second = [row.split(",") for row in monitored.splitlines()]
    # beside it, once measured, the untrained run's encoder (untrained-joint: same GRU, variant)
    assert header[-2:] == ["knn_joint", "knn_joint_untrained"] and first[-2:] == ["", ""]
    knn = json.loads((root / "results" / "ntu60-xsub" / "knn" / "skeletonclr-joint" / "joint"
                      / "metrics.json").read_text())
    assert float(second[-2]) == pytest.approx(knn["top1"])
    untrained = json.loads((root / "results" / "ntu60-xsub" / "knn" / "untrained-joint"
                            / "joint" / "metrics.json").read_text())
    assert float(second[-1]) == pytest.approx(untrained["top1"])
    assert (root / "models" / "ntu60-xsub" / "skeletonclr-joint.loss.eval.png").is_file()
    history = (root / "models" / "ntu60-xsub" / "crrl.loss.csv").read_text().splitlines()
    # the clipping statistics follow the losses (CRRL's runs clip their gradients)
    assert history[0] == ("epoch,lr,loss,contrast,phase,reconstruction,distill,grad_norm,"
                          "clipped")
    assert [row.split(",")[1] for row in history[1:]] == ["0.01", "0.1", "0.1"]  # each phase's
    result = run("ensemble", *split, "--method", "crosclr-joint-motion", "--weights", "1,1",
                 *data)
    assert result.exit_code == 0, result.output
    assert "2s (posthoc): top-1" in result.stdout and "2s (joint): top-1" in result.stdout
    # the downstream protocols
    result = run("semi", "crosclr-joint-motion", *split, *data)
    assert result.exit_code == 0, result.output
    semi = json.loads((root / "results" / "ntu60-xsub" / "semi" / "crosclr-joint-motion"
                       / "joint" / "metrics.json").read_text())
    # 78 training samples of 13 classes, 6 each: 10 % -> 1 per class, 50 % -> 3 per class
    assert semi["10"]["labelled_samples"] == [13, 13] and semi["50"]["labelled_samples"] == [39, 39]
    for protocol in ("finetune", "linear"):
        m = semi["10"][protocol]
        assert m["top1_last"] == pytest.approx(sum(m["top1_last_per_seed"]) / 2)
    chosen = [np.load(root / "results" / "ntu60-xsub" / "semi" / "crosclr-joint-motion" / "joint"
                      / f"p10-s{seed}" / "indices.npy") for seed in (0, 1)]
    assert len(set(chosen[0])) == 13 and not np.array_equal(chosen[0], chosen[1])
    for command in ("finetune", "occlusion"):
        result = run(command, "skeletonclr-joint", *split, *data)
        assert result.exit_code == 0, result.output
    occlusion = json.loads((root / "results" / "ntu60-xsub" / "occlusion" / "skeletonclr-joint"
                            / "joint" / "metrics.json").read_text())
    assert set(occlusion) >= {"clean", "spatial", "temporal"}
    result = run("tables")
    assert result.exit_code == 0, result.output
    table = (root / "tables" / "linear.md").read_text()
    for row in ("SkeletonCLR joint (skeletonclr-joint)", "CrosSCLR motion (crosclr-joint-motion)",
                "untrained joint (untrained-joint)"):
        assert table.count(row) == 1
    assert "`params.yaml` (test)" in table
    assert "2s-CrosSCLR (joint+motion; crosclr-joint-motion) joint" in (
        root / "tables" / "ensembles.md").read_text()
    assert "2s-CrosSCLR K=1 (crosclr-joint-motion 2s joint)" in (
        root / "tables" / "crosclr_table2_topk.md").read_text()
    # CRRL: Table VIII beside the published NTU-60 xsub value, Tables V/VI with KNN
    table8 = (root / "tables" / "crrl_tableVIII.md").read_text()
    assert "| CRRL (crrl) " in table8 and "| 67.6 " in table8 and "Rand-Enc (untrained)" in table8
    assert "60.7" in (root / "tables" / "crrl_table5_6.md").read_text()
    for name in ("semi", "finetune", "occlusion"):
        assert (root / "tables" / f"{name}.md").is_file()
    # resuming a finished run does no more work
    result = run("pretrain", "skeletonclr-joint", *split, *data)
    assert "resuming from" in result.stdout and "after epoch 2" in result.stdout


def test_a_continued_run_starts_from_the_other_runs_exported_encoder(project):
    import torch

    from skelctl.models import load_encoder

    root, data = project
    crrl = {"method": "crrl", "streams": ["joint"], "options": {"queue_size": 8},
            "train": {"grad_clip": 1.0}}
    params = {**TINY, "runs": {"cml": {**crrl, "options": {"student": "cml", "fusion": "none",
                                                            "queue_size": 8}}},
              "continued": [{"run": "crrl", "start": "cml", **crrl}]}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    split = ("--split", "ntu60-xsub")
    early = run("pretrain", "crrl", *split, *data)
    assert early.exit_code != 0
    assert "run 'crrl' starts from run 'cml', which has no joint encoder" in early.output
    assert "pretrain 'cml' first" in early.output
    for name in ("cml", "crrl"):
        result = run("pretrain", name, *split, *data)
        assert result.exit_code == 0, result.output
    models = root / "models" / "ntu60-xsub"
    history = (models / "crrl.loss.csv").read_text().splitlines()
    assert len(history) == 1 + 2 and "distill" in history[0]  # the student's epochs only
    teacher = torch.load(models / "crrl" / "checkpoint.pt", weights_only=False)["model"]
    source = load_encoder(models / "cml" / "joint.encoder.pt")[0].state_dict()
    for key, value in source.items():  # the frozen teacher is exactly the cml run's encoder
        assert torch.equal(teacher[f"teacher.{key}"], value), key
    encoder, info = load_encoder(models / "crrl" / "joint.encoder.pt")
    assert info["provenance"]["start"] == "cml"

    # another input variant than the run's is named with the file
    params["continued"][0]["variant"] = "64-spine"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = run("pretrain", "crrl", *split, *data)
    assert result.exit_code != 0
    gru = str({**ENCODERS["gru"].defaults, "hidden": 8, "layers": 1})
    assert (f"models/ntu60-xsub/cml/joint.encoder.pt: run 'crrl' starts from this encoder, but "
            f"it is gru {gru} on 50-shoulder, and the run needs gru {gru} on 64-spine"
            in result.output)


def test_errors_name_the_file(project):
    root, data = project
    split = ("--split", "ntu60-xsub")
    result = run("linear", "skeletonclr-joint", *split, *data)
    assert result.exit_code == 1 and "joint.encoder.pt: no encoder file" in result.stderr
    assert "run `skelctl pretrain skeletonclr-joint --split ntu60-xsub` first" in result.stderr
    result = run("linear", *split, *data)
    assert result.exit_code == 1 and "name either a RUN or an --encoder FILE" in result.stderr
    result = run("pretrain", "simclr-joint", *split, *data)
    assert result.exit_code == 2 and "unknown run 'simclr-joint'" in result.stderr
    result = run("pretrain", "skeletonclr-joint", "--split", "ntu60-xset", *data)
    assert result.exit_code == 2 and "unknown split 'ntu60-xset'" in result.stderr
    result = run("tables")
    assert result.exit_code == 1 and "missing" in result.stderr
    params = {**TINY, "runs": {**TINY["runs"], "crosclr-joint-motion": {
        **TINY["runs"]["crosclr-joint-motion"], "options": {"cross_epochs": 3}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = run("pretrain", "crosclr-joint-motion", *split, *data)
    assert result.exit_code == 2
    assert ("params.yaml: runs.crosclr-joint-motion.options: unknown option(s) cross_epochs "
            "(did you mean 'cross_epoch'?); accepted: feature_dim, queue_size") in result.stderr
    (root / "params.yaml").write_text(yaml.safe_dump({**TINY, "linear": {"epoch": 3}}))
    result = run("linear", "skeletonclr-joint", *split, *data)
    assert result.exit_code == 2 and ("linear: unknown key(s) epoch (did you mean 'epochs'?)"
                                      in result.stderr)


def test_transfer_to_another_dataset(project, synth_pku1, tmp_path_factory):
    """Pretrained on the NTU-60 corpus, linear-evaluated and fine-tuned on PKU-MMD I."""
    from skelctl.stages import prepare

    root, data = project
    prepare.run("pku1", synth_pku1, data[1], variants=("50-shoulder",))
    assert run("pretrain", "skeletonclr-joint", "--split", "ntu60-xsub", *data).exit_code == 0
    result = run("transfer", "skeletonclr-joint", "--source", "ntu60-xsub", "--split",
                 "pku1-xsub", *data)
    assert result.exit_code == 0, result.output
    assert "pku1-xsub skeletonclr-joint@ntu60-xsub joint linear: top-1" in result.stdout
    metrics = json.loads((root / "results" / "pku1-xsub" / "transfer"
                          / "skeletonclr-joint@ntu60-xsub" / "joint" / "metrics.json").read_text())
    assert metrics["source"] == "ntu60-xsub"
    assert metrics["finetune"]["epochs"] == 2 and "top1_best" in metrics["linear"]
    result = run("transfer", "skeletonclr-joint", "--source", "ntu60-xsub", "--split",
                 "ntu60-xsub", *data)
    assert result.exit_code == 1 and "transfer from ntu60-xsub to itself" in result.stderr
