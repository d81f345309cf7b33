"""DVC's tracking of the params: each run's own entry, and runs that start from another run."""

from __future__ import annotations

import copy

import yaml


from conftest import PROJECT


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
                "semi@ntu60-xsub-untrained-joint-motion-bone",
                "semi@ntu60-xsub-crosclr-joint-motion-bone",
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
    for name in ("linear@ntu60-xsub-skeletonclr-joint",
                 "knn@ntu60-xsub-untrained-joint-motion-bone"):
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
