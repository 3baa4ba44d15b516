// RAII owners and status checks for the CUDA backend. Every CUDA runtime, cuBLAS and cuSOLVER call goes
// through one of the check functions, which turn a failure into time_edit::Error(Backend, "<call> failed: <why>").
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstddef>
#include <string>
#include <utility>

#include "time_edit/solver.hpp"

namespace time_edit::cuda {

[[noreturn]] void throwBackend(const char* call, const std::string& why);

inline void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    throwBackend(call, std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")");
  }
}
void check(cublasStatus_t status, const char* call);
void check(cusolverStatus_t status, const char* call);

// Checks the launch of the kernel just issued (bad configuration, missing device code for this GPU).
inline void checkLaunch(const char* kernel) { check(cudaGetLastError(), kernel); }

// Device memory (cudaMalloc, never managed memory). Grows on demand and keeps its capacity, so repeated
// solves of similar size allocate once.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes) { reserve(bytes); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }

  // Ensures capacity for `bytes`; contents are not preserved when it grows.
  void reserve(std::size_t bytes) {
    if (bytes <= bytes_) return;
    release();
    void* p = nullptr;
    check(cudaMalloc(&p, bytes), "cudaMalloc");
    ptr_ = p;
    bytes_ = bytes;
  }
  void release() noexcept {
    if (ptr_ != nullptr) cudaFree(ptr_);  // cudaFree in a destructor: nothing useful to do with a failure
    ptr_ = nullptr;
    bytes_ = 0;
  }
  template <typename T>
  T* as() const noexcept {
    return static_cast<T*>(ptr_);
  }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"); }
  // Lower numbers are higher priority (cudaDeviceGetStreamPriorityRange gives the device's range).
  explicit Stream(int priority) {
    check(cudaStreamCreateWithPriority(&s_, cudaStreamNonBlocking, priority), "cudaStreamCreateWithPriority");
  }
  ~Stream() {
    if (s_ != nullptr) cudaStreamDestroy(s_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const noexcept { return s_; }
  void sync() const { check(cudaStreamSynchronize(s_), "cudaStreamSynchronize"); }

 private:
  cudaStream_t s_ = nullptr;
};

class Event {
 public:
  Event() { check(cudaEventCreate(&e_), "cudaEventCreate"); }
  // Ordering-only event (fork/join between streams), no timing.
  struct OrderingOnly {};
  explicit Event(OrderingOnly) {
    check(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  }
  ~Event() {
    if (e_ != nullptr) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const noexcept { return e_; }
  void record(cudaStream_t s) { check(cudaEventRecord(e_, s), "cudaEventRecord"); }
  void sync() { check(cudaEventSynchronize(e_), "cudaEventSynchronize"); }
  // Milliseconds from `start` to this event (both recorded and complete).
  float since(const Event& start) const {
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, start.e_, e_), "cudaEventElapsedTime");
    return ms;
  }

 private:
  cudaEvent_t e_ = nullptr;
};

class BlasHandle {
 public:
  BlasHandle() { check(cublasCreate(&h_), "cublasCreate"); }
  ~BlasHandle() {
    if (h_ != nullptr) cublasDestroy(h_);
  }
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;
  cublasHandle_t get() const noexcept { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

class SolverHandle {
 public:
  SolverHandle() { check(cusolverDnCreate(&h_), "cusolverDnCreate"); }
  ~SolverHandle() {
    if (h_ != nullptr) cusolverDnDestroy(h_);
  }
  SolverHandle(const SolverHandle&) = delete;
  SolverHandle& operator=(const SolverHandle&) = delete;
  cusolverDnHandle_t get() const noexcept { return h_; }

 private:
  cusolverDnHandle_t h_ = nullptr;
};

// Makes `device` current for the lifetime of the guard and restores the previous one after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace time_edit::cuda
