"""The method platform by behaviour and values: run entries in params, DVC's per-run tracking,
exported encoders, variable-length batches, phased training, the MoCo core's options, encoder
feature maps, the graph partition option and CrosSCLR's ablation options."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from skelctl.cli import main
from skelctl.data.store import Store
from skelctl.data.views import compute_view
from skelctl.methods import build_method
from skelctl.methods.base import Phase
from skelctl.methods.crossclr import CrosSCLROptions
from skelctl.methods.losses import cross_view_loss, info_nce
from skelctl.methods.moco import MomentumContrast
from skelctl.models import (ENCODERS, build_encoder, encoder_option_names, load_encoder,
                            save_encoder)
from skelctl.models.graph import PARTITIONS, spatial_partition
from skelctl.models.stgcn import STGCN
from skelctl.skeletons import KINECT20, NTU25, get_layout
from skelctl.train import Samples, TrainConfig, fit, step_generator
from stages.common import StageError
from stages.config import RUN_DEFAULTS, Run, load_run, read_params, run_names

CPU = torch.device("cpu")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_gru(layout=NTU25, persons=2, **options):
    return build_encoder("gru", layout, persons, **{"hidden": 8, "layers": 1, **options})


# --- 1. run entries in params -------------------------------------------------------------------

def write_params(tmp_path, document, name="params.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


BASE = {
    "defaults": {"variant": "64-spine", "encoder": "stgcn",
                 "encoder_options": {"hidden": 4, "out_dim": 8, "dropout": 0.0},
                 "train": {"epochs": 5, "batch_size": 16, "lr": 0.05}},
    "runs": {
        "clr": {"method": "skeletonclr", "streams": ["joint"], "train": {"epochs": 7}},
        "clr-gru": {"method": "skeletonclr", "streams": ["bone"], "encoder": "gru"},
        "clr-gru-own": {"method": "skeletonclr", "streams": ["joint"], "encoder": "gru",
                        "encoder_options": {"hidden": 8, "layers": 1}},
        "clr-same": {"method": "skeletonclr", "streams": ["joint"], "encoder": "stgcn"},
        "cross": {"method": "crosclr", "streams": ["joint", "motion"],
                  "options": {"topk": 3}, "variant": "50-shoulder",
                  "encoder_options": {"hidden": 4, "out_dim": 16}},
    },
}


def test_run_entries_merge_with_the_defaults(tmp_path):
    params = write_params(tmp_path, BASE)
    clr = load_run(params, "clr")
    # train: the run's keys over the defaults' over TrainConfig's, key by key
    assert (clr.train.epochs, clr.train.batch_size, clr.train.lr) == (7, 16, 0.05)
    assert clr.train.lr_steps == [250] and clr.train.momentum == 0.9 and clr.train.seed == 0
    assert clr.method == "skeletonclr" and clr.streams == ("joint",) and clr.options == {}
    assert clr.variant == "64-spine" and clr.encoder == "stgcn"
    assert clr.encoder_options == {"hidden": 4, "out_dim": 8, "dropout": 0.0}  # inherited
    # another encoder and no encoder_options of its own: the shared (ST-GCN) ones are dropped
    other = load_run(params, "clr-gru")
    assert other.encoder == "gru" and other.encoder_options == {}
    assert other.train.epochs == 5 and other.streams == ("bone",)
    assert load_run(params, "clr-gru-own").encoder_options == {"hidden": 8, "layers": 1}
    # naming the shared encoder again keeps the shared options
    assert load_run(params, "clr-same").encoder_options == {"hidden": 4, "out_dim": 8,
                                                            "dropout": 0.0}
    cross = load_run(params, "cross")
    assert cross.options == {"topk": 3} and cross.variant == "50-shoulder"
    assert cross.encoder_options == {"hidden": 4, "out_dim": 16}  # replaced as a whole
    assert cross.train.epochs == 5
    # command-line overrides: the non-None values win over the entry
    over = load_run(params, "clr", {"epochs": 2, "lr": None, "seed": 3})
    assert (over.train.epochs, over.train.lr, over.train.seed) == (2, 0.05, 3)
    assert over.settings() == {"method": "skeletonclr", "streams": ["joint"],
                               "variant": "64-spine", "encoder": "stgcn",
                               "encoder_options": {"hidden": 4, "out_dim": 8, "dropout": 0.0},
                               "options": {}}
    # the run builds, with the entry's options and encoder
    method = cross.build(NTU25, 2)
    assert method.options.topk == 3 and method.options.cross_epoch == 150
    assert method.encoders()["motion"].out_dim == 16


def test_adhoc_runs_need_no_params(tmp_path):
    run = load_run(None, "skeletonclr-joint")
    assert (run.method, run.streams) == ("skeletonclr", ("joint",))
    assert run.variant == RUN_DEFAULTS["variant"] == "50-shoulder"
    assert run.encoder == "stgcn"
    assert run.encoder_options == {"hidden": 16, "out_dim": 256, "dropout": 0.5}
    assert run.train == TrainConfig() and run.options == {}
    multi = load_run(None, "crosclr-joint-motion-bone")
    assert multi.streams == ("joint", "motion", "bone")
    # with a params file that does not list it, the ad-hoc run takes the file's defaults
    adhoc = load_run(write_params(tmp_path, BASE), "crosclr-joint-bone")
    assert adhoc.variant == "64-spine" and adhoc.train.epochs == 5


def test_a_run_may_have_its_own_linear_protocol(tmp_path):
    """linear.runs.<run> overrides the linear section for that run only (CrosNNCLR's lr 0.3 in
    params.yaml); the command line's overrides still win; an unknown key is named."""
    from stages.evaluate import linear_config

    params = write_params(tmp_path, {**BASE, "linear": {
        "lr": 3.0, "lr_steps": [80], "runs": {"crosnnclr-joint": {"lr": 0.3, "epochs": 90}}}})
    own, _ = linear_config(params, {}, "crosnnclr-joint")
    assert (own.lr, own.epochs, own.lr_steps) == (0.3, 90, [80])
    other, _ = linear_config(params, {}, "skeletonclr-joint")
    assert (other.lr, other.epochs) == (3.0, 100)
    assert linear_config(params, {"lr": 1.0}, "crosnnclr-joint")[0].lr == 1.0
    bad = write_params(tmp_path, {**BASE, "linear": {"runs": {"crosnnclr-joint": {"lr_step": 1}}}})
    with pytest.raises(StageError, match="linear.runs.crosnnclr-joint must map keys of 'linear' "
                                         "to values; unknown: lr_step"):
        linear_config(bad, {}, "crosnnclr-joint")
    shipped, _ = linear_config(Path(__file__).parents[1] / "params.yaml", {}, "crosnnclr-bone")
    assert (shipped.lr, shipped.lr_steps, shipped.lr_gamma) == (0.3, [80], 0.1)



