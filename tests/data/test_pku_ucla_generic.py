"""PKU-MMD, NW-UCLA and the generic format."""

import pickle

import numpy as np
import pytest

from conftest import NW_UCLA, PKU_SAMPLE, copy_of, need
from skelctl.data.formats import get_format
from skelctl.data.formats.base import TRAIN, UNUSED, VAL, DatasetError, SampleError
from skelctl.data.formats.pku import read_label_file, read_skeleton_file, read_split_file
from skelctl.stages import prepare


# --- PKU-MMD ----------------------------------------------------------------------------------

def test_real_pku_file():
    bodies = read_skeleton_file(need(PKU_SAMPLE) / "A10N08-L.txt")
    assert bodies.shape == (2, 1040, 25, 3)
    assert bodies[1].any(axis=(1, 2)).sum() == 728  # second body present in 728 frames
    np.testing.assert_allclose(bodies[0, 0, 0], [-0.304560, 0.212575, 2.728912], atol=1e-6)


def test_label_file(tmp_path):
    path = tmp_path / "0002-L.txt"
    path.write_text("3,10,40,1\n15,50,1040,2\n")
    np.testing.assert_array_equal(read_label_file(path, 1040), [[3, 10, 40], [15, 50, 1040]])


def test_label_past_the_end(tmp_path):
    path = tmp_path / "0002-L.txt"
    path.write_text("3,10,40,1\n15,50,1041,2\n")
    with pytest.raises(SampleError, match=r"0002-L.txt: line 2: clip 50..1041 points past the "
                                          r"end of its skeleton file \(1040 frames\)"):
        read_label_file(path, 1040)


def test_split_file_official_spelling(tmp_path):
    path = tmp_path / "cross-subject.txt"
    path.write_text("Training videos: \n0002-L, 0002-M, 0003-R\nValidataion videos: \n0004-L\n")
    assert read_split_file(path) == ({"0002-L", "0002-M", "0003-R"}, {"0004-L"})
    path.write_text("Training videos: \n0002-L\n")
    with pytest.raises(DatasetError, match="Validataion"):
        read_split_file(path)


def test_pku_frame_line_errors(tmp_path):
    line = " ".join(["0.1"] * 150)
    path = tmp_path / "0002-L.txt"
    path.write_text(f"{line}\n{' '.join(['0.1'] * 149)}\n")
    with pytest.raises(SampleError, match="line 2: frame line has 149 values, expected 150"):
        read_skeleton_file(path)
    path.write_text(f"{line}\n{line.replace('0.1', 'x', 1)}\n")
    with pytest.raises(SampleError, match="line 2: non-numeric value 'x'"):
        read_skeleton_file(path)
    path.write_text("")
    with pytest.raises(SampleError, match="empty file"):
        read_skeleton_file(path)


def test_pku_clips_are_one_based_inclusive(synth_pku1):
    fmt = get_format("pku1")
    item = fmt.inventory(synth_pku1).items[0]
    video = read_skeleton_file(item[0])
    labels = read_label_file(item[1], video.shape[1])
    clips = fmt.read(item)
    assert len(clips) == len(labels) == 4
    for clip, (action, start, end) in zip(clips, labels):
        assert clip.label == action - 1
        np.testing.assert_array_equal(clip.bodies, video[:, start - 1:end])


def test_pku_prepare_splits_follow_the_split_files(synth_pku1, tmp_path):
    summary = prepare.run("pku1", synth_pku1, tmp_path)
    # 3 subjects x 3 views x 4 clips; subjects 2 and 3 are the validation subjects
    assert summary["samples"] == 36
    assert summary["splits"] == {"xsub": {"train": 12, "val": 24},
                                 "xview": {"train": 24, "val": 12}}


def test_pku_label_past_end_rejects_the_video(synth_pku1, tmp_path):
    raw = tmp_path / "raw"
    for sub in ("skeleton", "label", "split"):
        (raw / sub).mkdir(parents=True)
        for f in (synth_pku1 / sub).iterdir():
            copy_of(f, raw / sub)
    label = raw / "label" / "0002-L.txt"
    label.write_text(label.read_text() + "5,1,999999,1\n")
    summary = prepare.run("pku1", raw, tmp_path / "data")
    assert summary["samples"] == 32
    [(path, problem)] = summary["rejected"]
    assert path.endswith("0002-L.txt") and "points past the end" in problem


# --- NW-UCLA ----------------------------------------------------------------------------------

