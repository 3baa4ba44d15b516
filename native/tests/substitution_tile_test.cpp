// Tests the CUDA substitution kernel's code (native/core/src/cuda/substitution_tile.hpp) on the CPU: every
// GPU thread of a block is a std::thread, __syncthreads is a barrier over the block, a warp shuffle is an
// exchange through a 32-slot buffer between two barriers of the warp. Blocks run one after another, as the
// grid's blocks are independent. Shared memory and the factor's upper triangle are filled with NaN, so a read
// of anything the kernel should not read shows up in the results. Built with -fsanitize=thread (.ci/run does),
// a missing block barrier is reported as a data race on the shared buffer.
//
// Results are compared with a float64 reference written here (plain Cholesky, then per-column substitution)
// and with the residual ‖S·G − C‖.
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda/substitution_tile.hpp"
#include "expect.hpp"

namespace {

namespace tile = time_edit::cuda::tile;

class Barrier {
 public:
  explicit Barrier(int parties) : parties_(parties) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const unsigned long generation = generation_;
    if (++arrived_ == parties_) {
      arrived_ = 0;
      ++generation_;
      released_.notify_all();
      return;
    }
    released_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  const int parties_;
  int arrived_ = 0;
  unsigned long generation_ = 0;
};

// __shfl_sync(full mask, v, src) for the 32 lanes of one warp: all lanes must call it together.
class WarpExchange {
 public:
  WarpExchange() : barrier_(tile::kWarp) {}
  double shuffle(int lane, double v, int src) {
    slots_[lane] = v;
    barrier_.wait();
    const double got = slots_[src];
    barrier_.wait();
    return got;
  }