def expect_error(params, run, *parts, overrides=None):
    with pytest.raises(StageError) as info:
        load_run(params, run, overrides)
    message = str(info.value)
    for part in (str(params), f"run {run!r}", *parts):
        assert part in message, (part, message)
    return message


def with_run(entry, name="bad"):
    return {**BASE, "runs": {**BASE["runs"], name: entry}}



def test_a_continued_run_is_read_from_the_list_with_its_start(tmp_path):
    entry = {"run": "next", "start": "clr", "method": "skeletonclr", "streams": ["joint"],
             "train": {"epochs": 2}}
    params = write_params(tmp_path, {**BASE, "continued": [entry]})
    run = load_run(params, "next")
    assert (run.start, run.train.epochs, run.variant) == ("clr", 2, "64-spine")
    assert run.settings()["start"] == "clr" and "start" not in load_run(params, "clr").settings()
    assert run_names(read_params(params)) == [*BASE["runs"], "next"]
    expect_error(write_params(tmp_path, with_run({"method": "skeletonclr", "streams": ["joint"],
                                                  "start": "clr"})), "bad",
                 "unknown key(s) start in the entry",
                 "a run that starts from another run is an entry of the 'continued' list")
    expect_error(write_params(tmp_path, {**BASE, "continued": [{**entry, "start": "nope"}]}),
                 "next", "start 'nope' must name another run of the params (listed: clr,")
    expect_error(write_params(tmp_path, {**BASE, "continued": [{**entry, "start": "next"}]}),
                 "next", "start 'next' must name another run")
    for continued, message in (
            ([{**entry, "run": "clr"}], "run 'clr' is given twice"),
            ([{"run": "next", "method": "skeletonclr"}], "'continued' must be a list of run "
                                                          "entries, each with 'run'")):
        with pytest.raises(StageError, match=re.escape(message)):
            load_run(write_params(tmp_path, {**BASE, "continued": continued}), "clr")

def test_run_entry_errors_name_the_file_the_run_the_key_and_the_accepted_keys(tmp_path):
    joint = {"method": "skeletonclr", "streams": ["joint"]}
    cases = [
        # an unknown key of the entry
        ({**joint, "epochs": 3}, ["unknown key(s) epochs in the entry",
                                  "accepted: method, streams, variant, encoder, "
                                  "encoder_options, options, train"]),
        # an unknown key under train
        ({**joint, "train": {"epoch": 3}}, ["unknown key(s) epoch in train",
                                            "accepted: epochs, batch_size, lr"]),
        # a misspelt method option
        ({"method": "crosclr", "streams": ["joint", "motion"],
          "options": {"cross_epochs": 3}},
         ["unknown option(s) cross_epochs", "accepted: feature_dim, queue_size", "cross_epoch,"]),
        # an encoder option the encoder lacks
        ({**joint, "encoder": "gru", "encoder_options": {"hidden": 8, "out_dim": 4}},
         ["encoder 'gru': unknown option(s) out_dim", "accepted: in_channels, cell, hidden",
          "pooling"]),
        # an unknown method
        ({"method": "simclr", "streams": ["joint"]},
         ["unknown method 'simclr'", "known: skeletonclr, crosclr, crrl, aimclr, crosnnclr, crosnnclr_star, untrained"]),
        # streams not a list of views
        ({"method": "skeletonclr", "streams": "joint"},
         ["streams must be a list of views from joint, motion, bone, velocity", "'joint'"]),
        ({"method": "crosclr", "streams": ["joint", "hand"]},
         ["streams must be a list of views", "'hand'"]),
    ]
    for i, (entry, parts) in enumerate(cases):
        params = write_params(tmp_path, with_run(entry), f"params{i}.yaml")
        expect_error(params, "bad", *parts)
    # a name neither in params nor ad-hoc lists the runs
    params = write_params(tmp_path, BASE)
    expect_error(params, "simclr-joint",
                 "not in the params' runs (listed: clr, clr-gru, clr-gru-own, clr-same, cross)",
                 "methods: skeletonclr, crosclr, crrl, aimclr, crosnnclr, crosnnclr_star, untrained")
    with pytest.raises(StageError, match=r"^run 'skeletonclr-hand': not in the params' runs "
                                         r"\(listed: none\)"):
        load_run(None, "skeletonclr-hand")
    with pytest.raises(StageError, match="params file does not exist"):
        load_run(tmp_path / "absent.yaml", "skeletonclr-joint")


