// An edit applied to embedding rows on the CPU: applyLowRank (out = X + (X·Aᵀ)·B, the low-rank form) and
// applyDense (out = X·M or X·Mᵀ). Value checks (finite numbers) run at the start of the worker.
#include <cstdint>
#include <memory>
#include <string>

#include "args.hpp"
#include "exports.hpp"
#include "promise_worker.hpp"
#include "time_edit/cpu_ops.hpp"

namespace time_edit::napi {

// applyLowRank(backend, d, X, A, B, out) -> Promise<void>: out = X + (X·Aᵀ)·B (CPU).
Napi::Value ApplyLowRank(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cpu::Kernel kernel = kernelArg(env, arg(info, 0));
  const int64_t d = integer(env, arg(info, 1), "d", 1, 1 << 20);
  Napi::Float32Array x = f32(env, arg(info, 2), "rows");
  Napi::Float32Array a = f32(env, arg(info, 3), "A");
  Napi::Float32Array b = f32(env, arg(info, 4), "B");
  const int64_t m = rowsOf(env, x, "rows", d);
  const int64_t k = rowsOf(env, a, "A", d);
  if (b.ElementLength() != a.ElementLength())
    rangeError(env,
               "B has " + std::to_string(b.ElementLength()) + " values but A has " + std::to_string(a.ElementLength()));
  Napi::Float32Array out = outputArg(env, arg(info, 5), "out", m * d);
  checkNoOverlap(env, {span(x, "rows", false), span(a, "A", false), span(b, "B", false), span(out, "out", true)});
  auto worker = std::make_unique<FnWorker>(env);
  for (const auto& v : {x, a, b, out}) worker->Keep(v);
  const float *xp = x.Data(), *ap = a.Data(), *bp = b.Data();
  float* op = out.Data();
  return Start(std::move(worker), [=]() {
    checkFinite(xp, m * d, d, "rows");
    checkFinite(ap, k * d, d, "A");
    checkFinite(bp, k * d, d, "B");
    cpu::applyLowRank(m, d, k, xp, ap, bp, op, kernel);
    return std::string();
  });
}

// applyDense(backend, d, X, M, transpose, out) -> Promise<void>: out = X·M or X·Mᵀ (CPU).
Napi::Value ApplyDense(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cpu::Kernel kernel = kernelArg(env, arg(info, 0));
  const int64_t d = integer(env, arg(info, 1), "d", 1, 1 << 20);
  Napi::Float32Array x = f32(env, arg(info, 2), "rows");
  Napi::Float32Array mat = outputArg(env, arg(info, 3), "M", d * d);
  if (!arg(info, 4).IsBoolean()) typeError(env, "transpose must be a boolean, got " + describe(arg(info, 4)));
  const bool transpose = arg(info, 4).As<Napi::Boolean>().Value();
  const int64_t m = rowsOf(env, x, "rows", d);
  Napi::Float32Array out = outputArg(env, arg(info, 5), "out", m * d);
  checkNoOverlap(env, {span(x, "rows", false), span(mat, "M", false), span(out, "out", true)});
  auto worker = std::make_unique<FnWorker>(env);
  for (const auto& v : {x, mat, out}) worker->Keep(v);
  const float *xp = x.Data(), *mp = mat.Data();
  float* op = out.Data();
  return Start(std::move(worker), [=]() {
    checkFinite(xp, m * d, d, "rows");
    checkFinite(mp, d * d, d, "M");
    cpu::applyDense(m, d, xp, mp, transpose, op, kernel);
    return std::string();
  });
}

}  // namespace time_edit::napi
