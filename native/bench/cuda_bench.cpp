// GPU benchmark of the CUDA backend, SD 1.4 shapes (d = 768, n = 308, R = 24,960 stacked K/V rows, λ = 0.1),
// everything in one run: single-edit latency of the low-rank form and of the patched weights, throughput in
// edits/s at B = 64, 256, 1024, and the floors measured in the same run (one SGEMM of the patched-weights
// size, one DGEMM of the Gram size, a device-to-device copy of the weights). Device-resident timings use
// CUDA events (median of many repeats after warm-up); the host-to-host Solver::solve rows use a wall clock.
// Errors are relative Frobenius errors against the float64 reference of native/testing/cuda_reference.hpp.
//
//   time_edit_cuda_bench [--dump DIR] [--json FILE] [--quick]
//     --dump DIR   writes the inputs (c.f32, cs.f32, w.f32), the float64 M (m_ref.f64) and meta.json for the
//                  PyTorch peer (native/bench/paper_peer.py), which runs the paper's algorithm on them
//     --json FILE  writes the numbers
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "../testing/cuda_reference.hpp"
#include "cuda_device_solve.hpp"
#include "cuda_kernels.hpp"
#include "time_edit/solver.hpp"

using namespace time_edit;
using namespace time_edit::cuda;
using time_edit::testref::Case;
using time_edit::testref::Mat;

namespace {

const std::vector<int64_t> kLayerOut = {320,  320,  640, 640, 1280, 1280, 1280, 1280,
                                        1280, 1280, 640, 640, 640,  320,  320,  320};

struct Stats {
  double median = 0, min = 0, max = 0;
  int reps = 0;
};

Stats summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  Stats s;
  s.reps = static_cast<int>(v.size());
  s.min = v.front();
  s.max = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return s;
}

// Times `body` (which only enqueues work on `st`) with CUDA events; `after` runs outside the timed region.
Stats timeDevice(cudaStream_t st, int warmup, int reps, const std::function<void()>& body,
                 const std::function<void()>& after = {}) {
  Event start, stop;
  for (int i = 0; i < warmup; ++i) {
    start.record(st);
    body();
    stop.record(st);
    stop.sync();
    if (after) after();
    // A variant that turns out very slow is still reported, from fewer repeats, instead of eating the run.
    if (stop.since(start) > 300.0f) reps = std::min(reps, 3);
  }
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    start.record(st);
    body();
    stop.record(st);
    stop.sync();
    ms.push_back(stop.since(start));
    if (after) after();
  }
  return summarize(ms);
}

Stats timeHost(int warmup, int reps, const std::function<void()>& body) {
  for (int i = 0; i < warmup; ++i) body();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return summarize(ms);
}

