"""The README's figure: KNN top-1 accuracy on a split's test part during pretraining, one line per
run, read from the runs' loss histories (``<models>/<run>.loss.csv``, column ``knn_joint``) and
drawn with the project's own curve plot.

    python docs/figures/knn_curves.py --models WORKSPACE/models/nw-ucla-xview \\
        --runs cml ser crrl --baseline 65.3 --out docs/figures/nw-ucla-knn.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from skelctl.plots import save_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="models/<split> of a workspace")
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--baseline", type=float, help="the untrained encoder's KNN accuracy")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows: dict[int, dict[str, float]] = {}
    for run in args.runs:
        with open(args.models / f"{run}.loss.csv") as f:
            for row in csv.DictReader(f):
                if row.get("knn_joint"):
                    rows.setdefault(int(row["epoch"]), {"epoch": int(row["epoch"])})[run] = \
                        float(row["knn_joint"])
    names = list(args.runs)
    if args.baseline is not None:
        for row in rows.values():
            row["untrained"] = args.baseline
        names.append("untrained")
    save_curves([rows[e] for e in sorted(rows)], "epoch", names, args.out,
                "KNN accuracy (k = 1) on the test part during pretraining", "top-1 %")


if __name__ == "__main__":
    main()
