// Group statistics and SGPO partial credit (docs/design.md sections 1 and 3).
#pragma once
#include "macros.h"

namespace sgpo {

enum class Scope : int { AllNegative = 0, AllIncorrect = 1, Off = 2 };
enum class Credit : int { Sigmoid = 0, Linear = 1 };
enum class Scale : int { Group = 0, Batch = 1, None = 2 };

template <typename T>
struct CreditParams {
  Scope scope;
  Credit credit;
  T credit_beta;   // sigmoid slope (sharpness)
  T credit_gamma;  // sigmoid midpoint
  T credit_scale;  // linear slope
  T std_floor;     // scale "group": the least std a credited group divides by (0: off)
};

// Partial credit of an incorrect response from its reasoning trajectory score.
template <typename T>
SGPO_HD T rts_credit(T rts, const CreditParams<T>& p) {
  if (p.credit == Credit::Linear) return p.credit_scale * rts;
  return T(1) / (T(1) + exp_(-p.credit_beta * (rts - p.credit_gamma)));
}

// Whether response i gets partial credit instead of its outcome reward.
// `rts` is NaN where the judge did not score the response.
template <typename T>
SGPO_HD bool is_credited(bool correct, T rts, bool group_all_negative, Scope scope) {
  if (correct || !(rts == rts)) return false;  // rts == rts is false for NaN
  switch (scope) {
    case Scope::AllNegative: return group_all_negative;
    case Scope::AllIncorrect: return true;
    default: return false;
  }
}

// num / den, with 0 / 0 = 0: with eps = 0, a group of equal rewards has
// std 0 and numerators exactly 0, and its advantages must be 0, not NaN.
template <typename T>
SGPO_HD T safe_div(T num, T den) {
  return den != T(0) ? num / den : T(0);
}

// The scale="group" denominator of one group: its std, raised to std_floor when some
// response of the group earned partial credit, plus eps. Credits close together have a
// tiny std, and dividing by it turns their small differences into unit-scale
// advantages (the "phantom gradient"); the floor bounds that gain. Uncredited groups
// (outcome rewards) are never floored: floor 0 and std >= 0 leave the std as it is.
template <typename T>
SGPO_HD T group_denominator(T std, bool credited, T std_floor, T eps) {
  return (credited && std < std_floor ? std_floor : std) + eps;
}

template <typename T>
struct Moments {
  T mean;
  T std;  // unbiased (n - 1); 0 for n == 1
};

// Shifted two-pass moments of load(0..n). Shifting by the first element makes
// equal values give mean == value and std == 0 *exactly*, so a group of equal
// rewards yields advantages of exactly 0 (never 1e-17 / eps noise, never NaN).
template <typename T, typename Load>
SGPO_HD Moments<T> group_moments(const Load& load, int64_t n) {
  const T shift = load(0);
  T sum = T(0);
  for (int64_t i = 0; i < n; ++i) sum += load(i) - shift;
  const T dmean = sum / T(n);
  T ss = T(0);
  for (int64_t i = 0; i < n; ++i) {
    const T d = load(i) - shift - dmean;
    ss += d * d;
  }
  Moments<T> m;
  m.mean = shift + dmean;
  m.std = n > 1 ? sqrt_(ss / T(n - 1)) : T(0);
  return m;
}

}  // namespace sgpo
