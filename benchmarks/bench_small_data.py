"""Which pretraining settings suit a small dataset: measured on real NW-UCLA recordings imported
through the generic format, as a user imports their own data, and on a subset of a few hundred.

The recordings are read with the NW-UCLA reader and written out as a generic raw folder
(``<name>.npy`` + ``samples.csv``, 20 joints, labels from 0); ``prepare generic --name`` then
imports it with the cross-view protocol given as a rule (views 1 and 2 train, view 3 tests). The
subset keeps every third recording (495). Both are measured under a cross-view protocol (views 1
and 2 train) and a cross-subject one (odd subjects train), each with the seeds asked for (the
seed of pretraining and of the untrained encoder). For each dataset, each candidate
recipe is pretrained on the training part and its joint encoder evaluated beside the untrained
encoder of the same architecture, under a linear protocol (``--linear``: ``crrl``, CRRL's
evaluation code's, as ``params.small-data.yaml`` gives it to its recipe; or ``lr3``, CrosSCLR's
lr 3.0 for 100 epochs, the recipe's protocol before), its standardised form, and KNN (k = 1,
cosine); the KNN accuracy during training (every ``--every`` epochs) is printed too. Candidates
(the params of each are in ``RECIPES``):

- ``ser``: CRRL's sequence reconstruction (SER) alone, GRU encoder, variable length up to 50 frames,
  in the body's frame and min-max scaled, gradient norm clipped at 5;
- ``cml``: CRRL's contrastive motion learner (CML) alone, the same encoder and input, its
  authors' set-up (lr 0.01, no decay, no clipping);
- ``crrl``: CML for the same number of epochs, then SER distilled from it (CRRL, Algorithm 1);
- ``skeletonclr``: SkeletonCLR with an ST-GCN on 50 frames with the shoulder normalisation, a
  queue a quarter of the training set, key momentum 0.99;
- ``aimclr``, ``crosnnclr``, ``crosnnclr_star``: those methods with SkeletonCLR's settings
  (AimCLR's mining from half-way, the nearest neighbours from the first epoch).

    python benchmarks/bench_small_data.py --raw ../shared/data/nw_ucla [--epochs 60] [--every 10]
        [--recipe ser] [--protocol xview --protocol xsub] [--seed 0 --seed 1] [--linear lr3]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

from skelctl.data.formats.generic import ImportOptions, write_samples
from skelctl.data.formats.ucla import NW_UCLA
from skelctl.stages import evaluate, prepare, pretrain

PROJECT = Path(__file__).resolve().parents[1]
# cross-view: views 1 and 2 train, view 3 tests; cross-subject: subjects 1, 3, 5, 7, 9 train
PROTOCOLS = {"xview": {"train": {"view": [1, 2]}},
             "xsub": {"train": {"subject": [1, 3, 5, 7, 9]}}}
# recipe -> (untrained baseline run, pretraining run); the queue size is filled in per dataset
RECIPES: dict[str, dict[str, Any]] = {
    "ser": {
        "variant": "upto50-bodyframe+minmax", "encoder": "gru", "encoder_options": {},
        "method": "crrl", "options": {"student": "ser", "fusion": "none",
                                      "decoder_readout": False},
        "train": {"batch_size": 32, "lr": 0.04, "lr_steps": [20, 50], "lr_gamma": 0.5,
                  "weight_decay": 0.0001, "grad_clip": 5.0},
    },
    "cml": {
        "variant": "upto50-bodyframe+minmax", "encoder": "gru", "encoder_options": {},
        "method": "crrl", "options": {"student": "cml", "fusion": "none"},
        "train": {"batch_size": 32, "lr": 0.01, "lr_steps": [], "weight_decay": 0.0001},
    },
    "skeletonclr": {
        "variant": "50-shoulder", "encoder": "stgcn",
        "encoder_options": {"hidden": 16, "out_dim": 256, "dropout": 0.5},
        "method": "skeletonclr", "options": {"momentum": 0.99},
        "train": {"batch_size": 64, "lr": 0.1, "lr_steps": [50], "lr_gamma": 0.1,
                  "weight_decay": 0.0001},
    },
}
RECIPES["crrl"] = {**RECIPES["ser"], "options": {"decoder_readout": False}}
# AimCLR, CrosNNCLR and CrosNNCLR* with SkeletonCLR's small-dataset settings (mining from half-way)
for _method in ("aimclr", "crosnnclr", "crosnnclr_star"):
    RECIPES[_method] = {**RECIPES["skeletonclr"], "method": _method}


def import_generic(raw: Path, out: Path, keep_every: int) -> int:
    """NW-UCLA as a generic raw folder (every ``keep_every``-th recording); returns its size."""
    inventory = NW_UCLA.inventory(raw)
    samples = [s for item in inventory.items[::keep_every] for s in NW_UCLA.read(item)]
    write_samples(out, samples)
    return len(samples)


def linear_protocol(name: str) -> dict[str, Any]:
    """The linear section: ``crrl`` as the small-data profile probes its recipe (CRRL's
    evaluation protocol), ``lr3`` CrosSCLR's."""
    if name == "lr3":
        return {"epochs": 100, "lr": 3.0, "device": "cpu"}
    profile = yaml.safe_load((PROJECT / "params.small-data.yaml").read_text())
    return {**profile["linear"], "device": "cpu"}