def test_misspelt_method_option_is_an_error_when_the_run_is_built():
    run = Run("mine", "crosclr", ("joint", "motion"), "50-shoulder", "gru",
              {"hidden": 8, "layers": 1}, {"cross_epochs": 3}, TrainConfig())
    with pytest.raises(StageError) as info:
        run.build(NTU25, 2)
    message = str(info.value)
    assert message.startswith("run 'mine': unknown option(s) cross_epochs; accepted: ")
    accepted = message.split("accepted: ")[1].split(", ")
    assert accepted == [f.name for f in dataclasses.fields(CrosSCLROptions)]
    assert "cross_epoch" in accepted and "detach_teacher" in accepted
    bad_encoder = dataclasses.replace(run, options={}, encoder_options={"out_dim": 4})
    with pytest.raises(StageError, match="run 'mine': encoder 'gru': unknown option"):
        bad_encoder.build(NTU25, 2)


def test_defaults_switching_the_encoder_drop_the_builtin_encoder_options(tmp_path):
    params = write_params(tmp_path, {"defaults": {"encoder": "gru"},
                                     "runs": {"r": {"method": "skeletonclr",
                                                    "streams": ["joint"]}}})
    run = load_run(params, "r")
    assert run.encoder == "gru" and run.encoder_options == {}


# --- 2. DVC tracks each run's own entry ---------------------------------------------------------

PROJECT = Path(__file__).resolve().parents[1]


