// The per-token math of the policy losses (docs/design.md section 3).
//
// For one completion token with log-prob logp under the current policy and
// importance ratio `ratio` (token or sequence level), the surrogate is one of:
//   clipped (grpo, bnpo, dapo, dr_grpo):
//     l1 = min(ratio, delta) * A         (delta optional: two-sided clipping)
//     l2 = clamp(ratio, 1 - eps_low, 1 + eps_high) * A
//     per_token = -min(l1, l2)
//   cispo: per_token = -sg[min(ratio, eps_high)] * A * logp   (sg: no gradient)
//   sapo:  per_token = -sigmoid(tau * (ratio - 1)) * 4 / tau * A,
//          tau = tau_pos if A > 0 else tau_neg
// plus beta * k3(ref, logp) with a reference (times the differentiable ratio
// with kl_times_ratio: TRL's use_bias_correction_kl), and the derivative with respect
// to logp, which is all the LM-head backward needs:
// d logits = dloss/dlogp * (onehot(target) - softmax) / temperature.
//
// Subgradients follow torch autograd exactly (the reference is the spec):
// clamp passes the gradient on the closed interval, and min() splits it
// evenly when l1 == l2.
#pragma once
#include "macros.h"

namespace sgpo {

// Which surrogate; the loss type also picks the aggregation (lm_head.cpp).
enum class SurrogateKind : int { Clipped = 0, Cispo = 1, Sapo = 2 };

// Brace-initializable as {eps_low, eps_high, delta, has_delta} for the
// clipped surrogate; kind and the sapo temperatures follow.
template <typename T>
struct SurrogateParams {
  T eps_low;
  T eps_high;      // cispo: the upper bound of the detached ratio
  T delta;         // upper clamp of ratio inside l1, only if has_delta
  bool has_delta;
  SurrogateKind kind = SurrogateKind::Clipped;
  T tau_pos = T(1);     // sapo temperature for A > 0
  T tau_neg = T(1.05);  // and for A <= 0
  bool kl_times_ratio = false;  // KL term k3 * ratio (DeepSeek-V3.2's unbiased reverse-KL gradient)

  template <typename U>
  SGPO_HD SurrogateParams<U> cast() const {
    return SurrogateParams<U>{U(eps_low), U(eps_high), U(delta), has_delta, kind, U(tau_pos), U(tau_neg),
                              kl_times_ratio};
  }
};

template <typename T>
struct Surrogate {
  T loss;          // per_token, without the KL term
  T dloss_dratio;  // through the ratio (0 for cispo: its ratio is detached)
  T dloss_dlogp;   // direct, not through the ratio (cispo only)
  bool clip_low;   // clipped: ratio < 1 - eps_low and A < 0
  bool clip_high;  // clipped: ratio > 1 + eps_high and A > 0; cispo: ratio > eps_high and A > 0
};

template <typename T>
SGPO_HD Surrogate<T> clipped_surrogate(T ratio, T adv, const SurrogateParams<T>& p) {
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
  out.dloss_dlogp = T(0);
  out.clip_low = ratio < lo && adv < T(0);
  out.clip_high = ratio > hi && adv > T(0);
  return out;
}

// CISPO (MiniMax-M1): REINFORCE weighted by the detached, capped ratio.
template <typename T>
SGPO_HD Surrogate<T> cispo_surrogate(T logp, T ratio, T adv, const SurrogateParams<T>& p) {
  const T c = ratio < p.eps_high ? ratio : p.eps_high;
  Surrogate<T> out;
  out.loss = -c * adv * logp;
  out.dloss_dratio = T(0);
  out.dloss_dlogp = -c * adv;
  out.clip_low = false;
  out.clip_high = ratio > p.eps_high && adv > T(0);
  return out;
}

// SAPO: a sigmoid gate instead of a hard clip; 4 / tau makes its slope 1 at ratio 1.
template <typename T>
SGPO_HD Surrogate<T> sapo_surrogate(T ratio, T adv, const SurrogateParams<T>& p) {
  const T tau = adv > T(0) ? p.tau_pos : p.tau_neg;
  const T s = T(1) / (T(1) + exp_(-tau * (ratio - T(1))));
  Surrogate<T> out;
  out.loss = -s * T(4) / tau * adv;
  out.dloss_dratio = -T(4) * s * (T(1) - s) * adv;
  out.dloss_dlogp = T(0);
  out.clip_low = false;
  out.clip_high = false;
  return out;
}

template <typename T>
SGPO_HD Surrogate<T> surrogate(T logp, T ratio, T adv, const SurrogateParams<T>& p) {
  switch (p.kind) {
    case SurrogateKind::Cispo: return cispo_surrogate(logp, ratio, adv, p);
    case SurrogateKind::Sapo: return sapo_surrogate(ratio, adv, p);
    default: return clipped_surrogate(ratio, adv, p);
  }
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

// d(per-token loss) / d ratio of one token at sequence level, where the ratio is the
// sequence's and couples its tokens: the surrogate's, plus with kl_times_ratio the
// ratio-weighted KL's beta * k3 (has_ref). The caller multiplies by the token's weight.
template <typename T>
SGPO_HD T sequence_dloss_dratio(T logp, T ratio, T adv, bool has_ref, T ref, T beta, const SurrogateParams<T>& p) {
  T d = surrogate(logp, ratio, adv, p).dloss_dratio;
  if (has_ref && p.kl_times_ratio) d += beta * k3_kl(ref, logp);
  return d;
}

template <typename T>
struct TokenTerms {
  T loss;         // weight * per_token (weight folds in mask and aggregation)
  T dloss_dlogp;  // d loss / d logp of this token (excluding sequence coupling)
  T kl;           // k3 (times the ratio with kl_times_ratio), 0 without a reference
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
                                         const SurrogateParams<T>& p) {
  const Surrogate<T> s = surrogate(logp, ratio, adv, p);
  TokenTerms<T> t;
  t.loss = weight * s.loss;
  t.dloss_dlogp = weight * (s.dloss_dratio * dratio_dlogp + s.dloss_dlogp);
  t.kl = T(0);
  if (has_ref) {
    const T k3 = k3_kl(ref, logp);
    const T scale = p.kl_times_ratio ? ratio : T(1);
    t.kl = k3 * scale;
    if (beta != T(0)) {
      t.loss += weight * beta * t.kl;
      // d(k3 * ratio) = k3' * ratio + k3 * d ratio (the latter 0 without kl_times_ratio)
      t.dloss_dlogp += weight * beta * (k3_kl_dlogp(ref, logp) * scale + (p.kl_times_ratio ? k3 * dratio_dlogp : T(0)));
    }
  }
  t.clip_low = s.clip_low;
  t.clip_high = s.clip_high;
  return t;
}

}  // namespace sgpo
