"""CTR-GCN's and MAMP's ``.npz`` arrays as a dataset format (ctrgcn), and ``skelctl export --to
ctrgcn`` back to them.

The synthetic files are written here the way the authors' scripts write them (``np.savez`` of
``x_train`` (N, 300, 150) float32 and one-hot float64 ``y_train``, the same for test), with known
contents, independently of the toolkit's own writer."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from skelctl.cli import main
from skelctl.data.formats import get_format
from skelctl.data.formats.base import TRAIN, UNUSED, VAL, DatasetError, RawSample, read_items
from skelctl.data.formats.ctrgcn import file_name, protocol_of, zero_pad
from skelctl.data.formats.generic import ImportOptions, write_samples
from skelctl.data.store import Store
from skelctl.data.synth import write_ntu
from skelctl.stages import export, prepare
from skelctl.stages.common import StageError

LENGTHS = (12, 20, 7, 300, 15)  # frames of the five recordings; the fourth fills the array


def recordings(seed: int = 0) -> np.ndarray:
    """Five rows as seq_transformation.py writes them (5, 300, 150): body 1's 25 x (x, y, z),
    then body 2's, zero after the last frame; a second body in rows 1 and 3 only, and in row 1
    untracked in frames 2-4; row 2 has an all-zero frame 3 in the middle."""
    rng = np.random.default_rng(seed)
    x = np.zeros((5, 300, 150), dtype=np.float32)
    for i, length in enumerate(LENGTHS):
        x[i, :length, :75] = rng.normal(size=(length, 75))
        if i in (1, 3):
            x[i, :length, 75:] = rng.normal(size=(length, 75))
    x[1, 2:5, 75:] = 0
    x[2, 3] = 0
    return x


def one_hot(labels: list[int], classes: int = 60) -> np.ndarray:
    y = np.zeros((len(labels), classes))  # float64, as one_hot_vector makes it
    y[np.arange(len(labels)), labels] = 1
    return y


def write(path: Path, x: np.ndarray, labels: list[int], train: int, classes: int = 60,
          **overrides) -> Path:
    """``np.savez(path, x_train, y_train, x_test, y_test)``, the first ``train`` rows training."""
    y = one_hot(labels, classes)
    arrays = {"x_train": x[:train], "y_train": y[:train], "x_test": x[train:],
              "y_test": y[train:], **overrides}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def read_all(fmt, raw: Path) -> dict:
    inventory = fmt.inventory(raw)
    assert inventory.rejected == []
    return {s.name: s for item in inventory.items for s in fmt.read(item)}


def expected_bodies(row: np.ndarray, length: int) -> np.ndarray:
    """A row's bodies (M, T, V, C) as imported: up to its last frame, absent bodies left out."""
    bodies = row[:length].reshape(length, 2, 25, 3).transpose(1, 0, 2, 3)
    return bodies[bodies.any(axis=(1, 2, 3))]


def test_each_row_is_a_sample_of_its_file_protocol(tmp_path):
    x = recordings()
    write(tmp_path / "NTU60_CS.npz", x, [0, 1, 2, 3, 59], train=3)
    write(tmp_path / "NTU60_CV.npz", x[::-1], [59, 3, 2, 1, 0], train=2)
    fmt = get_format("ctrgcn")
    samples = read_all(fmt, tmp_path)
    assert (fmt.layout.name, fmt.num_classes, fmt.max_bodies) == ("ntu25", 60, 2)
    assert fmt.protocols == ("xsub", "xview")
    assert sorted(samples) == sorted(["xsub-train-0", "xsub-train-1", "xsub-train-2",
                                      "xsub-test-0", "xsub-test-1", "xview-train-0",
                                      "xview-train-1", "xview-test-0", "xview-test-1",
                                      "xview-test-2"])
    for name, row in (("xsub-train-0", 0), ("xsub-train-1", 1), ("xsub-train-2", 2),
                      ("xsub-test-0", 3), ("xsub-test-1", 4), ("xview-test-0", 2)):
        sample = samples[name]
        np.testing.assert_array_equal(sample.bodies, expected_bodies(x[row], LENGTHS[row]))
        assert sample.bodies.dtype == np.float32
        assert (sample.subject, sample.view, sample.setup, sample.replication) == (-1,) * 4
    # by hand: the second body's joint 4 in frame 0 of row 1 is columns 75 + 12 .. 75 + 14
    np.testing.assert_array_equal(samples["xsub-train-1"].bodies[1, 0, 4], x[1, 0, 87:90])
    assert samples["xsub-train-1"].bodies.shape == (2, 20, 25, 3)  # untracked frames 2-4 kept
    assert samples["xsub-train-2"].bodies.shape == (1, 7, 25, 3)  # the zero frame 3 kept
    assert samples["xsub-test-0"].bodies.shape == (2, 300, 25, 3)
    assert [samples[n].label for n in ("xsub-train-0", "xsub-test-1", "xview-train-0")] == \
        [0, 59, 59]
    assert samples["xsub-test-1"].source == f"{tmp_path}/NTU60_CS.npz[x_test][1]"
    names = sorted(samples)
    codes = fmt.splits({"name": np.array(names, dtype=object)}, tmp_path)
    assert {p: dict(zip(names, c.tolist())) for p, c in codes.items()} == {
        protocol: {n: (UNUSED if not n.startswith(protocol) else
                       TRAIN if "-train-" in n else VAL) for n in names}
        for protocol in ("xsub", "xview")}


