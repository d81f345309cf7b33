"""The tables stage: paper tables put together from the params' ``reproduces`` section and the
paper-table spec, with no per-paper code."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PROJECT
from skelctl.methods import METHODS
from skelctl.stages import tables
from skelctl.stages.common import StageError
from skelctl.stages.config import load_run, read_params, run_names

PROFILES = ["params.yaml", "params.demo.yaml", "params.nw-ucla.yaml", "params.small-data.yaml"]
NUMBER = re.compile(r"-?\d+\.\d")


# the untrained baseline's runs in each profile as they were named when tables_before.json was
# recorded
FORMER_NAMES = {
    "params.yaml": {"untrained-joint": "random-joint", "untrained": "rand-enc"},
    "params.demo.yaml": {"untrained-joint-motion-bone": "random-joint-motion-bone"},
    "params.nw-ucla.yaml": {"untrained": "rand-enc", "untrained-stgcn": "random-stgcn"}}


def number(*parts: object) -> float:
    """A value that names the result file and key it stands for (so rows can be matched)."""
    return round((zlib.crc32("/".join(map(str, parts)).encode()) % 1000) / 10, 1)


def pair(*parts: object) -> dict[str, float]:
    return {"top1_last": number(*parts, "last"), "top1_best": number(*parts, "best")}


def fake_metrics(params: Path, path: Path) -> dict[str, Any]:
    """What the evaluation stages would write at ``path``, each value derived from the path."""
    document = read_params(params)
    profile = params.parent == PROJECT or params.parent.name == "as-recorded"
    former = FORMER_NAMES.get(params.name if profile else "", {})
    path = Path(*(former.get(part, part) for part in path.parts))
    parts = path.parts
    if parts[-3] == "ensemble":  # results/<split>/ensemble/<name>/metrics.json
        name = parts[-2]
        if name in run_names(document):
            streams = list(load_run(params, name).streams)
        else:
            streams = list((document.get("ensemble") or {}).get("streams",
                                                                 ["joint", "motion", "bone"]))
        groups = ["2s"] + ([f"{len(streams)}s"] if len(streams) >= 3 else [])
        return {"runs": {s: name for s in streams},
                "posthoc": {g: pair(path, "posthoc", g) for g in [*streams, *groups]},
                "joint": {g: pair(path, "joint", g) for g in groups}}
    protocol = parts[-4]
    if protocol == "linear":
        return {**pair(path), "standardised": pair(path, "standardised")}
    if protocol == "knn":
        return {"top1": number(path)}
    if protocol == "semi":
        semi = document.get("semi") or {}
        return {f"{p:g}": {q: pair(path, p, q) for q in semi.get(
            "protocols", ["finetune", "linear"])} for p in semi.get("percents", [1, 5, 10, 20])}
    if protocol == "finetune":
        return pair(path)
    if protocol == "transfer":
        return {"linear": pair(path, "linear"), "finetune": pair(path, "ft")}
    if protocol == "occlusion":
        kinds = (document.get("occlusion") or {}).get("kinds", ["spatial", "temporal"])
        return {"clean": pair(path, "clean"),
                **{k: {"top1_last": number(path, k), "drop_last": number(path, k, "drop")}
                   for k in kinds}}
    raise AssertionError(f"unexpected result file {path}")


def build(params: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setattr(tables, "read_metrics", lambda path: fake_metrics(params, path))
    return tables.build(params, Path("results"))


def numeric_rows(markdown: str) -> list[list[str]]:
    """Each body row's numbers, in order (the label left out)."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    return [[n for cell in line.strip("|").split("|")[1:] for n in NUMBER.findall(cell)]
            for line in lines]


# what was added after tables_before.json was recorded: ISC's and PCM3's runs (and any run of
# several encoder kinds, such as ISC's untrained baseline), ISC's Tables 1, 6 and 7, PCM3's
# Tables 1, 8, 9 and 10 and four rows of its Table 3, MAMP's and STARS' published numbers
RECORDED_METHODS = {"skeletonclr", "crosclr", "crrl", "aimclr", "crosnnclr", "crosnnclr_star",
                    "untrained"}  # the registry when tables_before.json was recorded
ADDED_METHODS = set(METHODS) - RECORDED_METHODS  # every method registered since
ADDED_ENCODERS = {"transformer"}  # encoders registered since (their runs' baselines)
ADDED_PAPER_TABLES = {("ISC (ACM MM 2021)", "1"), ("ISC (ACM MM 2021)", "6"),
                      ("ISC (ACM MM 2021)", "7"), *(("PCM3 (ACM MM 2023)", t)
                                                    for t in ("1", "8", "9", "10")),
                      ("MAMP (ICCV 2023)", "1"), ("MAMP (ICCV 2023)", "README"),
                      ("STARS (arXiv 2024)", "README")}
ADDED_PAPER_ROWS = {("PCM3 (ACM MM 2023)", "3", row)
                    for row in ("CRRL", "HaLP", "ISC", "LongT GAN")}
