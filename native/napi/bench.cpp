// What the solve benchmark needs besides the solver: sgemm (the floor a patched solve is compared with),
// baseline (the per-layer algorithm of the paper, for comparison), and the CPU thread count.
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "args.hpp"
#include "exports.hpp"
#include "promise_worker.hpp"
#include "time_edit/cpu_ops.hpp"
#include "time_edit/solver.hpp"

namespace time_edit::napi {

// sgemm(backend, m, n, k, A, B, C) -> Promise<void>: C = A·B on the CPU (the benchmark's floor; no value checks).
Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cpu::Kernel kernel = kernelArg(env, arg(info, 0));
  const int64_t m = integer(env, arg(info, 1), "m", 1), n = integer(env, arg(info, 2), "n", 1),
                k = integer(env, arg(info, 3), "k", 1);
  Napi::Float32Array a = outputArg(env, arg(info, 4), "A", m * k);
  Napi::Float32Array b = outputArg(env, arg(info, 5), "B", k * n);
  Napi::Float32Array c = outputArg(env, arg(info, 6), "C", m * n);
  checkNoOverlap(env, {span(a, "A", false), span(b, "B", false), span(c, "C", true)});
  auto worker = std::make_unique<FnWorker>(env);
  for (const auto& v : {a, b, c}) worker->Keep(v);
  const float *ap = a.Data(), *bp = b.Data();
  float* cp = c.Data();
  return Start(std::move(worker), [=]() {
    cpu::sgemm(m, n, k, ap, bp, cp, kernel);
    return std::string();
  });
}

// baseline(backend, d, source, destination, lambda, weights, layerRows[], out) -> Promise<void> (benchmark only).
Napi::Value Baseline(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cpu::Kernel kernel = kernelArg(env, arg(info, 0));
  const int64_t d = integer(env, arg(info, 1), "d", 1, 1 << 20);
  Napi::Float32Array src = f32(env, arg(info, 2), "source");
  Napi::Float32Array dst = f32(env, arg(info, 3), "destination");
  const int64_t n = rowsOf(env, src, "source", d);
  if (dst.ElementLength() != src.ElementLength()) rangeError(env, "destination and source differ in length");
  if (!arg(info, 4).IsNumber()) typeError(env, "lambda must be a number");
  const double lambda = arg(info, 4).As<Napi::Number>().DoubleValue();
  if (!std::isfinite(lambda) || !(lambda > 0)) rangeError(env, "lambda must be finite and > 0");
  Napi::Float32Array w = f32(env, arg(info, 5), "weights");
  const int64_t rows = rowsOf(env, w, "weights", d);
  Napi::Array layerList = array(env, arg(info, 6), "layerRows");
  std::vector<int64_t> layers;
  int64_t total = 0;
  for (uint32_t i = 0; i < layerList.Length(); ++i) {
    layers.push_back(integer(env, layerList.Get(i), "layerRows[" + std::to_string(i) + "]", 1));
    total += layers.back();
  }
  if (layers.empty() || total != rows)
    rangeError(env,
               "layerRows must sum to the weights' rows (" + std::to_string(rows) + "), got " + std::to_string(total));
  Napi::Float32Array out = outputArg(env, arg(info, 7), "out", rows * d);
  checkNoOverlap(env, {span(src, "source", false), span(dst, "destination", false), span(w, "weights", false),
                       span(out, "out", true)});
  auto worker = std::make_unique<FnWorker>(env);
  for (const auto& v : {src, dst, w, out}) worker->Keep(v);
  const float *sp = src.Data(), *dp = dst.Data(), *wp = w.Data();
  float* op = out.Data();
  return Start(std::move(worker), [=]() {
    time_edit::EditRows e{sp, dp, n, lambda};
    checkFinite(wp, rows * d, d, "weights");
    cpu::baselinePerLayer(d, e, wp, layers.data(), static_cast<int64_t>(layers.size()), op, kernel);
    return std::string();
  });
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  const cpu::Kernel kernel = kernelArg(info.Env(), arg(info, 0));
  std::lock_guard<std::mutex> lock(workMutex());
  return Napi::Number::New(info.Env(), cpu::threads(kernel));
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cpu::Kernel kernel = kernelArg(env, arg(info, 0));
  const int64_t n = integer(env, arg(info, 1), "threads", 1, 1024);
  std::lock_guard<std::mutex> lock(workMutex());  // never change the thread count under running work
  cpu::setThreads(static_cast<int>(n), kernel);
  return env.Undefined();
}

}  // namespace time_edit::napi
