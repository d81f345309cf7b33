"""tables: the papers' tables with our numbers, put together from data.

Which of our results reproduces which paper row is the params' ``reproduces`` section; what
each paper table is (its caption, its columns, whether it lists the paper's other rows) is
``skelctl/resources/paper_tables.yaml``; the paper's values are ``paper_results.csv``. Nothing
here knows a paper: a new method's tables are data.

A ``reproduces`` key is one of our results, and its value maps a paper table (``"CRRL VIII"``) to
the row it reproduces there::

    reproduces:
      skeletonclr-joint: {CrosSCLR 1: SkeletonCLR, CrosSCLR 3: SkeletonCLR shear 0.5 crop 6}
      crosclr-joint-motion-bone joint: {CrosSCLR 4: CrosSCLR}       # one stream of a run
      crosclr-joint-motion-bone 3s joint: {CrosSCLR 5: 3s-CrosSCLR}  # ensemble, group, protocol

Expected result files are derived from ``splits``, ``runs``, ``ensembles``, ``downstream`` and
``transfer`` in params (never by globbing, which would pick up stale results of other profiles);
a missing one is an error. An empty cell is always shown as "–".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from skelctl.atomic import write_text
from skelctl.methods import method_class
from skelctl.methods.base import stream_of
from skelctl.report import PaperValue, fmt, markdown_table, paper_results, paper_value
from skelctl.stages import paths
from skelctl.stages.common import Result, StageError
from skelctl.stages.config import Run, load_run, read_params, run_names

GROUPS_PROTOCOLS = ("joint", "posthoc")


@dataclass(frozen=True)
class PaperTable:
    """One paper table as ``paper_tables.yaml`` describes it."""

    name: str                  # the file it is written to, tables/<name>.md
    sources: tuple[str, ...]   # "PAPER TABLE" as paper_results.csv names them
    caption: str
    knn: bool = False          # our KNN accuracy beside the linear figures
    published: bool = False    # every row the paper reports follows ours
    encoder: bool = False      # an encoder column


@dataclass(frozen=True)
class Entry:
    """One of our results that reproduces paper rows: a run's stream, or an ensemble's group
    under one protocol."""

    key: str                   # as written in params (the row's label names it)
    run: str                   # the run, or the ensemble's name
    stream: str | None = None  # a run's encoder: its stream, or stream.kind
    group: str | None = None   # an ensemble's group (2s, 3s, ...)
    protocol: str | None = None  # an ensemble's protocol (joint, posthoc)


def split_source(source: str) -> tuple[str, str]:
    """``"CRRL VIII"`` to ``("CRRL", "VIII")``."""
    paper, _, table = source.strip().rpartition(" ")
    return paper, table


def table_of(value: PaperValue) -> tuple[str, str]:
    """The paper (its short name) and table a published value belongs to."""
    return value.paper.split(" (")[0], value.table


def load_paper_tables() -> tuple[str, list[PaperTable]]:
    """The overview table's source and every paper table, from ``paper_tables.yaml``."""
    text = resources.files("skelctl.resources").joinpath("paper_tables.yaml").read_text()
    spec = yaml.safe_load(text)
    tables = []
    for name, entry in spec["tables"].items():
        sources = entry["source"] if isinstance(entry["source"], list) else [entry["source"]]
        columns = entry.get("columns", ["linear"])
        tables.append(PaperTable(name, tuple(sources), entry["caption"], "knn" in columns,
                                 bool(entry.get("published")), bool(entry.get("encoder"))))
    return spec["overview"], tables