template <typename T>
void toDevice(DeviceBuffer& buf, const std::vector<T>& v) {
  buf.reserve(v.size() * sizeof(T));
  check(cudaMemcpy(buf.as<T>(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
}

template <typename T>
std::vector<T> toHost(const T* p, std::size_t count) {
  std::vector<T> v(count);
  check(cudaMemcpy(v.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return v;
}

template <typename T>
void writeFile(const std::string& path, const std::vector<T>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  if (!f) throw std::runtime_error("cannot write " + path);
}

// Relative Frobenius error of sampled rows of W' (every `step`-th row) against W·M_ref in float64.
double patchedError(const std::vector<float>& got, const std::vector<float>& w, int64_t rows, int64_t d, const Mat& m,
                    int64_t step) {
  double num = 0, den = 0;
  std::vector<double> ref(static_cast<std::size_t>(d));
  for (int64_t r = 0; r < rows; r += step) {
    std::fill(ref.begin(), ref.end(), 0.0);
    for (int64_t k = 0; k < d; ++k) {
      const double wk = w[static_cast<std::size_t>(r * d + k)];
      const double* mrow = m.data() + k * d;
      for (int64_t j = 0; j < d; ++j) ref[static_cast<std::size_t>(j)] += wk * mrow[j];
    }
    for (int64_t j = 0; j < d; ++j) {
      const double e = got[static_cast<std::size_t>(r * d + j)] - ref[static_cast<std::size_t>(j)];
      num += e * e;
      den += ref[static_cast<std::size_t>(j)] * ref[static_cast<std::size_t>(j)];
    }
  }
  return std::sqrt(num / den);
}

std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

struct Row {
  std::string what;
  Stats s;
  std::string extra;
};

using Route = Tuning::PatchRoute;

// The fused substitution kernel instead of the cuBLAS triangular solves (Tuning::SolveKernel::Fused).
Tuning fusedTuning(int64_t blockSize, int64_t loopMax) {
  Tuning t{blockSize, loopMax, false, Route::Auto};
  t.solveKernel = Tuning::SolveKernel::Fused;
  return t;
}

// The benchmark's inputs on the host: 8 distinct CLIP-like edits (badly conditioned Gram), replicated to fill
// large batches, the stacked K/V weights of SD 1.4, and the float64 reference of the first edit.
struct Inputs {
  int64_t d = 768, n = 308;
  int64_t rows = 0;
  double lambda = 0.1;
  std::vector<Case> edits;
  std::vector<float> w;
  testref::Reference ref0;
  double refSeconds = 0;  // how long the float64 reference of one edit takes on the CPU
};

Inputs makeInputs() {
  Inputs in;
  for (int64_t o : kLayerOut) in.rows += 2 * o;  // K and V of 16 cross-attention layers
  for (int i = 0; i < 8; ++i) in.edits.push_back(testref::makeCase(in.d, in.n, 2024 + i, true, in.lambda));
  in.w = [&] {
    std::mt19937_64 rng(11);
    std::normal_distribution<float> normal(0.0f, 0.03f);
    std::vector<float> v(static_cast<std::size_t>(in.rows * in.d));
    for (auto& x : v) x = normal(rng);
    return v;
  }();
  const auto t0 = std::chrono::steady_clock::now();
  in.ref0 = testref::reference(in.d, in.edits[0], true);
  in.refSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return in;
}

// What every measured section shares: the inputs, their device copies, the context, and the results so far
// (table rows, JSON numbers, "variants" log lines).
struct Bench {
  Bench(const Inputs& inputs, Context& context, int repeats, bool quickRun)
      : in(inputs),
        d(inputs.d),
        n(inputs.n),
        rows(inputs.rows),
        lambda(inputs.lambda),
        reps(repeats),
        quick(quickRun),
        ctx(context),
        st(context.stream()),
        nd(static_cast<std::size_t>(inputs.n * inputs.d)) {
    // Pristine inputs for the largest batch; DeviceSolve overwrites its inputs (G, D in place), so every timed
    // run starts with a device-to-device restore of C and C* (included in the timings).
    std::vector<float> hostC(nd * maxB), hostCs(nd * maxB);
    for (int64_t b = 0; b < maxB; ++b) {
      std::copy(in.edits[b % 8].c.begin(), in.edits[b % 8].c.end(), hostC.begin() + b * nd);
      std::copy(in.edits[b % 8].cs.begin(), in.edits[b % 8].cs.end(), hostCs.begin() + b * nd);
    }
    toDevice(pristineC, hostC);
    toDevice(pristineCs, hostCs);
    toDevice(lam, std::vector<double>(maxB, lambda));
    toDevice(dW, in.w);
    workC.reserve(nd * maxB * sizeof(float));
    workCs.reserve(nd * maxB * sizeof(float));
    dPatched.reserve(static_cast<std::size_t>(rows * d) * sizeof(float));
    dM.reserve(static_cast<std::size_t>(d * d) * sizeof(float));
  }

  void restore(int64_t count) {
    check(cudaMemcpyAsync(workC.as<float>(), pristineC.as<float>(), nd * count * sizeof(float),
                          cudaMemcpyDeviceToDevice, st),
          "cudaMemcpyAsync");
    check(cudaMemcpyAsync(workCs.as<float>(), pristineCs.as<float>(), nd * count * sizeof(float),
                          cudaMemcpyDeviceToDevice, st),
          "cudaMemcpyAsync");
  }
  GroupRequest lowRankRequest(int64_t count) {
    GroupRequest r;
    r.d = d;
    r.n = n;
    r.count = count;
    r.source = workC.as<float>();
    r.destination = workCs.as<float>();
    r.lambda = lam.as<double>();
    r.wantG = true;
    r.wantD = true;
    return r;
  }
  GroupRequest patchRequest(bool withDense = false) {
    GroupRequest r = lowRankRequest(1);
    r.wantG = false;
    r.wantD = false;
    r.dense = withDense ? dM.as<float>() : nullptr;
    r.weights = dW.as<float>();
    r.rows = rows;
    r.patched = dPatched.as<float>();
    return r;
  }
  // Timed single-edit runs of `solve`: the low-rank form (2 × reps) and the patched weights (reps).
  Stats timeLowRank(DeviceSolve& solve) {
    return timeDevice(
        st, 3, reps * 2,
        [&] {
          restore(1);
          solve.enqueue(lowRankRequest(1));
        },
        [&] { solve.finish(0); });
  }
  Stats timePatched(DeviceSolve& solve) {
    return timeDevice(
        st, 3, reps,
        [&] {
          restore(1);
          solve.enqueue(patchRequest());
        },
        [&] { solve.finish(0); });
  }
  // Relative error of the patched weights now in dPatched against W·M of the reference (every 25th row).
  double patchedErrorNow() {
    return patchedError(toHost(dPatched.as<float>(), static_cast<std::size_t>(rows * d)), in.w, rows, d, in.ref0.m, 25);
  }

  static constexpr int64_t maxB = 1024;
  const Inputs& in;
  const int64_t d, n, rows;
  const double lambda;
  const int reps;
  const bool quick;
  Context& ctx;
  cudaStream_t st;
  const std::size_t nd;
  DeviceBuffer pristineC, pristineCs, workC, workCs, lam, dW, dPatched, dM;

  std::vector<Row> table;
  std::map<std::string, double> json;
  std::vector<std::string> log;
  std::map<int64_t, int64_t> bestBlock;  // B -> the fastest panel width (the fused rows reuse it)
};

// ---- single edit: low-rank form and patched weights, each solve path and each patch route ----
void measureSolvePaths(Bench& b) {
  struct Variant {
    std::string name;
    Tuning t;
  };
  const std::vector<Variant> solvePaths = {{"single-matrix cuSOLVER", Tuning{0, 2, false, Route::Auto}},
                                           {"batched, blocked nb=64", Tuning{64, 0, false, Route::Auto}},
                                           {"batched, one call", Tuning{4096, 0, false, Route::Auto}}};
  for (const Variant& v : solvePaths) {
    DeviceSolve p(b.ctx, v.t);
    const Stats low = b.timeLowRank(p);
    double patched[2] = {0, 0};
    for (int route = 0; route < 2; ++route) {
      Tuning t = v.t;
      t.patchRoute = route == 0 ? Route::Dense : Route::LowRank;
      DeviceSolve q(b.ctx, t);
      patched[route] = b.timePatched(q).median;
    }
    char line[256];
    std::snprintf(line, sizeof line,
                  "single edit via %-24s low-rank %.3f ms   patched via M %.3f ms, via low rank %.3f ms",
                  v.name.c_str(), low.median, patched[0], patched[1]);
    b.log.push_back(line);
  }
}

// Low-rank route: how many multiprocessors to keep free of the side SGEMM while the factorization runs.
void measureSideReserve(Bench& b) {
  for (bool early : {false, true}) {
    for (int reserve : {0, 16, 33, 66}) {
      Tuning t{0, 2, false, Route::LowRank, reserve, early};
      DeviceSolve q(b.ctx, t);
      const Stats pr = b.timePatched(q);
      char line[256];
      std::snprintf(line, sizeof line,
                    "single edit patched via low rank, side work enqueued %s, side SGEMM leaves %2d of %d SMs free: "
                    "%.3f ms",
                    early ? "first" : "last ", reserve, b.ctx.multiprocessors(), pr.median);
      b.log.push_back(line);
      b.json[std::string("patchedLowRank") + (early ? "Early" : "Late") + "Reserve" + std::to_string(reserve) + "Ms"] =
          pr.median;
    }
  }
}

// The default tuning (what Solver uses), plus the dense-M route for comparison, with their errors.
void measureDefaultSingleEdit(Bench& b) {
  const int64_t d = b.d, n = b.n;
  DeviceSolve solve(b.ctx, Tuning{});
  const Stats low = b.timeLowRank(solve);
  const std::vector<float> g0 = toHost(b.workC.as<float>(), b.nd);
  const double errG = testref::relError(g0.data(), b.in.ref0.g);
  const Stats pat = b.timePatched(solve);
  const double errW = b.patchedErrorNow();
  b.restore(1);
  solve.enqueue(b.patchRequest(true));
  solve.finish(0);
  const std::vector<float> m0 = toHost(b.dM.as<float>(), static_cast<std::size_t>(d * d));
  const double errM = testref::relError(m0.data(), b.in.ref0.m);
  const bool lowRankRoute = solve.patchViaLowRank(d, n);

  DeviceSolve denseSolve(b.ctx, Tuning{0, 2, false, Route::Dense});
  const Stats patDense = b.timePatched(denseSolve);
  const double errWDense = b.patchedErrorNow();

  b.table.push_back({"single edit, low-rank (D, G), device", low, "relerr G " + sci(errG)});
  b.table.push_back({std::string("single edit, patched W' (32 layers), ") + (lowRankRoute ? "W+(WDt)G" : "W*M"), pat,
                     "relerr W' " + sci(errW) + ", M " + sci(errM)});
  b.table.push_back({"single edit, patched W', route W*M (1 SGEMM)", patDense, "relerr W' " + sci(errWDense)});
  b.json["lowRankMedianMs"] = low.median;
  b.json["patchedMedianMs"] = pat.median;
  b.json["patchedDenseRouteMedianMs"] = patDense.median;
  b.json["patchedDenseRouteRelError"] = errWDense;
  b.json["patchedRouteLowRank"] = lowRankRoute ? 1 : 0;
  b.json["maxRelErrorVsFloat64"] = std::max({errG, errM, errW, errWDense});
  b.json["relErrorG"] = errG;
  b.json["relErrorM"] = errM;
  b.json["relErrorPatched"] = errW;
}

// ---- TF32 option (patched SGEMMs only): speed and its error ----
void measureTf32(Bench& b) {
  DeviceSolve p(b.ctx, Tuning{0, 2, true, Route::Auto});
  const Stats tf = b.timePatched(p);
  const double err = b.patchedErrorNow();
  b.table.push_back({"single edit, patched W', TF32 option", tf, "relerr W' " + sci(err)});
  b.json["patchedTf32MedianMs"] = tf.median;
  b.json["patchedTf32RelError"] = err;
}

// ---- throughput: low-rank form, B = 64, 256, 1024, several panel widths ----
void measureBatchThroughput(Bench& b) {
  for (int64_t B : {int64_t{64}, int64_t{256}, int64_t{1024}}) {
    Stats best{1e30};
    int64_t bestNb = 0;
    for (int64_t nb : {int64_t{32}, int64_t{64}, int64_t{128}, int64_t{4096}}) {
      DeviceSolve p(b.ctx, Tuning{nb, 0, false, Route::Auto});
      const Stats s = timeDevice(
          b.st, 2, B >= 1024 ? std::max(5, b.reps / 3) : b.reps,
          [&] {
            b.restore(B);
            p.enqueue(b.lowRankRequest(B));
          },
          [&] { p.finish(0); });
      char line[256];
      std::snprintf(line, sizeof line, "B=%-5lld nb=%-5lld %9.3f ms  %10.0f edits/s", static_cast<long long>(B),
                    static_cast<long long>(nb), s.median, B * 1000.0 / s.median);
      b.log.push_back(line);
      if (s.median < best.median) best = s, bestNb = nb;
    }
    // Last edit of the batch against its float64 reference (edit B-1 is a copy of edits[(B-1) % 8]).
    DeviceSolve p(b.ctx, Tuning{bestNb, 0, false, Route::Auto});
    b.restore(B);
    p.enqueue(b.lowRankRequest(B));
    p.finish(0);
    const std::vector<float> gl = toHost(b.workC.as<float>() + (B - 1) * b.nd, b.nd);
    const testref::Reference refl = testref::reference(b.d, b.in.edits[(B - 1) % 8], false);
    const double err = testref::relError(gl.data(), refl.g);
    const double eps = B * 1000.0 / best.median;
    b.table.push_back({"batch B=" + std::to_string(B) + ", low-rank, device", best,
                       std::to_string(static_cast<long long>(eps)) + " edits/s (nb=" + std::to_string(bestNb) +
                           "), relerr G " + sci(err)});
    b.json["batchEditsPerSec_B" + std::to_string(B)] = eps;
    b.json["batchRelErrorG_B" + std::to_string(B)] = err;
    b.json["batchBestBlock_B" + std::to_string(B)] = static_cast<double>(bestNb);
    b.bestBlock[B] = bestNb;
  }
}

// ---- floors, same run: one SGEMM of the patched-weights size, one DGEMM of the Gram size ----
// Leaves C of the first edit in float64 in `a` (real data, not zeros) for the stage rows.
void measureGemmFloors(Bench& b, DeviceBuffer& a) {
  const int64_t d = b.d, n = b.n, rows = b.rows;
  const float one = 1.0f, zero = 0.0f;
  const Stats sgemm = timeDevice(b.st, 3, b.reps, [&] {
    check(cublasSgemm(b.ctx.blas(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(d), static_cast<int>(rows),
                      static_cast<int>(d), &one, b.dM.as<float>(), static_cast<int>(d), b.dW.as<float>(),
                      static_cast<int>(d), &zero, b.dPatched.as<float>(), static_cast<int>(d)),
          "cublasSgemm");
  });
  b.table.push_back({"floor: SGEMM 768x768 by 24960x768 (cuBLAS)", sgemm,
                     std::to_string(2.0 * d * d * rows / sgemm.median / 1e9).substr(0, 6) + " TFLOP/s"});
  b.json["sgemmFloorMedianMs"] = sgemm.median;

  DeviceBuffer c;
  a.reserve(b.nd * sizeof(double));
  c.reserve(static_cast<std::size_t>(n * n) * sizeof(double));
  launchPrepare(b.pristineC.as<float>(), b.pristineCs.as<float>(), a.as<double>(), nullptr, false,
                static_cast<int64_t>(b.nd), b.st);
  const double oned = 1.0, zerod = 0.0;
  const Stats dgemm = timeDevice(b.st, 3, b.reps, [&] {
    check(cublasDgemm(b.ctx.blas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(n),
                      static_cast<int>(d), &oned, a.as<double>(), static_cast<int>(d), a.as<double>(),
                      static_cast<int>(d), &zerod, c.as<double>(), static_cast<int>(n)),
          "cublasDgemm");
  });
  b.table.push_back({"floor: DGEMM Gram 308x768 by 768x308", dgemm, ""});
  b.json["dgemmGramFloorMedianMs"] = dgemm.median;
}

// Stages of the single-edit chain and the two SGEMMs of the low-rank patch route, each alone. `a` holds C of the
// first edit in float64.
void measureStages(Bench& b, const DeviceBuffer& a) {
  const int64_t d = b.d, n = b.n, rows = b.rows;
  const std::size_t nd = b.nd;
  cudaStream_t st = b.st;
  Context& ctx = b.ctx;
  const float one = 1.0f, zero = 0.0f;
  const double oned = 1.0, zerod = 0.0;
  DeviceBuffer s0, sw, xw;
  s0.reserve(static_cast<std::size_t>(n * n) * sizeof(double));
  sw.reserve(static_cast<std::size_t>(n * n) * sizeof(double));
  xw.reserve(nd * sizeof(double));
  check(cublasDgemm(ctx.blas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(n), static_cast<int>(d),
                    &oned, a.as<double>(), static_cast<int>(d), a.as<double>(), static_cast<int>(d), &zerod,
                    s0.as<double>(), static_cast<int>(n)),
        "cublasDgemm");
  launchAddDiagonal(s0.as<double>(), n, 1, b.lam.as<double>(), st);
  int lwork = 0;
  check(cusolverDnDpotrf_bufferSize(ctx.solver(), CUBLAS_FILL_MODE_LOWER, static_cast<int>(n), sw.as<double>(),
                                    static_cast<int>(n), &lwork),
        "cusolverDnDpotrf_bufferSize");
  DeviceBuffer work, devInfo;
  work.reserve(static_cast<std::size_t>(std::max(lwork, 1)) * sizeof(double));
  devInfo.reserve(sizeof(int));
  const std::size_t sBytes = static_cast<std::size_t>(n * n) * sizeof(double);
  const Stats potrf = timeDevice(st, 3, b.reps, [&] {
    check(cudaMemcpyAsync(sw.as<double>(), s0.as<double>(), sBytes, cudaMemcpyDeviceToDevice, st), "cudaMemcpyAsync");
    check(cusolverDnDpotrf(ctx.solver(), CUBLAS_FILL_MODE_LOWER, static_cast<int>(n), sw.as<double>(),
                           static_cast<int>(n), work.as<double>(), lwork, devInfo.as<int>()),
          "cusolverDnDpotrf");
  });
  b.table.push_back({"stage: cusolverDnDpotrf n=308 (+0.8 MB restore)", potrf, ""});
  b.json["stagePotrfMs"] = potrf.median;
  const Stats trsm = timeDevice(st, 3, b.reps, [&] {
    check(cudaMemcpyAsync(xw.as<double>(), a.as<double>(), nd * sizeof(double), cudaMemcpyDeviceToDevice, st),
          "cudaMemcpyAsync");
    check(cublasDtrsm(ctx.blas(), CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, CUBLAS_DIAG_NON_UNIT,
                      static_cast<int>(d), static_cast<int>(n), &oned, sw.as<double>(), static_cast<int>(n),
                      xw.as<double>(), static_cast<int>(d)),
          "cublasDtrsm");
  });
  b.table.push_back({"stage: cublasDtrsm 768x308 (+1.9 MB restore)", trsm, ""});
  b.json["stageTrsmMs"] = trsm.median;

  const Stats trsmLeft = timeDevice(st, 3, b.reps, [&] {
    check(cudaMemcpyAsync(xw.as<double>(), a.as<double>(), nd * sizeof(double), cudaMemcpyDeviceToDevice, st),
          "cudaMemcpyAsync");
    check(cublasDtrsm(ctx.blas(), CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT,
                      static_cast<int>(n), static_cast<int>(d), &oned, sw.as<double>(), static_cast<int>(n),
                      xw.as<double>(), static_cast<int>(n)),
          "cublasDtrsm");
  });
  b.table.push_back({"stage: cublasDtrsm left 308x768 (+1.9 MB restore)", trsmLeft, ""});
  b.json["stageTrsmLeftMs"] = trsmLeft.median;

  {
    cusolverDnParams_t params = nullptr;
    check(cusolverDnCreateParams(&params), "cusolverDnCreateParams");
    std::size_t dWork = 0, hWork = 0;
    check(cusolverDnXpotrf_bufferSize(ctx.solver(), params, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F, sw.as<double>(), n,
                                      CUDA_R_64F, &dWork, &hWork),
          "cusolverDnXpotrf_bufferSize");
    DeviceBuffer xwork;
    xwork.reserve(std::max<std::size_t>(dWork, 8));
    std::vector<char> hbuf(std::max<std::size_t>(hWork, 8));
    const Stats xp = timeDevice(st, 3, b.reps, [&] {
      check(cudaMemcpyAsync(sw.as<double>(), s0.as<double>(), sBytes, cudaMemcpyDeviceToDevice, st), "cudaMemcpyAsync");
      check(cusolverDnXpotrf(ctx.solver(), params, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F, sw.as<double>(), n,
                             CUDA_R_64F, xwork.as<void>(), dWork, hbuf.data(), hWork, devInfo.as<int>()),
            "cusolverDnXpotrf");
    });
    cusolverDnDestroyParams(params);
    b.table.push_back({"stage: cusolverDnXpotrf n=308 (+0.8 MB restore)", xp, ""});
    b.json["stageXpotrfMs"] = xp.median;
  }

  DeviceBuffer t;
  t.reserve(static_cast<std::size_t>(rows * n) * sizeof(float));
  const Stats s1 = timeDevice(st, 3, b.reps, [&] {
    check(cublasSgemm(ctx.blas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(rows),
                      static_cast<int>(d), &one, b.pristineCs.as<float>(), static_cast<int>(d), b.dW.as<float>(),
                      static_cast<int>(d), &zero, t.as<float>(), static_cast<int>(n)),
          "cublasSgemm");
  });
  b.table.push_back({"stage: SGEMM W*Dt (24960x768 by 768x308)", s1, ""});
  b.json["stageSgemmWDtMs"] = s1.median;
  const Stats s2 = timeDevice(st, 3, b.reps, [&] {
    check(cublasSgemm(ctx.blas(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(d), static_cast<int>(rows),
                      static_cast<int>(n), &one, b.pristineC.as<float>(), static_cast<int>(d), t.as<float>(),
                      static_cast<int>(n), &one, b.dPatched.as<float>(), static_cast<int>(d)),
          "cublasSgemm");
  });
  b.table.push_back({"stage: SGEMM W' += T*G (k=308)", s2, ""});
  b.json["stageSgemmTGMs"] = s2.median;
}

// The Gram DGEMM of a whole B = 1024 batch, strided-batched.
void measureBatchedGramFloor(Bench& b) {
  const int64_t d = b.d, n = b.n;
  const double oned = 1.0, zerod = 0.0;
  const int64_t gramB = 1024;
  DeviceBuffer cb;
  cb.reserve(static_cast<std::size_t>(n * n * gramB) * sizeof(double));
  DeviceBuffer ab;
  ab.reserve(b.nd * gramB * sizeof(double));
  launchPrepare(b.pristineC.as<float>(), b.pristineCs.as<float>(), ab.as<double>(), nullptr, false,
                static_cast<int64_t>(b.nd * gramB), b.st);
  const Stats dgemmB = timeDevice(b.st, 2, std::max(5, b.reps / 3), [&] {
    check(cublasDgemmStridedBatched(b.ctx.blas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(n),
                                    static_cast<int>(d), &oned, ab.as<double>(), static_cast<int>(d), n * d,
                                    ab.as<double>(), static_cast<int>(d), n * d, &zerod, cb.as<double>(),
                                    static_cast<int>(n), n * n, static_cast<int>(gramB)),
          "cublasDgemmStridedBatched");
  });
  b.table.push_back({"floor: DGEMM Gram x1024 (strided batched)", dgemmB,
                     std::to_string(2.0 * n * n * d * gramB / dgemmB.median / 1e9).substr(0, 6) + " TFLOP/s"});
  b.json["dgemmGramBatch1024MedianMs"] = dgemmB.median;
}

// A device-to-device copy of the weights: the memory-bandwidth floor of forming W'.
void measureCopyFloor(Bench& b) {
  const std::size_t wBytes = static_cast<std::size_t>(b.rows * b.d) * sizeof(float);
  const Stats copy = timeDevice(b.st, 3, b.reps, [&] {
    check(cudaMemcpyAsync(b.dPatched.as<float>(), b.dW.as<float>(), wBytes, cudaMemcpyDeviceToDevice, b.st),
          "cudaMemcpyAsync");
  });
  b.table.push_back({"floor: D2D copy of the weights (76.7 MB)", copy,
                     std::to_string(2.0 * wBytes / copy.median / 1e9).substr(0, 6) + " TB/s r+w"});
  b.json["d2dCopyWeightsMedianMs"] = copy.median;
}

// ---- host-to-host through the public Solver (pageable host buffers, transfers included) ----
void measureHostSolver(Bench& b) {
  const int64_t d = b.d, n = b.n, rows = b.rows;
  const std::vector<Case>& edits = b.in.edits;
  std::unique_ptr<Solver> solver = makeCudaSolver(0);
  EditRows e{edits[0].c.data(), edits[0].cs.data(), n, b.lambda};
  std::vector<float> outW(static_cast<std::size_t>(rows * d));
  float* outPtr = outW.data();
  WeightsPatch patch{b.in.w.data(), rows, &outPtr};
  const Stats hp = timeHost(2, b.quick ? 3 : 10, [&] { solver->solve(d, &e, 1, nullptr, &patch); });
  b.table.push_back({"host: Solver::solve, 1 edit, patched (+77 MB each way)", hp, "wall clock"});
  b.json["hostPatchedMedianMs"] = hp.median;

  const int64_t B = 256;
  std::vector<EditRows> es(B);
  std::vector<std::vector<float>> gs(B, std::vector<float>(b.nd)), ds(B, std::vector<float>(b.nd));
  std::vector<EditOutputs> outs(B);
  for (int64_t i = 0; i < B; ++i) {
    es[i] = EditRows{edits[i % 8].c.data(), edits[i % 8].cs.data(), n, b.lambda};
    outs[i].lowRankG = gs[i].data();
    outs[i].lowRankD = ds[i].data();
  }
  const Stats hb = timeHost(1, b.quick ? 2 : 5, [&] { solver->solve(d, es.data(), B, outs.data(), nullptr); });
  b.table.push_back({"host: Solver::solve, B=256 low-rank", hb,
                     std::to_string(static_cast<long long>(B * 1000.0 / hb.median)) + " edits/s"});
  b.json["hostBatch256EditsPerSec"] = B * 1000.0 / hb.median;
  b.json["hostBatch256RelErrorG"] =
      testref::relError(gs[B - 1].data(), testref::reference(d, edits[(B - 1) % 8], false).g);
}

// --dump DIR: the inputs and the float64 M for the PyTorch peer (native/bench/paper_peer.py).
void dumpInputs(const Inputs& in, const std::string& dumpDir) {
  writeFile(dumpDir + "/c.f32", in.edits[0].c);
  writeFile(dumpDir + "/cs.f32", in.edits[0].cs);
  writeFile(dumpDir + "/w.f32", in.w);
  writeFile(dumpDir + "/m_ref.f64", in.ref0.m);
  std::ofstream meta(dumpDir + "/meta.json");
  meta << "{\"d\": " << in.d << ", \"n\": " << in.n << ", \"rows\": " << in.rows << ", \"lambda\": " << in.lambda
       << ", \"layers\": [";
  bool first = true;
  for (int kv = 0; kv < 2; ++kv)
    for (int64_t o : kLayerOut) meta << (first ? "" : ", ") << o, first = false;
  meta << "]}\n";
}

// The same two single-edit rows with the fused substitution kernel (the default uses cuBLAS trsm), with 8 and
// with 4 columns of X per thread block.
void measureFusedSingleEdit(Bench& b) {
  b.json["maxRelErrorFused"] = 0;
  for (int columns : {8, 4}) {
    Tuning t = fusedTuning(0, 2);
    t.fusedColumns = columns;
    DeviceSolve fused(b.ctx, t);
    const Stats lowF = b.timeLowRank(fused);
    const double errGF = testref::relError(toHost(b.workC.as<float>(), b.nd).data(), b.in.ref0.g);
    const Stats patF = b.timePatched(fused);
    const double errWF = b.patchedErrorNow();
    const std::string tag = columns == 8 ? "" : "4";
    b.table.push_back({"single edit, low-rank, fused solve kernel, " + std::to_string(columns) + " col/block", lowF,
                       "relerr G " + sci(errGF)});
    b.table.push_back({"single edit, patched W', fused solve, " + std::to_string(columns) + " col/block", patF,
                       "relerr W' " + sci(errWF)});
    b.json["lowRankFused" + tag + "MedianMs"] = lowF.median;
    b.json["patchedFused" + tag + "MedianMs"] = patF.median;
    b.json["relErrorGFused" + tag] = errGF;
    b.json["relErrorPatchedFused" + tag] = errWF;
    b.json["maxRelErrorFused"] = std::max({b.json["maxRelErrorFused"], errGF, errWF});
  }
}

// The side-SM reserve with the fused kernel (its blocks want free SMs).
void measureFusedSideReserve(Bench& b) {
  for (int reserve : {16, 33, 66}) {
    Tuning t = fusedTuning(0, 2);
    t.patchRoute = Route::LowRank;
    t.sideSmReserve = reserve;
    DeviceSolve q(b.ctx, t);
    const Stats pr = b.timePatched(q);
    char line[256];
    std::snprintf(line, sizeof line,
                  "single edit patched via low rank, fused solve, side SGEMM leaves %2d of %d SMs free: %.3f ms",
                  reserve, b.ctx.multiprocessors(), pr.median);
    b.log.push_back(line);
    b.json["patchedFusedReserve" + std::to_string(reserve) + "Ms"] = pr.median;
  }
}

// Batch throughput with the fused kernel, at the panel width measureBatchThroughput found fastest.
void measureFusedBatch(Bench& b) {
  for (int64_t B : {int64_t{64}, int64_t{256}, int64_t{1024}}) {
    DeviceSolve fused(b.ctx, fusedTuning(b.bestBlock[B], 0));
    const Stats fs = timeDevice(
        b.st, 2, B >= 1024 ? std::max(5, b.reps / 3) : b.reps,
        [&] {
          b.restore(B);
          fused.enqueue(b.lowRankRequest(B));
        },
        [&] { fused.finish(0); });
    const std::vector<float> gf = toHost(b.workC.as<float>() + (B - 1) * b.nd, b.nd);
    const double errF = testref::relError(gf.data(), testref::reference(b.d, b.in.edits[(B - 1) % 8], false).g);
    b.table.push_back(
        {"batch B=" + std::to_string(B) + ", low-rank, fused solve kernel", fs,
         std::to_string(static_cast<long long>(B * 1000.0 / fs.median)) + " edits/s, relerr G " + sci(errF)});
    b.json["batchEditsPerSecFused_B" + std::to_string(B)] = B * 1000.0 / fs.median;
    b.json["batchRelErrorGFused_B" + std::to_string(B)] = errF;
  }
}

// ---- the fused substitution kernel (TIME_EDIT_CUDA_SOLVE=fused/fused4), last: everything before is measured
// with the default path first, so that a fault in the new kernel (which poisons the CUDA context) cannot cost
// the rest of the run. Returns false (and logs why) when it failed. ----
bool measureFused(Bench& b) {
  try {
    measureFusedSingleEdit(b);
    measureFusedSideReserve(b);
    measureFusedBatch(b);
    return true;
  } catch (const std::exception& e) {
    b.json["fusedFailed"] = 1;
    b.log.push_back(std::string("FUSED KERNEL FAILED: ") + e.what());
    std::fprintf(stderr, "fused substitution kernel failed: %s\n", e.what());
    return false;
  }
}

// The "variants" log, the table, and the summary against the targets.
void printReport(Bench& b, bool fusedOk) {
  std::map<std::string, double>& json = b.json;
  std::printf("\nvariants:\n");
  for (const std::string& l : b.log) std::printf("  %s\n", l.c_str());
  const std::string title = "TIME on " + b.ctx.deviceName() + " (d=768, n=308, R=24960)";
  std::printf("\n%-56s %10s %10s %10s  %s\n", title.c_str(), "median ms", "min", "max", "notes");
  for (const Row& r : b.table) {
    std::printf("%-56s %10.3f %10.3f %10.3f  %s\n", r.what.c_str(), r.s.median, r.s.min, r.s.max, r.extra.c_str());
  }
  const double ratio = json["patchedMedianMs"] / json["sgemmFloorMedianMs"];
  std::printf("\npatched / SGEMM floor: %.2fx (target <= 1.3x); patched %.3f ms (target <= 1 ms)\n", ratio,
              json["patchedMedianMs"]);
  std::printf("low-rank throughput at B=1024: %.0f edits/s (target >= 20000)\n", json["batchEditsPerSec_B1024"]);
  std::printf("max rel error vs float64: %.2e (target <= 1e-6)\n", json["maxRelErrorVsFloat64"]);
  json["patchedOverSgemmFloor"] = ratio;
  if (fusedOk) {
    const double fusedRatio = json["patchedFusedMedianMs"] / json["sgemmFloorMedianMs"];
    std::printf(
        "with the fused solve kernel (TIME_EDIT_CUDA_SOLVE=fused): patched %.3f ms = %.2fx the floor, "
        "B=1024 %.0f edits/s, max rel error %.2e\n",
        json["patchedFusedMedianMs"], fusedRatio, json["batchEditsPerSecFused_B1024"], json["maxRelErrorFused"]);
    std::printf("with 4 columns per block (TIME_EDIT_CUDA_SOLVE=fused4): patched %.3f ms = %.2fx the floor\n",
                json["patchedFused4MedianMs"], json["patchedFused4MedianMs"] / json["sgemmFloorMedianMs"]);
    json["patchedFusedOverSgemmFloor"] = fusedRatio;
  } else {
    std::printf("the fused solve kernel FAILED (see 'variants' above); the default path's numbers stand\n");
  }
}

void writeJson(const Bench& b, const std::string& jsonPath) {
  std::ofstream f(jsonPath);
  f.precision(9);
  f << "{\n  \"backend\": \"cuda:" << b.ctx.deviceName() << "\"";
  for (const auto& [k, v] : b.json) f << ",\n  \"" << k << "\": " << v;
  f << "\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string dumpDir, jsonPath;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dump" && i + 1 < argc) dumpDir = argv[++i];
    else if (a == "--json" && i + 1 < argc) jsonPath = argv[++i];
    else if (a == "--quick") quick = true;
    else {
      std::fprintf(stderr, "usage: time_edit_cuda_bench [--dump DIR] [--json FILE] [--quick]\n");
      return 2;
    }
  }
  if (cudaDeviceCount() == 0) {
    std::fprintf(stderr, "no CUDA device visible\n");
    return 1;
  }
  try {
    const Inputs inputs = makeInputs();
    Context ctx(0);
    std::printf("device: %s   (float64 reference on the CPU: %.2f s)\n", ctx.deviceName().c_str(), inputs.refSeconds);
    Bench b(inputs, ctx, quick ? 5 : 30, quick);

    measureSolvePaths(b);
    measureSideReserve(b);
    measureDefaultSingleEdit(b);
    measureTf32(b);
    measureBatchThroughput(b);
    {
      DeviceBuffer a;  // C of the first edit in float64, shared by the floor and stage rows
      measureGemmFloors(b, a);
      measureStages(b, a);
      measureBatchedGramFloor(b);
      measureCopyFloor(b);
    }
    measureHostSolver(b);
    if (!dumpDir.empty()) dumpInputs(inputs, dumpDir);
    const bool fusedOk = measureFused(b);

    printReport(b, fusedOk);
    if (!jsonPath.empty()) writeJson(b, jsonPath);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "benchmark failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
