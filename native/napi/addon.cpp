// The Node-API binding: argument checks, typed-array views and async workers returning Promises. No math here.
//
// Every function checks types, lengths and shapes synchronously (TypeError / RangeError naming the argument) before
// queueing any work; value checks (finite numbers) run at the start of the worker, before anything is written, and
// reject with a RangeError. Results are written straight into caller-allocated Float32Arrays (no copy of the weights).
// All native work is serialised by one mutex: BLAS/cuBLAS are multi-threaded themselves, and each backend object is
// shared. No C++ exception crosses the N-API boundary: workers catch everything and reject their Promise.
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "time_edit/cpu_ops.hpp"
#include "time_edit/solver.hpp"

namespace {

using time_edit::Solver;
namespace cpu = time_edit::cpu;

std::mutex gWorkMutex;

// Intentionally never destroyed: tearing down a CUDA context from static destructors at process exit is unsafe.
Solver* gSolvers[3] = {nullptr, nullptr, nullptr};

enum class Backend { Cpu = 0, CpuPortable = 1, Cuda = 2 };

Solver& solverFor(Backend backend) {  // caller holds gWorkMutex
  Solver*& slot = gSolvers[static_cast<int>(backend)];
  if (slot == nullptr) {
    switch (backend) {
      case Backend::Cpu: slot = time_edit::makeCpuSolver().release(); break;
      case Backend::CpuPortable: slot = cpu::makeSolver(cpu::Kernel::Portable).release(); break;
      case Backend::Cuda: slot = time_edit::makeCudaSolver(0).release(); break;
    }
  }
  return *slot;
}

// ---- argument checking ----

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_float64_array: return "a Float64Array";
      case napi_int32_array: return "an Int32Array";
      case napi_uint8_array: return "a Uint8Array";
      default: return "a typed array of another type";
    }
  }
  if (v.IsArray()) return "an array";
  if (v.IsNumber()) return "a number";
  if (v.IsString()) return "a string";
  if (v.IsBoolean()) return "a boolean";
  return "an object";
}

std::string num(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

[[noreturn]] void typeError(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
[[noreturn]] void rangeError(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

Napi::Value arg(const Napi::CallbackInfo& info, size_t i) { return i < info.Length() ? info[i] : info.Env().Undefined(); }

Napi::Float32Array f32(Napi::Env env, const Napi::Value& v, const std::string& name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    typeError(env, name + " must be a Float32Array, got " + describe(v));
  return v.As<Napi::Float32Array>();
}

bool isAbsent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

int64_t integer(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t min, int64_t max = 1LL << 40) {
  if (!v.IsNumber()) typeError(env, name + " must be an integer, got " + describe(v));
  const double x = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x) || std::floor(x) != x) rangeError(env, name + " must be an integer, got " + num(x));
  if (x < static_cast<double>(min) || x > static_cast<double>(max))
    rangeError(env, name + " must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " +
                        std::to_string(static_cast<int64_t>(x)));
  return static_cast<int64_t>(x);
}

Napi::Array array(Napi::Env env, const Napi::Value& v, const std::string& name) {
  if (!v.IsArray()) typeError(env, name + " must be an array, got " + describe(v));
  return v.As<Napi::Array>();
}

Backend backendArg(Napi::Env env, const Napi::Value& v) {
  if (!v.IsString()) typeError(env, "backend must be a string ('cpu', 'cpu-portable' or 'cuda'), got " + describe(v));
  const std::string s = v.As<Napi::String>().Utf8Value();
  if (s == "cpu") return Backend::Cpu;
  if (s == "cpu-portable") return Backend::CpuPortable;
  if (s == "cuda") return Backend::Cuda;
  rangeError(env, "backend must be 'cpu', 'cpu-portable' or 'cuda', got '" + s + "'");
}

cpu::Kernel kernelArg(Napi::Env env, const Napi::Value& v) {
  const Backend b = backendArg(env, v);
  if (b == Backend::Cuda) rangeError(env, "this operation runs on the CPU: backend must be 'cpu' or 'cpu-portable'");
  return b == Backend::CpuPortable ? cpu::Kernel::Portable : cpu::Kernel::Best;
}

// Byte ranges of inputs and outputs, so that an output never aliases an input or another output.
struct Span {
  const char* begin;
  const char* end;
  std::string name;
  bool output;
};
void checkNoOverlap(Napi::Env env, const std::vector<Span>& spans) {
  for (size_t i = 0; i < spans.size(); ++i)
    for (size_t j = i + 1; j < spans.size(); ++j) {
      const Span &a = spans[i], &b = spans[j];
      if (!a.output && !b.output) continue;
      if (a.begin < b.end && b.begin < a.end && a.begin != a.end && b.begin != b.end)
        rangeError(env, (a.output ? a.name : b.name) + " shares memory with " + (a.output ? b.name : a.name) +
                            ": outputs must be separate buffers");
    }
}
Span span(const Napi::Float32Array& a, const std::string& name, bool output) {
  const char* p = reinterpret_cast<const char*>(a.Data());
  return {p, p + a.ElementLength() * sizeof(float), name, output};
}

// Finite-value check: a vectorisable pass over the exponent bits first (77 MB of weights in a few ms), then a
// scalar pass to name the first bad element only when there is one.
void checkFinite(const float* data, int64_t count, int64_t d, const std::string& name) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, data + i, sizeof bits);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (bad == 0) return;
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(data[i])) {
      std::ostringstream msg;
      msg << name << " contains a non-finite value (" << data[i] << ") at row " << i / d << ", column " << i % d;
      throw time_edit::Error(time_edit::Error::Kind::InvalidArgument, msg.str());
    }
}