@pytest.mark.parametrize("name, protocol", [
    ("NTU60_CS", "xsub"), ("NTU60_CV", "xview"), ("NTU120_CSub", "xsub"), ("NTU120_CSet", "xset"),
    ("NTU60_XSub", "xsub"), ("NTU60_XView", "xview"), ("NTU120_XSub", "xsub"),
    ("NTU120_XSet", "xset"), ("PKUv1_XSub", "xsub"), ("PKUv2_XView", "xview"),
    ("mine", "mine"), ("my_split", "my_split"), ("CS", "CS"),
])
def test_the_file_name_gives_the_protocol(name, protocol):
    assert protocol_of(Path(f"data/{name}.npz")) == protocol


def test_export_file_names_are_ctrgcn_s_and_mamp_s_and_read_back():
    assert [file_name("ntu60", p) for p in ("xsub", "xview")] == ["NTU60_CS.npz", "NTU60_CV.npz"]
    assert [file_name("ntu120", p) for p in ("xsub", "xset")] == \
        ["NTU120_CSub.npz", "NTU120_CSet.npz"]
    assert [file_name("pku2", p) for p in ("xsub", "xview")] == \
        ["PKUv2_XSub.npz", "PKUv2_XView.npz"]
    assert file_name("nw-ucla", "xview") == "xview.npz"
    with pytest.raises(ValueError, match=r"protocol 'a_CS': its file a_CS.npz would be read back "
                                         r"as the protocol 'xsub'; rename the protocol"):
        file_name("mine", "a_CS")


def test_one_file_mamp_s_name_and_a_layout_given(tmp_path):
    x = recordings()
    path = write(tmp_path / "NTU120_XSet.npz", x, [5, 6, 7, 8, 119], train=4, classes=120)
    fmt = get_format("ctrgcn")
    samples = read_all(fmt, path)
    assert (fmt.protocols, fmt.num_classes, len(samples)) == (("xset",), 120, 5)
    # 150 columns of one body of 50 joints, if a layout says so
    fmt = get_format("ctrgcn", ImportOptions(layout="joints50"))
    samples = read_all(fmt, path)
    assert fmt.max_bodies == 1
    np.testing.assert_array_equal(samples["xset-train-0"].bodies[0],
                                  x[0, :12].reshape(12, 50, 3))


def test_float64_arrays_and_integer_one_hot_labels(tmp_path):
    x = recordings()
    path = write(tmp_path / "mine.npz", x.astype(np.float64), [1, 2, 3, 4, 5], train=2,
                 y_train=one_hot([1, 2], 6).astype(np.int64), y_test=one_hot([3, 4, 5], 6))
    fmt = get_format("ctrgcn")
    samples = read_all(fmt, path)
    assert (fmt.protocols, fmt.num_classes) == (("mine",), 6)
    np.testing.assert_array_equal(samples["mine-test-0"].bodies, expected_bodies(x[2], 7))


def test_all_zero_and_non_finite_rows_are_rejected_one_by_one(tmp_path):
    x = recordings()
    x[0] = 0
    x[2, 1, 4] = np.nan
    path = write(tmp_path / "NTU60_CS.npz", x, [0, 1, 2, 3, 4], train=3)
    fmt = get_format("ctrgcn")
    columns, rejected = read_items(fmt, fmt.inventory(path).items)
    assert columns["meta"]["name"].tolist() == ["xsub-train-1", "xsub-test-0", "xsub-test-1"]
    assert rejected == [
        (f"{path} x_train row 0", "every frame is zero: the row holds no recording"),
        (f"{path} x_train row 2", "1 NaN or infinite coordinate value(s), the first at body 0, "
                                  "frame 1, joint 1, coordinate 1 (counted from 0)")]


