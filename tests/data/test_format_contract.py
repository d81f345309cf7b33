"""Contract over the dataset-format registry: every registered format, and the generic one,
parses a small synthetic raw folder in its real raw format to the documented samples (``bodies``
``(K, T, V, C)`` float32 in the format's layout, labels from 0, the metadata the file names hold)
and to split membership for exactly its protocols. A newly registered format fails here until it
gets a synthetic raw folder below (docs/add-a-dataset-format.md)."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from skelctl.data.formats import DATASETS, FORMATS, get_format
from skelctl.data.formats.base import META_INT_FIELDS, TRAIN, UNUSED, VAL, RawSample, read_items
from skelctl.data.formats.generic import write_samples
from skelctl.data.synth import write_ntu, write_pku
from skelctl.skeletons import KINECT20


def write_ucla(out: Path) -> None:
    """NW-UCLA's JSON form: actions 1 and 4, subjects 1 and 2, one take, views 1 to 3."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for action in (1, 4):
        for subject in (1, 2):
            for view in (1, 2, 3):
                frames = rng.normal(size=(10 + view, KINECT20.num_joints, 3)).round(4)
                name = f"a{action:02d}_s{subject:02d}_e01_v{view:02d}"
                (out / f"{name}.json").write_text(json.dumps(
                    {"file_name": name, "skeletons": frames.tolist(), "label": action}))


def write_generic(out: Path) -> None:
    """Six clips of 13 joints (no built-in layout has 13: a graph-less one), one with two
    bodies, and a split column: 3 train, 2 val (``test`` counts as val), 1 unused."""
    rng = np.random.default_rng(0)
    samples = [RawSample(name=f"clip{i}", label=i % 3, subject=1 + i % 2,
                         bodies=rng.normal(size=(1 + (i == 5), 8 + i, 13, 3)).astype(np.float32))
               for i in range(6)]
    write_samples(out, samples, {"split": ["train", "train", "val", "test", "train", ""]})


# the reference repositories' arrays: 3 performers x 3 cameras x 2 actions, NTU's names; in each
# benchmark folder performer 3 (xsub) and camera 1 (xview) test
ARRAY_NAMES = [f"S001C{c:03d}P{p:03d}R001A{a:03d}" for p in (1, 2, 3) for c in (1, 2, 3)
               for a in (1, 2)]
ARRAY_BENCHMARKS = {"xsub": lambda name: "P003" not in name,
                    "xview": lambda name: "C001" not in name}


def write_benchmark_arrays(out: Path, array: str, frames: int, counts: bool) -> None:
    """The CrosSCLR line's (``<part>_position.npy``) or the ISC line's (``<part>_data_joint.npy``
    loop-padded, with ``<part>_num_frame.npy``) benchmark folders, as their scripts write them."""
    rng = np.random.default_rng(0)
    lengths = {name: 10 + i for i, name in enumerate(ARRAY_NAMES)}
    data = {}
    for i, name in enumerate(ARRAY_NAMES):
        x = rng.normal(size=(3, lengths[name] if counts else frames, 25, 2)).astype(np.float32)
        x[..., 1] *= i % 2  # the second body in every other recording
        data[name] = np.resize(x.transpose(1, 0, 2, 3), (frames, 3, 25, 2)).transpose(1, 0, 2, 3)
    for benchmark, trains in ARRAY_BENCHMARKS.items():
        (out / benchmark).mkdir(parents=True)
        for part in ("train", "val"):
            names = [n for n in ARRAY_NAMES if trains(n) == (part == "train")]
            np.save(out / benchmark / f"{part}_{array}.npy", np.stack([data[n] for n in names]))
            with open(out / benchmark / f"{part}_label.pkl", "wb") as f:
                pickle.dump(([f"{n}.skeleton" for n in names], [int(n[-3:]) - 1 for n in names]),
                            f)
            if counts:
                np.save(out / benchmark / f"{part}_num_frame.npy",
                        np.array([lengths[n] for n in names]))


