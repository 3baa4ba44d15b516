// Conversion and checking of the JS arguments of the exported functions. Every check throws a Napi::TypeError
// (wrong type) or Napi::RangeError (wrong value, length or shape) whose message names the argument, before any
// work is queued; checkFinite is the exception: it runs inside the worker and throws time_edit::Error, which the
// worker turns into a rejected Promise (see promise_worker.hpp).
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "time_edit/cpu_ops.hpp"

namespace time_edit::napi {

// The `backend` argument: 'cpu', 'cpu-portable' or 'cuda'. The values index the solver slots of solve.cpp.
enum class Backend { Cpu = 0, CpuPortable = 1, Cuda = 2 };

// How a value reads in a message: "undefined", "a Float64Array", "a string", ...
std::string describe(const Napi::Value& v);
// A number for a message, with the stream's default formatting (6 significant digits): "0.1", "-1e-12", "inf".
std::string num(double x);

[[noreturn]] void typeError(Napi::Env env, const std::string& msg);
[[noreturn]] void rangeError(Napi::Env env, const std::string& msg);

// The i-th argument, or undefined when the call passed fewer.
Napi::Value arg(const Napi::CallbackInfo& info, size_t i);
// True for undefined and null (an optional argument that was not given).
bool isAbsent(const Napi::Value& v);

// A Float32Array, else TypeError "<name> must be a Float32Array, got ...".
Napi::Float32Array f32(Napi::Env env, const Napi::Value& v, const std::string& name);
// An integral number in [min, max], e.g. integer(env, arg(info, 1), "d", 1, 1 << 20).
int64_t integer(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t min, int64_t max = 1LL << 40);
// A JS array (its elements are checked by the caller).
Napi::Array array(Napi::Env env, const Napi::Value& v, const std::string& name);

Backend backendArg(Napi::Env env, const Napi::Value& v);
// A backend argument for the CPU-only operations: 'cpu' or 'cpu-portable' (RangeError for 'cuda').
cpu::Kernel kernelArg(Napi::Env env, const Napi::Value& v);

// An output Float32Array of exactly `want` values, e.g. outputArg(env, arg(info, 5), "out", m * d).
Napi::Float32Array outputArg(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t want);
// The row count of a non-empty rows × d input whose length is a multiple of d.
int64_t rowsOf(Napi::Env env, const Napi::Float32Array& a, const std::string& name, int64_t d);

// Byte ranges of inputs and outputs, so that an output never aliases an input or another output.
struct Span {
  const char* begin;
  const char* end;
  std::string name;
  bool output;
};
Span span(const Napi::Float32Array& a, const std::string& name, bool output);
// RangeError "<output> shares memory with <other>: ..." for the first overlapping pair that involves an output.
// Example: checkNoOverlap(env, {span(x, "rows", false), span(out, "out", true)});
void checkNoOverlap(Napi::Env env, const std::vector<Span>& spans);

// Throws time_edit::Error(InvalidArgument) naming the first non-finite value of a rows × d matrix by row and
// column. Runs in the worker (it reads every value), e.g. checkFinite(weights, rows * d, d, "weights").
void checkFinite(const float* data, int64_t count, int64_t d, const std::string& name);

}  // namespace time_edit::napi
