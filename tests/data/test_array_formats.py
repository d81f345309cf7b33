"""The reference repositories' preprocessed arrays as dataset formats (crossclr, isc, pyskl), the
restricted unpickler, and ``skelctl export`` back to those layouts.

The synthetic files are written here the way the authors' scripts write them (``np.save`` of
``(N, C, T, V, M)`` arrays, ``pickle.dump`` of ``(names, labels)`` or of pyskl's dict), with
known contents, independently of the toolkit's own writers."""

from __future__ import annotations

import os
import pickle
import pickletools
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from skelctl.cli import main
from skelctl.data.bodies import Denoising
from skelctl.data.formats import get_format
from skelctl.data.formats.base import TRAIN, UNUSED, VAL, DatasetError, RawSample
from skelctl.data.formats.generic import write_samples
from skelctl.data.formats.isc import loop_pad
from skelctl.data.formats.pickles import PickleRefused, dump_pickle, load_pickle
from skelctl.data.store import Store
from skelctl.data.synth import write_ntu
from skelctl.stages import export, info, parse, prepare
from skelctl.stages.common import StageError

# 3 performers x 3 cameras x 2 actions; performer 3 and camera 1 test, as in NTU's benchmarks
NAMES = [f"S001C{c:03d}P{p:03d}R001A{a:03d}" for p in (1, 2, 3) for c in (1, 2, 3) for a in (1, 2)]
BENCHMARKS = {"xsub": lambda name: "P003" not in name, "xview": lambda name: "C001" not in name}


def label_of(name: str) -> int:
    return int(name[-3:]) - 1


