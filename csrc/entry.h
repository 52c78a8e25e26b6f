// Op entry points shared by the CPU and CUDA registrations: parse and check
// the arguments once, then call the backend. Errors name the argument.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

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

inline at::Tensor decode_attention_entry(at::Tensor (*impl)(const DecodeAttnArgs&), const DecodeAttnArgs& a) {
  TORCH_CHECK(a.q.dim() == 3, "q: expected [S, Hq, D], got ", a.q.sizes());
  const int64_t S = a.q.size(0), Hq = a.q.size(1), D = a.q.size(2);
  TORCH_CHECK(a.prefix_k.dim() == 4 && a.prefix_k.size(3) == D, "prefix_k: expected [P, Hkv, Lp, D = ", D,
              "], got ", a.prefix_k.sizes());
  TORCH_CHECK(a.prefix_v.sizes() == a.prefix_k.sizes(), "prefix_v: expected the shape of prefix_k ",
              a.prefix_k.sizes(), ", got ", a.prefix_v.sizes());
  const int64_t P = a.prefix_k.size(0), Hkv = a.prefix_k.size(1);
  TORCH_CHECK(Hkv > 0 && Hq % Hkv == 0, "q: Hq = ", Hq, " query heads is not a multiple of Hkv = ", Hkv);
  TORCH_CHECK(a.suffix_k.dim() == 4 && a.suffix_k.size(1) == Hkv && a.suffix_k.size(3) == D,
              "suffix_k: expected [C, Hkv = ", Hkv, ", Ls, D = ", D, "], got ", a.suffix_k.sizes());
  TORCH_CHECK(a.suffix_v.sizes() == a.suffix_k.sizes(), "suffix_v: expected the shape of suffix_k ",
              a.suffix_k.sizes(), ", got ", a.suffix_v.sizes());
  const std::pair<const at::Tensor*, const char*> kv[] = {
      {&a.prefix_k, "prefix_k"}, {&a.prefix_v, "prefix_v"}, {&a.suffix_k, "suffix_k"}, {&a.suffix_v, "suffix_v"}};
  for (const auto& [t, name] : kv) {
    TORCH_CHECK(t->scalar_type() == a.q.scalar_type(), name, ": dtype ", t->scalar_type(), " differs from q's ",
                a.q.scalar_type());
    TORCH_CHECK(t->device() == a.q.device(), name, ": expected device ", a.q.device());
    TORCH_CHECK(t->is_contiguous(), name, ": expected a contiguous cache");
  }
  check_1d(a.prefix_len, "prefix_len", P);
  const std::pair<const at::Tensor*, const char*> rows[] = {
      {&a.prefix_of, "prefix_of"}, {&a.suffix_len, "suffix_len"}, {&a.slot, "slot"}};
  for (const auto& [t, name] : rows) check_1d(*t, name, S);
  const std::tuple<const at::Tensor*, const char*, int64_t> idx[] = {{&a.prefix_len, "prefix_len", a.prefix_k.size(2)},
                                                                    {&a.prefix_of, "prefix_of", P - 1},
                                                                    {&a.suffix_len, "suffix_len", a.suffix_k.size(2)},
                                                                    {&a.slot, "slot", a.suffix_k.size(0) - 1}};
  for (const auto& [t, name, hi] : idx) {
    TORCH_CHECK(t->scalar_type() == at::kLong, name, ": expected int64");
    TORCH_CHECK(t->device() == a.q.device(), name, ": expected device ", a.q.device());
    // Range checks read the values: free on CPU, a host sync on GPU (skipped
    // there: the CUDA kernel clamps lengths and the engine builds the indices).
    if (t->is_cpu() && t->numel() > 0) {
      TORCH_CHECK(t->min().item<int64_t>() >= 0 && t->max().item<int64_t>() <= hi, name,
                  ": values must lie in [0, ", hi, "]");
    }
  }
  TORCH_CHECK(a.window >= 0, "window: expected >= 0 (0 = no sliding window), got ", a.window);
  DecodeAttnArgs c = a;
  c.q = a.q.contiguous();
  for (at::Tensor* t : {&c.prefix_len, &c.prefix_of, &c.suffix_len, &c.slot}) *t = t->contiguous();
  return impl(c);
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

  static at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& prefix_k, const at::Tensor& prefix_v,
                                     const at::Tensor& prefix_len, const at::Tensor& prefix_of,
                                     const at::Tensor& suffix_k, const at::Tensor& suffix_v,
                                     const at::Tensor& suffix_len, const at::Tensor& slot, double scale,
                                     int64_t window) {
    return decode_attention_entry(BE::decode_attention, DecodeAttnArgs{q, prefix_k, prefix_v, prefix_len, prefix_of,
                                                                       suffix_k, suffix_v, suffix_len, slot, scale,
                                                                       window});
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
