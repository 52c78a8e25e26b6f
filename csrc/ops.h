// Backend entry points of the ops registered in registration.cpp, and their
// argument structs (the LM-head ops' are in lm_head.h). Argument shapes are
// documented here, at the C++ boundary; entry.h checks them before any
// backend runs, and the Python face (sgpo_engine/ops.py) documents the public API.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>
#include <tuple>

#include "common/group_stats.h"
#include "lm_head.h"

namespace sgpo {

// ---- group_advantages -----------------------------------------------------
// rewards [N] float; groups are contiguous: group_size > 0 (N % group_size
// == 0) or offsets [P+1] int64 (0 = o_0 < o_1 < ... < o_P = N);
// correct [N] bool?; rts [N] float? (NaN = not judged).
// Returns (advantages [N], used_rewards [N], group_mean [P], group_std [P],
// all_negative [P] bool); float outputs are fp64 for fp64 rewards, else fp32.
struct GroupAdvArgs {
  at::Tensor rewards;
  int64_t group_size;          // > 0, or 0 when offsets are given
  at::Tensor offsets;          // [P+1] int64 or undefined
  at::Tensor correct;          // [N] bool or undefined
  at::Tensor rts;              // [N] float or undefined
  CreditParams<double> credit;
  Scale scale;
  double eps;
  int64_t num_groups;
};
using GroupAdvOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
GroupAdvOut group_advantages_cpu(const GroupAdvArgs& a);
GroupAdvOut group_advantages_cuda(const GroupAdvArgs& a);

// ---- sample ---------------------------------------------------------------
// logits [B, V] float; temperature, top_p, min_p, uniform: [B] fp64;
// top_k: [B] int64. Returns (tokens [B] int64, logprobs [B] fp32, fp64 for
// fp64 logits). See common/sampling.h for the exact filter semantics.
std::tuple<at::Tensor, at::Tensor> sample_cpu(const at::Tensor& logits, const at::Tensor& temperature,
                                              const at::Tensor& top_k, const at::Tensor& top_p,
                                              const at::Tensor& min_p, const at::Tensor& uniform);
std::tuple<at::Tensor, at::Tensor> sample_cuda(const at::Tensor& logits, const at::Tensor& temperature,
                                               const at::Tensor& top_k, const at::Tensor& top_p,
                                               const at::Tensor& min_p, const at::Tensor& uniform);

// ---- decode_attention ------------------------------------------------------
// One decoding step of attention over a shared-prefix KV cache.
// q [S, Hq, D]; prefix_k, prefix_v [P, Hkv, Lp, D] (the prompts' KV, shared by
// the samples of a group); prefix_len [P] int64 (valid positions of each
// prompt); prefix_of [S] int64 (the prompt of each row); suffix_k, suffix_v
// [C, Hkv, Ls, D] (each sample's own generated KV, C cache slots); suffix_len
// [S] int64 (valid positions, including the current token); slot [S] int64
// (each row's cache slot). Hq % Hkv == 0. Returns out [S, Hq, D] =
// softmax(scale * q k^T) v over the prefix then the suffix positions.
// window > 0 is a sliding window (Mistral): the query at absolute position i
// (= prefix_len + suffix_len - 1) sees keys at positions j > i - window.
struct DecodeAttnArgs {
  at::Tensor q, prefix_k, prefix_v, prefix_len, prefix_of, suffix_k, suffix_v, suffix_len, slot;
  double scale;
  int64_t window;
};
at::Tensor decode_attention_cpu(const DecodeAttnArgs& a);
at::Tensor decode_attention_cuda(const DecodeAttnArgs& a);

// ---- LM-head backends (lm_head.h) -------------------------------------------
extern const LMHeadBackend kCpuLMHead;
extern const LMHeadBackend kCudaLMHead;

}  // namespace sgpo