def read_reproduces(document: dict[str, Any], params: Path, runs: dict[str, Run],
                    ensembles: list[str], papers: list[PaperValue]
                    ) -> dict[str, list[tuple[Entry, str]]]:
    """Each paper table's (``"PAPER TABLE"``) rows from the params' ``reproduces`` section: our
    entry and the row it reproduces, checked against the runs, the ensembles and the paper's
    rows (a misspelt name is an error naming the file, the key and what is known)."""
    section = document.get("reproduces") or {}
    if not isinstance(section, dict):
        raise StageError(f"{params}: 'reproduces' must map a run (or 'ENSEMBLE GROUP PROTOCOL') "
                         f"to {{'PAPER TABLE': row}}")
    known_rows = {table_of(p): set() for p in papers}
    for p in papers:
        known_rows[table_of(p)].add(p.row)
    by_table: dict[str, list[tuple[Entry, str]]] = {}
    for key, rows in section.items():
        where = f"{params}: reproduces: {key!r}"
        for entry in entries_of(str(key), runs, ensembles, where):
            if not isinstance(rows, dict):
                raise StageError(f"{where}: give {{'PAPER TABLE': row}}, e.g. {{CRRL VIII: CML}}")
            for source, row in rows.items():
                table = split_source(str(source))
                if table not in known_rows:
                    raise StageError(f"{where}: no paper table {source!r} in paper_results.csv "
                                     f"(known: {', '.join(sorted(' '.join(t) for t in known_rows))})")
                if str(row) not in known_rows[table]:
                    raise StageError(f"{where}: {source} has no row {row!r} (its rows: "
                                     f"{', '.join(sorted(known_rows[table]))})")
                by_table.setdefault(" ".join(table), []).append((entry, str(row)))
    return by_table


def entries_of(key: str, runs: dict[str, Run], ensembles: list[str], where: str) -> list[Entry]:
    """``RUN`` (each of its streams), ``RUN STREAM`` or ``ENSEMBLE GROUP PROTOCOL``."""
    parts = key.split()
    if len(parts) == 3:
        name, group, protocol = parts
        if name not in ensembles:
            raise StageError(f"{where}: {name!r} is not in the params' ensembles "
                             f"({', '.join(ensembles) or 'none'})")
        if protocol not in GROUPS_PROTOCOLS:
            raise StageError(f"{where}: the protocol is one of {', '.join(GROUPS_PROTOCOLS)}")
        return [Entry(key, name, group=group, protocol=protocol)]
    if len(parts) not in (1, 2) or parts[0] not in runs:
        raise StageError(f"{where}: not a run of the params ({', '.join(runs)}), 'RUN STREAM' "
                         f"or 'ENSEMBLE GROUP PROTOCOL'")
    run = runs[parts[0]]
    names = run.encoder_names()
    if len(parts) == 2:
        if parts[1] not in names:
            raise StageError(f"{where}: run {run.name!r} exports {', '.join(names)}")
        return [Entry(key, run.name, stream=parts[1])]
    return [Entry(f"{key} {s}" if len(names) > 1 else key, run.name, stream=s) for s in names]


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


class Results:
    """Our result files for the params' splits, runs and ensembles."""

    def __init__(self, results_dir: Path, runs: dict[str, Run], ensemble_streams: list[str]):
        self.results_dir, self.runs, self.ensemble_streams = results_dir, runs, ensemble_streams

    def run(self, split: str, run: str, protocol: str, stream: str) -> dict[str, Any]:
        return read_metrics(paths.result_dir(self.results_dir, split, run, protocol, stream)
                            / "metrics.json")

    def ensemble(self, split: str, name: str) -> dict[str, Any]:
        return read_metrics(paths.ensemble_dir(self.results_dir, split, name) / "metrics.json")

    def linear(self, split: str, entry: Entry) -> dict[str, Any]:
        """The last- and best-epoch accuracy of an entry."""
        if entry.stream is not None:
            return self.run(split, entry.run, "linear", entry.stream)
        return self.ensemble(split, entry.run)[entry.protocol][entry.group]

    def knn(self, split: str, entry: Entry) -> float | None:
        if entry.stream is None:
            return None
        return self.run(split, entry.run, "knn", entry.stream)["top1"]

    def streams(self, entry: Entry) -> str:
        """The streams an entry stands for, as paper_results.csv writes them."""
        if entry.stream is not None:
            return stream_of(entry.stream)
        run = self.runs.get(entry.run)
        streams = list(run.streams) if run is not None else self.ensemble_streams
        count = int(entry.group[:-1]) if entry.group and entry.group[:-1].isdigit() else 1
        return "+".join(streams[:count])

    def encoder(self, entry: Entry) -> str:
        run = self.runs.get(entry.run)
        if run is None:  # an ensemble of a single-stream method's runs
            run = next((r for r in self.runs.values() if r.method == entry.run), None)
        if run is None:
            return "–"
        if entry.stream is not None and "." in entry.stream:  # one of several kinds
            return entry.stream.split(".", 1)[1]
        return run.encoder if isinstance(run.encoder, str) else "+".join(run.encoder)


