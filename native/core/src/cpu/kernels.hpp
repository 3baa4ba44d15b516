// The dense linear-algebra kernels the CPU solver needs, behind one interface so that the same solver code runs on
// OpenBLAS/LAPACKE (kernels_blas.cpp) and on the portable fallback (kernels_portable.cpp). All matrices row-major.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace time_edit::cpu {

class Kernels {
 public:
  virtual ~Kernels() = default;
  virtual std::string name() const = 0;

  // C = alpha · op(A) · op(B) + beta · C;  op(A) is m × k, op(B) is k × n.
  virtual void sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) const = 0;
  virtual void dgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, double alpha, const double* A,
                     int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) const = 0;

  // Lower triangle (at least) of S (k × k) = A·Aᵀ for A k × m (rowsGram) or Aᵀ·A for A m × k (colsGram).
  virtual void dgramRows(int64_t k, int64_t m, const double* A, double* S) const = 0;
  virtual void dgramCols(int64_t k, int64_t m, const double* A, double* S) const = 0;

  // In-place Cholesky S = L·Lᵀ of a k × k symmetric positive definite matrix; reads and writes the lower triangle.
  // Returns 0 on success, else the LAPACK-style info (order of the failing leading minor).
  virtual int64_t dpotrfLower(int64_t k, double* S) const = 0;
  // B (k × nrhs) := S⁻¹·B with S = L·Lᵀ (two triangular solves, no inverse).
  virtual void dcholSolveLeft(int64_t k, const double* L, int64_t nrhs, double* B) const = 0;
  // B (m × k) := B·S⁻¹ with S = L·Lᵀ.
  virtual void dcholSolveRight(int64_t k, const double* L, int64_t m, double* B) const = 0;

  // Explicit float32 inverse in place (LU with partial pivoting): only the paper-port baseline uses it.
  // Returns 0 on success, else the LAPACK-style info.
  virtual int64_t sinvert(int64_t k, float* A) const = 0;

  // BLAS threads (1 for the portable kernels, which are single-threaded).
  virtual int threads() const = 0;
  virtual void setThreads(int n) const = 0;
};

// Never null: the portable kernels always exist.
const Kernels& portableKernels();
// The BLAS kernels, or nullptr when this build has none.
const Kernels* blasKernels();
// BLAS when built, else portable.
inline const Kernels& bestKernels() {
  const Kernels* blas = blasKernels();
  return blas != nullptr ? *blas : portableKernels();
}

}  // namespace time_edit::cpu
