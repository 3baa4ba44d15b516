// CUDA backend tests (ctest, no Node): results against a float64 reference written here, independently of
// the backend (plain loops: Cholesky on whichever side is smaller, substitution, products), and against the
// CPU backend when the build links it. Outputs are poisoned with NaN first so every element must be written.
// Exit code 77 (ctest: skipped) when the build has CUDA but the machine has no CUDA device.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../testing/cuda_reference.hpp"
#include "expect.hpp"
#include "time_edit/solver.hpp"

using time_edit::EditOutputs;
using time_edit::EditRows;
using time_edit::Error;
using time_edit::WeightsPatch;
using namespace time_edit::testref;

namespace {

using time_edit::testing::expect;

constexpr double kTol = 1e-6;  // the CUDA backend's accuracy target against float64 (the GPU benchmark's too)

bool allFinite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

bool allNaN(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isnan(x)) return false;
  return true;
}

std::vector<float> randomWeights(int64_t rows, int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> w(static_cast<std::size_t>(rows * d));
  for (auto& v : w) v = normal(rng);
  return w;
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct BatchResult {
  std::vector<std::vector<float>> d, g, m, patched;
};

// Runs one batch through `solver` with every output poisoned; outputs requested per the flags.
BatchResult runBatch(time_edit::Solver& solver, int64_t d, const std::vector<Case>& cases, bool wantLowRank, bool wantM,
                     const std::vector<float>* weights, int64_t rows) {
  const int64_t count = static_cast<int64_t>(cases.size());
  BatchResult res;
  std::vector<EditRows> edits(cases.size());
  std::vector<EditOutputs> outs(cases.size());
  std::vector<float*> patchedPtrs;
  for (std::size_t b = 0; b < cases.size(); ++b) {
    const std::size_t nd = cases[b].c.size();
    edits[b].source = cases[b].c.data();
    edits[b].destination = cases[b].cs.data();
    edits[b].rows = cases[b].n;
    edits[b].lambda = cases[b].lambda;
    res.d.emplace_back(wantLowRank ? nd : 0, kNaN);
    res.g.emplace_back(wantLowRank ? nd : 0, kNaN);
    res.m.emplace_back(wantM ? static_cast<std::size_t>(d * d) : 0, kNaN);
    res.patched.emplace_back(weights ? static_cast<std::size_t>(rows * d) : 0, kNaN);
  }
  for (std::size_t b = 0; b < cases.size(); ++b) {
    if (wantLowRank) {
      outs[b].lowRankD = res.d[b].data();
      outs[b].lowRankG = res.g[b].data();
    }
    if (wantM) outs[b].dense = res.m[b].data();
    if (weights) patchedPtrs.push_back(res.patched[b].data());
  }
  WeightsPatch patch;
  if (weights) {
    patch.weights = weights->data();
    patch.rows = rows;
    patch.patched = patchedPtrs.data();
  }
  solver.solve(d, edits.data(), count, outs.data(), weights ? &patch : nullptr);
  return res;
}

// One size combination: a batch of `count` edits (mixed λ), all outputs written and finite, sampled edits
// against the float64 reference.
void checkCombination(time_edit::Solver& solver, int64_t d, int64_t n, int64_t count, bool clipLike, bool withM,
                      int64_t rows, const std::string& label) {
  std::vector<Case> cases;
  for (int64_t b = 0; b < count; ++b) {
    cases.push_back(makeCase(d, n, 1000 * static_cast<uint64_t>(d) + 31 * static_cast<uint64_t>(n) + b, clipLike,
                             b % 2 ? 0.1 : 0.5));
  }
  const std::vector<float> w = randomWeights(rows, d, 7 + d);
  const auto t0 = std::chrono::steady_clock::now();
  BatchResult res = runBatch(solver, d, cases, true, withM, rows > 0 ? &w : nullptr, rows);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  bool finite = true;
  for (int64_t b = 0; b < count; ++b) {
    finite = finite && allFinite(res.d[b]) && allFinite(res.g[b]) && allFinite(res.m[b]) && allFinite(res.patched[b]);
  }
  expect(finite, label + ": every output element written and finite");

  std::vector<int64_t> sample = {0};
  if (count > 2) sample.push_back(count / 2);
  if (count > 1) sample.push_back(count - 1);
  double worstG = 0, worstD = 0, worstM = 0, worstW = 0;
  for (int64_t b : sample) {
    const Reference ref = reference(d, cases[static_cast<std::size_t>(b)], withM || rows > 0);
    worstD = std::max(worstD, relError(res.d[b].data(), ref.dm));
    worstG = std::max(worstG, relError(res.g[b].data(), ref.g));
    if (withM) worstM = std::max(worstM, relError(res.m[b].data(), ref.m));
    if (rows > 0) worstW = std::max(worstW, relError(res.patched[b].data(), patchedRef(w, rows, d, ref.m)));
    // D is C* − C rounded once: bitwise equal to the float subtraction.
    bool exactD = true;
    const Case& k = cases[static_cast<std::size_t>(b)];
    for (std::size_t i = 0; i < k.c.size(); ++i) exactD = exactD && res.d[b][i] == k.cs[i] - k.c[i];
    expect(exactD, label + ": D equals C* − C exactly (edit " + std::to_string(b) + ")");
  }
  expect(worstG <= kTol, label + ": G rel error " + std::to_string(worstG));
  expect(worstD <= kTol, label + ": D rel error " + std::to_string(worstD));
  expect(worstM <= kTol, label + ": M rel error " + std::to_string(worstM));
  expect(worstW <= kTol, label + ": W' rel error " + std::to_string(worstW));
  std::printf("%-44s %8.1f ms  relerr G %.2e  M %.2e  W' %.2e\n", label.c_str(), ms, worstG, worstM, worstW);
}

template <typename F>
void expectThrows(F&& f, Error::Kind kind, const std::string& needle, const std::string& what) {
  try {
    f();
    expect(false, what + ": expected an error, none thrown");
  } catch (const Error& e) {
    const bool ok = e.kind() == kind && std::string(e.what()).find(needle) != std::string::npos;
    expect(ok, what + ": got '" + e.what() + "'");
  } catch (const std::exception& e) {
    expect(false, what + ": wrong exception type: " + e.what());
  }
}

void checkBadInput(time_edit::Solver& solver) {
  const int64_t d = 64, n = 5;
  std::vector<Case> cases;
  for (int b = 0; b < 4; ++b) cases.push_back(makeCase(d, n, 500 + b, false, 0.1));
  auto attempt = [&](const std::string& what, std::function<void(std::vector<Case>&)> spoil) {
    std::vector<Case> bad = cases;
    spoil(bad);
    std::vector<EditRows> edits(bad.size());
    std::vector<std::vector<float>> g(bad.size(), std::vector<float>(static_cast<std::size_t>(n * d), kNaN));
    std::vector<EditOutputs> outs(bad.size());
    for (std::size_t b = 0; b < bad.size(); ++b) {
      edits[b] = EditRows{bad[b].c.data(), bad[b].cs.data(), bad[b].n, bad[b].lambda};
      outs[b].lowRankG = g[b].data();
    }
    expectThrows([&] { solver.solve(d, edits.data(), static_cast<int64_t>(edits.size()), outs.data(), nullptr); },
                 Error::Kind::InvalidArgument, "2", what + " in edit 2 rejected");
    bool untouched = true;
    for (const auto& v : g) untouched = untouched && allNaN(v);
    expect(untouched, what + ": nothing written");
  };
  attempt("NaN in C", [](std::vector<Case>& c) { c[2].c[17] = std::numeric_limits<float>::quiet_NaN(); });
  attempt("+Inf in C*", [](std::vector<Case>& c) { c[2].cs[3] = std::numeric_limits<float>::infinity(); });
  attempt("-Inf in C", [](std::vector<Case>& c) { c[2].c[0] = -std::numeric_limits<float>::infinity(); });
  attempt("λ = 0", [](std::vector<Case>& c) { c[2].lambda = 0.0; });
  attempt("λ < 0", [](std::vector<Case>& c) { c[2].lambda = -1.0; });
  attempt("λ = NaN", [](std::vector<Case>& c) { c[2].lambda = std::nan(""); });
  attempt("λ = Inf", [](std::vector<Case>& c) { c[2].lambda = std::numeric_limits<double>::infinity(); });

  // Not positive definite in float64: two identical rows of ones (|c|² = 64, exact) with a subnormal λ,
  // so the second Cholesky pivot is exactly 0. Edit 1 of 3 is the bad one.
  std::vector<Case> pd;
  for (int b = 0; b < 3; ++b) pd.push_back(makeCase(d, 2, 900 + b, false, 0.1));
  std::fill(pd[1].c.begin(), pd[1].c.end(), 1.0f);
  pd[1].cs = pd[1].c;
  pd[1].cs[0] = 2.0f;
  pd[1].lambda = 1e-320;
  for (int path = 0; path < 2; ++path) {
    // path 0: one batch of 3 (batched cuSOLVER); path 1: the bad edit alone (single-matrix cuSOLVER).
    std::vector<Case> batch = path == 0 ? pd : std::vector<Case>{pd[1]};
    const std::string needle = path == 0 ? "edit 1" : "edit 0";
    expectThrows([&] { runBatch(solver, d, batch, true, false, nullptr, 0); }, Error::Kind::Backend, needle,
                 std::string("non-positive-definite Gram reported, ") + (path == 0 ? "batched" : "single"));
  }
}

// The same edit solved alone and inside a batch (different code paths: single-matrix vs batched blocked).
void checkBatchEqualsSingles(time_edit::Solver& solver) {
  const int64_t d = 768, n = 308;
  std::vector<Case> cases;
  for (int b = 0; b < 5; ++b) cases.push_back(makeCase(d, n, 4242 + b, true, 0.1));
  BatchResult batch = runBatch(solver, d, cases, true, true, nullptr, 0);
  double worst = 0;
  for (int b = 0; b < 5; ++b) {
    BatchResult single = runBatch(solver, d, {cases[static_cast<std::size_t>(b)]}, true, true, nullptr, 0);
    Mat m(single.m[0].begin(), single.m[0].end());
    Mat g(single.g[0].begin(), single.g[0].end());
    worst = std::max({worst, relError(batch.m[b].data(), m), relError(batch.g[b].data(), g)});
  }
  expect(worst <= kTol, "batch of 5 equals 5 single solves: " + std::to_string(worst));
  std::printf("%-44s relerr %.2e\n", "batch equals singles (768, 308, 5)", worst);
}

// Mixed n in one call (grouped internally) and patchWithDense against solve's own patch.
void checkMixedAndDense(time_edit::Solver& solver) {
  const int64_t d = 64, rows = 50;
  std::vector<Case> cases = {makeCase(d, 3, 1, false, 0.1), makeCase(d, 100, 2, true, 0.2),
                             makeCase(d, 3, 3, false, 0.3), makeCase(d, 20, 4, true, 0.1)};
  const std::vector<float> w = randomWeights(rows, d, 99);
  BatchResult res = runBatch(solver, d, cases, true, true, &w, rows);
  double worst = 0;
  for (std::size_t b = 0; b < cases.size(); ++b) {
    const Reference ref = reference(d, cases[b], true);
    worst = std::max({worst, relError(res.g[b].data(), ref.g), relError(res.m[b].data(), ref.m),
                      relError(res.patched[b].data(), patchedRef(w, rows, d, ref.m))});
  }
  expect(worst <= kTol, "mixed n in one batch: " + std::to_string(worst));

  std::vector<const float*> dense;
  std::vector<std::vector<float>> out(cases.size(), std::vector<float>(static_cast<std::size_t>(rows * d), kNaN));
  std::vector<float*> outPtrs;
  for (std::size_t b = 0; b < cases.size(); ++b) {
    dense.push_back(res.m[b].data());
    outPtrs.push_back(out[b].data());
  }
  solver.patchWithDense(d, dense.data(), static_cast<int64_t>(dense.size()), w.data(), rows, outPtrs.data());
  double worstDense = 0;
  for (std::size_t b = 0; b < cases.size(); ++b) {
    Mat m(res.m[b].begin(), res.m[b].end());
    expect(allFinite(out[b]), "patchWithDense writes every element");
    worstDense = std::max(worstDense, relError(out[b].data(), patchedRef(w, rows, d, m)));
  }
  expect(worstDense <= kTol, "patchWithDense vs float64 W·M: " + std::to_string(worstDense));
  std::printf("%-44s relerr %.2e, patchWithDense %.2e\n", "mixed n (64; 3,100,3,20)", worst, worstDense);

  std::vector<float> badM = res.m[0];
  badM[5] = std::numeric_limits<float>::infinity();
  const float* badDense[] = {badM.data()};
  float* badOut[] = {out[0].data()};
  expectThrows([&] { solver.patchWithDense(d, badDense, 1, w.data(), rows, badOut); }, Error::Kind::InvalidArgument,
               "dense[0]", "patchWithDense rejects a non-finite M");
}

#ifdef TIME_EDIT_TEST_WITH_CPU
void checkAgainstCpu(time_edit::Solver& gpu) {
  std::unique_ptr<time_edit::Solver> cpu;
  try {
    cpu = time_edit::makeCpuSolver();
  } catch (const std::exception& e) {
    std::printf("CPU backend unavailable (%s): CPU comparison skipped\n", e.what());
    return;
  }
  const int64_t rows = 64;
  for (auto [d, n] : {std::pair<int64_t, int64_t>{64, 77}, {768, 308}, {64, 200}}) {
    std::vector<Case> cases;
    for (int b = 0; b < 3; ++b) cases.push_back(makeCase(d, n, 77 + b, true, 0.1));
    const std::vector<float> w = randomWeights(rows, d, 5);
    BatchResult a = runBatch(gpu, d, cases, true, true, &w, rows);
    BatchResult c = runBatch(*cpu, d, cases, true, true, &w, rows);
    double worst = 0;
    for (std::size_t b = 0; b < cases.size(); ++b) {
      worst = std::max({worst, relError(a.g[b].data(), Mat(c.g[b].begin(), c.g[b].end())),
                        relError(a.m[b].data(), Mat(c.m[b].begin(), c.m[b].end())),
                        relError(a.patched[b].data(), Mat(c.patched[b].begin(), c.patched[b].end()))});
    }
    const std::string label = "CUDA vs " + cpu->name() + " (d=" + std::to_string(d) + ", n=" + std::to_string(n) + ")";
    expect(worst <= 2 * kTol, label + ": " + std::to_string(worst));
    std::printf("%-44s relerr %.2e\n", label.c_str(), worst);
  }
}
#endif

}  // namespace

