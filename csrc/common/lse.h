// Online log-sum-exp, the one reduction every op here is built on.
//
// A row of logits x[0..V) is folded into (m, s, sx) with
//   m  = max x,   s = sum exp(x - m),   sx = sum exp(x - m) * x
// so that  lse = m + log(s)  and  entropy = lse - sx / s.
// States of disjoint slices merge exactly (up to rounding), which is what lets
// a CUDA block, a SIMD lane or a vocabulary tile each fold its own slice.
#pragma once
#include "macros.h"

namespace sgpo {

template <typename T>
struct OnlineLSE {
  T m = neg_inf<T>();
  T s = T(0);
  T sx = T(0);

  SGPO_HD void add(T x) {
    if (x == neg_inf<T>()) return;  // a masked logit contributes nothing
    if (x > m) {
      const T c = exp_(m - x);  // 0 when m is still -inf
      s = s * c + T(1);
      sx = sx * c + x;
      m = x;
    } else {
      const T e = exp_(x - m);
      s += e;
      sx += e * x;
    }
  }

  SGPO_HD void merge(const OnlineLSE& o) {
    if (o.m == neg_inf<T>()) return;
    if (m == neg_inf<T>()) { *this = o; return; }
    const T M = m > o.m ? m : o.m;
    const T a = exp_(m - M), b = exp_(o.m - M);
    s = s * a + o.s * b;
    sx = sx * a + o.sx * b;
    m = M;
  }

  SGPO_HD T lse() const { return m + log_(s); }
  // Entropy of softmax(x): -sum p log p = lse - E_p[x].
  SGPO_HD T entropy() const { return lse() - sx / s; }
};

}  // namespace sgpo
