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
}  // namespace

TORCH_LIBRARY_IMPL(sgpo, CUDA, m) { sgpo::register_backend<CudaBackend>(m); }
