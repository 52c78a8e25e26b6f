// CPU row kernel of the fused LM head (see lm_head.h): for each row of a
// [n, V] logits chunk, log-sum-exp, the target's log-prob, optionally the
// entropy, the policy-loss terms (common/policy_loss.h), and d loss / d logits
// written over the logits. Rows run in parallel; each row is touched in two
// sweeps (max, then sum-exp, into common/lse.h's state) plus one more to write
// the gradient, while it sits in L1/L2.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <cmath>

#include "../common/lse.h"
#include "../common/policy_loss.h"
#include "../lm_head.h"
#include "../ops.h"
#include "simd.h"

namespace sgpo::cpu {
namespace {

// The row's online log-sum-exp state (common/lse.h) of x = logit * inv_temp,
// in two sweeps: the max first, so that every element then folds with
// rescale 1 and weight exp(x - m); the 8 lanes run that formula side by side
// and, sharing m, merge by plain sums. sx (for the entropy) only when asked.
// fp32 / bf16 / fp16 storage, fp32 math.
template <typename scalar_t>
SGPO_CPU_CLONES OnlineLSE<float> row_lse(const scalar_t* z, int64_t V, float inv_temp, bool want_sx) {
  const int64_t Vv = V - V % kLanes;
  OnlineLSE<float> st;
  st.m = row_max(z, V) * inv_temp;  // inv_temp > 0 keeps the argmax
  v8f vs = splat(0.f), vsx = splat(0.f);
  for (int64_t j = 0; j < Vv; j += kLanes) {
    const v8f x = load8(z + j) * inv_temp;
    const v8f e = vexp(x - st.m);
    vs += e;
    if (want_sx) vsx += e > 0.f ? e * x : splat(0.f);  // e == 0 where x == -inf
  }
  st.s = hsum(vs);
  st.sx = hsum(vsx);
  for (int64_t j = Vv; j < V; ++j) st.add(float(z[j]) * inv_temp);  // x <= m: the same formula
  return st;
}

// d logits = c * inv_temp * (onehot(target) - exp(x - lse)), in place.
template <typename scalar_t>
SGPO_CPU_CLONES void row_grad(scalar_t* z, int64_t V, float inv_temp, float lse, float c, int64_t target) {
  const float x_target = float(z[target]) * inv_temp;
  const float g = c * inv_temp;
  const int64_t Vv = V - V % kLanes;
  for (int64_t j = 0; j < Vv; j += kLanes) store8(z + j, vexp(load8(z + j) * inv_temp - lse) * -g);
  for (int64_t j = Vv; j < V; ++j) z[j] = scalar_t(-g * std::exp(float(z[j]) * inv_temp - lse));
  z[target] = scalar_t(g * (1.f - std::exp(x_target - lse)));
}

// fp64 (the tests' reference precision): plain scalar loops.
OnlineLSE<double> row_lse(const double* z, int64_t V, double inv_temp, bool /*want_sx*/) {
  double zmax = -INFINITY;
  for (int64_t j = 0; j < V; ++j) zmax = std::max(zmax, z[j]);
  OnlineLSE<double> st;
  st.m = zmax * inv_temp;
  for (int64_t j = 0; j < V; ++j) st.add(z[j] * inv_temp);
  return st;
}
void row_grad(double* z, int64_t V, double inv_temp, double lse, double c, int64_t target) {
  const double x_target = z[target] * inv_temp, g = c * inv_temp;
  for (int64_t j = 0; j < V; ++j) z[j] = -g * std::exp(z[j] * inv_temp - lse);
  z[target] = g * (1.0 - std::exp(x_target - lse));
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename scalar_t>
void rows_typed(const RowArgs& a) {
  using acc = acc_t<scalar_t>;
  const int64_t n = a.logits.size(0), V = a.logits.size(1);
  scalar_t* logits = a.logits.data_ptr<scalar_t>();
  const int64_t* targets = a.targets.data_ptr<int64_t>();
  acc* logp_out = a.logp_out.data_ptr<acc>();
  acc* entropy_out = a.entropy_out.defined() ? a.entropy_out.data_ptr<acc>() : nullptr;
  const acc *coef = ptr_or_null<acc>(a.coef), *weight = ptr_or_null<acc>(a.weight),
            *adv = ptr_or_null<acc>(a.adv), *old_logp = ptr_or_null<acc>(a.old_logp),
            *ref_logp = ptr_or_null<acc>(a.ref_logp), *seq_ratio = ptr_or_null<acc>(a.seq_ratio),
            *seq_grad = ptr_or_null<acc>(a.seq_grad), *mask = ptr_or_null<acc>(a.mask);
  acc* stats = a.token_stats.defined() ? a.token_stats.data_ptr<acc>() : nullptr;
  const SurrogateParams<acc> clip = a.clip.cast<acc>();
  const acc inv_temp = acc(a.inv_temp), beta = acc(a.beta);

  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* z = logits + i * V;
      const int64_t t = targets[i];
      const OnlineLSE<acc> st = row_lse(z, V, inv_temp, entropy_out != nullptr);
      const acc lse = st.lse();
      const acc logp = acc(z[t]) * inv_temp - lse;
      logp_out[i] = logp;
      if (entropy_out) entropy_out[i] = st.entropy();
      if (a.mode == RowMode::Stats) continue;
      acc c;
      if (a.mode == RowMode::GivenCoef) {
        c = coef[i];
      } else {
        const acc ratio = seq_ratio ? seq_ratio[i] : std::exp(logp - (old_logp ? old_logp[i] : logp));
        const TokenTerms<acc> tt = policy_token_terms<acc>(logp, ratio, seq_ratio ? acc(0) : ratio, adv[i],
                                                           weight[i], ref_logp != nullptr,
                                                           ref_logp ? ref_logp[i] : acc(0), beta, clip);
        c = tt.dloss_dlogp + (seq_grad ? seq_grad[i] : acc(0));
        acc* s = stats + kNumTokenStats * i;
        s[kStatLoss] = tt.loss;
        s[kStatKl] = tt.kl * mask[i];  // kl_mean is a mask-weighted mean
        s[kStatClipLow] = tt.clip_low ? mask[i] : acc(0);
        s[kStatClipHigh] = tt.clip_high ? mask[i] : acc(0);
      }
      row_grad(z, V, inv_temp, lse, c, t);
    }
  });
}

