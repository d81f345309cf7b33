"""scripts/convert_small_datasets.py: each converter on a tiny folder in its dataset's own raw
layout (known values in, hand-computed arrays, metadata and protocol columns out, one message per
kind of bad file), the SBU output imported by `skelctl prepare` with the docs' params entry, and,
where SKELCTL_SMALL_DATASETS names the fetched copies (<root>/sbu/raw, <root>/msrc12/raw), the
real datasets' counts."""

import csv
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from conftest import PROJECT
from skelctl.cli import main as skelctl
from skelctl.data.formats.base import DatasetError, SampleError

SCRIPT = PROJECT / "scripts" / "convert_small_datasets.py"
SMALL_DATASETS = os.environ.get("SKELCTL_SMALL_DATASETS")


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("convert_small_datasets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def table(out: Path) -> list[dict[str, str]]:
    with open(out / "samples.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- SBU Kinect Interaction ------------------------------------------------------------------

# a standing person facing the camera, in metres (OpenNI's 15 joints, layout openni15's order)
POSE = np.array([[0, 0.6, 3], [0, 0.4, 3], [0, 0.1, 3], [-0.2, 0.4, 3], [-0.35, 0.15, 3],
                 [-0.45, -0.1, 3], [0.2, 0.4, 3], [0.35, 0.15, 3], [0.45, -0.1, 3],
                 [-0.1, -0.1, 3], [-0.1, -0.55, 3], [-0.1, -1.0, 3], [0.1, -0.1, 3],
                 [0.1, -0.55, 3], [0.1, -1.0, 3]])
PERSON_B = np.array([1.0, 0.0, 0.5])  # where person B stands, from person A


def sbu_normalised(metres: np.ndarray) -> np.ndarray:
    """The inverse of the README's x = 1280 - 2560 x', y = 960 - 1920 y', z = z' 10000 / 7.8125
    (millimetres): the values skeleton_pos.txt holds."""
    mm = 1000 * np.asarray(metres)
    return np.stack([(1280 - mm[..., 0]) / 2560, (960 - mm[..., 1]) / 1920,
                     mm[..., 2] * 7.8125 / 10000], axis=-1)


def sbu_people(frames: int) -> np.ndarray:
    """(2, T, 15, 3) metres: A walks 5 cm a frame along x towards B, who stands still."""
    a = POSE + np.arange(frames)[:, None, None] * [0.05, 0, 0]
    return np.stack([a, np.broadcast_to(POSE + PERSON_B, a.shape)])


def write_sbu_take(root: Path, pair: str, interaction: int, take: int, frames: int = 3) -> Path:
    folder = root / pair / f"{interaction:02d}" / f"{take:03d}"
    folder.mkdir(parents=True)
    values = sbu_normalised(sbu_people(frames)).transpose(1, 0, 2, 3).reshape(frames, 90)
    rows = np.column_stack([np.arange(1, frames + 1), values])
    np.savetxt(folder / "skeleton_pos.txt", rows, fmt="%.9g", delimiter=",")
    return folder / "skeleton_pos.txt"


@pytest.fixture
def sbu_raw(tmp_path):
    raw = tmp_path / "Set01"
    write_sbu_take(raw, "s01s02", 1, 1)
    write_sbu_take(raw, "s01s02", 8, 2, frames=5)
    write_sbu_take(raw, "s01s03", 4, 1)  # fold 3
    write_sbu_take(raw, "s06s03", 6, 1)  # fold 5
    return raw


def test_sbu_readme_normalisation_by_hand(script):
    # (0.5, 0.5, 0.78125) is the origin's x and y and 1 m away; (0.25, 0.75, 1.5625) is
    # x = 1280 - 640 mm, y = 960 - 1440 mm, z = 2000 mm
    normalised = np.zeros((1, 90))
    normalised[0, :45] = np.tile([0.5, 0.5, 0.78125], 15)
    normalised[0, 45:] = np.tile([0.25, 0.75, 1.5625], 15)
    bodies = script.sbu_bodies(normalised)
    assert bodies.shape == (2, 1, 15, 3) and bodies.dtype == np.float32
    np.testing.assert_allclose(bodies[0], np.broadcast_to([0, 0, 1], (1, 15, 3)), atol=1e-6)
    np.testing.assert_allclose(bodies[1], np.broadcast_to([0.64, -0.48, 2], (1, 15, 3)),
                               atol=1e-6)


def test_sbu_writes_both_people_in_metres_with_the_folds(script, sbu_raw, tmp_path):
    out = tmp_path / "sbu"
    converted = script.convert("sbu", sbu_raw, out)
    assert converted.skipped == []
    rows = table(out)
    assert [(r["name"], r["label"], r["subject"], r["subject_b"], r["set"], r["fold"],
             r["replication"]) for r in rows] == [
        ("s01s02_01_001", "0", "1", "2", "s01s02", "1", "1"),
        ("s01s02_08_002", "7", "1", "2", "s01s02", "1", "2"),
        ("s01s03_04_001", "3", "1", "3", "s01s03", "3", "1"),
        ("s06s03_06_001", "5", "6", "3", "s06s03", "5", "1")]
    bodies = np.load(out / "s01s02_08_002.npy")
    assert bodies.shape == (2, 5, 15, 3) and bodies.dtype == np.float32
    np.testing.assert_allclose(bodies, sbu_people(5), atol=1e-5)


def test_sbu_output_prepares_with_the_docs_params_entry(script, sbu_raw, tmp_path):
    out = tmp_path / "sbu"
    script.convert("sbu", sbu_raw, out)
    folds = {f"fold{k}": {"train": {"fold": [f for f in range(1, 6) if f != k]}}
             for k in range(1, 6)}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"datasets": {"sbu": {
        "format": "generic", "layout": "openni15", "protocols": folds}}}))
    result = CliRunner().invoke(skelctl, [
        "prepare", "sbu", "--raw", str(out), "--params", str(params), "--data-dir",
        str(tmp_path / "data"), "--denoise", "false", "--variant", "20-shoulder",
        "--views", "joint"])
    assert result.exit_code == 0, result.output
    assert "sbu: 4 samples written to" in result.output
    assert "layout openni15 (15 joints, 3D), 8 classes" in result.output
    for fold, (train, val) in {"fold1": (2, 2), "fold2": (4, 0), "fold3": (3, 1),
                               "fold5": (3, 1)}.items():
        assert f"{fold}: train {train}, val {val}" in result.output


