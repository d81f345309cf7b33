"""Ablation of CRRL's SER on real NW-UCLA recordings: how the gradient clipping and the decoder
decide whether reconstruction teaches the encoder anything.

Trains SER alone (the profile's `ser` run: GRU encoder, batch 32, SGD lr 0.04 with momentum 0.9
and weight decay 1e-4) under each setting for a few epochs through the project's own pretrain
stage, with the KNN monitor (`knn_every`), and prints the KNN top-1 accuracy (k = 1, cosine, view 3
against views 1 and 2) after each group of epochs, the untrained encoder's at epoch 0, and the
seconds per epoch. Compare the rows of one run with each other; the absolute times depend on the
machine and what else runs on it.

    python benchmarks/bench_crrl_ser.py --raw ../shared/data/nw_ucla [--epochs 20] [--every 5]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import yaml
from tabulate import tabulate

from skelctl.stages import evaluate, prepare, pretrain

SETTINGS = {  # name: (grad_clip, decoder_readout)
    "no clipping, authors' decoder": (None, False),
    "clip 1, paper decoder": (1.0, True),
    "clip 5, paper decoder": (5.0, True),
    "clip 1, authors' decoder": (1.0, False),
    "clip 5, authors' decoder": (5.0, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="the NW-UCLA JSON folder")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--only", choices=list(SETTINGS), action="append",
                        help="run only these settings (repeatable)")
    args = parser.parse_args()
    split = "nw-ucla-xview"
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data, models, results = root / "data", root / "models", root / "results"
        prepare.run("nw-ucla", args.raw, data, variants=("upto50-minmax",), jobs=2, max_bodies=1)
        runs = {f"ser{i}": (name, clip, readout)
                for i, (name, (clip, readout)) in enumerate(SETTINGS.items())
                if not args.only or name in args.only}
        params = root / "params.yaml"
        params.write_text(yaml.safe_dump({
            "defaults": {"variant": "upto50-minmax", "encoder": "gru", "encoder_options": {}},
            "runs": {"untrained": {"method": "untrained", "streams": ["joint"]}, **{
                run: {"method": "crrl", "streams": ["joint"],
                      "options": {"student": "ser", "fusion": "none", "decoder_readout": readout},
                      "train": {"epochs": args.epochs, "batch_size": 32, "lr": 0.04,
                                "lr_steps": [], "checkpoint_every": 1000, "device": "cpu",
                                "grad_clip": clip, "knn_every": args.every}}
                for run, (_, clip, readout) in runs.items()}},
            "knn": {"k": 1, "device": "cpu"}}))
        pretrain.run(split, "untrained", data, models, params, {})
        untrained = evaluate.run_knn(split, "untrained", data, models, results, params,
                                     {})["joint"]["top1"]
        rows = []
        for run, (name, _, _) in runs.items():
            began = time.perf_counter()
            try:
                pretrain.run(split, run, data, models, params, {}, restart=True)
            except FloatingPointError as error:  # the loss diverged
                rows.append([name, f"{untrained:.1f}", f"diverged: {error}"])
                continue
            seconds = (time.perf_counter() - began) / args.epochs
            with open(models / split / f"{run}.loss.csv") as f:
                history = [row for row in csv.DictReader(f) if row.get("knn_joint")]
            rows.append([name, f"{untrained:.1f}",
                         *(f"{float(row['knn_joint']):.1f}" for row in history),
                         f"{seconds:.1f}", f"{float(history[-1]['loss']):.2f}"])
    epochs = range(args.every, args.epochs + 1, args.every)
    print(tabulate(rows, headers=["SER setting", "KNN epoch 0",
                                  *(f"epoch {e}" for e in epochs), "s/epoch", "final loss"]))


if __name__ == "__main__":
    main()
