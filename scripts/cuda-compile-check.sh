#!/usr/bin/env bash
# Compiles the CUDA backend (library, C++ tests, GPU benchmark) without a GPU, with Debian's CUDA 11.8
# (nvidia-cuda-toolkit + nvidia-cuda-dev from the non-free component, about 3 GB installed), then runs ctest:
# the CPU tests and the emulated substitution kernel pass, the GPU test reports "skipped" (no device).
# Catches compile and link errors of the CUDA sources on machines that cannot run them.
#
#   bash scripts/cuda-compile-check.sh            # installs the packages when apt-get is there and they are not
#   TIME_EDIT_CI_CUDA=1 bash .ci/run              # the same, as an optional CI step
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build-cuda-compile}

if ! [ -x /usr/bin/nvcc ] || ! [ -f /usr/include/cusolverDn.h ]; then
  command -v apt-get >/dev/null || { echo "needs Debian's nvidia-cuda-toolkit and nvidia-cuda-dev" >&2; exit 1; }
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if ! apt-cache policy nvidia-cuda-dev 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    # Debian ships the CUDA toolkit in non-free.
    . /etc/os-release
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$VERSION_CODENAME" | $sudo tee /etc/apt/sources.list.d/time-edit-nonfree.sources >/dev/null
    $sudo apt-get update -qq
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    nvidia-cuda-toolkit nvidia-cuda-dev g++-11
fi

# Debian's nvcc 11.8 accepts host compilers up to GCC 11. A newer CUDA installed in /usr/local (whose tools
# would shadow 11.8's ptxas on PATH) is kept out of the way.
export PATH=/usr/bin:/bin
rm -rf "$BUILD"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTIME_EDIT_BUILD_TESTS=ON -DTIME_EDIT_CUDA=ON \
  -DCMAKE_CUDA_COMPILER=/usr/bin/nvcc -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++-11 | grep "time-edit:"
cmake --build "$BUILD" -j"${JOBS:-2}"
ctest --test-dir "$BUILD" --output-on-failure