def recordings(frames: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """A (3, frames, 25, 2) array per name; the second body absent in every other one."""
    rng = np.random.default_rng(seed)
    data = {}
    for i, name in enumerate(NAMES):
        x = rng.normal(size=(3, frames, 25, 2)).astype(np.float32)
        if i % 2:
            x[..., 1] = 0
        data[name] = x
    return data


def write_benchmarks(root: Path, arrays: dict[str, np.ndarray], array: str = "position",
                     counts: dict[str, int] | None = None,
                     benchmarks: dict = BENCHMARKS) -> None:
    """One folder per benchmark: ``<part>_<array>.npy``, ``<part>_label.pkl`` (names keep the
    gendata scripts' ``.skeleton``), and ``<part>_num_frame.npy`` when ``counts`` are given."""
    for benchmark, trains in benchmarks.items():
        folder = root / benchmark
        folder.mkdir(parents=True, exist_ok=True)
        for part in ("train", "val"):
            names = [n for n in arrays if trains(n) == (part == "train")]
            np.save(folder / f"{part}_{array}.npy", np.stack([arrays[n] for n in names]))
            with open(folder / f"{part}_label.pkl", "wb") as f:
                pickle.dump(([f"{n}.skeleton" for n in names], [label_of(n) for n in names]), f)
            if counts is not None:
                np.save(folder / f"{part}_num_frame.npy", np.array([counts[n] for n in names]))


def read_all(fmt, raw: Path) -> tuple:
    inventory = fmt.inventory(raw)
    samples = [s for item in inventory.items for s in fmt.read(item)]
    return inventory, {s.name: s for s in samples}


def codes(fmt, raw: Path, names: list[str]) -> dict[str, dict[str, int]]:
    splits = fmt.splits({"name": np.array(names, dtype=object)}, raw)
    return {p: dict(zip(names, c.tolist())) for p, c in splits.items()}


def expected_codes(names: list[str]) -> dict[str, dict[str, int]]:
    return {b: {n: TRAIN if rule(n) else VAL for n in names} for b, rule in BENCHMARKS.items()}


# --- CrosSCLR line -------------------------------------------------------------------------

def test_crossclr_imports_each_recording_once_with_each_benchmark_a_protocol(tmp_path):
    arrays = recordings()
    write_benchmarks(tmp_path, arrays)
    fmt = get_format("crossclr")
    inventory, samples = read_all(fmt, tmp_path)
    assert inventory.rejected == [] and len(inventory.items) == len(NAMES)
    assert sorted(samples) == sorted(NAMES)  # the .skeleton ending dropped, each name once
    assert (fmt.layout.name, fmt.num_classes, fmt.max_bodies) == ("ntu25", 2, 2)
    assert fmt.protocols == ("xsub", "xview")
    for i, name in enumerate(NAMES):
        sample = samples[name]
        expected = arrays[name].transpose(3, 1, 2, 0)  # (M, T, V, C)
        if i % 2:
            expected = expected[:1]  # the absent second body is left out
        np.testing.assert_array_equal(sample.bodies, expected)
        assert sample.bodies.dtype == np.float32
        assert (sample.label, sample.subject, sample.view, sample.setup, sample.replication) == \
            (label_of(name), int(name[9:12]), int(name[5:8]), 1, 1)
        assert re.fullmatch(rf"{re.escape(str(tmp_path))}/xsub/(train|val)_position\.npy\[\d+\]",
                            sample.source)
    assert codes(fmt, tmp_path, NAMES) == expected_codes(NAMES)


def test_crossclr_membership_is_what_the_files_say(tmp_path):
    """A recording a benchmark folder does not list is unused there, and one only a later folder
    lists is still imported (from that folder)."""
    arrays = recordings()
    only_xview = NAMES[-1]
    write_benchmarks(tmp_path, {n: a for n, a in arrays.items() if n != only_xview},
                     benchmarks={"xsub": BENCHMARKS["xsub"]})
    write_benchmarks(tmp_path, arrays, benchmarks={"xview": BENCHMARKS["xview"]})
    fmt = get_format("crossclr")
    _, samples = read_all(fmt, tmp_path)
    assert sorted(samples) == sorted(NAMES)
    assert "/xview/" in samples[only_xview].source
    np.testing.assert_array_equal(samples[only_xview].bodies[0],
                                  arrays[only_xview][..., 0].transpose(1, 2, 0))
    split = codes(fmt, tmp_path, NAMES)
    assert split["xsub"][only_xview] == UNUSED
    assert split["xview"] == expected_codes(NAMES)["xview"]


def test_crossclr_raw_gendata_arrays_lose_only_their_zero_padding(tmp_path):
    """tools/ntu_gendata.py's 300-frame arrays: each recording's frames, then zeros."""
    lengths = {name: 20 + 7 * i for i, name in enumerate(NAMES)}
    arrays = {}
    for name, x in recordings(frames=300).items():
        x[:, lengths[name]:] = 0
        arrays[name] = x
    write_benchmarks(tmp_path, arrays, array="data")
    fmt = get_format("crossclr")
    _, samples = read_all(fmt, tmp_path)
    for name, sample in samples.items():
        assert sample.bodies.shape[1] == lengths[name]
        np.testing.assert_array_equal(sample.bodies[0],
                                      arrays[name][:, :lengths[name], :, 0].transpose(1, 2, 0))


def test_crossclr_prefers_the_50_frame_positions_and_reads_one_benchmark_folder(tmp_path):
    arrays = recordings()
    write_benchmarks(tmp_path, arrays, benchmarks={"xsub": BENCHMARKS["xsub"]})
    write_benchmarks(tmp_path, recordings(frames=300, seed=1), array="data",
                     benchmarks={"xsub": BENCHMARKS["xsub"]})
    fmt = get_format("crossclr")
    _, samples = read_all(fmt, tmp_path / "xsub")  # RAW is the benchmark folder itself
    assert fmt.protocols == ("xsub",)
    assert {s.bodies.shape[1] for s in samples.values()} == {50}
    assert codes(fmt, tmp_path / "xsub", NAMES)["xsub"] == expected_codes(NAMES)["xsub"]


# --- ISC line ------------------------------------------------------------------------------

def pad_like_pre_normalization(x: np.ndarray, length: int, frames: int) -> np.ndarray:
    """2s-AGCN's padding of the frames after a sequence's last: the sequence again from its start."""
    out = np.zeros((x.shape[0], frames, *x.shape[2:]), dtype=x.dtype)
    repeats = -(-frames // length)
    out[:] = np.concatenate([x[:, :length]] * repeats, axis=1)[:, :frames]
    return out


def test_isc_reads_only_the_real_frames(tmp_path):
    counts = {name: 10 + 13 * i for i, name in enumerate(NAMES)}  # 10 .. 231
    counts[NAMES[0]] = 500  # CMD/PCM3's PKU gendata keep the count before truncating to 300
    arrays = {n: pad_like_pre_normalization(x, min(counts[n], 300), 300)
              for n, x in recordings(frames=300).items()}
    write_benchmarks(tmp_path, arrays, array="data_joint", counts=counts)
    fmt = get_format("isc")
    inventory, samples = read_all(fmt, tmp_path)
    assert inventory.rejected == [] and fmt.protocols == ("xsub", "xview")
    for name, sample in samples.items():
        real = min(counts[name], 300)
        assert sample.bodies.shape[1] == real
        np.testing.assert_array_equal(sample.bodies[0],
                                      arrays[name][:, :real, :, 0].transpose(1, 2, 0))
    assert codes(fmt, tmp_path, NAMES) == expected_codes(NAMES)


def test_isc_a_zero_frame_count_is_rejected_naming_the_row(tmp_path):
    counts = dict.fromkeys(NAMES, 40)
    counts[NAMES[1]] = 0
    write_benchmarks(tmp_path, recordings(frames=60), array="data_joint", counts=counts)
    inventory = get_format("isc").inventory(tmp_path)
    assert len(inventory.items) == len(NAMES) - 1
    assert inventory.rejected == [(f"{tmp_path}/xsub/train_data_joint.npy row 1 ({NAMES[1]})",
                                   "frame count 0 in train_num_frame.npy; a sample has at least "
                                   "one frame")]


# --- pyskl ---------------------------------------------------------------------------------

def write_pyskl(path: Path, annotations: list[dict], split: dict, protocol: int = 2) -> Path:
    """As pyskl's tools write it (mmcv.dump: pickle protocol 2)."""
    with open(path, "wb") as f:
        pickle.dump({"split": split, "annotations": annotations}, f, protocol=protocol)
    return path


def pyskl_3d(seed: int = 0) -> tuple[list[dict], dict]:
    rng = np.random.default_rng(seed)
    annotations = []
    for i, name in enumerate(NAMES):
        bodies = 1 + i % 2
        keypoint = rng.normal(size=(bodies, 20 + i, 25, 3)).astype(np.float16)
        annotations.append({"frame_dir": name, "label": label_of(name), "keypoint": keypoint,
                            "total_frames": keypoint.shape[1]})
    split = {f"{b}_{part}": [n for n in NAMES if rule(n) == (part == "train")]
             for b, rule in BENCHMARKS.items() for part in ("train", "val")}
    return annotations, split


def test_pyskl_3d_annotations_with_every_split_a_protocol(tmp_path):
    annotations, split = pyskl_3d()
    path = write_pyskl(tmp_path / "ntu60_3danno.pkl", annotations, split)
    fmt = get_format("pyskl")
    inventory, samples = read_all(fmt, tmp_path)  # the folder holding the one .pkl
    assert inventory.rejected == [] and inventory.notes == {}
    assert (fmt.layout.name, fmt.num_classes, fmt.max_bodies) == ("ntu25", 2, 2)
    assert fmt.protocols == ("xsub", "xview")
    for annotation in annotations:
        sample = samples[annotation["frame_dir"]]
        np.testing.assert_array_equal(sample.bodies, annotation["keypoint"].astype(np.float32))
        assert sample.label == annotation["label"] and sample.subject > 0
    assert codes(fmt, path, NAMES) == expected_codes(NAMES)


def test_pyskl_bare_split_names_form_the_default_protocol(tmp_path):
    annotations, _ = pyskl_3d()
    path = write_pyskl(tmp_path / "a.pkl", annotations,
                       {"train": NAMES[:10], "test": NAMES[10:16]})
    fmt = get_format("pyskl")
    fmt.inventory(path)
    assert fmt.protocols == ("default",)
    assert codes(fmt, path, NAMES)["default"] == {
        n: TRAIN if i < 10 else VAL if i < 16 else UNUSED for i, n in enumerate(NAMES)}


def test_pyskl_2d_coco_keypoints_with_scores_some_filled_with_ones(tmp_path):
    rng = np.random.default_rng(0)
    annotations = [{"frame_dir": name, "label": label_of(name), "img_shape": (1080, 1920),
                    "keypoint": rng.uniform(0, 1000, size=(1, 30, 17, 2)).astype(np.float32),
                    "total_frames": 30, **({"keypoint_score": rng.uniform(
                        size=(1, 30, 17)).astype(np.float16)} if i < 12 else {})}
                   for i, name in enumerate(NAMES)]
    path = write_pyskl(tmp_path / "ntu60_hrnet.pkl", annotations,
                       {"xsub_train": NAMES[:12], "xsub_val": NAMES[12:]})
    report = parse.run("hrnet", path, tmp_path / "data", format_name="pyskl")
    assert (report["layout"], report["dims"], report["samples"]) == ("coco17-2d", 2, 18)
    assert report["notes"] == {"keypoint_score": "6 of 18 annotations carry no keypoint_score "
                               "(per-joint detection confidence); their scores are 1.0, as "
                               "pyskl fills them"}
    parsed = Store(tmp_path / "data/interim/hrnet/parsed.h5")
    assert parsed.file["sequences/data"].shape[1:] == (17, 2) and parsed.has_scores
    np.testing.assert_array_equal(parsed.sequence(0), annotations[0]["keypoint"][0])
    np.testing.assert_array_equal(parsed.sequence_scores(0, 1),
                                  annotations[0]["keypoint_score"][0].astype(np.float32))
    np.testing.assert_array_equal(parsed.sequence_scores(17, 18), np.ones((30, 17), np.float32))


def pyskl_2d_scored(seed: int = 0) -> tuple[list[dict], dict]:
    """2D COCO-17 annotations with float16 scores, as HRNet files hold them: 21 frames, frame 4
    untracked (all zero, with scores: dropped by clean, 20 frames left); odd ones with a
    second body whose coordinates spread ten times wider than the first's, so that the energy
    ranking puts it first. Wider in y than in x, so that no track looks like spread noise."""
    rng = np.random.default_rng(seed)
    annotations = []
    for i, name in enumerate(NAMES):
        bodies = 1 + i % 2
        spread = np.array([1.0, 10.0])[:bodies, None, None, None]
        keypoint = (rng.uniform(1, 2, size=(bodies, 21, 17, 2)) * (10, 100) * spread)
        score = rng.uniform(size=(bodies, 21, 17)).astype(np.float16)
        keypoint[:, 4] = 0
        annotations.append({"frame_dir": name, "label": label_of(name),
                            "keypoint": keypoint.astype(np.float32), "keypoint_score": score,
                            "total_frames": 21})
    split = {f"{b}_{part}": [n for n in NAMES if rule(n) == (part == "train")]
             for b, rule in BENCHMARKS.items() for part in ("train", "val")}
    return annotations, split


def expected_sequences(annotation: dict) -> tuple[np.ndarray, np.ndarray]:
    """An annotation as clean leaves it: ``(L, C, V, M)`` coordinates and ``(L, V, M)`` scores,
    the wider body first, a second body absent zero (coordinates and scores), the untracked
    frames gone."""
    keypoint, score = annotation["keypoint"], annotation["keypoint_score"].astype(np.float32)
    if len(keypoint) == 2:
        keypoint, score = keypoint[[1, 0]], score[[1, 0]]
    else:
        keypoint = np.concatenate([keypoint, np.zeros_like(keypoint)])
        score = np.concatenate([score, np.zeros_like(score)])
    valid = keypoint.any(axis=(0, 2, 3))
    return keypoint[:, valid].transpose(1, 3, 2, 0), score[:, valid].transpose(1, 2, 0)


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[list[dict], Path]:
    """The 2D annotations prepared at 20 frames (each sequence's own length after clean: no
    resampling), 10 frames (resampled) and at most 8 (subsampled), without normalisation."""
    base = tmp_path_factory.mktemp("scored")
    annotations, split = pyskl_2d_scored()
    path = write_pyskl(base / "ntu60_hrnet.pkl", annotations, split)
    prepare.run("pyskl", path, base / "data", variants=("20-none", "10-none", "upto8-none"),
                name="hrnet", view_names=("joint", "motion"))
    return annotations, base / "data" / "processed" / "hrnet"


def test_pyskl_scores_take_the_joints_bodies_and_frames(scored):
    annotations, folder = scored
    store = Store(folder / "20-none.h5")
    assert store.has_scores and store.views == ["joint", "motion"]  # the scores are no stream
    assert store.score().shape == (18, 1, 20, 17, 2)
    where = by_name(store)
    for annotation in annotations:
        i = where[annotation["frame_dir"]]
        coordinates, scores = expected_sequences(annotation)
        assert len(scores) == 20
        np.testing.assert_array_equal(store.sequence(i), coordinates)
        np.testing.assert_array_equal(store.sequence_scores(i, i + 1), scores)
        # 20 frames in, 20 out: every frame read as it is, the scores as the joints
        np.testing.assert_array_equal(store.view("joint")[i], coordinates.transpose(1, 0, 2, 3))
        np.testing.assert_array_equal(store.score()[i, 0], scores)
    described = info.describe(folder / "20-none.h5")
    assert described["scores"] == {"score": [1, 20, 17, 2], "sequences": [17, 2]}
    assert set(described["views"]) == {"joint", "motion"}


@pytest.mark.parametrize("variant", ["10-none", "upto8-none"])
def test_pyskl_scores_are_resampled_with_the_joints_positions(scored, variant):
    annotations, folder = scored
    store = Store(folder / f"{variant}.h5")
    where = by_name(store)
    for annotation in annotations:
        i = where[annotation["frame_dir"]]
        coordinates, scores = expected_sequences(annotation)
        length = len(scores)
        if variant == "10-none":  # linear interpolation, align_corners=False
            pos = np.clip((np.arange(10) + 0.5) * length / 10 - 0.5, 0, length - 1)
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, length - 1)
            w = (pos - lo).astype(np.float32)

            def at(x: np.ndarray) -> np.ndarray:
                weight = w.reshape(-1, *[1] * (x.ndim - 1))
                return x[lo] * (1 - weight) + x[hi] * weight
        else:  # evenly spaced frames, floor(i * L / 8)

            def at(x: np.ndarray) -> np.ndarray:
                return x[np.arange(8) * length // 8]
        # the joints read at these positions, and the scores at the very same ones
        np.testing.assert_array_equal(store.view("joint")[i], at(coordinates).transpose(1, 0, 2, 3))
        np.testing.assert_array_equal(store.score()[i, 0], at(scores))


def test_pyskl_scores_round_trip_bit_exactly(scored, tmp_path):
    annotations, folder = scored
    original = Store(folder / "20-none.h5")
    result = export.run(original.path, "pyskl", tmp_path / "out")
    content = pickle.load(open(result["files"][0], "rb"))
    exported = {a["frame_dir"]: a for a in content["annotations"]}
    for annotation in annotations:
        back = exported[annotation["frame_dir"]]
        assert back["keypoint_score"].dtype == np.float32
        assert back["keypoint_score"].shape == back["keypoint"].shape[:3]
        _, scores = expected_sequences(annotation)  # the absent second body left out
        np.testing.assert_array_equal(back["keypoint_score"],
                                      scores.transpose(2, 0, 1)[:len(annotation["keypoint"])])
    prepare.run("pyskl", result["files"][0], tmp_path / "data", variants=("20-none",),
                name="back", view_names=("joint", "motion"))
    imported = Store(tmp_path / "data/processed/back/20-none.h5")
    assert_same_dataset(original, imported, sequences=True, columns=("label",))
    index = np.array([by_name(imported)[n] for n in original.meta(["name"])["name"]])
    np.testing.assert_array_equal(imported.score()[:][index], original.score()[:])
    for i, j in enumerate(index):
        np.testing.assert_array_equal(imported.sequence_scores(j, j + 1),
                                      original.sequence_scores(i, i + 1))


# --- malformed files: one named error each --------------------------------------------------

def dump(path: Path, obj, protocol: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def folder_with(tmp_path: Path, array: np.ndarray, labels, name: str = "position") -> Path:
    folder = tmp_path / "xsub"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"train_{name}.npy", array)
    dump(folder / "train_label.pkl", labels)
    return folder


def two_samples() -> tuple[list[str], list[int]]:
    return ["S001C001P001R001A001", "S001C001P001R001A002"], [0, 1]


def test_wrong_array_shape(tmp_path):
    folder = folder_with(tmp_path, np.zeros((2, 3, 50, 25), np.float32), two_samples())
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_position.npy: array of shape (2, 3, 50, 25), "
                              f"expected (N, C, T, V, M) with C = 3 (or 2) coordinates, as the "
                              f"CrosSCLR-line code writes it")


def test_label_count_not_matching_the_array(tmp_path):
    folder = folder_with(tmp_path, np.zeros((3, 3, 50, 25, 2), np.float32), two_samples())
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_position.npy: holds 3 samples, but "
                              f"train_label.pkl lists 2; the label file lists the array's "
                              f"samples in order")


