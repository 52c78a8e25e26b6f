// CPU group_advantages: groups in parallel, one pass of credit + moments +
// normalization per group (a second, elementwise pass only for scale="batch",
// whose denominator needs every group first). float32 rewards in groups of a
// fixed size that is a multiple of 8 (the usual G = 8, 16, ...) compute the
// moments of eight groups at a time in 8-wide SIMD, with the same results.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <type_traits>

#include "../common/group_stats.h"
#include "../ops.h"
#include "simd.h"

namespace sgpo {
namespace {

using cpu::v8f;
using cpu::splat;

struct GroupFlags {
  bool any_correct;
  bool any_credited;  // some response's reward became partial credit
};

// One group [lo, hi): checks the values it reads, writes used[i] (the partial
// credit where credited, else the reward) and returns its flags. Both paths
// below run this; only the moments differ in layout.
template <typename scalar_t, typename acc>
GroupFlags credit_group(const scalar_t* r, const bool* correct, const acc* rts, int64_t lo, int64_t hi,
                        const CreditParams<acc>& cp, acc* used) {
  bool any_correct = false;
  for (int64_t i = lo; i < hi; ++i) {
    TORCH_CHECK_VALUE(std::isfinite(double(r[i])), "rewards: non-finite value ", double(r[i]), " at index ", i);
    any_correct |= correct ? correct[i] : r[i] > scalar_t(0);
  }
  bool any_credited = false;
  for (int64_t i = lo; i < hi; ++i) {
    // NaN marks "not judged"; anything else must be a score in [0, 1].
    TORCH_CHECK_VALUE(!rts || !(rts[i] < acc(0) || rts[i] > acc(1)), "rts: expected values in [0, 1] or NaN, got ",
                rts ? double(rts[i]) : 0.0, " at index ", i);
    const bool ok = correct ? correct[i] : r[i] > scalar_t(0);
    const bool credited = rts && is_credited(ok, rts[i], !any_correct, cp.scope);
    used[i] = credited ? rts_credit(rts[i], cp) : acc(r[i]);
    any_credited |= credited;
  }
  return {any_correct, any_credited};
}

// Rows x[0..8) -> columns: x[c][k] becomes old x[k][c] (the AVX 8x8 transpose).
SGPO_VINLINE void transpose8(v8f (&x)[8]) {
  v8f t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = SGPO_SHUFFLE(x[i], x[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = SGPO_SHUFFLE(x[i], x[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = SGPO_SHUFFLE(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = SGPO_SHUFFLE(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = SGPO_SHUFFLE(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = SGPO_SHUFFLE(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {
    x[i] = SGPO_SHUFFLE(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    x[i + 4] = SGPO_SHUFFLE(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// Block j (responses 8j .. 8j + 7) of groups g0 .. g0 + 7, transposed: lane k
// of column c is response 8j + c of group g0 + k.
SGPO_VINLINE void load_block(const float* x, int64_t g0, int64_t G, int64_t j, v8f (&col)[8]) {
  for (int k = 0; k < 8; ++k) col[k] = cpu::load8(x + (g0 + k) * G + j * cpu::kLanes);
  transpose8(col);
}

// Moments and advantages of eight float32 groups g0 .. g0 + 7 of G = 8m
// responses at once, one group per lane: group_moments' shifted two-pass sums
// as vertical adds in its order (response 0, 1, ...), and safe_div, so the
// results are the scalar loop's bit for bit (no FMA contraction here: the
// scalar loop is built without FMA). A group of 8 alone is a chain of
// dependent horizontal sums, a square root and a division; eight side by side
// fill the lanes instead.
__attribute__((optimize("fp-contract=off"))) SGPO_CPU_CLONES void eight_group_moments(
    const float* used, int64_t g0, int64_t G, float eps, bool group_scale, const float (&floor)[8], float* adv,
    float* mean_out, float* std_out) {
  const int64_t m = G / cpu::kLanes;
  const v8f zero = splat(0.f);
  v8f col[8];
  load_block(used, g0, G, 0, col);
  const v8f shift = col[0];
  v8f sum = zero;
  for (int64_t j = 0; j < m; ++j) {
    if (j) load_block(used, g0, G, j, col);
    for (int c = 0; c < cpu::kLanes; ++c) sum += col[c] - shift;
  }
  const v8f dmean = sum / float(G);
  v8f ss = zero;
  for (int64_t j = 0; j < m; ++j) {
    load_block(used, g0, G, j, col);
    for (int c = 0; c < cpu::kLanes; ++c) {
      const v8f d = col[c] - shift - dmean;
      ss += d * d;
    }
  }
  const v8f mean = shift + dmean;
  for (int k = 0; k < 8; ++k) {
    const float sd = G > 1 ? std::sqrt(ss[k] / float(G - 1)) : 0.f;
    const int64_t g = g0 + k, lo = g * G;
    mean_out[g] = mean[k];
    std_out[g] = sd;
    const float denom = group_scale ? group_denominator(sd, floor[k] > 0.f, floor[k], eps) : 1.f;
    for (int64_t j = 0; j < m; ++j) {  // safe_div: 0 / 0 = 0
      const int64_t i = lo + j * cpu::kLanes;
      cpu::store8(adv + i, denom != 0.f ? (cpu::load8(used + i) - mean[k]) / denom : zero);
    }
  }
}

template <typename scalar_t>
GroupAdvOut group_advantages_typed(const GroupAdvArgs& a) {
  using acc = acc_t<scalar_t>;
  const int64_t N = a.rewards.size(0), P = a.num_groups;
  const auto fopts = a.rewards.options().dtype(c10::CppTypeToScalarType<acc>::value);
  at::Tensor adv = at::empty({N}, fopts), used = at::empty({N}, fopts);
  at::Tensor mean = at::empty({P}, fopts), stdv = at::empty({P}, fopts);
  at::Tensor all_neg = at::empty({P}, a.rewards.options().dtype(at::kBool));

  const scalar_t* r = a.rewards.data_ptr<scalar_t>();
  const int64_t* offs = a.offsets.defined() ? a.offsets.data_ptr<int64_t>() : nullptr;
  const bool* correct = a.correct.defined() ? a.correct.data_ptr<bool>() : nullptr;
  at::Tensor rts_acc = a.rts.defined() ? a.rts.to(c10::CppTypeToScalarType<acc>::value) : at::Tensor();
  const acc* rts = rts_acc.defined() ? rts_acc.data_ptr<acc>() : nullptr;
  acc *adv_p = adv.data_ptr<acc>(), *used_p = used.data_ptr<acc>();
  acc *mean_p = mean.data_ptr<acc>(), *std_p = stdv.data_ptr<acc>();
  bool* neg_p = all_neg.data_ptr<bool>();
  const CreditParams<acc> cp{a.credit.scope, a.credit.credit, acc(a.credit.credit_beta), acc(a.credit.credit_gamma),
                             acc(a.credit.credit_scale), acc(a.credit.std_floor)};
  const acc eps = acc(a.eps);

  // float32 in groups of a fixed size 8m: the moments of eight groups per SIMD pass
  const bool simd = std::is_same_v<scalar_t, float> && !offs && a.group_size % cpu::kLanes == 0;
  at::parallel_for(0, P, 256, [&](int64_t begin, int64_t end) {
    int64_t g = begin;
    if constexpr (std::is_same_v<scalar_t, float>) {
      for (; simd && g + 8 <= end; g += 8) {
        float floor[8];  // per lane: the std floor of a credited group, 0 (none) otherwise
        for (int64_t k = g; k < g + 8; ++k) {
          const GroupFlags f = credit_group(r, correct, rts, k * a.group_size, (k + 1) * a.group_size, cp, used_p);
          neg_p[k] = !f.any_correct;
          floor[k - g] = f.any_credited ? float(cp.std_floor) : 0.f;
        }
        eight_group_moments(used_p, g, a.group_size, eps, a.scale == Scale::Group, floor, adv_p, mean_p, std_p);
      }
    }
    for (; g < end; ++g) {
      const int64_t lo = offs ? offs[g] : g * a.group_size, hi = offs ? offs[g + 1] : lo + a.group_size;
      const GroupFlags f = credit_group(r, correct, rts, lo, hi, cp, used_p);
      neg_p[g] = !f.any_correct;
      const Moments<acc> mo = group_moments<acc>([&](int64_t k) { return used_p[lo + k]; }, hi - lo);
      mean_p[g] = mo.mean;
      std_p[g] = mo.std;
      const acc denom = a.scale == Scale::Group ? group_denominator(mo.std, f.any_credited, cp.std_floor, eps) : acc(1);
      for (int64_t i = lo; i < hi; ++i) adv_p[i] = safe_div(used_p[i] - mo.mean, denom);
    }
  });
  if (a.scale == Scale::Batch) {
    const acc bstd = N > 1 ? used.std().item<acc>() : acc(0);
    if (bstd + eps > acc(0)) adv.div_(bstd + eps);  // else every numerator is 0 already
  }
  return {adv, used, mean, stdv, all_neg};
}

}  // namespace

GroupAdvOut group_advantages_cpu(const GroupAdvArgs& a) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.rewards.scalar_type(),
                                         "sgpo_group_advantages",
                                         [&] { return group_advantages_typed<scalar_t>(a); });
}

}  // namespace sgpo
