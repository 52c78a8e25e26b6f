// Op entry points shared by the CPU and CUDA registrations: every argument of
// every op is checked here, once, before the backend (or the LM-head driver,
// lm_head.cpp) runs; a failed check is a ValueError naming the argument
// (checks.h). Each entry hands its backend one argument struct (ops.h,
// lm_head.h). The Python wrappers in sgpo_engine/ops.py convert conveniences
// (numbers to per-row tensors, lists to tensors) and check nothing else.
#pragma once
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/isnan.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "ops.h"
#include "options.h"

namespace sgpo {

// group_offsets [P+1] int64, read on the host (free on CPU; on CUDA one small
// copy, as any check of them must): 0 = o_0 < o_1 < ... < o_P = N.
inline void check_group_offsets(const at::Tensor& group_offsets, int64_t n) {
  const at::Tensor host = group_offsets.to(at::kCPU).contiguous();
  const int64_t* o = host.data_ptr<int64_t>();
  const int64_t P = host.size(0) - 1;
  CHECK_ARG(o[0] == 0 && o[P] == n, group_offsets, "must start at 0 and end at N = ", n, ", got ", o[0], " and ",
            o[P]);
  for (int64_t g = 0; g < P; ++g)
    CHECK_ARG(o[g + 1] > o[g], group_offsets, "group ", g, " is empty or reversed (", o[g], " -> ", o[g + 1], ")");
}

// Values of rewards (finite) and rts (in [0, 1] or NaN). The CPU kernel
// checks them in its single pass; elsewhere they cost two extra passes and a
// host sync, made here.
inline void check_reward_values(const at::Tensor& rewards, const at::Tensor& rts) {
  CHECK_ARG(at::isfinite(rewards).all().item<bool>(), rewards, "non-finite value");
  if (rts.defined()) {
    const at::Tensor bad = ~at::isnan(rts) & ((rts < 0) | (rts > 1));
    CHECK_ARG(!bad.any().item<bool>(), rts, "expected values in [0, 1] or NaN (not judged)");
  }
}

// rewards [N] float; group_size > 0 with N % group_size == 0, or
// group_offsets [P+1] int64 (then group_size == 0); correct [N] bool?;
// rts [N] float? (NaN = not judged).
inline GroupAdvOut group_advantages_entry(GroupAdvOut (*impl)(const GroupAdvArgs&), const at::Tensor& rewards,
                                          int64_t group_size, const std::optional<at::Tensor>& group_offsets,
                                          const std::optional<at::Tensor>& correct,
                                          const std::optional<at::Tensor>& rts, std::string_view scope,
                                          std::string_view credit, double credit_beta, double credit_gamma,
                                          double credit_scale, std::string_view scale, double eps,
                                          double credited_std_floor) {
  CHECK_DIM(rewards, 1);
  CHECK_FLOAT(rewards);
  const int64_t n = rewards.size(0);
  CHECK_ARG(n > 0, rewards, "expected at least one reward");
  GroupAdvArgs a;
  a.rewards = rewards.contiguous();
  if (group_offsets.has_value()) {
    CHECK_ARG(group_size == 0, group_size, "give exactly one of group_size and group_offsets");
    CHECK_ARG(group_offsets->dim() == 1 && group_offsets->size(0) >= 2, *group_offsets,
              "expected shape [P+1] with P >= 1, got ", group_offsets->sizes());
    CHECK_DTYPE(*group_offsets, at::kLong);
    CHECK_DEVICE(*group_offsets, rewards);
    check_group_offsets(*group_offsets, n);
    a.offsets = group_offsets->contiguous();
    a.num_groups = group_offsets->size(0) - 1;
  } else {
    CHECK_ARG(group_size > 0, group_size, "expected a positive group size (or group_offsets), got ", group_size);
    CHECK_ARG(n % group_size == 0, group_size, "N = ", n, " rewards are not divisible by group_size = ", group_size);
    a.num_groups = n / group_size;
  }
  a.group_size = group_size;
  if (correct.has_value()) {
    CHECK_SHAPE(*correct, n);
    CHECK_DEVICE(*correct, rewards);
    a.correct = correct->to(at::kBool).contiguous();
  }
  if (rts.has_value()) {
    CHECK_SHAPE(*rts, n);
    CHECK_DEVICE(*rts, rewards);
    CHECK_FLOAT(*rts);
    a.rts = rts->contiguous();
  }
  if (!rewards.is_cpu()) check_reward_values(a.rewards, a.rts);
  a.credit.scope = parse_scope(scope);
  a.credit.credit = parse_credit(credit);
  a.scale = parse_scale(scale);
  CHECK_NUMBER(credit_beta, -INFINITY, INFINITY);
  CHECK_NUMBER(credit_gamma, -INFINITY, INFINITY);
  CHECK_NUMBER(credit_scale, -INFINITY, INFINITY);
  CHECK_NUMBER(eps, 0.0, INFINITY);
  CHECK_NUMBER(credited_std_floor, 0.0, INFINITY);
  a.credit.std_floor = credited_std_floor;
  // Credit needs both the verifier's verdict and the judge's score.
  if (!a.correct.defined() || !a.rts.defined()) a.credit.scope = Scope::Off;
  a.credit.credit_beta = credit_beta;
  a.credit.credit_gamma = credit_gamma;
  a.credit.credit_scale = credit_scale;
  a.eps = eps;
  return impl(a);
}

// Per-row sampling parameters [B], contiguous CPU tensors (on CUDA a check
// would sync the host every decoding step, so none runs there).
inline void check_sample_values(const at::Tensor& temperature, const at::Tensor& top_k, const at::Tensor& top_p,
                                const at::Tensor& min_p, const at::Tensor& uniform) {
  const double *t = temperature.data_ptr<double>(), *p = top_p.data_ptr<double>(), *m = min_p.data_ptr<double>(),
               *u = uniform.data_ptr<double>();
  const int64_t* k = top_k.data_ptr<int64_t>();
  for (int64_t i = 0; i < temperature.size(0); ++i) {
    CHECK_ARG(std::isfinite(t[i]) && t[i] >= 0, temperature, "invalid value ", t[i], " at row ", i, " (expected >= 0)");
    CHECK_ARG(k[i] >= 0, top_k, "invalid value ", k[i], " at row ", i, " (expected >= 0)");
    CHECK_ARG(p[i] > 0 && p[i] <= 1, top_p, "invalid value ", p[i], " at row ", i, " (expected in (0, 1])");
    CHECK_ARG(m[i] >= 0 && m[i] <= 1, min_p, "invalid value ", m[i], " at row ", i, " (expected in [0, 1])");
    CHECK_ARG(u[i] >= 0 && u[i] < 1, uniform, "invalid value ", u[i], " at row ", i, " (expected in [0, 1))");
  }
}

// logits [B, V] float; temperature, top_p, min_p, uniform [B] float64;
// top_k [B] int64.
inline std::tuple<at::Tensor, at::Tensor> sample_entry(
    std::tuple<at::Tensor, at::Tensor> (*impl)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const at::Tensor&, const at::Tensor&),
    const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k, const at::Tensor& top_p,
    const at::Tensor& min_p, const at::Tensor& uniform) {
  CHECK_ARG(logits.dim() == 2 && logits.size(1) > 0, logits, "expected shape [B, V] with V > 0, got ",
            logits.sizes());
  CHECK_FLOAT(logits);
  const int64_t B = logits.size(0);
  CHECK_SHAPE(temperature, B);
  CHECK_SHAPE(top_k, B);
  CHECK_SHAPE(top_p, B);
  CHECK_SHAPE(min_p, B);
  CHECK_SHAPE(uniform, B);
  CHECK_DTYPE(temperature, at::kDouble);
  CHECK_DTYPE(top_k, at::kLong);
  CHECK_DTYPE(top_p, at::kDouble);
  CHECK_DTYPE(min_p, at::kDouble);
  CHECK_DTYPE(uniform, at::kDouble);
  CHECK_DEVICE(temperature, logits);
  CHECK_DEVICE(top_k, logits);
  CHECK_DEVICE(top_p, logits);
  CHECK_DEVICE(min_p, logits);
  CHECK_DEVICE(uniform, logits);
  const at::Tensor t = temperature.contiguous(), k = top_k.contiguous(), p = top_p.contiguous(),
                   m = min_p.contiguous(), u = uniform.contiguous();
  if (logits.is_cpu()) check_sample_values(t, k, p, m, u);
  return impl(logits.contiguous(), t, k, p, m, u);
}