def test_dvc_tracks_the_defaults_and_each_runs_own_entry(tmp_path, monkeypatch):
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    monkeypatch.chdir(tmp_path)  # DVC resolves stage targets from the working directory

    (tmp_path / "dvc.yaml").write_text((PROJECT / "dvc.yaml").read_text())
    document = yaml.safe_load((PROJECT / "params.demo.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    Repo.init(str(tmp_path), no_scm=True).close()
    repo = Repo(str(tmp_path))
    names = {stage.name for stage in repo.index.stages}
    runs = list(document["runs"])
    assert runs == ["untrained-joint-motion-bone", "skeletonclr-joint", "crosclr-joint-motion-bone"]
    pretrain = [f"pretrain@ntu60-xsub-{run}" for run in runs]
    expected = {*pretrain, *(f"{s}@ntu60-xsub-{r}" for s in ("linear", "knn") for r in runs),
                "semi@ntu60-xsub-untrained-joint-motion-bone", "semi@ntu60-xsub-crosclr-joint-motion-bone",
                "occlusion@ntu60-xsub-crosclr-joint-motion-bone",
                "ensemble@ntu60-xsub-crosclr-joint-motion-bone"}
    assert expected <= names
    assert not any(n.startswith(("finetune@", "transfer@")) for n in names)  # empty lists
    assert not any(n.startswith("semi@") and "skeletonclr" in n for n in names)
    by_name = {stage.name: stage for stage in repo.index.stages}
    for run, name in zip(runs, pretrain):
        params = [d for d in by_name[name].deps if isinstance(d, ParamsDependency)]
        assert [(d.def_path, sorted(d.params)) for d in params] == [
            ("params.yaml", ["defaults", f"runs.{run}"])]
    for name in ("linear@ntu60-xsub-skeletonclr-joint", "knn@ntu60-xsub-untrained-joint-motion-bone"):
        tracked = {p for d in by_name[name].deps if isinstance(d, ParamsDependency)
                   for p in d.params}
        assert not any(p.startswith(("runs", "defaults")) for p in tracked)

    # as if every pretrain stage had run, then committed
    as_if_run(tmp_path, [by_name[name] for name in pretrain],
              [f"models/ntu60-xsub/{run}" for run in runs])
    for name in pretrain:
        repo.commit(name, force=True)
    assert repo.status(targets=pretrain) == {}
    repo.close()

    def status_after(edit):
        edited = copy.deepcopy(document)
        edit(edited)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        with Repo(str(tmp_path)) as fresh:
            return fresh.status(targets=pretrain)

    def cross_epoch(d):
        d["runs"]["crosclr-joint-motion-bone"]["options"]["cross_epoch"] = 5

    status = status_after(cross_epoch)
    assert status == {"pretrain@ntu60-xsub-crosclr-joint-motion-bone": [
        {"changed deps": {"params.yaml": {"runs.crosclr-joint-motion-bone": "modified"}}}]}

    def queue(d):
        d["runs"]["skeletonclr-joint"]["options"]["queue_size"] = 128

    assert list(status_after(queue)) == ["pretrain@ntu60-xsub-skeletonclr-joint"]

    def epochs(d):
        d["defaults"]["train"]["epochs"] = 3

    changed = status_after(epochs)
    assert sorted(changed) == sorted(pretrain)
    assert all(v == [{"changed deps": {"params.yaml": {"defaults": "modified"}}}]
               for v in changed.values())

    def other_section(d):
        d["linear"]["epochs"] = 5

    assert status_after(other_section) == {}


# --- 3. exported encoders -----------------------------------------------------------------------

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


def as_if_run(tmp_path, stages, outputs):
    """Each stage's dependencies in place (placeholders where absent) and the named output
    folders with an encoder and a loss history, as if the stages had run."""
    from dvc.dependency.param import ParamsDependency

    for stage in stages:
        for dep in stage.deps:
            path = tmp_path / dep.def_path
            if isinstance(dep, ParamsDependency) or path.exists():
                continue
            if path.suffix == ".py":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"# {dep.def_path}\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "part").write_text(dep.def_path)
    for out in outputs:
        (tmp_path / out).mkdir(parents=True, exist_ok=True)
        (tmp_path / out / "joint.encoder.pt").write_text(out)
        (tmp_path / f"{out}.loss.csv").write_text("epoch,loss\n")


def test_dvc_trains_a_continued_run_after_the_run_it_starts_from(tmp_path, monkeypatch):
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text((PROJECT / "dvc.yaml").read_text())
    document = yaml.safe_load((PROJECT / "params.nw-ucla.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    Repo.init(str(tmp_path), no_scm=True).close()
    repo = Repo(str(tmp_path))
    by_name = {stage.name: stage for stage in repo.index.stages}
    models = "models/nw-ucla-xview"

    def producing(path):
        return next(stage for stage in by_name.values()
                    if any(out.def_path == path for out in stage.outs))

    cml, ser, crrl = (producing(f"{models}/{run}") for run in ("cml", "ser", "crrl"))
    assert cml.name == "pretrain@nw-ucla-xview-cml"
    assert crrl.name.startswith("pretrain-continued@nw-ucla-xview-run")
    assert f"{models}/cml" in {d.def_path for d in crrl.deps}
    assert nx.has_path(repo.index.graph, crrl, cml) and not nx.has_path(repo.index.graph, crrl, ser)
    for run, start in (("cml-pretrain-ser", cml), ("ser-pretrain-cml", ser),
                       ("ser-distill-cml", ser)):
        assert nx.has_path(repo.index.graph, producing(f"{models}/{run}"), start)
    for protocol in ("linear", "knn"):  # every continued run is evaluated
        assert f"{models}/crrl" in {d.def_path for d in
                                    producing(f"results/nw-ucla-xview/{protocol}/crrl").deps}
    assert [sorted(d.params) for d in crrl.deps if isinstance(d, ParamsDependency)] == [
        ["continued", "defaults"]]

    # as if cml and crrl had run, then committed
    as_if_run(tmp_path, (cml, crrl), [f"{models}/cml", f"{models}/crrl"])
    for stage in (cml, crrl):
        repo.commit(stage.addressing, force=True)
    assert repo.status(targets=[cml.addressing, crrl.addressing]) == {}
    # cml trained again (its encoder changed): crrl is out of date
    (tmp_path / models / "cml" / "joint.encoder.pt").write_text("cml, retrained")
    status = repo.status(targets=[crrl.addressing])
    assert status == {crrl.addressing: [{"changed deps": {f"{models}/cml": "modified"}}]}
    repo.close()


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
    assert info["name"] == "gru" and info["options"] == {"hidden": 8, "layers": 1}
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
                 "gru": {"hidden": 8}, "lstm": {"hidden": 8}}


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
    assert info["name"] == name and info["options"] == SMALL_OPTIONS[name]
    with torch.no_grad():
        assert torch.equal(loaded(x), features)

# --- 4. variable-length sequences in a batch ----------------------------------------------------

def test_samples_batch_pads_the_real_sequences():
    lengths = [2, 5, 3]
    offsets = torch.tensor([0, 2, 7, 10])
    c, v, m = 2, 3, 1
    f = torch.arange(10, dtype=torch.float32)
    frames = (100 * (f[:, None, None, None] + 1) + 10 * torch.arange(c)[None, :, None, None]
              + torch.arange(v)[None, None, :, None]).expand(10, c, v, m).contiguous()
    samples = Samples({"label": torch.tensor([7, 8, 9]), "index": torch.tensor([40, 41, 42])},
                      frames, offsets)
    batch = samples.batch(torch.tensor([2, 0]))
    assert batch["label"].tolist() == [9, 7] and batch["index"].tolist() == [42, 40]
    assert batch["length"].tolist() == [3, 2]
    sequence = batch["sequence"]
    assert sequence.shape == (2, c, 3, v, m)
    expected = torch.zeros(2, c, 3, v, m)
    for row, sample in enumerate((2, 0)):
        for t in range(lengths[sample]):
            expected[row, :, t] = frames[offsets[sample] + t]
    assert torch.equal(sequence, expected)
    # spot values: sample 2 is frames 7..9, sample 0 frames 0..1 then zeros
    assert sequence[0, 1, :, 2, 0].tolist() == [812.0, 912.0, 1012.0]
    assert sequence[1, 0, :, 0, 0].tolist() == [100.0, 200.0, 0.0]
    # a batch with the longest sample pads to it
    longest = samples.batch(torch.tensor([1]))
    assert longest["sequence"].shape == (1, c, 5, v, m) and longest["length"].tolist() == [5]
    # no sequences: no extra keys
    assert set(Samples({"label": torch.tensor([1, 2])}).batch(torch.tensor([1]))) == {"label"}


# --- 5. training in phases ----------------------------------------------------------------------

class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(3, 2)

    def forward(self, batch, generator, epoch):
        x = batch["x"] + 0.1 * torch.randn(batch["x"].shape, generator=generator)
        loss = ((self.b(torch.tanh(self.a(x))) - batch["y"]) ** 2).mean()
        return {"loss": loss, "mse": loss.detach()}


def toy_samples():
    g = gen(3)
    return Samples({"x": torch.randn(12, 4, generator=g), "y": torch.randn(12, 2, generator=g)})


def toy_phases():
    return [Phase(2, 0.1, parameters=lambda m: [{"params": list(m.a.parameters())}],
                  name="a"),
            Phase(1, 0.01, parameters=lambda m: [{"params": list(m.b.parameters())}],
                  name="b")]


TOY_CONFIG = TrainConfig(epochs=3, batch_size=4, lr_steps=[], checkpoint_every=1)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fit_trains_each_phases_parameters_at_its_learning_rate(tmp_path):
    model = Toy()
    model.a.bias.requires_grad_(False)  # frozen by the caller: stays frozen
    start = weights(model)
    snapshots = {}

    def evaluate(m, epoch):
        snapshots[epoch] = weights(m)
        return {"grad_a": float(m.a.weight.requires_grad),
                "grad_b": float(m.b.weight.requires_grad)}

    history = fit(model, toy_samples(), toy_phases(), TOY_CONFIG, tmp_path / "c.pt", CPU,
                  tmp_path / "loss.csv", log=lambda _: None, evaluate=evaluate)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["phase"] for row in history] == [0, 0, 1]
    assert [row["lr"] for row in history] == pytest.approx([0.1, 0.1, 0.01])
    assert [(row["grad_a"], row["grad_b"]) for row in history] == [(1, 0), (1, 0), (0, 1)]
    assert all(row["loss"] == row["mse"] for row in history)
    # phase 0 moves a (not its frozen bias), never b; phase 1 moves b, never a
    for epoch in (1, 2):
        assert not torch.equal(snapshots[epoch]["a.weight"], start["a.weight"])
        assert torch.equal(snapshots[epoch]["a.bias"], start["a.bias"])
        assert torch.equal(snapshots[epoch]["b.weight"], start["b.weight"])
        assert torch.equal(snapshots[epoch]["b.bias"], start["b.bias"])
    assert not torch.equal(snapshots[2]["a.weight"], snapshots[1]["a.weight"])
    for key in ("a.weight", "a.bias"):
        assert torch.equal(snapshots[3][key], snapshots[2][key])
    assert not torch.equal(snapshots[3]["b.weight"], snapshots[2]["b.weight"])
    # the flags are as the caller left them
    assert model.a.weight.requires_grad and not model.a.bias.requires_grad
    assert model.b.weight.requires_grad and model.b.bias.requires_grad
    assert (tmp_path / "loss.csv").read_text().splitlines()[0].startswith("epoch,lr,loss,mse")

    # phase 1 is exactly SGD at lr 0.01 (fresh momentum) on b over epoch 2's batches
    replay = Toy()
    replay.load_state_dict(snapshots[2])
    optimizer = torch.optim.SGD(replay.b.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    samples = toy_samples()
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0 * 7919 + 2))
    for step in range(3):
        loss = replay(samples.batch(order[step * 4:(step + 1) * 4]),
                      step_generator(0, 2, step, 0, CPU), 2)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for key, value in replay.state_dict().items():
        torch.testing.assert_close(value, snapshots[3][key], rtol=0, atol=1e-7)


class Interrupted(Exception):
    pass


def interrupt_after(epochs):
    def evaluate(model, epoch):
        if epoch > epochs:
            raise Interrupted
        return {}
    return evaluate


def longer_phases():
    """The second phase over three epochs, with a step of its own (counted from its start)."""
    first, second = toy_phases()
    return [first, dataclasses.replace(second, epochs=3, lr=0.05, lr_steps=[1])]


@pytest.mark.parametrize("phases, stop, phase", [(toy_phases, 1, 0), (toy_phases, 2, 0),
                                                 (longer_phases, 3, 1)])
def test_resume_across_phases_gives_the_same_weights(tmp_path, phases, stop, phase):
    straight = Toy()
    expected = fit(straight, toy_samples(), phases(), TOY_CONFIG, tmp_path / "a.pt", CPU,
                   log=lambda _: None)
    checkpoint = tmp_path / "b.pt"
    with pytest.raises(Interrupted):  # stopped during epoch stop + 1
        fit(Toy(), toy_samples(), phases(), TOY_CONFIG, checkpoint, CPU,
            log=lambda _: None, evaluate=interrupt_after(stop))
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["epoch"] == stop and saved["phase"] == phase
    resumed = Toy()
    with torch.no_grad():
        for p in resumed.parameters():
            p.add_(1.0)  # the weights must come from the checkpoint
    messages = []
    history = fit(resumed, toy_samples(), phases(), TOY_CONFIG, checkpoint, CPU,
                  log=messages.append)
    assert messages[0] == f"resuming from {checkpoint} after epoch {stop}"
    assert len(messages) == 1 + len(history) - stop  # then one line per epoch trained
    assert history == expected
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # other phase settings: not resumed from
    other = phases()
    other[1].lr = 0.02
    messages.clear()
    fit(Toy(), toy_samples(), other, TOY_CONFIG, checkpoint, CPU, log=messages.append)
    assert messages[0] == f"{checkpoint} was made with other settings; starting afresh"


def test_requires_grad_flags_restored_when_training_stops(tmp_path):
    model = Toy()
    with pytest.raises(Interrupted):
        fit(model, toy_samples(), toy_phases(), TOY_CONFIG, None, CPU, log=lambda _: None,
            evaluate=interrupt_after(0))
    assert all(p.requires_grad for p in model.parameters())


def test_history_lr_is_the_rate_the_epoch_trained_with():
    phase = Phase(2, 0.1, lr_steps=[1])
    history = fit(Toy(), toy_samples(), [phase], TOY_CONFIG, None, CPU, log=lambda _: None)
    assert [row["lr"] for row in history] == pytest.approx([0.1, 0.01])


def test_phase_groups_default_to_the_trainable_parameters():
    model = Toy()
    model.b.bias.requires_grad_(False)
    groups = Phase(1, 0.1).groups(model)
    assert len(groups) == 1
    assert {id(p) for p in groups[0]["params"]} == {
        id(model.a.weight), id(model.a.bias), id(model.b.weight)}
    method = build_method("skeletonclr", ("joint",), NTU25, 2, encoder="gru",
                          encoder_options={"hidden": 8, "layers": 1},
                          options={"queue_size": 8})
    phases = method.phases(**TrainConfig(epochs=4, lr=0.3, lr_steps=[3]).schedule())
    assert [(p.epochs, p.lr, p.lr_steps, p.weight_decay) for p in phases] == [(4, 0.3, [3], 1e-4)]
    assert build_method("untrained", ("joint", "bone"), NTU25, 2, encoder="gru",
                        encoder_options={"hidden": 8, "layers": 1}).phases(
        **TrainConfig().schedule()) == []


def test_the_untrained_baseline_s_former_name_is_accepted_with_a_warning(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"runs": {"baseline": {"method": "random",
                                                            "streams": ["joint"]}}}))
    with pytest.warns(FutureWarning, match=f"{params}: run 'baseline': method 'random' is "
                                           f"deprecated; use 'untrained'"):
        run = load_run(params, "baseline")
    assert run.method == "untrained" and not run.trained
    with pytest.warns(FutureWarning):
        assert load_run(None, "random-joint").method == "untrained"  # an ad-hoc name too


