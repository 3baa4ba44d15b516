// Public CPU helpers (time_edit/cpu_ops.hpp): apply / compose edits on arbitrary rows, the SGEMM floor and the
// paper-port baseline for the benchmark, BLAS thread control.
#include <cstring>
#include <vector>

#include "cpu/kernels.hpp"
#include "cpu/ops_internal.hpp"
#include "time_edit/cpu_ops.hpp"

namespace time_edit::cpu {
namespace {

const Kernels& pick(Kernel kernel) { return kernel == Kernel::Portable ? portableKernels() : bestKernels(); }

[[noreturn]] void invalid(const std::string& message) { throw Error(Error::Kind::InvalidArgument, message); }

void checkDims(int64_t m, int64_t d) {
  if (m < 0) invalid("row count must be ≥ 0, got " + std::to_string(m));
  if (d < 1) invalid("d must be ≥ 1, got " + std::to_string(d));
}

}  // namespace

void applyLowRank(int64_t m, int64_t d, int64_t k, const float* X, const float* A, const float* B, float* out,
                  Kernel kernel) {
  checkDims(m, d);
  if (k < 1) invalid("low-rank rows must be ≥ 1, got " + std::to_string(k));
  if (m > 0 && (X == nullptr || A == nullptr || B == nullptr || out == nullptr)) invalid("null buffer");
  applyLowRankWith(pick(kernel), m, d, k, X, A, B, out);
}

void applyDense(int64_t m, int64_t d, const float* X, const float* M, bool transposeM, float* out, Kernel kernel) {
  checkDims(m, d);
  if (m > 0 && (X == nullptr || M == nullptr || out == nullptr)) invalid("null buffer");
  pick(kernel).sgemm(false, transposeM, m, d, d, 1.0f, X, d, M, d, 0.0f, out, d);
}

void sgemm(int64_t m, int64_t n, int64_t k, const float* A, const float* B, float* C, Kernel kernel) {
  if (m < 0 || n < 0 || k < 0) invalid("GEMM dimensions must be ≥ 0");
  pick(kernel).sgemm(false, false, m, n, k, 1.0f, A, k, B, n, 0.0f, C, n);
}

void baselinePerLayer(int64_t d, const EditRows& edit, const float* weights, const int64_t* layerRows, int64_t layers,
                      float* out, Kernel kernel) {
  validateEdits(d, &edit, 1);
  if (layers < 1 || layerRows == nullptr || weights == nullptr || out == nullptr) invalid("no layers given");
  const Kernels& k = pick(kernel);
  const int64_t n = edit.rows;
  const float lambda = static_cast<float>(edit.lambda);
  std::vector<float> inv(static_cast<size_t>(d * d));
  int64_t offset = 0;
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t r = layerRows[l];
    if (r < 1) invalid("layer " + std::to_string(l) + " has " + std::to_string(r) + " rows");
    const float* w = weights + offset * d;
    float* o = out + offset * d;
    // mat2 = λI + Σ cᵢcᵢᵀ and its explicit inverse, rebuilt for every layer as the reference code does.
    k.sgemm(true, false, d, d, n, 1.0f, edit.source, d, edit.source, d, 0.0f, inv.data(), d);
    for (int64_t i = 0; i < d; ++i) inv[static_cast<size_t>(i * d + i)] += lambda;
    if (const int64_t info = k.sinvert(d, inv.data()); info != 0)
      throw Error(Error::Kind::Backend, "baseline: float32 inverse failed (info " + std::to_string(info) + ")");
    // mat1 = λW + Σ v*ᵢcᵢᵀ with v*ᵢ = W c*ᵢ.
    std::vector<float> vstar(static_cast<size_t>(n * r));
    k.sgemm(false, true, n, r, d, 1.0f, edit.destination, d, w, d, 0.0f, vstar.data(), r);
    std::vector<float> mat1(static_cast<size_t>(r * d));
    for (size_t i = 0; i < mat1.size(); ++i) mat1[i] = lambda * w[i];
    k.sgemm(true, false, r, d, n, 1.0f, vstar.data(), r, edit.source, d, 1.0f, mat1.data(), d);
    k.sgemm(false, false, r, d, d, 1.0f, mat1.data(), d, inv.data(), d, 0.0f, o, d);
    offset += r;
  }
}

int threads(Kernel kernel) { return pick(kernel).threads(); }
void setThreads(int n, Kernel kernel) {
  if (n < 1) invalid("threads must be ≥ 1, got " + std::to_string(n));
  pick(kernel).setThreads(n);
}

}  // namespace time_edit::cpu
