// The solver operations of the binding: backendInfo, solve (edits → D, G, M and patched weights) and
// patchDense (patched weights from given M's), on the backend the caller names. Value checks (finite numbers)
// run at the start of the worker, before anything is written; results go straight into the caller's
// Float32Arrays (no copy of the weights).
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "args.hpp"
#include "exports.hpp"
#include "promise_worker.hpp"
#include "time_edit/cpu_ops.hpp"
#include "time_edit/solver.hpp"

namespace time_edit::napi {
namespace {

// Intentionally never destroyed: tearing down a CUDA context from static destructors at process exit is unsafe.
Solver* gSolvers[3] = {nullptr, nullptr, nullptr};

Solver& solverFor(Backend backend) {  // caller holds workMutex()
  Solver*& slot = gSolvers[static_cast<int>(backend)];
  if (slot == nullptr) {
    switch (backend) {
      case Backend::Cpu: slot = makeCpuSolver().release(); break;
      case Backend::CpuPortable: slot = cpu::makeSolver(cpu::Kernel::Portable).release(); break;
      case Backend::Cuda: slot = makeCudaSolver(0).release(); break;
    }
  }
  return *slot;
}

}  // namespace

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cpu", time_edit::cpuBackendName());
  o.Set("cpuPortable", cpu::portableBackendName());
  o.Set("hasBlas", cpu::hasBlas());
  o.Set("cudaBuilt", time_edit::cudaBuilt());
  o.Set("cudaDevices", time_edit::cudaDeviceCount());
  return o;
}

// solve(backend, d, sources[], destinations[], lambdas[], outD[], outG[], outM[], weights | null, patched[])
//   -> Promise<string>: the backend's name. outD/outG/outM entries may be null (not wanted).
Napi::Value Solve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Backend backend = backendArg(env, arg(info, 0));
  const int64_t d = integer(env, arg(info, 1), "d", 1, 1 << 20);
  Napi::Array sources = array(env, arg(info, 2), "sources");
  Napi::Array destinations = array(env, arg(info, 3), "destinations");
  Napi::Array lambdas = array(env, arg(info, 4), "lambdas");
  Napi::Array outD = array(env, arg(info, 5), "outD");
  Napi::Array outG = array(env, arg(info, 6), "outG");
  Napi::Array outM = array(env, arg(info, 7), "outM");
  const Napi::Value weightsValue = arg(info, 8);
  const uint32_t count = sources.Length();
  if (count == 0) rangeError(env, "sources is empty: give at least one edit");
  const std::pair<Napi::Array, const char*> lists[] = {
      {destinations, "destinations"}, {lambdas, "lambdas"}, {outD, "outD"}, {outG, "outG"}, {outM, "outM"}};
  for (const auto& [list, name] : lists)
    if (list.Length() != count)
      rangeError(env, std::string(name) + " has " + std::to_string(list.Length()) + " entries but sources has " +
                          std::to_string(count));

  auto worker = std::make_unique<FnWorker>(env);
  std::vector<Span> spans;
  std::vector<time_edit::EditRows> rows(count);
  std::vector<time_edit::EditOutputs> outs(count);
  std::vector<float*> patched;
  const float* weights = nullptr;
  int64_t weightRows = 0;
  for (uint32_t b = 0; b < count; ++b) {
    const std::string at = "[" + std::to_string(b) + "]";
    Napi::Float32Array src = f32(env, sources.Get(b), "sources" + at);
    Napi::Float32Array dst = f32(env, destinations.Get(b), "destinations" + at);
    const int64_t n = rowsOf(env, src, "sources" + at, d);
    if (dst.ElementLength() != src.ElementLength())
      rangeError(env, "destinations" + at + " has " + std::to_string(dst.ElementLength()) + " values but sources" + at +
                          " has " + std::to_string(src.ElementLength()) + ": C and C* must have the same shape");
    const Napi::Value lv = lambdas.Get(b);
    if (!lv.IsNumber()) typeError(env, "lambdas" + at + " must be a number, got " + describe(lv));
    const double lambda = lv.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(lambda) || !(lambda > 0))
      rangeError(env, "lambdas" + at + " must be finite and > 0, got " + num(lambda));
    rows[b] = time_edit::EditRows{src.Data(), dst.Data(), n, lambda};
    spans.push_back(span(src, "sources" + at, false));
    spans.push_back(span(dst, "destinations" + at, false));
    worker->Keep(src);
    worker->Keep(dst);
    auto output = [&](const Napi::Array& list, const char* name, int64_t want) -> float* {
      const Napi::Value v = list.Get(b);
      if (isAbsent(v)) return nullptr;
      Napi::Float32Array a = outputArg(env, v, std::string(name) + at, want);
      spans.push_back(span(a, std::string(name) + at, true));
      worker->Keep(a);
      return a.Data();
    };
    outs[b] =
        time_edit::EditOutputs{output(outD, "outD", n * d), output(outG, "outG", n * d), output(outM, "outM", d * d)};
  }
  if (!isAbsent(weightsValue)) {
    Napi::Float32Array w = f32(env, weightsValue, "weights");
    weightRows = rowsOf(env, w, "weights", d);
    weights = w.Data();
    spans.push_back(span(w, "weights", false));
    worker->Keep(w);
    Napi::Array patchedList = array(env, arg(info, 9), "patched");
    if (patchedList.Length() != count)
      rangeError(env, "patched has " + std::to_string(patchedList.Length()) + " entries but sources has " +
                          std::to_string(count));
    for (uint32_t b = 0; b < count; ++b) {
      const std::string name = "patched[" + std::to_string(b) + "]";
      Napi::Float32Array p = outputArg(env, patchedList.Get(b), name, weightRows * d);
      patched.push_back(p.Data());
      spans.push_back(span(p, name, true));
      worker->Keep(p);
    }
  }
  checkNoOverlap(env, spans);

  return Start(std::move(worker), [=]() mutable {
    // Every backend's solve() starts with validateEdits (finite values, λ, n), before writing anything.
    if (weights != nullptr) checkFinite(weights, weightRows * d, d, "weights");
    Solver& solver = solverFor(backend);
    time_edit::WeightsPatch patch{weights, weightRows, patched.data()};
    solver.solve(d, rows.data(), static_cast<int64_t>(rows.size()), outs.data(), weights != nullptr ? &patch : nullptr);
    return solver.name();
  });
}