def params_for(recipes: list[str], epochs: int, every: int, train_size: int,
               seed: int, linear: str = "crrl") -> dict[str, Any]:
    runs = {}
    for name in recipes:
        recipe = RECIPES[name]
        common = {k: recipe[k] for k in ("variant", "encoder", "encoder_options")}
        options = dict(recipe["options"])
        if recipe["method"] != "crrl":  # a MoCo queue: a quarter of the training set
            options["queue_size"] = max(train_size // 4, 32)
        if recipe["method"] in ("aimclr", "crosnnclr_star"):
            options["mining_epoch"] = epochs // 2
        if name == "crrl":  # the CML step as long as the SER step, at CML's lr
            options["first"] = {"epochs": epochs, "lr": 0.01}
        runs[f"{name}-untrained"] = {"method": "untrained", "streams": ["joint"], **common,
                                     "train": {"seed": seed}}
        runs[name] = {"method": recipe["method"], "streams": ["joint"], **common,
                      "options": options,
                      "train": {**recipe["train"], "epochs": epochs, "knn_every": every,
                                "checkpoint_every": 1000, "device": "cpu", "seed": seed}}
    return {"runs": runs, "knn": {"k": 1, "device": "cpu"},
            "linear": linear_protocol(linear)}


def measure(split: str, recipe: str, data: Path, models: Path, results: Path,
            params: Path) -> list[str]:
    """Pretrain the recipe and its untrained encoder; their linear (plain and standardised) and
    KNN top-1 % and the pretrained run's KNN curve."""
    figures = {}
    for run in (f"{recipe}-untrained", recipe):
        pretrain.run(split, run, data, models, params, {}, restart=True)
        linear = evaluate.run_linear(split, run, data, models, results, params, {})["joint"]
        knn = evaluate.run_knn(split, run, data, models, results, params, {})
        figures[run] = (linear["top1_last"], linear["standardised"]["top1_last"],
                        knn["joint"]["top1"])
    with open(models / split / f"{recipe}.loss.csv") as f:
        curve = ", ".join(f"{row['epoch']}: {float(row['knn_joint']):.1f}"
                          for row in csv.DictReader(f) if row.get("knn_joint"))
    untrained, trained = figures[f"{recipe}-untrained"], figures[recipe]
    return [f"{u:.1f}, {t:.1f}" for u, t in zip(untrained, trained)] + [curve]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="the NW-UCLA JSON folder")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--recipe", choices=list(RECIPES), action="append",
                        help="measure only these recipes (repeatable)")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), action="append",
                        help="protocols to measure (repeatable; default: both)")
    parser.add_argument("--seed", type=int, action="append", help="seeds (repeatable; default 0)")
    parser.add_argument("--linear", choices=["crrl", "lr3"], default="crrl",
                        help="the linear protocol: CRRL's evaluation code's (default) or lr 3.0")
    parser.add_argument("--subset-only", action="store_true", help="only the few-hundred subset")
    parser.add_argument("--full-only", action="store_true", help="only the whole dataset")
    args = parser.parse_args()
    recipes = args.recipe or list(RECIPES)
    datasets = {"subset": 3} if args.subset_only else {"full": 1} if args.full_only else \
        {"full": 1, "subset": 3}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for label, keep_every in datasets.items():
            name = f"ucla-{label}"
            size = import_generic(args.raw, root / "raw" / name, keep_every)
            data, models, results = root / "data", root / "models", root / "results"
            variants = tuple(dict.fromkeys(RECIPES[r]["variant"] for r in recipes))
            summary = prepare.run("generic", root / "raw" / name, data, variants=variants,
                                  jobs=2, max_bodies=1, view_names=("joint",), name=name,
                                  options=ImportOptions(protocols=PROTOCOLS))
            for protocol in args.protocol or list(PROTOCOLS):
                train_size = summary["splits"][protocol]["train"]
                split = f"{name}-{protocol}"
                for seed in args.seed or [0]:
                    params = root / f"params-{label}-{seed}.yaml"
                    params.write_text(yaml.safe_dump(params_for(recipes, args.epochs, args.every,
                                                                train_size, seed,
                                                                args.linear)))
                    for recipe in recipes:
                        rows.append([f"{label} ({size}; train {train_size})", protocol, seed,
                                     recipe, *measure(split, recipe, data, models, results,
                                                      params)])
                        print(tabulate(rows[-1:], tablefmt="plain"), flush=True)
    print(tabulate(rows, headers=["data", "protocol", "seed", "recipe",
                                  "linear: untrained, pretrained",
                                  "standardised: untrained, pretrained",
                                  "KNN: untrained, pretrained", "KNN during training (epoch: %)"]))


if __name__ == "__main__":
    main()
