#!/usr/bin/env bash
# GPU check of the CUDA backend, in one go: configure + build with plain CMake (tests on, CUDA forced on),
# ctest, the GPU benchmark, and the PyTorch peer (the paper's per-layer algorithm on the same inputs).
# Writes env.txt, build.log, ctest.log, bench.log, bench.json, peer.log, peer.json (and node-build.log,
# node-tests.log, node-bench.log/json when Node or the .device bundle is there) to $OUT (default
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

# CMAKE_EXTRA: more -D options for every configure (e.g. a host compiler for an older nvcc).
read -r -a cmake_extra <<<"${CMAKE_EXTRA:-}"
configure() {
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTIME_EDIT_BUILD_TESTS=ON -DTIME_EDIT_CUDA=ON \
    "${cmake_extra[@]}" "$@"
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
  cmake_extra+=(-DCUDA_cublas_LIBRARY="$LIBS/libcublas.so" -DCUDA_cublasLt_LIBRARY="$LIBS/libcublasLt.so"
    -DCUDA_cusolver_LIBRARY="$LIBS/libcusolver.so" -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_BUILD_RPATH="$LIBS")
  configure >>"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
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
timeout 400 "$BUILD/time_edit_cuda_bench" --dump "$DUMP" --json "$OUT/bench.json" "${quick[@]}" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}

PYTHONUNBUFFERED=1 timeout 200 "$PY" native/bench/paper_peer.py "$DUMP" "$OUT/bench.json" "$OUT/peer.json" 2>&1 | tee "$OUT/peer.log"
peer_rc=${PIPESTATUS[0]}
rm -rf "$DUMP"

# The Node side with the CUDA backend: the addon built by plain CMake the way cmake-js would (Node-API headers,
# node-addon-api), then the JS solver tests on the GPU and `bench solve`. Machines without Node use the bundle
# that scripts/device-bundle.sh packs into .device/ (carry it).
node_rc=skipped
if ! command -v node >/dev/null && [ -f .device/node-bundle.tar.xz ]; then
  NB=$(mktemp -d)
  xz -dc .device/node-bundle.tar.xz | tar -C "$NB" -xf -
  export PATH="$NB/bin:$PATH"
  NAPI_INC="$NB/napi-include"
  mkdir -p node_modules && cp -rn "$NB/node_modules/." node_modules/
  [ -f lib/index.js ] || xz -dc .device/lib-js.tar.xz | tar -xf -
fi
if command -v node >/dev/null && [ -f lib/index.js ] && [ -d node_modules/node-addon-api ]; then
  NAPI_INC=${NAPI_INC:-$(dirname "$(dirname "$(command -v node)")")/include/node}
  {
    cmake -S . -B "$BUILD-node" -DCMAKE_BUILD_TYPE=Release -DTIME_EDIT_CUDA=ON -DCMAKE_JS_VERSION=device-check \
      -DCMAKE_JS_INC="$NAPI_INC" "${cmake_extra[@]}" && cmake --build "$BUILD-node" -j"$JOBS" --target time_edit_addon
  } >"$OUT/node-build.log" 2>&1
  if [ -f "$BUILD-node/time_edit.node" ]; then
    export TIME_EDIT_ADDON="$PWD/$BUILD-node/time_edit.node"
    # Time limits: a hang must not eat the device budget.
    TIME_EDIT_TEST_CUDA=1 timeout 300 node --test --test-concurrency=1 test/solver*.test.js >"$OUT/node-tests.log" 2>&1
    node_rc=$?
    timeout 180 node lib/cli.js bench solve --repeats 20 --baseline-repeats 2 --batch 64 --json "$OUT/node-bench.json" \
      >"$OUT/node-bench.log" 2>&1 || node_rc="$node_rc, bench failed"
  else
    node_rc="addon build failed (node-build.log)"
    tail -20 "$OUT/node-build.log"
  fi
fi

echo
echo "==== summary ===="
grep -E "checks, |tests passed|FAIL" "$OUT/ctest.log" | tail -8
sed -n '/^TIME on/,$p' "$OUT/bench.log"
grep -E "^peer" "$OUT/peer.log"
if [ -f "$OUT/node-tests.log" ]; then
  echo "node (JS solver tests with TIME_EDIT_TEST_CUDA=1):"
  grep -E "^# (tests|pass|fail|skipped)|^not ok" "$OUT/node-tests.log" | head -12
  grep -iE "backend|low-rank|patched|ratio" "$OUT/node-bench.log" | head -12
fi
echo "ctest rc=$ctest_rc bench rc=$bench_rc peer rc=$peer_rc node rc=$node_rc"
[ "$ctest_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$peer_rc" = 0 ]