int main() {
  expect(time_edit::cudaBuilt(), "cudaBuilt() is true in a CUDA build");
  if (time_edit::cudaDeviceCount() == 0) {
    std::printf("no CUDA device visible: CUDA tests skipped\n");
    expectThrows([] { time_edit::makeCudaSolver(0); }, Error::Kind::Backend, "no CUDA device",
                 "makeCudaSolver without a device");
    return time_edit::testing::tally().failures == 0 ? 77 : 1;
  }
  try {
    expectThrows([] { time_edit::makeCudaSolver(time_edit::cudaDeviceCount()); }, Error::Kind::Backend,
                 "does not exist", "makeCudaSolver with a device index out of range");
    std::unique_ptr<time_edit::Solver> solver = time_edit::makeCudaSolver(0);
    std::printf("backend: %s\n", solver->name().c_str());
    expect(solver->name().rfind("cuda:", 0) == 0, "name() starts with cuda:");

    // d ∈ {64, 768, 1024}, n ∈ {1, 77, 308, 2000}, B ∈ {1, 7, 256}: a sample that covers n < d and n > d,
    // the single-matrix path (B ≤ 2), the batched path with one block (n ≤ 128) and blocked (n > 128).
    checkCombination(*solver, 64, 1, 7, false, true, 40, "d=64 n=1 B=7");
    checkCombination(*solver, 64, 77, 7, true, true, 40, "d=64 n=77 B=7 (n>d)");
    checkCombination(*solver, 64, 308, 1, true, true, 40, "d=64 n=308 B=1 (n>d)");
    checkCombination(*solver, 64, 2000, 256, true, false, 0, "d=64 n=2000 B=256 (n>d)");
    checkCombination(*solver, 768, 1, 256, false, false, 0, "d=768 n=1 B=256");
    checkCombination(*solver, 768, 77, 256, true, false, 0, "d=768 n=77 B=256");
    checkCombination(*solver, 768, 308, 7, true, true, 96, "d=768 n=308 B=7");
    checkCombination(*solver, 768, 308, 1, true, true, 96, "d=768 n=308 B=1");
    checkCombination(*solver, 1024, 77, 7, false, true, 64, "d=1024 n=77 B=7");
    checkCombination(*solver, 1024, 308, 256, true, false, 0, "d=1024 n=308 B=256");
    checkCombination(*solver, 1024, 2000, 1, true, false, 0, "d=1024 n=2000 B=1 (n>d)");

    checkBatchEqualsSingles(*solver);
    checkMixedAndDense(*solver);
    checkBadInput(*solver);

    // Other panel widths of the blocked factorization and solves (and one batched call over the whole matrix).
    for (const char* nb : {"16", "100", "4096"}) {
      setenv("TIME_EDIT_CUDA_BLOCK", nb, 1);
      std::unique_ptr<time_edit::Solver> tuned = time_edit::makeCudaSolver(0);
      checkCombination(*tuned, 768, 308, 7, true, true, 32, std::string("d=768 n=308 B=7 block=") + nb);
      checkCombination(*tuned, 64, 50, 7, true, false, 0, std::string("d=64 n=50 B=7 block=") + nb);
    }
    unsetenv("TIME_EDIT_CUDA_BLOCK");

    // Both routes to patched weights, whatever the automatic choice would be: W·M and W + (W·Dᵀ)·G.
    for (const char* route : {"dense", "lowrank"}) {
      setenv("TIME_EDIT_CUDA_PATCH", route, 1);
      std::unique_ptr<time_edit::Solver> tuned = time_edit::makeCudaSolver(0);
      const std::string tag = std::string(" patch=") + route;
      checkCombination(*tuned, 768, 308, 7, true, true, 96, "d=768 n=308 B=7" + tag);
      checkCombination(*tuned, 768, 308, 1, true, false, 96, "d=768 n=308 B=1" + tag);
      checkCombination(*tuned, 64, 77, 7, true, true, 40, "d=64 n=77 B=7 (n>d)" + tag);
      checkCombination(*tuned, 1024, 500, 2, false, false, 64, "d=1024 n=500 B=2" + tag);
    }
    unsetenv("TIME_EDIT_CUDA_PATCH");

#ifdef TIME_EDIT_TEST_WITH_CPU
    checkAgainstCpu(*solver);
#endif

    // Last, so that a fault in the new kernel cannot hide the results above: the fused substitution kernel for
    // G = S⁻¹C (n ≤ 512, n ≤ d), on the single-edit and batched paths and with both patch routes; n > 512 and
    // n > d fall back to the library solves under the same setting.
    for (const char* variable : {"TIME_EDIT_CUDA_SOLVE", "TIME_EDIT_CUDA_PATCH"}) {
      setenv(variable, "bogus", 1);
      expectThrows([] { time_edit::makeCudaSolver(0); }, Error::Kind::InvalidArgument, variable,
                   std::string("makeCudaSolver with ") + variable + "=bogus");
      unsetenv(variable);
    }
    setenv("TIME_EDIT_CUDA_SOLVE", "fused", 1);
    {
      std::unique_ptr<time_edit::Solver> fused = time_edit::makeCudaSolver(0);
      checkCombination(*fused, 768, 308, 1, true, true, 96, "d=768 n=308 B=1 solve=fused");
      checkCombination(*fused, 768, 308, 7, true, true, 96, "d=768 n=308 B=7 solve=fused");
      checkCombination(*fused, 768, 77, 256, true, false, 0, "d=768 n=77 B=256 solve=fused");
      checkCombination(*fused, 1024, 512, 2, true, true, 64, "d=1024 n=512 B=2 solve=fused (largest n)");
      checkCombination(*fused, 64, 1, 7, false, true, 40, "d=64 n=1 B=7 solve=fused");
      checkCombination(*fused, 100, 33, 3, true, true, 40, "d=100 n=33 B=3 solve=fused (partial tile and panel)");
      checkCombination(*fused, 1024, 600, 1, true, false, 0, "d=1024 n=600 B=1 solve=fused (falls back)");
      checkCombination(*fused, 64, 77, 7, true, true, 40, "d=64 n=77 B=7 (n>d) solve=fused (falls back)");
      checkBatchEqualsSingles(*fused);
    }
    for (const char* route : {"dense", "lowrank"}) {
      setenv("TIME_EDIT_CUDA_PATCH", route, 1);
      std::unique_ptr<time_edit::Solver> fused = time_edit::makeCudaSolver(0);
      checkCombination(*fused, 768, 308, 1, true, false, 96, std::string("d=768 n=308 B=1 solve=fused patch=") + route);
    }
    unsetenv("TIME_EDIT_CUDA_PATCH");
    setenv("TIME_EDIT_CUDA_SOLVE", "fused4", 1);  // 4 columns of X per block
    {
      std::unique_ptr<time_edit::Solver> fused4 = time_edit::makeCudaSolver(0);
      checkCombination(*fused4, 768, 308, 1, true, true, 96, "d=768 n=308 B=1 solve=fused4");
      checkCombination(*fused4, 100, 33, 3, true, true, 40, "d=100 n=33 B=3 solve=fused4 (partial tile and panel)");
      checkCombination(*fused4, 1024, 512, 7, true, false, 0, "d=1024 n=512 B=7 solve=fused4");
    }
    unsetenv("TIME_EDIT_CUDA_SOLVE");
  } catch (const std::exception& e) {
    time_edit::testing::fail(std::string("unexpected exception: ") + e.what());
  }
  return time_edit::testing::finish();
}
