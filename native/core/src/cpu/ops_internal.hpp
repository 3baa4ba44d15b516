// Shared between the CPU solver and the public CPU helpers (cpu_ops.cpp).
#pragma once

#include <cstdint>

#include "cpu/kernels.hpp"

namespace time_edit::cpu {

// out = X + (X·Aᵀ)·B, X m × d, A and B k × d; processed in row blocks (temporary ≤ kApplyBlockRows × k floats).
constexpr int64_t kApplyBlockRows = 4096;
void applyLowRankWith(const Kernels& kernels, int64_t m, int64_t d, int64_t k, const float* X, const float* A,
                      const float* B, float* out);

}  // namespace time_edit::cpu
