// The chunked LM-head loop behind fused_policy_loss and fused_logprobs.
//
// The driver (lm_head.cpp) is device-agnostic: it walks the tokens in chunks,
// computes a chunk of logits with one GEMM, hands the chunk to a backend's
// *row kernel* (CPU: cpu/lm_head_rows.cpp, CUDA: cuda/lm_head_rows.cu), and
// turns the d-logits the kernel leaves in place into gradients with two more
// GEMMs. So peak extra memory is one [chunk, V] buffer, never [tokens, V].
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include "common/policy_loss.h"
#include "options.h"

namespace sgpo {

// What the row kernel does with each row after it has log-sum-exp and logp.
enum class RowMode : int {
  Stats = 0,       // logp (and entropy) only; logits untouched
  GivenCoef = 1,   // d logits = coef[i] * d logp / d logits (fused_logprobs backward)
  PolicyLoss = 2,  // coef from the policy-loss math (common/policy_loss.h)
};

// One chunk of n rows. Every per-row tensor is contiguous, [n], and of the
// accumulation dtype (fp32, or fp64 for fp64 inputs), except targets (int64).
struct RowArgs {
  RowMode mode = RowMode::Stats;
  at::Tensor logits;   // [n, V] logits in; d loss / d logits out (not Stats)
  at::Tensor targets;  // [n] int64, each in [0, V)
  double inv_temp = 1.0;

  at::Tensor logp_out;     // [n]
  at::Tensor entropy_out;  // [n] or undefined (written in any mode)

  at::Tensor coef;  // GivenCoef: [n] d loss / d logp

  // PolicyLoss inputs: per-row weight (mask x aggregation), advantage, and
  // optional old/ref log-probs; for sequence-level ratios, the sequence's
  // ratio broadcast to its rows and the sequence-coupled d loss / d logp.
  at::Tensor weight, adv, old_logp, ref_logp, seq_ratio, seq_grad, mask;
  SurrogateParams<double> clip{0.2, 0.2, 0.0, false};
  double beta = 0.0;
  // PolicyLoss outputs: [n, 4] = (weighted loss, mask * k3 kl,
  // mask * clipped_low, mask * clipped_high).
  at::Tensor token_stats;
};

// A backend: the row kernel, and the per-token surrogate derivative used to
// couple the tokens of a sequence (sequence-level importance sampling).
struct LMHeadBackend {
  void (*rows)(const RowArgs&);
  // weight * sequence_dloss_dratio at each token: ratio, adv, weight [n] -> [n];
  // logp, ref [n] or undefined (then 0, and no KL term)
  at::Tensor (*surrogate_dratio)(const at::Tensor& ratio, const at::Tensor& adv, const at::Tensor& weight,
                                 const at::Tensor& logp, const at::Tensor& ref, double beta,
                                 const SurrogateParams<double>& clip);
};

// hidden [B, T, H], weight [V, H], bias [V]?, targets [B, T] int64,
// mask [B, T], advantages [B] or [B, T], old_logp/ref_logp [B, T]?.
// Returns (loss [], metrics [3] = clip_low, clip_high, kl_mean (NaN without
// ref), logp [B, T], grad_hidden [B, T, H], grad_weight [V, H], grad_bias [V])
// where a gradient not asked for is an empty tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
fused_policy_loss(const LMHeadBackend& be, const at::Tensor& hidden, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, const at::Tensor& targets,
                  const at::Tensor& mask, const at::Tensor& advantages,
                  const std::optional<at::Tensor>& old_logp,
                  const std::optional<at::Tensor>& ref_logp, double beta, double eps_low,
                  double eps_high, std::optional<double> delta, double sapo_temperature_pos,
                  double sapo_temperature_neg, bool use_bias_correction_kl, LossType loss_type,
                  ISLevel importance_sampling_level, double temperature,
                  std::optional<int64_t> max_completion_length,
                  std::optional<double> num_items_in_batch, std::optional<int64_t> chunk_size,
                  bool grad_hidden, bool grad_weight, bool grad_bias);

// Returns (logp [B, T], entropy [B, T] or empty).
std::tuple<at::Tensor, at::Tensor>
fused_logprobs(const LMHeadBackend& be, const at::Tensor& hidden, const at::Tensor& weight,
               const std::optional<at::Tensor>& bias, const at::Tensor& targets,
               double temperature, std::optional<int64_t> chunk_size, bool return_entropy);

// grad_logp [B, T] -> (grad_hidden, grad_weight, grad_bias), empty if not asked.
std::tuple<at::Tensor, at::Tensor, at::Tensor>
fused_logprobs_backward(const LMHeadBackend& be, const at::Tensor& grad_logp,
                        const at::Tensor& hidden, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, const at::Tensor& targets,
                        double temperature, std::optional<int64_t> chunk_size,
                        bool grad_hidden, bool grad_weight, bool grad_bias);

}  // namespace sgpo