def test_all_nw_ucla_sequences_load_and_split():
    folder = need(NW_UCLA)
    fmt = get_format("nw-ucla")
    inventory = fmt.inventory(folder)
    assert len(inventory.items) == 1484 and not inventory.rejected
    samples = [s for item in inventory.items for s in fmt.read(item)]
    assert len(samples) == 1484
    assert all(s.bodies.shape[0] == 1 and s.bodies.shape[2:] == (20, 3) for s in samples)
    assert sorted({s.label for s in samples}) == list(range(10))
    meta = {"view": np.array([s.view for s in samples]), "name": [s.name for s in samples]}
    code = fmt.splits(meta, folder)["xview"]
    assert ((code == TRAIN).sum(), (code == VAL).sum()) == (1020, 464)
    with open(folder / "val_label.pkl", "rb") as f:
        official = {d["file_name"] for d in pickle.load(f)}
    assert {n for n, c in zip(meta["name"], code) if c == VAL} == official


def test_nw_ucla_bad_json(tmp_path):
    fmt = get_format("nw-ucla")
    path = tmp_path / "a01_s01_e00_v01.json"
    path.write_text('{"file_name": "x", "skeletons": [[[1, 2]]], "label": 1}')
    with pytest.raises(SampleError, match=r"shape \(1, 1, 2\), expected \(T, 20, 3\)"):
        fmt.read(str(path))
    path.write_text("{not json")
    with pytest.raises(SampleError, match="not valid JSON"):
        fmt.read(str(path))
    path.write_text('{"file_name": "x", "skeletons": [], "label": 1}')
    with pytest.raises(SampleError, match="shape"):
        fmt.read(str(path))


# --- generic ----------------------------------------------------------------------------------

def write_generic(raw, arrays, rows, header="name,label,subject,split"):
    raw.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(raw / f"{name}.npy", array)
    (raw / "samples.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return raw


def test_generic_roundtrip_with_custom_joint_count(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"clip{i}": rng.normal(size=(30 + i, 13, 3)).astype(np.float32) for i in range(4)}
    arrays["pair"] = rng.normal(size=(2, 20, 13, 3)).astype(np.float32)
    raw = write_generic(tmp_path / "raw", arrays, ["clip0,0,1,train", "clip1,1,1,train",
                                                   "clip2,0,2,val", "clip3,1,2,test",
                                                   "pair,2,3,"])
    summary = prepare.run("generic", raw, tmp_path / "data", variants=("20-none",),
                          view_names=("joint", "motion"))
    assert summary["splits"] == {"default": {"train": 2, "val": 2}}
    from skelctl.data.store import Store

    store = Store(summary["outputs"][0])
    assert store.attr("layout") == "joints13" and store.attr("num_classes") == 3
    meta = store.meta()
    assert list(meta["name"]) == ["clip0", "clip1", "clip2", "clip3", "pair"]
    assert store.view("joint").shape == (5, 3, 20, 13, 2)
    # with 'none' normalisation and a 20-frame clip resampled to 20, the data is unchanged (the
    # bodies ranked by energy, highest first)
    bodies = [arrays["pair"][b].transpose(2, 0, 1) for b in (0, 1)]
    order = (0, 1) if np.allclose(store.view("joint")[4][..., 0], bodies[0]) else (1, 0)
    for m, b in enumerate(order):
        np.testing.assert_allclose(store.view("joint")[4][..., m], bodies[b])
    assert list(meta["split_default"]) == [TRAIN, TRAIN, VAL, VAL, UNUSED]


def test_generic_bad_inputs(tmp_path):
    good = np.zeros((10, 25, 3), dtype=np.float32)
    good[:, :, 1] = 1
    nan = good.copy()
    nan[4, 7, 2] = nan[6, 1, 0] = np.nan
    raw = write_generic(tmp_path / "raw", {"a": good, "nan": nan,
                                          "short": np.zeros((10, 24, 3)), "empty": np.zeros((0, 25, 3))},
                        ["a,0,,", "nan,0,,", "short,1,,", "empty,1,,", "ghost,0,,", "a,1,,",
                         "bad,x,,"], header="name,label,subject,split")
    fmt = get_format("generic")
    inventory = fmt.inventory(raw)
    assert fmt.layout.name == "ntu25"
    reasons = dict(inventory.rejected)
    assert "duplicate sample name 'a'" in reasons[f"{raw / 'samples.csv'}:7"]
    assert "label must be an integer" in reasons[f"{raw / 'samples.csv'}:8"]
    problems = {}
    for item in inventory.items:
        try:
            fmt.read(item)
        except SampleError as err:
            problems[item["name"]] = err.problem
    assert problems["nan"] == ("2 NaN or infinite coordinate value(s), the first at body 0, "
                               "frame 4, joint 7, coordinate 2 (counted from 0)")
    assert problems["short"] == "24 joints, but the layout 'ntu25' has 25"
    assert problems["empty"] == "zero frames"
    assert problems["ghost"] == "array file listed in samples.csv does not exist"
    (raw / "samples.csv").write_text("file,class\nx,1\n")
    with pytest.raises(DatasetError, match="needs the columns 'name' and 'label'"):
        fmt.inventory(raw)
