// The device-resident TIME solve: inputs and outputs already on the GPU. The Solver (cuda_solver.cpp) wraps
// it with host transfers; the GPU benchmark and tests drive it directly so that CUDA events time only the
// device work.
//
// Layout trick used throughout: a row-major n x d float matrix C is, read column-major, the d x n matrix Cᵀ
// with leading dimension d. All cuBLAS/cuSOLVER calls work on those column-major views, so nothing is ever
// transposed in memory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cuda_util.hpp"

namespace time_edit::cuda {

struct Tuning {
  // Panel width of the blocked batched Cholesky and triangular solves (n ≤ d side); 0 picks automatically,
  // a value ≥ the matrix size means one cuSOLVER potrfBatched / cuBLAS trsmBatched call over the whole matrix.
  int64_t blockSize = 0;
  // Batches of at most this many edits use the single-matrix routines (cusolverDnDpotrf, cublasDtrsm) per
  // edit, which are faster than the batched ones for one large matrix.
  int64_t loopMaxBatch = 2;
  // TF32 tensor cores for the patched-weights SGEMMs only (about 3e-4 relative error instead of about 5e-7).
  bool tf32 = false;
  // How patched weights are formed:
  //   Dense:   W' = W·M, one strided-batched SGEMM (W shared, stride 0) after M = I + DᵀG;
  //   LowRank: W' = W + (W·Dᵀ)·G, two strided-batched SGEMMs; W·Dᵀ (W shared, stride 0) runs on a second
  //            stream while the Gram/Cholesky/solve runs, so the factorization is off the critical path;
  //   Auto:    LowRank when it is also fewer flops (2n < d: 2·R·d·n < R·d²), else Dense.
  enum class PatchRoute { Auto, Dense, LowRank };
  PatchRoute patchRoute = PatchRoute::Auto;
  // Multiprocessors kept free of the side-stream SGEMM (W·Dᵀ) of the low-rank route, so that the
  // latency-bound factorization chain running beside it is not starved (cublasSetSmCountTarget).
  // -1: automatic (a quarter of the GPU's multiprocessors); 0: no limit.
  int sideSmReserve = -1;
  // Enqueue the side-stream work before the factorization chain (true) or after it (false: then no host-side
  // wait inside a cuSOLVER/cuBLAS call could hold it back). On an H200 the two are within run-to-run noise.
  bool sideEarly = true;
  // How G = S⁻¹C is formed from the Cholesky factor on the n ≤ d side:
  //   Trsm:  cuBLAS triangular solves (two cublasDtrsm per edit, or blocked trsmBatched/GEMM for batches);
  //   Fused: one launch of the substitution kernel (substitution_tile.hpp) for all edits, when n ≤ 512
  //          (larger n, and the d < n side, use Trsm). Tested on the CPU by emulation; measured by the GPU
  //          check script; the default stays Trsm until a GPU run shows it faster.
  enum class SolveKernel { Trsm, Fused };
  SolveKernel solveKernel = SolveKernel::Trsm;
  // Columns of X per thread block of the fused kernel: 8 (96 blocks at d = 768) or 4 (192 blocks).
  int fusedColumns = 8;
};

// Tuning from the environment: TIME_EDIT_CUDA_BLOCK, TIME_EDIT_CUDA_LOOP_MAX, TIME_EDIT_CUDA_TF32=1,
// TIME_EDIT_CUDA_PATCH=auto|dense|lowrank, TIME_EDIT_CUDA_SIDE_SM_RESERVE, TIME_EDIT_CUDA_SOLVE=trsm|fused|fused4.
Tuning tuningFromEnvironment();

// cuBLAS + cuSOLVER handles bound to one stream on one device. Not thread-safe: callers serialize.
class Context {
 public:
  explicit Context(int device);
  int device() const noexcept { return device_; }
  const std::string& deviceName() const noexcept { return name_; }
  cudaStream_t stream() const noexcept { return stream_.get(); }
  cublasHandle_t blas() const noexcept { return blas_.get(); }
  cusolverDnHandle_t solver() const noexcept { return solver_.get(); }
  // A second stream with its own cuBLAS handle, for work that overlaps the main stream's.
  cudaStream_t sideStream() const noexcept { return side_.get(); }
  cublasHandle_t sideBlas() const noexcept { return sideBlas_.get(); }
  int multiprocessors() const noexcept { return multiprocessors_; }

