"""The published numbers in ``skelctl/resources/paper_results.csv`` and their look-up."""

from __future__ import annotations

import csv
from importlib import resources

import pytest

from skelctl.report import PaperValue, paper_results, paper_value

COLUMNS = ["paper", "table", "row", "encoder", "streams", "dataset", "protocol", "source",
           "metric", "value"]
METRICS = {"linear", "knn", "semi1", "semi5", "semi10", "semi20", "finetune", "transfer-linear",
           "transfer-finetune", "occlusion-spatial", "occlusion-temporal", "occlusion-clean",
           "linear_top5"}
DATASETS = {"ntu60", "ntu120", "ntu61-120", "pku1", "pku2", "nw-ucla"}
PROTOCOLS = {"xsub", "xview", "xset"}
KEY = ("paper", "table", "row", "encoder", "streams", "dataset", "protocol", "source", "metric")


@pytest.fixture(scope="module")
def raw_rows() -> list[dict[str, str]]:
    text = resources.files("skelctl.resources").joinpath("paper_results.csv").read_text()
    reader = csv.DictReader(text.splitlines())
    assert reader.fieldnames == COLUMNS
    rows = list(reader)
    assert rows
    return rows


@pytest.fixture(scope="module")
def values() -> list[PaperValue]:
    return paper_results()


def test_every_row_is_complete(raw_rows):
    for r in raw_rows:
        assert None not in r, f"too many fields: {r}"
        assert all(r[c] is not None for c in COLUMNS), f"too few fields: {r}"
        for c in ("paper", "table", "row", "streams", "dataset", "protocol", "metric", "value"):
            assert r[c].strip(), f"empty {c}: {r}"
            assert r[c] == r[c].strip(), f"stray whitespace in {c}: {r}"


def test_values_are_percentages(raw_rows):
    for r in raw_rows:
        value = float(r["value"])
        assert 0.0 <= value <= 100.0, r


def test_no_duplicate_keys(raw_rows):
    seen: dict[tuple[str, ...], dict[str, str]] = {}
    for r in raw_rows:
        key = tuple(r[c] for c in KEY)
        assert key not in seen, f"duplicate rows: {seen[key]} and {r}"
        seen[key] = r


def test_vocabulary(raw_rows):
    for r in raw_rows:
        assert r["metric"] in METRICS, r
        assert r["dataset"] in DATASETS, r
        assert r["protocol"] in PROTOCOLS, r
        if r["source"]:
            assert r["source"] in DATASETS and r["source"] != r["dataset"], r
        # a transfer metric names its pretraining dataset, and only transfer metrics do
        assert r["metric"].startswith("transfer-") == bool(r["source"]), r


def test_paper_results_parses(raw_rows, values):
    assert len(values) == len(raw_rows)
    assert all(isinstance(v.value, float) and isinstance(v.source, str) for v in values)
    # the same-dataset rows read back with an empty source, not None
    assert any(v.source == "" for v in values) and any(v.source for v in values)


def test_crosnnclr_tables(values):
    assert paper_value(values, "CrosNNCLR", "1", "CrosNNCLR", "ntu60-xview", "linear",
                       "joint") == 81.0
    assert paper_value(values, "CrosNNCLR", "2", "3s-CrosNNCLR*", "ntu120-xset", "linear",
                       "joint+motion+bone") == 69.9
    assert paper_value(values, "CrosNNCLR", "1", "SkeletonCLR", "pku1-xsub", "linear",
                       "joint") == 80.9
    assert paper_value(values, "CrosNNCLR", "8", "CrosNNCLR* only crop", "ntu60-xview",
                       "linear", "joint") == 54.6
    assert paper_value(values, "CrosNNCLR", "10", "CrosNNCLR queue 4096", "ntu60-xview",
                       "linear_top5", "joint") == 96.0
    rows = {(v.table, v.row) for v in values if v.paper.startswith("CrosNNCLR")}
    assert len([r for r in rows if r[0] == "10"]) == 8 and len([r for r in rows
                                                               if r[0] == "9"]) == 4