def test_a_queue_as_large_as_the_training_set_is_warned_about():
    from stages.pretrain import queue_warning

    def crosclr(queue_size):
        return build_method("crosclr", ("joint", "motion"), NTU25, 2, encoder="gru",
                            encoder_options={"hidden": 8, "layers": 1},
                            options={"queue_size": queue_size})

    assert queue_warning(crosclr(99), 100) is None
    assert queue_warning(crosclr(100), 100) == (
        "warning: a queue of 100 keys for 100 training samples; every sample then meets its own "
        "earlier keys as negatives. Choose queue_size below 100 (a quarter of it, 25, suits small "
        "datasets).")
    assert queue_warning(build_method("untrained", ("joint",), NTU25, 2, encoder="gru",
                                      encoder_options={"hidden": 8, "layers": 1}), 1) is None


# --- 6. key projector momentum ------------------------------------------------------------------

def constant_moco(projector_momentum):
    moco = MomentumContrast(tiny_gru(), feature_dim=4, queue_size=8, momentum=0.9,
                            projector_momentum=projector_momentum)
    with torch.no_grad():
        for q, k in ((moco.encoder_q, moco.encoder_k), (moco.projector_q, moco.projector_k)):
            for p in q.parameters():
                p.fill_(1.0)
            for p in k.parameters():
                p.fill_(0.0)
    return moco