 private:
  int device_;
  std::string name_;
  int multiprocessors_ = 0;
  Stream stream_;
  BlasHandle blas_;
  SolverHandle solver_;
  Stream side_;
  BlasHandle sideBlas_;
};

// One group of edits that share n (and d). All pointers are device pointers.
struct GroupRequest {
  int64_t d = 0;
  int64_t n = 0;
  int64_t count = 0;
  float* source = nullptr;         // count × n × d: C on entry; G = S⁻¹C on exit when wantG
  float* destination = nullptr;    // count × n × d: C* on entry; D = C* − C on exit when wantD
  const double* lambda = nullptr;  // count
  bool wantG = false;
  bool wantD = false;
  float* dense = nullptr;          // count × d × d: M, or null when not wanted
  const float* weights = nullptr;  // rows × d, shared by the group (stride 0), or null
  int64_t rows = 0;
  float* patched = nullptr;  // count × rows × d: W·M per edit, when weights is set
};

// The solve of one group on the device, as a chain of stages queued on the context's stream: prepare (C, D in
// float64), Gram (λI + CCᵀ or λI + CᵀC), factor (Cholesky), solve (G), then the outputs: G and D in float32, the
// patched weights (low-rank route, with W·Dᵀ on the side stream) and M = I + DᵀG (dense route).
// Example (device pointers; the Solver in cuda_solver.cpp does the same around its host transfers):
//   DeviceSolve solve(context, tuningFromEnvironment());
//   solve.enqueue(request);
//   solve.finish(0);  // waits, throws if an edit's Gram matrix was not positive definite
class DeviceSolve {
 public:
  DeviceSolve(Context& context, Tuning tuning);

  // Queues the whole solve for a group on the context's stream; returns without waiting.
  void enqueue(const GroupRequest& request);
  // Waits for the queued work, then throws Error(Backend) naming edit `firstEdit + b` if the Cholesky
  // factorization of edit b's Gram matrix failed (not positive definite in float64).
  void finish(int64_t firstEdit);

  // Device bytes the solve itself needs per edit of a group (the caller's buffers not included);
  // rows = R when weights are patched, else 0.
  std::size_t workspaceBytesPerEdit(int64_t d, int64_t n, bool wantDense, int64_t rows) const;
  // Whether patched weights of an n-row edit take the low-rank route.
  bool patchViaLowRank(int64_t d, int64_t n) const;
  // Whether G of an n-row edit (width d) is solved by the fused substitution kernel.
  bool solveFused(int64_t d, int64_t n) const;
  // The panel width actually used for Gram size s at batch `count`.
  int64_t blockSizeFor(int64_t s, int64_t count) const;
  const Tuning& tuning() const noexcept { return tuning_; }

 private:
  struct Plan;
  Plan plan(const GroupRequest& r) const;
  // The stages of enqueue(), in the order it queues them.
  void reserveWorkspace(const GroupRequest& r, const Plan& p);
  void enqueuePrepare(const GroupRequest& r, const Plan& p);
  void enqueueSideProduct(const GroupRequest& r, const Plan& p);
  void enqueueGram(const GroupRequest& r, const Plan& p);
  void enqueueFactor(const Plan& p);
  void enqueueSolve(const GroupRequest& r, const Plan& p);
  const float* enqueueGToFloat(const GroupRequest& r, const Plan& p);
  void enqueueLowRankPatch(const GroupRequest& r, const Plan& p, const float* g);
  void enqueueDense(const GroupRequest& r, const Plan& p);

  void factorBatched(double* gram, int64_t s, int64_t count, int64_t nb, int64_t nblocks, double** ptrs, int* info);
  void factorLoop(double* gram, int64_t s, int64_t count, int* info);
  void solveBatched(const GroupRequest& r, double* gram, double* x, int64_t nb, int64_t nblocks, double** ptrs);
  void solveLoop(const GroupRequest& r, double* gram, double* x);

  Context& ctx_;
  Tuning tuning_;
  DeviceBuffer x_;        // count × n × d float64: C, then G (as d × n column-major Gᵀ)
  DeviceBuffer diff_;     // count × n × d float64: D, only when M is wanted
  DeviceBuffer gram_;     // count × s × s float64: the Gram matrix, then its Cholesky factor
  DeviceBuffer mDouble_;  // count × d × d float64: M − I
  DeviceBuffer mFloat_;   // count × d × d float32: M when the caller gave no dense output
  DeviceBuffer info_;     // nblocks × count int
  DeviceBuffer ptrs_;     // 3 × nblocks × count pointers
  DeviceBuffer work_;     // cusolverDnDpotrf workspace (loop path)
  DeviceBuffer gFloat_;   // count × n × d float32: G for the low-rank patch when the caller gave no G output
  DeviceBuffer wdt_;      // count × R × n float32: W·Dᵀ (low-rank patch route)
  Event fork_{Event::OrderingOnly{}}, join_{Event::OrderingOnly{}};
  int lwork_ = 0;  // doubles in work_
  int64_t pendingCount_ = 0;
  int64_t pendingBlocks_ = 0;
  int64_t pendingBlockSize_ = 1;
};

}  // namespace time_edit::cuda