// q [S, Hq, D]; prefix_k, prefix_v [P, Hkv, Lp, D]; prefix_len [P] int64;
// prefix_of [S] int64; suffix_k, suffix_v [C, Hkv, Ls, D]; suffix_len [S]
// int64; slot [S] int64; Hq % Hkv == 0; window >= 0. The caches must be
// contiguous and of q's dtype; index values are range-checked on CPU only (on
// CUDA that would sync every step: the kernel clamps lengths instead).
inline at::Tensor decode_attention_entry(at::Tensor (*impl)(const DecodeAttnArgs&), const at::Tensor& q,
                                         const at::Tensor& prefix_k, const at::Tensor& prefix_v,
                                         const at::Tensor& prefix_len, const at::Tensor& prefix_of,
                                         const at::Tensor& suffix_k, const at::Tensor& suffix_v,
                                         const at::Tensor& suffix_len, const at::Tensor& slot, double scale,
                                         int64_t window) {
  CHECK_ARG(q.dim() == 3, q, "expected [S, Hq, D], got ", q.sizes());
  const int64_t S = q.size(0), Hq = q.size(1), D = q.size(2);
  CHECK_ARG(prefix_k.dim() == 4 && prefix_k.size(3) == D, prefix_k, "expected [P, Hkv, Lp, D = ", D, "], got ",
            prefix_k.sizes());
  CHECK_ARG(prefix_v.sizes() == prefix_k.sizes(), prefix_v, "expected the shape of prefix_k ", prefix_k.sizes(),
            ", got ", prefix_v.sizes());
  const int64_t P = prefix_k.size(0), Hkv = prefix_k.size(1);
  CHECK_ARG(Hkv > 0 && Hq % Hkv == 0, q, "Hq = ", Hq, " query heads is not a multiple of Hkv = ", Hkv);
  CHECK_ARG(suffix_k.dim() == 4 && suffix_k.size(1) == Hkv && suffix_k.size(3) == D, suffix_k,
            "expected [C, Hkv = ", Hkv, ", Ls, D = ", D, "], got ", suffix_k.sizes());
  CHECK_ARG(suffix_v.sizes() == suffix_k.sizes(), suffix_v, "expected the shape of suffix_k ", suffix_k.sizes(),
            ", got ", suffix_v.sizes());
  for (const auto& [t, name] : {std::pair{&prefix_k, "prefix_k"}, std::pair{&prefix_v, "prefix_v"},
                                std::pair{&suffix_k, "suffix_k"}, std::pair{&suffix_v, "suffix_v"}}) {
    TORCH_CHECK_VALUE(t->scalar_type() == q.scalar_type(), name, ": dtype ", t->scalar_type(), " differs from q's ",
                      q.scalar_type());
    TORCH_CHECK_VALUE(t->device() == q.device(), name, ": expected device ", q.device());
    TORCH_CHECK_VALUE(t->is_contiguous(), name, ": expected a contiguous cache");
  }
  CHECK_SHAPE(prefix_len, P);
  CHECK_SHAPE(prefix_of, S);
  CHECK_SHAPE(suffix_len, S);
  CHECK_SHAPE(slot, S);
  for (const auto& [t, name, hi] : {std::tuple{&prefix_len, "prefix_len", prefix_k.size(2)},
                                    std::tuple{&prefix_of, "prefix_of", P - 1},
                                    std::tuple{&suffix_len, "suffix_len", suffix_k.size(2)},
                                    std::tuple{&slot, "slot", suffix_k.size(0) - 1}}) {
    TORCH_CHECK_VALUE(t->scalar_type() == at::kLong, name, ": expected int64");
    TORCH_CHECK_VALUE(t->device() == q.device(), name, ": expected device ", q.device());
    if (t->is_cpu() && t->numel() > 0) {
      TORCH_CHECK_VALUE(t->min().item<int64_t>() >= 0 && t->max().item<int64_t>() <= hi, name,
                        ": values must lie in [0, ", hi, "]");
    }
  }
  CHECK_ARG(window >= 0, window, "expected >= 0 (0 = no sliding window), got ", window);
  return impl(DecodeAttnArgs{q.contiguous(), prefix_k, prefix_v, prefix_len.contiguous(), prefix_of.contiguous(),
                             suffix_k, suffix_v, suffix_len.contiguous(), slot.contiguous(), scale, window});
}

