#!/usr/bin/env bash
# The prepared GPU check: what a session lent a GPU runs first, exactly as written here.
#
# 1. Before any device call, in the root of the checkout the device tool sends (the one the
#    session started in; the machine gets its working tree, never ../shared beside it):
#        mkdir -p .carry && cp ../shared/data/cifar10-jpeg.tar.gz .carry/     # 19 MB; .carry/ is git-ignored
#    (../shared/data is what RESNET_EXPLORER_SHARED_DATA names; copy from there if it is elsewhere)
# 2. The device calls, in priority order. A session has 15 minutes of device time in all (the
#    machine's start, 1-2 min, included); each call below fits one session. Give the machine
#    back (give_back) after the call; never wait on a warm machine for a second call.
#      Session 1:  run(command="bash benchmarks/gpu_check.sh probe cifar", carry=[".carry"], timeout_s=590)
#      Session 2:  run(command="bash benchmarks/gpu_check.sh probe fig1",  carry=[".carry"], timeout_s=590)
#      Session 3:  run(command="bash benchmarks/gpu_check.sh imagenet",    timeout_s=590)
#    A later session that finds files from an earlier one in the issue goes on with the next line.
# 3. What comes back ($OUT, at most 8 files): env.txt, log.txt, and per part PART.md (the table,
#    rewritten as the part goes and when it is stopped), PART.json, PART.tar.gz (each run's
#    metrics, env and config, the job logs with TORCH_LOGS=recompiles,graph_breaks,perf_hints,
#    cudagraphs: recompiles, graph breaks and "skipping cudagraphs" lines; no checkpoints).
#
# Planned time of each part (seconds on the device; first-principles estimates until a probe
# measures them: ResNet-20 at batch 128 eager 5.6 ms/step, compiled model 2.5, whole step
# captured 1.2; a compile 60 s). Each part trains until its deadline at most, then has MARGIN
# to checkpoint and write its table under `timeout`, and 20 s more before `timeout -k` kills it:
#   set-up     env.txt, unpack the 19 MB tar, decode 60k JPEGs (16 cores)           ~15, at most 20
#   probe      3 modes x 2000 its, compiles overlapped, timed one at a time:
#              max(compile 60) + 2000 x (5.6 + 2.5 + 1.2) ms = 79 s -> deadline 100 + 25 + 20 = 145
#   cifar      (c) reference 64k its x ~5 ms = 320 s beside (a) 60 + 64k x 1.2 ms = 137 s;
#              then (a) seeds 1.. while the longest finished (a) still fits -> deadline 360 + 40 + 20 = 420
#   fig1       four nets x 64k its: 20s 2 x 77 s, 56s 2 x 230 s = 614 s + compiles: over budget, so
#              side by side, stopped at the deadline, compared at the largest iteration all four
#              reached                                   -> deadline 360 (400 alone) + 40 + 20 = 420
#   imagenet   ResNet-50/18 input rows, budget 360, stopped at 450 (+20), then the unit tests (80 + 20)
#   Session 1: 20 + 145 + 420 = 585 s <= 590 (timeout_s); + start ~120 = 705 s of 900.
#   Session 2: 20 + 145 + 420 = 585 s <= 590.   Session 3: 10 + 470 + 100 = 580 s.
# Environment: OUT (default /tmp/gpu-check-out), WORK (runs; /tmp/resnet-explorer-gpu-check),
# DEVICE (cuda), PYTHON (python3), DATA_TAR (.carry/cifar10-jpeg.tar.gz), COMPILE (force a step
# mode for cifar/fig1; default the probe's fastest correct one), PROBE_BUDGET / CIFAR_BUDGET /
# FIG1_BUDGET / IMAGENET_BUDGET (seconds). SIGTERM or SIGINT: the running part is stopped (its
# runs checkpoint), its table and tarball are written, and the script exits 143.
# For the test suite, on a CPU: DEVICE=cpu TINY=1 DATA_TAR=small.tar.gz OUT=DIR bash ... PART
# (tiny nets, a few iterations, torch.compile off unless TINY_COMPILE=1).
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- probe
OUT=${OUT:-/tmp/gpu-check-out}
WORK=${WORK:-/tmp/resnet-explorer-gpu-check}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
DATA_TAR=${DATA_TAR:-.carry/cifar10-jpeg.tar.gz}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
export TORCH_LOGS=${TORCH_LOGS-recompiles,graph_breaks,perf_hints,cudagraphs}
TINY_ARGS=()
if [ "$TINY" = 1 ]; then
  TINY_ARGS=(--tiny --iters "${TINY_ITERS:-6}")
  [ "${TINY_COMPILE:-0}" = 1 ] || export TORCHDYNAMO_DISABLE=1
fi
exec > >(tee -a "$OUT/log.txt") 2>&1
TEE=$!
finish() {  # let tee write the last lines to log.txt before the call returns
  exec 1>&- 2>&-
  wait "$TEE" 2>/dev/null
  exit "$1"
}

