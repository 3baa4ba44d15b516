// The device-resident TIME solve (cuda_device_solve.hpp): tuning from the environment, the cuBLAS/cuSOLVER
// context, and the stages of DeviceSolve::enqueue.
#include "cuda_device_solve.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "cuda_kernels.hpp"
#include "substitution_tile.hpp"

namespace time_edit::cuda {
namespace {

int toInt(int64_t v, const char* what) {
  if (v < 0 || v > 0x7fffffff) {
    throw Error(Error::Kind::InvalidArgument,
                std::string(what) + " = " + std::to_string(v) + " exceeds the 32-bit sizes cuBLAS/cuSOLVER accept");
  }
  return static_cast<int>(v);
}

int64_t envInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long long parsed = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || parsed < 0) {
    throw Error(Error::Kind::InvalidArgument, std::string(name) + " must be a non-negative integer, got '" + v + "'");
  }
  return parsed;
}

}  // namespace

Tuning tuningFromEnvironment() {
  Tuning t;
  t.blockSize = envInt("TIME_EDIT_CUDA_BLOCK", t.blockSize);
  t.loopMaxBatch = envInt("TIME_EDIT_CUDA_LOOP_MAX", t.loopMaxBatch);
  t.tf32 = envInt("TIME_EDIT_CUDA_TF32", 0) != 0;
  t.sideSmReserve = static_cast<int>(envInt("TIME_EDIT_CUDA_SIDE_SM_RESERVE", t.sideSmReserve));
  if (const char* route = std::getenv("TIME_EDIT_CUDA_PATCH"); route != nullptr && *route != '\0') {
    const std::string r = route;
    if (r == "auto") t.patchRoute = Tuning::PatchRoute::Auto;
    else if (r == "dense") t.patchRoute = Tuning::PatchRoute::Dense;
    else if (r == "lowrank") t.patchRoute = Tuning::PatchRoute::LowRank;
    else
      throw Error(Error::Kind::InvalidArgument, "TIME_EDIT_CUDA_PATCH must be auto, dense or lowrank, got '" + r + "'");
  }
  if (const char* solve = std::getenv("TIME_EDIT_CUDA_SOLVE"); solve != nullptr && *solve != '\0') {
    const std::string v = solve;
    if (v == "trsm") {
      t.solveKernel = Tuning::SolveKernel::Trsm;
    } else if (v == "fused" || v == "fused8" || v == "fused4") {
      t.solveKernel = Tuning::SolveKernel::Fused;
      t.fusedColumns = v == "fused4" ? 4 : 8;
    } else {
      throw Error(Error::Kind::InvalidArgument,
                  "TIME_EDIT_CUDA_SOLVE must be trsm, fused (fused8) or fused4, got '" + v + "'");
    }
  }
  return t;
}

