#!/usr/bin/env bash
# GPU check of the CUDA backend, in one go: configure + build with plain CMake (tests on, CUDA forced on),
# ctest, the GPU benchmark, and the PyTorch peer (the paper's per-layer algorithm on the same inputs).
# Writes env.txt, build.log, ctest.log, bench.log, bench.json, peer.log, peer.json to $OUT (default
# ./build-device-out, ignored by git)
# and prints a short summary last.
#
#   OUT=/tmp/out bash scripts/device-check.sh          # on a machine with an NVIDIA GPU, nvcc, cuBLAS, cuSOLVER
#   QUICK=1 ...                                         # fewer benchmark repeats
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/build-device-out}
BUILD=${BUILD_DIR:-build-device}
JOBS=${JOBS:-16}
mkdir -p "$OUT"
PY=${PYTHON:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=python3
DUMP=$(mktemp -d)

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
  command -v nvcc && nvcc --version | tail -2
  cmake --version | head -1
  ls /usr/local/cuda/lib64 2>/dev/null | grep -E '^lib(cublas|cusolver)\.so' | head
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

configure() {
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTIME_EDIT_BUILD_TESTS=ON -DTIME_EDIT_CUDA=ON "$@"
}
if ! configure >"$OUT/build.log" 2>&1; then
  # The toolkit may ship cuBLAS/cuSOLVER only as Python wheels (nvidia-cublas, nvidia-cusolver): point CMake there.
  echo "configure failed with the system toolkit; trying the pip nvidia libraries" | tee -a "$OUT/build.log"
  SITE=$("$PY" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)
  LIBS=$(mktemp -d)
  extra=()
  for lib in cublas cublasLt cusolver; do
    so=$(ls "$SITE"/nvidia/*/lib/lib$lib.so.* 2>/dev/null | head -1)
    [ -n "$so" ] && ln -sf "$so" "$LIBS/lib$lib.so" && ln -sf "$so" "$LIBS/$(basename "$so")"
  done
  incs=$(ls -d "$SITE"/nvidia/*/include 2>/dev/null | tr '\n' ' ')
  flags=""
  for i in $incs; do flags="$flags -I$i"; done
  rm -rf "$BUILD"
  configure -DCUDA_cublas_LIBRARY="$LIBS/libcublas.so" -DCUDA_cublasLt_LIBRARY="$LIBS/libcublasLt.so" \
    -DCUDA_cusolver_LIBRARY="$LIBS/libcusolver.so" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_BUILD_RPATH="$LIBS" >>"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
fi
grep -E "time-edit:" "$OUT/build.log"
if ! cmake --build "$BUILD" -j"$JOBS" >>"$OUT/build.log" 2>&1; then
  grep -E "error|Error" "$OUT/build.log" | head -40
  exit 1
fi
grep -iE "warning" "$OUT/build.log" | head -20

ctest --test-dir "$BUILD" --output-on-failure -V --timeout 300 2>&1 | tee "$OUT/ctest.log"
ctest_rc=${PIPESTATUS[0]}

quick=()
[ -n "${QUICK:-}" ] && quick=(--quick)
"$BUILD/time_edit_cuda_bench" --dump "$DUMP" --json "$OUT/bench.json" "${quick[@]}" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}

PYTHONUNBUFFERED=1 "$PY" native/bench/paper_peer.py "$DUMP" "$OUT/bench.json" "$OUT/peer.json" 2>&1 | tee "$OUT/peer.log"
peer_rc=${PIPESTATUS[0]}
rm -rf "$DUMP"

echo
echo "==== summary ===="
grep -E "checks, |tests passed|FAIL" "$OUT/ctest.log" | tail -8
sed -n '/^TIME on/,$p' "$OUT/bench.log"
grep -E "^peer" "$OUT/peer.log"
echo "ctest rc=$ctest_rc bench rc=$bench_rc peer rc=$peer_rc"
[ "$ctest_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$peer_rc" = 0 ]
