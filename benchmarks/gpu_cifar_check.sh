#!/usr/bin/env bash
# Issue 19's GPU figures, prepared for one session with one H200 (or H100) and no network.
#
# The repo travels to the device without ../shared, so first, here, copy the data into the
# git-ignored folder .carry/ of the repo root:
#     mkdir -p .carry && cp /work/shared/data/cifar10-jpeg.tar.gz .carry/
# Then two device commands, one right after the other (the machine stays warm only ~30 s):
#     run(command="bash benchmarks/gpu_cifar_check.sh fig1",     carry=[".carry"], timeout_s=460)
#     run(command="bash benchmarks/gpu_cifar_check.sh fidelity", carry=[".carry"], timeout_s=460)
# Each takes about 6.5 minutes (training stops at its budget, 300 s by default), so both fit
# 15 minutes of device time with the machine's start. `... all` runs both in one command.
#
#   fig1      the four nets of Fig. 1 (plain-20, plain-56, resnet-20, resnet-56) at the full
#             cifar-paper recipe (64k iterations), --jobs 4 on the one GPU, bf16 + channels_last
#             + --compile reduce-overhead; stopped (checkpointed) at FIG1_BUDGET seconds. The table
#             gives each run's iterations, it/s, the full schedule's projected wall time at that
#             speed (beside three others), errors beside Table 6, and Fig. 6's orderings so far.
#             A later `fig1` on a machine still warm resumes the runs (same /tmp folder).
#   fidelity  cifar-resnet20, FID_ITERS (16000: the paper's schedule at 1/4, lr /10 at 8k and
#             12k) side by side: (a) engine bf16 + channels_last + reduce-overhead, (b) engine
#             fp32 eager, (c) the independent torchvision DataLoader reference, (d) (a) with
#             bn_batch=64; stopped at FID_BUDGET seconds each. FID_ITERS=64000 is the full recipe.
#
# What each figure is: the ResNet-20 / ResNet-56 wall times of the acceptance come from the
# fig1 rows, measured with four nets sharing the GPU (a solo run is faster; not measured
# here); the 0.5 pp (a)-(b) and the (a)-(c) comparisons come from the fidelity table, at the
# last evaluation all rows reached. Whole-step CUDA-graph capture is not written (it could
# not be checked without a GPU): reduce-overhead is torch.compile's own CUDA graphs.
#
# Written to $OUT as it goes (at most 8 files come back): env.txt (torch, CUDA, GPU),
# fig1.md + fig1.json, fidelity.md + fidelity.json, log-fig1.txt, log-fidelity.txt.
# On a CPU, for the test suite: DEVICE=cpu TINY=1 DATA_TAR=small.tar.gz OUT=DIR bash ... all
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:-all}
OUT=${OUT:-/tmp/gpu-cifar-check}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DATA_TAR=${DATA_TAR:-.carry/cifar10-jpeg.tar.gz}
WORK=${WORK:-/tmp/resnet-explorer-gpu-cifar}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
{
  date -u
  echo "nproc: $(nproc)"
  "$PY" - <<'PYEOF'
import os, platform, torch, torchvision
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"{p.multi_processor_count} SMs")
PYEOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

DATA_DIR="$WORK/cifar10-jpeg"
if [ ! -d "$DATA_DIR/test" ]; then  # once per machine: the JPEG copy, unpacked outside the repo
  [ -f "$DATA_TAR" ] || { echo "no $DATA_TAR: copy cifar10-jpeg.tar.gz into .carry/ and carry it" | tee -a "$OUT/env.txt"; exit 2; }
  mkdir -p "$DATA_DIR" && tar xzf "$DATA_TAR" -C "$DATA_DIR" || exit 2
fi
DATA="folder:$DATA_DIR"

if [ "${TINY:-0}" = 1 ]; then
  FIG1=(--depths 8,14 --width 4 --iters "${FIG1_ITERS:-4}")
  FID=(--iters "${FID_ITERS:-2}" --workers 0)
else
  FIG1=(--depths 20,56 --iters "${FIG1_ITERS:-64000}")
  FID=(--iters "${FID_ITERS:-16000}" --workers 3)
fi
status=0

run_fig1() {
  echo "fig1 starts $(date -u +%T)"
  timeout "$(( ${FIG1_BUDGET:-300} + 120 ))" "$PY" benchmarks/cifar_fig1.py --data "$DATA" --device "$DEVICE" \
      --jobs 4 --budget "${FIG1_BUDGET:-300}" --out "$WORK/fig1" --tables "$OUT" "${FIG1[@]}" 2>&1 | tee "$OUT/log-fig1.txt" || status=1
  [ -f "$OUT/fig1.md" ] || { echo "fig1: no table"; status=1; }
  echo "fig1 ends $(date -u +%T)"
}

run_fidelity() {
  echo "fidelity starts $(date -u +%T)"
  timeout "$(( ${FID_BUDGET:-300} + 120 ))" "$PY" benchmarks/cifar_fidelity.py --data "$DATA" --device "$DEVICE" \
      --rows a,b,c,d --budget "${FID_BUDGET:-300}" --out "$WORK/fidelity" --tables "$OUT" "${FID[@]}" \
      2>&1 | tee "$OUT/log-fidelity.txt" || status=1
  [ -f "$OUT/fidelity.md" ] || { echo "fidelity: no table"; status=1; }
  echo "fidelity ends $(date -u +%T)"
}

case "$PART" in
  fig1) run_fig1 ;;
  fidelity) run_fidelity ;;
  all) run_fig1; run_fidelity ;;
  *) echo "usage: bash benchmarks/gpu_cifar_check.sh [fig1|fidelity|all]"; exit 2 ;;
esac
exit $status
