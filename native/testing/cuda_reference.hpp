// Float64 reference of the TIME solve for the CUDA tests and the GPU benchmark, written independently of
// every backend: plain loops, Cholesky on the smaller side, forward/back substitution, explicit products.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace time_edit::testref {

using Mat = std::vector<double>;  // row-major

// One edit's inputs. `clipLike` adds a large shared component to every row, which makes λI + CCᵀ badly
// conditioned (eigenvalues from λ to ~1e5), as real CLIP embeddings do.
struct Case {
  int64_t n = 0;
  std::vector<float> c, cs;
  double lambda = 0.1;
};

inline Case makeCase(int64_t d, int64_t n, uint64_t seed, bool clipLike, double lambda) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Case k;
  k.n = n;
  k.lambda = lambda;
  k.c.resize(static_cast<std::size_t>(n * d));
  k.cs.resize(k.c.size());
  std::vector<float> shared(static_cast<std::size_t>(d));
  for (auto& v : shared) v = clipLike ? 1.0f * normal(rng) : 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const bool edited = (i % 3) != 0;  // some rows unchanged, as in padded prompt pairs
    for (int64_t j = 0; j < d; ++j) {
      const std::size_t idx = static_cast<std::size_t>(i * d + j);
      k.c[idx] = shared[static_cast<std::size_t>(j)] + 0.5f * normal(rng);
      k.cs[idx] = k.c[idx] + (edited ? 0.3f * normal(rng) : 0.0f);
    }
  }
  return k;
}

// In-place Cholesky of a row-major s × s SPD matrix (lower factor).
inline void choleskyRef(Mat& a, int64_t s) {
  for (int64_t j = 0; j < s; ++j) {
    double diag = a[j * s + j];
    for (int64_t k = 0; k < j; ++k) diag -= a[j * s + k] * a[j * s + k];
    if (!(diag > 0)) throw std::runtime_error("reference Cholesky: not positive definite");
    const double ljj = std::sqrt(diag);
    a[j * s + j] = ljj;
    for (int64_t i = j + 1; i < s; ++i) {
      double v = a[i * s + j];
      for (int64_t k = 0; k < j; ++k) v -= a[i * s + k] * a[j * s + k];
      a[i * s + j] = v / ljj;
    }
  }
}

// Solves (L Lᵀ) x = b in place for one right-hand side given as a strided vector.
inline void cholSolveRef(const Mat& l, int64_t s, double* x, int64_t stride) {
  for (int64_t i = 0; i < s; ++i) {
    double v = x[i * stride];
    for (int64_t k = 0; k < i; ++k) v -= l[i * s + k] * x[k * stride];
    x[i * stride] = v / l[i * s + i];
  }
  for (int64_t i = s - 1; i >= 0; --i) {
    double v = x[i * stride];
    for (int64_t k = i + 1; k < s; ++k) v -= l[k * s + i] * x[k * stride];
    x[i * stride] = v / l[i * s + i];
  }
}

struct Reference {
  Mat dm, g, m;  // D (n × d), G (n × d), M (d × d)
};

inline Reference reference(int64_t d, const Case& k, bool wantM) {
  const int64_t n = k.n;
  Reference r;
  r.dm.resize(static_cast<std::size_t>(n * d));
  Mat c(static_cast<std::size_t>(n * d));
  for (std::size_t i = 0; i < c.size(); ++i) {
    c[i] = k.c[i];
    r.dm[i] = static_cast<double>(k.cs[i]) - static_cast<double>(k.c[i]);
  }
  r.g = c;
  if (n <= d) {
    // G = S⁻¹ C with S = λI + C Cᵀ (n × n): solve for every column of C.
    Mat s(static_cast<std::size_t>(n * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double v = 0;
        for (int64_t t = 0; t < d; ++t) v += c[i * d + t] * c[j * d + t];
        s[i * n + j] = s[j * n + i] = v + (i == j ? k.lambda : 0.0);
      }
    choleskyRef(s, n);
    for (int64_t col = 0; col < d; ++col) cholSolveRef(s, n, r.g.data() + col, d);
  } else {
    // G = C A⁻¹ with A = λI + CᵀC (d × d): each row of G solves A gᵢ = cᵢ (A symmetric).
    Mat a(static_cast<std::size_t>(d * d), 0.0);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < d; ++i) {
        const double ci = c[t * d + i];
        for (int64_t j = 0; j <= i; ++j) a[i * d + j] += ci * c[t * d + j];
      }
    for (int64_t i = 0; i < d; ++i) {
      a[i * d + i] += k.lambda;
      for (int64_t j = 0; j < i; ++j) a[j * d + i] = a[i * d + j];
    }
    choleskyRef(a, d);
    for (int64_t row = 0; row < n; ++row) cholSolveRef(a, d, r.g.data() + row * d, 1);
  }
  if (wantM) {
    r.m.assign(static_cast<std::size_t>(d * d), 0.0);
    for (int64_t i = 0; i < d; ++i) r.m[i * d + i] = 1.0;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < d; ++i) {
        const double di = r.dm[t * d + i];
        if (di == 0.0) continue;
        double* mrow = r.m.data() + i * d;
        const double* grow = r.g.data() + t * d;
        for (int64_t j = 0; j < d; ++j) mrow[j] += di * grow[j];
      }
  }
  return r;
}

inline double relError(const float* got, const Mat& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double e = static_cast<double>(got[i]) - want[i];
    num += e * e;
    den += want[i] * want[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

inline Mat patchedRef(const std::vector<float>& w, int64_t rows, int64_t d, const Mat& m) {
  Mat out(static_cast<std::size_t>(rows * d), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < d; ++k) {
      const double wk = w[static_cast<std::size_t>(r * d + k)];
      const double* mrow = m.data() + k * d;
      double* orow = out.data() + r * d;
      for (int64_t j = 0; j < d; ++j) orow[j] += wk * mrow[j];
    }
  return out;
}

}  // namespace time_edit::testref
