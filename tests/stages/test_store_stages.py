"""The HDF5 store, the torch Dataset, the stages and their failure behaviour."""

import json
import re

import h5py
import numpy as np
import pytest
import torch

from skelctl.atomic import partial_path, replacing
from skelctl.data.clean import normalise, parse_variant, resample
from skelctl.data.dataset import SkeletonDataset
from skelctl.data.store import Store, StoreError, StoreWriter
from skelctl.data.views import compute_view
from skelctl.skeletons import NTU25
from skelctl.stages import clean, parse, paths, prepare, views
from skelctl.stages.common import ParamsError, StageError


def test_prepared_store_layout(prepared_ntu60):
    store = Store(paths.views(prepared_ntu60, "ntu60", "50-shoulder"))
    n = len(store)
    assert n == 117  # 3 subjects x 3 cameras x 13 actions; the 3 missing-list files excluded
    assert sorted(store.views) == ["bone", "joint", "motion", "velocity"]
    for name in store.views:
        ds = store.view(name)
        assert ds.shape == (n, 3, 50, 25, 2) and ds.dtype == np.float32
        assert ds.chunks is None and ds.compression is None  # contiguous
    assert store.attr("frames") == 50 and store.attr("normalisation") == "shoulder"
    assert store.attr("skelctl_version") and store.attr("params")["views"] == [
        "joint", "motion", "bone", "velocity"]
    meta = store.meta()
    assert {"name", "label", "subject", "view", "setup", "replication", "n_frames", "n_bodies",
            "split_xsub", "split_xview"} <= set(meta)
    assert set(meta["label"]) == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 49, 50, 51}
    assert (meta["n_bodies"][meta["label"] >= 49] == 2).all()
    assert (meta["n_bodies"][meta["label"] < 49] == 1).all()
    # xsub: subjects 1 and 2 train, 3 val; xview: cameras 2, 3 train
    np.testing.assert_array_equal(store.split("xsub/train"), np.flatnonzero(meta["subject"] != 3))
    np.testing.assert_array_equal(store.split("xview/val"), np.flatnonzero(meta["view"] == 1))
    with pytest.raises(StoreError, match="no split 'xset/train'"):
        store.split("xset/train")
    # each view derives from the stored normalised variable-length sequence
    for i in (0, 50, n - 1):
        seq = store.sequence(i)  # (L, C, V, M)
        assert len(seq) == meta["n_frames"][i]
        joint = resample(seq, [0, len(seq)], 50)[0].transpose(1, 0, 2, 3)
        np.testing.assert_allclose(store.view("joint")[i], joint, atol=1e-6)
        for name in ("motion", "bone", "velocity"):
            np.testing.assert_allclose(store.view(name)[i], compute_view(name, joint, NTU25),
                                       atol=1e-6)


def test_variants_share_the_cleaned_sequences(prepared_ntu60):
    cleaned = Store(paths.cleaned(prepared_ntu60, "ntu60"))
    spine = Store(paths.views(prepared_ntu60, "ntu60", "64-spine"))
    assert spine.view("joint").shape[2] == 64
    raw = cleaned.sequence(7)
    expected = normalise(raw, [0, len(raw)], NTU25, "spine")
    np.testing.assert_allclose(spine.sequence(7), expected, atol=1e-6)


def test_dataset_returns_requested_views_in_order(prepared_ntu60):
    path = paths.views(prepared_ntu60, "ntu60", "50-shoulder")
    data = SkeletonDataset(path, "xsub/val", views=("joint", "bone"), sequence=True)
    store = Store(path)
    assert len(data) == len(store.split("xsub/val")) == 39
    assert data.num_classes == 60
    batch = data.__getitems__([5, 1, 5, 30])
    for item, pos in zip(batch, [5, 1, 5, 30]):
        row = store.split("xsub/val")[pos]
        assert item["index"] == row and item["label"] == store.meta()["label"][row]
        np.testing.assert_array_equal(item["joint"].numpy(), store.view("joint")[row])
        np.testing.assert_array_equal(item["bone"].numpy(), store.view("bone")[row])
        assert item["sequence"].shape[1] == store.meta()["n_frames"][row]
    assert set(data[0]) == {"joint", "bone", "sequence", "label", "index"}
    with pytest.raises(StoreError, match="no view 'speed'"):
        SkeletonDataset(path, "xsub/val", views=("speed",))


def test_dataloader_with_workers_opens_lazily(prepared_ntu60):
    data = SkeletonDataset(paths.views(prepared_ntu60, "ntu60", "50-shoulder"), "xview/train",
                           views=("motion",))
    loader = torch.utils.data.DataLoader(data, batch_size=16, num_workers=2)
    labels = torch.cat([batch["label"] for batch in loader])
    assert labels.tolist() == data.labels.tolist()
    assert next(iter(loader))["motion"].shape == (16, 3, 50, 25, 2)


def test_writer_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "store.h5"
    with pytest.raises(RuntimeError):
        with StoreWriter(out, {"dataset": "x"}) as writer:
            writer.append({"label": np.arange(3)}, views={"joint": np.zeros((3, 3, 4, 25, 2))})
            raise RuntimeError("crash")
    assert not out.exists() and not partial_path(out).exists()