// ---- the LM-head ops (driver: lm_head.cpp) ----------------------------------

// hidden [..., H] float; weight [V, H] (hidden's dtype and device); bias [V]?;
// targets [...] = hidden's shape without H, int64 (or int32) ids in [0, V);
// temperature > 0; chunk_size > 0 or nullopt.
inline LMHeadArgs check_lm_head(const at::Tensor& hidden, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& targets, double temperature,
                                std::optional<int64_t> chunk_size) {
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
  return LMHeadArgs{hidden, weight, bias.value_or(at::Tensor()), targets, temperature, chunk_size};
}

// LM-head arguments (check_lm_head); return_entropy: also the entropy.
inline std::tuple<at::Tensor, at::Tensor> fused_logprobs_entry(const LMHeadBackend& be, const at::Tensor& hidden,
                                                               const at::Tensor& weight,
                                                               const std::optional<at::Tensor>& bias,
                                                               const at::Tensor& targets, double temperature,
                                                               std::optional<int64_t> chunk_size,
                                                               bool return_entropy) {
  return fused_logprobs(be, check_lm_head(hidden, weight, bias, targets, temperature, chunk_size), return_entropy);
}

// grad_logp [...] (targets' shape) plus the LM-head arguments (check_lm_head).
inline ParamGrads fused_logprobs_backward_entry(const LMHeadBackend& be, const at::Tensor& grad_logp,
                                                const at::Tensor& hidden, const at::Tensor& weight,
                                                const std::optional<at::Tensor>& bias, const at::Tensor& targets,
                                                double temperature, std::optional<int64_t> chunk_size,
                                                bool grad_hidden, bool grad_weight, bool grad_bias) {
  const LMHeadArgs a = check_lm_head(hidden, weight, bias, targets, temperature, chunk_size);
  CHECK_ARG(grad_logp.sizes() == targets.sizes(), grad_logp, "expected shape ", targets.sizes(), ", got ",
            grad_logp.sizes());
  return fused_logprobs_backward(be, grad_logp, a, GradsWanted{grad_hidden, grad_weight, grad_bias});
}

