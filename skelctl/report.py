"""Paper-style Markdown tables: our numbers beside the ones the papers report.

The papers' numbers live in ``resources/paper_results.csv``, one row per reported value with the
paper and table it comes from. Our headline is the last-epoch accuracy; the best epoch's (chosen on
the test set, as the reference code reports it) is shown beside it, labelled.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

from tabulate import tabulate


@dataclass(frozen=True)
class PaperValue:
    paper: str
    table: str
    row: str
    encoder: str
    streams: str
    dataset: str
    protocol: str
    metric: str
    value: float
    # the dataset the encoder was pretrained on when it differs from ``dataset`` (transfer);
    # empty when pretrained and evaluated on the same dataset
    source: str = ""


def paper_results() -> list[PaperValue]:
    text = resources.files("skelctl.resources").joinpath("paper_results.csv").read_text()
    return [PaperValue(**{**row, "value": float(row["value"]), "source": row.get("source") or ""})
            for row in csv.DictReader(text.splitlines())]


def paper_value(values: list[PaperValue], paper: str, table: str, row: str, split: str,
                metric: str, streams: str | None = None, source: str = "") -> float | None:
    """The value a paper reports in a table for a row and a split (``ntu60-xsub``), if any.

    ``split`` is the evaluation (target) split; ``source`` the pretraining dataset of a transfer
    result (``"ntu60"``). By default only results pretrained on the evaluation dataset match.
    """
    dataset, _, protocol = split.rpartition("-")
    for v in values:
        if (v.paper.startswith(paper) and v.table == table and v.row == row
                and v.dataset == dataset and v.protocol == protocol and v.metric == metric
                and v.source == source and (streams is None or v.streams == streams)):
            return v.value
    return None


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def markdown_table(title: str, note: str, headers: list[str], rows: list[list[object]]) -> str:
    return (f"### {title}\n\n{note}\n\n"
            + tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True) + "\n")