def all_equal(module, value):
    return all(torch.allclose(p, torch.full_like(p, value)) for p in module.parameters())


def test_key_projector_momentum():
    moco = constant_moco(1.0)
    moco.momentum_update()
    assert all_equal(moco.encoder_k, 0.1) and all_equal(moco.projector_k, 0.0)
    moco.momentum_update()
    assert all_equal(moco.encoder_k, 0.19) and all_equal(moco.projector_k, 0.0)
    moco = constant_moco(None)
    assert moco.projector_momentum == 0.9
    moco.momentum_update()
    assert all_equal(moco.encoder_k, 0.1) and all_equal(moco.projector_k, 0.1)
    moco = constant_moco(0.5)
    moco.momentum_update()
    assert all_equal(moco.encoder_k, 0.1) and all_equal(moco.projector_k, 0.5)
    assert all_equal(moco.projector_q, 1.0) and all_equal(moco.encoder_q, 1.0)


# --- 7. encoder feature maps --------------------------------------------------------------------

def test_stgcn_feature_map_pools_to_the_output():
    torch.manual_seed(0)
    encoder = build_encoder("stgcn", NTU25, 2, hidden=4, out_dim=8).eval()
    x = torch.randn(3, 3, 16, 25, 2, generator=gen(2))
    with torch.no_grad():
        feature_map = encoder.features(x)
        assert feature_map.shape == (3, 2, 8, 4, 25)  # two temporal strides of 2
        out = encoder(x)
        assert out.shape == (3, 8)
        torch.testing.assert_close(encoder.pool(feature_map), out, rtol=0, atol=0)
        torch.testing.assert_close(out, feature_map.mean(dim=(1, 3, 4)), rtol=1e-6, atol=1e-7)
        # persons are folded into the batch: swapping them swaps their feature maps
        swapped = encoder.features(x.flip(-1))
        torch.testing.assert_close(swapped[:, 0], feature_map[:, 1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(swapped[:, 1], feature_map[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_recurrent_feature_steps_pool_to_the_output(pooling):
    torch.manual_seed(0)
    encoder = build_encoder("gru", NTU25, 2, hidden=6, layers=2, pooling=pooling).eval()
    x = torch.randn(3, 3, 7, 25, 2, generator=gen(4))
    with torch.no_grad():
        steps = encoder.features(x)
        assert steps.shape == (3, 7, 12) and encoder.out_dim == 12
        out = encoder(x)
        torch.testing.assert_close(encoder.pool(steps), out, rtol=0, atol=0)
        # the input is each frame's pose flattened as (V, C, M)
        sequence = x.permute(0, 2, 3, 1, 4).reshape(3, 7, 150)
        assert sequence[0, 0, 1 * 3 * 2 + 2 * 2 + 1] == x[0, 2, 0, 1, 1]
        outputs, hidden = encoder.rnn(sequence)
        torch.testing.assert_close(steps, outputs, rtol=0, atol=0)
        if pooling == "mean":
            expected = outputs.mean(dim=1)
        else:  # the top layer's final hidden states, forward then backward
            expected = torch.cat([hidden[-2], hidden[-1]], dim=1)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)


# --- 8. the graph partition option --------------------------------------------------------------

def reference_partition(layout, center_hops):
    """ST-GCN's ``Graph(strategy="spatial")``: adjacency within one hop, column-normalised, split
    by comparing hop distances to the centre computed up to ``center_hops``."""
    v = layout.num_joints
    a = np.eye(v)
    for i, j in layout.edges:
        a[i, j] = a[j, i] = 1

    def hop_distance(max_hop):
        dist = np.full((v, v), np.inf)
        arrive = np.stack([np.linalg.matrix_power(a, d) for d in range(max_hop + 1)]) > 0
        for d in range(max_hop, -1, -1):
            dist[arrive[d]] = d
        return dist

    hops, centre = hop_distance(1), hop_distance(center_hops)[:, layout.center]
    adjacency = (hops <= 1).astype(float)
    normalised = adjacency / adjacency.sum(axis=0, keepdims=True)
    subsets = []
    for hop in (0, 1):
        root, close, further = (np.zeros((v, v)) for _ in range(3))
        for i in range(v):
            for j in range(v):
                if hops[j, i] == hop:
                    if centre[j] == centre[i]:
                        root[j, i] = normalised[j, i]
                    elif centre[j] > centre[i]:
                        close[j, i] = normalised[j, i]
                    else:
                        further[j, i] = normalised[j, i]
        subsets += [root] if hop == 0 else [root + close, further]
    return np.stack(subsets)


def test_graph_partition_option():
    assert PARTITIONS == ("spatial", "spatial-max-hop-1")
    true_hops = spatial_partition(NTU25)
    max_hop_1 = spatial_partition(NTU25, "spatial-max-hop-1")
    assert not np.array_equal(true_hops, max_hop_1)
    # the reference code's graph, and the same construction with true distances to the centre
    np.testing.assert_allclose(max_hop_1, reference_partition(NTU25, 1), atol=1e-7)
    np.testing.assert_allclose(true_hops, reference_partition(NTU25, 25), atol=1e-7)
    np.testing.assert_allclose(max_hop_1.sum(0), true_hops.sum(0), atol=1e-7)  # one adjacency
    np.testing.assert_array_equal(max_hop_1[0], true_hops[0])  # self loops
    shoulder, elbow, wrist = 4, 5, 6  # 1, 2 and 3 hops from the spine shoulder (20)
    # the elbow is closer to the centre than the wrist: centripetal with true distances; with
    # max_hop=1 both are at distance inf, so the pair counts as equally far (with centrifugal)
    assert true_hops[2, elbow, wrist] > 0 and true_hops[1, elbow, wrist] == 0
    assert max_hop_1[2, elbow, wrist] == 0 and max_hop_1[1, elbow, wrist] > 0
    # the shoulder is within one hop: centripetal in both
    assert true_hops[2, shoulder, elbow] > 0 and max_hop_1[2, shoulder, elbow] > 0
    # with max_hop=1 a joint beyond one hop takes only joints within one hop as centripetal;
    # its other neighbours are all "as far" (the reference's root-distance group, subset 1)
    one_hop = {20, 1, 2, 4, 8}  # the centre and its neighbours
    for i in set(range(25)) - one_hop:
        assert set(np.flatnonzero(max_hop_1[2][:, i])) <= one_hop
        far = [j for j in np.flatnonzero(max_hop_1.sum(0)[:, i]) if j not in one_hop and j != i]
        assert all(max_hop_1[1, j, i] > 0 for j in far)
    with pytest.raises(ValueError, match="unknown graph partition 'distance'; known: spatial, "
                                         "spatial-max-hop-1"):
        spatial_partition(NTU25, "distance")
    with pytest.raises(ValueError, match="known: spatial, spatial-max-hop-1"):
        STGCN(NTU25, hidden=4, out_dim=8, partition="distance")
    assert "partition" in encoder_option_names("stgcn")
    encoder = build_encoder("stgcn", NTU25, 2, hidden=4, out_dim=8, partition="spatial-max-hop-1")
    assert torch.equal(encoder.adjacency, torch.from_numpy(max_hop_1))
    assert encoder.spec["options"]["partition"] == "spatial-max-hop-1"
    assert torch.equal(STGCN(NTU25, hidden=4, out_dim=8).adjacency, torch.from_numpy(true_hops))
    kinect = spatial_partition(KINECT20, "spatial-max-hop-1")
    np.testing.assert_allclose(kinect, reference_partition(KINECT20, 1), atol=1e-7)


# --- 9. CrosSCLR's options ----------------------------------------------------------------------

def test_detach_teacher_stops_the_gradient_into_view_v_only():
    positive = torch.tensor([0.5, 0.1])
    base_u = torch.tensor([[0.2, 0.8, -0.3], [0.4, -0.1, 0.6]])
    base_v = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.7, -0.4]])
    results = {}
    for detach in (False, True):
        neg_u = base_u.clone().requires_grad_(True)
        neg_v = base_v.clone().requires_grad_(True)
        loss = cross_view_loss(positive, neg_u, neg_v, 1, 0.5, detach_teacher=detach)
        loss.backward()
        results[detach] = (float(loss.detach()), neg_u.grad, neg_v.grad)
    (loss_free, grad_u, grad_v), (loss_detached, grad_u_d, grad_v_d) = results[False], results[True]
    assert loss_free == loss_detached  # the same value either way
    torch.testing.assert_close(grad_u, grad_u_d, rtol=0, atol=0)
    assert grad_v_d is None
    # through the product c = s_u * s_v: dL/ds_v * s_v == dL/ds_u * s_u, element by element
    assert grad_v.abs().sum() > 0
    torch.testing.assert_close(grad_v * base_v, grad_u * base_u, rtol=1e-6, atol=1e-8)
    # without context, view v only chooses the positives: no gradient into it
    neg_v = base_v.clone().requires_grad_(True)
    cross_view_loss(positive, base_u.clone().requires_grad_(True), neg_v, 1, 0.5,
                    context=False).backward()
    assert neg_v.grad is None or not neg_v.grad.any()
    assert CrosSCLROptions().detach_teacher is False