def test_existing_lookups_unchanged(values):
    assert paper_value(values, "CrosSCLR", "1", "SkeletonCLR", "ntu60-xsub", "linear",
                       "joint") == 68.3
    assert paper_value(values, "CrosSCLR", "2", "2s-CrosSCLR K=1", "ntu60-xview",
                       "linear") == 82.1
    assert paper_value(values, "PCM3", "3", "PCM3", "ntu120-xset", "knn") == 66.8
    assert paper_value(values, "CRRL", "VI", "CRRL", "nw-ucla-xview", "knn") == 86.4


@pytest.mark.parametrize("paper, table, row, split, metric, source, expected", [
    # ISC Table 2: semi-supervised
    ("ISC", "2", "ISC", "ntu60-xview", "semi5", "", 65.7),
    ("ISC", "2", "ISC", "ntu60-xsub", "semi20", "", 70.8),
    ("ISC", "2", "ISC", "pku1-xsub", "semi10", "", 72.1),
    ("ISC", "2", "ISC (supervised only)", "ntu60-xsub", "semi1", "", 17.6),
    ("ISC", "2", "Si et al. (ASSL)", "ntu60-xview", "semi20", "", 74.7),
    ("ISC", "2", "Lin et al. (MS2L)", "pku1-xsub", "semi1", "", 36.4),
    # transfer to PKU-MMD II
    ("ISC", "4", "ISC", "pku2-xsub", "transfer-finetune", "pku1", 45.1),
    ("ISC", "4", "ISC", "pku2-xsub", "transfer-finetune", "ntu60", 45.9),
    ("CRRL", "VII", "CRRL", "pku2-xsub", "transfer-finetune", "ntu60", 48.5),
    ("CrosSCLR", "8", "3s-CrosSCLR (FT)", "ntu60-xsub", "transfer-finetune", "ntu61-120", 85.6),
    # CrosSCLR fewer labels, finetune, ablations
    ("CrosSCLR", "7", "3s-CrosSCLR", "ntu60-xview", "semi1", "", 50.0),
    ("CrosSCLR", "7", "MS2L", "ntu60-xsub", "semi10", "", 65.2),
    ("CrosSCLR", "8", "3s-CrosSCLR (FT)", "ntu60-xsub", "finetune", "", 86.2),
    ("CrosSCLR", "8", "3s-ST-GCN*", "ntu120-xset", "finetune", "", 77.1),
    ("CrosSCLR", "3", "SkeletonCLR shear 0.5 crop 6", "ntu60-xview", "linear", "", 76.4),
    ("CrosSCLR", "3", "SkeletonCLR shear 0 crop 0", "ntu60-xsub", "linear", "", 33.3),
    ("CrosSCLR", "4", "CrosSCLR w/o EC", "ntu60-xsub", "linear", "", 71.4),
    # PCM3 semi-supervised and occlusion
    ("PCM3", "2", "PCM3", "ntu60-xview", "semi10", "", 82.8),
    ("PCM3", "4", "PCM3", "ntu60-xview", "occlusion-spatial", "", 87.0),
    ("PCM3", "4", "CRRL", "ntu60-xsub", "occlusion-temporal", "", 61.0),
    ("PCM3", "4", "AimCLR", "ntu60-xview", "occlusion-temporal", "", 58.6),
])
def test_spot_checks(values, paper, table, row, split, metric, source, expected):
    assert paper_value(values, paper, table, row, split, metric, source=source) == expected


def test_source_is_matched_exactly(values):
    # a transfer result is not returned without its source, nor under another source
    assert paper_value(values, "ISC", "4", "ISC", "pku2-xsub", "transfer-finetune") is None
    assert paper_value(values, "ISC", "4", "ISC", "pku2-xsub", "transfer-finetune",
                       source="ntu120") is None
    # and a same-dataset result is not returned for a transfer query
    assert paper_value(values, "CrosSCLR", "8", "3s-CrosSCLR (FT)", "ntu60-xview", "finetune",
                       source="ntu61-120") is None
    assert paper_value(values, "CrosSCLR", "8", "3s-CrosSCLR (FT)", "ntu60-xview",
                       "transfer-finetune", source="ntu61-120") == 92.0
