// The op schemas (one list, the public contract of docs/design.md section 3) and
// the CPU registrations. CUDA registrations are in cuda/registration_cuda.cpp.
#include <Python.h>
#include <torch/library.h>

#include "entry.h"
#include "lm_head.h"
#include "ops.h"

// `import sgpo_engine._C` loads this library, and with it the op registry;
// the module itself has no Python functions (everything is torch.ops.sgpo.*).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&def);
}

TORCH_LIBRARY(sgpo, m) {
  m.def(
      "group_advantages(Tensor rewards, int group_size, Tensor? offsets, Tensor? correct, "
      "Tensor? rts, str scope, str credit, float credit_beta, float credit_gamma, float credit_scale, "
      "str scale, float eps, float credited_std_floor=0.) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "sample(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p, "
      "Tensor uniform) -> (Tensor, Tensor)");
  m.def(
      "decode_attention(Tensor q, Tensor prefix_k, Tensor prefix_v, Tensor prefix_len, "
      "Tensor prefix_of, Tensor suffix_k, Tensor suffix_v, Tensor suffix_len, Tensor slot, "
      "float scale, int window) -> Tensor");
  m.def(
      "fused_policy_loss(Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, "
      "Tensor mask, Tensor advantages, Tensor? old_logp, Tensor? ref_logp, float beta, "
      "float eps_low, float eps_high, float? delta, float sapo_temperature_pos, "
      "float sapo_temperature_neg, bool use_bias_correction_kl, str loss_type, "
      "str importance_sampling_level, float temperature, int? max_completion_length, "
      "float? num_items_in_batch, int? chunk_size, bool grad_hidden, bool grad_weight, "
      "bool grad_bias) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "fused_logprobs(Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, "
      "float temperature, int? chunk_size, bool return_entropy) -> (Tensor, Tensor)");
  m.def(
      "fused_logprobs_backward(Tensor grad_logp, Tensor hidden, Tensor weight, Tensor? bias, "
      "Tensor targets, float temperature, int? chunk_size, bool grad_hidden, "
      "bool grad_weight, bool grad_bias) -> (Tensor, Tensor, Tensor)");
}

namespace {
struct CpuBackend {
  static constexpr auto group_advantages = &sgpo::group_advantages_cpu;
  static constexpr auto sample = &sgpo::sample_cpu;
  static constexpr auto decode_attention = &sgpo::decode_attention_cpu;
  static const sgpo::LMHeadBackend& lm_head() { return sgpo::kCpuLMHead; }
};
}  // namespace

TORCH_LIBRARY_IMPL(sgpo, CPU, m) { sgpo::register_backend<CpuBackend>(m); }
