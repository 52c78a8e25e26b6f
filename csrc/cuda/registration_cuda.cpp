// CUDA registrations of the ops whose schemas registration.cpp defines.
#include <torch/library.h>

#include "../entry.h"
#include "../lm_head.h"
#include "../ops.h"

namespace {
struct CudaBackend {
  static constexpr auto group_advantages = &sgpo::group_advantages_cuda;
  static constexpr auto decode_attention = &sgpo::decode_attention_cuda;
  static constexpr auto sample = &sgpo::sample_cuda;
  static const sgpo::LMHeadBackend& lm_head() { return sgpo::kCudaLMHead; }
};
using Ops = sgpo::OpEntries<CudaBackend>;
}  // namespace

TORCH_LIBRARY_IMPL(sgpo, CUDA, m) {
  m.impl("group_advantages", &Ops::group_advantages);
  m.impl("sample", &Ops::sample);
  m.impl("decode_attention", &Ops::decode_attention);
  m.impl("fused_policy_loss", &Ops::fused_policy_loss);
  m.impl("fused_logprobs", &Ops::fused_logprobs);
  m.impl("fused_logprobs_backward", &Ops::fused_logprobs_backward);
}
