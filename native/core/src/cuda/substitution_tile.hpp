// Forward and back substitution with a Cholesky factor for one tile of right-hand sides, as one thread block
// does it: x_k := S⁻¹ x_k = L⁻ᵀ L⁻¹ x_k for `Columns` consecutive k. It replaces the two cublasDtrsm calls of
// the single-edit chain (0.1 ms each at n = 308, launch- and latency-bound) with one launch whose blocks each
// own a few columns of X, so no grid-wide synchronisation is needed: columns of S⁻¹X are independent.
//
// Written once against a tiny execution interface (`Exec`: thread(), threads(), sync(), shuffle()) so the
// same code runs as the CUDA kernel (cuda_kernels.cu) and under a CPU emulation with real threads, barriers
// and warp exchanges (native/tests/substitution_tile_test.cpp), which is how it is tested on machines without
// a GPU.
//
// Layouts (the device solve's column-major views): the factor L is n × n column-major (ld n; only the lower
// triangle is read, the upper may hold anything); X is d × n column-major (ld d), i.e. element (k, i) at
// x[k + i·d] is C[i][k] on entry and G[i][k] on exit.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define TIME_EDIT_DEVICE __device__
#else
#define TIME_EDIT_DEVICE
#endif

namespace time_edit::cuda::tile {

// Columns: right-hand sides (values of k) per thread block, 4 or 8 (kernels are built for both: 8 reads each
// factor element once per 8 columns, 4 gives twice as many blocks to spread over the GPU; the benchmark compares).
constexpr int kPanel = 32;     // rows per diagonal block: one warp solves one block's column
constexpr int kMaxRows = 512;  // n limit: the tile (n × 8 doubles) plus one diagonal block fit in 41 KB
constexpr int kWarp = 32;

// Shared memory one block needs for n rows: the tile, one diagonal block, its reciprocal pivots.
template <int Columns>
constexpr std::size_t sharedBytes(int n) {
  return (static_cast<std::size_t>(n) * Columns + kPanel * kPanel + kPanel) * sizeof(double);
}

template <class Exec>
TIME_EDIT_DEVICE void loadDiagonalBlock(const Exec& ex, const double* factor, int n, int p0, int pb, double* diag,
                                        double* reciprocal) {
  for (int t = ex.thread(); t < pb * pb; t += ex.threads()) {
    const int row = t % pb, col = t / pb;
    diag[col * kPanel + row] = factor[static_cast<int64_t>(p0 + col) * n + p0 + row];
  }
  for (int t = ex.thread(); t < pb; t += ex.threads()) {
    reciprocal[t] = 1.0 / factor[static_cast<int64_t>(p0 + t) * n + p0 + t];
  }
  ex.sync();
}

// Solves the pb × pb diagonal block (lower L_pp when `forward`, else its transpose) for every column of the
// tile rows p0..p0+pb, one warp per column: lane r holds row r, the solved value is broadcast by a shuffle.
template <int Columns, class Exec>
TIME_EDIT_DEVICE void solveDiagonalBlock(const Exec& ex, bool forward, int p0, int pb, const double* diag,
                                         const double* reciprocal, double* y) {
  const int lane = ex.thread() % kWarp;
  const int warps = ex.threads() / kWarp;
  for (int c = ex.thread() / kWarp; c < Columns; c += warps) {
    double v = lane < pb ? y[(p0 + lane) * Columns + c] : 0.0;
    for (int s = 0; s < pb; ++s) {
      const int j = forward ? s : pb - 1 - s;
      const double solved = ex.shuffle(v, j) * reciprocal[j];
      if (lane == j) {
        v = solved;
      } else if (forward ? (lane > j && lane < pb) : lane < j) {
        // forward: row `lane` of L_pp, column j; backward: row `lane` of L_ppᵀ, column j = L_pp(j, lane)
        v -= (forward ? diag[j * kPanel + lane] : diag[lane * kPanel + j]) * solved;
      }
    }
    if (lane < pb) y[(p0 + lane) * Columns + c] = v;
  }
  ex.sync();
}

// y_i -= Σ_j a(i, j) · y_{p0+j} over the panel's pb solved rows, for every tile row i in [first, last);
// a(i, j) = L(i, p0+j) forward, L(p0+j, i) backward. One thread per row keeps Columns sums, so each factor
// element is read once per block (consecutive threads read consecutive rows of L when forward).
template <int Columns, class Exec>
TIME_EDIT_DEVICE void updateRows(const Exec& ex, bool forward, const double* factor, int n, int p0, int pb, int first,
                                 int last, double* y) {
  for (int i = first + ex.thread(); i < last; i += ex.threads()) {
    double sum[Columns] = {};
    for (int j = 0; j < pb; ++j) {
      const double a =
          forward ? factor[static_cast<int64_t>(p0 + j) * n + i] : factor[static_cast<int64_t>(i) * n + p0 + j];
      const double* solved = y + (p0 + j) * Columns;
      for (int c = 0; c < Columns; ++c) sum[c] += a * solved[c];
    }
    for (int c = 0; c < Columns; ++c) y[i * Columns + c] -= sum[c];
  }
  // No barrier here: the next step (loadDiagonalBlock) touches only the diagonal block, then synchronises
  // before anything reads y. The last update of each sweep has no rows, so the final store reads only rows
  // the last diagonal solve wrote (after its barrier).
}

// The whole tile: columns k0 .. k0+Columns−1 of X (those < d), rows 0..n−1. `shared` holds sharedBytes<Columns>(n).
// Every thread of the block must call it; threads() must be a multiple of 32.
template <int Columns, class Exec>
TIME_EDIT_DEVICE void substituteTile(const Exec& ex, const double* factor, double* x, int n, int d, int k0,
                                     double* shared) {
  double* y = shared;                                             // y[i·Columns + c]
  double* diag = shared + static_cast<std::size_t>(n) * Columns;  // diag[col·kPanel + row]
  double* reciprocal = diag + kPanel * kPanel;
  const int columns = d - k0 < Columns ? d - k0 : Columns;

  for (int t = ex.thread(); t < n * Columns; t += ex.threads()) {
    const int i = t / Columns, c = t % Columns;
    y[t] = c < columns ? x[static_cast<int64_t>(i) * d + k0 + c] : 0.0;  // unused columns solve zeros
  }
  ex.sync();

  for (int p0 = 0; p0 < n; p0 += kPanel) {  // L y = x, top to bottom
    const int pb = n - p0 < kPanel ? n - p0 : kPanel;
    loadDiagonalBlock(ex, factor, n, p0, pb, diag, reciprocal);
    solveDiagonalBlock<Columns>(ex, true, p0, pb, diag, reciprocal, y);
    updateRows<Columns>(ex, true, factor, n, p0, pb, p0 + pb, n, y);
  }
  for (int p0 = ((n - 1) / kPanel) * kPanel; p0 >= 0; p0 -= kPanel) {  // Lᵀ g = y, bottom to top
    const int pb = n - p0 < kPanel ? n - p0 : kPanel;
    loadDiagonalBlock(ex, factor, n, p0, pb, diag, reciprocal);
    solveDiagonalBlock<Columns>(ex, false, p0, pb, diag, reciprocal, y);
    updateRows<Columns>(ex, false, factor, n, p0, pb, 0, p0, y);
  }

  for (int t = ex.thread(); t < n * Columns; t += ex.threads()) {
    const int i = t / Columns, c = t % Columns;
    if (c < columns) x[static_cast<int64_t>(i) * d + k0 + c] = y[t];
  }
}

// One block of the launch grid (tiles of d) × (edits): edit `edit`'s factor and X are at factors + edit·n·n
// and x + edit·n·d.
template <int Columns, class Exec>
TIME_EDIT_DEVICE void substituteBlock(const Exec& ex, int tileIndex, int64_t edit, const double* factors, double* x,
                                      int n, int d, double* shared) {
  substituteTile<Columns>(ex, factors + edit * n * n, x + edit * n * static_cast<int64_t>(d), n, d, tileIndex * Columns,
                          shared);
}

}  // namespace time_edit::cuda::tile
