"""A user's own data: named datasets, protocols from columns and rules, the layout decided once,
labels that start at 1, 2D keypoints end to end, and the joint-order check on real NW-UCLA
recordings imported through the generic format."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from conftest import NW_UCLA, PROJECT, need
from skelctl.cli import main
from skelctl.data.formats import get_format
from skelctl.data.formats.base import TRAIN, UNUSED, VAL, DatasetError
from skelctl.data.formats.generic import ImportOptions, write_samples
from skelctl.data.formats.ucla import NW_UCLA as UCLA_FORMAT
from skelctl.data.store import Store
from skelctl.skeletons import KINECT20, LAYOUTS
from skelctl.stages import paths, prepare

XVIEW = {"xview": {"train": {"view": [1, 2]}}}
# Kinect v1 joint -> the COCO keypoint at its place (the face keypoints all at the head)
COCO_FROM_KINECT20 = [3, 3, 3, 3, 3, 4, 8, 5, 9, 6, 10, 12, 16, 13, 17, 14, 18]


@pytest.fixture(scope="module")
def ucla_samples():
    """Every 8th real NW-UCLA recording (186: 123 of views 1-2, 63 of view 3)."""
    inventory = UCLA_FORMAT.inventory(need(NW_UCLA))
    return [s for item in inventory.items[::8] for s in UCLA_FORMAT.read(item)]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_named_datasets_live_side_by_side_with_their_own_protocols(ucla_samples, tmp_path):
    samples = ucla_samples[::4]  # 47, every class
    views = [s.view for s in samples]
    write_samples(tmp_path / "a", samples,
                  {"split_xview": ["train" if v < 3 else "test" for v in views],
                   "site": ["north" if s.subject % 2 else "south" for s in samples]})
    write_samples(tmp_path / "b", samples[:20])
    data = tmp_path / "data"
    result = run("prepare", "generic", "--name", "clinic", "--raw", tmp_path / "a",
                 "--data-dir", data, "--variant", "20-shoulder", "--views", "joint",
                 "--protocol", "xsub=subject:1,3,5,7,9", "--protocol", "north=site:north;view:1")
    assert result.exit_code == 0, result.output
    assert f"clinic: {len(samples)} samples written to" in result.output
    assert "layout kinect20 (20 joints, 3D), 10 classes" in result.output
    store = Store(paths.views(data, "clinic", "20-shoulder"))
    assert store.attr("dataset") == "clinic" and sorted(store.protocols) == ["north", "xsub",
                                                                            "xview"]
    meta = store.meta()
    np.testing.assert_array_equal(meta["split_xview"], np.where(meta["view"] < 3, TRAIN, VAL))
    np.testing.assert_array_equal(meta["split_xsub"],
                                  np.where(meta["subject"] % 2 == 1, TRAIN, VAL))
    north = (meta["subject"] % 2 == 1) & (meta["view"] == 1)
    np.testing.assert_array_equal(meta["split_north"], np.where(north, TRAIN, VAL))
    assert len(store.split("xview/train")) == int((meta["view"] < 3).sum())
    # a second dataset beside it, in the same data folder
    result = run("prepare", "generic", "--name", "clinic-2", "--raw", tmp_path / "b",
                 "--data-dir", data, "--variant", "20-shoulder", "--views", "joint",
                 "--protocol", "xview=view:1,2")
    assert result.exit_code == 0, result.output
    assert len(Store(paths.views(data, "clinic-2", "20-shoulder"))) == 20
    assert len(Store(paths.views(data, "clinic", "20-shoulder"))) == len(samples)
    # rules name columns of the table; a protocol is defined once
    result = run("prepare", "generic", "--name", "c3", "--raw", tmp_path / "a", "--data-dir",
                 data, "--protocol", "xsub=performer:1,3")
    assert result.exit_code == 1 and "protocol 'xsub' tests column(s) performer, which the " \
        "table lacks" in result.output
    result = run("prepare", "generic", "--name", "c3", "--raw", tmp_path / "a", "--data-dir",
                 data, "--protocol", "xview=view:1")
    assert result.exit_code == 1 and "protocol(s) xview defined both by a split column and by " \
        "a rule" in result.output
    result = run("prepare", "generic", "--name", "nw-ucla", "--raw", tmp_path / "a")
    assert result.exit_code == 1 and "something other than 'nw-ucla'" in result.output
    result = run("prepare", "generic", "--raw", tmp_path / "a", "--protocol", "xsub")
    assert result.exit_code == 2 and "expected NAME=COLUMN:V,V" in result.output


def test_rules_with_a_val_part_leave_the_rest_unused(ucla_samples, tmp_path):
    samples = ucla_samples[:30]
    write_samples(tmp_path / "raw", samples)
    fmt = get_format("generic", ImportOptions(protocols={
        "v1v3": {"train": {"view": [1]}, "val": {"view": ["03"]}}}))
    inventory = fmt.inventory(tmp_path / "raw")
    meta = {"name": np.array([item["name"] for item in inventory.items])}
    codes = fmt.splits(meta, tmp_path / "raw")["v1v3"]
    views = np.array([s.view for s in samples])
    np.testing.assert_array_equal(codes, np.select([views == 1, views == 3], [TRAIN, VAL],
                                                   UNUSED))


def test_labels_from_one_are_refused_with_the_option_offered(ucla_samples, tmp_path):
    samples = ucla_samples[:30]
    write_samples(tmp_path / "raw", samples)
    table = tmp_path / "raw" / "samples.csv"
    lines = table.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        row[1] = str(int(row[1]) + 1)  # labels 1..10
    table.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    with pytest.raises(DatasetError, match="no sample has label 0.*pass --labels-from 1"):
        get_format("generic").inventory(tmp_path / "raw")
    fmt = get_format("generic", ImportOptions(labels_from=1))
    inventory = fmt.inventory(tmp_path / "raw")
    labels = sorted({item["label"] for item in inventory.items})
    assert labels[0] == 0 and [item["label"] for item in inventory.items] == \
        [s.label for s in samples]
    assert fmt.num_classes == max(labels) + 1
    # class 0 empty on purpose: --labels-from 0 keeps the labels and reports the empty classes
    fmt = get_format("generic", ImportOptions(labels_from=0))
    fmt.inventory(tmp_path / "raw")
    empty = sorted(set(range(fmt.num_classes)) - {s.label + 1 for s in samples})
    assert empty[0] == 0
    result = run("prepare", "generic", "--raw", tmp_path / "raw", "--labels-from", "0",
                 "--data-dir", tmp_path / "data", "--variant", "20-shoulder", "--views", "joint")
    assert result.exit_code == 0, result.output
    assert f"{fmt.num_classes} classes of which {len(empty)} empty (no sample): " \
        f"{', '.join(map(str, empty))}\n" in result.output
    report = json.loads(paths.parse_report(tmp_path / "data", "generic").read_text())
    assert report["empty_classes"] == empty and report["classes"] == fmt.num_classes
    assert (report["layout"], report["joints"], report["dims"]) == ("kinect20", 20, 3)


def test_layout_is_decided_by_most_files_not_the_first(ucla_samples, tmp_path):
    raw = tmp_path / "raw"
    write_samples(raw, ucla_samples[:12])
    np.save(raw / f"{ucla_samples[0].name}.npy", np.zeros((30, 54, 3), np.float32))  # first file
    fmt = get_format("generic")
    inventory = fmt.inventory(raw)
    assert fmt.layout is KINECT20
    with pytest.raises(Exception, match="54 joints, but the layout 'kinect20' has 20"):
        fmt.read(inventory.items[0])
    # a tie is not guessed
    for sample in ucla_samples[1:6]:
        np.save(raw / f"{sample.name}.npy", np.ones((30, 54, 3), np.float32))
    with pytest.raises(DatasetError, match=f"{raw}: no joint layout fits most files \\(6 files "
                                           f"with 54 joints x 3, 6 files with 20 joints x 3\\); "
                                           f"choose one with --layout"):
        get_format("generic").inventory(raw)


def test_a_layout_file_in_the_raw_folder_or_the_params_is_used(ucla_samples, tmp_path):
    raw = tmp_path / "raw"
    write_samples(raw, ucla_samples[:12])
    definition = yaml.safe_load(CliRunner().invoke(main, ["layouts", "--definition",
                                                          "kinect20"]).output)
    definition["name"] = "my-kinect"
    (raw / "layout.yaml").write_text(yaml.safe_dump(definition))
    fmt = get_format("generic")
    fmt.inventory(raw)
    assert fmt.layout.name == "my-kinect" and fmt.layout.bone_pairs == KINECT20.bone_pairs
    (raw / "layout.yaml").unlink()
    # the pipeline's way: a `datasets` entry in params, the layout inline
    params = tmp_path / "params.yaml"
    definition["name"] = "inline"
    params.write_text(yaml.safe_dump({"datasets": {"lab": {
        "format": "generic", "layout": definition, "protocols": XVIEW}}}))
    data = tmp_path / "data"
    result = run("parse", "lab", "--raw", raw, "--params", params, "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert "layout inline (20 joints, 3D)" in result.output
    store = Store(paths.parsed(data, "lab"))
    assert store.layout().name == "inline" and store.attr("format") == "generic"
    assert store.protocols == ["xview"]
    params.write_text(yaml.safe_dump({"datasets": {"lab": {"format": "generic",
                                                           "joints": 20}}}))
    result = run("parse", "lab", "--raw", raw, "--params", params, "--data-dir", data)
    assert result.exit_code == 2 and "datasets.lab: unknown key(s) joints; accepted: format, " \
        "layout, protocols, labels_from" in result.output


def test_joint_order_check_flags_shuffled_nw_ucla_and_passes_the_true_order(ucla_samples,
                                                                            tmp_path):
    shuffle = np.random.default_rng(0).permutation(KINECT20.num_joints)
    shuffled = [type(s)(**{**s.__dict__, "bodies": s.bodies[:, :, shuffle]})
                for s in ucla_samples]
    reports = {}
    for name, samples in (("true", ucla_samples), ("shuffled", shuffled)):
        write_samples(tmp_path / name, samples)
        summary = prepare.run("generic", tmp_path / name, tmp_path / "data",
                              variants=("20-shoulder",), view_names=("joint",), name=name,
                              max_bodies=1)
        reports[name] = json.loads(paths.clean_report(tmp_path / "data", name).read_text())
        assert summary["layout"] == "kinect20" and summary["classes"] == 10
    true, wrong = reports["true"]["joint_order"], reports["shuffled"]["joint_order"]
    assert true["fits"] and true["checked"] == len(ucla_samples) and not true["bones"]
    assert not wrong["fits"] and len(wrong["bones"]) >= 5
    assert wrong["median_rank"] > 4 * max(true["median_rank"], 1)
    message = reports["shuffled"]["joint_order_message"]
    assert message.startswith("warning: the data may not fit layout kinect20: most suspicious "
                              "joints ")
    assert reports["true"]["joint_order_message"].startswith("joint order fits layout kinect20")


def test_2d_keypoints_end_to_end(ucla_samples, tmp_path):
    """COCO-17 2D keypoints (made from real NW-UCLA recordings: x and y of the Kinect joint at
    each keypoint's place): prepare, pretrain, KNN, with C = 2 throughout."""
    keypoints = [type(s)(**{**s.__dict__, "bodies": s.bodies[:, :, COCO_FROM_KINECT20, :2]})
                 for s in ucla_samples]
    raw = tmp_path / "raw"
    write_samples(raw, keypoints)
    data, models, results = tmp_path / "data", tmp_path / "models", tmp_path / "results"
    result = run("prepare", "generic", "--name", "pose2d", "--raw", raw, "--data-dir", data,
                 "--variant", "20-shoulder", "--protocol", "xview=view:1,2")
    assert result.exit_code == 1 and "normalisation 'shoulder' turns the body in 3D; the layout " \
        "'coco17-2d' has 2D coordinates: use 'minmax' or 'none'" in result.output
    result = run("prepare", "generic", "--name", "pose2d", "--raw", raw, "--data-dir", data,
                 "--variant", "20-minmax", "--protocol", "xview=view:1,2", "--max-bodies", "1")
    assert result.exit_code == 0, result.output
    assert "layout coco17-2d (17 joints, 2D)" in result.output
    assert "joint order fits layout coco17-2d" in result.output
    store = Store(paths.views(data, "pose2d", "20-minmax"))
    assert store.view("joint").shape == (len(keypoints), 2, 20, 17, 1)
    assert store.view("bone").shape[1] == 2
    for encoder in ("stgcn", "gru"):
        args = ["--split", "pose2d-xview", "--data-dir", data, "--models-dir", models]
        run_name = f"skeletonclr-joint-{encoder}"
        params = tmp_path / f"{encoder}.yaml"
        params.write_text(yaml.safe_dump({"runs": {run_name: {
            "method": "skeletonclr", "streams": ["joint"], "variant": "20-minmax",
            "encoder": encoder, "encoder_options": {} if encoder == "gru" else {"hidden": 8},
            "options": {"queue_size": 16},
            "train": {"epochs": 1, "batch_size": 16, "device": "cpu"}}}}))
        result = run("pretrain", run_name, *args, "--params", params)
        assert result.exit_code == 0, result.output
        encoder_file = paths.encoder_file(models, "pose2d-xview", run_name, "joint")
        state = __import__("torch").load(encoder_file, weights_only=True)
        assert state["layout"]["dims"] == 2
        result = run("knn", run_name, *args, "--results-dir", results, "--params", params)
        assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_two_own_datasets_in_one_dvc_pipeline(ucla_samples, tmp_path):
    """The parse, clean and views stages of dvc.yaml take each dataset's settings (format,
    layout, protocols, first label) from the params' `datasets` section."""
    from skelctl.stages.demo import create_workspace, dvc

    workdir = create_workspace(tmp_path / "ws", "demo")
    keypoints = [type(s)(**{**s.__dict__, "bodies": s.bodies[:, :, COCO_FROM_KINECT20, :2]})
                 for s in ucla_samples[:60]]
    write_samples(workdir / "data" / "raw" / "kinect", ucla_samples[:60])
    write_samples(workdir / "data" / "raw" / "video", keypoints)
    layout = yaml.safe_load(CliRunner().invoke(main, ["layouts", "--definition",
                                                      "kinect20"]).output)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params.update(
        synth={}, raw={"kinect": "data/raw/kinect", "video": "data/raw/video"},
        datasets={"kinect": {"format": "generic", "layout": {**layout, "name": "lab-kinect"},
                             "protocols": XVIEW},
                  "video": {"format": "generic", "layout": "coco17-2d",
                            "protocols": {"xsub": {"train": {"subject": [1, 3, 5, 7, 9]}}}}})
    params["views"].update(variants=["20-minmax"], names="joint,bone")
    params["clean"]["max_bodies"] = 1
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for dataset in ("kinect", "video"):
        dvc(workdir, "repro", f"views@{dataset}-20-minmax")
    kinect = Store(paths.views(workdir / "data", "kinect", "20-minmax"))
    video = Store(paths.views(workdir / "data", "video", "20-minmax"))
    assert kinect.layout().name == "lab-kinect" and kinect.protocols == ["xview"]
    assert video.layout().name == "coco17-2d" and video.protocols == ["xsub"]
    assert kinect.view("joint").shape[1:] == (3, 20, 20, 1)
    assert video.view("bone").shape[1:] == (2, 20, 17, 1)
    np.testing.assert_array_equal(video.meta()["split_xsub"] == TRAIN,
                                  video.meta()["subject"] % 2 == 1)


@pytest.mark.parametrize("profile", ["params.yaml", "params.demo.yaml", "params.nw-ucla.yaml",
                                     "params.small-data.yaml"])
def test_every_profile_resolves_its_datasets_runs_and_stages(profile, tmp_path, monkeypatch):
    from dvc.repo import Repo

    from skelctl.stages.config import load_run
    from skelctl.stages.parse import import_settings

    project = PROJECT
    params = project / profile
    document = yaml.safe_load(params.read_text())
    for dataset in document["raw"]:
        format_name, name, _ = import_settings(dataset, params)
        assert name == dataset and format_name in ("generic", dataset)
    for run in [*document["runs"], *(e["run"] for e in document["continued"])]:
        load_run(params, run)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text((project / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text(params.read_text())
    Repo.init(str(tmp_path), no_scm=True).close()
    names = {stage.name for stage in Repo(str(tmp_path)).index.stages}
    split = document["splits"][0]
    assert {f"pretrain@{split}-{run}" for run in document["runs"]} <= names
    assert {f"parse@{dataset}" for dataset in document["raw"]} <= names
    # a continued run's stages are named by its place in the list
    continued = [n for n in names if n.startswith(f"pretrain-continued@{split}-")]
    assert len(continued) == len(document["continued"])


def test_augmentations_keep_2d_keypoints_2d():
    import torch

    from skelctl import augment

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, 10, 17, 1)
    sheared = augment.shear(x, generator, amplitude=0.5)
    assert sheared.shape == x.shape
    rotated = augment.rotate(x, generator, max_degrees=30.0, minor_degrees=30.0)
    # a rotation in the image plane keeps every keypoint's distance from the origin
    torch.testing.assert_close(rotated.norm(dim=1), x.norm(dim=1))
    assert not torch.allclose(rotated, x)
    masked = augment.axis_mask(x, generator, p=1.0)
    zeroed = (masked == 0).flatten(2).all(dim=2)  # (N, 2): which axis was masked
    assert (zeroed.sum(dim=1) == 1).all() and zeroed.any(dim=0).all()
    flipped = augment.flip(x, generator, LAYOUTS["coco17-2d"], p=1.0)
    torch.testing.assert_close(flipped[:, :, :, [6, 5]], x[:, :, :, [5, 6]])


@pytest.mark.slow
def test_the_small_data_profile_runs_through_dvc(ucla_samples, tmp_path):
    """params.small-data.yaml as a user runs it (`dvc repro`), on a cut-down copy: 2 epochs."""
    from skelctl.stages.demo import create_workspace, dvc

    workdir = create_workspace(tmp_path / "ws", "demo")
    params = yaml.safe_load((PROJECT / "params.small-data.yaml")
                            .read_text())
    params["defaults"]["train"].update(epochs=2, knn_every=1, device="cpu")
    params["linear"].update(epochs=5, lr_steps=[4], device="cpu")
    params["knn"]["device"] = "cpu"
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    samples = [type(s)(**{**s.__dict__, "label": s.label + 1}) for s in ucla_samples]
    write_samples(workdir / "data" / "raw" / "ucla", samples)  # labels 1..10, as in the files
    dvc(workdir, "repro")
    for run in params["runs"]:
        knn = json.loads((workdir / "results" / "ucla-xview" / "knn" / f"{run}.json").read_text())
        assert 0 <= knn["joint"]["top1"] <= 100
    history = (workdir / "models" / "ucla-xview" / "ser-joint.loss.csv").read_text()
    assert "knn_joint" in history.splitlines()[0]
    assert any((workdir / "tables").iterdir())
