"""Every name a user types is checked against what exists, with the closest one offered, in one
line and exit status 2: runs, splits (the untrained baseline's too), streams, variants, methods,
encoders, datasets, layouts; a missing params file names --params."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from skelctl.cli import main

PARAMS = {
    "splits": ["ntu60-xsub"],
    "defaults": {"variant": "50-shoulder", "encoder": "gru",
                 "encoder_options": {"hidden": 8, "layers": 1},
                 "train": {"epochs": 1, "batch_size": 16}},
    "runs": {"untrained": {"method": "untrained", "streams": ["joint"]},
             "skeletonclr-joint": {"method": "skeletonclr", "streams": ["joint"],
                                   "options": {"queue_size": 32}}},
}


@pytest.fixture
def project(prepared_ntu60, tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    monkeypatch.chdir(tmp_path)
    return tmp_path, ["--data-dir", str(prepared_ntu60)]


def refused(*args: str) -> str:
    """The one line a refused command prints (exit status 2, no traceback, nothing on stdout)."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 or lines[0].startswith("Usage:"), result.stderr
    return lines[-1]


def test_an_unknown_split_is_refused_by_pretrain_of_the_untrained_baseline(project):
    root, data = project
    line = refused("pretrain", "untrained", "--split", "ntu60-xsbu", *data)
    assert "unknown split 'ntu60-xsbu'; did you mean 'ntu60-xsub'?" in line
    assert "(known: ntu60-xsub, ntu60-xview)" in line
    assert not (root / "models").exists()  # nothing written
    line = refused("linear", "untrained", "--split", "ntu60-xsbu", *data)
    assert "did you mean 'ntu60-xsub'?" in line


def test_a_misspelt_dataset_of_a_split_is_offered_the_prepared_one(project):
    _, data = project
    line = refused("knn", "untrained", "--split", "ntu06-xsub", *data)
    assert "split 'ntu06-xsub': unknown dataset 'ntu06'; did you mean 'ntu60'?" in line
    assert "unknown dataset 'ntu06'; did you mean 'ntu60'?" in refused("views", "ntu06", *data)


def test_a_misspelt_run_is_offered_the_closest(project):
    _, data = project
    line = refused("pretrain", "skeletonclr-jiont", "--split", "ntu60-xsub", *data)
    assert line.startswith("Error: params.yaml: unknown run 'skeletonclr-jiont'; did you mean "
                           "'skeletonclr-joint'? (runs: skeletonclr-joint, untrained;")


def test_without_a_params_file_the_message_points_at_params(tmp_path, monkeypatch, prepared_ntu60):
    monkeypatch.chdir(tmp_path)
    line = refused("pretrain", "ser", "--split", "ntu60-xsub", "--data-dir", str(prepared_ntu60))
    assert "unknown run 'ser': no params file was given (--params FILE; params.yaml is read when " \
           "present)" in line
    line = refused("pretrain", "ser", "--split", "ntu60-xsub", "--params", "paramz.yaml")
    assert line == "Error: paramz.yaml: params file does not exist (--params names another)"


def test_streams_variants_methods_encoders_and_layouts_are_offered_the_closest(project):
    _, data = project
    line = refused("ensemble", "--split", "ntu60-xsub", "--method", "skeletonclr", "--streams",
                   "joint,motoin", *data)
    assert "'motoin'; did you mean 'motion'?" in line
    line = refused("views", "ntu60", "--variant", "50-shoulderr", *data)
    assert "variant '50-shoulderr' (did you mean 'shoulder'?)" in line
    line = refused("pretrain", "simclr-joint", "--split", "ntu60-xsub", *data)
    assert "unknown run 'simclr-joint'" in line and "methods: skeletonclr," in line
    (project[0] / "params.yaml").write_text(yaml.safe_dump(
        {**PARAMS, "defaults": {**PARAMS["defaults"], "encoder": "gur"}}))
    line = refused("knn", "untrained", "--split", "ntu60-xsub", *data)
    assert "defaults.encoder: unknown encoder 'gur'; did you mean 'gru'?" in line
    (project[0] / "params.yaml").write_text(yaml.safe_dump(
        {**PARAMS, "runs": {"x": {"method": "skeletonclrr", "streams": ["joint"]}}}))
    line = refused("knn", "x", "--split", "ntu60-xsub", *data)
    assert "runs.x.method: unknown method 'skeletonclrr'; did you mean 'skeletonclr'?" in line


def test_a_misspelt_dataset_or_layout_to_prepare(tmp_path):
    line = refused("prepare", "ntu06", "--raw", str(tmp_path), "--data-dir", str(tmp_path))
    assert "unknown dataset 'ntu06'; did you mean 'ntu60'?" in line
    result = CliRunner().invoke(main, ["layouts", "kinnect20"])
    assert "unknown joint layout 'kinnect20'; did you mean 'kinect20'?" in result.stderr