def tiny_crosclr(**options):
    torch.manual_seed(0)
    return build_method("crosclr", ("joint", "motion"), NTU25, 2, encoder="gru",
                        encoder_options={"hidden": 8, "layers": 1},
                        options={"queue_size": 16, "feature_dim": 8,
                                 "augment": {"crop": {}, "shear": {}}, **options})


def test_crosclr_passes_detach_teacher_and_cross_loss(monkeypatch):
    import skelctl.methods.crossclr as crossclr

    x = torch.randn(4, 3, 10, 25, 2, generator=gen(5))
    seen = []
    original = crossclr.cross_view_loss

    def spy(*args):
        seen.append(args[5:])
        return original(*args)

    monkeypatch.setattr(crossclr, "cross_view_loss", spy)
    for detach in (False, True):
        seen.clear()
        losses = tiny_crosclr(cross_epoch=1, detach_teacher=detach)({"joint": x}, gen(), 1)
        assert set(losses) == {"loss", "cross_motion_to_joint", "cross_joint_to_motion"}
        assert seen == [(True, detach)] * 2
        torch.testing.assert_close(losses["loss"].detach(),
                                   losses["cross_motion_to_joint"]
                                   + losses["cross_joint_to_motion"])
    seen.clear()
    method = tiny_crosclr(cross_epoch=0, cross_loss=False)
    for epoch in (0, 3, 500):
        losses = method({"joint": x}, gen(epoch), epoch)
        assert set(losses) == {"loss", "infonce_joint", "infonce_motion"}
    assert seen == []
    before = tiny_crosclr(cross_epoch=2)({"joint": x}, gen(), 1)
    assert set(before) == {"loss", "infonce_joint", "infonce_motion"}


