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

#include <cmath>
#include <limits>

#include "checks.h"

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

// hidden [..., H] float; weight [V, H] (hidden's dtype and device); bias [V]?;
// targets [...] = hidden's shape without H, int64 (or int32) ids in [0, V).
void check_lm_head(const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   const at::Tensor& targets, double temperature, std::optional<int64_t> chunk_size) {
  CHECK_ARG(hidden.dim() >= 1, hidden, "expected [..., H], got a scalar");
  CHECK_FLOAT(hidden);
  CHECK_ARG(weight.dim() == 2 && weight.size(1) == hidden.size(-1), weight, "expected [V, H] with H = ",
            hidden.size(-1), " (hidden's last dim), got ", weight.sizes());
  CHECK_ARG(weight.size(0) > 0, weight, "expected V > 0");
  CHECK_ARG(weight.scalar_type() == hidden.scalar_type(), weight, "dtype ", weight.scalar_type(),
            " differs from hidden's ", hidden.scalar_type());
  CHECK_DEVICE(weight, hidden);
  if (bias.has_value()) {
    CHECK_SHAPE(*bias, weight.size(0));
    CHECK_ARG(bias->scalar_type() == hidden.scalar_type(), *bias, "dtype ", bias->scalar_type(),
              " differs from hidden's ", hidden.scalar_type());
    CHECK_DEVICE(*bias, hidden);
  }
  CHECK_ARG(targets.sizes() == hidden.sizes().slice(0, hidden.dim() - 1), targets, "expected shape ",
            hidden.sizes().slice(0, hidden.dim() - 1), " (hidden without H), got ", targets.sizes());
  CHECK_ARG(targets.scalar_type() == at::kLong || targets.scalar_type() == at::kInt, targets,
            "expected int64 token ids, got ", targets.scalar_type());
  CHECK_DEVICE(targets, hidden);
  if (targets.numel() > 0) {  // on CUDA a host sync, once per call (not per chunk)
    const int64_t lo = targets.min().item<int64_t>(), hi = targets.max().item<int64_t>();
    CHECK_ARG(lo >= 0 && hi < weight.size(0), targets, "token ids must lie in [0, V = ", weight.size(0),
              "), got min ", lo, " max ", hi);
  }
  CHECK_POSITIVE(temperature);
  CHECK_ARG(!chunk_size || *chunk_size > 0, chunk_size, "expected a positive number of tokens, got ",
            chunk_size.value_or(0));
}

