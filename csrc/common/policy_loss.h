// The per-token math of the clipped-ratio policy loss (docs/design.md section 3).
//
// For one completion token with log-prob logp under the current policy:
//   l1 = min(ratio, delta) * A         (delta optional: two-sided clipping)
//   l2 = clamp(ratio, 1 - eps_low, 1 + eps_high) * A
//   per_token = -min(l1, l2)  [+ beta * k3(ref, logp)]
// and its derivative with respect to logp, which is all the LM-head backward
// needs: d logits = dloss/dlogp * (onehot(target) - softmax) / temperature.
//
// Subgradients follow torch autograd exactly (the reference is the spec):
// clamp passes the gradient on the closed interval, and min() splits it
// evenly when l1 == l2.
#pragma once
#include "macros.h"

namespace sgpo {

template <typename T>
struct ClipParams {
  T eps_low;
  T eps_high;
  T delta;         // upper clamp of ratio inside l1, only if has_delta
  bool has_delta;
};

template <typename T>
struct Surrogate {
  T loss;          // -min(l1, l2)
  T dloss_dratio;
  bool clip_low;   // ratio < 1 - eps_low and A < 0
  bool clip_high;  // ratio > 1 + eps_high and A > 0
};

template <typename T>
SGPO_HD Surrogate<T> clipped_surrogate(T ratio, T adv, const ClipParams<T>& p) {
  const bool over_delta = p.has_delta && ratio > p.delta;
  const T r1 = over_delta ? p.delta : ratio;
  const T d1 = over_delta ? T(0) : T(1);
  const T lo = T(1) - p.eps_low, hi = T(1) + p.eps_high;
  const T r2 = ratio < lo ? lo : (ratio > hi ? hi : ratio);
  const T d2 = (ratio >= lo && ratio <= hi) ? T(1) : T(0);
  const T l1 = r1 * adv, l2 = r2 * adv;
  const T g1 = l1 < l2 ? T(1) : (l1 > l2 ? T(0) : T(0.5));
  Surrogate<T> out;
  out.loss = -(l1 < l2 ? l1 : l2);
  out.dloss_dratio = -(g1 * d1 + (T(1) - g1) * d2) * adv;
  out.clip_low = ratio < lo && adv < T(0);
  out.clip_high = ratio > hi && adv > T(0);
  return out;
}

// k3 estimator of KL(pi || ref) (Schulman): exp(ref - logp) - (ref - logp) - 1.
template <typename T>
SGPO_HD T k3_kl(T ref, T logp) {
  const T d = ref - logp;
  return exp_(d) - d - T(1);
}
template <typename T>
SGPO_HD T k3_kl_dlogp(T ref, T logp) {
  return T(1) - exp_(ref - logp);
}

template <typename T>
struct TokenTerms {
  T loss;         // weight * per_token (weight folds in mask and aggregation)
  T dloss_dlogp;  // d loss / d logp of this token (excluding sequence coupling)
  T kl;           // k3 term, 0 without a reference
  bool clip_low;
  bool clip_high;
};

// One token's contribution. `ratio` and `dratio_dlogp` let one function serve
// both importance-sampling levels: token level passes (exp(logp - old), ratio);
// sequence level passes (the sequence ratio, 0) and adds the sequence-coupled
// gradient separately (see seq_ratio_grad in the drivers).
template <typename T>
SGPO_HD TokenTerms<T> policy_token_terms(T logp, T ratio, T dratio_dlogp, T adv,
                                         T weight, bool has_ref, T ref, T beta,
                                         const ClipParams<T>& p) {
  const Surrogate<T> s = clipped_surrogate(ratio, adv, p);
  TokenTerms<T> t;
  t.loss = weight * s.loss;
  t.dloss_dlogp = weight * s.dloss_dratio * dratio_dlogp;
  t.kl = T(0);
  if (has_ref) {
    t.kl = k3_kl(ref, logp);
    if (beta != T(0)) {
      t.loss += weight * beta * t.kl;
      t.dloss_dlogp += weight * beta * k3_kl_dlogp(ref, logp);
    }
  }
  t.clip_low = s.clip_low;
  t.clip_high = s.clip_high;
  return t;
}

}  // namespace sgpo