// hidden [B, T, H]; mask, targets, old_logp?, ref_logp? [B, T]; advantages
// [B] or [B, T] (plus check_lm_head's); the numbers and options as
// PolicyLossArgs documents them (lm_head.h).
inline PolicyLossOut fused_policy_loss_entry(
    const LMHeadBackend& be, const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& targets, const at::Tensor& mask, const at::Tensor& advantages,
    const std::optional<at::Tensor>& old_logp, const std::optional<at::Tensor>& ref_logp, double beta,
    double eps_low, double eps_high, std::optional<double> delta, double sapo_temperature_pos,
    double sapo_temperature_neg, bool use_bias_correction_kl, std::string_view loss_type,
    std::string_view importance_sampling_level, double temperature, std::optional<int64_t> max_completion_length,
    std::optional<double> num_items_in_batch, std::optional<int64_t> chunk_size, bool grad_hidden,
    bool grad_weight, bool grad_bias) {
  // the options first: an unknown one is reported before any shape
  const LossType loss = parse_loss_type(loss_type);
  const ISLevel level = parse_is_level(importance_sampling_level);
  CHECK_ARG(hidden.dim() == 3, hidden, "expected [B, T, H], got ", hidden.sizes());
  PolicyLossArgs a{check_lm_head(hidden, weight, bias, targets, temperature, chunk_size)};
  const int64_t B = hidden.size(0), T = hidden.size(1);
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
  a.mask = mask;
  a.advantages = advantages;
  a.old_logp = old_logp.value_or(at::Tensor());
  a.ref_logp = ref_logp.value_or(at::Tensor());
  a.beta = beta;
  a.eps_low = eps_low;
  a.eps_high = eps_high;
  a.delta = delta;
  a.sapo_temperature_pos = sapo_temperature_pos;
  a.sapo_temperature_neg = sapo_temperature_neg;
  a.use_bias_correction_kl = use_bias_correction_kl;
  a.loss_type = loss;
  a.importance_sampling_level = level;
  a.max_completion_length = max_completion_length;
  a.num_items_in_batch = num_items_in_batch;
  a.grads = GradsWanted{grad_hidden, grad_weight, grad_bias};
  return fused_policy_loss(be, a);
}

// The registered op functions, one set per backend. BE provides
// group_advantages, sample and decode_attention (function pointers) and
// lm_head() (lm_head.h).
template <typename BE>
struct OpEntries {
  using Opt = std::optional<at::Tensor>;

