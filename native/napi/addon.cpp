// The Node-API addon time_edit.node: registers the exported functions and nothing else. Their code lives by
// concern (exports.hpp lists which file holds what); argument checks in args.cpp, the Promise worker in
// promise_worker.hpp. No math here, and no C++ exception crosses the N-API boundary.
#include <napi.h>

#include "exports.hpp"

namespace {

namespace napi = time_edit::napi;

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("backendInfo", Napi::Function::New(env, napi::BackendInfo, "backendInfo"));
  exports.Set("solve", Napi::Function::New(env, napi::Solve, "solve"));
  exports.Set("patchDense", Napi::Function::New(env, napi::PatchDense, "patchDense"));
  exports.Set("applyLowRank", Napi::Function::New(env, napi::ApplyLowRank, "applyLowRank"));
  exports.Set("applyDense", Napi::Function::New(env, napi::ApplyDense, "applyDense"));
  exports.Set("sgemm", Napi::Function::New(env, napi::Sgemm, "sgemm"));
  exports.Set("baseline", Napi::Function::New(env, napi::Baseline, "baseline"));
  exports.Set("getThreads", Napi::Function::New(env, napi::GetThreads, "getThreads"));
  exports.Set("setThreads", Napi::Function::New(env, napi::SetThreads, "setThreads"));
  return exports;
}

}  // namespace

NODE_API_MODULE(time_edit, Init)
