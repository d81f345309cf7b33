"""Does each method's joint encoder learn on the demo corpus? KNN and linear accuracy against the
untrained encoder, with the KNN accuracy during training.

The demo's corpus and settings (params.demo.yaml: the synthetic NTU-60 corpus of 8 subjects and 2
replications, xsub: 389 training and 232 test samples of 13 classes; 25 frames, ST-GCN with 16
base channels and 64-d output, no dropout; batch 32, lr 0.1 x0.1 at 80 % of the epochs; a queue
of 256 keys, key momentum 0.99, PyTorch's projector initialisation; mining, where a method has
it, off; the nearest neighbours from ``--nn-epoch``, by default half-way), for each method
named. Linear: the params' protocol (lr 3.0) and on standardised
features; KNN: k = 1, cosine.

    python benchmarks/bench_demo_methods.py [--epochs 40] [--nn-epoch 0] skeletonclr aimclr crosnnclr crosnnclr_star
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import yaml
from tabulate import tabulate

from skelctl.data.synth import write_ntu
from skelctl.stages import evaluate, prepare, pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="+")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--nn-epoch", type=int, default=None,
                        help="CrosNNCLR's nn_epoch (default: half the epochs)")
    args = parser.parse_args()
    runs = {"untrained-joint": {"method": "untrained", "streams": ["joint"]}}
    for method in args.methods:
        options = {"feature_dim": 64, "queue_size": 256, "momentum": 0.99,
                   "projector_init_std": None}
        if method in ("aimclr", "crosnnclr_star"):
            options["mining_epoch"] = args.epochs
        if method in ("crosnnclr", "crosnnclr_star"):  # neighbours from half-way
            options["nn_epoch"] = args.epochs // 2 if args.nn_epoch is None else args.nn_epoch
        runs[f"{method}-joint"] = {"method": method, "streams": ["joint"], "options": options}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data, models, results = root / "data", root / "models", root / "results"
        write_ntu("ntu60", root / "raw", subjects=8, replications=2, seed=0)
        prepare.run("ntu60", root / "raw", data, variants=("25-shoulder",), jobs=2,
                    view_names=("joint",))
        params = root / "params.yaml"
        params.write_text(yaml.safe_dump({
            "defaults": {"variant": "25-shoulder", "encoder": "stgcn",
                         "encoder_options": {"hidden": 16, "out_dim": 64, "dropout": 0.0},
                         "train": {"epochs": args.epochs, "batch_size": 32, "lr": 0.1,
                                   "lr_steps": [int(args.epochs * 0.8)], "device": "cpu",
                                   "checkpoint_every": 1000, "knn_every": args.every}},
            "runs": runs, "linear": {"epochs": 60, "lr_steps": [45], "device": "cpu"},
            "knn": {"device": "cpu"}}))
        for run in runs:
            pretrain.run("ntu60-xsub", run, data, models, params, {}, restart=True)
            knn = evaluate.run_knn("ntu60-xsub", run, data, models, results, params, {})
            linear = evaluate.run_linear("ntu60-xsub", run, data, models, results, params, {})
            with open(models / "ntu60-xsub" / f"{run}.loss.csv") as f:
                curve = ", ".join(f"{r['epoch']}: {float(r['knn_joint']):.1f}"
                                  for r in csv.DictReader(f) if r.get("knn_joint"))
            rows.append([run, f"{knn['joint']['top1']:.1f}",
                         f"{linear['joint']['top1_last']:.1f}",
                         f"{linear['joint']['standardised']['top1_last']:.1f}", curve])
            print(tabulate(rows[-1:], tablefmt="plain"), flush=True)
    print(tabulate(rows, headers=["run", "KNN", "linear", "linear, standardised",
                                  "KNN during training (epoch: %)"]))


if __name__ == "__main__":
    main()