void rows(const RowArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.logits.scalar_type(), "sgpo_lm_head_rows",
                                  [&] { rows_typed<scalar_t>(a); });
}

at::Tensor surrogate_dratio(const at::Tensor& ratio, const at::Tensor& adv, const at::Tensor& weight,
                            const at::Tensor& logp, const at::Tensor& ref, double beta,
                            const SurrogateParams<double>& clip) {
  at::Tensor out = at::empty_like(ratio);
  AT_DISPATCH_FLOATING_TYPES(ratio.scalar_type(), "sgpo_surrogate_dratio", [&] {
    const SurrogateParams<scalar_t> c = clip.cast<scalar_t>();
    const scalar_t *r = ratio.data_ptr<scalar_t>(), *a = adv.data_ptr<scalar_t>(),
                   *w = weight.data_ptr<scalar_t>();
    const scalar_t* lp = logp.defined() ? logp.data_ptr<scalar_t>() : nullptr;
    const scalar_t* rf = ref.defined() ? ref.data_ptr<scalar_t>() : nullptr;
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < ratio.numel(); ++i) {
      o[i] = w[i] * sequence_dloss_dratio(lp ? lp[i] : scalar_t(0), r[i], a[i], rf != nullptr,
                                          rf ? rf[i] : scalar_t(0), scalar_t(beta), c);
    }
  });
  return out;
}

}  // namespace
}  // namespace sgpo::cpu

namespace sgpo {
const LMHeadBackend kCpuLMHead{&cpu::rows, &cpu::surrogate_dratio};
}