def test_names_and_labels_of_different_lengths(tmp_path):
    folder = folder_with(tmp_path, np.zeros((2, 3, 50, 25, 2), np.float32),
                         (two_samples()[0], [0, 1, 2]))
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == f"{folder}/train_label.pkl: 2 sample names but 3 labels"


@pytest.mark.parametrize("labels, found", [
    ({"names": [], "labels": []}, "a dict with keys 'names', 'labels'"),
    (([], [], []), "a tuple of 3 items"),
    ("S001", "a str"),
])
def test_label_file_that_is_not_a_pair(tmp_path, labels, found):
    folder = folder_with(tmp_path, np.zeros((2, 3, 50, 25, 2), np.float32), labels)
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_label.pkl: not a label file of the CrosSCLR/ISC "
                              f"layout: expected a pickled pair (sample names, labels), found "
                              f"{found}")


def test_labels_that_are_not_integers(tmp_path):
    folder = folder_with(tmp_path, np.zeros((2, 3, 50, 25, 2), np.float32),
                         (two_samples()[0], [0.5, 1.0]))
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_label.pkl: the second item of the pair must be "
                              f"the list of integer labels, found a list of 2 items of float64")


def test_a_pyskl_pickle_where_a_label_file_belongs(tmp_path):
    folder = folder_with(tmp_path, np.zeros((2, 3, 50, 25, 2), np.float32),
                         {"split": {}, "annotations": []})
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_label.pkl: a pyskl annotation file, not a label "
                              f"file of the CrosSCLR/ISC layout; import it with the format pyskl")


