// CPU group_advantages: groups in parallel, one pass of credit + moments +
// normalization per group (a second, elementwise pass only for scale="batch",
// whose denominator needs every group first). float32 groups whose size is a
// multiple of 8 (the usual G = 8, 16, ...) run in 8-wide SIMD, one register
// per 8 responses; every other group runs the scalar loop.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "../common/group_stats.h"
#include "../ops.h"
#include "simd.h"

namespace sgpo {
namespace {

using cpu::v8f;
using cpu::v8i;
using cpu::splat;

// The inputs and outputs of one call, as raw pointers (acc = float here).
struct GroupPtrs {
  const float* r;       // [N] rewards
  const bool* correct;  // [N] or null: then a reward > 0 counts as correct
  const float* rts;     // [N] or null; NaN = not judged
  float *used, *adv, *mean, *stdv;
  bool* neg;
};

// One group of n = 8m float32 responses [lo, lo + n): the scalar loop's math
// (group_stats.h) lane by lane. Its sums run per lane, then across lanes, so
// the last bits can differ from the scalar loop; a group of equal values
// still gives mean == value, std == 0 and advantages of exactly 0. Returns
// false when a reward is not finite or an RTS is outside [0, 1]: the caller
// reruns the group in the scalar loop, whose check names the value.
SGPO_CPU_CLONES bool group_simd(const GroupPtrs& p, int64_t g, int64_t lo, int64_t n,
                                const CreditParams<float>& cp, float eps, bool group_scale) {
  const int64_t m = n / cpu::kLanes;
  const v8f zero = splat(0.f), one = splat(1.f);
  bool any_correct = false, bad = false;
  for (int64_t j = 0; j < m; ++j) {
    const int64_t i = lo + j * cpu::kLanes;
    const v8f r = cpu::load8(p.r + i);
    const v8i finite = (r - r) == zero;  // false for inf and NaN
    for (int k = 0; k < cpu::kLanes; ++k) bad |= !finite[k];
    if (p.correct) {  // bools are bytes 0 / 1: 8 of them as one word
      uint64_t bytes;
      std::memcpy(&bytes, p.correct + i, sizeof bytes);
      any_correct |= bytes != 0;
    } else {
      const v8i pos = r > zero;
      for (int k = 0; k < cpu::kLanes; ++k) any_correct |= pos[k] != 0;
    }
  }
  const bool credit_group = cp.scope == Scope::AllIncorrect || (cp.scope == Scope::AllNegative && !any_correct);
  // used = partial credit where credited, else the reward
  for (int64_t j = 0; j < m; ++j) {
    const int64_t i = lo + j * cpu::kLanes;
    v8f u = cpu::load8(p.r + i);
    if (p.rts && credit_group) {
      const v8f t = cpu::load8(p.rts + i);
      const v8i out_of_range = (t < zero) | (t > one);
      for (int k = 0; k < cpu::kLanes; ++k) bad |= out_of_range[k] != 0;
      const v8f credit = cp.credit == Credit::Linear
                             ? t * cp.credit_scale
                             : one / (one + cpu::vexp(splat(-cp.beta) * (t - cp.gamma)));
      v8i ok;  // correct: the flag, or a reward > 0 without flags
      if (p.correct) {
        for (int k = 0; k < cpu::kLanes; ++k) ok[k] = p.correct[i + k] ? -1 : 0;
      } else {
        ok = u > zero;
      }
      const v8i take = ~ok & (t == t);  // incorrect and judged (t == t is false for NaN)
      u = take ? credit : u;
    } else if (p.rts) {
      const v8f t = cpu::load8(p.rts + i);
      const v8i out_of_range = (t < zero) | (t > one);
      for (int k = 0; k < cpu::kLanes; ++k) bad |= out_of_range[k] != 0;
    }
    cpu::store8(p.used + i, u);
  }
  if (bad) return false;
  // shifted two-pass moments (group_stats.h group_moments)
  const v8f shift = splat(p.used[lo]);
  v8f acc = zero;
  for (int64_t j = 0; j < m; ++j) acc += cpu::load8(p.used + lo + j * cpu::kLanes) - shift;
  const float dmean = cpu::hsum(acc) / float(n);
  v8f ss = zero;
  for (int64_t j = 0; j < m; ++j) {
    const v8f d = cpu::load8(p.used + lo + j * cpu::kLanes) - shift - dmean;
    ss += d * d;
  }
  const float mean = p.used[lo] + dmean;
  const float sd = n > 1 ? std::sqrt(cpu::hsum(ss) / float(n - 1)) : 0.f;
  p.mean[g] = mean;
  p.stdv[g] = sd;
  p.neg[g] = !any_correct;
  const float denom = group_scale ? sd + eps : 1.f;
  for (int64_t j = 0; j < m; ++j) {  // safe_div: 0 / 0 = 0
    const int64_t i = lo + j * cpu::kLanes;
    const v8f a = denom != 0.f ? (cpu::load8(p.used + i) - mean) / denom : zero;
    cpu::store8(p.adv + i, a);
  }
  return true;
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
  const CreditParams<acc> cp{a.credit.scope, a.credit.credit, acc(a.credit.beta), acc(a.credit.gamma),
                             acc(a.credit.credit_scale)};
  const acc eps = acc(a.eps);

  // Offsets are checked here, where they are read anyway (no extra pass).
  if (offs) {
    TORCH_CHECK(offs[0] == 0 && offs[P] == N, "group_offsets: must start at 0 and end at N = ", N, ", got ",
                offs[0], " and ", offs[P]);
    for (int64_t g = 0; g < P; ++g)
      TORCH_CHECK(offs[g + 1] > offs[g], "group_offsets: group ", g, " is empty or reversed (", offs[g], " -> ",
                  offs[g + 1], ")");
  }
  const CreditParams<float> cpf{cp.scope, cp.credit, float(cp.beta), float(cp.gamma), float(cp.credit_scale)};
  at::parallel_for(0, P, 256, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t lo = offs ? offs[g] : g * a.group_size, hi = offs ? offs[g + 1] : lo + a.group_size;
      if constexpr (std::is_same_v<scalar_t, float>) {
        if ((hi - lo) % cpu::kLanes == 0 &&
            group_simd(GroupPtrs{r, correct, rts, used_p, adv_p, mean_p, std_p, neg_p}, g, lo, hi - lo, cpf,
                       float(eps), a.scale == Scale::Group))
          continue;
      }
      bool any_correct = false;
      for (int64_t i = lo; i < hi; ++i) {
        TORCH_CHECK(std::isfinite(double(r[i])), "rewards: non-finite value ", double(r[i]), " at index ", i);
        any_correct |= correct ? correct[i] : r[i] > scalar_t(0);
      }
      neg_p[g] = !any_correct;
      for (int64_t i = lo; i < hi; ++i) {
        // NaN marks "not judged"; anything else must be a score in [0, 1].
        TORCH_CHECK(!rts || !(rts[i] < acc(0) || rts[i] > acc(1)), "rts: expected values in [0, 1] or NaN, got ",
                    rts ? double(rts[i]) : 0.0, " at index ", i);
        const bool ok = correct ? correct[i] : r[i] > scalar_t(0);
        used_p[i] = (rts && is_credited(ok, rts[i], !any_correct, cp.scope)) ? rts_credit(rts[i], cp)
                                                                               : acc(r[i]);
      }
      const Moments<acc> mo = group_moments<acc>([&](int64_t k) { return used_p[lo + k]; }, hi - lo);
      mean_p[g] = mo.mean;
      std_p[g] = mo.std;
      const acc denom = a.scale == Scale::Group ? mo.std + eps : acc(1);
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
