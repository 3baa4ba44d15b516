// The functions the addon exports, one source file per concern (addon.cpp only registers them):
//   solve.cpp   backendInfo, solve, patchDense   (the Solver backends: CPU, portable CPU, CUDA)
//   apply.cpp   applyLowRank, applyDense         (an edit applied to embedding rows, CPU)
//   bench.cpp   sgemm, baseline, getThreads, setThreads   (the benchmark's floors and CPU thread control)
// Each checks its arguments synchronously (TypeError / RangeError naming the argument) and returns a Promise
// (promise_worker.hpp) except backendInfo and the thread functions, which return at once.
#pragma once

#include <napi.h>

namespace time_edit::napi {

Napi::Value BackendInfo(const Napi::CallbackInfo& info);
Napi::Value Solve(const Napi::CallbackInfo& info);
Napi::Value PatchDense(const Napi::CallbackInfo& info);

Napi::Value ApplyLowRank(const Napi::CallbackInfo& info);
Napi::Value ApplyDense(const Napi::CallbackInfo& info);

Napi::Value Sgemm(const Napi::CallbackInfo& info);
Napi::Value Baseline(const Napi::CallbackInfo& info);
Napi::Value GetThreads(const Napi::CallbackInfo& info);
Napi::Value SetThreads(const Napi::CallbackInfo& info);

}  // namespace time_edit::napi