# runs repeated with another seed (the NW-UCLA profile's `*-seed1`, `*-seed2`)
SEED_RUN = re.compile(r".+-seed\d+")


def as_recorded(profile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``profile`` and the paper values without what was added since the recording."""
    document = read_params(profile)
    added = {name for name, entry in (document.get("runs") or {}).items()
             if entry.get("method") in ADDED_METHODS
             or any(method in name.split("-") for method in ADDED_METHODS)  # their baselines
             or entry.get("encoder") in ADDED_ENCODERS
             or not isinstance(entry.get("encoder", ""), str) or SEED_RUN.fullmatch(name)}
    document["runs"] = {k: v for k, v in document["runs"].items() if k not in added}
    added |= {e["run"] for e in document.get("continued") or []
              if e.get("method") in ADDED_METHODS}
    document["continued"] = [e for e in document.get("continued") or []
                             if not SEED_RUN.fullmatch(e["run"]) and e["run"] not in added]
    document["reproduces"] = {k: v for k, v in (document.get("reproduces") or {}).items()
                              if k.split()[0] not in added | ADDED_METHODS}
    document["ensembles"] = [e for e in document.get("ensembles") or [] if e not in ADDED_METHODS]
    document["downstream"] = {k: [r for r in v if r not in added]
                              for k, v in (document.get("downstream") or {}).items()}
    recorded = [v for v in tables.paper_results() if (v.paper, v.table) not in ADDED_PAPER_TABLES
                and (v.paper, v.table, v.row) not in ADDED_PAPER_ROWS]
    monkeypatch.setattr(tables, "paper_results", lambda: recorded)
    path = tmp_path / "as-recorded" / profile.name
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize("profile", PROFILES)
def test_every_table_rendered_before_renders_the_same_rows(profile, monkeypatch, tmp_path):
    """The tables the per-paper code rendered (tables_before.json: each row's numbers, for the
    same stand-in results) render now with the same rows: each old row is one new row holding
    its numbers (ours and the paper's; a row may now also show a paper value it lacked), and no
    row is added (what was added since the recording left out). Tables that held no number at
    all are no longer rendered."""
    before = json.loads((Path(__file__).parent / "data" / "tables_before.json").read_text())
    built = build(as_recorded(PROJECT / profile, tmp_path, monkeypatch), monkeypatch)
    expected = before[profile]
    assert sorted(name for name, text in built.items() if any(numeric_rows(text))) \
        == sorted(expected)
    for name, old_rows in expected.items():
        new_rows = numeric_rows(built[name])
        assert len(new_rows) == len(old_rows), name
        unmatched = list(new_rows)
        for old in old_rows:
            holding = [new for new in unmatched if all(new.count(n) >= old.count(n) for n in old)]
            assert holding, f"{profile} {name}: no row holds {old}"
            unmatched.remove(min(holding, key=len))  # the closest: fewest numbers added


def write_profile(tmp_path: Path, reproduces: dict[str, Any], **extra: Any) -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "splits": ["nw-ucla-xview"],
        "runs": {"untrained": {"method": "untrained", "streams": ["joint"]},
                 "ser": {"method": "crrl", "streams": ["joint"],
                         "options": {"student": "ser", "fusion": "none"}},
                 "clr": {"method": "crosclr", "streams": ["joint", "motion"]}},
        "ensembles": ["clr"], "reproduces": reproduces, **extra}, sort_keys=False))
    return params


def test_a_paper_table_is_data(tmp_path, monkeypatch):
    """Naming paper rows in params is all a table needs: CRRL Table VIII with the two rows in
    the paper's order, each beside the paper's NW-UCLA value and our KNN."""
    params = write_profile(tmp_path, {"ser": {"CRRL VIII": "SER"},
                                      "untrained": {"CRRL VIII": "Rand-Enc"}})
    built = build(params, monkeypatch)
    assert set(built) == {"linear", "linear_standardised", "ensembles", "knn", "crrl_tableVIII"}
    text = built["crrl_tableVIII"]
    assert text.startswith("### CRRL Table VIII: fusion strategies")
    body = [line for line in text.splitlines() if line.startswith("| ")][1:]
    labels = [line.split("|")[1].strip() for line in body]
    assert labels == ["Rand-Enc (untrained)", "SER (ser)"]
    ser = fake_metrics(params, Path("results/nw-ucla-xview/linear/ser/joint/metrics.json"))
    knn = fake_metrics(params, Path("results/nw-ucla-xview/knn/ser/joint/metrics.json"))
    assert [c.strip() for c in body[1].strip("|").split("|")[1:]] == [
        f"{ser['top1_last']:.1f}", f"{ser['top1_best']:.1f}", "81.4", f"{knn['top1']:.1f}"]
    assert "50.5" in body[0]  # Rand-Enc's published NW-UCLA figure


def test_a_comparison_table_lists_the_papers_rows_after_ours(tmp_path, monkeypatch):
    params = write_profile(tmp_path, {"ser": {"CRRL V": "CRRL", "CRRL VI": "CRRL"}})
    text = build(params, monkeypatch)["crrl_table5_6"]
    body = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert body[0].split("|")[1].strip() == "CRRL (ser)"
    published = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
                 for line in body[1:]}
    assert published["CRRL (CRRL Tables V, VI)"] == ["–", "–", "83.8", "86.4"]
    assert published["P&C FW-AEC (CRRL Tables V, VI)"] == ["–", "–", "–", "84.9"]


def test_the_overview_shows_the_rows_a_run_and_an_ensemble_reproduce(tmp_path, monkeypatch):
    params = write_profile(tmp_path, {"clr": {"CrosSCLR 1": "CrosSCLR"},
                                      "clr 2s joint": {"CrosSCLR 1": "2s-CrosSCLR"}},
                           splits=["ntu60-xview"])
    built = build(params, monkeypatch)
    linear = {line.split("|")[1].strip(): line.split("|")[4].strip()
              for line in built["linear"].splitlines()[5:]}
    assert linear["CrosSCLR joint (clr)"] == "79.9"
    assert linear["CrosSCLR motion (clr)"] == "77.6"
    assert linear["untrained joint (untrained)"] == "–"
    ensembles = {line.split("|")[1].strip(): line.split("|")[4].strip()
                 for line in built["ensembles"].splitlines()[5:]}
    assert ensembles["2s-CrosSCLR (joint+motion; clr) joint"] == "82.1"
    assert ensembles["2s-CrosSCLR (joint+motion; clr) posthoc"] == "–"


@pytest.mark.parametrize("reproduces, message", [
    ({"ser": {"CRRL VIII": "Ser"}}, "reproduces: 'ser': CRRL VIII has no row 'Ser' (its rows: "
                                    "CML, CML-SER-joint"),
    ({"ser": {"CRRL 8": "SER"}}, "reproduces: 'ser': no paper table 'CRRL 8' in "
                                 "paper_results.csv (known: "),
    ({"sr": {"CRRL VIII": "SER"}}, "reproduces: 'sr': not a run of the params (untrained, ser, "
                                   "clr), 'RUN STREAM' or 'ENSEMBLE GROUP PROTOCOL'"),
    ({"ser bone": {"CRRL VIII": "SER"}}, "reproduces: 'ser bone': run 'ser' exports joint"),
    ({"ser 2s joint": {"CRRL VIII": "SER"}}, "reproduces: 'ser 2s joint': 'ser' is not in the "
                                             "params' ensembles (clr)"),
    ({"clr 2s mean": {"CrosSCLR 1": "2s-CrosSCLR"}}, "the protocol is one of joint, posthoc"),
    ({"ser": "CRRL VIII"}, "reproduces.ser: expected a mapping of names to texts, found "
                           "'CRRL VIII' (text)"),
])
def test_a_misspelt_reproduces_entry_names_the_file_the_key_and_what_is_known(
        tmp_path, monkeypatch, reproduces, message):
    params = write_profile(tmp_path, reproduces)
    with pytest.raises(StageError) as error:
        build(params, monkeypatch)
    assert str(error.value).startswith(f"{params}: ")
    assert message in str(error.value)


def test_every_spec_table_names_tables_the_paper_results_hold():
    overview, specs = tables.load_paper_tables()
    known = {(p.paper.split(" (")[0], p.table) for p in tables.paper_results()}
    assert tables.split_source(overview) in known
    for spec in specs:
        assert spec.caption
        for source in spec.sources:
            assert tables.split_source(source) in known, (spec.name, source)


def test_iscs_tables_show_each_encoder_of_a_run_beside_the_paper(monkeypatch):
    """params.yaml's ISC rows: Table 6 gives each representation of a run its own row (its
    encoder named) beside the paper's value; Tables 1 and 3 show ISC's sequence encoder, then
    the paper's other rows."""
    params = PROJECT / "params.yaml"
    built = build(params, monkeypatch)
    body = [line for line in built["isc_table6"].splitlines() if line.startswith("| ")][1:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in body}
    assert rows["Inter (SEQ+STG): STG (isc joint.agcn)"][0] == "agcn"
    assert rows["Inter (SEQ+STG): SEQ (isc joint.bigru)"][0] == "bigru"
    assert rows["Intra (IMG) (isc-intra-img)"][0] == "hcn"
    agcn = fake_metrics(params, Path("results/ntu60-xview/linear/isc/joint.agcn/metrics.json"))
    xview = ["ntu60-xsub", "ntu60-xview"].index("ntu60-xview")
    cells = rows["Inter (SEQ+STG): STG (isc joint.agcn)"][1 + 3 * xview:4 + 3 * xview]
    assert cells == [f"{agcn['top1_last']:.1f}", f"{agcn['top1_best']:.1f}", "78.9"]
    assert len(rows) == 12  # every row of the paper's Table 6
    text = built["isc_table1_3"]
    assert text.startswith("### ISC Tables 1, 3: linear evaluation and KNN")
    assert "| ISC (isc joint.bigru)" in text and "85.2" in text
    assert "Nie et al. (SeBiReNet) (ISC Tables 1, 3)" in text
