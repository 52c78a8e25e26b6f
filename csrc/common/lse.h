// Online log-sum-exp: the one reduction every softmax in this extension goes
// through (the LM-head rows on CPU and CUDA, decode attention on CPU and CUDA).
//
// Two primitives, and the state built on them:
//   fold_max(m, x)       folding x into a running max m: the factor that
//                        rescales everything accumulated so far, and x's weight
//   merge_max(ma, mb)    joining two running maxima: each side's factor
//   OnlineLSE            a row of logits x[0..V) as (m, s, sx) with
//                          m = max x,  s = sum exp(x - m),  sx = sum exp(x - m) x
//                        so lse = m + log(s) and entropy = lse - sx / s.
// Decode attention keeps its own accumulators (the softmax-weighted values
// [D]) but rescales them with the same two primitives, so its softmax is this
// one. States of disjoint slices merge exactly (up to rounding), which lets a
// CUDA warp or block, a SIMD lane or a vocabulary tile each fold its own slice.
//
// A kernel that finds the max first (the CPU SIMD rows) starts from that max:
// every fold then takes the `x <= m` branch (rescale 1, weight exp(x - m)),
// which is the formula its vector lanes run; their states share m, so the
// lanes merge by plain sums.
#pragma once
#include "macros.h"

namespace sgpo {

template <typename T>
struct Rescale {
  T old;  // multiplies what was accumulated before
  T add;  // multiplies the new element (fold) or the other state (merge)
};

// Folds x into the running max m (updated in place). Callers skip
// x == -inf (weight 0), so -inf - -inf is never formed: a finite x against
// m == -inf takes the first branch, exp(-inf) = 0.
template <typename T>
SGPO_HD Rescale<T> fold_max(T& m, T x) {
  if (x > m) {
    const T c = exp_(m - x);  // 0 when m is still -inf
    m = x;
    return {c, T(1)};
  }
  return {T(1), exp_(x - m)};
}

// Joins running maxima ma (updated in place to the joint max) and mb. An
// empty side (-inf) gets factor 0 and leaves the other unscaled.
template <typename T>
SGPO_HD Rescale<T> merge_max(T& ma, T mb) {
  if (mb == neg_inf<T>()) return {T(1), T(0)};
  if (ma == neg_inf<T>()) {
    ma = mb;
    return {T(0), T(1)};
  }
  const T M = ma > mb ? ma : mb;
  const Rescale<T> r{exp_(ma - M), exp_(mb - M)};
  ma = M;
  return r;
}

template <typename T>
struct OnlineLSE {
  T m = neg_inf<T>();
  T s = T(0);
  T sx = T(0);

  SGPO_HD void add(T x) {
    if (x == neg_inf<T>()) return;  // a masked logit contributes nothing
    const Rescale<T> r = fold_max(m, x);
    s = s * r.old + r.add;
    sx = sx * r.old + r.add * x;
  }

  SGPO_HD void merge(const OnlineLSE& o) {
    const Rescale<T> r = merge_max(m, o.m);
    s = s * r.old + o.s * r.add;
    sx = sx * r.old + o.sx * r.add;
  }

  SGPO_HD T lse() const { return m + log_(s); }
  // Entropy of softmax(x): -sum p log p = lse - E_p[x].
  SGPO_HD T entropy() const { return lse() - sx / s; }
};

}  // namespace sgpo