 private:
  double slots_[tile::kWarp] = {};
  Barrier barrier_;
};

struct EmulatedExec {
  int tid;
  int count;
  Barrier* block;
  WarpExchange* warp;
  int thread() const { return tid; }
  int threads() const { return count; }
  void sync() const { block->wait(); }
  double shuffle(double v, int lane) const { return warp->shuffle(tid % tile::kWarp, v, lane); }
};

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// Runs the launch grid (tiles of d) × (edits) with `threads` threads per block, `Columns` columns per block.
template <int Columns>
void runGrid(const std::vector<double>& factors, std::vector<double>& x, int n, int d, int edits, int threads) {
  const int tiles = (d + Columns - 1) / Columns;
  for (int e = 0; e < edits; ++e) {
    for (int t = 0; t < tiles; ++t) {
      std::vector<double> shared(tile::sharedBytes<Columns>(n) / sizeof(double), kNaN);
      Barrier block(threads);
      std::vector<WarpExchange> warps(static_cast<std::size_t>(threads / tile::kWarp));
      std::vector<std::thread> pool;
      for (int tid = 0; tid < threads; ++tid) {
        pool.emplace_back([&, tid] {
          const EmulatedExec ex{tid, threads, &block, &warps[static_cast<std::size_t>(tid / tile::kWarp)]};
          tile::substituteBlock<Columns>(ex, t, e, factors.data(), x.data(), n, d, shared.data());
        });
      }
      for (auto& th : pool) th.join();
    }
  }
}

using time_edit::testing::expect;

// One case: `edits` random problems S = λI + CCᵀ (C: n × d, with a shared component when badly conditioned).
void checkCase(int n, int d, int edits, int threads, bool badlyConditioned, int columns = 8) {
  std::mt19937_64 rng(static_cast<uint64_t>(n * 1000003 + d * 101 + edits * 7 + threads));
  std::normal_distribution<double> normal(0.0, 1.0);
  const double lambda = 0.1;
  std::vector<double> factors(static_cast<std::size_t>(edits) * n * n);
  std::vector<double> c(static_cast<std::size_t>(edits) * n * d);
  std::vector<double> want(c.size());
  for (int e = 0; e < edits; ++e) {
    double* ce = c.data() + static_cast<std::size_t>(e) * n * d;
    std::vector<double> common(static_cast<std::size_t>(d));
    for (auto& v : common) v = badlyConditioned ? 3.0 * normal(rng) : 0.0;
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < d; ++k) ce[i * d + k] = common[k] + normal(rng);
    // S (row-major) and its lower Cholesky factor, plain loops.
    std::vector<double> l(static_cast<std::size_t>(n) * n, 0.0);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j <= i; ++j) {
        double s = i == j ? lambda : 0.0;
        for (int k = 0; k < d; ++k) s += ce[i * d + k] * ce[j * d + k];
        l[i * n + j] = s;
      }
    for (int j = 0; j < n; ++j) {
      double diag = l[j * n + j];
      for (int k = 0; k < j; ++k) diag -= l[j * n + k] * l[j * n + k];
      l[j * n + j] = std::sqrt(diag);
      for (int i = j + 1; i < n; ++i) {
        double v = l[i * n + j];
        for (int k = 0; k < j; ++k) v -= l[i * n + k] * l[j * n + k];
        l[i * n + j] = v / l[j * n + j];
      }
    }
    // Column-major factor for the kernel; NaN above the diagonal, which it must never use.
    double* fe = factors.data() + static_cast<std::size_t>(e) * n * n;
    for (int row = 0; row < n; ++row)
      for (int col = 0; col < n; ++col) fe[row + col * n] = row >= col ? l[row * n + col] : kNaN;
    // Reference G: each column k of C solved by forward then back substitution.
    double* we = want.data() + static_cast<std::size_t>(e) * n * d;
    for (int k = 0; k < d; ++k) {
      std::vector<double> v(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) {
        double s = ce[i * d + k];
        for (int j = 0; j < i; ++j) s -= l[i * n + j] * v[j];
        v[i] = s / l[i * n + i];
      }
      for (int i = n - 1; i >= 0; --i) {
        double s = v[i];
        for (int j = i + 1; j < n; ++j) s -= l[j * n + i] * v[j];
        v[i] = s / l[i * n + i];
      }
      for (int i = 0; i < n; ++i) we[i * d + k] = v[i];
    }
  }

  std::vector<double> x = c;  // X (d × n column-major) has the memory layout of row-major C
  if (columns == 4) runGrid<4>(factors, x, n, d, edits, threads);
  else runGrid<8>(factors, x, n, d, edits, threads);

  double errNum = 0, errDen = 0, resNum = 0, resDen = 0;
  bool finite = true;
  for (int e = 0; e < edits; ++e) {
    const double* ge = x.data() + static_cast<std::size_t>(e) * n * d;
    const double* we = want.data() + static_cast<std::size_t>(e) * n * d;
    const double* ce = c.data() + static_cast<std::size_t>(e) * n * d;
    for (std::size_t i = 0; i < static_cast<std::size_t>(n) * d; ++i) {
      finite = finite && std::isfinite(ge[i]);
      errNum += (ge[i] - we[i]) * (ge[i] - we[i]);
      errDen += we[i] * we[i];
    }
    // Residual S·G − C with S rebuilt from C: independent of both factorizations.
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < d; ++k) {
        double s = lambda * ge[i * d + k];
        for (int j = 0; j < n; ++j) {
          double sij = 0;
          for (int q = 0; q < d; ++q) sij += ce[i * d + q] * ce[j * d + q];
          s += sij * ge[j * d + k];
        }
        resNum += (s - ce[i * d + k]) * (s - ce[i * d + k]);
        resDen += ce[i * d + k] * ce[i * d + k];
      }
  }
  const double err = std::sqrt(errNum / errDen), residual = std::sqrt(resNum / resDen);
  // The reference and the kernel sum in different orders; on a badly conditioned S they differ by about
  // cond(S)·ε (cond ≈ 1e4–1e7 here). The residual is small whatever the conditioning.
  const double tolerance = badlyConditioned || n > d ? 1e-9 : 1e-12;  // n > d: S has n − d eigenvalues λ
  char what[200];
  std::snprintf(what, sizeof what, "n=%d d=%d edits=%d threads=%d columns=%d%s: rel. error %.2e, residual %.2e", n, d,
                edits, threads, columns, badlyConditioned ? " (badly conditioned)" : "", err, residual);
  std::printf("%s\n", what);
  expect(finite, std::string(what) + ": every element written and finite");
  expect(err <= tolerance, std::string(what) + ": matches the float64 reference");
  expect(residual <= 1e-10, std::string(what) + ": S·G = C");
}

}  // namespace

int main(int argc, char** argv) {
  // --quick: the cases that cover every code path (several panels, a partial panel and tile, several edits,
  // 1/2/8 warps) for slow instrumented builds (ThreadSanitizer).
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  if (quick) {
    checkCase(2, 1, 1, 32, false);
    checkCase(70, 13, 2, 64, true);
    checkCase(33, 9, 1, 256, false);
    checkCase(40, 6, 2, 64, true, 4);
    return time_edit::testing::finish();
  }
  // n around the panel width (1, 31, 32, 33, 64), SD's 77 and 308, the limit 512; d not a multiple of the
  // tile width (one partial tile), several edits (pointer offsets), 1, 2 and 8 warps per block.
  checkCase(1, 5, 2, 32, false);
  checkCase(2, 1, 1, 32, false);
  checkCase(31, 13, 2, 64, false);
  checkCase(32, 8, 1, 64, false);
  checkCase(33, 24, 2, 64, true);
  checkCase(64, 17, 1, 256, false);
  checkCase(77, 40, 2, 64, true);
  checkCase(100, 9, 1, 96, false);
  checkCase(308, 16, 1, 64, true);
  checkCase(tile::kMaxRows, 3, 1, 64, false);
  // 4 columns per block: a partial tile, several panels, several edits, 1 and 8 warps.
  checkCase(77, 10, 2, 64, true, 4);
  checkCase(65, 4, 1, 256, false, 4);
  checkCase(5, 3, 2, 32, false, 4);
  return time_edit::testing::finish();
}