// patchDense(backend, d, dense[], weights, patched[]) -> Promise<string>: patched[b] = W·dense[b].
Napi::Value PatchDense(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Backend backend = backendArg(env, arg(info, 0));
  const int64_t d = integer(env, arg(info, 1), "d", 1, 1 << 20);
  Napi::Array denseList = array(env, arg(info, 2), "dense");
  Napi::Float32Array w = f32(env, arg(info, 3), "weights");
  Napi::Array patchedList = array(env, arg(info, 4), "patched");
  const uint32_t count = denseList.Length();
  if (count == 0) rangeError(env, "dense is empty: give at least one matrix");
  if (patchedList.Length() != count)
    rangeError(
        env, "patched has " + std::to_string(patchedList.Length()) + " entries but dense has " + std::to_string(count));
  const int64_t rows = rowsOf(env, w, "weights", d);
  auto worker = std::make_unique<FnWorker>(env);
  std::vector<Span> spans{span(w, "weights", false)};
  worker->Keep(w);
  std::vector<const float*> dense;
  std::vector<float*> patched;
  for (uint32_t b = 0; b < count; ++b) {
    const std::string at = "[" + std::to_string(b) + "]";
    Napi::Float32Array m = outputArg(env, denseList.Get(b), "dense" + at, d * d);
    Napi::Float32Array p = outputArg(env, patchedList.Get(b), "patched" + at, rows * d);
    dense.push_back(m.Data());
    patched.push_back(p.Data());
    spans.push_back(span(m, "dense" + at, false));
    spans.push_back(span(p, "patched" + at, true));
    worker->Keep(m);
    worker->Keep(p);
  }
  checkNoOverlap(env, spans);
  const float* wp = w.Data();
  return Start(std::move(worker), [=]() mutable {
    for (size_t b = 0; b < dense.size(); ++b) checkFinite(dense[b], d * d, d, "dense[" + std::to_string(b) + "]");
    checkFinite(wp, rows * d, d, "weights");
    Solver& solver = solverFor(backend);
    solver.patchWithDense(d, dense.data(), static_cast<int64_t>(dense.size()), wp, rows, patched.data());
    return solver.name();
  });
}

}  // namespace time_edit::napi