def title(runs: dict[str, Run], name: str) -> str:
    """A method's display title (its class's), for a run or a method's name."""
    return method_class(runs[name].method if name in runs else name).title


def paper_table(table: PaperTable, rows: list[tuple[Entry, str]], papers: list[PaperValue],
                splits: list[str], results: Results, note: str) -> str:
    """One paper table: our entries (in the paper's row order), then, for a comparison table,
    every row the paper reports for the splits."""
    sources = {split_source(s) for s in table.sources}
    paper_rows = list(dict.fromkeys(p.row for p in papers if table_of(p) in sources))

    def paper(row: str, split: str, metric: str, streams: str | None) -> float | None:
        return next((v for v in (paper_value(papers, *split_source(s), row, split, metric,
                                             streams) for s in table.sources)
                     if v is not None), None)

    paper_name = split_source(table.sources[0])[0]
    numbers = ", ".join(split_source(s)[1] for s in table.sources)
    caption = f"{paper_name} Table{'s' if len(table.sources) > 1 else ''} {numbers}"
    out = []
    rows = list(dict.fromkeys(rows))  # an entry may name its row in each of the sources
    for entry, row in sorted(rows, key=lambda item: paper_rows.index(item[1])):
        cells = [f"{row} ({entry.key})", *([results.encoder(entry)] if table.encoder else [])]
        for split in splits:
            m = results.linear(split, entry)
            cells += [fmt(m["top1_last"]), fmt(m["top1_best"]),
                      fmt(paper(row, split, "linear", results.streams(entry)))]
            if table.knn:
                cells.append(fmt(results.knn(split, entry)))
        out.append(cells)
    if table.published:
        for row in paper_rows:
            encoder = next(p.encoder for p in papers if p.row == row and table_of(p) in sources)
            cells = [f"{row} ({caption})", *([encoder] if table.encoder else [])]
            for split in splits:
                cells += ["–", "–", fmt(paper(row, split, "linear", None))]
                if table.knn:
                    cells.append(fmt(paper(row, split, "knn", None)))
            if any(c != "–" for c in cells[1 + table.encoder:]):
                out.append(cells)
    headers = ["model", *(["encoder"] if table.encoder else []),
               *[f"{s} {c}" for s in splits
                 for c in ("last", "best", "paper", *(["KNN"] if table.knn else []))]]
    return markdown_table(f"{caption}: {table.caption}", note, headers, out)


@dataclass
class Context:
    """What every table is made from: the params, our results and the papers' values."""

    document: dict[str, Any]
    splits: list[str]
    runs: dict[str, Run]
    ensembles: list[str]
    papers: list[PaperValue]
    results: Results
    ours: str      # the caption's "Ours: `params.yaml` (profile)"

    def title(self, name: str) -> str:
        return title(self.runs, name)


EPOCHS = ("'last' is the last epoch (the headline), 'best' the best test epoch (the reference "
          "code's figure)")