# --- malformed files: one named error each ------------------------------------------------------

def fails(raw: Path, message: str, layout: str = "auto") -> None:
    with pytest.raises(DatasetError) as err:
        get_format("ctrgcn", ImportOptions(layout=layout)).inventory(raw)
    assert str(err.value) == message


def test_a_missing_key(tmp_path):
    path = write(tmp_path / "NTU60_CS.npz", recordings(), [0] * 5, train=3, y_test=None)
    fails(path, f"{path}: lacks y_test (a CTR-GCN/MAMP array file holds x_train, y_train, x_test "
                f"and y_test)")


def test_a_wrong_shape(tmp_path):
    x = recordings()
    path = write(tmp_path / "NTU60_CS.npz", x, [0] * 5, train=3,
                 x_test=x[3:, :, :75].reshape(-1, 75))
    fails(path, f"{path}: x_test has shape (600, 75) and dtype float32, expected (N, frames, "
                f"bodies x joints x coordinates) of numbers, as (N, 300, 150) in CTR-GCN's files")
    path = write(tmp_path / "NTU60_CS.npz", x[:, :, :140], [0] * 5, train=3)
    fails(path, f"{path}: x_train has 140 columns per frame, not a whole number of bodies of the "
                f"layout 'ntu25' (25 joints x 3 coordinates = 75); choose the layout with --layout")
    fails(path, f"{path}: x_train has 140 columns per frame, not a whole number of bodies of the "
                f"layout 'kinect20' (20 joints x 3 coordinates = 60); choose the layout with "
                f"--layout", layout="kinect20")


@pytest.mark.parametrize("y_train, problem", [
    (np.eye(60)[[0, 1, 2]] + np.eye(60)[[59, 2, 59]] * [[1], [1], [0]],
     "y_train is not one-hot (one 1 per row, the rest 0): row 0 holds 2 ones (2 such rows)"),
    (np.full((3, 60), 0.5), "y_train is not one-hot (one 1 per row, the rest 0): row 0 holds 0 "
                            "ones and 60 values other than 0 and 1 (3 such rows)"),
    (np.array([3, 4, 5]), "y_train has shape (3,) and dtype int64, expected one-hot labels "
                          "(N, classes) of numbers"),
    (np.eye(60)[[0, 1]], "x_train holds 3 samples but y_train 2 labels"),
])
def test_labels_that_are_not_one_hot_or_do_not_match_the_rows(tmp_path, y_train, problem):
    path = write(tmp_path / "NTU60_CS.npz", recordings(), [0] * 5, train=3, y_train=y_train)
    fails(path, f"{path}: {problem}")


def test_a_compressed_file_and_one_that_is_no_npz(tmp_path):
    x = recordings()
    path = tmp_path / "NTU60_CS.npz"
    y = one_hot([0] * 5)
    np.savez_compressed(path, x_train=x, y_train=y, x_test=x, y_test=y)
    fails(path, f"{path}: x_train is compressed (np.savez_compressed), and a compressed array "
                f"cannot be read one sample at a time; save the file with np.savez, as the "
                f"CTR-GCN and MAMP scripts do")
    path.write_bytes(b"not a zip")
    fails(path, f"{path}: not a readable .npz file (File is not a zip file)")


def test_a_truncated_file(tmp_path):
    path = write(tmp_path / "NTU60_CS.npz", recordings(), [0] * 5, train=3)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("x_train.npy")
    raw = bytearray(path.read_bytes())
    # the header declares 3 rows; make it declare 30 by editing the shape in place
    at = raw.index(b"(3, 300, 150)", info.header_offset)
    raw[at:at + 13] = b"(30,300, 150)"
    path.write_bytes(bytes(raw))
    message = (f"{path}: x_train is truncated: its header declares shape (30, 300, 150) of "
               f"float32 (5400000 bytes), the file holds 540000 bytes of it")
    fails(path, message)


