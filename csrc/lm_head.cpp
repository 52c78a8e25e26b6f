// Device-agnostic chunk driver of the fused LM-head ops (see lm_head.h).
//
// Per chunk of n rows: logits = h_c @ W^T (+ b)          [n, V]   GEMM 1
//                      backend row kernel: logp, loss terms, d logits in place
//                      grad_h_c  = dlogits @ W           [n, H]   GEMM 2
//                      grad_W   += dlogits^T @ h_c       [V, H]   GEMM 3
// The three GEMMs are the floor of any LM-head loss with gradients; the rest
// touches each logit a constant number of times while it is hot in cache.
// Rows whose mask (or incoming gradient) is zero are skipped entirely.
#include "lm_head.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include <array>
#include <limits>

namespace sgpo {
namespace {

at::ScalarType acc_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Rows a chunk budget of ~2^23 logits (32 MB fp32) on CPU, 2^26 on GPU: big
// enough for efficient GEMMs, small enough that the [chunk, V] buffer is a
// rounding error next to the weight gradient.
int64_t rows_per_chunk(std::optional<int64_t> chunk_size, int64_t vocab, const at::Tensor& like) {
  if (chunk_size.has_value()) return *chunk_size;
  const int64_t budget = like.is_cuda() ? (int64_t(1) << 26) : (int64_t(1) << 23);
  return std::max<int64_t>(1, budget / vocab);
}

struct LMHead {
  at::Tensor h;     // [N, H] contiguous rows of hidden
  at::Tensor w;     // [V, H] contiguous
  at::Tensor bias;  // [V] or undefined
  at::Tensor rows;  // [N'] int64 indices of active rows, undefined = all rows
  int64_t num_active;
  int64_t chunk;
};

// active: [N] bool or undefined (all rows).
LMHead make_lm_head(const LMHeadArgs& a, const at::Tensor& active) {
  LMHead lm;
  const int64_t H = a.hidden.size(-1);
  lm.h = a.hidden.reshape({-1, H}).contiguous();
  lm.w = a.weight.contiguous();
  if (a.bias.defined()) lm.bias = a.bias.contiguous();
  lm.num_active = lm.h.size(0);
  if (active.defined()) {
    at::Tensor idx = at::nonzero(active).reshape({-1});
    if (idx.size(0) < lm.h.size(0)) {
      lm.rows = idx;
      lm.num_active = idx.size(0);
    }
  }
  lm.chunk = rows_per_chunk(a.chunk_size, a.weight.size(0), a.hidden);
  return lm;
}

// [N, ...] per-token tensor -> its active rows [N', ...], contiguous.
at::Tensor active_rows(const LMHead& lm, const at::Tensor& t) {
  return lm.rows.defined() ? t.index_select(0, lm.rows) : t.contiguous();
}

// Calls fn(start, n, h_c [n, H], logits [n, V]) for each chunk of active rows.
template <typename Fn>
void for_each_chunk(const LMHead& lm, Fn&& fn) {
  for (int64_t s = 0; s < lm.num_active; s += lm.chunk) {
    const int64_t n = std::min(lm.chunk, lm.num_active - s);
    at::Tensor hc = lm.rows.defined() ? lm.h.index_select(0, lm.rows.narrow(0, s, n)) : lm.h.narrow(0, s, n);
    at::Tensor logits = lm.bias.defined() ? at::addmm(lm.bias, hc, lm.w.t()) : at::mm(hc, lm.w.t());
    fn(s, n, hc, logits);
  }
}

// Gradient accumulators for the GEMMs 2 and 3 of a chunk.
struct LMHeadGrads {
  at::Tensor h;  // [N, H], hidden's dtype
  at::Tensor w;  // [V, H], accumulation dtype
  at::Tensor b;  // [V], accumulation dtype

  LMHeadGrads(const LMHead& lm, GradsWanted wanted) {
    const auto acc = acc_dtype(lm.h);
    // Skipped rows get zero gradient, so zero-fill only when rows are skipped.
    if (wanted.hidden) h = lm.rows.defined() ? at::zeros_like(lm.h) : at::empty_like(lm.h);
    if (wanted.weight) w = at::zeros(lm.w.sizes(), lm.w.options().dtype(acc));
    if (wanted.bias && lm.bias.defined()) b = at::zeros({lm.w.size(0)}, lm.w.options().dtype(acc));
  }