def write_pyskl(out: Path) -> None:
    """A pyskl annotation pickle of the same recordings, 3D, with both benchmarks' splits."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    annotations = [{"frame_dir": name, "label": int(name[-3:]) - 1, "total_frames": 10 + i,
                    "keypoint": rng.normal(size=(1 + i % 2, 10 + i, 25, 3)).astype(np.float16)}
                   for i, name in enumerate(ARRAY_NAMES)]
    split = {f"{benchmark}_{part}": [n for n in ARRAY_NAMES if trains(n) == (part == "train")]
             for benchmark, trains in ARRAY_BENCHMARKS.items() for part in ("train", "val")}
    with open(out / "ntu60_3danno.pkl", "wb") as f:
        pickle.dump({"split": split, "annotations": annotations}, f, protocol=2)


def write_ctrgcn(out: Path) -> None:
    """CTR-GCN's NTU60_CS.npz and NTU60_CV.npz of the same recordings, zero-padded to 300 frames
    (np.savez: x (N, 300, 150), one-hot y); the files name no samples, so each row is one."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = np.zeros((len(ARRAY_NAMES), 300, 150), dtype=np.float32)
    for i in range(len(ARRAY_NAMES)):
        x[i, :10 + i, :75 * (1 + i % 2)] = rng.normal(size=(10 + i, 75 * (1 + i % 2)))
    y = np.eye(60)[[int(n[-3:]) - 1 for n in ARRAY_NAMES]]
    for file, (benchmark, trains) in zip(("NTU60_CS", "NTU60_CV"), ARRAY_BENCHMARKS.items()):
        train = np.array([trains(n) for n in ARRAY_NAMES])
        np.savez(out / f"{file}.npz", x_train=x[train], y_train=y[train], x_test=x[~train],
                 y_test=y[~train])


@dataclass(frozen=True)
class Raw:
    """A synthetic raw folder and what parsing it must give."""

    write: Callable[[Path], object]
    samples: int
    excluded: int  # samples the format's own lists leave out
    subjects: set[int]
    views: set[int]
    splits: dict[str, tuple[int, int]]  # protocol: (train, val)


RAW = {  # 3 subjects x 3 cameras; subject 3 is a test subject of NTU and of PKU-MMD
    "ntu60": Raw(lambda out: write_ntu("ntu60", out, subjects=3, replications=1, missing=2,
                                       frames=(20, 30)),
                 117, 2, {1, 2, 3}, {1, 2, 3}, {"xsub": (78, 39), "xview": (78, 39)}),
    "ntu120": Raw(lambda out: write_ntu("ntu120", out, subjects=3, replications=1, missing=2,
                                        frames=(20, 30)),
                  117, 2, {1, 2, 3}, {1, 2, 3}, {"xsub": (78, 39), "xset": (78, 39)}),
    # the same folder as NTU-120; the 61-120 release keeps 7 of its 13 actions
    "ntu61-120": Raw(lambda out: write_ntu("ntu120", out, subjects=3, replications=1,
                                           missing=2, frames=(20, 30)),
                     63, 56, {1, 2, 3}, {1, 2, 3}, {"xsub": (42, 21), "xset": (42, 21)}),
    # Part I's file names carry no subject (-1); the split files name the videos
    "pku1": Raw(lambda out: write_pku(1, out, subjects=3, clips_per_video=2),
                18, 0, {-1}, {1, 2, 3}, {"xsub": (6, 12), "xview": (12, 6)}),
    "pku2": Raw(lambda out: write_pku(2, out, subjects=3, clips_per_video=2),
                18, 0, {1, 2, 3}, {1, 2, 3}, {"xsub": (6, 12), "xview": (12, 6)}),
    "nw-ucla": Raw(write_ucla, 12, 0, {1, 2}, {1, 2, 3}, {"xview": (8, 4)}),
    "generic": Raw(write_generic, 6, 0, {1, 2}, {-1}, {"default": (3, 2)}),
    "crossclr": Raw(lambda out: write_benchmark_arrays(out, "position", 50, counts=False),
                    18, 0, {1, 2, 3}, {1, 2, 3}, {"xsub": (12, 6), "xview": (12, 6)}),
    "isc": Raw(lambda out: write_benchmark_arrays(out, "data_joint", 300, counts=True),
               18, 0, {1, 2, 3}, {1, 2, 3}, {"xsub": (12, 6), "xview": (12, 6)}),
    "pyskl": Raw(write_pyskl, 18, 0, {1, 2, 3}, {1, 2, 3}, {"xsub": (12, 6), "xview": (12, 6)}),
    "ctrgcn": Raw(write_ctrgcn, 36, 0, {-1}, {-1}, {"xsub": (12, 6), "xview": (12, 6)}),
}


