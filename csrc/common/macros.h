// Shared by the CPU drivers (g++) and the CUDA kernels (nvcc).
//
// Everything in csrc/common/ is torch-free, header-only and marked SGPO_HD so
// the same formula runs in both places: the CPU tests then exercise the exact
// arithmetic the GPU runs, and the C++ unit tests (tests/cpp) can check it
// without linking torch.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SGPO_HD __host__ __device__ __forceinline__
#define SGPO_DEVICE_CODE 1
#else
#define SGPO_HD inline
#endif

#include <cmath>
#include <cstdint>

namespace sgpo {

// Accumulation type: fp32 for every input dtype except fp64 (kept for the
// float64 reference checks of the tests).
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

template <typename T> SGPO_HD T neg_inf() { return -INFINITY; }

// exp_, log_, sqrt_: the CUDA overloads in device code, std:: on the host.
#ifdef SGPO_DEVICE_CODE
#define SGPO_MATH_FN(name) \
  template <typename T>    \
  SGPO_HD T name##_(T x) { \
    return name(x);        \
  }
#else
#define SGPO_MATH_FN(name) \
  template <typename T>    \
  SGPO_HD T name##_(T x) { \
    return std::name(x);   \
  }
#endif
SGPO_MATH_FN(exp)
SGPO_MATH_FN(log)
SGPO_MATH_FN(sqrt)
#undef SGPO_MATH_FN

}  // namespace sgpo