def test_positions_without_their_label_file(tmp_path):
    folder = tmp_path / "xsub"
    folder.mkdir()
    np.save(folder / "train_position.npy", np.zeros((2, 3, 50, 25, 2), np.float32))
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (
        f"{folder}/train_label.pkl: missing: train_position.npy needs its label file (the pickled "
        f"sample names and labels) beside it; CrosSCLR's feeder/preprocess_ntu.py writes the "
        f"positions to NTU60_frame50/<benchmark>/ and leaves the label file in the gendata "
        f"folder (NTU-RGB-D/<benchmark>/): copy it beside the positions")


def test_a_folder_of_the_other_line(tmp_path):
    folder_with(tmp_path, np.zeros((2, 3, 50, 25, 2), np.float32), two_samples(), "data_joint")
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (
        f"{tmp_path}: no CrosSCLR-line arrays: expected <benchmark>/train_position.npy or "
        f"<benchmark>/train_data.npy (with val_ and the label files beside them), e.g. "
        f"xsub/train_position.npy; {tmp_path} holds data_joint files, the isc layout: import it "
        f"with the format isc")


def test_isc_without_frame_counts_or_with_too_few(tmp_path):
    folder = folder_with(tmp_path, np.zeros((2, 3, 300, 25, 2), np.float32), two_samples(),
                         "data_joint")
    with pytest.raises(DatasetError) as err:
        get_format("isc").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_num_frame.npy: missing: the ISC-line arrays are "
                              f"padded to 300 frames, and each sample's real frame count comes "
                              f"from this file")
    np.save(folder / "train_num_frame.npy", np.array([30]))
    with pytest.raises(DatasetError) as err:
        get_format("isc").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_num_frame.npy: 1 frame counts for the 2 samples "
                              f"of train_data_joint.npy")