// active: [N] bool or undefined (all rows).
LMHead make_lm_head(const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                    const at::Tensor& active, std::optional<int64_t> chunk_size) {
  LMHead lm;
  const int64_t H = hidden.size(-1);
  lm.h = hidden.reshape({-1, H}).contiguous();
  lm.w = weight.contiguous();
  if (bias.has_value()) lm.bias = bias->contiguous();
  lm.num_active = lm.h.size(0);
  if (active.defined()) {
    at::Tensor idx = at::nonzero(active).reshape({-1});
    if (idx.size(0) < lm.h.size(0)) {
      lm.rows = idx;
      lm.num_active = idx.size(0);
    }
  }
  lm.chunk = rows_per_chunk(chunk_size, weight.size(0), hidden);
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

  LMHeadGrads(const LMHead& lm, bool gh, bool gw, bool gb) {
    const auto acc = acc_dtype(lm.h);
    // Skipped rows get zero gradient, so zero-fill only when rows are skipped.
    if (gh) h = lm.rows.defined() ? at::zeros_like(lm.h) : at::empty_like(lm.h);
    if (gw) w = at::zeros(lm.w.sizes(), lm.w.options().dtype(acc));
    if (gb) b = at::zeros({lm.w.size(0)}, lm.w.options().dtype(acc));
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
  std::tuple<at::Tensor, at::Tensor, at::Tensor> finish(const at::Tensor& hidden, const at::Tensor& weight) {
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

std::tuple<at::Tensor, at::Tensor> fused_logprobs(const LMHeadBackend& be, const at::Tensor& hidden,
                                                  const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                                  const at::Tensor& targets, double temperature,
                                                  std::optional<int64_t> chunk_size, bool return_entropy) {
  check_lm_head(hidden, weight, bias, targets, temperature, chunk_size);
  const LMHead lm = make_lm_head(hidden, weight, bias, at::Tensor(), chunk_size);
  at::Tensor entropy;
  at::Tensor logp = active_logprobs(be, lm, targets.reshape({-1}).to(at::kLong).contiguous(),
                                    1.0 / temperature, return_entropy ? &entropy : nullptr);
  return {logp.view(targets.sizes()),
          return_entropy ? entropy.view(targets.sizes()) : at::empty({0}, logp.options())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_logprobs_backward(
    const LMHeadBackend& be, const at::Tensor& grad_logp, const at::Tensor& hidden, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& targets, double temperature,
    std::optional<int64_t> chunk_size, bool grad_hidden, bool grad_weight, bool grad_bias) {
  check_lm_head(hidden, weight, bias, targets, temperature, chunk_size);
  CHECK_ARG(grad_logp.sizes() == targets.sizes(), grad_logp, "expected shape ", targets.sizes(), ", got ",
            grad_logp.sizes());
  const at::Tensor coef = grad_logp.reshape({-1}).to(acc_dtype(hidden));
  const LMHead lm = make_lm_head(hidden, weight, bias, coef != 0, chunk_size);
  const at::Tensor targets_r = active_rows(lm, targets.reshape({-1}).to(at::kLong));
  const at::Tensor coef_r = active_rows(lm, coef);
  const at::Tensor logp_r = at::empty({lm.num_active}, coef.options());
  LMHeadGrads grads(lm, grad_hidden, grad_weight, grad_bias && bias.has_value());
  for_each_chunk(lm, [&](int64_t s, int64_t n, const at::Tensor& hc, const at::Tensor& logits) {
    RowArgs a;
    a.mode = RowMode::GivenCoef;
    a.logits = logits;
    a.targets = targets_r.narrow(0, s, n);
    a.inv_temp = 1.0 / temperature;
    a.logp_out = logp_r.narrow(0, s, n);
    a.coef = coef_r.narrow(0, s, n);
    be.rows(a);
    grads.add_chunk(lm, s, n, hc, logits);
  });
  return grads.finish(hidden, weight);
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

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_policy_loss(
    const LMHeadBackend& be, const at::Tensor& hidden, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& targets, const at::Tensor& mask,
    const at::Tensor& advantages, const std::optional<at::Tensor>& old_logp,
    const std::optional<at::Tensor>& ref_logp, double beta, double eps_low, double eps_high,
    std::optional<double> delta, double sapo_temperature_pos, double sapo_temperature_neg,
    bool use_bias_correction_kl, LossType loss_type,
    ISLevel level, double temperature,
    std::optional<int64_t> max_completion_length, std::optional<double> num_items_in_batch,
    std::optional<int64_t> chunk_size, bool grad_hidden, bool grad_weight, bool grad_bias) {
  // ---- checks -------------------------------------------------------------
  // hidden [B, T, H]; mask, targets, old_logp?, ref_logp? [B, T];
  // advantages [B] or [B, T] (plus check_lm_head's).
  CHECK_ARG(hidden.dim() == 3, hidden, "expected [B, T, H], got ", hidden.sizes());
  check_lm_head(hidden, weight, bias, targets, temperature, chunk_size);
  const int64_t B = hidden.size(0), T = hidden.size(1), N = B * T;
  CHECK_SHAPE(mask, B, T);
  CHECK_DEVICE(mask, hidden);
  CHECK_ARG(advantages.dim() >= 1 && advantages.size(0) == B &&
                (advantages.dim() == 1 || advantages.sizes() == targets.sizes()),
            advantages, "expected [B] = [", B, "] or [B, T] = ", targets.sizes(), ", got ", advantages.sizes());
  CHECK_FLOAT(advantages);
  CHECK_DEVICE(advantages, hidden);
  if (old_logp) {
    CHECK_SHAPE(*old_logp, B, T);
    CHECK_FLOAT(*old_logp);
    CHECK_DEVICE(*old_logp, hidden);
  }
  if (ref_logp) {
    CHECK_SHAPE(*ref_logp, B, T);
    CHECK_FLOAT(*ref_logp);
    CHECK_DEVICE(*ref_logp, hidden);
  }
  CHECK_NUMBER(beta, 0.0, INFINITY);
  CHECK_NUMBER(eps_low, 0.0, INFINITY);
  CHECK_NUMBER(eps_high, 0.0, INFINITY);
  if (delta) CHECK_POSITIVE(*delta);
  CHECK_POSITIVE(sapo_temperature_pos);
  CHECK_POSITIVE(sapo_temperature_neg);
  CHECK_ARG(!max_completion_length || *max_completion_length > 0, max_completion_length, "expected > 0, got ",
            max_completion_length.value_or(0));
  if (num_items_in_batch) CHECK_POSITIVE(*num_items_in_batch);
  const bool seq_level = level == ISLevel::Sequence;

  // ---- per-token inputs, [B, T] then the active rows [N'] -----------------
  const auto acc = acc_dtype(hidden);
  const at::Tensor maskf = mask.to(acc);                                          // [B, T]
  const at::Tensor w = aggregation_weights(maskf, loss_type, max_completion_length, num_items_in_batch);
  const at::Tensor adv = advantages.dim() == 1 ? advantages.to(acc).unsqueeze(1).expand({B, T})
                                               : advantages.to(acc);              // [B, T]
  const LMHead lm = make_lm_head(hidden, weight, bias, (maskf != 0).reshape({N}), chunk_size);
  auto rows_of = [&](const at::Tensor& t) { return active_rows(lm, t.reshape({N}).to(acc)); };
  const at::Tensor targets_r = active_rows(lm, targets.reshape({N}).to(at::kLong));
  const at::Tensor mask_r = rows_of(maskf), w_r = rows_of(w), adv_r = rows_of(adv);
  const at::Tensor old_r = old_logp.has_value() ? rows_of(*old_logp) : at::Tensor();
  const at::Tensor ref_r = ref_logp.has_value() ? rows_of(*ref_logp) : at::Tensor();
  const SurrogateKind kind = loss_type == LossType::Cispo  ? SurrogateKind::Cispo
                             : loss_type == LossType::Sapo ? SurrogateKind::Sapo
                                                           : SurrogateKind::Clipped;
  const SurrogateParams<double> clip{eps_low, eps_high,           delta.value_or(0.0),  delta.has_value(),
                                     kind,    sapo_temperature_pos, sapo_temperature_neg, use_bias_correction_kl};
  const double inv_temp = 1.0 / temperature;

  // ---- sequence-level ratios: one extra forward pass when off-policy ------
  at::Tensor seq_ratio_r, seq_grad_r;
  if (seq_level) {
    const at::Tensor all_rows = at::arange(N, targets_r.options());
    const at::Tensor seq_of_r = active_rows(lm, all_rows).div(T, "floor");   // [N'] sequence index
    const at::Tensor lens = maskf.sum(1).clamp_min(1.0);                       // [B]
    // the ratio-weighted KL couples a sequence's tokens through its ratio, on-policy too
    const bool kl_coupled = use_bias_correction_kl && ref_r.defined() && beta != 0.0;
    at::Tensor log_ratio = at::zeros({B}, maskf.options());                    // on-policy: ratio = 1
    at::Tensor logp_r;
    if (old_r.defined() || kl_coupled) logp_r = active_logprobs(be, lm, targets_r, inv_temp, nullptr);
    if (old_r.defined()) log_ratio.index_add_(0, seq_of_r, mask_r * (logp_r - old_r)).div_(lens);
    const at::Tensor ratio = at::exp(log_ratio);                                // [B]
    seq_ratio_r = ratio.index_select(0, seq_of_r);
    // d loss / d logp_t = (sum_t' w_t' d per_t' / d ratio) * ratio * mask_t / len
    const at::Tensor dratio_r = be.surrogate_dratio(seq_ratio_r, adv_r, w_r, logp_r,            // [N']
                                                    kl_coupled ? ref_r : at::Tensor(), beta, clip);
    const at::Tensor per_seq = at::zeros({B}, maskf.options()).index_add_(0, seq_of_r, dratio_r);
    seq_grad_r = (per_seq * ratio / lens).index_select(0, seq_of_r) * mask_r;
  }

  // ---- the fused pass ------------------------------------------------------
  const at::Tensor logp_r = at::empty({lm.num_active}, maskf.options());
  const at::Tensor stats_r = at::empty({lm.num_active, 4}, maskf.options());
  LMHeadGrads grads(lm, grad_hidden, grad_weight, grad_bias && bias.has_value());
  for_each_chunk(lm, [&](int64_t s, int64_t n, const at::Tensor& hc, const at::Tensor& logits) {
    auto part = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, s, n) : t; };
    RowArgs a;
    a.mode = RowMode::PolicyLoss;
    a.logits = logits;
    a.targets = part(targets_r);
    a.inv_temp = inv_temp;
    a.logp_out = part(logp_r);
    a.weight = part(w_r);
    a.adv = part(adv_r);
    a.old_logp = part(old_r);
    a.ref_logp = part(ref_r);
    a.seq_ratio = part(seq_ratio_r);
    a.seq_grad = part(seq_grad_r);
    a.mask = part(mask_r);
    a.clip = clip;
    a.beta = beta;
    a.token_stats = part(stats_r);
    be.rows(a);
    grads.add_chunk(lm, s, n, hc, logits);
  });

  // ---- reductions ------------------------------------------------------------
  const at::Tensor totals = stats_r.sum(0);  // [4]
  const at::Tensor n_mask = maskf.sum().clamp_min(1.0);
  const at::Tensor kl_mean = ref_logp.has_value()
                                 ? totals[1] / n_mask
                                 : at::full({}, std::numeric_limits<double>::quiet_NaN(), maskf.options());
  const at::Tensor metrics = at::stack({totals[2] / n_mask, totals[3] / n_mask, kl_mean});
  auto [gh, gw, gb] = grads.finish(hidden, weight);
  return {totals[0], metrics, scatter_rows(lm, logp_r, N).view({B, T}), gh, gw, gb};
}

}  // namespace sgpo