  static GroupAdvOut group_advantages(const at::Tensor& rewards, int64_t group_size, const Opt& group_offsets,
                                      const Opt& correct, const Opt& rts, std::string_view scope,
                                      std::string_view credit, double credit_beta, double credit_gamma,
                                      double credit_scale, std::string_view scale, double eps,
                                      double credited_std_floor) {
    return group_advantages_entry(BE::group_advantages, rewards, group_size, group_offsets, correct, rts, scope,
                                  credit, credit_beta, credit_gamma, credit_scale, scale, eps, credited_std_floor);
  }

  static at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& prefix_k, const at::Tensor& prefix_v,
                                     const at::Tensor& prefix_len, const at::Tensor& prefix_of,
                                     const at::Tensor& suffix_k, const at::Tensor& suffix_v,
                                     const at::Tensor& suffix_len, const at::Tensor& slot, double scale,
                                     int64_t window) {
    return decode_attention_entry(BE::decode_attention, q, prefix_k, prefix_v, prefix_len, prefix_of, suffix_k,
                                  suffix_v, suffix_len, slot, scale, window);
  }

  static std::tuple<at::Tensor, at::Tensor> sample(const at::Tensor& logits, const at::Tensor& temperature,
                                                   const at::Tensor& top_k, const at::Tensor& top_p,
                                                   const at::Tensor& min_p, const at::Tensor& uniform) {
    return sample_entry(BE::sample, logits, temperature, top_k, top_p, min_p, uniform);
  }

  static PolicyLossOut fused_policy_loss(const at::Tensor& hidden, const at::Tensor& weight, const Opt& bias,
                                         const at::Tensor& targets, const at::Tensor& mask,
                                         const at::Tensor& advantages, const Opt& old_logp, const Opt& ref_logp,
                                         double beta, double eps_low, double eps_high, std::optional<double> delta,
                                         double sapo_temperature_pos, double sapo_temperature_neg,
                                         bool use_bias_correction_kl, std::string_view loss_type,
                                         std::string_view importance_sampling_level, double temperature,
                                         std::optional<int64_t> max_completion_length,
                                         std::optional<double> num_items_in_batch,
                                         std::optional<int64_t> chunk_size, bool grad_hidden, bool grad_weight,
                                         bool grad_bias) {
    return fused_policy_loss_entry(BE::lm_head(), hidden, weight, bias, targets, mask, advantages, old_logp,
                                   ref_logp, beta, eps_low, eps_high, delta, sapo_temperature_pos,
                                   sapo_temperature_neg, use_bias_correction_kl, loss_type,
                                   importance_sampling_level, temperature, max_completion_length,
                                   num_items_in_batch, chunk_size, grad_hidden, grad_weight, grad_bias);
  }

  static std::tuple<at::Tensor, at::Tensor> fused_logprobs(const at::Tensor& hidden, const at::Tensor& weight,
                                                           const Opt& bias, const at::Tensor& targets,
                                                           double temperature, std::optional<int64_t> chunk_size,
                                                           bool return_entropy) {
    return fused_logprobs_entry(BE::lm_head(), hidden, weight, bias, targets, temperature, chunk_size,
                                return_entropy);
  }

  static ParamGrads fused_logprobs_backward(const at::Tensor& grad_logp, const at::Tensor& hidden,
                                            const at::Tensor& weight, const Opt& bias, const at::Tensor& targets,
                                            double temperature, std::optional<int64_t> chunk_size,
                                            bool grad_hidden, bool grad_weight, bool grad_bias) {
    return fused_logprobs_backward_entry(BE::lm_head(), grad_logp, hidden, weight, bias, targets, temperature,
                                         chunk_size, grad_hidden, grad_weight, grad_bias);
  }
};

// Registers every op for one backend (called from TORCH_LIBRARY_IMPL blocks).
template <typename BE>
void register_backend(torch::Library& m) {
  using Ops = OpEntries<BE>;
  m.impl("group_advantages", &Ops::group_advantages);
  m.impl("sample", &Ops::sample);
  m.impl("decode_attention", &Ops::decode_attention);
  m.impl("fused_policy_loss", &Ops::fused_policy_loss);
  m.impl("fused_logprobs", &Ops::fused_logprobs);
  m.impl("fused_logprobs_backward", &Ops::fused_logprobs_backward);
}

}  // namespace sgpo
