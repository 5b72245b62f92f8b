#!/usr/bin/env bash
# Issue 20's GPU figures in one run, on a machine with a CUDA GPU and no network:
#
#     bash benchmarks/gpu_imagenet_check.sh      # OUT=DIR (default /tmp/gpu-imagenet-check) gets the results
#
# It installs nothing and needs no dataset: python3 with torch and torchvision, run from a
# clone (PYTHONPATH points at it). In 5 to 9 minutes (never past 9) it writes to $OUT:
#   env.txt              torch, torchvision, CUDA, the GPU, the CPU cores
#   imagenet_input.md    the table: input pipeline alone (PIL with 8 and 16 workers, GPU path) and
#   imagenet_input.json  end-to-end ResNet-18/50 training (synthetic input, GPU path, PIL path),
#                        images/s, ratio to synthetic, CPU cores busy; the GPU path's pixels
#                        against PIL's, ILSVRC's odd files on the GPU path
#   log.txt              everything printed
#   tests.txt            this change's unit tests under the machine's own torch (CPU, < 90 s)
# The benchmark writes its table after every row, skips rows it cannot start before its
# budget (BUDGET seconds, default 360) and is stopped at BENCH_TIMEOUT (450), so a slow row
# cannot lose the others; ResNet-50 (the acceptance figure) runs before ResNet-18.
# DEVICE=cpu TINY=1 runs the same steps for seconds on a CPU (the test suite does).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-imagenet-check}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
{
  date -u
  uname -srm
  echo "nproc --all: $(nproc --all)"
  "$PY" - <<'PYEOF'
import os, platform, torch, torchvision
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "cuda", torch.version.cuda)
print("usable CPU cores", len(os.sched_getaffinity(0)))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"{p.multi_processor_count} SMs")
PYEOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "${TINY:-0}" = 1 ]; then
  ARGS=(--tiny --cache "$OUT/tmp-jpegs")
  TEST_TIMEOUT=5
else
  ARGS=(--images 12800 --workers 8,16 --gpu-workers 4 --archs resnet50,resnet18 --batch-size 256
        --warmup 8 --iters 40 --compile reduce-overhead --budget "${BUDGET:-360}")
  TEST_TIMEOUT=90
fi
status=0
echo "benchmark starts $(date -u +%T)"
timeout "${BENCH_TIMEOUT:-450}" "$PY" benchmarks/imagenet_input.py --device "$DEVICE" \
    --out "$OUT/imagenet_input" "${ARGS[@]}" 2>&1 | tee "$OUT/log.txt" || status=$?
rm -rf "$OUT/tmp-jpegs"
echo "benchmark ends $(date -u +%T)"

if [ "$TEST_TIMEOUT" -gt 5 ]; then  # the unit tests under this machine's torch/torchvision
  timeout "$TEST_TIMEOUT" "$PY" -m pytest -q -x -m "not slow" -p no:cacheprovider \
      tests/test_imagenet_input.py >"$OUT/tests.txt" 2>&1 || echo "tests: exit $?" >>"$OUT/tests.txt"
  tail -3 "$OUT/tests.txt"
fi
echo "benchmark exit status: $status"
exit "$status"
