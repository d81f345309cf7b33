"""Peak memory of parsing the reference repositories' arrays against the size of the files.

Writes a synthetic ISC-line benchmark folder (``train_data_joint.npy`` (N, 3, 300, 25, 2) float32,
loop-padded, with ``train_num_frame.npy`` and ``train_label.pkl``) at two sizes, and parses each
with the ``parse`` stage in a fresh process (one worker: everything in that process), reporting
the process's peak resident memory (VmHWM, which counts the pages of a memory-mapped file while
they are mapped) beside the array's size, and the same for a bare process that only imports the
stage. A pyskl annotation pickle of the same recordings (float16, real frames only) is parsed too:
a pickle cannot be read in parts, so its figure grows with the file.

    python benchmarks/bench_array_formats.py                       # N = 2,500 and 10,000
    python benchmarks/bench_array_formats.py --sizes 200 800       # quick look

The 10,000-sample array takes 1.8 GB of disk (twice that with the pyskl pickle and the stores);
the files go to a temporary folder under --tmp.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAMES = 300
NAMES_PER_SETUP = 40 * 3 * 60  # performers x cameras x actions in NTU's naming scheme

MEASURE = """
import json, resource, sys, time
from pathlib import Path
from skelctl.stages import parse
raw, data, fmt = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
report = parse.run(fmt, raw, data, format_name=fmt) if fmt != "none" else {"samples": 0}
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"seconds": seconds, "samples": report["samples"],
                  "vmhwm_mb": int(status["VmHWM"].split()[0]) / 1024,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ntu_name(i: int) -> str:
    setup, rest = divmod(i, NAMES_PER_SETUP)
    subject, rest = divmod(rest, 180)
    camera, action = divmod(rest, 60)
    return f"S{setup + 1:03d}C{camera + 1:03d}P{subject + 1:03d}R001A{action + 1:03d}"


def write_isc(folder: Path, n: int, seed: int = 0, block: int = 500) -> np.ndarray:
    """The ISC-line files for ``n`` recordings of 30 to 200 frames; returns the frame counts.
    Written block by block into a memory map, as the array is larger than memory may allow."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    counts = rng.integers(30, 201, size=n)
    out = np.lib.format.open_memmap(folder / "train_data_joint.npy", mode="w+",
                                    dtype=np.float32, shape=(n, 3, FRAMES, 25, 2))
    t = np.arange(FRAMES)
    for start in range(0, n, block):
        stop = min(start + block, n)
        real = rng.standard_normal((stop - start, 3, FRAMES, 25, 2), dtype=np.float32)
        real[rng.random(stop - start) < 0.6, ..., 1] = 0  # most recordings hold one body
        index = t[None] % counts[start:stop, None]  # loop padding after the real frames
        out[start:stop] = np.take_along_axis(real, index[:, None, :, None, None], axis=2)
    out.flush()
    del out
    np.save(folder / "train_num_frame.npy", counts)
    names = [f"{ntu_name(i)}.skeleton" for i in range(n)]
    with open(folder / "train_label.pkl", "wb") as f:
        pickle.dump((names, [int(name[17:20]) - 1 for name in names]), f)
    return counts


def write_pyskl(path: Path, isc_folder: Path, counts: np.ndarray) -> None:
    """The same recordings as a pyskl annotation pickle (float16 keypoints, real frames)."""
    data = np.load(isc_folder / "train_data_joint.npy", mmap_mode="r")
    with open(isc_folder / "train_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    annotations = []
    for i, (name, label) in enumerate(zip(names, labels)):
        keypoint = np.asarray(data[i, :, :counts[i]]).transpose(3, 1, 2, 0)
        keypoint = keypoint[keypoint.any(axis=(1, 2, 3))].astype(np.float16)
        annotations.append({"frame_dir": name.removesuffix(".skeleton"), "label": label,
                            "keypoint": keypoint, "total_frames": int(counts[i])})
    with open(path, "wb") as f:
        pickle.dump({"split": {"xsub_train": [a["frame_dir"] for a in annotations]},
                     "annotations": annotations}, f, protocol=4)


def measure(raw: Path, data: Path, fmt: str) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE, str(raw), str(data), fmt],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr)
    shutil.rmtree(data, ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(2500, 10000),
                        help="two sample counts N")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the synthetic files go (they are removed at the end)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-arrays-", dir=args.tmp) as tmp:
        tmp = Path(tmp)
        bare = measure(tmp, tmp / "data", "none")
        for n in args.sizes:
            start = time.perf_counter()
            raw = tmp / f"isc{n}"
            counts = write_isc(raw / "xsub", n)
            write_pyskl(tmp / f"pyskl{n}.pkl", raw / "xsub", counts)
            made = time.perf_counter() - start
            array_mb = (raw / "xsub" / "train_data_joint.npy").stat().st_size / 2 ** 20
            pickle_mb = (tmp / f"pyskl{n}.pkl").stat().st_size / 2 ** 20
            print(f"N={n}: wrote {array_mb:,.0f} MB of ISC-line array (mean {counts.mean():.0f} "
                  f"real frames of {FRAMES}) and a {pickle_mb:,.0f} MB pyskl pickle in "
                  f"{made:.0f} s", flush=True)
            for fmt, path, mb in (("isc", raw, array_mb), ("pyskl", tmp / f"pyskl{n}.pkl",
                                                         pickle_mb)):
                r = measure(path, tmp / "data", fmt)
                assert r["samples"] == n, r
                rows.append((fmt, n, mb, r))
            shutil.rmtree(raw)
            (tmp / f"pyskl{n}.pkl").unlink()
    print(f"\nbare process (python + the parse stage imported): peak RSS "
          f"{bare['vmhwm_mb']:.0f} MB\n")
    print(f"{'format':<7} {'N':>7} {'file':>10} {'parse s':>8} {'samples/s':>10} "
          f"{'peak RSS':>10} {'peak - bare':>12} {'(peak - bare) / file':>21}")
    for fmt, n, mb, r in rows:
        print(f"{fmt:<7} {n:>7} {mb:>7,.0f} MB {r['seconds']:>8.1f} {n / r['seconds']:>10.0f} "
              f"{r['vmhwm_mb']:>7.0f} MB {r['vmhwm_mb'] - bare['vmhwm_mb']:>9.0f} MB "
              f"{(r['vmhwm_mb'] - bare['vmhwm_mb']) / mb:>20.1%}")


if __name__ == "__main__":
    main()
