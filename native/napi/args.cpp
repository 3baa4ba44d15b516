// Argument conversion and checks of the Node-API binding (declared, with examples, in args.hpp). The messages
// are part of the addon's contract: the JS tests assert them.
#include "args.hpp"

#include <cmath>
#include <cstring>
#include <sstream>

#include "time_edit/solver.hpp"

namespace time_edit::napi {

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

Napi::Value arg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() ? info[i] : info.Env().Undefined();
}

Napi::Float32Array f32(Napi::Env env, const Napi::Value& v, const std::string& name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    typeError(env, name + " must be a Float32Array, got " + describe(v));
  return v.As<Napi::Float32Array>();
}

bool isAbsent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

int64_t integer(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t min, int64_t max) {
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

Napi::Float32Array outputArg(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t want) {
  Napi::Float32Array a = f32(env, v, name);
  if (static_cast<int64_t>(a.ElementLength()) != want)
    rangeError(env, name + " must have " + std::to_string(want) + " values, got " + std::to_string(a.ElementLength()));
  return a;
}

int64_t rowsOf(Napi::Env env, const Napi::Float32Array& a, const std::string& name, int64_t d) {
  const int64_t len = static_cast<int64_t>(a.ElementLength());
  if (len == 0) rangeError(env, name + " is empty: need at least one row of d = " + std::to_string(d) + " values");
  if (len % d != 0)
    rangeError(env, name + " has " + std::to_string(len) + " values, not a multiple of d = " + std::to_string(d));
  return len / d;
}

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

}  // namespace time_edit::napi