namespace {

// Priority range of `device` (made current): {least, greatest}; greatest is the numerically smaller.
std::pair<int, int> priorityRange(int device) {
  check(cudaSetDevice(device), "cudaSetDevice");
  int least = 0, greatest = 0;
  check(cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange");
  return {least, greatest};
}

}  // namespace

// The main stream (the factorization chain: many small, latency-bound kernels) gets the highest priority and
// the side stream (big SGEMMs that fill the GPU) the lowest, so that the block scheduler lets the chain run
// through while the SGEMM takes the rest of the machine.
Context::Context(int device)
    : device_(device), stream_(priorityRange(device).second), side_(priorityRange(device).first) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  name_ = prop.name;
  multiprocessors_ = prop.multiProcessorCount;
  check(cublasSetStream(blas_.get(), stream_.get()), "cublasSetStream");
  check(cusolverDnSetStream(solver_.get(), stream_.get()), "cusolverDnSetStream");
  // Plain FP32/FP64 arithmetic: no TF32 unless Tuning::tf32 asks for it around the patched-weights SGEMMs.
  check(cublasSetMathMode(blas_.get(), CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  check(cublasSetPointerMode(blas_.get(), CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
  check(cublasSetStream(sideBlas_.get(), side_.get()), "cublasSetStream");
  check(cublasSetMathMode(sideBlas_.get(), CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  check(cublasSetPointerMode(sideBlas_.get(), CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
}

DeviceSolve::DeviceSolve(Context& context, Tuning tuning) : ctx_(context), tuning_(tuning) {}

bool DeviceSolve::patchViaLowRank(int64_t d, int64_t n) const {
  switch (tuning_.patchRoute) {
    case Tuning::PatchRoute::Dense: return false;
    case Tuning::PatchRoute::LowRank: return true;
    default: return 2 * n < d;
  }
}

bool DeviceSolve::solveFused(int64_t d, int64_t n) const {
  return tuning_.solveKernel == Tuning::SolveKernel::Fused && n <= d && n <= tile::kMaxRows;
}

std::size_t DeviceSolve::workspaceBytesPerEdit(int64_t d, int64_t n, bool wantDense, int64_t rows) const {
  const int64_t s = std::min(n, d);
  const std::size_t nd = static_cast<std::size_t>(n) * static_cast<std::size_t>(d);
  const bool lowRankPatch = rows > 0 && patchViaLowRank(d, n);
  const bool wantM = wantDense || (rows > 0 && !lowRankPatch);
  std::size_t bytes = nd * sizeof(double) + static_cast<std::size_t>(s * s) * sizeof(double);
  if (wantM) bytes += nd * sizeof(double) + static_cast<std::size_t>(d * d) * (sizeof(double) + sizeof(float));
  if (lowRankPatch) bytes += nd * sizeof(float) + static_cast<std::size_t>(rows * n) * sizeof(float);
  const int64_t nblocks = (s + 15) / 16;  // upper bound: panel width is never below 16
  bytes +=
      static_cast<std::size_t>(nblocks + 1) * sizeof(int) + static_cast<std::size_t>(3 * nblocks) * sizeof(double*);
  return bytes;
}

int64_t DeviceSolve::blockSizeFor(int64_t s, int64_t count) const {
  (void)count;
  int64_t nb = tuning_.blockSize;
  if (nb <= 0) nb = s <= 128 ? s : 128;  // measured on an H200: 128 best at B ≥ 256, within 5% elsewhere
  return std::clamp<int64_t>(nb, std::min<int64_t>(16, s), s);
}

// What one enqueue() decides from the request and the tuning; every stage reads it.
struct DeviceSolve::Plan {
  int64_t d = 0, n = 0, count = 0;
  int64_t nd = 0;             // n·d, the stride of one edit's rows
  bool nSide = true;          // factor the n × n side (n ≤ d) rather than the d × d one
  int64_t s = 0;              // the Gram size: min(n, d)
  bool loop = false;          // single-matrix routines per edit (count ≤ Tuning::loopMaxBatch)
  int64_t nb = 0;             // panel width of the blocked factorization (and of the solves on the n ≤ d side)
  int64_t nblocks = 0;        // panels per factor
  bool fused = false;         // G by the fused substitution kernel
  bool lowRankPatch = false;  // patched weights by W + (W·Dᵀ)·G
  bool wantM = false;         // M = I + DᵀG is formed (asked for, or the dense patch route)
};

DeviceSolve::Plan DeviceSolve::plan(const GroupRequest& r) const {
  Plan p;
  p.d = r.d;
  p.n = r.n;
  p.count = r.count;
  p.nd = r.n * r.d;
  p.lowRankPatch = r.weights != nullptr && patchViaLowRank(r.d, r.n);
  p.wantM = r.dense != nullptr || (r.weights != nullptr && !p.lowRankPatch);
  p.nSide = r.n <= r.d;
  p.s = p.nSide ? r.n : r.d;
  p.loop = r.count <= tuning_.loopMaxBatch;
  // The d × d side solves with one full-size trsmBatched call each, whatever the panel width.
  p.nb = p.loop ? p.s : blockSizeFor(p.s, r.count);
  p.nblocks = (p.s + p.nb - 1) / p.nb;
  p.fused = solveFused(r.d, r.n);
  return p;
}

void DeviceSolve::enqueue(const GroupRequest& r) {
  if (r.count <= 0) {
    pendingCount_ = 0;
    return;
  }
  const Plan p = plan(r);
  reserveWorkspace(r, p);
  enqueuePrepare(r, p);
  if (p.lowRankPatch) {
    fork_.record(ctx_.stream());  // the side stream's W·Dᵀ needs only D
    if (tuning_.sideEarly) enqueueSideProduct(r, p);
  }
  enqueueGram(r, p);
  enqueueFactor(p);
  enqueueSolve(r, p);
  // First non-positive diagonal entry of each factor, read back by finish().
  launchCheckDiagonal(gram_.as<double>(), p.s, p.count, info_.as<int>() + p.nblocks * p.count, ctx_.stream());
  // x now holds Gᵀ (d × n column-major) = G (n × d row-major).
  const float* g = enqueueGToFloat(r, p);
  if (p.lowRankPatch && !tuning_.sideEarly) enqueueSideProduct(r, p);
  if (p.lowRankPatch) enqueueLowRankPatch(r, p, g);
  if (p.wantM) enqueueDense(r, p);
  pendingCount_ = p.count;
  pendingBlocks_ = p.nblocks;
  pendingBlockSize_ = p.nb;
}

// All allocations before the first launch: a growing buffer's cudaFree waits for the device.
void DeviceSolve::reserveWorkspace(const GroupRequest& r, const Plan& p) {
  const int64_t count = p.count, nd = p.nd, s = p.s, d = p.d;
  x_.reserve(static_cast<std::size_t>(count * nd) * sizeof(double));
  gram_.reserve(static_cast<std::size_t>(count * s * s) * sizeof(double));
  info_.reserve(static_cast<std::size_t>((p.nblocks + 1) * count) * sizeof(int));
  if (p.wantM) {
    diff_.reserve(static_cast<std::size_t>(count * nd) * sizeof(double));
    mDouble_.reserve(static_cast<std::size_t>(count * d * d) * sizeof(double));
    if (r.dense == nullptr) mFloat_.reserve(static_cast<std::size_t>(count * d * d) * sizeof(float));
  }
  if (p.lowRankPatch) {
    wdt_.reserve(static_cast<std::size_t>(count * r.rows * p.n) * sizeof(float));
    if (!r.wantG) gFloat_.reserve(static_cast<std::size_t>(count * nd) * sizeof(float));
  }
  if (!p.loop) ptrs_.reserve(static_cast<std::size_t>(3 * p.nblocks * count) * sizeof(double*));
  if (p.loop) {
    const int ls = toInt(s, "Gram size");
    check(cusolverDnDpotrf_bufferSize(ctx_.solver(), CUBLAS_FILL_MODE_LOWER, ls, gram_.as<double>(), ls, &lwork_),
          "cusolverDnDpotrf_bufferSize");
    work_.reserve(static_cast<std::size_t>(std::max(lwork_, 1)) * sizeof(double));
  }
}

// Clears the Cholesky status words, then C and D in float64; D = C* − C also back to float32 in place when the
// caller or the low-rank patch wants it.
void DeviceSolve::enqueuePrepare(const GroupRequest& r, const Plan& p) {
  cudaStream_t st = ctx_.stream();
  int* info = info_.as<int>();
  int* pivotFlags = info + p.nblocks * p.count;
  check(cudaMemsetAsync(info, 0, static_cast<std::size_t>(p.nblocks * p.count) * sizeof(int), st), "cudaMemsetAsync");
  check(cudaMemsetAsync(pivotFlags, 0x7f, static_cast<std::size_t>(p.count) * sizeof(int), st), "cudaMemsetAsync");
  launchPrepare(r.source, r.destination, x_.as<double>(), p.wantM ? diff_.as<double>() : nullptr,
                r.wantD || p.lowRankPatch, p.count * p.nd, st);
}

// Side stream: W' := W for every edit, then T_b = W·D_bᵀ (R × n, row-major), i.e. column-major
// Tᵀ = (view D)ᵀ·(view W), one strided-batched SGEMM with W shared (stride 0). It overlaps the factorization.
void DeviceSolve::enqueueSideProduct(const GroupRequest& r, const Plan& p) {
  const int64_t d = p.d, n = p.n, count = p.count, nd = p.nd;
  const float onef = 1.0f, zerof = 0.0f;
  cudaStream_t side = ctx_.sideStream();
  check(cudaStreamWaitEvent(side, fork_.get(), 0), "cudaStreamWaitEvent");
  const std::size_t wBytes = static_cast<std::size_t>(r.rows * d) * sizeof(float);
  for (int64_t b = 0; b < count; ++b) {
    check(cudaMemcpyAsync(r.patched + b * r.rows * d, r.weights, wBytes, cudaMemcpyDeviceToDevice, side),
          "cudaMemcpyAsync (W into W')");
  }
  cublasHandle_t hs = ctx_.sideBlas();
  const int sms = ctx_.multiprocessors();
  const int reserve = tuning_.sideSmReserve < 0 ? sms / 4 : tuning_.sideSmReserve;
  check(cublasSetSmCountTarget(hs, reserve > 0 ? std::max(1, sms - reserve) : 0), "cublasSetSmCountTarget");
  if (tuning_.tf32) check(cublasSetMathMode(hs, CUBLAS_TF32_TENSOR_OP_MATH), "cublasSetMathMode (TF32)");
  const cublasStatus_t status =
      cublasSgemmStridedBatched(hs, CUBLAS_OP_T, CUBLAS_OP_N, toInt(n, "n"), toInt(r.rows, "weight rows"),
                                toInt(d, "d"), &onef, r.destination, toInt(d, "d"), nd, r.weights, toInt(d, "d"), 0,
                                &zerof, wdt_.as<float>(), toInt(n, "n"), r.rows * n, toInt(count, "batch"));
  if (tuning_.tf32) check(cublasSetMathMode(hs, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  check(status, "cublasSgemmStridedBatched (W·Dᵀ)");
  join_.record(side);
}

// λI + the Gram matrix on the smaller side (full GEMM: strided-batched DGEMM runs on the FP64 tensor cores;
// there is no strided-batched SYRK).
void DeviceSolve::enqueueGram(const GroupRequest& r, const Plan& p) {
  const int64_t d = p.d, n = p.n, nd = p.nd, count = p.count;
  const double one = 1.0, zero = 0.0;
  cublasHandle_t h = ctx_.blas();
  double* x = x_.as<double>();
  double* gram = gram_.as<double>();
  if (p.nSide) {
    // S = C Cᵀ = (Cᵀ)ᵀ(Cᵀ): X is Cᵀ (d × n, ld d).
    check(cublasDgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, toInt(n, "n"), toInt(n, "n"), toInt(d, "d"), &one, x,
                                    toInt(d, "d"), nd, x, toInt(d, "d"), nd, &zero, gram, toInt(n, "n"), n * n,
                                    toInt(count, "batch")),
          "cublasDgemmStridedBatched (Gram C·Cᵀ)");
  } else {
    // A = CᵀC = X Xᵀ.
    check(cublasDgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, toInt(d, "d"), toInt(d, "d"), toInt(n, "n"), &one, x,
                                    toInt(d, "d"), nd, x, toInt(d, "d"), nd, &zero, gram, toInt(d, "d"), d * d,
                                    toInt(count, "batch")),
          "cublasDgemmStridedBatched (Gram Cᵀ·C)");
  }
  launchAddDiagonal(gram, p.s, count, r.lambda, ctx_.stream());
}

// The Cholesky factor of every Gram matrix, in place: per edit with cusolverDnDpotrf (loop), else blocked and
// batched (the block pointers are filled on the device first).
void DeviceSolve::enqueueFactor(const Plan& p) {
  double* gram = gram_.as<double>();
  int* info = info_.as<int>();
  if (p.loop) {
    factorLoop(gram, p.s, p.count, info);
  } else {
    double** ptrs = ptrs_.as<double*>();
    launchFillBlockPointers(ptrs, gram, x_.as<double>(), p.s, p.d, p.nd, p.nb, p.nblocks, p.count, ctx_.stream());
    factorBatched(gram, p.s, p.count, p.nb, p.nblocks, ptrs, info);
  }
}

// G = S⁻¹C (or C A⁻¹ on the d < n side) from the factor, in place in x: the fused substitution kernel, else
// cuBLAS triangular solves per edit (loop) or blocked and batched.
void DeviceSolve::enqueueSolve(const GroupRequest& r, const Plan& p) {
  double* gram = gram_.as<double>();
  double* x = x_.as<double>();
  if (p.fused) {
    launchCholeskySubstitution(gram, x, p.n, p.d, p.count, tuning_.fusedColumns, ctx_.stream());
  } else if (p.loop) {
    solveLoop(r, gram, x);
  } else {
    solveBatched(r, gram, x, p.nb, p.nblocks, ptrs_.as<double*>());
  }
}

// G in float32: into the caller's source buffer when G is wanted, else into gFloat_ when the low-rank patch
// needs it. Returns where it is (null when neither).
const float* DeviceSolve::enqueueGToFloat(const GroupRequest& r, const Plan& p) {
  const int64_t total = p.count * p.nd;
  if (r.wantG) {
    launchToFloat(x_.as<double>(), r.source, total, ctx_.stream());
    return r.source;
  }
  if (p.lowRankPatch) {
    float* g = gFloat_.as<float>();
    launchToFloat(x_.as<double>(), g, total, ctx_.stream());
    return g;
  }
  return nullptr;
}

// W' = W + T·G per edit, once the side stream's T = W·Dᵀ is done: column-major W'ᵀ = Wᵀ + (view G)·Tᵀ, beta = 1 on
// the copies of W.
void DeviceSolve::enqueueLowRankPatch(const GroupRequest& r, const Plan& p, const float* g) {
  const int64_t d = p.d, n = p.n, nd = p.nd, count = p.count;
  const float onef = 1.0f;
  cudaStream_t st = ctx_.stream();
  cublasHandle_t h = ctx_.blas();
  check(cudaStreamWaitEvent(st, join_.get(), 0), "cudaStreamWaitEvent");
  if (tuning_.tf32) check(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH), "cublasSetMathMode (TF32)");
  const cublasStatus_t status =
      cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, toInt(d, "d"), toInt(r.rows, "weight rows"), toInt(n, "n"),
                                &onef, g, toInt(d, "d"), nd, wdt_.as<float>(), toInt(n, "n"), r.rows * n, &onef,
                                r.patched, toInt(d, "d"), r.rows * d, toInt(count, "batch"));
  if (tuning_.tf32) check(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  check(status, "cublasSgemmStridedBatched (W + (W·Dᵀ)·G)");
}

// M = I + DᵀG in float32 (the caller's dense output, or mFloat_), then on the dense route W' = W·M.
void DeviceSolve::enqueueDense(const GroupRequest& r, const Plan& p) {
  const int64_t d = p.d, n = p.n, nd = p.nd, count = p.count;
  const double one = 1.0, zero = 0.0;
  const float onef = 1.0f, zerof = 0.0f;
  cudaStream_t st = ctx_.stream();
  cublasHandle_t h = ctx_.blas();
  // Row-major M = I + DᵀG; its column-major view Mᵀ = I + Gᵀ D = X_G · X_Dᵀ + I.
  double* md = mDouble_.as<double>();
  check(cublasDgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, toInt(d, "d"), toInt(d, "d"), toInt(n, "n"), &one,
                                  x_.as<double>(), toInt(d, "d"), nd, diff_.as<double>(), toInt(d, "d"), nd, &zero, md,
                                  toInt(d, "d"), d * d, toInt(count, "batch")),
        "cublasDgemmStridedBatched (M = I + DᵀG)");
  float* mf = r.dense != nullptr ? r.dense : mFloat_.as<float>();
  launchAddIdentityToFloat(md, mf, d, count, st);

  if (r.weights != nullptr && !p.lowRankPatch) {
    // W' = W·M for every edit: column-major W'ᵀ = Mᵀ Wᵀ, i.e. GEMM(view(M), view(W)); W shared (stride 0).
    if (tuning_.tf32) check(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH), "cublasSetMathMode (TF32)");
    const cublasStatus_t status =
        cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, toInt(d, "d"), toInt(r.rows, "weight rows"),
                                  toInt(d, "d"), &onef, mf, toInt(d, "d"), d * d, r.weights, toInt(d, "d"), 0, &zerof,
                                  r.patched, toInt(d, "d"), r.rows * d, toInt(count, "batch"));
    if (tuning_.tf32) check(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    check(status, "cublasSgemmStridedBatched (W' = W·M)");
  }
}

void DeviceSolve::factorBatched(double* gram, int64_t s, int64_t count, int64_t nb, int64_t nblocks, double** ptrs,
                                int* info) {
  cublasHandle_t h = ctx_.blas();
  const double one = 1.0, minusOne = -1.0;
  const int ls = toInt(s, "Gram size");
  const int batch = toInt(count, "batch");
  for (int64_t j = 0; j < nblocks; ++j) {
    const int64_t j0 = j * nb;
    const int64_t jb = std::min(nb, s - j0);
    const int64_t j1 = j0 + jb;
    check(cusolverDnDpotrfBatched(ctx_.solver(), CUBLAS_FILL_MODE_LOWER, toInt(jb, "block"), ptrs + j * count, ls,
                                  info + j * count, batch),
          "cusolverDnDpotrfBatched");
    if (j1 < s) {
      // Panel below the diagonal block: L21 = A21 L11⁻ᵀ.
      check(cublasDtrsmBatched(h, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, CUBLAS_DIAG_NON_UNIT,
                               toInt(s - j1, "rows"), toInt(jb, "block"), &one, ptrs + j * count, ls,
                               ptrs + (nblocks + j) * count, ls, batch),
            "cublasDtrsmBatched (Cholesky panel)");
      // Trailing update A22 −= L21 L21ᵀ (full square; only its lower part is read later).
      double* l21 = gram + j1 + j0 * s;
      double* a22 = gram + j1 + j1 * s;
      check(cublasDgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, toInt(s - j1, "rows"), toInt(s - j1, "rows"),
                                      toInt(jb, "block"), &minusOne, l21, ls, s * s, l21, ls, s * s, &one, a22, ls,
                                      s * s, batch),
            "cublasDgemmStridedBatched (Cholesky trailing update)");
    }
  }
}

void DeviceSolve::factorLoop(double* gram, int64_t s, int64_t count, int* info) {
  const int ls = toInt(s, "Gram size");
  for (int64_t b = 0; b < count; ++b) {
    check(cusolverDnDpotrf(ctx_.solver(), CUBLAS_FILL_MODE_LOWER, ls, gram + b * s * s, ls, work_.as<double>(), lwork_,
                           info + b),
          "cusolverDnDpotrf");
  }
}

void DeviceSolve::solveBatched(const GroupRequest& r, double* gram, double* x, int64_t nb, int64_t nblocks,
                               double** ptrs) {
  const int64_t d = r.d, n = r.n, count = r.count, nd = n * d;
  cublasHandle_t h = ctx_.blas();
  const double one = 1.0, minusOne = -1.0;
  const int ld = toInt(d, "d");
  const int batch = toInt(count, "batch");
  double* const* diag = ptrs;                        // [j*count + b]
  double* const* xcol = ptrs + 2 * nblocks * count;  // [j*count + b]
  if (n <= d) {
    // Gᵀ = Cᵀ S⁻¹ = X L⁻ᵀ L⁻¹ (right-side solves with the n × n factor L, ld n), by column blocks.
    const int ln = toInt(n, "n");
    for (int64_t j = 0; j < nblocks; ++j) {  // X := X L⁻ᵀ, forward
      const int64_t j0 = j * nb, jb = std::min(nb, n - j0), j1 = j0 + jb;
      check(cublasDtrsmBatched(h, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, CUBLAS_DIAG_NON_UNIT, ld,
                               toInt(jb, "block"), &one, diag + j * count, ln, xcol + j * count, ld, batch),
            "cublasDtrsmBatched (X·L⁻ᵀ)");
      if (j1 < n) {
        check(cublasDgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, ld, toInt(n - j1, "cols"), toInt(jb, "block"),
                                        &minusOne, x + j0 * d, ld, nd, gram + j1 + j0 * n, ln, n * n, &one, x + j1 * d,
                                        ld, nd, batch),
              "cublasDgemmStridedBatched (X·L⁻ᵀ update)");
      }
    }
    for (int64_t j = nblocks - 1; j >= 0; --j) {  // X := X L⁻¹, backward
      const int64_t j0 = j * nb, jb = std::min(nb, n - j0);
      check(cublasDtrsmBatched(h, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, ld,
                               toInt(jb, "block"), &one, diag + j * count, ln, xcol + j * count, ld, batch),
            "cublasDtrsmBatched (X·L⁻¹)");
      if (j0 > 0) {
        check(cublasDgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, ld, toInt(j0, "cols"), toInt(jb, "block"),
                                        &minusOne, x + j0 * d, ld, nd, gram + j0, ln, n * n, &one, x, ld, nd, batch),
              "cublasDgemmStridedBatched (X·L⁻¹ update)");
      }
    }
  } else {
    // Gᵀ = A⁻¹ Cᵀ = L⁻ᵀ L⁻¹ X (left-side solves with the d × d factor; one full-size call each).
    check(cublasDtrsmBatched(h, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, ld,
                             toInt(n, "n"), &one, diag, ld, xcol, ld, batch),
          "cublasDtrsmBatched (L⁻¹·X)");
    check(cublasDtrsmBatched(h, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, CUBLAS_DIAG_NON_UNIT, ld,
                             toInt(n, "n"), &one, diag, ld, xcol, ld, batch),
          "cublasDtrsmBatched (L⁻ᵀ·X)");
  }
}

void DeviceSolve::solveLoop(const GroupRequest& r, double* gram, double* x) {
  const int64_t d = r.d, n = r.n, nd = n * d;
  cublasHandle_t h = ctx_.blas();
  const double one = 1.0;
  const int ld = toInt(d, "d"), ln = toInt(n, "n");
  for (int64_t b = 0; b < r.count; ++b) {
    double* xb = x + b * nd;
    if (n <= d) {
      double* l = gram + b * n * n;
      check(cublasDtrsm(h, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, CUBLAS_DIAG_NON_UNIT, ld, ln, &one,
                        l, ln, xb, ld),
            "cublasDtrsm (X·L⁻ᵀ)");
      check(cublasDtrsm(h, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, ld, ln, &one,
                        l, ln, xb, ld),
            "cublasDtrsm (X·L⁻¹)");
    } else {
      double* l = gram + b * d * d;
      check(cublasDtrsm(h, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, ld, ln, &one, l,
                        ld, xb, ld),
            "cublasDtrsm (L⁻¹·X)");
      check(cublasDtrsm(h, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, CUBLAS_DIAG_NON_UNIT, ld, ln, &one, l,
                        ld, xb, ld),
            "cublasDtrsm (L⁻ᵀ·X)");
    }
  }
}

void DeviceSolve::finish(int64_t firstEdit) {
  const int64_t count = pendingCount_, nblocks = pendingBlocks_;
  pendingCount_ = 0;
  if (count == 0) {
    check(cudaStreamSynchronize(ctx_.stream()), "cudaStreamSynchronize");
    return;
  }
  std::vector<int> info(static_cast<std::size_t>((nblocks + 1) * count));
  check(cudaMemcpyAsync(info.data(), info_.as<int>(), info.size() * sizeof(int), cudaMemcpyDeviceToHost, ctx_.stream()),
        "cudaMemcpyAsync (Cholesky info)");
  check(cudaStreamSynchronize(ctx_.stream()), "cudaStreamSynchronize");
  auto notPositiveDefinite = [&](int64_t b, int64_t column) {
    return Error(Error::Kind::Backend,
                 "edit " + std::to_string(firstEdit + b) +
                     ": the Gram matrix λI + CCᵀ is not positive definite in float64 (Cholesky pivot " +
                     std::to_string(column) + " is not > 0); λ is too small for the scale of the rows");
  };
  for (int64_t b = 0; b < count; ++b) {
    for (int64_t j = 0; j < nblocks; ++j) {
      const int v = info[static_cast<std::size_t>(j * count + b)];
      if (v < 0) {
        throw Error(Error::Kind::Backend, "cusolverDnDpotrf failed: parameter " + std::to_string(-v) + " is invalid");
      }
      if (v > 0) throw notPositiveDefinite(b, j * pendingBlockSize_ + v);
    }
    const int pivot = info[static_cast<std::size_t>(nblocks * count + b)];
    if (pivot != 0x7f7f7f7f) throw notPositiveDefinite(b, pivot + 1);
  }
}

}  // namespace time_edit::cuda
