// C++ tests of the CPU solver against an independent float64 reference (the direct formula
// M = (λI + C*ᵀC)(λI + CᵀC)⁻¹ with a Gauss-Jordan inverse), for both the BLAS and the portable kernels.
// Run by ctest; no Node needed. Exit code 0 = all passed.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "time_edit/cpu_ops.hpp"
#include "time_edit/solver.hpp"

// ---- allocation accounting (operator new), to bound the solver's own temporaries on SD shapes ----
namespace {
std::atomic<long long> gLive{0}, gPeak{0};
constexpr size_t kHeader = 16;
}  // namespace
void* operator new(size_t size) {
  void* p = std::malloc(size + kHeader);
  if (p == nullptr) throw std::bad_alloc();
  *static_cast<size_t*>(p) = size;
  long long live = gLive += static_cast<long long>(size);
  long long peak = gPeak.load();
  while (live > peak && !gPeak.compare_exchange_weak(peak, live)) {
  }
  return static_cast<char*>(p) + kHeader;
}
void operator delete(void* p) noexcept {
  if (p == nullptr) return;
  char* base = static_cast<char*>(p) - kHeader;
  gLive -= static_cast<long long>(*reinterpret_cast<size_t*>(base));
  std::free(base);
}
void operator delete(void* p, size_t) noexcept { operator delete(p); }

