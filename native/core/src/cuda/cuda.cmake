# The CUDA backend of time_edit_core. Included by the top-level CMakeLists.txt after it defines the
# static library target `time_edit_core`.
#
#   -DTIME_EDIT_CUDA=AUTO  (default) build it when nvcc and a CUDA toolkit with cuBLAS + cuSOLVER are found
#   -DTIME_EDIT_CUDA=ON    require it (configure fails with the reason otherwise)
#   -DTIME_EDIT_CUDA=OFF   CPU-only build
#   -DTIME_EDIT_CUDA_ARCHITECTURES="90-real;75-virtual"  machine code for Hopper (H100/H200) plus PTX that
#                           the driver compiles for any other GPU CUDA supports
#
# Sets TIME_EDIT_HAS_CUDA to ON when the backend is built (the caller compiles its stub otherwise).

set(TIME_EDIT_CUDA "AUTO" CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set_property(CACHE TIME_EDIT_CUDA PROPERTY STRINGS AUTO ON OFF)
set(TIME_EDIT_CUDA_ARCHITECTURES "90-real;75-virtual" CACHE STRING "CUDA architectures of the CUDA backend")

set(TIME_EDIT_HAS_CUDA OFF)
set(_time_edit_cuda_dir "${CMAKE_CURRENT_LIST_DIR}")
get_filename_component(_time_edit_root "${_time_edit_cuda_dir}/../../../.." ABSOLUTE)

if(TIME_EDIT_CUDA STREQUAL "OFF")
  message(STATUS "time-edit: CUDA backend disabled (TIME_EDIT_CUDA=OFF); CPU-only build")
else()
  set(_time_edit_cuda_missing "")
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    set(_time_edit_cuda_missing "no CUDA compiler (nvcc) found")
  else()
    find_package(CUDAToolkit QUIET)
    if(NOT CUDAToolkit_FOUND)
      set(_time_edit_cuda_missing "CUDAToolkit not found")
    elseif(NOT TARGET CUDA::cublas OR NOT TARGET CUDA::cusolver)
      set(_time_edit_cuda_missing "CUDA toolkit ${CUDAToolkit_VERSION} at ${CUDAToolkit_LIBRARY_DIR} has no cuBLAS/cuSOLVER libraries")
    else()
      # The host sources must compile and link against the headers and libraries found. A machine with two
      # CUDA installs (e.g. nvcc 13 in /usr/local, Debian's 11.8 cuBLAS headers in /usr/include) can pass the
      # checks above and still mix the two: then AUTO builds CPU-only instead of failing `npm install`.
      include(CheckCXXSourceCompiles)
      unset(TIME_EDIT_CUDA_HOST_LINKS CACHE)
      set(CMAKE_REQUIRED_LIBRARIES CUDA::cudart CUDA::cublas CUDA::cusolver)
      set(CMAKE_REQUIRED_QUIET ON)
      check_cxx_source_compiles([[
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
int main() {
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;
  cudaStream_t stream = nullptr;
  return cublasCreate(&blas) == CUBLAS_STATUS_SUCCESS && cusolverDnCreate(&solver) == CUSOLVER_STATUS_SUCCESS &&
         cudaStreamCreate(&stream) == cudaSuccess ? 0 : 1;
}]] TIME_EDIT_CUDA_HOST_LINKS)
      unset(CMAKE_REQUIRED_LIBRARIES)
      unset(CMAKE_REQUIRED_QUIET)
      if(NOT TIME_EDIT_CUDA_HOST_LINKS)
        set(_time_edit_cuda_missing "the CUDA ${CUDAToolkit_VERSION} runtime headers (${CUDAToolkit_INCLUDE_DIRS}) and the cuBLAS/cuSOLVER headers and libraries found do not compile and link together (two CUDA installs mixed? point CMAKE_CUDA_COMPILER and CUDAToolkit_ROOT at one toolkit; details in CMakeFiles/CMakeError.log)")
      endif()
    endif()
  endif()

  if(_time_edit_cuda_missing STREQUAL "")
    enable_language(CUDA)
    # Device code in its own library: time_edit_core's host compile flags (-Wall, ...) are not nvcc's.
    add_library(time_edit_cuda_kernels STATIC "${_time_edit_cuda_dir}/cuda_kernels.cu")
    target_include_directories(time_edit_cuda_kernels PRIVATE "${_time_edit_root}/native/core/include")
    set_target_properties(time_edit_cuda_kernels PROPERTIES
      CUDA_ARCHITECTURES "${TIME_EDIT_CUDA_ARCHITECTURES}"
      CUDA_RUNTIME_LIBRARY Shared
      CUDA_STANDARD 17
      POSITION_INDEPENDENT_CODE ON)
    target_compile_options(time_edit_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3>)
    target_link_libraries(time_edit_cuda_kernels PUBLIC CUDA::cudart)
    target_sources(time_edit_core PRIVATE
      "${_time_edit_cuda_dir}/cuda_device_solve.cpp"
      "${_time_edit_cuda_dir}/cuda_solver.cpp")
    target_link_libraries(time_edit_core PUBLIC time_edit_cuda_kernels CUDA::cudart CUDA::cublas CUDA::cusolver)
    target_compile_definitions(time_edit_core PUBLIC TIME_EDIT_HAS_CUDA=1)
    set(TIME_EDIT_HAS_CUDA ON)
    message(STATUS "time-edit: CUDA backend ON (CUDA ${CUDAToolkit_VERSION}, architectures ${TIME_EDIT_CUDA_ARCHITECTURES})")

    if(TIME_EDIT_BUILD_TESTS)
      enable_testing()
      add_executable(time_edit_cuda_test "${_time_edit_root}/native/tests/cuda_solver_test.cpp")
      target_include_directories(time_edit_cuda_test PRIVATE "${_time_edit_root}/native/core/include")
      target_link_libraries(time_edit_cuda_test PRIVATE time_edit_core)
      # time_edit_core links the CPU backend too: the test then also compares the two backends.
      target_compile_definitions(time_edit_cuda_test PRIVATE TIME_EDIT_TEST_WITH_CPU=1)
      add_test(NAME cuda_solver COMMAND time_edit_cuda_test)
      # 77: no CUDA device visible (a CI machine that compiles the backend but has no GPU).
      set_tests_properties(cuda_solver PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77)

      add_executable(time_edit_cuda_bench "${_time_edit_root}/native/bench/cuda_bench.cpp")
      target_include_directories(time_edit_cuda_bench PRIVATE
        "${_time_edit_root}/native/core/include" "${_time_edit_cuda_dir}")
      target_link_libraries(time_edit_cuda_bench PRIVATE time_edit_core CUDA::cudart CUDA::cublas CUDA::cusolver)
    endif()
  elseif(TIME_EDIT_CUDA STREQUAL "ON")
    message(FATAL_ERROR "time-edit: TIME_EDIT_CUDA=ON but the CUDA backend cannot be built: ${_time_edit_cuda_missing}")
  else()
    message(STATUS "time-edit: CUDA backend not built (${_time_edit_cuda_missing}); CPU-only build")
  endif()
endif()
