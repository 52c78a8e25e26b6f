// 8-wide float SIMD for the CPU row kernels, written with GCC/Clang vector
// extensions so one source compiles to AVX2+FMA and to plain SSE2: hot
// functions are marked SGPO_CPU_CLONES and the loader picks the clone for the
// running CPU (no -mavx2 for the whole build, so the wheel runs anywhere).
//
// Why not std::exp: the row kernels spend most of their non-GEMM time on
// exp over [rows x V]; a vectorized Cephes-style exp is ~6x faster than libm
// here, with ~1 ulp error (max relative 8e-8 on [-87, 88]).
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SGPO_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SGPO_CPU_CLONES
#endif
#define SGPO_VINLINE inline __attribute__((always_inline))

namespace sgpo::cpu {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
constexpr int kLanes = 8;

SGPO_VINLINE v8f splat(float x) { return v8f{x, x, x, x, x, x, x, x}; }

// Lanes of two vectors picked by index (0-7: a, 8-15: b). Clang and GCC >= 12
// have __builtin_shufflevector; older GCC spells it __builtin_shuffle.
#if defined(__clang__) || __GNUC__ >= 12
#define SGPO_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SGPO_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, ::sgpo::cpu::v8i{__VA_ARGS__})
#endif

// exp(x) = 2^n * exp(r), |r| <= ln2 / 2; exact 0 below the float range so
// masked (-inf) logits carry no weight.
SGPO_VINLINE v8f vexp(v8f x) {
  const v8f lo = splat(-87.33654f), hi = splat(88.72283f);
  v8f xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const v8f n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round
  const v8f r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  v8f p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  const v8f res = p * __builtin_bit_cast(v8f, bits);
  return x < lo ? splat(0.0f) : res;
}

SGPO_VINLINE float hsum(v8f v) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}
SGPO_VINLINE float hmax(v8f v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// Loads and stores of 8 elements of a storage dtype, as fp32.
SGPO_VINLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
SGPO_VINLINE void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

SGPO_VINLINE v8f load8(const c10::BFloat16* p) {  // bf16 is the top half of fp32
  v8i v = {};
  for (int i = 0; i < kLanes; ++i) v[i] = int32_t(uint32_t(p[i].x) << 16);
  return __builtin_bit_cast(v8f, v);
}
SGPO_VINLINE void store8(c10::BFloat16* p, v8f v) {
  for (int i = 0; i < kLanes; ++i) p[i] = c10::BFloat16(v[i]);  // round to nearest even
}
SGPO_VINLINE v8f load8(const c10::Half* p) {
  v8f v = {};
  for (int i = 0; i < kLanes; ++i) v[i] = float(p[i]);
  return v;
}
SGPO_VINLINE void store8(c10::Half* p, v8f v) {
  for (int i = 0; i < kLanes; ++i) p[i] = c10::Half(v[i]);
}

// max of z[0..V) as fp32 (inlined into the callers' SIMD clones).
template <typename scalar_t>
SGPO_VINLINE float row_max(const scalar_t* z, int64_t V) {
  const int64_t Vv = V - V % kLanes;
  v8f vmax = splat(-INFINITY);
  for (int64_t j = 0; j < Vv; j += kLanes) {
    const v8f x = load8(z + j);
    vmax = x > vmax ? x : vmax;
  }
  float m = hmax(vmax);
  for (int64_t j = Vv; j < V; ++j) m = float(z[j]) > m ? float(z[j]) : m;
  return m;
}

}  // namespace sgpo::cpu