def test_skeletonclr_knowledge_mining_loss():
    torch.manual_seed(0)
    method = build_method("skeletonclr", ("joint",), NTU25, 2, encoder="gru",
                          encoder_options={"hidden": 8, "layers": 1},
                          options={"queue_size": 16, "feature_dim": 8, "topk": 1,
                                   "mining_epoch": 0, "temperature": 0.2,
                                   "augment": {"crop": {}, "shear": {}}})
    replica = copy.deepcopy(method)
    x = torch.randn(6, 3, 10, 25, 2, generator=gen(6))
    losses = method({"joint": x}, gen(7), 0)
    assert set(losses) == {"loss", "mining_joint"}
    # the same step by hand on a copy
    generator = gen(7)
    x_q = compute_view("joint", replica.augment(x, generator), NTU25)
    x_k = compute_view("joint", replica.augment(x, generator), NTU25)
    z = replica.moco.query(x_q)
    replica.moco.momentum_update()
    key = replica.moco.key(x_k)
    positive, negatives = (z * key).sum(dim=1), replica.moco.similarities(z)
    expected = cross_view_loss(positive, negatives, negatives, 1, 0.2, context=False)
    torch.testing.assert_close(losses["loss"], expected, rtol=1e-6, atol=1e-7)
    assert float(losses["mining_joint"]) == float(losses["loss"].detach())
    # the nearest queue entry counted as a positive lowers the loss below InfoNCE's
    assert float(expected.detach()) < float(info_nce(positive.detach(), negatives.detach(), 0.2))
    # before mining_epoch: plain InfoNCE
    later = copy.deepcopy(replica)
    later.options = dataclasses.replace(later.options, mining_epoch=5)
    assert set(later({"joint": x}, gen(8), 4)) == {"loss", "infonce_joint"}


# --- 10. projector initialisation ---------------------------------------------------------------

class Wide(nn.Module):
    out_dim = 1024

    def forward(self, x):
        return x


def test_projector_starts_from_n_0_002_with_zero_bias():
    torch.manual_seed(0)
    moco = MomentumContrast(Wide(), feature_dim=512, queue_size=4)
    linears = [m for m in moco.projector_q if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(1024, 1024), (512, 1024)]
    for linear in linears:
        weight = linear.weight.detach()
        assert abs(float(weight.std()) - 0.02) < 2e-4
        assert abs(float(weight.mean())) < 2e-4
        assert not linear.bias.any()
    for q, k in zip(moco.projector_q.parameters(), moco.projector_k.parameters()):
        assert torch.equal(q, k) and not k.requires_grad


def test_projector_init_std_none_keeps_torchs_default():
    torch.manual_seed(0)
    moco = MomentumContrast(Wide(), feature_dim=512, queue_size=4, projector_init_std=None)
    first = moco.projector_q[0].requires_grad_(False)
    # PyTorch's Linear default: uniform within +-1/sqrt(fan_in), so std 1/sqrt(3 fan_in)
    assert abs(float(first.weight.std()) - (3 * 1024) ** -0.5) < 2e-4
    assert float(first.weight.abs().max()) <= 1024 ** -0.5 and first.bias.abs().sum() > 0
    method = build_method("skeletonclr", ("joint",), NTU25, 2, encoder="gru",
                          encoder_options={"hidden": 8, "layers": 1},
                          options={"projector_init_std": 0.5, "queue_size": 4})
    assert abs(float(method.moco.projector_q[0].weight.detach().std()) - 0.5) < 0.05


def test_training_samples_carry_the_stores_real_sequences(prepared_ntu60):
    from stages.pretrain import training_samples

    store = Store(prepared_ntu60 / "processed" / "ntu60" / "50-shoulder.h5")
    indices = store.split("xsub/train")[:6]
    samples = training_samples(store, indices, ("joint", "motion"), sequences=True)
    assert torch.equal(samples.arrays["index"], torch.from_numpy(indices))
    assert torch.equal(samples.arrays["motion"], torch.from_numpy(store.take("motion", indices)))
    batch = samples.batch(torch.tensor([4, 1]))
    for row, position in enumerate((4, 1)):
        real = torch.from_numpy(store.sequence(int(indices[position]))).permute(1, 0, 2, 3)
        length = real.shape[1]
        assert int(batch["length"][row]) == length
        assert torch.equal(batch["sequence"][row, :, :length], real)
        assert not batch["sequence"][row, :, length:].any()
    assert batch["label"].tolist() == store.meta(["label"])["label"][indices[[4, 1]]].tolist()


def test_gradient_clipping_bounds_every_step():
    """With ``grad_clip`` each SGD step (no momentum, no decay) moves the weights by at most
    lr x grad_clip; without it the same data moves them further."""
    def largest_step(clip):
        model = Toy()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        config = dataclasses.replace(TOY_CONFIG, epochs=1, batch_size=12, grad_clip=clip)
        fit(model, toy_samples(), [Phase(1, 10.0, momentum=0.0, weight_decay=0.0)], config,
            None, CPU, log=lambda _: None)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm())

    assert largest_step(1e-3) == pytest.approx(10.0 * 1e-3, rel=1e-4)  # one step, clipped
    assert largest_step(None) > 0.1
