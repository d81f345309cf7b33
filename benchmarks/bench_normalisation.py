"""How much the input's normalisation decides retrieval before any training, on any dataset: the
dataset prepared in several variants, each measured on each protocol by the 1-NN (cosine)
accuracy of an untrained encoder's features and of the flattened input itself.

For each variant, protocol and seed: CRRL's encoder (2-layer bidirectional GRU 256, temporal
average pooling, packed) untrained, with the seed's weights, and its KNN top-1 on the protocol's
test part against its training part; and, once per variant and protocol, 1-NN on the flattened
joint view (no encoder). A variant whose normalisation needs joints the layout does not name (SBU's
`openni15` has no spine for `spine`) is listed as not available. Before the table, how much body
0's heading varies across the recordings (``heading_spread``), over all samples and over each
protocol's training part: the statistic of a rule that picks the body frame or camera
coordinates from the data (docs/small-data.md).

NW-UCLA (the default; views 1 and 2 train, view 3 tests; P&C report 74.5 % for their untrained
encoder on their body-frame arrays):

    python benchmarks/bench_normalisation.py --raw ../shared/data/nw_ucla [--seeds 0 1]
        [--variants upto50-minmax upto50-bodyframe+minmax ...] [--init xavier default]

A generic raw folder (docs/small-datasets.md), its layout and protocols given as `skelctl
prepare` takes them (``--rule`` is prepare's ``--protocol``), or from a params file's
``datasets`` entry (``--dataset sbu --params FILE``):

    python benchmarks/bench_normalisation.py --raw data/raw/msrc12 --dataset generic --name msrc12
        --layout kinect20 --rule xsub=subject:1,3,5,7,9,11,13,15,17,19,21,23,25,27,29
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import click
import numpy as np
import torch
import yaml
from tabulate import tabulate

from skelctl.cli import protocol_rule
from skelctl.data.bodies import Denoising
from skelctl.data.clean import (body_frames, check_joints, mean_poses, normalisation_steps,
                                parse_variant)
from skelctl.data.store import Store
from skelctl.evaluate.knn import nearest_neighbours
from skelctl.skeletons import Layout
from skelctl.stages import clean, evaluate, parse, paths, pretrain, views

VARIANTS = ("upto50-minmax", "upto50-spine", "upto50-bodyframe", "upto50-bodyframe+minmax",
            "stride50-bodyframe+minmax", "50-shoulder", "50-bodyframe")
BODY_STEPS = ("shoulder", "spine", "bodyframe", "meanbodyframe")  # the steps that read joints


def flattened_knn(store: Store, protocol: str) -> float:
    """1-NN (cosine) from the protocol's test part to its training part on the flattened joint
    view."""
    joint = torch.from_numpy(store.view("joint")[:]).flatten(1)
    train, test = (torch.from_numpy(store.split(f"{protocol}/{part}")) for part in ("train", "val"))
    labels = torch.from_numpy(np.asarray(store.meta()["label"]))
    index, _ = nearest_neighbours(joint[train], joint[test], k=1)
    return float((labels[train][index[:, 0]] == labels[test]).float().mean() * 100)


def body_rotations(cleaned: Store) -> np.ndarray:
    """Each sample's body frame in camera coordinates ``(n, 3, 3)``, rows the body's x (hips
    across), y (forward) and z (spine up) axes: body 0's frame from its mean pose, the rotation
    that `meanbodyframe` removes."""
    poses = mean_poses(cleaned.file["sequences/data"][()], cleaned.offsets)
    return body_frames(poses, cleaned.layout())[1]


def heading_spread(rotations: np.ndarray) -> float:
    """How much the samples' headings vary: each sample's forward axis turned about the vertical
    only (projected on the plane across the samples' mean spine direction, so that a tilted
    camera or a bow is not a change of heading), then the mean angle in degrees between a
    sample's heading and the samples' mean heading (0 when all face the same way; about 90
    when the headings spread evenly round the circle, or split between two opposite ones)."""
    up = rotations[:, 2].mean(axis=0)
    up = up / max(np.linalg.norm(up), 1e-12)
    forward = rotations[:, 1] - (rotations[:, 1] @ up)[:, None] * up
    forward = forward / np.maximum(np.linalg.norm(forward, axis=1, keepdims=True), 1e-12)
    mean = forward.mean(axis=0)
    mean = mean / max(np.linalg.norm(mean), 1e-12)
    return float(np.degrees(np.arccos(np.clip(forward @ mean, -1.0, 1.0))).mean())


def missing_joints(variant: str, layout: Layout) -> str | None:
    """Why the layout cannot give ``variant`` (the joints it lacks), or None when it can."""
    for step in normalisation_steps(parse_variant(variant)[1]):
        if step in BODY_STEPS:
            try:
                check_joints(layout, step)
            except ValueError as err:
                return str(err).split(":")[0]
    return None


def rule(text: str) -> tuple[str, dict]:
    """``NAME=COLUMN:V,V`` as `skelctl prepare --protocol` reads it."""
    try:
        return protocol_rule(text)
    except click.BadParameter as err:
        raise argparse.ArgumentTypeError(err.message) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--dataset", default="nw-ucla",
                        help="a format (nw-ucla, generic, ...) or a dataset listed in --params")
    parser.add_argument("--name", help="the dataset's name (generic; by default DATASET)")
    parser.add_argument("--params", type=Path, help="a params file whose `datasets` lists DATASET")
    parser.add_argument("--layout",
                        help="the joint layout (generic; by default the entry's, else auto)")
    parser.add_argument("--rule", type=rule, action="append", default=[],
                        help="a protocol rule NAME=COLUMN:V,V (generic; repeatable)")
    parser.add_argument("--protocols", nargs="+", help="protocols to measure (default: all)")
    parser.add_argument("--max-bodies", type=int, default=1)
    parser.add_argument("--denoise", choices=["true", "false"], default="true")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--init", nargs="+", default=["xavier", "default"],
                        help="the GRU's initialisation(s): xavier (zero biases) or PyTorch's")
    args = parser.parse_args()
    format_name, dataset, options = parse.import_settings(
        args.dataset, args.params, name=args.name, layout=args.layout, protocols=dict(args.rule))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, models, results = root / "data", root / "models", root / "results"
        parse.run(dataset, args.raw, data, jobs=2, format_name=format_name, options=options)
        clean.run(dataset, data, max_bodies=args.max_bodies,
                  denoising=Denoising(enabled=args.denoise == "true"), jobs=2)
        cleaned = Store(paths.cleaned(data, dataset))
        layout = cleaned.layout()
        protocols = args.protocols or cleaned.protocols
        if missing_joints("50-bodyframe", layout) is None:
            rotations = body_rotations(cleaned)
            print(f"{dataset}: heading spread of body 0 (mean angle to the mean heading, degrees): "
                  f"all samples {heading_spread(rotations):.1f}, " + ", ".join(
                      f"{p} training part "
                      f"{heading_spread(rotations[cleaned.split(f'{p}/train')]):.1f}"
                      for p in protocols))
        rows = []
        for variant in args.variants:
            missing = missing_joints(variant, layout)
            if missing:
                rows.append([variant, "-", f"not available: {missing}"])
                continue
            views.run(dataset, variant, data, views=("joint",), jobs=2)
            store = Store(paths.views(data, dataset, variant))
            for protocol in protocols:
                split = f"{dataset}-{protocol}"
                row = [variant, protocol, f"{flattened_knn(store, protocol):.1f}"]
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
                        pretrain.run(split, run, data, models, params, {})
                        knn = evaluate.run_knn(split, run, data, models, results, params, {})
                        figures.append(knn["joint"]["top1"])
                    row.append(" / ".join(f"{f:.1f}" for f in figures))
                rows.append(row)
    seeds = ", ".join(map(str, args.seeds))
    headers = ["variant", "protocol", "1-NN on the input",
               *(f"untrained GRU ({init}), seeds {seeds}" for init in args.init)]
    print(tabulate(rows, headers=headers, tablefmt="github"))


if __name__ == "__main__":
    main()
