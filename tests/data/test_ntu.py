"""The NTU .skeleton reader on the real files, and every way a file can be broken."""

from pathlib import Path

import numpy as np
import pytest

from conftest import NTU_SAMPLES, copy_of, need
from skelctl.data.formats import get_format
from skelctl.data.formats.base import DatasetError, SampleError
from skelctl.data.formats.ntu import missing_skeletons, parse_name, read_skeleton_file

FIRST = "S001C001P001R001A001.skeleton"
REAL_FRAMES = {  # frames and bodies of the 11 real files
    "S001C001P001R001A001": (103, 1), "S001C001P001R001A002": (158, 1),
    "S001C001P001R001A003": (104, 1), "S001C001P001R001A004": (99, 1),
    "S001C001P001R001A005": (54, 1), "S001C001P001R001A011": (82, 1),
    "S001C001P001R001A050": (74, 2), "S001C003P008R002A058": (70, 2),
    "S002C001P003R001A003": (100, 1), "S003C001P015R001A034": (71, 1),
    "S004C002P003R001A017": (124, 1),
}


def test_real_files_frames_and_bodies():
    folder = need(NTU_SAMPLES)
    for name, (frames, bodies) in REAL_FRAMES.items():
        array = read_skeleton_file(folder / f"{name}.skeleton")
        assert array.shape == (bodies, frames, 25, 3), name
        assert array.dtype == np.float32
        assert array.any(axis=(2, 3)).all(), f"{name}: every body is tracked in every frame"


def test_real_first_joint_value():
    array = read_skeleton_file(need(NTU_SAMPLES) / FIRST)
    np.testing.assert_allclose(array[0, 0, 0], [0.2181153, 0.1725972, 3.785547], rtol=0, atol=1e-7)


def test_crlf_copy_parses_identically():
    folder = need(NTU_SAMPLES)
    crlf = folder / "crlf_variant" / FIRST
    assert b"\r\n" in crlf.read_bytes()
    np.testing.assert_array_equal(read_skeleton_file(crlf), read_skeleton_file(folder / FIRST))


def test_sample_metadata_from_name():
    sample = get_format("ntu60").read(str(need(NTU_SAMPLES) / "S001C003P008R002A058.skeleton"))[0]
    assert (sample.name, sample.label, sample.subject, sample.view, sample.setup,
            sample.replication) == ("S001C003P008R002A058", 57, 8, 3, 1, 2)
    assert parse_name("S001C003P008R002A058.txt") is None


def test_missing_lists_are_shipped():
    assert len(missing_skeletons("ntu60")) == 302
    ntu120 = missing_skeletons("ntu120")
    assert len(ntu120) == 535 and missing_skeletons("ntu60") < ntu120
    assert "S001C002P005R002A008" in ntu120 and "S032C003P067R002A077" in ntu120


# --- broken files -----------------------------------------------------------------------------

def _lines(tmp_path):
    return copy_of(need(NTU_SAMPLES) / FIRST, tmp_path).read_text().splitlines()


def _write(tmp_path, lines, name=FIRST):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _error(path):
    with pytest.raises(SampleError) as info:
        read_skeleton_file(path)
    assert str(path) in str(info.value)
    return info.value.problem


def test_empty_file(tmp_path):
    path = tmp_path / FIRST
    path.write_text("")
    assert _error(path) == "empty file"


def test_zero_frames(tmp_path):
    assert "no frames" in _error(_write(tmp_path, ["0"]))


def test_truncated_file(tmp_path):
    lines = _lines(tmp_path)
    assert "truncated" in _error(_write(tmp_path, lines[:500]))


def test_frame_count_larger_than_content(tmp_path):
    lines = _lines(tmp_path)
    lines[0] = "104"
    assert "truncated" in _error(_write(tmp_path, lines))


def test_wrong_joint_count(tmp_path):
    lines = _lines(tmp_path)
    assert lines[3] == "25"
    lines[3] = "24"
    assert _error(_write(tmp_path, lines)) == "line 4: joint count is 24, expected 25"


def test_body_line_with_wrong_field_count(tmp_path):
    lines = _lines(tmp_path)
    lines[2] = " ".join(lines[2].split()[:9])
    assert _error(_write(tmp_path, lines)) == "line 3: body line has 9 fields, expected 10"


def test_body_count_out_of_range(tmp_path):
    lines = _lines(tmp_path)
    lines[1] = "7"
    assert "body count 7, expected 0 to 4" in _error(_write(tmp_path, lines))


