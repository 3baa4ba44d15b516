// The TIME closed-form solve, shared by every backend (CPU, CUDA) and by the Node binding.
//
// For one edit with n aligned rows (C: source token embeddings, C*: destination ones, both n × d) and λ > 0,
// every cross-attention projection W (out × d) becomes W' = W · M with one shared d × d matrix
//
//     M = (λI + C*ᵀC)(λI + CᵀC)⁻¹ = I + Dᵀ G,   D = C* − C,   G = S⁻¹ C = C (λI + CᵀC)⁻¹,   S = λI + C Cᵀ.
//
// The low-rank form is the pair (D, G), both n × d: W·M = W + (W Dᵀ) G and E·Mᵀ = E + (E Gᵀ) D.
// Every backend accumulates the Gram matrix and factors it (Cholesky, never an explicit inverse) in float64,
// on the n × n side when n ≤ d and on the d × d side otherwise, and emits float32.
//
// All matrices are dense, row-major, float32 unless stated. The caller owns every buffer; backends write
// every element of each output they are given and nothing else. Errors are thrown as time_edit::Error
// (a std::runtime_error); the Node binding catches them, so no exception crosses the N-API boundary.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace time_edit {

// Thrown for bad arguments (message names the argument and what is wrong) and for backend failures
// (message names the failing library call).
class Error : public std::runtime_error {
 public:
  enum class Kind { InvalidArgument, Backend };
  Error(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

// One edit: n rows of source and destination embeddings of width d (d is given per call).
struct EditRows {
  const float* source = nullptr;       // C,  n × d
  const float* destination = nullptr;  // C*, n × d
  int64_t rows = 0;                    // n ≥ 1
  double lambda = 0.1;                 // λ > 0, finite
};

// Where one edit's results go; a null pointer means "not wanted".
struct EditOutputs {
  float* lowRankD = nullptr;  // n × d: D = C* − C
  float* lowRankG = nullptr;  // n × d: G = S⁻¹ C
  float* dense = nullptr;     // d × d: M
};

// Stacked projection weights of all layers: R × d (R = Σ outᵢ; each row is one output unit, PyTorch layout).
struct WeightsPatch {
  const float* weights = nullptr;   // W, R × d, shared by every edit of the batch
  int64_t rows = 0;                 // R ≥ 1
  float* const* patched = nullptr;  // patched[b]: R × d output for edit b (W' = W · M_b); may alias nothing else
};

// Validates a batch before any work: pointers present, n ≥ 1, d ≥ 1, λ finite and > 0, every input value finite.
// Throws Error(InvalidArgument) naming the edit index and the problem. Backends call it first.
void validateEdits(int64_t d, const EditRows* edits, int64_t count);

class Solver {
 public:
  virtual ~Solver() = default;

  // Short backend name for users and benchmarks, e.g. "cpu-openblas", "cpu-portable", "cuda:NVIDIA H200".
  virtual std::string name() const = 0;

  // Solves `count` independent edits of width d. outputs[b] receives what it asks for (any subset of D, G, M).
  // If patch is non-null, also writes patch->patched[b] = W · M_b for every edit b (one GEMM per edit).
  virtual void solve(int64_t d, const EditRows* edits, int64_t count, const EditOutputs* outputs,
                     const WeightsPatch* patch) = 0;

  // W' = W · M for given dense M's (d × d each, e.g. loaded from a file or composed): patched[b] = W · M[b].
  virtual void patchWithDense(int64_t d, const float* const* dense, int64_t count, const float* weights, int64_t rows,
                              float* const* patched) = 0;
};

// The CPU backend: BLAS/LAPACK when the build found them, else a portable (slower) implementation.
std::unique_ptr<Solver> makeCpuSolver();
// "cpu-openblas" style name of the CPU backend this build has, without constructing it.
std::string cpuBackendName();

// The CUDA backend; throws Error(Backend) when the build has no CUDA or no device is present.
std::unique_ptr<Solver> makeCudaSolver(int device = 0);
// True when this build includes the CUDA backend (whether or not a device is present).
bool cudaBuilt();
// Number of CUDA devices visible (0 when not built or none present); never throws.
int cudaDeviceCount();

}  // namespace time_edit
