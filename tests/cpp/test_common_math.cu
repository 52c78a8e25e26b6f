// Compile-only check (CMake's sgpo_cuda_check target): every function of
// csrc/common/ called from device code, in fp32 and fp64, so a host-only call
// or an fp64 slip in a header fails the build, not a kernel on a GPU.
#include <cstdint>

#include "common/group_stats.h"
#include "common/lse.h"
#include "common/policy_loss.h"
#include "common/sampling.h"

namespace {

// x [n] -> out [9]; values only keep the calls from being optimized away.
template <typename T>
__global__ void common_math_kernel(const T* x, int64_t n, T* out) {
  sgpo::OnlineLSE<T> a, b;
  for (int64_t i = 0; i < n; ++i) (i % 2 ? a : b).add(x[i]);
  a.merge(b);
  T m = sgpo::neg_inf<T>();
  const sgpo::Rescale<T> fr = sgpo::fold_max(m, x[0]);
  const sgpo::Rescale<T> mr = sgpo::merge_max(m, x[1]);
  const sgpo::SurrogateParams<T> clip{T(0.2), T(0.28), T(2), true};
  const sgpo::Surrogate<T> s = sgpo::clipped_surrogate(x[0], x[1], clip);
  sgpo::SurrogateParams<T> sapo = clip.template cast<T>();
  sapo.kind = x[5] > T(0) ? sgpo::SurrogateKind::Sapo : sgpo::SurrogateKind::Cispo;
  const sgpo::Surrogate<T> s2 = sgpo::surrogate(x[2], x[0], x[1], sapo);
  const sgpo::TokenTerms<T> t = sgpo::policy_token_terms(x[0], x[1], x[1], x[2], T(1), true, x[3], T(0.1), clip);
  const sgpo::CreditParams<T> credit{sgpo::Scope::AllNegative, sgpo::Credit::Sigmoid, T(5), T(0.5), T(0.5)};
  const sgpo::Moments<T> mom = sgpo::group_moments<T>([x](int64_t i) { return x[i]; }, n);
  const sgpo::SampleParams<T> sp{T(1), 5, T(0.9), T(0.05)};
  out[0] = a.lse();
  out[1] = a.entropy();
  out[2] = s.loss + s.dloss_dratio + T(s.clip_low) + T(s.clip_high) + s2.loss + s2.dloss_dratio + s2.dloss_dlogp;
  out[3] = t.loss + t.dloss_dlogp + t.kl + sgpo::k3_kl(x[0], x[1]) + sgpo::k3_kl_dlogp(x[0], x[1]);
  out[4] = sgpo::is_credited(false, x[4], true, credit.scope) ? sgpo::rts_credit(x[4], credit) : T(0);
  out[5] = mom.mean + mom.std + sgpo::safe_div(x[0], x[1]);
  out[6] = T(sgpo::weight_key(static_cast<float>(x[5]))) + T(sgpo::key_weight(0x3f800000u));
  out[7] = T(sgpo::top_k_active(sp, n)) + T(sgpo::top_p_active(sp)) + sgpo::min_p_cut(sp, T(1));
  out[8] = fr.old + fr.add + mr.old + mr.add + sgpo::max_(x[0], x[1]) + sgpo::neg_inf<T>() + sgpo::sqrt_(x[2]) + sgpo::log_(x[3]) + sgpo::exp_(x[4]);
}

template __global__ void common_math_kernel<float>(const float*, int64_t, float*);
template __global__ void common_math_kernel<double>(const double*, int64_t, double*);

}  // namespace
