// The CPU backend of the TIME solve. Per edit: one float64 Gram matrix on the smaller side (n × n when n ≤ d, else
// d × d), one Cholesky, two triangular solves with many right-hand sides giving G = S⁻¹C (never an inverse), then
// the requested outputs in float32. Patched weights take one pass over the stacked weights per edit: the low-rank
// product W + (W·Dᵀ)·G when that is cheaper (2n < d roughly, e.g. SD's n = 308, d = 768), else one SGEMM W·M.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/kernels.hpp"
#include "cpu/ops_internal.hpp"
#include "time_edit/cpu_ops.hpp"
#include "time_edit/solver.hpp"

namespace time_edit::cpu {

void applyLowRankWith(const Kernels& kernels, int64_t m, int64_t d, int64_t k, const float* X, const float* A,
                      const float* B, float* out) {
  if (m <= 0) return;
  const int64_t block = std::min(m, kApplyBlockRows);
  std::vector<float> tmp(static_cast<size_t>(block * k));
  for (int64_t r0 = 0; r0 < m; r0 += block) {
    const int64_t rows = std::min(block, m - r0);
    const float* x = X + r0 * d;
    float* o = out + r0 * d;
    kernels.sgemm(false, true, rows, k, d, 1.0f, x, d, A, d, 0.0f, tmp.data(), k);  // X·Aᵀ
    std::memcpy(o, x, static_cast<size_t>(rows * d) * sizeof(float));
    kernels.sgemm(false, false, rows, d, k, 1.0f, tmp.data(), k, B, d, 1.0f, o, d);  // + (X·Aᵀ)·B
  }
}

namespace {

// Squares of float32 values cannot overflow float64, so a failed Cholesky of λI + CCᵀ (or λI + CᵀC) means the
// matrix is not positive definite in float64: λ is negligible next to C's scale and C is rank-deficient.
Error notPositiveDefinite(int64_t b, bool small, double lambda, int64_t n) {
  std::ostringstream msg;
  msg << "edit " << b << ": the system λI + " << (small ? "CCᵀ" : "CᵀC")
      << " is not positive definite in float64 (λ = " << lambda << ", n = " << n
      << "): λ is too small for C's rank; use a larger λ";
  return Error(Error::Kind::InvalidArgument, msg.str());
}

[[noreturn]] void invalid(const std::string& message) { throw Error(Error::Kind::InvalidArgument, message); }

class CpuSolver final : public Solver {
 public:
  explicit CpuSolver(const Kernels& kernels) : k_(kernels) {}

  std::string name() const override { return k_.name(); }

