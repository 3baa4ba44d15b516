// Element-wise device kernels of the CUDA backend (the matrix work itself is cuBLAS/cuSOLVER).
// Each launcher checks its launch and throws time_edit::Error(Backend) naming the kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace time_edit::cuda {

// Throws Error(Backend, "<kernel> failed: <status>"); defined with the host code so that this header and the
// .cu file need no cuBLAS/cuSOLVER headers.
[[noreturn]] void throwLaunchError(const char* kernel, cudaError_t status);

// For every element i < total: sourceD[i] = source[i]; if diffD: diffD[i] = dest[i] - source[i] (float64);
// if writeDiff: dest[i] = float(dest[i] - source[i]) (so dest then holds D = C* - C, correctly rounded).
void launchPrepare(const float* source, float* dest, double* sourceD, double* diffD, bool writeDiff, int64_t total,
                   cudaStream_t stream);

// a[b][i][i] += lambda[b] for the `count` s x s matrices stored back to back.
void launchAddDiagonal(double* a, int64_t s, int64_t count, const double* lambda, cudaStream_t stream);

// For each of the `count` s x s factors: flags[b] = min(flags[b], i) over the diagonal entries i that are not
// > 0 (zero, negative or NaN). Callers fill flags with 0x7f bytes first (0x7f7f7f7f = "none"). Catches a zero
// pivot that a batched factorization may leave unreported.
void launchCheckDiagonal(const double* a, int64_t s, int64_t count, int* flags, cudaStream_t stream);

// For each of the `count` edits b: x_b := x_b L_b⁻ᵀ L_b⁻¹ (x_b: d × n column-major at x + b·n·d; L_b: the
// n × n lower Cholesky factor at factors + b·n·n), i.e. G = S⁻¹C, in one launch (substitution_tile.hpp).
// Requires 1 ≤ n ≤ tile::kMaxRows; `columns` (4 or 8) is how many columns of X one thread block solves.
void launchCholeskySubstitution(const double* factors, double* x, int64_t n, int64_t d, int64_t count, int columns,
                                cudaStream_t stream);

// dst[i] = float(src[i]) for i < total.
void launchToFloat(const double* src, float* dst, int64_t total, cudaStream_t stream);

// dst[b] = float(src[b] + I) for `count` d x d matrices.
void launchAddIdentityToFloat(const double* src, float* dst, int64_t d, int64_t count, cudaStream_t stream);

// Pointer arrays for the batched (pointer-array) cuBLAS/cuSOLVER calls of a blocked factorization:
// out[(0*nblocks + j)*count + b] = gram + b*s*s + j0*(s+1)            (diagonal block j of edit b)
// out[(1*nblocks + j)*count + b] = gram + b*s*s + j1 + j0*s            (panel below diagonal block j)
// out[(2*nblocks + j)*count + b] = x + b*xStride + j0*d                (column block j of X, d x n col-major)
// with j0 = j*nb, j1 = min(j0 + nb, s).
void launchFillBlockPointers(double** out, double* gram, double* x, int64_t s, int64_t d, int64_t xStride, int64_t nb,
                             int64_t nblocks, int64_t count, cudaStream_t stream);

}  // namespace time_edit::cuda