def test_benchmark_folders_that_disagree(tmp_path):
    arrays = recordings()
    write_benchmarks(tmp_path, arrays, benchmarks={"xsub": BENCHMARKS["xsub"]})
    folder = tmp_path / "xview"
    folder.mkdir()
    np.save(folder / "train_position.npy", arrays[NAMES[0]][None])
    dump(folder / "train_label.pkl", ([NAMES[0]], [5]), protocol=2)
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_label.pkl row 0: sample {NAMES[0]!r} has label 5, "
                              f"but label 0 at {tmp_path}/xsub/train_label.pkl row 0; the "
                              f"benchmark folders disagree")
    np.save(folder / "train_position.npy", np.zeros((1, 3, 50, 20, 2), np.float32))
    with pytest.raises(DatasetError) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_position.npy: 20 joints x 3 coordinates, but "
                              f"{tmp_path}/xsub/train_position.npy: 25 x 3; one dataset has one "
                              f"joint layout")


def test_a_duplicate_name_in_one_benchmark_is_rejected(tmp_path):
    folder = folder_with(tmp_path, np.ones((2, 3, 50, 25, 2), np.float32),
                         ([NAMES[0], NAMES[0]], [0, 0]))
    inventory = get_format("crossclr").inventory(tmp_path)
    assert len(inventory.items) == 1
    assert inventory.rejected == [(f"{folder}/train_label.pkl row 1",
                                   f"duplicate sample name {NAMES[0]!r} in benchmark 'xsub'; "
                                   f"the first listing counts")]


