// The CUDA Solver: host buffers in, host buffers out, the device solve (cuda_device_solve.cpp) in between.
// Edits are grouped by row count n (batched calls need one shape) and processed in chunks that fit a share of
// the free device memory.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_device_solve.hpp"
#include "cuda_kernels.hpp"
#include "cuda_util.hpp"
#include "time_edit/solver.hpp"

namespace time_edit {
namespace cuda {

void throwBackend(const char* call, const std::string& why) {
  throw Error(Error::Kind::Backend, std::string(call) + " failed: " + why);
}

void throwLaunchError(const char* kernel, cudaError_t status) {
  throwBackend(kernel, std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")");
}

void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throwBackend(call,
                 std::string(cublasGetStatusString(status)) + " (" + std::to_string(static_cast<int>(status)) + ")");
  }
}

void check(cusolverStatus_t status, const char* call) {
  if (status == CUSOLVER_STATUS_SUCCESS) return;
  const char* name = "CUSOLVER_STATUS_UNKNOWN";
  switch (status) {
    case CUSOLVER_STATUS_NOT_INITIALIZED: name = "CUSOLVER_STATUS_NOT_INITIALIZED"; break;
    case CUSOLVER_STATUS_ALLOC_FAILED: name = "CUSOLVER_STATUS_ALLOC_FAILED"; break;
    case CUSOLVER_STATUS_INVALID_VALUE: name = "CUSOLVER_STATUS_INVALID_VALUE"; break;
    case CUSOLVER_STATUS_ARCH_MISMATCH: name = "CUSOLVER_STATUS_ARCH_MISMATCH"; break;
    case CUSOLVER_STATUS_EXECUTION_FAILED: name = "CUSOLVER_STATUS_EXECUTION_FAILED"; break;
    case CUSOLVER_STATUS_INTERNAL_ERROR: name = "CUSOLVER_STATUS_INTERNAL_ERROR"; break;
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: name = "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED"; break;
    case CUSOLVER_STATUS_NOT_SUPPORTED: name = "CUSOLVER_STATUS_NOT_SUPPORTED"; break;
    default: break;
  }
  throwBackend(call, std::string(name) + " (" + std::to_string(static_cast<int>(status)) + ")");
}

namespace {

void upload(void* dst, const void* src, std::size_t bytes, cudaStream_t st, const char* what) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st), what);
}
void download(void* dst, const void* src, std::size_t bytes, cudaStream_t st, const char* what) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st), what);
}

class CudaSolver final : public Solver {
 public:
  explicit CudaSolver(int device) : ctx_(device), deviceSolve_(ctx_, tuningFromEnvironment()) {}

  std::string name() const override { return "cuda:" + ctx_.deviceName(); }

