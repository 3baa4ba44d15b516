// The Promise-returning async worker of the Node-API binding: the work runs on a libuv thread and settles a
// Promise on the JS thread. No C++ exception crosses the N-API boundary: Execute catches everything and the
// Promise is rejected with a RangeError (time_edit::Error of kind InvalidArgument) or an Error (anything else).
// All native work is serialised by one mutex, workMutex(): BLAS/cuBLAS are multi-threaded themselves, and each
// backend object is shared.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "time_edit/solver.hpp"

namespace time_edit::napi {

// The one lock held by every worker while it runs, and by the thread-count getters and setters.
inline std::mutex& workMutex() {
  static std::mutex mutex;
  return mutex;
}

// An AsyncWorker that settles a Promise: subclasses do the work in Run() (under workMutex()) and build the
// resolved value in Result() on the JS thread.
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
    std::lock_guard<std::mutex> lock(workMutex());
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
      Napi::Error err =
          invalidArgument_ ? Napi::Error(Napi::RangeError::New(env, message_)) : Napi::Error::New(env, message_);
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

// Queues `fn` on `worker` and returns its Promise (resolving to fn's string, or undefined when it is empty).
// The caller owns the worker while it checks the arguments, so a failed check (a thrown TypeError/RangeError)
// frees it; it is handed to N-API only once everything checked out:
//   auto worker = std::make_unique<FnWorker>(env);
//   worker->Keep(out);                       // every typed array the closure reads or writes
//   return Start(std::move(worker), [=] { fill(op); return std::string(); });
inline Napi::Value Start(std::unique_ptr<FnWorker> worker, std::function<std::string()> fn) {
  worker->SetFn(std::move(fn));
  FnWorker* w = worker.release();
  return w->Queue();
}

}  // namespace time_edit::napi
