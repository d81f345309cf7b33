"""tables: the papers' tables with our numbers, built from the combinations params list.

Expected result files are derived from ``splits``, ``runs``, ``ensembles``, ``downstream`` and
``transfer`` in params (never by globbing, which would pick up stale results of other profiles);
a missing one is an error. The papers' numbers sit beside the runs that reproduce their rows
(matched by run name, below); an empty cell is always shown as "–".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from skelctl.methods import METHODS
from skelctl.report import PaperValue, fmt, markdown_table, paper_results, paper_value
from stages import paths
from skelctl.atomic import write_text
from stages.common import StageError
from stages.config import load_run, read_params, run_names

METHOD_TITLES = {"skeletonclr": "SkeletonCLR", "crosclr": "CrosSCLR", "crrl": "CRRL",
                 "aimclr": "AimCLR", "crosnnclr": "CrosNNCLR", "crosnnclr_star": "CrosNNCLR*",
                 "random": "random init"}

# run name -> the paper row it reproduces, per CrosSCLR table (Table 1 by method and stream)
TABLE1_RUNS = {"skeletonclr-joint", "skeletonclr-motion", "skeletonclr-bone",
               "crosclr-joint-motion-bone"}
TABLE3_RUNS = {"skeletonclr-joint-noaug": "SkeletonCLR shear 0 crop 0",
               "skeletonclr-joint-shear-only": "SkeletonCLR shear 0.5 crop 0",
               "skeletonclr-joint": "SkeletonCLR shear 0.5 crop 6"}
TABLE4_RUNS = {"skeletonclr-joint": "SkeletonCLR", "skeletonclr-joint-km": "SkeletonCLR + L_KM",
               "crosclr-joint-motion-bone-noec": "CrosSCLR w/o EC",
               "crosclr-joint-motion-bone": "CrosSCLR"}

# CrosNNCLR Tables 1 and 2 (per stream, and the 3s ensembles), 8 (crop only), 9 (embedding size:
# the encoder's output, 256 in the headline row) and 10 (queue size)
CROSNNCLR_STREAM_TABLES = {"1": ("skeletonclr", "crosnnclr"), "2": ("aimclr", "crosnnclr_star")}
CROSNNCLR_TABLES = {
    "8": ("crop-only augmentation (joint, NTU-60 xview)", {
        **{f"{m}-joint": f"{METHOD_TITLES[m]} full aug." for m in
           ("skeletonclr", "crosnnclr", "aimclr", "crosnnclr_star")},
        **{f"{m}-joint-croponly": f"{METHOD_TITLES[m]} only crop" for m in
           ("skeletonclr", "crosnnclr", "aimclr", "crosnnclr_star")}}),
    "9": ("embedding size (joint, NTU-60 xview)", {
        "crosnnclr-joint-emb128": "CrosNNCLR embedding 128",
        "crosnnclr-joint": "CrosNNCLR embedding 256",
        "crosnnclr-joint-emb512": "CrosNNCLR embedding 512",
        "crosnnclr-joint-emb1024": "CrosNNCLR embedding 1024"}),
    "10": ("queue size (joint, NTU-60 xview)", {
        **{f"crosnnclr-joint-queue{q}": f"CrosNNCLR queue {q}"
           for q in (256, 512, 1024, 2048, 4096, 8192, 16384)},
        "crosnnclr-joint": "CrosNNCLR queue 32768"}),
}

# CRRL Tables VIII (fusion strategies), IX (the contrast's key input) and X (SER's directions)
CRRL_TABLES = {
    "VIII": ("fusion strategies", {
        "rand-enc": "Rand-Enc", "cml": "CML", "ser": "SER", "cml-ser-joint": "CML-SER-joint",
        "cml-pretrain-ser": "CML-pretrain-SER", "ser-pretrain-cml": "SER-pretrain-CML",
        "ser-distill-cml": "SER-distill-CML", "crrl": "CRRL"}),
    "IX": ("coordinate-coordinate against velocity-coordinate contrast", {
        "rand-enc": "Rand-Enc", "cml-coordinate-noise": "Coordinate gaussian noise",
        "cml-coordinate-shear": "Coordinate shear",
        "cml-coordinate-rotation": "Coordinate rotation", "cml": "CML"}),
    "X": ("reconstruction directions", {
        "ser-forward": "forward", "ser-reverse": "reverse", "ser": "SER(forward+reverse)"}),
}


def read_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StageError(f"{path}: missing; params list this combination, so run its stage "
                         f"(dvc repro) first")
    return json.loads(path.read_text())


def published_rows(papers: list[PaperValue], metric: str, splits: list[str],
                   source: str = "") -> list[list[str]]:
    """Every paper row reporting ``metric`` on one of the splits: ``[row, source, values...]``."""
    rows = []
    for key in dict.fromkeys((p.paper, p.table, p.row) for p in papers if p.metric == metric
                             and (not source or p.source == source)):
        values = [paper_value(papers, key[0], key[1], key[2], s, metric, source=source)
                  for s in splits]
        if any(v is not None for v in values):
            rows.append([key[2], f"{key[0].split(' (')[0]}, Table {key[1]}", *map(fmt, values)])
    return rows


def build(params: Path, results_dir: Path) -> dict[str, str]:
    """Every table as Markdown, by file stem."""
    document = read_params(params)
    splits = document.get("splits", [])
    runs = {name: load_run(params, name) for name in run_names(document)}
    ensembles = document.get("ensembles", [])
    downstream = document.get("downstream") or {}
    papers = paper_results()
    profile = document.get("profile", "")
    ours = f"Ours: `{params}`" + (f" ({profile})" if profile else "")
    epochs = ("'last' is the last epoch (the headline), 'best' the best test epoch (the "
              "reference code's figure)")
    cols = [f"{s} {part}" for s in splits for part in ("last", "best", "paper")]

    def result(split: str, run: str, protocol: str, view: str) -> dict[str, Any]:
        return read_metrics(paths.result_dir(results_dir, split, run, protocol, view)
                            / "metrics.json")

    def title(run: str) -> str:
        return METHOD_TITLES.get(runs[run].method, runs[run].method)

    def rows_for(label: Callable[[str, str], str], paper: Callable[[str, str, str], float | None],
                 value: Callable[[str, str, str], dict[str, Any]],
                 selected: dict[str, tuple[str, ...]]) -> list[list[str]]:
        out = []
        for run, views in selected.items():
            for view in views:
                row = [label(run, view)]
                for split in splits:
                    m = value(split, run, view)
                    row += [fmt(m["top1_last"]), fmt(m["top1_best"]),
                            fmt(paper(run, view, split))]
                out.append(row)
        return out

    def ablation_table(paper: str, number: str, caption: str, mapping: dict[str, str]) -> str:
        """A paper's ablation table: the listed runs (joint) by the paper row each reproduces."""
        listed = {r: ("joint",) for r in mapping if r in runs}
        return markdown_table(
            f"{paper} Table {number}: {caption}", linear_note, ["model", *cols], rows_for(
                lambda r, v: f"{mapping[r]} ({r})",
                lambda r, v, s: paper_value(papers, paper, number, mapping[r], s, "linear"),
                lambda s, r, v: result(s, r, "linear", v), listed))

    every = {r: runs[r].streams for r in runs}
    linear_note = (f"Linear evaluation, top-1 %. {ours}; {epochs}. Paper: the published value of "
                   f"the row this run reproduces.")

    # linear evaluation of every run (CrosSCLR Table 1 beside the runs that reproduce it)
    table1 = rows_for(
        lambda r, v: f"{title(r)} {v} ({r})",
        lambda r, v, s: paper_value(papers, "CrosSCLR", "1", title(r), s, "linear", v)
        if r in TABLE1_RUNS else None,
        lambda s, r, v: result(s, r, "linear", v), every)
    tables = {"linear": markdown_table("Linear evaluation of every run (CrosSCLR Table 1 beside "
                                       "its rows)", linear_note, ["model", *cols], table1)}
    standardised = rows_for(
        lambda r, v: f"{title(r)} {v} ({r})", lambda r, v, s: None,
        lambda s, r, v: result(s, r, "linear", v)["standardised"], every)
    tables["linear_standardised"] = markdown_table(
        "Linear evaluation on standardised features (non-affine batch norm before the classifier)",
        f"Top-1 %. {ours}; {epochs}. Not a paper protocol: a linear number that does not depend "
        f"on the encoder's feature scale; no paper reports it.", ["model", *cols], standardised)

    # ensembles: both protocols; CrosSCLR's numbers beside its own (joint-head) protocol
    ens_rows = []
    for name in ensembles:
        by_split = {s: read_metrics(paths.ensemble_dir(results_dir, s, name) / "metrics.json")
                    for s in splits}
        first = by_split[splits[0]] if splits else {"runs": {}, "joint": {}}
        streams = list(first["runs"])
        family = METHOD_TITLES.get(name if name in METHODS else runs[name].method, name)
        reproduces = name in ("skeletonclr", "crosclr-joint-motion-bone")
        for protocol in ("joint", "posthoc"):
            for group in first["joint"]:
                row = [f"{group}-{family} ({'+'.join(streams[:int(group[0])])}; {name}) "
                       f"{protocol}"]
                for split in splits:
                    m = by_split[split][protocol][group]
                    paper = paper_value(papers, "CrosSCLR", "1", f"{group}-{family}", split,
                                        "linear") if protocol == "joint" and reproduces else None
                    row += [fmt(m["top1_last"]), fmt(m["top1_best"]), fmt(paper)]
                ens_rows.append(row)
    tables["ensembles"] = markdown_table(
        "Multi-stream ensembles (CrosSCLR Table 1, 2s and 3s rows)",
        f"Top-1 %. {ours}; {epochs}. 'joint': the streams' linear heads trained together on the "
        f"mean of their logits (CrosSCLR's protocol, the one its numbers are beside); "
        f"'posthoc': the weighted sum of the separately trained heads' logits (AimCLR's "
        f"protocol, weights from params).", ["ensemble", *cols], ens_rows)

    # CrosSCLR Table 5: the published comparison on NTU-60 with our 3-stream ensembles
    table5 = [[row, encoder, *[x for s in splits for x in (
        "–", "–", fmt(paper_value(papers, "CrosSCLR", "5", row, s, "linear")))]]
        for row, encoder in dict.fromkeys((p.row, p.encoder) for p in papers
                                          if p.paper.startswith("CrosSCLR") and p.table == "5")]
    for name in ensembles:
        streams = list(runs[name].streams) if name in runs else []
        if len(streams) >= 3:
            group = f"{len(streams)}s"
            row = [f"{group}-{title(name)} ({name}, ours, joint heads)", runs[name].encoder]
            for split in splits:
                m = read_metrics(paths.ensemble_dir(results_dir, split, name)
                                 / "metrics.json")["joint"][group]
                row += [fmt(m["top1_last"]), fmt(m["top1_best"]), "–"]
            table5.append(row)
    tables["crosclr_table5"] = markdown_table(
        "CrosSCLR Table 5: unsupervised results on NTU-60, linear evaluation", linear_note,
        ["method", "encoder", *cols], table5)

    # CrosSCLR Table 2: 2s-CrosSCLR (joint + motion) by top-K, joint-head protocol
    table2, seen = [], set()
    for name in ensembles:
        run = runs.get(name)
        if run is None or run.method != "crosclr" or run.streams != ("joint", "motion"):
            continue
        k = int(run.options.get("topk", 1))
        if k in seen:
            continue
        seen.add(k)
        row = [f"K={k} ({name})"]
        for split in splits:
            m = read_metrics(paths.ensemble_dir(results_dir, split, name) / "metrics.json")
            row += [fmt(m["joint"]["2s"]["top1_last"]), fmt(m["joint"]["2s"]["top1_best"]),
                    fmt(paper_value(papers, "CrosSCLR", "2", f"2s-CrosSCLR K={k}", split,
                                    "linear"))]
        table2.append(row)
    if table2:
        tables["crosclr_table2_topk"] = markdown_table(
            "CrosSCLR Table 2: 2s-CrosSCLR by top-K", linear_note, ["top-K", *cols], table2)

    # CrosSCLR Tables 3 and 4: the ablation runs params list
    for number, mapping, caption in (
            ("3", TABLE3_RUNS, "augmentations of SkeletonCLR (joint)"),
            ("4", TABLE4_RUNS, "contrastive settings and embedding context (joint)")):
        if any(r in runs for r in mapping):
            tables[f"crosclr_table{number}"] = ablation_table("CrosSCLR", number, caption,
                                                              mapping)

    # CrosNNCLR Tables 1 and 2: each method's streams and its 3s ensemble (AimCLR's weighted
    # fusion of the separately trained heads, the protocol CrosNNCLR's code follows)
    for number, methods in CROSNNCLR_STREAM_TABLES.items():
        listed = {f"{m}-{v}": (v,) for m in methods for v in ("joint", "motion", "bone")
                  if f"{m}-{v}" in runs}
        if not any(runs[r].method != "skeletonclr" for r in listed):
            continue
        rows = rows_for(lambda r, v: f"{title(r)} {v} ({r})",
                        lambda r, v, s, n=number: paper_value(papers, "CrosNNCLR", n, title(r), s,
                                                              "linear", v),
                        lambda s, r, v: result(s, r, "linear", v), listed)
        for method in methods:
            if method not in ensembles:
                continue
            row = [f"3s-{METHOD_TITLES[method]} ({method}, posthoc)"]
            for split in splits:
                m = read_metrics(paths.ensemble_dir(results_dir, split, method)
                                 / "metrics.json")["posthoc"]["3s"]
                row += [fmt(m["top1_last"]), fmt(m["top1_best"]), fmt(paper_value(
                    papers, "CrosNNCLR", number, f"3s-{METHOD_TITLES[method]}", split, "linear"))]
            rows.append(row)
        tables[f"crosnnclr_table{number}"] = markdown_table(
            f"CrosNNCLR Table {number}: {' and '.join(METHOD_TITLES[m] for m in methods)}, "
            f"linear evaluation", linear_note, ["model", *cols], rows)
    for number, (caption, mapping) in CROSNNCLR_TABLES.items():
        if any(r in runs and r != f"{runs[r].method}-joint" for r in mapping):  # an ablation
            tables[f"crosnnclr_table{number}"] = ablation_table("CrosNNCLR", number, caption,
                                                                mapping)

    # KNN retrieval
    knn_rows = []
    for run, views in every.items():
        for view in views:
            knn_rows.append([f"{title(run)} {view} ({run})", "ours", *[
                fmt(result(s, run, "knn", view)["top1"]) for s in splits]])
    knn_rows += published_rows(papers, "knn", splits)
    tables["knn"] = markdown_table(
        "KNN retrieval (k = 1, cosine similarity of pre-projector features)",
        f"Top-1 %. {ours}. Paper rows: the values the papers report for these splits.",
        ["model", "source", *splits], knn_rows)

    # CRRL Tables VIII, IX, X (linear, with our KNN beside) and V/VI (the published comparison)
    for number, (caption, mapping) in CRRL_TABLES.items():
        listed = [r for r in mapping if r in runs and runs[r].method in ("crrl", "random")]
        if not any(runs[r].method == "crrl" for r in listed):
            continue
        rows = []
        for run in listed:
            row = [f"{mapping[run]} ({run})"]
            for split in splits:
                m = result(split, run, "linear", "joint")
                row += [fmt(m["top1_last"]), fmt(m["top1_best"]),
                        fmt(paper_value(papers, "CRRL", number, mapping[run], split, "linear")),
                        fmt(result(split, run, "knn", "joint")["top1"])]
            rows.append(row)
        tables[f"crrl_table{number}"] = markdown_table(
            f"CRRL Table {number}: {caption}",
            f"Linear evaluation top-1 % ({epochs}) and KNN top-1 % (k = 1, cosine). {ours}. "
            f"Paper: the published linear value of the row.",
            ["strategy", *[f"{s} {c}" for s in splits
                           for c in ("last", "best", "paper", "KNN")]], rows)
    if "crrl" in runs and runs["crrl"].method == "crrl":
        rows = [["CRRL (crrl, ours)", *[x for s in splits for x in (
            fmt(result(s, "crrl", "linear", "joint")["top1_last"]),
            fmt(result(s, "crrl", "linear", "joint")["top1_best"]),
            fmt(result(s, "crrl", "knn", "joint")["top1"]))]]]
        for row in dict.fromkeys(p.row for p in papers
                                 if p.paper.startswith("CRRL") and p.table in ("V", "VI")):
            values = [x for s in splits for x in (
                None, paper_value(papers, "CRRL", "V", row, s, "linear"),
                paper_value(papers, "CRRL", "VI", row, s, "knn"))]
            if any(v is not None for v in values):
                rows.append([f"{row} (CRRL Tables V, VI)", *map(fmt, values)])
        tables["crrl_table5_6"] = markdown_table(
            "CRRL Tables V and VI: linear evaluation and KNN against the published methods",
            f"Top-1 %. {ours}: the linear figure at the last epoch (our headline) and at the best "
            f"epoch (what the papers report, so their rows fill that column). The other rows: "
            f"CRRL Table V (linear) and Table VI (KNN, k = 1).",
            ["method", *[f"{s} {c}" for s in splits
                         for c in ("linear last", "linear best", "KNN")]], rows)

    # semi-supervised: fine-tuned (ISC Table 2, PCM3 Table 2) and linear (CrosSCLR Table 7)
    semi = document.get("semi") or {}
    percents = semi.get("percents", [1, 5, 10, 20])
    protocols = semi.get("protocols", ["finetune", "linear"])
    semi_rows = []
    for run in downstream.get("semi") or []:
        for view in runs[run].streams:
            for percent in percents:
                for protocol in protocols:
                    row = [f"{title(run)} {view} ({run})", f"{percent:g} %", protocol]
                    for split in splits:
                        m = result(split, run, "semi", view)[f"{percent:g}"][protocol]
                        row.append(f"{fmt(m['top1_last'])} / {fmt(m['top1_best'])}")
                    semi_rows.append(row)
    for percent in percents:  # CrosSCLR Table 7 is the linear protocol, the others fine-tune
        semi_rows += [[r[0], f"{percent:g} % ({r[1]})",
                       "linear" if r[1].startswith("CrosSCLR") else "finetune", *r[2:]]
                      for r in published_rows(papers, f"semi{percent:g}", splits)]
    if downstream.get("semi"):
        tables["semi"] = markdown_table(
            "Semi-supervised: a per-class fraction of the labels",
            f"Top-1 %, last / best epoch, mean over the seeds in params. {ours}. 'finetune': "
            f"encoder + linear head trained on the labelled part (ISC Table 2, five runs, and "
            f"PCM3 Table 2); 'linear': a linear classifier on the frozen features (CrosSCLR "
            f"Table 7).", ["model", "labels", "protocol", *splits], semi_rows)

    # fine-tuning on all labels (CrosSCLR Table 8)
    if downstream.get("finetune"):
        rows = [[f"{title(r)} {v} ({r})", "ours", *[
            f"{fmt(m['top1_last'])} / {fmt(m['top1_best'])}" for m in
            (result(s, r, "finetune", v) for s in splits)]]
            for r in downstream["finetune"] for v in runs[r].streams]
        rows += published_rows(papers, "finetune", splits)
        tables["finetune"] = markdown_table(
            "Fine-tuning on all labels", f"Top-1 %, last / best epoch. {ours}. Paper rows: "
            f"CrosSCLR Table 8.", ["model", "source", *splits], rows)

    # transfer (ISC Table 4, CRRL Table VII, CrosSCLR Table 8)
    transfer = document.get("transfer") or {}
    targets, source = transfer.get("targets") or [], transfer.get("source")
    if downstream.get("transfer") and targets:
        rows = []
        for run in downstream["transfer"]:
            for view in runs[run].streams:
                row = [f"{title(run)} {view} ({run}, pretrained on {source})"]
                for target in targets:
                    m = result(target, f"{run}@{source}", "transfer", view)
                    row += [f"{fmt(m['linear']['top1_last'])} / {fmt(m['linear']['top1_best'])}",
                            f"{fmt(m['finetune']['top1_last'])} / "
                            f"{fmt(m['finetune']['top1_best'])}"]
                rows.append(row)
        for metric in ("transfer-linear", "transfer-finetune"):
            for r in published_rows(papers, metric, targets, source=source or ""):
                values = r[2:]
                rows.append([f"{r[0]} ({r[1]}, pretrained on {source})", *[
                    x for v in values for x in ((v, "–") if metric == "transfer-linear"
                                                else ("–", v))]])
        tables["transfer"] = markdown_table(
            f"Transfer: pretrained on {source}, evaluated on another dataset",
            f"Top-1 %, last / best epoch. {ours}. Paper rows: the papers' transfer tables for "
            f"the same source and target.",
            ["model", *[f"{t} {p}" for t in targets for p in ("linear", "fine-tune")]], rows)

    # occlusion robustness (PCM3 Table 4)
    if downstream.get("occlusion"):
        kinds = (document.get("occlusion") or {}).get("kinds", ["spatial", "temporal"])
        rows = []
        for run in downstream["occlusion"]:
            for view in runs[run].streams:
                row = [f"{title(run)} {view} ({run})", "ours"]
                for split in splits:
                    m = result(split, run, "occlusion", view)
                    row.append(fmt(m["clean"]["top1_last"]))
                    row += [f"{fmt(m[k]['top1_last'])} (-{fmt(m[k]['drop_last'])})"
                            for k in kinds]
                rows.append(row)
        for key in dict.fromkeys((p.paper, p.table, p.row) for p in papers
                                 if p.metric.startswith("occlusion-")):
            row = [key[2], f"{key[0].split(' (')[0]}, Table {key[1]}"]
            for split in splits:
                row.append("–")
                row += [fmt(paper_value(papers, key[0], key[1], key[2], split,
                                        f"occlusion-{k}")) for k in kinds]
            if any(c != "–" for c in row[2:]):
                rows.append(row)
        tables["occlusion"] = markdown_table(
            "Occlusion robustness: linear evaluation on masked test data",
            f"Top-1 %, last epoch, drop against clean data in brackets. {ours}. Spatial: body "
            f"parts masked; temporal: a block of frames zeroed; masking ratio ~ U(0.3, 0.7). "
            f"Paper rows: PCM3 Table 4.",
            ["model", "source", *[f"{s} {k}" for s in splits for k in ("clean", *kinds)]], rows)
    return tables


def run(params: Path, results_dir: Path, out_dir: Path) -> dict[str, str]:
    tables = build(params, results_dir)
    for name, text in tables.items():
        write_text(Path(out_dir) / f"{name}.md", text)
    return tables
