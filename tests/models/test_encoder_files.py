"""Exported encoder files: written atomically, self-describing, loaded strictly, for every
registered encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from skelctl.cli import main
from skelctl.data.store import Store
from skelctl.models import ENCODERS, build_encoder, load_encoder, save_encoder
from skelctl.skeletons import KINECT20, NTU25, get_layout
from skelctl.stages.config import load_run

from conftest import gen, tiny_gru, write_params


EXPORT = {
    "profile": "test",
    "splits": ["ntu60-xsub"],
    "defaults": {"variant": "50-shoulder", "encoder": "gru",
                 "encoder_options": {"hidden": 8, "layers": 1},
                 "train": {"epochs": 1, "batch_size": 16, "lr_steps": [5],
                           "checkpoint_every": 1}},
    "runs": {"skeletonclr-joint": {"method": "skeletonclr", "streams": ["joint"],
                                   "options": {"queue_size": 32}}},
}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_exported_encoder_files(prepared_ntu60, tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    params = write_params(project, EXPORT)
    monkeypatch.chdir(project)
    data = ("--data-dir", prepared_ntu60)
    result = cli("pretrain", "skeletonclr-joint", "--split", "ntu60-xsub", *data)
    assert result.exit_code == 0, result.output
    assert "ntu60-xsub skeletonclr-joint: 1 epochs" in result.stdout
    models = project / "models" / "ntu60-xsub" / "skeletonclr-joint"
    file = models / "joint.encoder.pt"
    assert file.is_file()
    assert [p.name for p in project.rglob("*") if "partial" in p.name] == []

    encoder, info = load_encoder(file)
    store = Store(prepared_ntu60 / "processed" / "ntu60" / "50-shoulder.h5")
    # the registry's defaults are written out beside the run's own options
    assert info["name"] == "gru" and info["options"] == {**ENCODERS["gru"].defaults, "hidden": 8,
                                                         "layers": 1}
    assert info["layout"] == get_layout(store.attr("layout")) == NTU25
    assert info["num_persons"] == int(store.attr("max_bodies")) == 2
    assert info["view"] == "joint"
    provenance = info["provenance"]
    assert {k: provenance[k] for k in ("run", "split", "variant", "epochs", "method")} == {
        "run": "skeletonclr-joint", "split": "ntu60-xsub", "variant": "50-shoulder",
        "epochs": 1, "method": "skeletonclr"}
    assert provenance["options"] == {"queue_size": 32}
    assert not encoder.training

    # the file holds the trained method's query encoder
    run = load_run(params, "skeletonclr-joint")
    method = run.build(NTU25, 2).eval()
    x = torch.from_numpy(store.take("joint", store.split("xsub/val")[:5]))
    with torch.no_grad():
        assert not torch.equal(encoder(x), method.moco.encoder_q(x))  # training changed it
        method.load_state_dict(torch.load(models / "checkpoint.pt", weights_only=False)["model"])
        assert torch.equal(encoder(x), method.moco.encoder_q(x))
        assert not torch.equal(encoder(x), method.moco.encoder_k(x))
    assert method.encoders()["joint"] is method.moco.encoder_q

    # evaluated from a folder with no params at all
    monkeypatch.chdir(elsewhere)
    assert not (elsewhere / "params.yaml").exists()
    result = cli("knn", "--encoder", file, "--split", "ntu60-xsub", *data)
    assert result.exit_code == 0, result.output
    metrics = json.loads((elsewhere / "results" / "ntu60-xsub" / "knn" /
                          "skeletonclr-joint@ntu60-xsub" / "joint" / "metrics.json").read_text())
    assert metrics["k"] == 1 and metrics["train_samples"] == 78 and metrics["test_samples"] == 39
    assert 0 <= metrics["top1"] <= 100

    # a corrupt file
    corrupt = elsewhere / "corrupt.encoder.pt"
    corrupt.write_bytes(np.random.default_rng(0).bytes(512))
    result = cli("knn", "--encoder", corrupt, "--split", "ntu60-xsub", *data)
    assert result.exit_code == 1
    assert f"{corrupt}: not a readable encoder file" in result.stderr
    # an encoder for another skeleton
    other = elsewhere / "kinect.encoder.pt"
    save_encoder(other, tiny_gru(KINECT20), "joint",
                 {"run": "k20", "split": "nw-ucla-xview", "variant": "50-shoulder"})
    assert load_encoder(other)[1]["layout"] == KINECT20
    result = cli("knn", "--encoder", other, "--split", "ntu60-xsub", *data)
    assert result.exit_code == 1
    assert f"{other}: encoder made for layout kinect20 with 2 bodies" in result.stderr
    assert "holds ntu25 with 2 bodies" in result.stderr
    assert not (elsewhere / "results" / "ntu60-xsub" / "knn" / "k20@nw-ucla-xview").exists()
    # a missing file
    result = cli("knn", "--encoder", elsewhere / "absent.pt", "--split", "ntu60-xsub", *data)
    assert result.exit_code == 1 and "absent.pt: no encoder file" in result.stderr


def test_save_encoder_is_atomic_and_round_trips(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder("stgcn", NTU25, 2, hidden=4, out_dim=8,
                            partition="spatial-max-hop-1").eval()
    path = tmp_path / "deep" / "x.encoder.pt"
    save_encoder(path, encoder, "bone", {"run": "r", "split": "s", "variant": "v", "epochs": 3})
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.encoder.pt"]
    loaded, info = load_encoder(path)
    assert info["options"] == {"hidden": 4, "out_dim": 8, "partition": "spatial-max-hop-1"}
    assert torch.equal(loaded.adjacency, encoder.adjacency)
    x = torch.randn(2, 3, 8, 25, 2, generator=gen(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), encoder(x))
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a skelctl encoder file"):
        load_encoder(tmp_path / "other.pt")



SMALL_OPTIONS = {"stgcn": {"hidden": 4, "out_dim": 8}, "bigru": {"hidden": 8},
                 "gru": {"hidden": 8}, "lstm": {"hidden": 8}, "agcn": {"hidden": 4},
                 "hcn": {"frames": 10, "channels": 8},
                 "transformer": {"dim": 16, "depth": 2, "heads": 2, "t_patch": 2, "frames": 10}}


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("layout", [NTU25, KINECT20], ids=["ntu25", "kinect20"])
def test_every_registered_encoder_builds_and_round_trips_its_file(name, layout, tmp_path):
    """A contract over the registry: a newly registered encoder is tested without a test of its
    own. Small widths keep it fast; the registered defaults are built too."""
    assert isinstance(build_encoder(name, layout, 1), nn.Module)
    torch.manual_seed(0)
    encoder = build_encoder(name, layout, 2, **SMALL_OPTIONS[name]).eval()
    x = torch.randn(3, 3, 10, layout.num_joints, 2, generator=gen(2))
    with torch.no_grad():
        features = encoder(x)
    assert features.shape == (3, encoder.out_dim) and torch.isfinite(features).all()
    save_encoder(tmp_path / "e.pt", encoder, "joint", {"run": "r"})
    loaded, info = load_encoder(tmp_path / "e.pt")
    assert info["name"] == name
    assert info["options"] == {**ENCODERS[name].defaults, **SMALL_OPTIONS[name]}
    with torch.no_grad():
        assert torch.equal(loaded(x), features)

# --- 4. variable-length sequences in a batch ----------------------------------------------------
