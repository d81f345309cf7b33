"""`skelctl info`: what a store or an encoder file holds, as text and as JSON."""

import json

import torch
import yaml
from click.testing import CliRunner

from skelctl.cli import main
from skelctl.models import save_encoder
from conftest import tiny_gru


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_info_of_a_views_store(prepared_ntu60):
    store = prepared_ntu60 / "processed" / "ntu60" / "50-shoulder.h5"
    result = run("info", "--json", store)
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    assert described["kind"] == "views store" and described["dataset"] == "ntu60"
    assert described["variant"] == "50-shoulder" and described["layout"] == "ntu25"
    assert described["samples"] == 117 and described["classes"] == 60
    assert described["splits"] == {"xsub": {"train": 78, "val": 39},
                                   "xview": {"train": 78, "val": 39}}
    assert described["views"]["joint"] == [3, 50, 25, 2]  # per sample: C, T, V, M
    # per row, one frame of one sample (the rows: every sample's frames, one after another)
    assert described["variable_length"] is False and described["sequences"] == [3, 25, 2]
    assert described["params"]["normalisation"] == "shoulder"
    assert described["skelctl_version"]
    text = run("info", store).stdout
    assert "kind: views store" in text and "  xsub:\n    train: 78\n    val: 39" in text
    assert "views (per sample: C, T, V, M):\n" in text
    assert "variable_length: False (every sample resampled to 50 frames)" in text


def test_info_of_a_parsed_store(prepared_ntu60):
    described = json.loads(run("info", "--json", prepared_ntu60 / "interim" / "ntu60" /
                               "parsed.h5").stdout)
    assert described["kind"] == "parsed store" and "variant" not in described
    assert described["views"] == {} and described["sequences"] == [25, 3]  # a track's row
    assert "variable_length" not in described  # no frame axis of fixed size to speak of


def test_info_of_an_encoder_file_and_of_a_trained_run(prepared_ntu60, tmp_path, monkeypatch):
    path = tmp_path / "joint.encoder.pt"
    save_encoder(path, tiny_gru(), "joint", {"run": "mine", "epochs": 3})
    described = json.loads(run("info", "--json", path).stdout)
    assert described["encoder"] == "gru" and described["view"] == "joint"
    assert described["options"]["hidden"] == 8 and described["joints"] == 25
    assert described["parameters"] == sum(p.numel() for p in tiny_gru().parameters())
    assert described["provenance"] == {"run": "mine", "epochs": 3}
    assert "parameters: " in run("info", path).stdout

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "defaults": {"variant": "50-shoulder", "encoder": "gru",
                     "encoder_options": {"hidden": 8, "layers": 1},
                     "train": {"epochs": 2, "batch_size": 16, "knn_every": 2,
                               "checkpoint_every": 1}},
        "runs": {"clr": {"method": "skeletonclr", "streams": ["joint"],
                         "options": {"queue_size": 32}}}}))
    assert run("pretrain", "clr", "--split", "ntu60-xsub", "--data-dir",
               prepared_ntu60).exit_code == 0
    provenance = json.loads(run("info", "--json", "models/ntu60-xsub/clr/joint.encoder.pt")
                            .stdout)["provenance"]
    assert provenance["run"] == "clr" and provenance["epochs"] == 2
    assert provenance["split"] == "ntu60-xsub" and provenance["variant"] == "50-shoulder"
    assert set(provenance["metrics"]) == {"loss", "infonce_joint", "knn_joint"}
    assert provenance["skelctl_version"]

    # the training checkpoint and the one before it (train.py keeps the last two)
    checkpoint = json.loads(run("info", "--json", "models/ntu60-xsub/clr/checkpoint.pt").stdout)
    assert checkpoint["kind"] == "training checkpoint"
    assert checkpoint["run"] == "clr" and checkpoint["split"] == "ntu60-xsub"
    assert checkpoint["epoch"] == 2 and checkpoint["epochs"] == 2
    assert checkpoint["train"]["batch_size"] == 16 and checkpoint["train"]["seed"] == 0
    assert checkpoint["settings"]["method"] == "skeletonclr"
    assert checkpoint["settings"]["variant"] == "50-shoulder"
    assert set(checkpoint["losses"]) == {"loss", "infonce_joint", "knn_joint"}
    text = run("info", "models/ntu60-xsub/clr/checkpoint.pt").stdout
    assert "epoch: 2 of 2\n" in text and "losses (the last epoch's):\n  loss: " in text
    previous = json.loads(run("info", "--json", "models/ntu60-xsub/clr/checkpoint.previous.pt")
                          .stdout)
    assert previous["kind"] == "previous training checkpoint" and previous["epoch"] == 1
    assert previous["newest"].endswith("clr/checkpoint.pt")
    assert "knn_joint" not in previous["losses"]  # KNN every 2 epochs: not after the first


def test_info_of_anything_else_is_one_error(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    result = run("info", other)
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"Error: {other}: neither a skelctl store (HDF5) nor an "
                                     f"encoder file or training checkpoint")
    torch_file = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, torch_file)
    result = run("info", torch_file)
    assert result.exit_code == 1 and result.stderr.strip() == (
        f"Error: {torch_file}: a torch file, but neither a skelctl encoder file nor a training "
        f"checkpoint")
    result = run("info", tmp_path / "absent.h5")
    assert result.exit_code == 1 and "absent.h5: no such file" in result.stderr