// ---- Promise-returning worker ----

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Queue() {
    Napi::Promise promise = deferred_.Promise();
    Napi::AsyncWorker::Queue();
    return promise;
  }
  // Keeps a JS buffer alive (and its memory in place) until the work is done.
  void Keep(const Napi::Value& v) {
    if (v.IsObject()) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }

 private:
  void Execute() override {
    std::lock_guard<std::mutex> lock(gWorkMutex);
    try {
      Run();
    } catch (const time_edit::Error& e) {
      fail(e.what(), e.kind() == time_edit::Error::Kind::InvalidArgument);
    } catch (const std::bad_alloc&) {
      fail("time-edit: out of memory", false);
    } catch (const std::exception& e) {
      fail(std::string("time-edit: ") + e.what(), false);
    } catch (...) {
      fail("time-edit: unknown native error", false);
    }
  }
  void fail(const std::string& message, bool invalidArgument) {
    failed_ = true;
    invalidArgument_ = invalidArgument;
    message_ = message;
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (failed_) {
      Napi::Error err = invalidArgument_ ? Napi::Error(Napi::RangeError::New(env, message_)) : Napi::Error::New(env, message_);
      deferred_.Reject(err.Value());
    } else {
      deferred_.Resolve(Result(env));
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> refs_;
  bool failed_ = false;
  bool invalidArgument_ = false;
  std::string message_;
};

// A worker that runs a closure. The closure captures raw pointers into typed arrays that the worker keeps alive.
class FnWorker final : public PromiseWorker {
 public:
  explicit FnWorker(Napi::Env env) : PromiseWorker(env) {}
  void SetFn(std::function<std::string()> fn) { fn_ = std::move(fn); }

 protected:
  void Run() override { result_ = fn_(); }
  Napi::Value Result(Napi::Env env) override {
    return result_.empty() ? env.Undefined() : Napi::Value(Napi::String::New(env, result_));
  }

 private:
  std::function<std::string()> fn_;
  std::string result_;
};

// Validation happens while the worker is owned here; it is handed to N-API only once everything checked out.
Napi::Value Start(std::unique_ptr<FnWorker> worker, std::function<std::string()> fn) {
  worker->SetFn(std::move(fn));
  FnWorker* w = worker.release();
  return w->Queue();
}

// An output Float32Array of exactly `want` values (or absent when optional).
Napi::Float32Array outputArg(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t want) {
  Napi::Float32Array a = f32(env, v, name);
  if (static_cast<int64_t>(a.ElementLength()) != want)
    rangeError(env, name + " must have " + std::to_string(want) + " values, got " + std::to_string(a.ElementLength()));
  return a;
}

// A rows × d input; returns rows.
int64_t rowsOf(Napi::Env env, const Napi::Float32Array& a, const std::string& name, int64_t d) {
  const int64_t len = static_cast<int64_t>(a.ElementLength());
  if (len == 0) rangeError(env, name + " is empty: need at least one row of d = " + std::to_string(d) + " values");
  if (len % d != 0)
    rangeError(env, name + " has " + std::to_string(len) + " values, not a multiple of d = " + std::to_string(d));
  return len / d;
}

// ---- exported functions ----

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
    outs[b] = time_edit::EditOutputs{output(outD, "outD", n * d), output(outG, "outG", n * d), output(outM, "outM", d * d)};
  }
  if (!isAbsent(weightsValue)) {
    Napi::Float32Array w = f32(env, weightsValue, "weights");
    weightRows = rowsOf(env, w, "weights", d);
    weights = w.Data();
    spans.push_back(span(w, "weights", false));
    worker->Keep(w);
    Napi::Array patchedList = array(env, arg(info, 9), "patched");
    if (patchedList.Length() != count)
      rangeError(env, "patched has " + std::to_string(patchedList.Length()) + " entries but sources has " + std::to_string(count));
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
    rangeError(env, "patched has " + std::to_string(patchedList.Length()) + " entries but dense has " + std::to_string(count));
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
    rangeError(env, "B has " + std::to_string(b.ElementLength()) + " values but A has " + std::to_string(a.ElementLength()));
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
    rangeError(env, "layerRows must sum to the weights' rows (" + std::to_string(rows) + "), got " + std::to_string(total));
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
  std::lock_guard<std::mutex> lock(gWorkMutex);
  return Napi::Number::New(info.Env(), cpu::threads(kernel));
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cpu::Kernel kernel = kernelArg(env, arg(info, 0));
  const int64_t n = integer(env, arg(info, 1), "threads", 1, 1024);
  std::lock_guard<std::mutex> lock(gWorkMutex);  // never change the thread count under running work
  cpu::setThreads(static_cast<int>(n), kernel);
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("backendInfo", Napi::Function::New(env, BackendInfo, "backendInfo"));
  exports.Set("solve", Napi::Function::New(env, Solve, "solve"));
  exports.Set("patchDense", Napi::Function::New(env, PatchDense, "patchDense"));
  exports.Set("applyLowRank", Napi::Function::New(env, ApplyLowRank, "applyLowRank"));
  exports.Set("applyDense", Napi::Function::New(env, ApplyDense, "applyDense"));
  exports.Set("sgemm", Napi::Function::New(env, Sgemm, "sgemm"));
  exports.Set("baseline", Napi::Function::New(env, Baseline, "baseline"));
  exports.Set("getThreads", Napi::Function::New(env, GetThreads, "getThreads"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  return exports;
}

}  // namespace

NODE_API_MODULE(time_edit, Init)
