// Sampling filters shared by the CPU and CUDA `sample` kernels.
//
// Both kernels work on the unnormalized weights e_v = exp(x_v - max x) with
// x = logits * (1 / temperature), so max e = 1 and p_v = e_v / sum e. Every filter
// of docs/design.md section 3 keeps the tokens whose weight is at least a
// threshold, so the kept set is {v : e_v >= cut} with cut the largest of:
//   top_k: the k-th largest e (ties at the boundary are all kept);
//   top_p: the smallest e of the shortest descending prefix whose mass reaches
//          top_p * (mass kept by top_k) (again, ties kept);
//   min_p: min_p * max e (max e is 1 up to the rounding of exp(x - max x)).
// The cut never exceeds max e, so the most likely token is always kept.
// The token is then drawn by inverse CDF in vocabulary order: the first v
// whose running kept mass exceeds u * (kept mass), u ~ U[0, 1). One uniform
// per row makes the op deterministic given the generator, and lets tests
// compare the kernel with the reference token by token.
#pragma once
#include "macros.h"

namespace sgpo {

template <typename T>
struct SampleParams {
  T temperature;  // 0 = greedy
  int64_t top_k;  // 0 = off
  T top_p;        // 1 = off
  T min_p;        // 0 = off
};

// Positive floats compare like their bit patterns: the CUDA kernel bisects
// on these 32-bit keys to find exact order statistics without sorting.
SGPO_HD uint32_t weight_key(float e) {
  union { float f; uint32_t u; } c;
  c.f = e;
  return c.u;
}
SGPO_HD float key_weight(uint32_t k) {
  union { float f; uint32_t u; } c;
  c.u = k;
  return c.f;
}

template <typename T>
SGPO_HD bool top_k_active(const SampleParams<T>& p, int64_t vocab) {
  return p.top_k > 0 && p.top_k < vocab;
}
template <typename T>
SGPO_HD bool top_p_active(const SampleParams<T>& p) {
  return p.top_p < T(1);
}
// Cut of the min-p filter on the e scale: p_v >= min_p * max p <=> e_v >= min_p * max e.
template <typename T>
SGPO_HD T min_p_cut(const SampleParams<T>& p, T e_max) {
  return p.min_p * e_max;
}
template <typename T>
SGPO_HD T max_(T a, T b) {
  return a > b ? a : b;
}

}  // namespace sgpo