def test_sbu_names_each_bad_file_and_its_problem(script, sbu_raw, tmp_path):
    short = write_sbu_take(sbu_raw, "s02s01", 2, 1)
    short.write_text("1," + ",".join(["0.5"] * 89) + "\n")
    words = write_sbu_take(sbu_raw, "s02s06", 3, 1)
    words.write_text("1,head," + ",".join(["0.5"] * 89) + "\n")
    empty = write_sbu_take(sbu_raw, "s03s02", 5, 1)
    empty.write_text("")
    misplaced = sbu_raw / "s01s02" / "extra" / "skeleton_pos.txt"
    misplaced.parent.mkdir()
    misplaced.write_text("")
    unknown = write_sbu_take(sbu_raw, "s09s01", 1, 1)
    converted = script.convert("sbu", sbu_raw, tmp_path / "sbu")
    assert len(converted.samples) == 4
    problems = dict(converted.skipped)
    assert problems[str(short)] == ("90 values per line, expected 91: a frame number, then 2 "
                                    "people x 15 joints x (x, y, z)")
    assert problems[str(words)].startswith("not a table of numbers (")
    assert problems[str(empty)] == "no frames (the file is empty)"
    assert problems[str(misplaced)] == ("not at <set>/<interaction 01-08>/<take>/"
                                        "skeleton_pos.txt (e.g. s01s02/01/001/skeleton_pos.txt)")
    assert problems[str(unknown)].startswith("set s09s01 is none of SBU's 21 sets (s01s02, ")
    with pytest.raises(SampleError, match="extra/skeleton_pos.txt: not at <set>/"):
        script.convert("sbu", sbu_raw, tmp_path / "again", on_error="fail")
    assert not (tmp_path / "again" / "samples.csv").exists()


def test_folders_that_cannot_be_used_are_refused(script, sbu_raw, tmp_path):
    with pytest.raises(DatasetError, match="absent: the fetched copy is not a folder"):
        script.convert("sbu", tmp_path / "absent", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no skeleton_pos.txt files; SBU Kinect Interaction's "
                                           "layout is <set>/<interaction>/<take>/"):
        script.convert("sbu", tmp_path / "empty", tmp_path / "out")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.npy").write_bytes(b"")
    with pytest.raises(DatasetError, match="used: the output folder is not empty"):
        script.convert("sbu", sbu_raw, tmp_path / "used")


