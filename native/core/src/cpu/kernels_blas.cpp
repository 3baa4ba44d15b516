// Kernels on OpenBLAS (CBLAS) + LAPACKE. Row-major throughout: CBLAS takes row-major directly, and for the
// Cholesky a row-major lower triangle is the column-major upper one, so LAPACK works in place with no transposes.
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <vector>

#include "cpu/kernels.hpp"
#include "time_edit/solver.hpp"

namespace time_edit::cpu {
namespace {

// CBLAS/LAPACKE take int dimensions; the solver's sizes are far below 2³¹ per dimension, but check anyway.
int dim(int64_t v, const char* what) {
  if (v < 0 || v > 0x7fffffff) throw Error(Error::Kind::InvalidArgument, std::string(what) + " is too large for BLAS");
  return static_cast<int>(v);
}

class BlasKernels final : public Kernels {
 public:
  std::string name() const override { return "cpu-openblas"; }

  void sgemm(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) const override {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, dim(m, "m"), dim(n, "n"),
                dim(k, "k"), alpha, A, dim(lda, "lda"), B, dim(ldb, "ldb"), beta, C, dim(ldc, "ldc"));
  }
  void dgemm(bool tA, bool tB, int64_t m, int64_t n, int64_t k, double alpha, const double* A, int64_t lda,
             const double* B, int64_t ldb, double beta, double* C, int64_t ldc) const override {
    if (m == 0 || n == 0) return;
    cblas_dgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, dim(m, "m"), dim(n, "n"),
                dim(k, "k"), alpha, A, dim(lda, "lda"), B, dim(ldb, "ldb"), beta, C, dim(ldc, "ldc"));
  }
  void dgramRows(int64_t k, int64_t m, const double* A, double* S) const override {
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, dim(k, "k"), dim(m, "m"), 1.0, A, dim(m, "m"), 0.0, S,
                dim(k, "k"));
  }
  void dgramCols(int64_t k, int64_t m, const double* A, double* S) const override {
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, dim(k, "k"), dim(m, "m"), 1.0, A, dim(k, "k"), 0.0, S,
                dim(k, "k"));
  }
  int64_t dpotrfLower(int64_t k, double* S) const override {
    // Row-major lower == column-major upper (S = UᵀU with U = Lᵀ).
    return LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'U', dim(k, "k"), S, dim(k, "k"));
  }
  void dcholSolveLeft(int64_t k, const double* L, int64_t nrhs, double* B) const override {
    const int kk = dim(k, "k"), nn = dim(nrhs, "nrhs");
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, kk, nn, 1.0, L, kk, B, nn);
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit, kk, nn, 1.0, L, kk, B, nn);
  }
  void dcholSolveRight(int64_t k, const double* L, int64_t m, double* B) const override {
    const int kk = dim(k, "k"), mm = dim(m, "m");
    // X·L·Lᵀ = B: first Y = B·L⁻ᵀ, then X = Y·L⁻¹.
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, mm, kk, 1.0, L, kk, B, kk);
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, mm, kk, 1.0, L, kk, B, kk);
  }
  int64_t sinvert(int64_t k, float* A) const override {
    // Inverting the column-major view (Aᵀ) gives (A⁻¹)ᵀ column-major, i.e. A⁻¹ row-major.
    const int kk = dim(k, "k");
    std::vector<lapack_int> ipiv(static_cast<size_t>(kk));
    lapack_int info = LAPACKE_sgetrf_work(LAPACK_COL_MAJOR, kk, kk, A, kk, ipiv.data());
    if (info != 0) return info;
    float query = 0;
    info = LAPACKE_sgetri_work(LAPACK_COL_MAJOR, kk, A, kk, ipiv.data(), &query, -1);
    if (info != 0) return info;
    std::vector<float> work(std::max<size_t>(static_cast<size_t>(query), static_cast<size_t>(kk)));
    return LAPACKE_sgetri_work(LAPACK_COL_MAJOR, kk, A, kk, ipiv.data(), work.data(),
                               static_cast<lapack_int>(work.size()));
  }
  int threads() const override { return openblas_get_num_threads(); }
  void setThreads(int n) const override { openblas_set_num_threads(n); }
};

}  // namespace

const Kernels* blasKernels() {
  static const BlasKernels kernels;
  return &kernels;
}

}  // namespace time_edit::cpu
