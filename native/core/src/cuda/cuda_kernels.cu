#include "cuda_kernels.hpp"

#include <algorithm>

#include "substitution_tile.hpp"

namespace time_edit::cuda {
namespace {

constexpr int kThreads = 256;

// A failed launch (no device code for this GPU, bad configuration) becomes Error(Backend) naming the kernel.
void checkLaunch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) throwLaunchError(kernel, status);
}

// Grid sized to cover the work with a cap; kernels loop grid-stride over the rest.
unsigned gridFor(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 8)));
}

__global__ void prepareKernel(const float* __restrict__ source, float* __restrict__ dest, double* __restrict__ sourceD,
                              double* __restrict__ diffD, bool writeDiff, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double c = source[i];
    const double diff = static_cast<double>(dest[i]) - c;
    sourceD[i] = c;
    if (diffD != nullptr) diffD[i] = diff;
    if (writeDiff) dest[i] = static_cast<float>(diff);
  }
}

__global__ void addDiagonalKernel(double* a, int64_t s, int64_t count, const double* __restrict__ lambda) {
  const int64_t total = s * count;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = t / s;
    const int64_t i = t - b * s;
    a[b * s * s + i * (s + 1)] += lambda[b];
  }
}

__global__ void checkDiagonalKernel(const double* __restrict__ a, int64_t s, int64_t count, int* flags) {
  const int64_t total = s * count;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = t / s;
    const int64_t i = t - b * s;
    if (!(a[b * s * s + i * (s + 1)] > 0.0)) atomicMin(flags + b, static_cast<int>(i));
  }
}

__global__ void toFloatKernel(const double* __restrict__ src, float* __restrict__ dst, int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = static_cast<float>(src[i]);
  }
}

__global__ void addIdentityToFloatKernel(const double* __restrict__ src, float* __restrict__ dst, int64_t d,
                                         int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t within = i % (d * d);
    const bool diagonal = (within % (d + 1)) == 0;
    dst[i] = static_cast<float>(src[i] + (diagonal ? 1.0 : 0.0));
  }
}

__global__ void fillBlockPointersKernel(double** out, double* gram, double* x, int64_t s, int64_t d, int64_t xStride,
                                        int64_t nb, int64_t nblocks, int64_t count) {
  const int64_t total = nblocks * count;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = t / count;
    const int64_t b = t - j * count;
    const int64_t j0 = j * nb;
    const int64_t j1 = j0 + nb < s ? j0 + nb : s;
    double* g = gram + b * s * s;
    out[(0 * nblocks + j) * count + b] = g + j0 * (s + 1);
    out[(1 * nblocks + j) * count + b] = g + j1 + j0 * s;
    out[(2 * nblocks + j) * count + b] = x + b * xStride + j0 * d;
  }
}

// The execution interface of substitution_tile.hpp on the GPU: one CUDA thread block.
struct BlockExec {
  __device__ int thread() const { return static_cast<int>(threadIdx.x); }
  __device__ int threads() const { return static_cast<int>(blockDim.x); }
  __device__ void sync() const { __syncthreads(); }
  __device__ double shuffle(double v, int lane) const { return __shfl_sync(0xffffffffu, v, lane); }
};

constexpr int kSubstitutionThreads = 256;

template <int Columns>
__global__ void __launch_bounds__(kSubstitutionThreads)
    choleskySubstitutionKernel(const double* __restrict__ factors, double* x, int n, int d, int64_t firstEdit) {
  extern __shared__ double shared[];
  tile::substituteBlock<Columns>(BlockExec{}, static_cast<int>(blockIdx.x), firstEdit + blockIdx.y, factors, x, n, d,
                                 shared);
}

template <int Columns>
void launchSubstitution(const double* factors, double* x, int64_t n, int64_t d, int64_t count, cudaStream_t stream) {
  const unsigned tiles = static_cast<unsigned>((d + Columns - 1) / Columns);
  const std::size_t shared = tile::sharedBytes<Columns>(static_cast<int>(n));
  constexpr int64_t kMaxGridY = 65535;
  for (int64_t first = 0; first < count; first += kMaxGridY) {
    const unsigned edits = static_cast<unsigned>(std::min(kMaxGridY, count - first));
    choleskySubstitutionKernel<Columns><<<dim3(tiles, edits), kSubstitutionThreads, shared, stream>>>(
        factors, x, static_cast<int>(n), static_cast<int>(d), first);
    checkLaunch("choleskySubstitutionKernel launch");
  }
}

}  // namespace

void launchCholeskySubstitution(const double* factors, double* x, int64_t n, int64_t d, int64_t count, int columns,
                                cudaStream_t stream) {
  if (n < 1 || n > tile::kMaxRows || d < 1 || d > 0x7fffffff || (columns != 4 && columns != 8)) {
    throwLaunchError("choleskySubstitutionKernel (n must be 1..512, columns 4 or 8)", cudaErrorInvalidValue);
  }
  if (columns == 4) launchSubstitution<4>(factors, x, n, d, count, stream);
  else launchSubstitution<8>(factors, x, n, d, count, stream);
}

void launchPrepare(const float* source, float* dest, double* sourceD, double* diffD, bool writeDiff, int64_t total,
                   cudaStream_t stream) {
  if (total <= 0) return;
  prepareKernel<<<gridFor(total), kThreads, 0, stream>>>(source, dest, sourceD, diffD, writeDiff, total);
  checkLaunch("prepareKernel launch");
}

void launchAddDiagonal(double* a, int64_t s, int64_t count, const double* lambda, cudaStream_t stream) {
  if (s * count <= 0) return;
  addDiagonalKernel<<<gridFor(s * count), kThreads, 0, stream>>>(a, s, count, lambda);
  checkLaunch("addDiagonalKernel launch");
}

void launchCheckDiagonal(const double* a, int64_t s, int64_t count, int* flags, cudaStream_t stream) {
  if (s * count <= 0) return;
  checkDiagonalKernel<<<gridFor(s * count), kThreads, 0, stream>>>(a, s, count, flags);
  checkLaunch("checkDiagonalKernel launch");
}

void launchToFloat(const double* src, float* dst, int64_t total, cudaStream_t stream) {
  if (total <= 0) return;
  toFloatKernel<<<gridFor(total), kThreads, 0, stream>>>(src, dst, total);
  checkLaunch("toFloatKernel launch");
}

void launchAddIdentityToFloat(const double* src, float* dst, int64_t d, int64_t count, cudaStream_t stream) {
  const int64_t total = d * d * count;
  if (total <= 0) return;
  addIdentityToFloatKernel<<<gridFor(total), kThreads, 0, stream>>>(src, dst, d, total);
  checkLaunch("addIdentityToFloatKernel launch");
}

void launchFillBlockPointers(double** out, double* gram, double* x, int64_t s, int64_t d, int64_t xStride, int64_t nb,
                             int64_t nblocks, int64_t count, cudaStream_t stream) {
  const int64_t total = nblocks * count;
  if (total <= 0) return;
  fillBlockPointersKernel<<<gridFor(total), kThreads, 0, stream>>>(out, gram, x, s, d, xStride, nb, nblocks, count);
  checkLaunch("fillBlockPointersKernel launch");
}

}  // namespace time_edit::cuda