  void solve(int64_t d, const EditRows* edits, int64_t count, const EditOutputs* outputs,
             const WeightsPatch* patch) override {
    validateEdits(d, edits, count);
    checkPatch(d, count, patch);
    if (count == 0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceGuard guard(ctx_.device());
    cudaStream_t st = ctx_.stream();

    const float* weightsDevice = nullptr;
    if (patch != nullptr) {
      const std::size_t wBytes = static_cast<std::size_t>(patch->rows * d) * sizeof(float);
      weights_.reserve(wBytes);
      upload(weights_.as<float>(), patch->weights, wBytes, st, "cudaMemcpyAsync (weights to device)");
      weightsDevice = weights_.as<float>();
    }

    // Group by n, keeping the callers' order inside a group.
    std::map<int64_t, std::vector<int64_t>> groups;
    for (int64_t b = 0; b < count; ++b) groups[edits[b].rows].push_back(b);

    for (const auto& [n, members] : groups) {
      bool wantD = false, wantG = false, wantDense = false;
      for (int64_t b : members) {
        if (outputs == nullptr) break;
        wantD = wantD || outputs[b].lowRankD != nullptr;
        wantG = wantG || outputs[b].lowRankG != nullptr;
        wantDense = wantDense || outputs[b].dense != nullptr;
      }
      if (!wantD && !wantG && !wantDense && patch == nullptr) continue;
      const std::size_t nd = static_cast<std::size_t>(n * d);
      const int64_t rows = patch != nullptr ? patch->rows : 0;
      const std::size_t perEdit = 2 * nd * sizeof(float) + sizeof(double) +
                                  (wantDense ? static_cast<std::size_t>(d * d) * sizeof(float) : 0) +
                                  static_cast<std::size_t>(rows * d) * sizeof(float) +
                                  deviceSolve_.workspaceBytesPerEdit(d, n, wantDense, rows);
      // Capped so that no batched call exceeds what cuBLAS/cuSOLVER grids take comfortably.
      const int64_t chunk = std::clamp<int64_t>(static_cast<int64_t>(budgetBytes() / perEdit), 1, 16384);

      for (std::size_t first = 0; first < members.size(); first += static_cast<std::size_t>(chunk)) {
        const int64_t k = std::min<int64_t>(chunk, static_cast<int64_t>(members.size() - first));
        source_.reserve(k * nd * sizeof(float));
        destination_.reserve(k * nd * sizeof(float));
        lambda_.reserve(k * sizeof(double));
        if (wantDense) dense_.reserve(static_cast<std::size_t>(k * d * d) * sizeof(float));
        if (patch != nullptr) patched_.reserve(static_cast<std::size_t>(k * patch->rows * d) * sizeof(float));
        std::vector<double> lambdas(static_cast<std::size_t>(k));
        for (int64_t i = 0; i < k; ++i) {
          const EditRows& e = edits[members[first + i]];
          upload(source_.as<float>() + i * nd, e.source, nd * sizeof(float), st, "cudaMemcpyAsync (C to device)");
          upload(destination_.as<float>() + i * nd, e.destination, nd * sizeof(float), st,
                 "cudaMemcpyAsync (C* to device)");
          lambdas[static_cast<std::size_t>(i)] = e.lambda;
        }
        upload(lambda_.as<double>(), lambdas.data(), lambdas.size() * sizeof(double), st,
               "cudaMemcpyAsync (λ to device)");

        GroupRequest r;
        r.d = d;
        r.n = n;
        r.count = k;
        r.source = source_.as<float>();
        r.destination = destination_.as<float>();
        r.lambda = lambda_.as<double>();
        r.wantD = wantD;
        r.wantG = wantG;
        r.dense = wantDense ? dense_.as<float>() : nullptr;
        r.weights = weightsDevice;
        r.rows = patch != nullptr ? patch->rows : 0;
        r.patched = patch != nullptr ? patched_.as<float>() : nullptr;
        deviceSolve_.enqueue(r);
        deviceSolve_.finish(members[first]);  // throws before anything of this chunk reaches the caller

        for (int64_t i = 0; i < k; ++i) {
          const int64_t b = members[first + i];
          if (outputs != nullptr) {
            const EditOutputs& o = outputs[b];
            if (o.lowRankD != nullptr) {
              download(o.lowRankD, destination_.as<float>() + i * nd, nd * sizeof(float), st,
                       "cudaMemcpyAsync (D to host)");
            }
            if (o.lowRankG != nullptr) {
              download(o.lowRankG, source_.as<float>() + i * nd, nd * sizeof(float), st, "cudaMemcpyAsync (G to host)");
            }
            if (o.dense != nullptr) {
              download(o.dense, dense_.as<float>() + i * d * d, static_cast<std::size_t>(d * d) * sizeof(float), st,
                       "cudaMemcpyAsync (M to host)");
            }
          }
          if (patch != nullptr) {
            download(patch->patched[b], patched_.as<float>() + i * patch->rows * d,
                     static_cast<std::size_t>(patch->rows * d) * sizeof(float), st,
                     "cudaMemcpyAsync (patched weights to host)");
          }
        }
        check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
      }
    }
  }

  void patchWithDense(int64_t d, const float* const* dense, int64_t count, const float* weights, int64_t rows,
                      float* const* patched) override {
    if (d < 1) throw Error(Error::Kind::InvalidArgument, "d must be at least 1, got " + std::to_string(d));
    if (count < 0) throw Error(Error::Kind::InvalidArgument, "count must not be negative");
    if (rows < 1)
      throw Error(Error::Kind::InvalidArgument, "weight rows must be at least 1, got " + std::to_string(rows));
    if (weights == nullptr) throw Error(Error::Kind::InvalidArgument, "weights is null");
    if (count > 0 && (dense == nullptr || patched == nullptr)) {
      throw Error(Error::Kind::InvalidArgument, "dense and patched must not be null");
    }
    const std::size_t dd = static_cast<std::size_t>(d * d);
    for (int64_t b = 0; b < count; ++b) {
      if (dense[b] == nullptr) throw Error(Error::Kind::InvalidArgument, "dense[" + std::to_string(b) + "] is null");
      if (patched[b] == nullptr)
        throw Error(Error::Kind::InvalidArgument, "patched[" + std::to_string(b) + "] is null");
      for (std::size_t i = 0; i < dd; ++i) {
        if (!std::isfinite(dense[b][i])) {
          throw Error(Error::Kind::InvalidArgument,
                      "dense[" + std::to_string(b) + "] has a non-finite value at index " + std::to_string(i));
        }
      }
    }
    if (count == 0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceGuard guard(ctx_.device());
    cudaStream_t st = ctx_.stream();
    const std::size_t wBytes = static_cast<std::size_t>(rows * d) * sizeof(float);
    weights_.reserve(wBytes);
    upload(weights_.as<float>(), weights, wBytes, st, "cudaMemcpyAsync (weights to device)");
    const std::size_t perEdit = dd * sizeof(float) + wBytes;
    const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(budgetBytes() / perEdit));
    const float one = 1.0f, zero = 0.0f;
    const bool tf32 = deviceSolve_.tuning().tf32;
    for (int64_t first = 0; first < count; first += chunk) {
      const int64_t k = std::min(chunk, count - first);
      dense_.reserve(k * dd * sizeof(float));
      patched_.reserve(static_cast<std::size_t>(k) * wBytes);
      for (int64_t i = 0; i < k; ++i) {
        upload(dense_.as<float>() + i * dd, dense[first + i], dd * sizeof(float), st, "cudaMemcpyAsync (M to device)");
      }
      if (tf32) check(cublasSetMathMode(ctx_.blas(), CUBLAS_TF32_TENSOR_OP_MATH), "cublasSetMathMode (TF32)");
      const cublasStatus_t status = cublasSgemmStridedBatched(
          ctx_.blas(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(d), static_cast<int>(rows), static_cast<int>(d), &one,
          dense_.as<float>(), static_cast<int>(d), d * d, weights_.as<float>(), static_cast<int>(d), 0, &zero,
          patched_.as<float>(), static_cast<int>(d), rows * d, static_cast<int>(k));
      if (tf32) check(cublasSetMathMode(ctx_.blas(), CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
      check(status, "cublasSgemmStridedBatched (W' = W·M)");
      for (int64_t i = 0; i < k; ++i) {
        download(patched[first + i], patched_.as<float>() + i * rows * d, wBytes, st,
                 "cudaMemcpyAsync (patched weights to host)");
      }
      check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
    }
  }

 private:
  static void checkPatch(int64_t d, int64_t count, const WeightsPatch* patch) {
    if (patch == nullptr) return;
    if (patch->weights == nullptr) throw Error(Error::Kind::InvalidArgument, "patch.weights is null");
    if (patch->rows < 1) {
      throw Error(Error::Kind::InvalidArgument, "patch.rows must be at least 1, got " + std::to_string(patch->rows));
    }
    if (d > 0 && patch->rows > 0x7fffffff / d) {
      throw Error(Error::Kind::InvalidArgument, "patch.rows × d is too large for one GEMM");
    }
    if (count > 0 && patch->patched == nullptr) throw Error(Error::Kind::InvalidArgument, "patch.patched is null");
    for (int64_t b = 0; b < count; ++b) {
      if (patch->patched[b] == nullptr) {
        throw Error(Error::Kind::InvalidArgument, "patch.patched[" + std::to_string(b) + "] is null");
      }
    }
  }

  // Device bytes one chunk may use: 60% of what is free plus what this solver already holds.
  std::size_t budgetBytes() const {
    std::size_t freeBytes = 0, totalBytes = 0;
    check(cudaMemGetInfo(&freeBytes, &totalBytes), "cudaMemGetInfo");
    const std::size_t held = source_.bytes() + destination_.bytes() + dense_.bytes() + patched_.bytes();
    return std::max<std::size_t>(std::size_t{64} << 20, (freeBytes + held) / 10 * 6);
  }

  std::mutex mutex_;
  Context ctx_;
  DeviceSolve deviceSolve_;
  DeviceBuffer weights_, source_, destination_, lambda_, dense_, patched_;
};

}  // namespace
}  // namespace cuda

std::unique_ptr<Solver> makeCudaSolver(int device) {
  const int devices = cudaDeviceCount();
  if (devices == 0) throw Error(Error::Kind::Backend, "CUDA backend: no CUDA device is visible");
  if (device < 0 || device >= devices) {
    throw Error(Error::Kind::Backend, "CUDA backend: device " + std::to_string(device) + " does not exist (" +
                                          std::to_string(devices) + " visible)");
  }
  return std::make_unique<cuda::CudaSolver>(device);
}

bool cudaBuilt() { return true; }

int cudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error so later calls start clean
    return 0;
  }
  return n;
}

}  // namespace time_edit