def test_command_line_reports_counts_and_errors(script, sbu_raw, tmp_path, capsys):
    assert script.main(["sbu", str(sbu_raw), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith(
        f"sbu: 4 samples of 4 classes written to {tmp_path / 'out' / 'samples.csv'}; "
        f"0 files skipped")
    assert script.main(["sbu", str(sbu_raw), str(tmp_path / "out")]) == 1
    assert "the output folder is not empty" in capsys.readouterr().err


# --- MSRC-12 ---------------------------------------------------------------------------------

FRAME_USEC = 33333  # 30 Hz timestamps, in microseconds
# the tag names of the dataset's tagstream files (G1-G12)
MSRC12_TAG_NAMES = ("lift outstretched arms", "Duck", "Push right", "Goggles", "Wind it up",
                    "Shoot", "Bow", "Throw", "Had enough", "Change weapon", "Beat both", "Kick")


def write_msrc12_sequence(root: Path, stem: str, frames: int, action_frames: list[int],
                          gesture: int, tag_stem: str | None = None) -> Path:
    """A P<a>_<b>_<g>_p<person>.csv whose joint j in frame t is (t, j, 2) with w = 1, and its
    .tagstream with one action point at the timestamp of each of ``action_frames``."""
    root.mkdir(parents=True, exist_ok=True)
    t, j = np.meshgrid(np.arange(frames), np.arange(20), indexing="ij")
    joints = np.stack([t, j, np.full_like(t, 2), np.ones_like(t)], axis=-1).reshape(frames, 80)
    timestamps = 5_000_000 + FRAME_USEC * np.arange(frames)
    np.savetxt(root / f"{stem}.csv", np.column_stack([timestamps, joints]), fmt="%d")
    # ticks of 1/49875 ms, as the dataset's tagstreams count
    ticks = [int((5_000_000 + FRAME_USEC * f) * 49875 / 1000) for f in action_frames]
    name = f"G{gesture:<2d} {MSRC12_TAG_NAMES[gesture - 1]}"
    (root / f"{tag_stem or stem}.tagstream").write_text(
        "XQPCTick;Tag\r\n" + "".join(f"{tick};{name}\r\n" for tick in ticks))
    return root / f"{stem}.csv"


def test_msrc12_cuts_each_sequence_at_the_midpoints_between_action_points(script, tmp_path):
    raw = tmp_path / "MicrosoftGestureDataset-RC" / "data"
    write_msrc12_sequence(raw, "P1_2_3_p07", 40, [30, 10], gesture=3)
    write_msrc12_sequence(raw, "P3_1_12A_p12", 9, [2, 3, 7], gesture=12,
                          tag_stem="p3_1_12A_p12")  # the tagstream's name in another case
    out = tmp_path / "msrc12"
    converted = script.convert("msrc12", raw.parent, out)
    assert converted.skipped == []
    rows = table(out)
    assert [(r["name"], r["label"], r["subject"], r["replication"], r["sequence"],
             r["instruction"]) for r in rows] == [
        ("P1_2_3_p07_01", "2", "7", "1", "P1_2_3_p07", "1_2"),
        ("P1_2_3_p07_02", "2", "7", "2", "P1_2_3_p07", "1_2"),
        ("P3_1_12A_p12_01", "11", "12", "1", "P3_1_12A_p12", "3_1"),
        ("P3_1_12A_p12_02", "11", "12", "2", "P3_1_12A_p12", "3_1"),
        ("P3_1_12A_p12_03", "11", "12", "3", "P3_1_12A_p12", "3_1")]
    # action points at frames 10 and 30: frames 0-19 and 20-39; at 2, 3 and 7: 0-2, 3-4, 5-8
    for name, first, last in [("P1_2_3_p07_01", 0, 19), ("P1_2_3_p07_02", 20, 39),
                              ("P3_1_12A_p12_01", 0, 2), ("P3_1_12A_p12_02", 3, 4),
                              ("P3_1_12A_p12_03", 5, 8)]:
        joints = np.load(out / f"{name}.npy")
        t, j = np.meshgrid(np.arange(first, last + 1), np.arange(20), indexing="ij")
        np.testing.assert_array_equal(joints, np.stack([t, j, np.full_like(t, 2)], axis=-1))


def test_msrc12_names_each_bad_file_and_its_problem(script, tmp_path):
    raw = tmp_path / "data"
    write_msrc12_sequence(raw, "P1_1_1_p01", 12, [3, 9], gesture=1)
    lonely_tags = write_msrc12_sequence(raw, "P1_1_2_p01", 12, [3], gesture=2)
    lonely_tags.unlink()
    no_tags = write_msrc12_sequence(raw, "P1_1_4_p01", 12, [3], gesture=4)
    no_tags.with_suffix(".tagstream").unlink()
    other = write_msrc12_sequence(raw, "P1_1_5_p01", 12, [3], gesture=6)
    renamed = write_msrc12_sequence(raw, "P1_1_6_p01", 12, [3], gesture=6)
    renamed.rename(raw / "walk_p01.csv")
    narrow = write_msrc12_sequence(raw, "P1_1_7_p01", 12, [3], gesture=7)
    narrow.write_text("5000000 " + " ".join(["0"] * 60) + "\n")
    untagged = write_msrc12_sequence(raw, "P1_1_8_p01", 12, [], gesture=8)
    header = write_msrc12_sequence(raw, "P1_1_9_p01", 12, [3], gesture=9)
    header.with_suffix(".tagstream").write_text("Tick;Tag\n1;G9 Had enough\n")
    garbled = write_msrc12_sequence(raw, "P1_1_11_p01", 12, [3], gesture=11)
    garbled.with_suffix(".tagstream").write_text("XQPCTick;Tag\nsoon;G11 Beat both\n")
    converted = script.convert("msrc12", raw, tmp_path / "msrc12")
    assert [s.name for s in converted.samples] == ["P1_1_1_p01_01", "P1_1_1_p01_02"]
    problems = dict(converted.skipped)
    assert problems == {
        str(raw / "P1_1_2_p01.tagstream"): "no skeleton file P1_1_2_p01.csv beside it",
        str(no_tags): "no P1_1_4_p01.tagstream beside it: the action points, which cut the "
                      "sequence into performances, are unknown",
        str(other.with_suffix(".tagstream")): "line 2: gesture G6, but the file name says G5",
        str(raw / "walk_p01.csv"): "not named P<a>_<b>_<gesture>[A]_p<person>.csv (e.g. "
                                   "P1_1_10A_p06.csv)",
        str(renamed.with_suffix(".tagstream")): "no skeleton file P1_1_6_p01.csv beside it",
        str(narrow): "61 values per line, expected 81: a timestamp, then 20 joints x "
                     "(x, y, z, w)",
        str(untagged.with_suffix(".tagstream")): "no action points",
        str(header.with_suffix(".tagstream")): "not a tagstream file: its first line is not "
                                               "'XQPCTick;Tag'",
        str(garbled.with_suffix(".tagstream")): "line 2: 'soon;G11 Beat both' is not "
                                                "'<tick>;G<gesture> <name>'"}
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetError, match="no .csv or .tagstream files; MSRC-12 names each "
                                           "sequence P<a>_<b>_<gesture>"):
        script.convert("msrc12", tmp_path / "nothing", tmp_path / "out")


# --- the real fetched copies -----------------------------------------------------------------

def fetched(dataset: str) -> Path:
    if not SMALL_DATASETS:
        pytest.skip("SKELCTL_SMALL_DATASETS (a folder holding <dataset>/raw) is not set")
    raw = Path(SMALL_DATASETS) / dataset / "raw"
    if not raw.is_dir():
        pytest.skip(f"the fetched copy {raw} is absent")
    return raw


def test_real_sbu_has_282_takes_in_21_sets(script, tmp_path):
    converted = script.convert("sbu", fetched("sbu"), tmp_path / "sbu")
    assert len(converted.samples) == 282 and converted.skipped == []
    assert len(set(converted.columns["set"])) == 21
    assert sorted({s.label for s in converted.samples}) == list(range(8))
    folds = np.bincount(converted.columns["fold"], minlength=6)[1:]
    assert folds.tolist() == [55, 52, 56, 54, 65]


@pytest.mark.slow
def test_real_msrc12_has_a_sample_per_action_point(script, tmp_path):
    converted = script.convert("msrc12", fetched("msrc12"), tmp_path / "msrc12")
    sequences = set(converted.columns["sequence"])
    assert len({s.subject for s in converted.samples}) == 30
    assert sorted({s.label for s in converted.samples}) == list(range(12))
    # the published 594 sequences, less those the copy lacks (each skipped file is named)
    assert len(sequences) + sum(p.endswith(".tagstream") for p, _ in converted.skipped) == 594
    assert len(converted.samples) > 10 * len(sequences)