def overview_tables(ctx: Context, overview: str, rows: dict[str, str]) -> dict[str, str]:
    """Every run's linear (and standardised) and KNN figures and every ensemble's, the overview
    paper table's values beside the rows ``reproduces`` names there."""
    cols = [f"{s} {part}" for s in ctx.splits for part in ("last", "best", "paper")]
    overview_title = "{} Table {}".format(*split_source(overview))

    def paper(key: str, split: str, streams: str) -> float | None:
        row = rows.get(key)
        return None if row is None else paper_value(ctx.papers, *split_source(overview), row,
                                                    split, "linear", streams)

    every = [entry for name in ctx.runs for entry in entries_of(name, ctx.runs, [], name)]
    linear, standardised = [], []
    for entry in every:
        label = f"{ctx.title(entry.run)} {entry.stream} ({entry.run})"
        row, std = [label], [label]
        for split in ctx.splits:
            m = ctx.results.run(split, entry.run, "linear", entry.stream)
            row += [fmt(m["top1_last"]), fmt(m["top1_best"]), fmt(paper(entry.key, split,
                                                                        stream_of(entry.stream)))]
            std += [fmt(m["standardised"]["top1_last"]), fmt(m["standardised"]["top1_best"]),
                    "–"]
        linear.append(row)
        standardised.append(std)
    tables = {
        "linear": markdown_table(
            f"Linear evaluation of every run ({overview_title} beside its rows)",
            f"Linear evaluation, top-1 %. {ctx.ours}; {EPOCHS}. Paper: the published value of "
            f"the row this run reproduces.", ["model", *cols], linear),
        "linear_standardised": markdown_table(
            "Linear evaluation on standardised features (non-affine batch norm before the "
            "classifier)", f"Top-1 %. {ctx.ours}; {EPOCHS}. Not a paper protocol: a linear number "
            f"that does not depend on the encoder's feature scale; no paper reports it.",
            ["model", *cols], standardised)}

    ensembles = []
    for name in ctx.ensembles:
        by_split = {s: ctx.results.ensemble(s, name) for s in ctx.splits}
        first = by_split[ctx.splits[0]] if ctx.splits else {"runs": {}, "joint": {}}
        streams = list(first["runs"])
        for protocol in GROUPS_PROTOCOLS:
            for group in first["joint"]:
                entry = Entry(f"{name} {group} {protocol}", name, group=group, protocol=protocol)
                row = [f"{group}-{ctx.title(name)} ({'+'.join(streams[:int(group[0])])}; "
                       f"{name}) {protocol}"]
                for split in ctx.splits:
                    m = by_split[split][protocol][group]
                    row += [fmt(m["top1_last"]), fmt(m["top1_best"]),
                            fmt(paper(entry.key, split, ctx.results.streams(entry)))]
                ensembles.append(row)
    tables["ensembles"] = markdown_table(
        f"Multi-stream ensembles ({overview_title}, 2s and 3s rows)",
        f"Top-1 %. {ctx.ours}; {EPOCHS}. 'joint': the streams' linear heads trained together on "
        f"the mean of their logits (CrosSCLR's protocol, the one its numbers are beside); "
        f"'posthoc': the weighted sum of the separately trained heads' logits (AimCLR's "
        f"protocol, weights from params).", ["ensemble", *cols], ensembles)

    knn = [[f"{ctx.title(e.run)} {e.stream} ({e.run})", "ours",
            *[fmt(ctx.results.knn(s, e)) for s in ctx.splits]] for e in every]
    knn += published_rows(ctx.papers, "knn", ctx.splits)
    tables["knn"] = markdown_table(
        "KNN retrieval (k = 1, cosine similarity of pre-projector features)",
        f"Top-1 %. {ctx.ours}. Paper rows: the values the papers report for these splits.",
        ["model", "source", *ctx.splits], knn)
    return tables