def test_two_files_of_one_protocol_and_files_of_different_classes(tmp_path):
    x = recordings()
    write(tmp_path / "NTU60_CS.npz", x, [0] * 5, train=3)
    write(tmp_path / "NTU60_XSub.npz", x, [0] * 5, train=3)
    fails(tmp_path, f"{tmp_path}/NTU60_XSub.npz: gives the protocol 'xsub', as "
                    f"{tmp_path}/NTU60_CS.npz does; import one file per protocol")
    (tmp_path / "NTU60_XSub.npz").unlink()
    write(tmp_path / "NTU120_CSet.npz", x, [0] * 5, train=3, classes=120)
    fails(tmp_path, f"{tmp_path}: the files' one-hot labels count different classes "
                    f"({tmp_path}/NTU120_CSet.npz y_train: 120, {tmp_path}/NTU120_CSet.npz "
                    f"y_test: 120, {tmp_path}/NTU60_CS.npz y_train: 60, {tmp_path}/NTU60_CS.npz "
                    f"y_test: 60); one dataset has one set of classes")


def test_no_file_and_a_name_without_a_protocol(tmp_path):
    fails(tmp_path, f"{tmp_path}: no .npz file in the folder (CTR-GCN's NTU60_CS.npz, "
                    f"NTU60_CV.npz, ... or MAMP's NTU60_XSub.npz, ...)")
    fails(tmp_path / "nothing", f"{tmp_path}/nothing: no such file or folder (a CTR-GCN/MAMP .npz "
                                f"such as NTU60_CS.npz, or a folder holding them)")
    path = write(tmp_path / "NTU60-CS.npz", recordings(), [0] * 5, train=3)
    fails(tmp_path, f"{path}: the file name gives no protocol: name it as CTR-GCN or MAMP do "
                    f"(NTU60_CS.npz, NTU120_CSub.npz, NTU60_XView.npz, ...), or <protocol>.npz "
                    f"with letters, digits and '_' only")


# --- export, and the round trip ---------------------------------------------------------------