def test_every_registered_format_has_a_synthetic_raw_folder_here():
    assert set(RAW) == set(DATASETS) == {*FORMATS, "generic"}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> Callable[[str], tuple]:
    """A format's synthetic raw folder, written once and parsed: (format, raw folder,
    inventory, samples as the parse stage's columns)."""
    done: dict[str, tuple] = {}

    def parse(name: str) -> tuple:
        if name not in done:
            raw = tmp_path_factory.mktemp("raw") / name
            RAW[name].write(raw)
            fmt = get_format(name)
            inventory = fmt.inventory(raw)
            samples = [sample for item in inventory.items for sample in fmt.read(item)]
            columns, rejected = read_items(fmt, inventory.items)
            assert rejected == []
            done[name] = fmt, raw, inventory, samples, columns["meta"]
        return done[name]

    return parse


@pytest.mark.parametrize("name", DATASETS)
def test_format_reads_samples_of_its_layout(name, parsed):
    fmt, raw, inventory, samples, _ = parsed(name)
    expected = RAW[name]
    assert inventory.rejected == []
    assert sum(inventory.excluded.values()) == expected.excluded
    assert len(samples) == expected.samples
    assert len({s.name for s in samples}) == len(samples)
    assert fmt.num_classes > 0
    for sample in samples:
        bodies = sample.bodies
        assert bodies.dtype == np.float32 and bodies.ndim == 4, sample.name
        assert bodies.shape[2:] == (fmt.layout.num_joints, fmt.layout.dims), sample.name
        assert bodies.shape[0] >= 1 and bodies.shape[1] >= 1, sample.name
        assert np.isfinite(bodies).all() and np.abs(bodies).sum() > 0, sample.name
        assert 0 <= sample.label < fmt.num_classes, sample.name
        assert Path(sample.source).is_relative_to(raw)
        meta = sample.meta()
        assert list(meta) == ["name", "source", *META_INT_FIELDS]
        assert all(isinstance(meta[f], (int, np.integer)) for f in META_INT_FIELDS), meta
    assert {s.subject for s in samples} == expected.subjects
    assert {s.view for s in samples} == expected.views


@pytest.mark.parametrize("name", DATASETS)
def test_format_assigns_every_sample_to_its_protocols(name, parsed):
    fmt, raw, _, _, meta = parsed(name)
    splits = fmt.splits(meta, raw)
    assert list(splits) == list(fmt.protocols)
    sizes = {}
    for protocol, codes in splits.items():
        assert codes.dtype == np.int8 and codes.shape == (RAW[name].samples,), protocol
        assert set(np.unique(codes)) <= {TRAIN, VAL, UNUSED}, protocol
        sizes[protocol] = (int((codes == TRAIN).sum()), int((codes == VAL).sum()))
    assert sizes == RAW[name].splits


def test_nw_ucla_and_generic_keep_the_coordinates_as_written(parsed):
    """The two formats whose files are plain numbers give them back exactly."""
    _, _, _, samples, _ = parsed("nw-ucla")
    for sample in samples:
        record = json.loads(Path(sample.source).read_text())
        np.testing.assert_array_equal(sample.bodies[0], np.float32(record["skeletons"]))
        assert sample.label == record["label"] - 1
    _, _, _, samples, _ = parsed("generic")
    for sample in samples:
        written = np.load(sample.source)  # (T, V, C) for one body, (M, T, V, C) for more
        expected = written if written.ndim == 4 else written[None]
        np.testing.assert_array_equal(sample.bodies, expected)