def downstream_tables(ctx: Context) -> dict[str, str]:
    """Semi-supervised, fine-tuning, transfer and occlusion, for the runs ``downstream`` lists,
    beside every paper row reporting the same protocol."""
    document, runs, splits, papers, ours = (ctx.document, ctx.runs, ctx.splits, ctx.papers,
                                            ctx.ours)
    downstream = document.get("downstream") or {}
    tables: dict[str, str] = {}
    # semi-supervised: fine-tuned (ISC Table 2, PCM3 Table 2) and linear (CrosSCLR Table 7)
    semi = document.get("semi") or {}
    percents = semi.get("percents", [1, 5, 10, 20])
    protocols = semi.get("protocols", ["finetune", "linear"])
    semi_rows = []
    for run in downstream.get("semi") or []:
        for view in runs[run].encoder_names():
            for percent in percents:
                for protocol in protocols:
                    row = [f"{ctx.title(run)} {view} ({run})", f"{percent:g} %", protocol]
                    for split in splits:
                        m = ctx.results.run(split, run, "semi", view)[f"{percent:g}"][protocol]
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
        rows = [[f"{ctx.title(r)} {v} ({r})", "ours", *[
            f"{fmt(m['top1_last'])} / {fmt(m['top1_best'])}" for m in
            (ctx.results.run(s, r, "finetune", v) for s in splits)]]
            for r in downstream["finetune"] for v in runs[r].encoder_names()]
        rows += published_rows(papers, "finetune", splits)
        tables["finetune"] = markdown_table(
            "Fine-tuning on all labels", f"Top-1 %, last / best epoch. {ours}. Paper rows: "
            f"the values the papers report for these splits.", ["model", "source", *splits], rows)

    # transfer (ISC Table 4, CRRL Table VII, CrosSCLR Table 8)
    transfer = document.get("transfer") or {}
    targets, source = transfer.get("targets") or [], transfer.get("source")
    if downstream.get("transfer") and targets:
        rows = []
        for run in downstream["transfer"]:
            for view in runs[run].encoder_names():
                row = [f"{ctx.title(run)} {view} ({run}, pretrained on {source})"]
                for target in targets:
                    m = ctx.results.run(target, f"{run}@{source}", "transfer", view)
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
            for view in runs[run].encoder_names():
                row = [f"{ctx.title(run)} {view} ({run})", "ours"]
                for split in splits:
                    m = ctx.results.run(split, run, "occlusion", view)
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


def build(params: Path, results_dir: Path) -> dict[str, str]:
    """Every table as Markdown, by file stem."""
    document = read_params(params)
    runs = {name: load_run(params, name) for name in run_names(document)}
    ensembles = document.get("ensembles", [])
    papers = paper_results()
    overview, specs = load_paper_tables()
    reproduces = read_reproduces(document, params, runs, ensembles, papers)
    ensemble_streams = list((document.get("ensemble") or {}).get(
        "streams", ["joint", "motion", "bone"]))
    profile = document.get("profile", "")
    ctx = Context(document, document.get("splits", []), runs, ensembles, papers,
                  Results(results_dir, runs, ensemble_streams),
                  f"Ours: `{params}`" + (f" ({profile})" if profile else ""))
    tables = overview_tables(ctx, overview, {e.key: row for e, row in reproduces.get(overview, [])})
    for spec in specs:  # every paper table that an entry reproduces a row of
        rows = [item for source in spec.sources for item in reproduces.get(source, [])]
        if rows:
            note = (f"Linear evaluation top-1 % ({EPOCHS})"
                    + (" and KNN top-1 % (k = 1, cosine; a published row's KNN is the paper's)"
                       if spec.knn else "")
                    + f". {ctx.ours}. Paper: the published linear value of the row.")
            tables[spec.name] = paper_table(spec, rows, papers, ctx.splits, ctx.results, note)
    tables.update(downstream_tables(ctx))
    return tables


def run(params: Path, results_dir: Path, out_dir: Path) -> dict[str, str]:
    tables = build(params, results_dir)
    files = [Path(out_dir) / f"{name}.md" for name in tables]
    for path, text in zip(files, tables.values()):
        write_text(path, text)
    return Result(tables, {"tables": files})