namespace {

using time_edit::EditOutputs;
using time_edit::EditRows;
using time_edit::WeightsPatch;
namespace cpu = time_edit::cpu;

int gFailures = 0;
void check(bool ok, const std::string& what) {
  if (!ok) {
    ++gFailures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

std::vector<double> inverse(std::vector<double> a, int n) {
  std::vector<double> inv(static_cast<size_t>(n * n), 0.0);
  for (int i = 0; i < n; ++i) inv[i * n + i] = 1.0;
  for (int c = 0; c < n; ++c) {
    int piv = c;
    for (int r = c + 1; r < n; ++r)
      if (std::fabs(a[r * n + c]) > std::fabs(a[piv * n + c])) piv = r;
    for (int j = 0; j < n; ++j) {
      std::swap(a[c * n + j], a[piv * n + j]);
      std::swap(inv[c * n + j], inv[piv * n + j]);
    }
    const double p = a[c * n + c];
    for (int j = 0; j < n; ++j) {
      a[c * n + j] /= p;
      inv[c * n + j] /= p;
    }
    for (int r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[r * n + c];
      for (int j = 0; j < n; ++j) {
        a[r * n + j] -= f * a[c * n + j];
        inv[r * n + j] -= f * inv[c * n + j];
      }
    }
  }
  return inv;
}

// M = (λI + C*ᵀC)(λI + CᵀC)⁻¹, all in double.
std::vector<double> referenceM(int d, int n, const std::vector<float>& c, const std::vector<float>& cs, double lambda) {
  std::vector<double> a(static_cast<size_t>(d * d), 0.0), b(static_cast<size_t>(d * d), 0.0);
  for (int i = 0; i < d; ++i) {
    a[i * d + i] = lambda;
    b[i * d + i] = lambda;
  }
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) {
        a[i * d + j] += static_cast<double>(cs[r * d + i]) * c[r * d + j];
        b[i * d + j] += static_cast<double>(c[r * d + i]) * c[r * d + j];
      }
  const std::vector<double> binv = inverse(b, d);
  std::vector<double> m(static_cast<size_t>(d * d), 0.0);
  for (int i = 0; i < d; ++i)
    for (int p = 0; p < d; ++p)
      for (int j = 0; j < d; ++j) m[i * d + j] += a[i * d + p] * binv[p * d + j];
  return m;
}

double relErr(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

std::vector<float> randn(std::mt19937& rng, size_t count, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(count);
  for (auto& x : v) x = dist(rng);
  return v;
}

void testAgainstReference(cpu::Kernel kernel, const char* label) {
  struct Case {
    int d, n, R;
    double lambda;
  };
  const Case cases[] = {{8, 3, 13, 0.1},   {8, 20, 5, 0.5},  {17, 17, 9, 1.0},
                        {33, 5, 40, 0.01}, {12, 40, 7, 2.0}, {5, 1, 3, 0.3}};
  std::mt19937 rng(1234);
  auto solver = cpu::makeSolver(kernel);
  for (const Case& cs : cases) {
    const std::string at = std::string(label) + " d=" + std::to_string(cs.d) + " n=" + std::to_string(cs.n);
    const size_t nd = static_cast<size_t>(cs.n * cs.d);
    std::vector<float> c = randn(rng, nd), noise = randn(rng, nd, 0.5f),
                       w = randn(rng, static_cast<size_t>(cs.R * cs.d));
    std::vector<float> cstar(nd);
    for (size_t i = 0; i < nd; ++i) cstar[i] = c[i] + noise[i];
    const std::vector<double> m64 = referenceM(cs.d, cs.n, c, cstar, cs.lambda);

    std::vector<float> dOut(nd), gOut(nd), mOut(static_cast<size_t>(cs.d * cs.d)), patched(w.size());
    EditRows e{c.data(), cstar.data(), cs.n, cs.lambda};
    EditOutputs out{dOut.data(), gOut.data(), mOut.data()};
    float* patchedPtr = patched.data();
    WeightsPatch patch{w.data(), cs.R, &patchedPtr};
    solver->solve(cs.d, &e, 1, &out, &patch);

    check(relErr(mOut, m64) < 2e-6, at + ": dense M vs float64 reference: " + std::to_string(relErr(mOut, m64)));
    std::vector<float> fromLowRank(mOut.size());
    for (int i = 0; i < cs.d; ++i)
      for (int j = 0; j < cs.d; ++j) {
        double v = i == j ? 1.0 : 0.0;
        for (int r = 0; r < cs.n; ++r) v += static_cast<double>(dOut[r * cs.d + i]) * gOut[r * cs.d + j];
        fromLowRank[i * cs.d + j] = static_cast<float>(v);
      }
    check(relErr(fromLowRank, m64) < 2e-6, at + ": I + DᵀG vs reference: " + std::to_string(relErr(fromLowRank, m64)));
    std::vector<double> wRef(w.size(), 0.0);
    for (int r = 0; r < cs.R; ++r)
      for (int p = 0; p < cs.d; ++p)
        for (int j = 0; j < cs.d; ++j) wRef[r * cs.d + j] += static_cast<double>(w[r * cs.d + p]) * m64[p * cs.d + j];
    check(relErr(patched, wRef) < 2e-6, at + ": W' vs W·M reference: " + std::to_string(relErr(patched, wRef)));

    // patchWithDense(M) agrees with the solve's own patch.
    std::vector<float> viaDense(w.size());
    const float* mPtr = mOut.data();
    float* viaDensePtr = viaDense.data();
    solver->patchWithDense(cs.d, &mPtr, 1, w.data(), cs.R, &viaDensePtr);
    check(relErr(viaDense, wRef) < 2e-6, at + ": patchWithDense vs reference");

    // C* = C: W' = W exactly.
    EditRows same{c.data(), c.data(), cs.n, cs.lambda};
    solver->solve(cs.d, &same, 1, nullptr, &patch);
    check(patched == w, at + ": C* = C must give W' = W exactly");
  }
}

template <class F>
bool throwsInvalid(F&& f, const char* needle) {
  try {
    f();
  } catch (const time_edit::Error& e) {
    if (e.kind() != time_edit::Error::Kind::InvalidArgument) return false;
    if (std::string(e.what()).find(needle) == std::string::npos) {
      std::printf("  message was: %s\n", e.what());
      return false;
    }
    return true;
  }
  return false;
}

void testValidation() {
  auto solver = time_edit::makeCpuSolver();
  std::vector<float> c(12, 1.0f), cs(12, 2.0f), out(12, 7.0f);
  float* outPtr = out.data();
  WeightsPatch patch{c.data(), 3, &outPtr};
  EditRows ok{c.data(), cs.data(), 3, 0.1};
  EditRows bad = ok;
  bad.lambda = 0;
  check(throwsInvalid([&] { solver->solve(4, &bad, 1, nullptr, &patch); }, "lambda"), "λ = 0 rejected");
  bad = ok;
  bad.lambda = -1;
  check(throwsInvalid([&] { solver->solve(4, &bad, 1, nullptr, &patch); }, "lambda"), "λ < 0 rejected");
  bad = ok;
  bad.rows = 0;
  check(throwsInvalid([&] { solver->solve(4, &bad, 1, nullptr, &patch); }, "rows"), "n = 0 rejected");
  std::vector<float> nan = c;
  nan[5] = std::nanf("");
  bad = ok;
  bad.destination = nan.data();
  check(throwsInvalid([&] { solver->solve(4, &bad, 1, nullptr, &patch); }, "destination contains a non-finite"),
        "NaN rejected");
  nan[5] = INFINITY;
  bad = ok;
  bad.source = nan.data();
  check(throwsInvalid([&] { solver->solve(4, &bad, 1, nullptr, &patch); }, "source contains a non-finite"),
        "Inf rejected");
  check(throwsInvalid([&] { solver->solve(0, &ok, 1, nullptr, &patch); }, "d"), "d = 0 rejected");
  check(out == std::vector<float>(12, 7.0f), "nothing written on rejected input");
  check(!time_edit::cudaBuilt() || time_edit::cudaDeviceCount() >= 0, "cuda queries never throw");
}

void testBaseline() {
  std::mt19937 rng(99);
  const int d = 16, n = 6;
  const int64_t layers[] = {5, 9, 3};
  const int R = 17;
  std::vector<float> c = randn(rng, n * d), cs = randn(rng, n * d), w = randn(rng, R * d), out(w.size());
  EditRows e{c.data(), cs.data(), n, 0.5};
  cpu::baselinePerLayer(d, e, w.data(), layers, 3, out.data());
  const std::vector<double> m64 = referenceM(d, n, c, cs, 0.5);
  std::vector<double> wRef(w.size(), 0.0);
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < d; ++p)
      for (int j = 0; j < d; ++j) wRef[r * d + j] += static_cast<double>(w[r * d + p]) * m64[p * d + j];
  check(relErr(out, wRef) < 1e-4, "per-layer baseline agrees with W·M: " + std::to_string(relErr(out, wRef)));
}

// SD 1.x shapes: d = 768, n = 308, R = 24,960. The solver's own temporaries must stay well below the weights' size
// (W and W' belong to the caller: 2× the weights; the target is ≤ 3× in all).
void testSdShapeMemory() {
  if (!cpu::hasBlas()) {
    std::printf("skip: SD-shape memory test needs the BLAS kernels (portable would take minutes)\n");
    return;
  }
  const int d = 768, n = 308;
  const int widths[] = {320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320};
  int64_t R = 0;
  for (int w : widths) R += 2 * w;
  std::mt19937 rng(7);
  std::vector<float> c = randn(rng, n * d), cs = randn(rng, n * d), w = randn(rng, static_cast<size_t>(R * d), 0.02f);
  std::vector<float> out(w.size());
  float* outPtr = out.data();
  WeightsPatch patch{w.data(), R, &outPtr};
  EditRows e{c.data(), cs.data(), n, 0.1};
  auto solver = time_edit::makeCpuSolver();
  const long long before = gLive.load();
  gPeak.store(before);
  const auto t0 = std::chrono::steady_clock::now();
  solver->solve(d, &e, 1, nullptr, &patch);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const double weightBytes = static_cast<double>(w.size()) * sizeof(float);
  const double temp = static_cast<double>(gPeak.load() - before);
  std::printf(
      "SD shape (R=%lld, d=%d, n=%d): patched in %.1f ms; solver temporaries %.1f MB = %.3f× the weights "
      "(%.1f MB); W + W' + temporaries = %.3f× the weights\n",
      static_cast<long long>(R), d, n, ms, temp / 1e6, temp / weightBytes, weightBytes / 1e6, 2.0 + temp / weightBytes);
  check(2.0 + temp / weightBytes <= 3.0, "peak memory of the SD-shape patched solve ≤ 3× the weights");
  check(R == 24960, "SD 1.x K+V stacked rows");
}

}  // namespace

int main() {
  std::printf("CPU backend: %s (threads %d); portable: %s; CUDA built: %d\n", time_edit::cpuBackendName().c_str(),
              cpu::threads(), cpu::portableBackendName().c_str(), time_edit::cudaBuilt() ? 1 : 0);
  testAgainstReference(cpu::Kernel::Best, "best");
  testAgainstReference(cpu::Kernel::Portable, "portable");
  testValidation();
  testBaseline();
  testSdShapeMemory();
  if (gFailures > 0) {
    std::printf("%d check(s) failed\n", gFailures);
    return 1;
  }
  std::printf("all solver checks passed\n");
  return 0;
}
