// Portable kernels: plain C++ loops (cache-blocked, vectorisable inner loops, GEMM split over std::threads), used
// when no BLAS/LAPACK was found at build time or when asked for explicitly. Correct, but several times slower.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "cpu/kernels.hpp"
#include "time_edit/solver.hpp"

namespace time_edit::cpu {
namespace {

std::atomic<int> gThreads{0};  // 0: not set yet, use the hardware concurrency

int activeThreads() {
  int t = gThreads.load();
  if (t <= 0) t = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return t;
}

// Joins every thread it holds when it goes out of scope, so that a thread that fails to start (std::system_error,
// e.g. under a process limit, see RLIMIT_NPROC in getrlimit(2)) never leaves a joinable std::thread to be destroyed,
// which would call std::terminate.
class JoiningPool {
 public:
  JoiningPool() = default;
  JoiningPool(const JoiningPool&) = delete;
  JoiningPool& operator=(const JoiningPool&) = delete;
  ~JoiningPool() {
    for (auto& th : threads_)
      if (th.joinable()) th.join();
  }
  template <class F>
  void start(F&& f) {
    try {
      threads_.emplace_back(std::forward<F>(f));
    } catch (const std::system_error& e) {
      throw Error(Error::Kind::Backend, "cannot start a CPU thread (" + std::string(e.what()) + ", after " +
                                            std::to_string(threads_.size()) +
                                            " started): the process may be at its thread limit; use fewer threads");
    }
  }

 private:
  std::vector<std::thread> threads_;
};

template <class T>
std::vector<T> transposed(const T* A, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<T> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[static_cast<size_t>(c * rows + r)] = A[r * ld + c];
  return out;
}

// C[rows i0..i1) = alpha·A·B + beta·C with A m × k (lda), B k × n (ldb), both non-transposed. Each k-block is
// summed into a fresh row buffer before it is added to C: rounding error grows with the block length (128) plus
// the number of blocks rather than with k, which keeps float32 results within ~1e-7 of float64 for d = 768.
template <class T>
void gemmRows(int64_t i0, int64_t i1, int64_t n, int64_t k, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
              T beta, T* C, int64_t ldc) {
  constexpr int64_t kBlockK = 128, kBlockN = 1024;
  for (int64_t i = i0; i < i1; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) std::fill(c, c + n, T(0));
    else if (beta != T(1))
      for (int64_t j = 0; j < n; ++j) c[j] *= beta;
  }
  std::vector<T> partial(static_cast<size_t>(std::min(n, kBlockN)));
  for (int64_t j0 = 0; j0 < n; j0 += kBlockN) {
    const int64_t j1 = std::min(n, j0 + kBlockN);
    for (int64_t p0 = 0; p0 < k; p0 += kBlockK) {
      const int64_t p1 = std::min(k, p0 + kBlockK);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t width = j1 - j0;
        T* __restrict acc = partial.data();
        std::fill(acc, acc + width, T(0));
        for (int64_t p = p0; p < p1; ++p) {
          const T a = A[i * lda + p];
          const T* __restrict b = B + p * ldb + j0;
          for (int64_t j = 0; j < width; ++j) acc[j] += a * b[j];
        }
        T* __restrict c = C + i * ldc + j0;
        for (int64_t j = 0; j < width; ++j) c[j] += alpha * acc[j];
      }
    }
  }
}

