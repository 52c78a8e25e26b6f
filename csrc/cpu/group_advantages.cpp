// CPU group_advantages: groups in parallel, one pass of credit + moments +
// normalization per group (a second, elementwise pass only for scale="batch",
// whose denominator needs every group first).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cmath>

#include "../common/group_stats.h"
#include "../ops.h"

namespace sgpo {
namespace {

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
  at::parallel_for(0, P, 256, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t lo = offs ? offs[g] : g * a.group_size, hi = offs ? offs[g + 1] : lo + a.group_size;
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