@pytest.mark.parametrize("obj, message", [
    ([1, 2, 3], "not a pyskl annotation file: expected a dict with 'annotations' (and 'split'), "
                "found a list of 3 items"),
    ((["a"], [0]), "a label file of the CrosSCLR/ISC layout (sample names, labels), not a pyskl "
                   "annotation file; import its folder with the format crossclr or isc"),
    ({"annotations": {}}, "'annotations' must be a list of dicts, found an empty dict"),
    ({"annotations": [], "split": {"xsub": ["a"]}},
     "split 'xsub' is neither <protocol>_train, <protocol>_val, <protocol>_test nor train, val, "
     "test"),
    ({"annotations": [], "split": {"xsub_train": ["a"], "xsub_val": ["a"]}},
     "'a' is in both the train and the val split of protocol 'xsub'"),
    ({"annotations": [], "split": {}}, "'annotations' is empty"),
])
def test_malformed_pyskl_files(tmp_path, obj, message):
    path = dump(tmp_path / "a.pkl", obj)
    with pytest.raises(DatasetError) as err:
        get_format("pyskl").inventory(path)
    assert str(err.value) == f"{path}: {message}"


def test_malformed_pyskl_annotations_are_rejected_one_by_one(tmp_path):
    good = {"frame_dir": "a", "label": 0, "keypoint": np.ones((1, 5, 25, 3), np.float16),
            "total_frames": 5}
    bad = [
        ({"frame_dir": "b", "label": 0}, "lacks keypoint"),
        ({**good, "frame_dir": "c", "total_frames": 7},
         "total_frames is 7, but keypoint holds 5 frames"),
        ({**good, "frame_dir": "d", "keypoint": np.ones((5, 25, 3))},
         "keypoint is a numpy array of shape (5, 25, 3) of float64, expected a numeric "
         "(M, T, V, C) array with C = 2 or 3"),
        ({**good, "frame_dir": "e", "label": -1}, "label -1 is not an integer from 0"),
        ({**good, "frame_dir": "f", "keypoint_score": np.ones((1, 5))},
         "keypoint_score is a numpy array of shape (1, 5), expected an array of the keypoints' "
         "(M, T, V) = (1, 5, 25)"),
        ({**good, "frame_dir": "f2", "keypoint_score": np.full((1, 5, 25), "x")},
         "keypoint_score is of <U1, expected numbers"),
        (good, "duplicate frame_dir 'a' (also annotation 0)"),
        ({**good, "frame_dir": "g", "keypoint": np.ones((1, 5, 17, 3))},
         "keypoint has 17 joints x 3 coordinates, but the layout 'ntu25' (the one most "
         "annotations fit) has 25 x 3"),
    ]
    path = write_pyskl(tmp_path / "a.pkl", [good, *(a for a, _ in bad), {**good, "frame_dir": "h"}],
                       {})
    inventory = get_format("pyskl").inventory(path)
    assert [item[1] for item in inventory.items] == ["a", "h"]
    assert inventory.rejected == [(f"{path} annotation {i + 1}", message)
                                  for i, (_, message) in enumerate(bad)]


def test_a_truncated_pickle(tmp_path):
    path = tmp_path / "a.pkl"
    annotations, split = pyskl_3d()
    path.write_bytes(pickle.dumps({"split": split, "annotations": annotations})[:5000])
    with pytest.raises(DatasetError) as err:
        get_format("pyskl").inventory(path)
    assert str(err.value).startswith(f"{path}: not a readable pyskl annotation file (")
    assert str(err.value).endswith("); a truncated or interrupted download ends this way")


# --- the restricted unpickler ---------------------------------------------------------------

class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_naming_any_other_global_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    folder = folder_with(tmp_path, np.zeros((1, 3, 50, 25, 2), np.float32),
                         (["S001C001P001R001A001"], [RunsACommand(marker)]))
    with pytest.raises(PickleRefused) as err:
        get_format("crossclr").inventory(tmp_path)
    assert str(err.value) == (f"{folder}/train_label.pkl: refused: the pickle names the global "
                              f"{os.system.__module__}.system, which no label file needs (only "
                              f"lists, tuples, dicts, strings, numbers and numpy arrays are "
                              f"loaded from a pickle; nothing it names is run)")
    assert not marker.exists()
    path = dump(tmp_path / "anno.pkl", {"split": {}, "annotations": [RunsACommand(marker)]})
    with pytest.raises(PickleRefused, match=r"anno.pkl: refused: the pickle names the global "
                                            r"\w+\.system, which no pyskl annotation file"):
        get_format("pyskl").inventory(path)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [pickle.loads, Path, np.load, np.lib.format.open_memmap])
