#!/usr/bin/env bash
# The prepared GPU check: one command, about 10 minutes on one H100/H200, everything it measures written under
# reports/paper-gpu/ (commit that folder). Run from the repository root on a machine with one CUDA GPU and no
# network, with the CIFAR-10 JPEG copy carried in the git-ignored folder data-gpu/:
#
#   mkdir -p data-gpu && cp ../shared/data/cifar10-jpeg.tar.gz data-gpu/      # here, 19 MB
#   bash benchmarks/gpu_check.sh [DATA_ROOT=data-gpu] [OUT=reports/paper-gpu]   # there (carry: data-gpu)
#
# Steps, each under its own time limit so that a slow or failing one still leaves the others' reports:
#   1. environment.txt: nvidia-smi, Python and library versions;
#   2. time_to_accuracy.txt: the paper grid's ResNet-18 on the CIFAR-10 JPEG copy (target ≥ 92 % test accuracy
#      in ≤ 60 s of training);
#   3. throughput_<backbone>.txt: benchmarks/trainer_throughput.py --device cuda for the four full-size backbones
#      (target: the suite's trainer ≥ 2× a plain DataLoader loop);
#   4. run/: the paper grid's ResNet-18 × CIFAR-10 slice (benchmarks/gpu_check_grid.yaml: every method, forget
#      classes 0 and 1, every metric), its records and report.
#   5. report: the slice's report from whatever cells finished, also when step 4 ran out of time.
# summary.txt lists each step's exit status and seconds. Environment variables: STEPS (default
# "environment time_to_accuracy throughput run report": a later session reruns only what is missing) and
# RUN_LIMIT (seconds for step 4, default 300) and RUN_ARGS (extra run_bench.py arguments for step 4, e.g.
# "--only method=salun,scrub --gpus 0 --workers 3": three workers sharing the one GPU) and ARCHIVE (a .tar.gz
# path: everything under OUT packed into that one file at the end; the device tool brings back at most 8 files,
# two folders deep, so a run folder with its report does not come back file by file). Via the device tool:
#
#   ARCHIVE=$OUT/paper-gpu.tar.gz bash benchmarks/gpu_check.sh data-gpu /tmp/paper-gpu
#   tar xzf <files_at>/paper-gpu.tar.gz -C reports/                                    # back here
set -uo pipefail
DATA=${1:-data-gpu}
OUT=${2:-reports/paper-gpu}
PY=${PYTHON:-python3}
STEPS=${STEPS:-environment time_to_accuracy throughput run report}
RUN_LIMIT=${RUN_LIMIT:-300}
RUN_ARGS=${RUN_ARGS:-}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
: > "$OUT/summary.txt"

step() {  # step NAME LIMIT_SECONDS COMMAND...: run it with a time limit, log to $OUT/NAME.txt, note its status
    local name=$1 limit=$2 start status
    shift 2
    [[ " $STEPS " == *" ${name%%_*} "* || " $STEPS " == *" $name "* ]] || return 0
    start=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    status=$?
    echo "$name: exit $status after $(( $(date +%s) - start )) s (limit $limit s): $*" >> "$OUT/summary.txt"
}

step environment 60 bash -c "nvidia-smi; $PY -c 'import sys, torch, torchvision, timm; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0)); \
print(\"torchvision\", torchvision.__version__, \"timm\", timm.__version__)'; git log -1 --format='commit %H %cd'"
step time_to_accuracy 150 "$PY" benchmarks/time_to_accuracy.py --dataset cifar10 --data-root "$DATA" \
    --backbone resnet18 --device cuda --target 0.92 --cache-dir results/gpu-cache
for backbone in vgg16 resnet18 vit_tiny vit_small; do
    step "throughput_$backbone" 60 "$PY" benchmarks/trainer_throughput.py --dataset cifar10 --data-root "$DATA" \
        --backbone "$backbone" --width 1.0 --device cuda --cache-dir results/gpu-cache
done
step run "$RUN_LIMIT" "$PY" run_bench.py --grid benchmarks/gpu_check_grid.yaml --data-root "$DATA" --device cuda \
    --out "$OUT/run" --cache-dir results/gpu-cache $RUN_ARGS
step report 120 "$PY" run_bench.py report "$OUT/run"
cat "$OUT/summary.txt"
if [ -n "${ARCHIVE:-}" ]; then
    tar czf "$ARCHIVE" -C "$(dirname "$OUT")" "$(basename "$OUT")" && echo "packed $OUT into $ARCHIVE"
fi