def test_zero_pad_rows_body_by_body_and_cuts_long_sequences():
    data = np.arange(10 * 3 * 2 * 2, dtype=np.float32).reshape(10, 3, 2, 2)  # (F, C, V, M)
    rows = zero_pad(data, np.array([0, 3]), np.array([3, 7]), frames=5)
    assert rows.shape == (2, 5, 12) and rows.dtype == np.float32
    # frame 0 of sequence 0: body 0 joint 0 x y z, joint 1 x y z, then body 1
    assert rows[0, 0].tolist() == [0, 4, 8, 2, 6, 10, 1, 5, 9, 3, 7, 11]
    assert not rows[0, 3:].any()  # zero after its 3 frames
    np.testing.assert_array_equal(rows[1, 4], data[7].transpose(2, 1, 0).ravel())  # cut at 5


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A synthetic NTU-60 corpus prepared at 50 frames, without normalisation and centred as
    CTR-GCN centres (117 samples, 27 with a second body); the data folder."""
    base = tmp_path_factory.mktemp("source")
    write_ntu("ntu60", base / "raw", subjects=3, replications=1, seed=0)
    prepare.run("ntu60", base / "raw", base / "data", variants=("50-none", "50-seqcentre"),
                view_names=("joint",))
    return base / "data"


def test_export_writes_ctrgcn_s_files(source, tmp_path):
    store = Store(source / "processed/ntu60/50-none.h5")
    result = export.run(store.path, "ctrgcn", tmp_path / "out")
    assert sorted(Path(f).name for f in result["files"]) == ["NTU60_CS.npz", "NTU60_CV.npz"]
    assert (result["left_out"], result["truncated"]) == (0, 0)
    with zipfile.ZipFile(tmp_path / "out/NTU60_CS.npz") as archive:
        assert archive.namelist() == ["x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"]
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    npz = np.load(tmp_path / "out/NTU60_CS.npz")
    assert (npz["x_train"].shape, npz["x_train"].dtype) == ((78, 300, 150), np.float32)
    assert (npz["y_test"].shape, npz["y_test"].dtype) == ((39, 60), np.float64)
    val = store.split("xsub/val")
    labels = store.meta(["label"])["label"]
    # CTR-GCN's feeder reads the labels as np.where(y > 0)[1]
    np.testing.assert_array_equal(np.where(npz["y_test"] > 0)[1], labels[val])
    sequence = store.sequence(val[5])  # (L, C, V, M)
    expected = np.zeros((300, 2, 25, 3), np.float32)
    expected[:len(sequence)] = sequence.transpose(0, 3, 2, 1)
    np.testing.assert_array_equal(npz["x_test"][5], expected.reshape(300, 150))
    # the feeder's reshape (N, T, 2, 25, 3) gives the bodies back
    np.testing.assert_array_equal(npz["x_test"][5].reshape(300, 2, 25, 3)[:len(sequence)],
                                  sequence.transpose(0, 3, 2, 1))


def test_export_of_the_centred_variant_is_centred_as_ctrgcn_s(source, tmp_path):
    export.run(source / "processed/ntu60/50-seqcentre.h5", "ctrgcn", tmp_path / "out")
    x = np.load(tmp_path / "out/NTU60_CV.npz")["x_train"]
    first = (x[:, :, :75] != 0).any(axis=2).argmax(axis=1)  # body 1's first tracked frame
    np.testing.assert_array_equal(x[np.arange(len(x)), first, 3:6], 0)  # joint 2 at the origin
    assert np.abs(x[:, :, 3:6]).max() > 0.01  # and it moves after


def test_round_trip(source, tmp_path):
    """Export, import at 50-none: each protocol's rows come back as that protocol's samples, with
    the same sequences, joint views and labels, in the same split."""
    original = Store(source / "processed/ntu60/50-none.h5")
    export.run(original.path, "ctrgcn", tmp_path / "out")
    prepare.run("ctrgcn", tmp_path / "out", tmp_path / "data", variants=("50-none",),
                name="back", view_names=("joint",))
    imported = Store(tmp_path / "data/processed/back/50-none.h5")
    assert len(imported) == 2 * len(original)  # the files name no samples: one per row and file
    assert imported.protocols == original.protocols == ["xsub", "xview"]
    where = {name: i for i, name in enumerate(imported.meta(["name"])["name"])}
    labels = original.meta(["label"])["label"]
    imported_labels = imported.meta(["label"])["label"]
    for protocol in original.protocols:
        for part, ours in (("train", "train"), ("val", "test")):
            rows = original.split(f"{protocol}/{part}")
            back = np.array([where[f"{protocol}-{ours}-{row}"] for row in range(len(rows))])
            np.testing.assert_array_equal(imported_labels[back], labels[rows])
            np.testing.assert_array_equal(imported.take("joint", back),
                                          original.take("joint", rows))
            for i, j in zip(rows[::7], back[::7]):
                np.testing.assert_array_equal(imported.sequence(j), original.sequence(i))
            assert set(imported.split(f"{protocol}/{part}")) == set(back)
    assert imported.attr("num_classes") == 60


def test_cli_export_then_prepare(source, tmp_path):
    runner = CliRunner()
    store = source / "processed/ntu60/50-none.h5"
    result = runner.invoke(main, ["export", str(store), "--to", "ctrgcn", "--out",
                                  str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "117 samples written in the ctrgcn layout" in result.output
    assert "xview: train 78, val 39" in result.output
    result = runner.invoke(main, ["prepare", "ctrgcn", "--raw", str(tmp_path / "out/NTU60_CV.npz"),
                                  "--name", "ntu60-ctrgcn", "--variant", "50-seqcentre",
                                  "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "ntu60-ctrgcn: 117 samples written" in result.output
    assert Store(tmp_path / "data/processed/ntu60-ctrgcn/50-seqcentre.h5").protocols == ["xview"]
    result = runner.invoke(main, ["prepare", "ctrgcn", "--raw", str(tmp_path / "out"),
                                  "--protocol", "xsub=subject:1", "--data-dir",
                                  str(tmp_path / "data")])
    assert result.exit_code == 1
    assert "ctrgcn: the protocols come from the files" in result.output


def test_export_refuses_a_protocol_its_file_name_would_rename(tmp_path):
    rng = np.random.default_rng(0)
    samples = [RawSample(name=f"clip{i}", label=i % 3, subject=1 + i % 2,
                         bodies=rng.normal(size=(1, 12, 25, 3)).astype(np.float32))
               for i in range(6)]
    write_samples(tmp_path / "raw", samples)
    prepare.run("generic", tmp_path / "raw", tmp_path / "data", variants=("20-none",),
                name="mine", view_names=("joint",),
                options=ImportOptions(protocols={"a_CS": {"train": {"subject": ["1"]}}}))
    store = tmp_path / "data/processed/mine/20-none.h5"
    with pytest.raises(StageError) as err:
        export.run(store, "ctrgcn", tmp_path / "out")
    assert str(err.value) == (f"{store}: protocol 'a_CS': its file a_CS.npz would be read back as "
                              f"the protocol 'xsub'; rename the protocol")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