def test_callables_beyond_numpy_reconstruction_are_refused(tmp_path, obj):
    path = dump(tmp_path / "a.pkl", ([obj], [0]))
    with pytest.raises(PickleRefused, match="refused: the pickle names the global"):
        load_pickle(path, "label file")


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_arrays_and_scalars_load_from_every_protocol(tmp_path, protocol):
    obj = {"keypoint": np.arange(24, dtype=np.float16).reshape(1, 2, 4, 3),
           "label": np.int64(3), "names": ["a", "b"], "shape": (1080, 1920)}
    path = dump(tmp_path / "a.pkl", obj, protocol=protocol)
    loaded = load_pickle(path, "pyskl annotation file")
    np.testing.assert_array_equal(loaded["keypoint"], obj["keypoint"])
    assert loaded["keypoint"].dtype == np.float16
    assert (loaded["label"], loaded["names"], loaded["shape"]) == (3, ["a", "b"], (1080, 1920))


def test_written_pickles_name_numpy_1_globals_and_load_with_plain_pickle(tmp_path):
    """numpy 2 pickles name numpy._core, which numpy 1.x (the reference repositories' era)
    lacks; the writer names numpy.core, which both read."""
    path = tmp_path / "a.pkl"
    dump_pickle({"keypoint": np.ones((1, 2, 25, 3), np.float32), "label": np.int64(1)}, path)
    data = path.read_bytes()
    globals_named = {arg.split()[0] for op, arg, _ in pickletools.genops(data)
                     if op.name == "GLOBAL"}
    assert globals_named == {"numpy.core.multiarray"}
    loaded = pickle.loads(data)  # numpy 2 resolves its numpy.core alias
    np.testing.assert_array_equal(loaded["keypoint"], np.ones((1, 2, 25, 3)))


# --- export, and round trips ------------------------------------------------------------------

