// Op entry points shared by the CPU and CUDA registrations: parse and check
// the arguments once, then call the backend. Errors name the argument.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "ops.h"

namespace sgpo {

inline void check_1d(const at::Tensor& t, const char* name, int64_t n) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, name, ": expected shape [", n, "], got ", t.sizes());
}

inline GroupAdvOut group_advantages_entry(
    GroupAdvOut (*impl)(const GroupAdvArgs&), const at::Tensor& rewards, int64_t group_size,
    const std::optional<at::Tensor>& offsets, const std::optional<at::Tensor>& correct,
    const std::optional<at::Tensor>& rts, const std::string& scope, const std::string& credit,
    double beta, double gamma, double credit_scale, const std::string& scale, double eps) {
  GroupAdvArgs a;
  TORCH_CHECK(rewards.dim() == 1, "rewards: expected a 1-D tensor [N], got shape ", rewards.sizes());
  TORCH_CHECK(at::isFloatingType(rewards.scalar_type()), "rewards: expected a float tensor, got ",
              rewards.scalar_type());
  const int64_t n = rewards.size(0);
  TORCH_CHECK(n > 0, "rewards: expected at least one reward");
  a.rewards = rewards.contiguous();
  if (offsets.has_value()) {
    TORCH_CHECK(group_size == 0, "group_size and group_offsets: give exactly one");
    const at::Tensor& o = *offsets;
    TORCH_CHECK(o.dim() == 1 && o.size(0) >= 2, "group_offsets: expected shape [P+1] with P >= 1, got ",
                o.sizes());
    TORCH_CHECK(o.scalar_type() == at::kLong, "group_offsets: expected int64, got ", o.scalar_type());
    TORCH_CHECK(o.device() == rewards.device(), "group_offsets: expected device ", rewards.device());
    a.offsets = o.contiguous();
    a.num_groups = o.size(0) - 1;
  } else {
    TORCH_CHECK(group_size > 0, "group_size: expected a positive group size, got ", group_size);
    TORCH_CHECK(n % group_size == 0, "group_size: N = ", n, " rewards are not divisible by group_size = ",
                group_size);
    a.num_groups = n / group_size;
  }
  a.group_size = group_size;
  if (correct.has_value()) {
    check_1d(*correct, "correct", n);
    TORCH_CHECK(correct->device() == rewards.device(), "correct: expected device ", rewards.device());
    a.correct = correct->to(at::kBool).contiguous();
  }
  if (rts.has_value()) {
    check_1d(*rts, "rts", n);
    TORCH_CHECK(rts->device() == rewards.device(), "rts: expected device ", rewards.device());
    TORCH_CHECK(at::isFloatingType(rts->scalar_type()), "rts: expected a float tensor");
    a.rts = rts->contiguous();
  }
  if (scope == "all_negative") a.credit.scope = Scope::AllNegative;
  else if (scope == "all_incorrect") a.credit.scope = Scope::AllIncorrect;
  else if (scope == "off") a.credit.scope = Scope::Off;
  else TORCH_CHECK(false, "scope: expected 'all_negative', 'all_incorrect' or 'off', got '", scope, "'");
  if (credit == "sigmoid") a.credit.credit = Credit::Sigmoid;
  else if (credit == "linear") a.credit.credit = Credit::Linear;
  else TORCH_CHECK(false, "credit: expected 'sigmoid' or 'linear', got '", credit, "'");
  if (scale == "group") a.scale = Scale::Group;
  else if (scale == "batch") a.scale = Scale::Batch;
  else if (scale == "none") a.scale = Scale::None;
  else TORCH_CHECK(false, "scale: expected 'group', 'batch' or 'none', got '", scale, "'");
  // Credit needs both the verifier's verdict and the judge's score.
  if (!a.correct.defined() || !a.rts.defined()) a.credit.scope = Scope::Off;
  a.credit.beta = beta;
  a.credit.gamma = gamma;
  a.credit.credit_scale = credit_scale;
  TORCH_CHECK(eps >= 0, "eps: expected >= 0, got ", eps);
  a.eps = eps;
  return impl(a);
}