  // dlogits [n, V] of the chunk of active rows [s, s + n) whose hidden is hc.
  void add_chunk(const LMHead& lm, int64_t s, int64_t n, const at::Tensor& hc, const at::Tensor& dlogits) {
    if (h.defined()) {
      if (lm.rows.defined()) {
        h.index_copy_(0, lm.rows.narrow(0, s, n), at::mm(dlogits, lm.w));
      } else {
        at::Tensor out = h.narrow(0, s, n);
        at::mm_out(out, dlogits, lm.w);
      }
    }
    if (w.defined()) {
      if (w.scalar_type() == dlogits.scalar_type()) w.addmm_(dlogits.t(), hc);
      else w.add_(at::mm(dlogits.t(), hc));  // bf16/fp16 product, fp32 accumulation
    }
    if (b.defined()) b.add_(dlogits.sum(0, false, b.scalar_type()));
  }

  // Final gradients in the dtypes of hidden / weight / bias (empty if not asked).
  ParamGrads finish(const at::Tensor& hidden, const at::Tensor& weight) {
    auto or_empty = [&](const at::Tensor& g) { return g.defined() ? g : at::empty({0}, weight.options()); };
    return {or_empty(h.defined() ? h.view(hidden.sizes()) : h),
            or_empty(w.defined() ? w.to(weight.scalar_type()) : w),
            or_empty(b.defined() ? b.to(weight.scalar_type()) : b)};
  }
};

// Active-row results [N', ...] -> [N, ...] with zeros at skipped rows.
at::Tensor scatter_rows(const LMHead& lm, const at::Tensor& r, int64_t N) {
  if (!lm.rows.defined()) return r;
  std::vector<int64_t> shape = r.sizes().vec();
  shape[0] = N;
  return at::zeros(shape, r.options()).index_copy_(0, lm.rows, r);
}

// log-probs of the active rows [N'] (one forward pass over the vocabulary).
at::Tensor active_logprobs(const LMHeadBackend& be, const LMHead& lm, const at::Tensor& targets_r,
                           double inv_temp, at::Tensor* entropy_r) {
  const auto opts = lm.h.options().dtype(acc_dtype(lm.h));
  at::Tensor logp = at::empty({lm.num_active}, opts);
  if (entropy_r) *entropy_r = at::empty({lm.num_active}, opts);
  for_each_chunk(lm, [&](int64_t s, int64_t n, const at::Tensor&, const at::Tensor& logits) {
    RowArgs a;
    a.mode = RowMode::Stats;
    a.logits = logits;
    a.targets = targets_r.narrow(0, s, n);
    a.inv_temp = inv_temp;
    a.logp_out = logp.narrow(0, s, n);
    if (entropy_r) a.entropy_out = entropy_r->narrow(0, s, n);
    be.rows(a);
  });
  return logp;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> fused_logprobs(const LMHeadBackend& be, const LMHeadArgs& a,
                                                  bool return_entropy) {
  const LMHead lm = make_lm_head(a, at::Tensor());
  at::Tensor entropy;
  at::Tensor logp = active_logprobs(be, lm, a.targets.reshape({-1}).to(at::kLong).contiguous(), 1.0 / a.temperature,
                                    return_entropy ? &entropy : nullptr);
  return {logp.view(a.targets.sizes()),
          return_entropy ? entropy.view(a.targets.sizes()) : at::empty({0}, logp.options())};
}

ParamGrads fused_logprobs_backward(const LMHeadBackend& be, const at::Tensor& grad_logp, const LMHeadArgs& a,
                                   GradsWanted grads_wanted) {
  const at::Tensor coef = grad_logp.reshape({-1}).to(acc_dtype(a.hidden));  // [N] d loss / d logp
  const LMHead lm = make_lm_head(a, coef != 0);
  const at::Tensor targets_r = active_rows(lm, a.targets.reshape({-1}).to(at::kLong));
  const at::Tensor coef_r = active_rows(lm, coef);
  const at::Tensor logp_r = at::empty({lm.num_active}, coef.options());
  LMHeadGrads grads(lm, grads_wanted);
  for_each_chunk(lm, [&](int64_t s, int64_t n, const at::Tensor& hc, const at::Tensor& logits) {
    RowArgs r;
    r.mode = RowMode::GivenCoef;
    r.logits = logits;
    r.targets = targets_r.narrow(0, s, n);
    r.inv_temp = 1.0 / a.temperature;
    r.logp_out = logp_r.narrow(0, s, n);
    r.coef = coef_r.narrow(0, s, n);
    be.rows(r);
    grads.add_chunk(lm, s, n, hc, logits);
  });
  return grads.finish(a.hidden, a.weight);
}

namespace {

// Per-token weight w [B, T] with loss = sum(w * per_token_loss).
at::Tensor aggregation_weights(const at::Tensor& maskf, LossType loss_type,
                               std::optional<int64_t> max_completion_length,
                               std::optional<double> num_items_in_batch) {
  const int64_t B = maskf.size(0), T = maskf.size(1);
  switch (loss_type) {
    case LossType::Grpo:
    case LossType::Sapo: return maskf / (maskf.sum(1, true).clamp_min(1.0) * double(B));
    case LossType::Bnpo: return maskf / maskf.sum().clamp_min(1.0);
    case LossType::Dapo:
    case LossType::Cispo:
      return num_items_in_batch ? maskf / *num_items_in_batch : maskf / maskf.sum().clamp_min(1.0);
    case LossType::DrGrpo: return maskf / double(B * max_completion_length.value_or(T));
  }
  TORCH_CHECK(false, "unreachable loss type");
}

// The per-token surrogate's parameters (common/policy_loss.h); the loss type
// picks the surrogate.
SurrogateParams<double> surrogate_params(const PolicyLossArgs& a) {
  const SurrogateKind kind = a.loss_type == LossType::Cispo  ? SurrogateKind::Cispo
                             : a.loss_type == LossType::Sapo ? SurrogateKind::Sapo
                                                             : SurrogateKind::Clipped;
  return SurrogateParams<double>{a.eps_low, a.eps_high,           a.delta.value_or(0.0),  a.delta.has_value(),
                                 kind,      a.sapo_temperature_pos, a.sapo_temperature_neg, a.use_bias_correction_kl};
}

// The policy loss's per-token inputs of the active rows, each [N'] of the
// accumulation dtype (targets int64); undefined when not given.
struct PolicyRows {
  at::Tensor targets, mask, weight, adv, old_logp, ref_logp;
  at::Tensor seq_ratio, seq_grad;  // sequence level only (couple_sequences)
};

// Sequence-level importance sampling (GSPO): each token's ratio is its
// sequence's, so each token's d loss / d logp gathers the whole sequence's
// d loss / d ratio. Fills r.seq_ratio and r.seq_grad; costs one extra forward
// pass when off-policy (or when the ratio-weighted KL couples the tokens).
void couple_sequences(const LMHeadBackend& be, const LMHead& lm, const PolicyLossArgs& a, const at::Tensor& maskf,
                      const SurrogateParams<double>& clip, PolicyRows& r) {
  const int64_t B = maskf.size(0), T = maskf.size(1), N = B * T;
  const at::Tensor all_rows = at::arange(N, r.targets.options());
  const at::Tensor seq_of_r = active_rows(lm, all_rows).div(T, "floor");   // [N'] sequence index
  const at::Tensor lens = maskf.sum(1).clamp_min(1.0);                       // [B]
  // the ratio-weighted KL couples a sequence's tokens through its ratio, on-policy too
  const bool kl_coupled = a.use_bias_correction_kl && r.ref_logp.defined() && a.beta != 0.0;
  at::Tensor log_ratio = at::zeros({B}, maskf.options());                    // on-policy: ratio = 1
  at::Tensor logp_r;
  if (r.old_logp.defined() || kl_coupled) logp_r = active_logprobs(be, lm, r.targets, 1.0 / a.temperature, nullptr);
  if (r.old_logp.defined()) log_ratio.index_add_(0, seq_of_r, r.mask * (logp_r - r.old_logp)).div_(lens);
  const at::Tensor ratio = at::exp(log_ratio);                                // [B]
  r.seq_ratio = ratio.index_select(0, seq_of_r);
  // d loss / d logp_t = (sum_t' w_t' d per_t' / d ratio) * ratio * mask_t / len
  const at::Tensor dratio_r = be.surrogate_dratio(r.seq_ratio, r.adv, r.weight, logp_r,          // [N']
                                                  kl_coupled ? r.ref_logp : at::Tensor(), a.beta, clip);
  const at::Tensor per_seq = at::zeros({B}, maskf.options()).index_add_(0, seq_of_r, dratio_r);
  r.seq_grad = (per_seq * ratio / lens).index_select(0, seq_of_r) * r.mask;
}

// totals [kNumTokenStats] (the token_stats columns summed over the tokens)
// -> metrics [kNumPolicyLossMetrics], means over the mask maskf [B, T].
at::Tensor policy_loss_metrics(const at::Tensor& totals, const at::Tensor& maskf, bool has_ref) {
  const at::Tensor n_mask = maskf.sum().clamp_min(1.0);
  std::array<at::Tensor, kNumPolicyLossMetrics> m;
  m[kClipRatioLow] = totals[kStatClipLow] / n_mask;
  m[kClipRatioHigh] = totals[kStatClipHigh] / n_mask;
  m[kKlMean] = has_ref ? totals[kStatKl] / n_mask
                       : at::full({}, std::numeric_limits<double>::quiet_NaN(), maskf.options());
  return at::stack(m);
}

}  // namespace

PolicyLossOut fused_policy_loss(const LMHeadBackend& be, const PolicyLossArgs& a) {
  const int64_t B = a.hidden.size(0), T = a.hidden.size(1), N = B * T;

  // ---- per-token inputs, [B, T] then the active rows [N'] -----------------
  const auto acc = acc_dtype(a.hidden);
  const at::Tensor maskf = a.mask.to(acc);                                        // [B, T]
  const at::Tensor w = aggregation_weights(maskf, a.loss_type, a.max_completion_length, a.num_items_in_batch);
  const at::Tensor adv = a.advantages.dim() == 1 ? a.advantages.to(acc).unsqueeze(1).expand({B, T})
                                                 : a.advantages.to(acc);          // [B, T]
  const LMHead lm = make_lm_head(a, (maskf != 0).reshape({N}));
  auto rows_of = [&](const at::Tensor& t) { return active_rows(lm, t.reshape({N}).to(acc)); };
  PolicyRows r;
  r.targets = active_rows(lm, a.targets.reshape({N}).to(at::kLong));
  r.mask = rows_of(maskf);
  r.weight = rows_of(w);
  r.adv = rows_of(adv);
  if (a.old_logp.defined()) r.old_logp = rows_of(a.old_logp);
  if (a.ref_logp.defined()) r.ref_logp = rows_of(a.ref_logp);
  const SurrogateParams<double> clip = surrogate_params(a);
  if (a.importance_sampling_level == ISLevel::Sequence) couple_sequences(be, lm, a, maskf, clip, r);

  // ---- the fused pass ------------------------------------------------------
  const at::Tensor logp_r = at::empty({lm.num_active}, maskf.options());
  const at::Tensor stats_r = at::empty({lm.num_active, kNumTokenStats}, maskf.options());
  LMHeadGrads grads(lm, a.grads);
  for_each_chunk(lm, [&](int64_t s, int64_t n, const at::Tensor& hc, const at::Tensor& logits) {
    auto part = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, s, n) : t; };
    RowArgs row;
    row.mode = RowMode::PolicyLoss;
    row.logits = logits;
    row.targets = part(r.targets);
    row.inv_temp = 1.0 / a.temperature;
    row.logp_out = part(logp_r);
    row.weight = part(r.weight);
    row.adv = part(r.adv);
    row.old_logp = part(r.old_logp);
    row.ref_logp = part(r.ref_logp);
    row.seq_ratio = part(r.seq_ratio);
    row.seq_grad = part(r.seq_grad);
    row.mask = part(r.mask);
    row.clip = clip;
    row.beta = a.beta;
    row.token_stats = part(stats_r);
    be.rows(row);
    grads.add_chunk(lm, s, n, hc, logits);
  });

  // ---- reductions ------------------------------------------------------------
  const at::Tensor totals = stats_r.sum(0);  // [kNumTokenStats]
  auto [gh, gw, gb] = grads.finish(a.hidden, a.weight);
  return {totals[kStatLoss], policy_loss_metrics(totals, maskf, a.ref_logp.defined()),
          scatter_rows(lm, logp_r, N).view({B, T}), gh, gw, gb};
}

}  // namespace sgpo
