# node-gyp build of the same addon as CMakeLists.txt (CPU backend only): `npx node-gyp rebuild` writes
# build/Release/time_edit.node. OpenBLAS + LAPACKE via pkg-config when present, else the portable kernels.
{
  "variables": {
    "time_edit_blas%": "<!(pkg-config --exists openblas lapacke 2>/dev/null && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "time_edit",
      "sources": [
        "native/napi/addon.cpp",
        "native/napi/args.cpp",
        "native/napi/solve.cpp",
        "native/napi/apply.cpp",
        "native/napi/bench.cpp",
        "native/core/src/validate.cpp",
        "native/core/src/cuda_stub.cpp",
        "native/core/src/cpu/kernels_portable.cpp",
        "native/core/src/cpu/cpu_solver.cpp",
        "native/core/src/cpu/cpu_ops.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/core/include",
        "native/core/src"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
      },
      "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1 } },
      "conditions": [
        ["time_edit_blas==1", {
          "sources": ["native/core/src/cpu/kernels_blas.cpp"],
          "defines": ["TIME_EDIT_HAS_BLAS=1"],
          "cflags_cc": ["<!@(pkg-config --cflags openblas lapacke)"],
          "libraries": ["<!@(pkg-config --libs openblas lapacke)"]
        }]
      ]
    }
  ]
}