inline std::tuple<at::Tensor, at::Tensor> sample_entry(
    std::tuple<at::Tensor, at::Tensor> (*impl)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const at::Tensor&, const at::Tensor&),
    const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& top_k,
    const at::Tensor& top_p, const at::Tensor& min_p, const at::Tensor& uniform) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) > 0, "logits: expected shape [B, V] with V > 0, got ",
              logits.sizes());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), "logits: expected a float tensor");
  const int64_t b = logits.size(0);
  const std::pair<const at::Tensor*, const char*> params[] = {
      {&temperature, "temperature"}, {&top_p, "top_p"}, {&min_p, "min_p"}, {&uniform, "uniform"}};
  for (const auto& [t, name] : params) {
    check_1d(*t, name, b);
    TORCH_CHECK(t->scalar_type() == at::kDouble, name, ": expected float64 (one value per row)");
    TORCH_CHECK(t->device() == logits.device(), name, ": expected device ", logits.device());
  }
  check_1d(top_k, "top_k", b);
  TORCH_CHECK(top_k.scalar_type() == at::kLong, "top_k: expected int64");
  TORCH_CHECK(top_k.device() == logits.device(), "top_k: expected device ", logits.device());
  return impl(logits.contiguous(), temperature.contiguous(), top_k.contiguous(), top_p.contiguous(),
              min_p.contiguous(), uniform.contiguous());
}

// The registered op functions, one set per backend. BE provides
// group_advantages and sample (function pointers) and lm_head().
template <typename BE>
struct OpEntries {
  using Opt = std::optional<at::Tensor>;
  using T6 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

  static GroupAdvOut group_advantages(const at::Tensor& rewards, int64_t group_size, const Opt& offsets,
                                      const Opt& correct, const Opt& rts, std::string_view scope,
                                      std::string_view credit, double beta, double gamma,
                                      double credit_scale, std::string_view scale, double eps) {
    return group_advantages_entry(BE::group_advantages, rewards, group_size, offsets, correct, rts,
                                  std::string(scope), std::string(credit), beta, gamma, credit_scale,
                                  std::string(scale), eps);
  }

  static std::tuple<at::Tensor, at::Tensor> sample(const at::Tensor& logits, const at::Tensor& temperature,
                                                   const at::Tensor& top_k, const at::Tensor& top_p,
                                                   const at::Tensor& min_p, const at::Tensor& uniform) {
    return sample_entry(BE::sample, logits, temperature, top_k, top_p, min_p, uniform);
  }

  static T6 fused_policy_loss(const at::Tensor& hidden, const at::Tensor& weight, const Opt& bias,
                              const at::Tensor& targets, const at::Tensor& mask,
                              const at::Tensor& advantages, const Opt& old_logp, const Opt& ref_logp,
                              double beta, double eps_low, double eps_high, std::optional<double> delta,
                              std::string_view loss_type, std::string_view level, double temperature,
                              std::optional<int64_t> max_completion_length,
                              std::optional<double> num_items_in_batch,
                              std::optional<int64_t> chunk_size, bool grad_hidden, bool grad_weight,
                              bool grad_bias) {
    return sgpo::fused_policy_loss(BE::lm_head(), hidden, weight, bias, targets, mask, advantages,
                                   old_logp, ref_logp, beta, eps_low, eps_high, delta,
                                   std::string(loss_type), std::string(level), temperature,
                                   max_completion_length, num_items_in_batch, chunk_size, grad_hidden,
                                   grad_weight, grad_bias);
  }

  static std::tuple<at::Tensor, at::Tensor> fused_logprobs(const at::Tensor& hidden, const at::Tensor& weight,
                                                           const Opt& bias, const at::Tensor& targets,
                                                           double temperature,
                                                           std::optional<int64_t> chunk_size,
                                                           bool return_entropy) {
    return sgpo::fused_logprobs(BE::lm_head(), hidden, weight, bias, targets, temperature, chunk_size,
                                return_entropy);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_logprobs_backward(
      const at::Tensor& grad_logp, const at::Tensor& hidden, const at::Tensor& weight, const Opt& bias,
      const at::Tensor& targets, double temperature, std::optional<int64_t> chunk_size, bool grad_hidden,
      bool grad_weight, bool grad_bias) {
    return sgpo::fused_logprobs_backward(BE::lm_head(), grad_logp, hidden, weight, bias, targets,
                                         temperature, chunk_size, grad_hidden, grad_weight, grad_bias);
  }
};

}  // namespace sgpo
