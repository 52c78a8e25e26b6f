// The chunked LM-head loop behind fused_policy_loss and fused_logprobs: its
// argument structs, the columns of its per-token and metric outputs, and the
// backend interface.
//
// The driver (lm_head.cpp) is device-agnostic: it walks the tokens in chunks,
// computes a chunk of logits with one GEMM, hands the chunk to a backend's
// *row kernel* (CPU: cpu/lm_head_rows.cpp, CUDA: cuda/lm_head_rows.cu), and
// turns the d-logits the kernel leaves in place into gradients with two more
// GEMMs. So peak extra memory is one [chunk, V] buffer, never [tokens, V].
// It takes checked arguments (csrc/entry.h checks them) and checks nothing.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "common/policy_loss.h"
#include "options.h"

namespace sgpo {

// The columns of RowArgs::token_stats, one row per token, summed over the
// tokens by the driver into the op's loss and metrics.
enum TokenStat : int {
  kStatLoss = 0,      // weight * per-token loss
  kStatKl = 1,        // mask * kl (k3, or k3 * ratio)
  kStatClipLow = 2,   // mask if the token counts as clipped low, else 0
  kStatClipHigh = 3,  // mask if the token counts as clipped high, else 0
  kNumTokenStats = 4,
};

// The entries of fused_policy_loss's metrics output [kNumPolicyLossMetrics],
// in the order of POLICY_LOSS_METRICS in sgpo_engine/ops.py.
enum PolicyLossMetric : int {
  kClipRatioLow = 0,   // mask-weighted share of the tokens clipped low
  kClipRatioHigh = 1,  // the same, clipped high (cispo: ratio capped)
  kKlMean = 2,         // mask-weighted mean of kl; NaN without ref_logp
  kNumPolicyLossMetrics = 3,
};

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
  // PolicyLoss output: [n, kNumTokenStats], the columns of TokenStat.
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

// ---- the driver's arguments, checked by csrc/entry.h ----------------------

// What every LM-head op takes: hidden [..., H] float; weight [V, H] and
// bias [V] (or undefined) of hidden's dtype and device; targets [...] =
// hidden's shape without H, int64 or int32 ids in [0, V); temperature > 0
// divides the logits; chunk_size > 0 tokens per chunk, or a budget of logits.
struct LMHeadArgs {
  at::Tensor hidden, weight, bias, targets;
  double temperature = 1.0;
  std::optional<int64_t> chunk_size;
};

// Which parameter gradients an op returns; the others come back empty.
struct GradsWanted {
  bool hidden = false, weight = false, bias = false;  // bias: only if it is given
};

// fused_policy_loss: hidden [B, T, H], targets [B, T] (LMHeadArgs), and the
// loss's own arguments, named as the public ones (docs/design.md 3.2).
struct PolicyLossArgs : LMHeadArgs {
  at::Tensor mask;        // [B, T] bool or float, a token's weight (0 = not a completion token)
  at::Tensor advantages;  // [B] or [B, T] float
  at::Tensor old_logp;    // [B, T] float, or undefined: on-policy (old = logp.detach())
  at::Tensor ref_logp;    // [B, T] float, or undefined: no KL term
  double beta = 0.0;      // >= 0, the KL weight
  double eps_low = 0.2, eps_high = 0.2;  // >= 0; cispo: eps_high caps the detached ratio
  std::optional<double> delta;           // > 0: l1 = min(ratio, delta) * A
  double sapo_temperature_pos = 1.0, sapo_temperature_neg = 1.05;  // > 0
  bool use_bias_correction_kl = false;   // kl = k3 * ratio, else k3
  LossType loss_type = LossType::Dapo;
  ISLevel importance_sampling_level = ISLevel::Token;
  std::optional<int64_t> max_completion_length;  // > 0 (dr_grpo), default T
  std::optional<double> num_items_in_batch;      // > 0 (dapo, cispo), default sum(mask)
  GradsWanted grads;
};

// (loss [], metrics [kNumPolicyLossMetrics] (PolicyLossMetric), logp [B, T],
// grad_hidden [B, T, H], grad_weight [V, H], grad_bias [V]), each gradient
// an empty tensor when not wanted.
using PolicyLossOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
PolicyLossOut fused_policy_loss(const LMHeadBackend& be, const PolicyLossArgs& a);

// (logp [...], entropy [...] or empty unless return_entropy).
std::tuple<at::Tensor, at::Tensor> fused_logprobs(const LMHeadBackend& be, const LMHeadArgs& a,
                                                  bool return_entropy);

// grad_logp [...] (targets' shape) -> (grad_hidden, grad_weight, grad_bias),
// each empty when not wanted.
using ParamGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
ParamGrads fused_logprobs_backward(const LMHeadBackend& be, const at::Tensor& grad_logp, const LMHeadArgs& a,
                                   GradsWanted grads);

}  // namespace sgpo
