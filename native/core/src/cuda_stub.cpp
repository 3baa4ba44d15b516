// Compiled when the build has no CUDA backend (native/core/src/cuda/cuda.cmake absent or CUDA not found).
#include "time_edit/solver.hpp"

namespace time_edit {

std::unique_ptr<Solver> makeCudaSolver(int /*device*/) {
  throw Error(Error::Kind::Backend,
              "this build has no CUDA backend (rebuild on a machine with the CUDA toolkit, cuBLAS and cuSOLVER); "
              "use the CPU backend");
}

bool cudaBuilt() { return false; }

int cudaDeviceCount() { return 0; }

}  // namespace time_edit
