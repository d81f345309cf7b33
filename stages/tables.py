"""tables: the papers' tables with our numbers, built from the combinations params.yaml lists.

Expected result files are derived from ``splits``, ``runs`` and ``ensembles`` in params (never by
globbing, which would pick up stale results of other profiles); a missing one is an error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from skelctl.methods import METHODS
from skelctl.report import fmt, markdown_table, paper_results, paper_value
from stages import paths
from stages.common import StageError, write_text_atomic
from stages.config import load_document, parse_run

METHOD_TITLES = {"skeletonclr": "SkeletonCLR", "crosclr": "CrosSCLR", "random": "random init"}


def read_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StageError(f"{path}: missing; params list this combination, so run its stage "
                         f"(dvc repro) first")
    return json.loads(path.read_text())


def ensemble_streams(name: str, document: dict[str, Any]) -> tuple[str, ...]:
    if name in METHODS:
        return tuple(document.get("ensemble", {}).get("streams", ("joint", "motion", "bone")))
    return parse_run(name).views


def ensemble_title(name: str) -> str:
    if name in METHODS:
        return METHOD_TITLES[name]
    run = parse_run(name)
    suffix = f" K={run.overrides['topk']}" if "topk" in run.overrides else ""
    return METHOD_TITLES[run.method] + suffix


def build(params: Path, results_dir: Path) -> dict[str, str]:
    """Every table as Markdown, by file stem."""
    document = load_document(params)
    splits, runs = document.get("splits", []), document.get("runs", [])
    ensembles = document.get("ensembles", [])
    papers = paper_results()
    cols = [f"{s} {part}" for s in splits for part in ("ours", "ours (best ep.)", "paper")]
    profile = document.get("profile", "params.yaml")
    note = (f"Linear evaluation, top-1 %. Ours: `{profile}`; 'ours' is the last epoch, "
            f"'best ep.' the best test epoch (the reference code's figure). Paper: the "
            f"published value for the same split.")

    def linear(split: str, run: str, view: str) -> list[str]:
        m = read_metrics(paths.result_dir(results_dir, split, run, "linear", view) / "metrics.json")
        return [fmt(m["top1_last"]), fmt(m["top1_best"])]

    def ensemble(split: str, name: str, group: str) -> list[str]:
        m = read_metrics(paths.ensemble_dir(results_dir, split, name) / "metrics.json")
        return [fmt(m[f"{group}_top1_last"]), fmt(m[f"{group}_top1_best"])]

    # CrosSCLR Table 1: every stream of every run, then the 2s/3s ensembles
    baselines = document.get("baselines", [])
    table1 = []
    for run_name in [*runs, *baselines]:
        run = parse_run(run_name)
        for view in run.views:
            label = f"{METHOD_TITLES[run.method]} {view}" + (
                f" (K={run.overrides['topk']})" if run.overrides else "")
            row: list[Any] = [label]
            for split in splits:
                paper = None if run.overrides else paper_value(
                    papers, "CrosSCLR", "1", METHOD_TITLES[run.method], split, "linear", view)
                row += linear(split, run_name, view) + [fmt(paper)]
            table1.append(row)
    for name in ensembles:
        streams = ensemble_streams(name, document)
        for group, count in (("2s", 2), (f"{len(streams)}s", len(streams))):
            if count > len(streams) or (group != "2s" and count < 3):
                continue
            label = f"{group}-{ensemble_title(name)} ({'+'.join(streams[:count])})"
            row = [label]
            for split in splits:
                paper = paper_value(papers, "CrosSCLR", "1", f"{group}-{ensemble_title(name)}",
                                    split, "linear")
                row += ensemble(split, name, group) + [fmt(paper)]
            table1.append(row)
    tables = {"crosclr_table1": markdown_table(
        "CrosSCLR Table 1: single views and ensembles", note, ["model", *cols], table1)}

    # CrosSCLR Table 2: 2s-CrosSCLR (joint + motion) by top-K
    table2 = []
    for name in ensembles:
        if not re.fullmatch(r"crosclr-joint-motion(-k\d+)?", name):
            continue
        k = parse_run(name).overrides.get("topk", document.get("pretrain", {}).get("topk", 1))
        row = [f"K={k}"]
        for split in splits:
            row += ensemble(split, name, "2s") + [fmt(paper_value(
                papers, "CrosSCLR", "2", f"2s-CrosSCLR K={k}", split, "linear"))]
        table2.append(row)
    for k in (0, 1, 3, 5, 7, 10):
        if not any(r[0] == f"K={k}" for r in table2):
            table2.append([f"K={k} (not run)"] + [x for s in splits for x in (
                "–", "–", fmt(paper_value(papers, "CrosSCLR", "2", f"2s-CrosSCLR K={k}", s,
                                          "linear")))])
    tables["crosclr_table2_topk"] = markdown_table(
        "CrosSCLR Table 2: 2s-CrosSCLR by top-K", note + " Rows marked 'not run' are not in "
        "this profile's `ensembles`.", ["top-K", *cols], table2)

    # CrosSCLR Table 5: comparison on NTU-60 (paper rows) with our 3s-CrosSCLR
    table5 = []
    for p_row in dict.fromkeys((p.row, p.encoder) for p in papers if p.table == "5"):
        row = [p_row[0], p_row[1]]
        for split in splits:
            row += ["", "", fmt(paper_value(papers, "CrosSCLR", "5", p_row[0], split, "linear"))]
        table5.append(row)
    for name in ensembles:
        streams = ensemble_streams(name, document)
        if len(streams) >= 3:
            row = [f"{len(streams)}s-{ensemble_title(name)} (ours)",
                   document.get("pretrain", {}).get("encoder", "stgcn")]
            for split in splits:
                row += ensemble(split, name, f"{len(streams)}s") + [""]
            table5.append(row)
    tables["crosclr_table5"] = markdown_table(
        "CrosSCLR Table 5: unsupervised results, linear evaluation", note,
        ["method", "encoder", *cols], table5)

    # KNN retrieval: our runs and the papers' reported KNN results
    knn_rows = []
    for run_name in [*runs, *baselines]:
        for view in parse_run(run_name).views:
            row = [f"{run_name} ({view})", "ours"]
            for split in splits:
                m = read_metrics(paths.result_dir(results_dir, split, run_name, "knn", view)
                                 / "metrics.json")
                row.append(fmt(m["top1"]))
            knn_rows.append(row)
    for p in dict.fromkeys((p.paper, p.table, p.row) for p in papers if p.metric == "knn"):
        values = [paper_value(papers, p[0], p[1], p[2], s, "knn") for s in splits]
        if any(v is not None for v in values):
            knn_rows.append([p[2], f"{p[0]}, Table {p[1]}", *map(fmt, values)])
    tables["knn"] = markdown_table(
        "KNN retrieval (k = 1, cosine similarity of pre-projector features)",
        f"Top-1 %. Ours: `{profile}`. Paper rows: the values the papers report for these "
        f"splits.", ["model", "source", *splits], knn_rows)
    return tables


def run(params: Path, results_dir: Path, out_dir: Path) -> dict[str, str]:
    tables = build(params, results_dir)
    for name, text in tables.items():
        write_text_atomic(Path(out_dir) / f"{name}.md", text)
    return tables