for part in "$@"; do
  case "$part" in probe|cifar|fig1|imagenet) ;; *) echo "usage: bash benchmarks/gpu_check.sh [probe] [cifar] [fig1] [imagenet]"; exit 2 ;; esac
done

{
  date -u
  echo "parts: $*; cores: $(nproc --all), usable $(OMP_NUM_THREADS= nproc)"
  "$PY" - <<'PYEOF'
import platform, torch, torchvision
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"{p.multi_processor_count} SMs")
PYEOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
  df -h /dev/shm 2>/dev/null | tail -1
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

CHILD="" STOPPED=""
stop() {
  STOPPED=$1
  echo "gpu_check: $1 received, stopping the running part"
  [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null
}
trap 'stop TERM' TERM
trap 'stop INT' INT

# run LIMIT CMD...: CMD under `timeout -k`, waited for even while a signal is being handled
run() {
  local limit=$1 rc
  shift
  timeout -k 20 "$limit" "$@" &
  CHILD=$!
  wait "$CHILD"; rc=$?
  while kill -0 "$CHILD" 2>/dev/null; do wait "$CHILD"; rc=$?; done
  CHILD=""
  return "$rc"
}

pack() {  # the part's runs without checkpoints: metrics, env, config, logs
  local part=$1
  [ -d "$WORK/$part" ] || return 0
  tar -czf "$OUT/$part.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='*.lock' --exclude='*.tmp' "$part" \
    && echo "$part: $(tar -tzf "$OUT/$part.tar.gz" | wc -l) files in $OUT/$part.tar.gz"
}

data() {  # the CIFAR-10 JPEG copy, unpacked once per machine outside the repo
  DATA_DIR="$WORK/cifar10-jpeg"
  if [ ! -d "$DATA_DIR/test" ]; then
    [ -f "$DATA_TAR" ] || { echo "no $DATA_TAR: copy cifar10-jpeg.tar.gz into .carry/ and carry it (header, step 1)"; return 2; }
    mkdir -p "$DATA_DIR" && tar xzf "$DATA_TAR" -C "$DATA_DIR" || return 2
  fi
}

python_part() {  # python_part PART BUDGET MARGIN
  local part=$1 budget=$2 margin=$3
  data || return 2
  run $((budget + margin)) "$PY" benchmarks/gpu_check.py "$part" --data "folder:$DATA_DIR" --tables "$OUT" \
      --work "$WORK" --device "$DEVICE" --budget "$budget" ${COMPILE:+--compile "$COMPILE"} "${TINY_ARGS[@]}"
}

imagenet() {
  local args rc=0
  if [ "$TINY" = 1 ]; then
    args=(--tiny --cache "$WORK/imagenet/jpegs")
  else
    args=(--images 12800 --workers 8,16 --gpu-workers 4 --archs resnet50,resnet18 --batch-size 256
          --warmup 8 --iters 40 --compile reduce-overhead --budget "${IMAGENET_BUDGET:-360}" --shm-budget 4)
  fi
  mkdir -p "$WORK/imagenet"
  run $(( ${IMAGENET_BUDGET:-360} + 90 )) "$PY" benchmarks/imagenet_input.py --device "$DEVICE" \
      --out "$OUT/imagenet" "${args[@]}" || rc=$?
  rm -rf "$WORK/imagenet/jpegs"
  if [ "$TINY" != 1 ] && [ -z "$STOPPED" ]; then  # this change's unit tests under the machine's own torch
    run 80 "$PY" -m pytest -q -x -m "not slow" -p no:cacheprovider tests/test_imagenet_input.py \
      >"$WORK/imagenet/tests.txt" 2>&1 || echo "tests: exit $?" >>"$WORK/imagenet/tests.txt"
    tail -3 "$WORK/imagenet/tests.txt"
  fi
  return "$rc"
}

status=0
for part in "$@"; do
  [ -n "$STOPPED" ] && break
  echo "== $part starts $(date -u +%T)"
  case "$part" in
    probe) python_part probe "${PROBE_BUDGET:-100}" 25 ;;
    cifar) python_part cifar "${CIFAR_BUDGET:-360}" 40 ;;
    fig1) python_part fig1 "${FIG1_BUDGET:-$([ "$1" = probe ] && echo 360 || echo 400)}" 40 ;;
    imagenet) imagenet ;;
  esac
  rc=$?
  [ "$rc" = 0 ] || { echo "$part: exit status $rc"; status=1; }
  [ -f "$OUT/$part.md" ] || { echo "$part: no table"; status=1; }
  pack "$part"
  echo "== $part ends $(date -u +%T)"
done
[ -n "$STOPPED" ] && { echo "gpu_check: stopped by SIG$STOPPED; tables and tarballs written"; finish 143; }
finish "$status"