  void solve(int64_t d, const EditRows* edits, int64_t count, const EditOutputs* outputs,
             const WeightsPatch* patch) override {
    validateEdits(d, edits, count);
    if (patch != nullptr) {
      if (patch->weights == nullptr) invalid("weights are null");
      if (patch->rows < 1) invalid("weight rows must be ≥ 1, got " + std::to_string(patch->rows));
      if (count > 0 && patch->patched == nullptr) invalid("patched outputs are null");
      for (int64_t b = 0; b < count; ++b)
        if (patch->patched[b] == nullptr) invalid("patched output of edit " + std::to_string(b) + " is null");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    try {
      for (int64_t b = 0; b < count; ++b) solveOne(d, b, edits[b], outputs != nullptr ? &outputs[b] : nullptr, patch);
    } catch (...) {
      releaseLargeWorkspaces();
      throw;
    }
    releaseLargeWorkspaces();
  }

  void patchWithDense(int64_t d, const float* const* dense, int64_t count, const float* weights, int64_t rows,
                      float* const* patched) override {
    if (d < 1) invalid("d must be ≥ 1, got " + std::to_string(d));
    if (rows < 1) invalid("weight rows must be ≥ 1, got " + std::to_string(rows));
    if (weights == nullptr) invalid("weights are null");
    if (count > 0 && (dense == nullptr || patched == nullptr)) invalid("dense matrices or outputs are null");
    for (int64_t b = 0; b < count; ++b) {
      if (dense[b] == nullptr) invalid("dense matrix " + std::to_string(b) + " is null");
      if (patched[b] == nullptr) invalid("patched output " + std::to_string(b) + " is null");
    }
    for (int64_t b = 0; b < count; ++b)
      k_.sgemm(false, false, rows, d, d, 1.0f, weights, d, dense[b], d, 0.0f, patched[b], d);
  }

 private:
  // Keeps small workspaces for the next call (SD shapes: ~3 MB) but does not hold on to huge ones (n in the thousands).
  void releaseLargeWorkspaces() {
    constexpr size_t kKeepBytes = size_t{64} << 20;
    for (auto* v : {&g_, &gram_, &diff_, &m_})
      if (v->capacity() * sizeof(double) > kKeepBytes) std::vector<double>().swap(*v);
  }

  void solveOne(int64_t d, int64_t b, const EditRows& e, const EditOutputs* out, const WeightsPatch* patch) {
    const int64_t n = e.rows;
    const size_t nd = static_cast<size_t>(n * d);
    const bool small = n <= d;  // factor on the n × n side (push-through identity) or the d × d side
    const int64_t s = small ? n : d;
    // Workspaces are kept between calls: re-faulting fresh pages for every edit costs as much as a triangular solve.
    std::vector<double>& g = g_;
    std::vector<double>& gram = gram_;
    g.resize(nd);
    gram.resize(static_cast<size_t>(s * s));
    for (size_t i = 0; i < nd; ++i) g[i] = e.source[i];
    if (small) k_.dgramRows(n, d, g.data(), gram.data());  // C·Cᵀ
    else k_.dgramCols(d, n, g.data(), gram.data());        // Cᵀ·C
    for (int64_t i = 0; i < s; ++i) gram[static_cast<size_t>(i * s + i)] += e.lambda;
    if (k_.dpotrfLower(s, gram.data()) != 0) throw notPositiveDefinite(b, small, e.lambda, n);
    if (small) k_.dcholSolveLeft(n, gram.data(), d, g.data());  // G = S⁻¹·C
    else k_.dcholSolveRight(d, gram.data(), n, g.data());       // G = C·(λI + CᵀC)⁻¹

    std::vector<float> ownD, ownG, ownM;
    float* outD = out != nullptr ? out->lowRankD : nullptr;
    float* outG = out != nullptr ? out->lowRankG : nullptr;
    float* outM = out != nullptr ? out->dense : nullptr;

    const int64_t R = patch != nullptr ? patch->rows : 0;
    const double lowRankCost = 4.0 * R * d * n + static_cast<double>(R) * d;
    const double denseCost = 2.0 * R * d * d + (outM != nullptr ? 0.0 : 2.0 * d * d * n);
    const bool patchLowRank = patch != nullptr && lowRankCost < denseCost;
    const bool patchDense = patch != nullptr && !patchLowRank;

    if (outD == nullptr && patchLowRank) outD = (ownD.resize(nd), ownD.data());
    if (outG == nullptr && patchLowRank) outG = (ownG.resize(nd), ownG.data());
    if (outM == nullptr && patchDense) outM = (ownM.resize(static_cast<size_t>(d * d)), ownM.data());

    if (outD != nullptr)
      for (size_t i = 0; i < nd; ++i) outD[i] = e.destination[i] - e.source[i];
    if (outG != nullptr)
      for (size_t i = 0; i < nd; ++i) outG[i] = static_cast<float>(g[i]);
    if (outM != nullptr) {
      std::vector<double>& diff = diff_;
      diff.resize(nd);
      for (size_t i = 0; i < nd; ++i)
        diff[i] = static_cast<double>(e.destination[i]) - static_cast<double>(e.source[i]);
      std::vector<double>& m = m_;
      m.assign(static_cast<size_t>(d * d), 0.0);
      for (int64_t i = 0; i < d; ++i) m[static_cast<size_t>(i * d + i)] = 1.0;
      k_.dgemm(true, false, d, d, n, 1.0, diff.data(), d, g.data(), d, 1.0, m.data(), d);  // I + Dᵀ·G
      for (size_t i = 0; i < m.size(); ++i) outM[i] = static_cast<float>(m[i]);
    }
    if (patchLowRank) applyLowRankWith(k_, R, d, n, patch->weights, outD, outG, patch->patched[b]);
    if (patchDense) k_.sgemm(false, false, R, d, d, 1.0f, patch->weights, d, outM, d, 0.0f, patch->patched[b], d);
  }

  const Kernels& k_;
  std::mutex mutex_;  // one solve at a time per solver object (the workspaces below are shared)
  std::vector<double> g_, gram_, diff_, m_;
};

}  // namespace

std::unique_ptr<Solver> makeSolver(Kernel kernel) {
  return std::make_unique<CpuSolver>(kernel == Kernel::Portable ? portableKernels() : bestKernels());
}
std::string portableBackendName() { return portableKernels().name(); }
bool hasBlas() { return blasKernels() != nullptr; }

}  // namespace time_edit::cpu

namespace time_edit {

std::unique_ptr<Solver> makeCpuSolver() { return cpu::makeSolver(cpu::Kernel::Best); }
std::string cpuBackendName() { return cpu::bestKernels().name(); }

}  // namespace time_edit