def test_non_numeric_value(tmp_path):
    lines = _lines(tmp_path)
    fields = lines[10].split()
    fields[1] = "abc"
    lines[10] = " ".join(fields)
    assert _error(_write(tmp_path, lines)) == "line 11: non-numeric value 'abc'"


def test_double_spaces_are_fine(tmp_path):
    lines = _lines(tmp_path)
    lines[10] = "  ".join(lines[10].split()) + " "
    np.testing.assert_array_equal(read_skeleton_file(_write(tmp_path, lines)),
                                  read_skeleton_file(need(NTU_SAMPLES) / FIRST))


def test_joint_line_with_thirteen_values(tmp_path):
    lines = _lines(tmp_path)
    lines[10] += " 7"
    assert _error(_write(tmp_path, lines)) == "line 11: joint line has 13 values, expected 12"


def test_joint_line_with_eleven_values(tmp_path):
    lines = _lines(tmp_path)
    lines[10] = " ".join(lines[10].split()[:11])
    assert _error(_write(tmp_path, lines)) == "line 11: joint line has 11 values, expected 12"


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_nan_or_infinite_coordinates(tmp_path, bad):
    lines = _lines(tmp_path)
    fields = lines[10].split()
    fields[1] = bad
    lines[10] = " ".join(fields)
    # line 11 is joint 6 of the first body in the first frame; field 1 its y
    assert _error(_write(tmp_path, lines)) == ("1 NaN or infinite coordinate value(s), the first "
                                               "at body 0, frame 0, joint 6, coordinate 1 "
                                               "(counted from 0)")


def test_trailing_garbage(tmp_path):
    lines = _lines(tmp_path) + ["1", "junk"]
    assert "unexpected data after the last" in _error(_write(tmp_path, lines))


def test_frames_without_bodies_are_all_zero(tmp_path):
    lines = _lines(tmp_path)
    # drop the body of frame 0: the frame stays, with no body
    lines = [lines[0], "0"] + lines[29:]
    array = read_skeleton_file(_write(tmp_path, lines))
    assert array.shape == (1, 103, 25, 3)
    assert not array[0, 0].any() and array[0, 1:].any(axis=(1, 2)).all()


def test_body_ids_become_tracks_in_order_of_appearance(tmp_path):
    lines = _lines(tmp_path)
    header = lines[2].split()
    # from frame 50 on the sensor gives the body a new (smaller) tracking ID
    for f in range(50, 103):
        i = 1 + f * 28 + 1
        lines[i] = " ".join(["5"] + header[1:])
    array = read_skeleton_file(_write(tmp_path, lines))
    assert array.shape == (2, 103, 25, 3)
    assert array[0, :50].any(axis=(1, 2)).all() and not array[0, 50:].any()
    assert array[1, 50:].any(axis=(1, 2)).all() and not array[1, :50].any()


def test_inventory_rejects_bad_names_excludes_missing_and_duplicates(tmp_path):
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    src = need(NTU_SAMPLES) / FIRST
    copy_of(src, raw)
    copy_of(src, raw / "sub")                            # duplicate sample name
    copy_of(src, raw, "S001C002P005R002A008.skeleton")   # on the official missing list
    copy_of(src, raw, "S018C001P001R001A001.skeleton")   # an NTU-120 setup
    copy_of(src, raw, "S001C001P001R001A061.skeleton")   # an NTU-120 action
    copy_of(src, raw, "not_a_sample.skeleton")
    inventory = get_format("ntu60").inventory(raw)
    assert inventory.items == [str(raw / FIRST)]
    assert inventory.excluded == {"on the official missing-skeleton list": 1,
                                  "not part of ntu60": 2}
    reasons = dict(inventory.rejected)
    assert "does not match SsssCcccPpppRrrrAaaa" in reasons[str(raw / "not_a_sample.skeleton")]
    assert "duplicate sample name" in reasons[str(raw / "sub" / FIRST)]
    ntu120 = get_format("ntu120").inventory(raw)
    assert len(ntu120.items) == 3
    transfer = get_format("ntu61-120").inventory(raw)
    assert [Path(p).name for p in transfer.items] == ["S001C001P001R001A061.skeleton"]
    assert get_format("ntu61-120").read(transfer.items[0])[0].label == 0


def test_missing_or_empty_raw_folder(tmp_path):
    with pytest.raises(DatasetError, match="raw folder does not exist"):
        get_format("ntu60").inventory(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="raw folder is empty"):
        get_format("ntu60").inventory(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match=r"no \*\.skeleton files"):
        get_format("ntu60").inventory(tmp_path / "other")