def test_readers_reject_unfinished_corrupt_and_missing_files(tmp_path):
    unfinished = tmp_path / "unfinished.h5"
    with h5py.File(unfinished, "w") as f:
        f["views/joint"] = np.zeros((2, 3, 4, 25, 2))
    with pytest.raises(StoreError, match="unfinished.h5: unfinished store"):
        Store(unfinished)
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(StoreError, match="corrupt.h5: not a readable HDF5 file"):
        Store(corrupt)
    good = tmp_path / "good.h5"
    with StoreWriter(good, {}) as writer:
        writer.append({"label": np.arange(200)}, views={"joint": np.ones((200, 3, 50, 25, 2))})
        writer.close()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(StoreError, match="truncated.h5"):
        Store(truncated).view("joint")[150]
    with pytest.raises(StoreError, match="missing.h5: store file does not exist"):
        Store(tmp_path / "missing.h5")


def test_interrupted_prepare_leaves_no_complete_looking_output(synth_ntu60, tmp_path,
                                                               monkeypatch):
    calls = {"n": 0}
    original = views.views_range

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            return original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(views, "views_range", interrupted)
    monkeypatch.setattr(views, "SAMPLES_PER_TASK", 16)
    with pytest.raises(KeyboardInterrupt):
        prepare.run("ntu60", synth_ntu60, tmp_path)
    out = paths.views(tmp_path, "ntu60", "50-shoulder")
    assert not out.exists() and not partial_path(out).exists()
    monkeypatch.setattr(views, "views_range", original)
    views.run("ntu60", "50-shoulder", tmp_path)  # the earlier stages' outputs are complete
    assert len(Store(out)) == 117


def test_on_error_fail_names_the_file(synth_ntu60, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in sorted(synth_ntu60.iterdir())[:5]:
        (raw / f.name).write_bytes(f.read_bytes())
    broken = sorted(raw.iterdir())[2]
    broken.write_text(broken.read_text()[:2000])
    report = parse.run("ntu60", raw, tmp_path / "skip")
    assert report["samples"] == 4 and report["rejected_files"] == 1
    rejected = paths.rejected(tmp_path / "skip", "ntu60").read_text().splitlines()
    assert rejected[0] == "file\tproblem" and rejected[1].startswith(f"{broken}\ttruncated")
    assert json.loads(paths.parse_report(tmp_path / "skip", "ntu60").read_text())["samples"] == 4
    with pytest.raises(StageError, match=f"{broken}: truncated"):
        parse.run("ntu60", raw, tmp_path / "fail", on_error="fail")
    assert not paths.parsed(tmp_path / "fail", "ntu60").exists()


def test_stage_errors(tmp_path, prepared_ntu60):
    with pytest.raises(ValueError, match=r"variant .50. must be \[upto\|stride\]<frames>-<norm"):
        parse_variant("50")
    for bad in ("50-minmax+minmax", "50-none+minmax", "50-bodyframe+scale"):
        with pytest.raises(ValueError, match=re.escape(f"variant '{bad}' must be")):
            parse_variant(bad)
    with pytest.raises(ParamsError, match=re.escape("variant '50' must be")):  # exit 2 in the CLI
        views.run("ntu60", "50", prepared_ntu60)
    with pytest.raises(ParamsError, match=re.escape("variant '50' must be")):
        prepare.run("ntu60", tmp_path / "raw", tmp_path, variants=("50",))
    with pytest.raises(StoreError, match="clean.h5: store file does not exist"):
        views.run("ntu120", "50-shoulder", tmp_path)
    with pytest.raises(StageError, match="unknown view"):
        views.run("ntu60", "50-shoulder", prepared_ntu60, views=("speed",))


def test_parallel_and_serial_runs_write_identical_stores(synth_ntu60, tmp_path):
    for jobs in (1, 2):
        parse.run("ntu60", synth_ntu60, tmp_path / f"j{jobs}", jobs=jobs)
        clean.run("ntu60", tmp_path / f"j{jobs}", jobs=jobs)
        views.run("ntu60", "50-shoulder", tmp_path / f"j{jobs}", jobs=jobs)
    one, two = (Store(paths.views(tmp_path / f"j{j}", "ntu60", "50-shoulder")) for j in (1, 2))
    np.testing.assert_array_equal(one.view("joint")[()], two.view("joint")[()])
    np.testing.assert_array_equal(one.meta()["name"], two.meta()["name"])


def test_an_atomic_write_leaves_the_old_file_when_it_fails(tmp_path):
    out = tmp_path / "sub" / "out.txt"
    with replacing(out) as tmp:
        tmp.write_text("first")
    assert out.read_text() == "first" and not partial_path(out).exists()
    with pytest.raises(RuntimeError, match="disk on fire"):
        with replacing(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk on fire")
    assert out.read_text() == "first" and not partial_path(out).exists()
    with replacing(tmp_path / "a.npz", ".npz") as tmp:  # writers that add their own extension
        assert tmp.name == ".a.npz.partial.npz"
        np.savez(tmp, x=np.arange(3))
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
