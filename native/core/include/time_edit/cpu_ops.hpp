// CPU-only helpers around the solver: applying a solved edit to arbitrary rows (weights or text embeddings),
// composing edits, BLAS thread control, and the paper-port baseline used by `time-edit bench solve`.
// Same conventions as solver.hpp: row-major float32, caller-owned buffers, errors as time_edit::Error.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "time_edit/solver.hpp"

namespace time_edit::cpu {

// Which CPU kernels to use: the best this build has (OpenBLAS when found) or the portable fallback.
enum class Kernel { Best, Portable };

// A CPU solver on the given kernels (makeCpuSolver() == makeSolver(Kernel::Best)).
std::unique_ptr<Solver> makeSolver(Kernel kernel);
// Name of the portable CPU backend, e.g. "cpu-portable (no BLAS: slower)".
std::string portableBackendName();
// True when the build found BLAS/LAPACK (then Kernel::Best and Kernel::Portable differ).
bool hasBlas();

// out = X + (X·Aᵀ)·B for X m × d and A, B k × d; out must not overlap X, A or B.
//   weights:    W·M  = W + (W·Dᵀ)·G   (A = D, B = G)
//   embeddings: E·Mᵀ = E + (E·Gᵀ)·D   (A = G, B = D)
// Works in row blocks so the temporary is at most blockRows × k, whatever m is.
void applyLowRank(int64_t m, int64_t d, int64_t k, const float* X, const float* A, const float* B, float* out,
                  Kernel kernel = Kernel::Best);

// out = X·M (transposeM = false) or X·Mᵀ, for X m × d and M d × d; out must not overlap X or M.
void applyDense(int64_t m, int64_t d, const float* X, const float* M, bool transposeM, float* out,
                Kernel kernel = Kernel::Best);

// Plain SGEMM C (m × n) = A (m × k)·B (k × n): the benchmark's floor.
void sgemm(int64_t m, int64_t n, int64_t k, const float* A, const float* B, float* C, Kernel kernel = Kernel::Best);

// The paper's per-layer algorithm, ported as is (the benchmark's baseline): for every layer l with weights
// W_l (layerRows[l] × d, stacked in `weights`), W'_l = (λW_l + Σᵢ v*ᵢcᵢᵀ)(λI + Σᵢ cᵢcᵢᵀ)⁻¹ with v*ᵢ = W_l c*ᵢ, the Gram
// matrix rebuilt and inverted explicitly in float32 for every layer. Writes the stacked W' to `out`.
void baselinePerLayer(int64_t d, const EditRows& edit, const float* weights, const int64_t* layerRows, int64_t layers,
                      float* out, Kernel kernel = Kernel::Best);

// BLAS threads of the given kernels (OpenBLAS: openblas_{get,set}_num_threads; portable: its own std::threads).
int threads(Kernel kernel = Kernel::Best);
void setThreads(int n, Kernel kernel = Kernel::Best);

}  // namespace time_edit::cpu
