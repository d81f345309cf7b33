"""Protocol sizes from the real per-sample inventories of NTU-60 and NTU-120."""

import numpy as np
import pytest

from conftest import NTU_LISTS, need
from skelctl.data.formats import get_format
from skelctl.data.formats.base import TRAIN, VAL
from skelctl.data.formats.ntu import missing_skeletons, parse_name


def inventory_meta(release):
    names = (need(NTU_LISTS) / release / "skes_available_name.txt").read_text().split()
    fields = [parse_name(n) for n in names]
    meta = {key: np.array([f[key] for f in fields]) for key in ("subject", "view", "setup",
                                                                "action")}
    meta["name"] = np.array(names)
    # the parallel lists agree with what the names say
    for key, column in (("subject", "performer"), ("view", "camera"), ("setup", "setup"),
                        ("action", "label")):
        listed = np.loadtxt(NTU_LISTS / release / f"{column}.txt", dtype=np.int64)
        np.testing.assert_array_equal(meta[key], listed)
    return meta


def sizes(code):
    return int((code == TRAIN).sum()), int((code == VAL).sum())


def test_ntu60_protocol_sizes():
    meta = inventory_meta("ntu60")
    assert len(meta["name"]) == 56_578
    assert not set(meta["name"]) & missing_skeletons("ntu60")
    splits = get_format("ntu60").splits(meta, None)
    assert sizes(splits["xsub"]) == (40_091, 16_487)
    assert sizes(splits["xview"]) == (37_646, 18_932)


def test_ntu120_protocol_sizes():
    meta = inventory_meta("ntu120")
    assert len(meta["name"]) == 113_945
    assert not set(meta["name"]) & missing_skeletons("ntu120")
    splits = get_format("ntu120").splits(meta, None)
    assert sizes(splits["xsub"]) == (63_026, 50_919)
    assert sizes(splits["xset"]) == (54_468, 59_477)


def test_ntu61_120_is_the_last_sixty_classes():
    meta = inventory_meta("ntu120")
    fmt = get_format("ntu61-120")
    keep = (meta["action"] >= fmt.first_action) & (meta["action"] <= fmt.last_action)
    assert keep.sum() == 57_367  # the NTU-61-120 size in the CrosSCLR paper
    labels = meta["action"][keep] - fmt.first_action
    assert fmt.num_classes == 60 and labels.min() == 0 and labels.max() == 59
    assert len(np.unique(labels)) == 60
    sub = {k: v[keep] for k, v in meta.items()}
    splits = fmt.splits(sub, None)
    train, val = sizes(splits["xsub"])
    assert train + val == 57_367 and set(splits) == {"xsub", "xset"}
    # disjoint from NTU-60's classes
    assert not set(meta["action"][keep]) & set(range(1, 61))


@pytest.mark.parametrize("release, protocols", [("ntu60", ("xsub", "xview")),
                                                ("ntu120", ("xsub", "xset"))])
def test_protocols_of_each_release(release, protocols):
    assert get_format(release).protocols == protocols