@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A synthetic NTU-60 corpus prepared at 50 frames without normalisation: the store every
    round trip starts from (117 samples, 27 with a second body)."""
    base = tmp_path_factory.mktemp("source")
    write_ntu("ntu60", base / "raw", subjects=3, replications=1, seed=0)
    prepare.run("ntu60", base / "raw", base / "data", variants=("50-none",))
    return base / "data" / "processed" / "ntu60" / "50-none.h5"


def by_name(store: Store) -> dict[str, int]:
    return {name: i for i, name in enumerate(store.meta(["name"])["name"])}


def assert_same_dataset(original: Store, imported: Store, sequences: bool,
                        columns: tuple[str, ...] = ("label", "subject", "view", "setup",
                                                    "replication")) -> None:
    """The same samples (by name) with equal joint views (and variable-length sequences), labels,
    the metadata NTU names carry, and train/val membership in every protocol."""
    names = original.meta(["name"])["name"]
    where = by_name(imported)
    assert sorted(where) == sorted(names)
    index = np.array([where[n] for n in names])
    np.testing.assert_array_equal(imported.view("joint")[:][index], original.view("joint")[:])
    for column in columns:
        np.testing.assert_array_equal(imported.meta([column])[column][index],
                                      original.meta([column])[column])
    if sequences:
        for i, j in enumerate(index):
            np.testing.assert_array_equal(imported.sequence(j), original.sequence(i))
    assert imported.protocols == original.protocols
    for protocol in original.protocols:
        for part in ("train", "val"):
            assert set(names[original.split(f"{protocol}/{part}")]) == \
                set(imported.meta(["name"])["name"][imported.split(f"{protocol}/{part}")])


def test_crossclr_round_trip(source, tmp_path):
    """Export the 50-frame joint view, import it at 50-none: the same joint views. Denoising is
    off on import: it judges a track by its frame count, which resampling to 50 changed."""
    result = export.run(source, "crossclr", tmp_path / "out")
    assert result["splits"] == {"xsub": {"train": 78, "val": 39},
                                "xview": {"train": 78, "val": 39}}
    original = Store(source)
    position = np.load(tmp_path / "out/xsub/val_position.npy")
    assert position.dtype == np.float32 and position.shape == (39, 3, 50, 25, 2)
    names, labels = pickle.load(open(tmp_path / "out/xsub/val_label.pkl", "rb"))
    np.testing.assert_array_equal(position, original.take("joint", original.split("xsub/val")))
    assert names == original.meta(["name"])["name"][original.split("xsub/val")].tolist()
    assert all(type(label) is int for label in labels)
    prepare.run("crossclr", tmp_path / "out", tmp_path / "data", variants=("50-none",),
                name="back", denoising=Denoising(enabled=False))
    assert_same_dataset(original, Store(tmp_path / "data/processed/back/50-none.h5"),
                        sequences=False)


def test_isc_round_trip(source, tmp_path):
    """Export the variable-length sequences loop-padded to 300 frames, import: the same
    sequences, hence the same 50-frame joint views."""
    export.run(source, "isc", tmp_path / "out")
    original = Store(source)
    data = np.load(tmp_path / "out/xview/train_data_joint.npy", mmap_mode="r")
    counts = np.load(tmp_path / "out/xview/train_num_frame.npy")
    first = original.split("xview/train")[0]
    sequence = original.sequence(first)  # (L, C, V, M)
    assert data.shape[1:] == (3, 300, 25, 2) and counts[0] == len(sequence)
    t = np.arange(300)
    np.testing.assert_array_equal(data[0], sequence[t % len(sequence)].transpose(1, 0, 2, 3))
    prepare.run("isc", tmp_path / "out", tmp_path / "data", variants=("50-none",), name="back")
    assert_same_dataset(original, Store(tmp_path / "data/processed/back/50-none.h5"),
                        sequences=True)


def test_pyskl_round_trip(source, tmp_path):
    result = export.run(source, "pyskl", tmp_path / "out")
    path = Path(result["files"][0])
    assert path.name == "ntu60_50-none.pkl"
    content = pickle.load(open(path, "rb"))
    assert sorted(content["split"]) == ["xsub_train", "xsub_val", "xview_train", "xview_val"]
    first = content["annotations"][0]
    assert set(first) == {"frame_dir", "label", "keypoint", "total_frames"}  # no scores
    assert not Store(source).has_scores and "scores" not in Store(source).file
    assert "sequences/scores" not in Store(source).file
    assert info.describe(source)["scores"] == {}
    assert first["keypoint"].shape[1:] == (first["total_frames"], 25, 3)
    prepare.run("pyskl", path, tmp_path / "data", variants=("50-none",), name="back")
    assert_same_dataset(Store(source), Store(tmp_path / "data/processed/back/50-none.h5"),
                        sequences=True)


def test_pyskl_round_trip_of_2d_coco_keypoints(tmp_path):
    rng = np.random.default_rng(0)
    samples = [RawSample(name=f"clip{i}", label=i % 3, subject=1 + i % 2,
                         bodies=rng.uniform(0, 1000, size=(1 + i % 2, 12 + i, 17, 2))
                         .astype(np.float32)) for i in range(8)]
    write_samples(tmp_path / "raw", samples, {"split": ["train"] * 5 + ["val"] * 3})
    prepare.run("generic", tmp_path / "raw", tmp_path / "data", variants=("20-none",),
                name="mine", view_names=("joint",))
    original = Store(tmp_path / "data/processed/mine/20-none.h5")
    assert original.layout().name == "coco17-2d"
    export.run(original.path, "pyskl", tmp_path / "out")
    prepare.run("pyskl", tmp_path / "out/mine_20-none.pkl", tmp_path / "data",
                variants=("20-none",), name="back", view_names=("joint",))
    imported = Store(tmp_path / "data/processed/back/20-none.h5")
    assert imported.layout().name == "coco17-2d" and not imported.has_scores
    # pyskl's annotations carry a label and no subject: names other than NTU's leave it -1
    assert_same_dataset(original, imported, sequences=True, columns=("label",))


def test_loop_pad_repeats_from_the_start_and_cuts_long_sequences():
    data = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)  # two sequences: 3 and 7 frames
    padded = loop_pad(data, np.array([0, 3]), np.array([3, 7]), frames=5)
    assert padded.shape == (2, 1, 5, 1, 1)
    assert padded[:, 0, :, 0, 0].tolist() == [[0, 1, 2, 0, 1], [3, 4, 5, 6, 7]]


def test_export_refusals_and_no_partial_files(source, tmp_path, monkeypatch):
    parsed = source.parents[2] / "interim" / "ntu60" / "parsed.h5"
    with pytest.raises(StageError, match="a parsed store holds every raw track"):
        export.run(parsed, "isc", tmp_path / "out")
    cleaned = source.parents[2] / "interim" / "ntu60" / "clean.h5"
    with pytest.raises(StageError, match="no joint view: the crossclr layout holds fixed-length"):
        export.run(cleaned, "crossclr", tmp_path / "out")

    calls = []

    def fail_on_the_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk on fire")
        return loop_pad(*args)

    monkeypatch.setattr(export.isc, "loop_pad", fail_on_the_third)
    with pytest.raises(OSError, match="disk on fire"):
        export.run(source, "isc", tmp_path / "out")
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_cli_export_then_prepare(source, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(source), "--to", "isc", "--out",
                                  str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "117 samples written in the isc layout" in result.output
    assert "xsub: train 78, val 39" in result.output
    result = runner.invoke(main, ["prepare", "isc", "--raw", str(tmp_path / "out"), "--name",
                                  "ntu60-isc", "--variant", "50-none", "--data-dir",
                                  str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "ntu60-isc: 117 samples written" in result.output
    result = runner.invoke(main, ["prepare", "isc", "--raw", str(tmp_path / "out"),
                                  "--protocol", "xsub=subject:1", "--data-dir",
                                  str(tmp_path / "data")])
    assert result.exit_code == 1
    assert "isc: the protocols come from the files" in result.output
