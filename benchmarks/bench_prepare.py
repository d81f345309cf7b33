"""Benchmark of `prepare` (parse + clean + views) on synthetic NTU files.

Prints files/s with 1 and 2 workers against a straightforward line-by-line reader that builds one
Python dict per joint (the way the reference code reads .skeleton files), and the peak memory of
the run at two corpus sizes to show it does not grow with N.

    python benchmarks/bench_prepare.py                    # N = 2000 and 8000
    python benchmarks/bench_prepare.py --sizes 200 800    # quick look

Each configuration runs in a fresh process so its peak RSS is its own; worker processes are shut
down at the end of the run so their peak RSS is counted too (as the largest single worker).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skelctl.data.synth import write_ntu


def make_corpus(folder: Path, n: int, pool: list[Path]) -> None:
    """``n`` distinct NTU-60 file names over a pool of synthetic recordings (copied, not linked)."""
    folder.mkdir(parents=True)
    k = 0
    for setup in range(1, 18):
        for subject in range(1, 41):
            for camera in (1, 2, 3):
                for action in range(1, 61):
                    if k == n:
                        return
                    name = f"S{setup:03d}C{camera:03d}P{subject:03d}R001A{action:03d}.skeleton"
                    shutil.copyfile(pool[k % len(pool)], folder / name)
                    k += 1


def read_skeleton_baseline(path: Path, max_body: int = 4, num_joint: int = 25) -> np.ndarray:
    """Line-by-line reader with a dict per body and per joint, then the copy into an array."""
    with open(path) as f:
        sequence = {"numFrame": int(f.readline()), "frameInfo": []}
        for _ in range(sequence["numFrame"]):
            frame = {"numBody": int(f.readline()), "bodyInfo": []}
            for _ in range(frame["numBody"]):
                keys = ["bodyID", "clipedEdges", "handLeftConfidence", "handLeftState",
                        "handRightConfidence", "handRightState", "isResticted", "leanX", "leanY",
                        "trackingState"]
                body = {k: float(v) for k, v in zip(keys, f.readline().split())}
                body["numJoint"] = int(f.readline())
                body["jointInfo"] = []
                for _ in range(body["numJoint"]):
                    jkeys = ["x", "y", "z", "depthX", "depthY", "colorX", "colorY",
                             "orientationW", "orientationX", "orientationY", "orientationZ",
                             "trackingState"]
                    body["jointInfo"].append({k: float(v) for k, v in zip(jkeys,
                                                                          f.readline().split())})
                frame["bodyInfo"].append(body)
            sequence["frameInfo"].append(frame)
    data = np.zeros((max_body, sequence["numFrame"], num_joint, 3))
    for n, frame in enumerate(sequence["frameInfo"]):
        for m, body in enumerate(frame["bodyInfo"]):
            for j, v in enumerate(body["jointInfo"]):
                if m < max_body and j < num_joint:
                    data[m, n, j, :] = [v["x"], v["y"], v["z"]]
    return data


RUN_ONE = """
import json, resource, sys, time
from pathlib import Path
from joblib.externals.loky import get_reusable_executor
from skelctl.stages import prepare
raw, data, jobs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
summary = prepare.run("ntu60", raw, data, variants=("50-shoulder",), jobs=jobs)
seconds = time.perf_counter() - start
get_reusable_executor().shutdown(wait=True)
print(json.dumps({"seconds": seconds, "samples": summary["samples"],
                  "parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_prepare(raw: Path, data: Path, jobs: int) -> dict:
    result = subprocess.run([sys.executable, "-c", RUN_ONE, str(raw), str(data), str(jobs)],
                            capture_output=True, text=True, check=True)
    shutil.rmtree(data)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(2000, 8000),
                        help="two corpus sizes N (the first is also timed with 1 worker)")
    parser.add_argument("--pool", type=int, default=156, help="distinct recordings to copy from")
    args = parser.parse_args()
    small, large = args.sizes
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        subjects = max(1, args.pool // 39)
        pool = [p for p in write_ntu("ntu60", tmp / "pool", subjects=subjects, replications=1)
                if p.stem[-3:] != "000"][: args.pool]
        for n in (small, large):
            make_corpus(tmp / f"raw{n}", n, pool)
        mb = sum(p.stat().st_size for p in (tmp / f"raw{small}").iterdir()) / 2 ** 20
        print(f"corpus: {small} and {large} synthetic NTU files, {mb / small * 1024:.0f} KB "
              f"per file on average (made in {time.perf_counter() - t:.0f} s)\n")

        files = sorted((tmp / f"raw{small}").iterdir())
        start = time.perf_counter()
        for path in files:
            read_skeleton_baseline(path)
        baseline = len(files) / (time.perf_counter() - start)

        rows = [("baseline reader (parse only), 1 process", small, baseline, None, None)]
        for n, jobs in ((small, 1), (small, 2), (large, 2)):
            r = run_prepare(tmp / f"raw{n}", tmp / "data", jobs)
            assert r["samples"] <= n
            rows.append((f"skelctl prepare (parse+clean+views), {jobs} worker(s)", n,
                         n / r["seconds"], r["parent_mb"], r["worker_mb"]))

    print(f"{'what':<56} {'N':>6} {'files/s':>8} {'x base':>7} {'peak parent':>12} "
          f"{'peak worker':>12}")
    for what, n, rate, parent, worker in rows:
        mem = (f"{parent:>9.0f} MB {worker:>9.0f} MB" if parent is not None
               else f"{'-':>12} {'-':>12}")
        print(f"{what:<56} {n:>6} {rate:>8.0f} {rate / baseline:>6.1f}x {mem}")
    two = [r for r in rows if "2 worker" in r[0]]
    print(f"\nwith 2 workers: {two[0][2] / baseline:.1f}x the baseline's files/s (target >= 5x); "
          f"peak parent memory {two[0][3]:.0f} MB at N={two[0][1]} vs {two[1][3]:.0f} MB at "
          f"N={two[1][1]}")


if __name__ == "__main__":
    main()
