#!/usr/bin/env bash
# ISC and PCM3 on NW-UCLA on one GPU: the NW-UCLA profile's runs (hours on one CPU thread) and the
# same at the papers' widths (GRU 3 x 1,024, the full A-GCN: about 24 minutes an epoch on one CPU
# thread), all in parallel on the GPU, with their untrained encoders, after bench_train.py on it
# alone. Prints the KNN curve of every run and the evaluations of those that finished in time.
#
#   skelctl prepare nw-ucla --raw RAW --data-dir WORKDIR/data --variant 64-bodyframe \
#       --views joint --max-bodies 1
#   benchmarks/gpu_nw_ucla.sh WORKDIR [SECONDS] [EPOCHS]
#
# WORKDIR gets params.yaml (params.nw-ucla.yaml plus the runs below), models/, results/ and logs/.
# SECONDS (default 900) bounds the whole script: trainings still running when the evaluations
# must start are stopped (SIGTERM: the checkpoint and the loss history with its KNN curve stay).
# EPOCHS, when given, replaces every run's epoch count, and BENCH=0 leaves the benchmark out
# (a quick check of the script itself on a CPU: DEVICE=cpu BENCH=0 ... 240 1).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
work=$1; seconds=${2:-900}; epochs=${3:-}
start=$(date +%s)
cd "$work" || exit 2
mkdir -p logs
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

"$py" - "$here/params.nw-ucla.yaml" "$epochs" <<'EOF' || exit 2
import os, sys, yaml
params = yaml.safe_load(open(sys.argv[1]))
runs = params["runs"]
paper_isc = {"encoder_options": {"bigru": {}, "agcn": {}}}  # each encoder's defaults: the paper's
runs.update({
    # the papers' widths (GRU 3 x 1024 as two causal chains, the full A-GCN; PCM3's prompts and
    # decoder at their defaults, the paper's) with the profile's other settings, bf16 autocast
    "isc-paper": {**runs["isc"], **paper_isc, "train": {**runs["isc"]["train"], "amp": True}},
    "untrained-isc-paper": {**runs["untrained-isc"], **paper_isc},
    "pcm3-paper": {**runs["pcm3-joint"], "encoder_options": {"input_norm": True},
                   "options": {"queue_size": 256, "momentum": 0.99},
                   "train": {**runs["pcm3-joint"]["train"], "amp": True}},
    "untrained-pcm3-paper": {**runs["untrained-pcm3"], "encoder_options": {"input_norm": True}},
})
if sys.argv[2]:
    for name in ("isc", "pcm3-joint", "isc-paper", "pcm3-paper"):
        runs[name]["train"].update(epochs=int(sys.argv[2]), lr_steps=[], knn_every=1)
params["defaults"]["train"]["device"] = os.environ.get("DEVICE", "auto")
plain = type("Plain", (yaml.SafeDumper,), {"ignore_aliases": lambda self, data: True})
yaml.dump(params, open("params.yaml", "w"), Dumper=plain, sort_keys=False)  # no &id anchors
EOF

A=(--split nw-ucla-xview --params params.yaml)
trained=(isc pcm3-joint isc-paper pcm3-paper)
untrained=(untrained-isc untrained-pcm3 untrained-isc-paper untrained-pcm3-paper)

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ "${BENCH:-1}" != 0 ]; then
  echo "=== bench_train.py, alone on the device"
  "$py" "$here/benchmarks/bench_train.py" --device "${DEVICE:-cuda}" --repeats 5 2>&1 \
    | tee logs/bench.log
fi

echo "=== pretraining ${trained[*]} in parallel ($(( $(date +%s) - start )) s)"
pids=()
for r in "${trained[@]}" "${untrained[@]}"; do
  "$py" -m skelctl pretrain "$r" "${A[@]}" > "logs/$r.pretrain.log" 2>&1 &
  pids+=($!)
done
alive() { for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
# until every pretraining has ended or the clock passes $1
wait_until() { while alive && [ "$(date +%s)" -lt "$1" ]; do sleep 1; done; }
# leave a fifth of the time (at least 60 s) for the evaluations
wait_until $(( start + seconds - (seconds / 5 > 60 ? seconds / 5 : 60) ))
# SIGTERM unwinds after the step in flight; a step that outlasts 30 s more is killed (the last
# checkpoint and the loss history stay either way)
kill -TERM "${pids[@]}" 2>/dev/null
wait_until $(( $(date +%s) + 30 ))
kill -KILL "${pids[@]}" 2>/dev/null
wait
echo "=== evaluating ($(( $(date +%s) - start )) s)"
for r in "${trained[@]}" "${untrained[@]}"; do
  if ls models/nw-ucla-xview/"$r"/*.encoder.pt >/dev/null 2>&1; then
    ( "$py" -m skelctl knn "$r" "${A[@]}" && "$py" -m skelctl linear "$r" "${A[@]}" ) \
      > "logs/$r.eval.log" 2>&1 &
  fi
done
wait

echo "=== results ($(( $(date +%s) - start )) s)"
"$py" - "${trained[@]}" "${untrained[@]}" <<'EOF'
import csv, json, sys
from pathlib import Path
for run in sys.argv[1:]:
    history = Path(f"models/nw-ucla-xview/{run}.loss.csv")
    rows = list(csv.DictReader(history.open())) if history.exists() else []
    line = f"{run}: {len(rows)} epochs"
    if rows:
        line += f", loss {float(rows[0]['loss']):.3f} -> {float(rows[-1]['loss']):.3f}"
    print(line)
    for column in [k for k in (rows[0] if rows else {}) if k.startswith("knn_")]:
        curve = " ".join(f"{r['epoch']}:{float(r[column]):.1f}" for r in rows if r[column])
        print(f"  {column[4:]}: KNN by epoch {curve}")
    for encoder in sorted(Path(f"results/nw-ucla-xview/knn/{run}").glob("*/metrics.json")):
        knn = json.loads(encoder.read_text())
        linear_file = Path(str(encoder).replace("/knn/", "/linear/"))
        name = encoder.parent.name
        text = f"  {name}: KNN {knn['top1']:.1f}"
        if linear_file.exists():
            lin = json.loads(linear_file.read_text())
            text += (f", linear {lin['top1_last']:.1f} (best {lin['top1_best']:.1f}), "
                     f"standardised {lin['standardised']['top1_last']:.1f}")
        print(text)
EOF