template <class T>
void gemm(bool tA, bool tB, int64_t m, int64_t n, int64_t k, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  std::vector<T> packedA, packedB;
  if (tA) {  // A is stored k × m
    packedA = transposed(A, k, m, lda);
    A = packedA.data();
    lda = k;
  }
  if (tB) {  // B is stored n × k
    packedB = transposed(B, n, k, ldb);
    B = packedB.data();
    ldb = n;
  }
  const int threads = static_cast<int>(std::min<int64_t>(activeThreads(), m));
  if (threads <= 1 || static_cast<double>(m) * n * k < 4.0e6) {
    gemmRows(0, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  JoiningPool pool;  // joined on every exit, a failed thread start included
  const int64_t chunk = (m + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const int64_t i0 = t * chunk, i1 = std::min(m, i0 + chunk);
    if (i0 >= i1) break;
    pool.start([=] { gemmRows(i0, i1, n, k, alpha, A, lda, B, ldb, beta, C, ldc); });
  }
  gemmRows<T>(0, std::min(m, chunk), n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

class PortableKernels final : public Kernels {
 public:
  std::string name() const override { return "cpu-portable (no BLAS: slower)"; }

  void sgemm(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) const override {
    gemm(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void dgemm(bool tA, bool tB, int64_t m, int64_t n, int64_t k, double alpha, const double* A, int64_t lda,
             const double* B, int64_t ldb, double beta, double* C, int64_t ldc) const override {
    gemm(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void dgramRows(int64_t k, int64_t m, const double* A, double* S) const override {
    gemm(false, true, k, k, m, 1.0, A, m, A, m, 0.0, S, k);
  }
  void dgramCols(int64_t k, int64_t m, const double* A, double* S) const override {
    gemm(true, false, k, k, m, 1.0, A, k, A, k, 0.0, S, k);
  }
  int64_t dpotrfLower(int64_t k, double* S) const override {
    for (int64_t j = 0; j < k; ++j) {
      double* lj = S + j * k;
      double s = lj[j];
      for (int64_t p = 0; p < j; ++p) s -= lj[p] * lj[p];
      if (!(s > 0.0) || !std::isfinite(s)) return j + 1;
      const double diag = std::sqrt(s);
      lj[j] = diag;
      for (int64_t i = j + 1; i < k; ++i) {
        double* li = S + i * k;
        double v = li[j];
        for (int64_t p = 0; p < j; ++p) v -= li[p] * lj[p];
        li[j] = v / diag;
      }
    }
    return 0;
  }
  void dcholSolveLeft(int64_t k, const double* L, int64_t nrhs, double* B) const override {
    for (int64_t i = 0; i < k; ++i) {  // L·Y = B
      double* __restrict bi = B + i * nrhs;
      for (int64_t p = 0; p < i; ++p) {
        const double l = L[i * k + p];
        const double* __restrict bp = B + p * nrhs;
        for (int64_t j = 0; j < nrhs; ++j) bi[j] -= l * bp[j];
      }
      const double inv = 1.0 / L[i * k + i];
      for (int64_t j = 0; j < nrhs; ++j) bi[j] *= inv;
    }
    for (int64_t i = k - 1; i >= 0; --i) {  // Lᵀ·X = Y
      double* __restrict bi = B + i * nrhs;
      for (int64_t p = i + 1; p < k; ++p) {
        const double l = L[p * k + i];
        const double* __restrict bp = B + p * nrhs;
        for (int64_t j = 0; j < nrhs; ++j) bi[j] -= l * bp[j];
      }
      const double inv = 1.0 / L[i * k + i];
      for (int64_t j = 0; j < nrhs; ++j) bi[j] *= inv;
    }
  }
  void dcholSolveRight(int64_t k, const double* L, int64_t m, double* B) const override {
    // X·S = B  ⇔  S·Xᵀ = Bᵀ (S symmetric).
    std::vector<double> bt = transposed(B, m, k, k);
    dcholSolveLeft(k, L, m, bt.data());
    for (int64_t r = 0; r < k; ++r)
      for (int64_t c = 0; c < m; ++c) B[c * k + r] = bt[static_cast<size_t>(r * m + c)];
  }
  int64_t sinvert(int64_t k, float* A) const override {
    // Gauss-Jordan on [A | I] with partial pivoting, in float32 like the paper's code.
    const int64_t w = 2 * k;
    std::vector<float> aug(static_cast<size_t>(k * w), 0.0f);
    for (int64_t i = 0; i < k; ++i) {
      std::copy(A + i * k, A + (i + 1) * k, aug.begin() + i * w);
      aug[static_cast<size_t>(i * w + k + i)] = 1.0f;
    }
    for (int64_t c = 0; c < k; ++c) {
      int64_t piv = c;
      for (int64_t r = c + 1; r < k; ++r)
        if (std::fabs(aug[static_cast<size_t>(r * w + c)]) > std::fabs(aug[static_cast<size_t>(piv * w + c)])) piv = r;
      if (aug[static_cast<size_t>(piv * w + c)] == 0.0f) return c + 1;
      if (piv != c) std::swap_ranges(aug.begin() + piv * w, aug.begin() + (piv + 1) * w, aug.begin() + c * w);
      float* __restrict rc = aug.data() + c * w;
      const float inv = 1.0f / rc[c];
      for (int64_t j = 0; j < w; ++j) rc[j] *= inv;
      for (int64_t r = 0; r < k; ++r) {
        if (r == c) continue;
        float* __restrict rr = aug.data() + r * w;
        const float f = rr[c];
        if (f == 0.0f) continue;
        for (int64_t j = 0; j < w; ++j) rr[j] -= f * rc[j];
      }
    }
    for (int64_t i = 0; i < k; ++i) std::copy(aug.begin() + i * w + k, aug.begin() + (i + 1) * w, A + i * k);
    return 0;
  }
  int threads() const override { return activeThreads(); }
  void setThreads(int n) const override { gThreads.store(n); }
};

}  // namespace

const Kernels& portableKernels() {
  static const PortableKernels kernels;
  return kernels;
}

#ifndef TIME_EDIT_HAS_BLAS
const Kernels* blasKernels() { return nullptr; }
#endif

}  // namespace time_edit::cpu
