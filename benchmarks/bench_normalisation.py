"""How much the input's normalisation decides a cross-view figure before any training: NW-UCLA
(views 1 and 2 train, view 3 tests) prepared in several variants, each measured by the 1-NN
(cosine) accuracy of an untrained encoder's features and of the flattened input itself.

For each variant and seed: CRRL's encoder (2-layer bidirectional GRU 256, temporal average
pooling, packed) untrained, with the seed's weights, and its KNN top-1 on view 3; and, once per
variant, 1-NN on the flattened joint view (no encoder). P&C report 74.5 % for their untrained
encoder on their body-frame arrays.

    python benchmarks/bench_normalisation.py --raw ../shared/data/nw_ucla [--seeds 0 1]
        [--variants upto50-minmax upto50-bodyframe+minmax ...] [--init xavier default]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from tabulate import tabulate

from skelctl.data.store import Store
from skelctl.evaluate.knn import nearest_neighbours
from skelctl.stages import evaluate, paths, prepare, pretrain

VARIANTS = ("upto50-minmax", "upto50-spine", "upto50-bodyframe", "upto50-bodyframe+minmax",
            "stride50-bodyframe+minmax", "50-shoulder", "50-bodyframe")


def flattened_knn(store: Store) -> float:
    """1-NN (cosine) from view 3 to views 1 and 2 on the flattened joint view."""
    joint = torch.from_numpy(store.view("joint")[:]).flatten(1)
    train, test = (torch.from_numpy(store.split(f"xview/{part}")) for part in ("train", "val"))
    labels = torch.from_numpy(np.asarray(store.meta()["label"]))
    index, _ = nearest_neighbours(joint[train], joint[test], k=1)
    return float((labels[train][index[:, 0]] == labels[test]).float().mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--init", nargs="+", default=["xavier", "default"],
                        help="the GRU's initialisation(s): xavier (zero biases) or PyTorch's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, models, results = root / "data", root / "models", root / "results"
        prepare.run("nw-ucla", args.raw, data, variants=tuple(args.variants), jobs=2,
                    max_bodies=1, view_names=("joint",))
        rows = []
        for variant in args.variants:
            store = Store(paths.views(data, "nw-ucla", variant))
            row = [variant, f"{flattened_knn(store):.1f}"]
            for init in args.init:
                figures = []
                for seed in args.seeds:
                    run = f"rand-{init}-{seed}-{variant.replace('+', '_')}"
                    params = root / f"{run}.yaml"
                    params.write_text(yaml.safe_dump({
                        "defaults": {"variant": variant, "encoder": "gru",
                                     "encoder_options": {"init": init},
                                     "train": {"seed": seed, "device": "cpu"}},
                        "runs": {run: {"method": "untrained", "streams": ["joint"]}},
                        "knn": {"k": 1, "device": "cpu"}}))
                    pretrain.run("nw-ucla-xview", run, data, models, params, {})
                    knn = evaluate.run_knn("nw-ucla-xview", run, data, models, results, params, {})
                    figures.append(knn["joint"]["top1"])
                row.append(" / ".join(f"{f:.1f}" for f in figures))
            rows.append(row)
    seeds = ", ".join(map(str, args.seeds))
    print(tabulate(rows, headers=["variant", "1-NN on the input",
                                  *(f"untrained GRU ({init}), seeds {seeds}" for init in args.init)],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
