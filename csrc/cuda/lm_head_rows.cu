// CUDA LM-head backend (lm_head.h): the row kernel the chunk driver calls on
// each [n, V] logits chunk, and the per-token surrogate derivative.
//
// One block per row. Pass 1 folds the row into an OnlineLSE state per thread
// and merges the states across the block (cuda_utils.cuh); pass 2 (every mode but Stats)
// overwrites the row in place with d loss / d logits. Both passes use 16-byte
// vector accesses on the aligned middle of the row, so any V and any row
// alignment work. No host synchronization: everything is launched on the
// current stream.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include "../common/lse.h"
#include "../common/policy_loss.h"
#include "../ops.h"
#include "cuda_utils.cuh"

namespace sgpo {
namespace {

using cuda::kWarp;
constexpr int kMaxThreads = 512;  // <= 128 registers per thread at full occupancy

// RowArgs as raw device pointers; nullptr = not given.
template <typename acc>
struct RowParams {
  RowMode mode;
  int64_t vocab;
  int64_t row_stride;      // elements between logits rows
  const int64_t* targets;  // [n]
  acc inv_temp;
  acc* logp_out;           // [n]?
  acc* entropy_out;        // [n]?
  const acc* coef;         // [n], GivenCoef
  const acc* weight;       // [n], PolicyLoss
  const acc* adv;          // [n], PolicyLoss
  const acc* mask;         // [n], PolicyLoss
  const acc* old_logp;     // [n]?
  const acc* ref_logp;     // [n]?
  const acc* seq_ratio;    // [n]?
  const acc* seq_grad;     // [n]?
  SurrogateParams<acc> clip;
  acc beta;
  acc* token_stats;        // [n, kNumTokenStats] (TokenStat), PolicyLoss
};

// grid = n rows, block = a multiple of 32 threads <= kMaxThreads.
// logits [n, V] (row_stride apart): read; overwritten with d loss / d logits
// unless mode is Stats.
template <typename scalar_t, typename acc>
__global__ __launch_bounds__(kMaxThreads) void rows_kernel(scalar_t* logits, const RowParams<acc> p) {
  const int64_t i = blockIdx.x;
  scalar_t* row = logits + i * p.row_stride;
  const int64_t target = p.targets[i];
  CUDA_KERNEL_ASSERT(target >= 0 && target < p.vocab);

  OnlineLSE<acc> st;
  cuda::for_row<false>(row, p.vocab, [&](int64_t, scalar_t& x) { st.add(static_cast<acc>(x) * p.inv_temp); });
  // Read before the reduction's barrier: no thread has started overwriting the row yet.
  const acc x_target = static_cast<acc>(row[target]) * p.inv_temp;
  __shared__ cuda::SharedScratch<OnlineLSE<acc>, kMaxThreads / kWarp> scratch;
  st = cuda::block_allreduce(st, cuda::MergeLSE{}, scratch.get());

  const acc lse = st.lse();
  const acc logp = x_target - lse;
  const bool writer = threadIdx.x == 0;
  if (writer && p.logp_out) p.logp_out[i] = logp;
  if (writer && p.entropy_out) p.entropy_out[i] = st.entropy();
  if (p.mode == RowMode::Stats) return;

  // d loss / d logp of this row; every thread computes it (uniform, a few flops).
  acc coef;
  if (p.mode == RowMode::GivenCoef) {
    coef = p.coef[i];
  } else {
    const acc old = p.old_logp ? p.old_logp[i] : logp;  // on-policy: old = logp.detach()
    const acc ratio = p.seq_ratio ? p.seq_ratio[i] : exp_(logp - old);
    const acc dratio_dlogp = p.seq_ratio ? acc(0) : ratio;
    const bool has_ref = p.ref_logp != nullptr;
    const TokenTerms<acc> t = policy_token_terms(logp, ratio, dratio_dlogp, p.adv[i], p.weight[i], has_ref,
                                                   has_ref ? p.ref_logp[i] : acc(0), p.beta, p.clip);
    coef = t.dloss_dlogp + (p.seq_grad ? p.seq_grad[i] : acc(0));
    if (writer) {
      acc* stats = p.token_stats + kNumTokenStats * i;
      stats[kStatLoss] = t.loss;
      stats[kStatKl] = t.kl * p.mask[i];  // kl_mean is a mask-weighted mean
      stats[kStatClipLow] = t.clip_low ? p.mask[i] : acc(0);
      stats[kStatClipHigh] = t.clip_high ? p.mask[i] : acc(0);
    }
  }

  // d logp / d logits_v = inv_temp * (onehot(target)_v - softmax_v).
  const acc scale = coef * p.inv_temp;
  cuda::for_row<true>(row, p.vocab, [&](int64_t v, scalar_t& x) {
    const acc prob = exp_(static_cast<acc>(x) * p.inv_temp - lse);
    x = static_cast<scalar_t>(scale * ((v == target ? acc(1) : acc(0)) - prob));
  });
}

// Checked data pointer of an optional per-row tensor: nullptr when undefined;
// otherwise it must be [n] (cols == 0) or [n, cols], contiguous, of type T,
// on the device of `like`.
template <typename T>
T* row_ptr(const at::Tensor& t, const char* name, int64_t n, const at::Tensor& like, int64_t cols = 0) {
  if (!t.defined()) return nullptr;
  if (cols == 0) {
    TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "lm_head rows: ", name, ": expected shape [", n, "], got ",
                t.sizes());
  } else {
    TORCH_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == cols, "lm_head rows: ", name,
                ": expected shape [", n, ", ", cols, "], got ", t.sizes());
  }
  TORCH_CHECK(t.is_contiguous(), "lm_head rows: ", name, ": expected a contiguous tensor");
  TORCH_CHECK(t.scalar_type() == c10::CppTypeToScalarType<T>::value, "lm_head rows: ", name, ": expected ",
              c10::CppTypeToScalarType<T>::value, ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), "lm_head rows: ", name, ": expected device ", like.device(), ", got ",
              t.device());
  return t.data_ptr<T>();
}

template <typename T>
T* required_row_ptr(const at::Tensor& t, const char* name, int64_t n, const at::Tensor& like, int64_t cols = 0) {
  TORCH_CHECK(t.defined(), "lm_head rows: ", name, " is required in this mode");
  return row_ptr<T>(t, name, n, like, cols);
}

// RowArgs (lm_head.h): logits [n, V] with unit column stride; per-row tensors
// [n] of the accumulation dtype; token_stats [n, kNumTokenStats].
void rows_cuda(const RowArgs& a) {
  const at::Tensor& logits = a.logits;
  TORCH_CHECK(logits.is_cuda() && logits.dim() == 2, "lm_head rows: logits: expected a 2-D CUDA tensor, got ",
              logits.sizes(), " on ", logits.device());
  TORCH_CHECK(logits.stride(1) == 1, "lm_head rows: logits: expected unit stride along the vocabulary");
  const int64_t n = logits.size(0), vocab = logits.size(1);
  TORCH_CHECK(vocab > 0, "lm_head rows: logits: expected V > 0");
  if (n == 0) return;
  TORCH_CHECK(n <= std::numeric_limits<int32_t>::max(), "lm_head rows: logits: too many rows for one grid: ", n);
  const c10::cuda::CUDAGuard guard(logits.device());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sgpo_lm_head_rows", [&] {
    using acc = acc_t<scalar_t>;
    RowParams<acc> p{};
    p.mode = a.mode;
    p.vocab = vocab;
    p.row_stride = logits.stride(0);
    p.targets = required_row_ptr<int64_t>(a.targets, "targets", n, logits);
    p.inv_temp = static_cast<acc>(a.inv_temp);
    p.logp_out = row_ptr<acc>(a.logp_out, "logp_out", n, logits);
    p.entropy_out = row_ptr<acc>(a.entropy_out, "entropy_out", n, logits);
    if (a.mode == RowMode::GivenCoef) p.coef = required_row_ptr<acc>(a.coef, "coef", n, logits);
    if (a.mode == RowMode::PolicyLoss) {
      p.weight = required_row_ptr<acc>(a.weight, "weight", n, logits);
      p.adv = required_row_ptr<acc>(a.adv, "adv", n, logits);
      p.mask = required_row_ptr<acc>(a.mask, "mask", n, logits);
      p.old_logp = row_ptr<acc>(a.old_logp, "old_logp", n, logits);
      p.ref_logp = row_ptr<acc>(a.ref_logp, "ref_logp", n, logits);
      p.seq_ratio = row_ptr<acc>(a.seq_ratio, "seq_ratio", n, logits);
      p.seq_grad = row_ptr<acc>(a.seq_grad, "seq_grad", n, logits);
      p.token_stats = required_row_ptr<acc>(a.token_stats, "token_stats", n, logits, kNumTokenStats);
      p.clip = a.clip.cast<acc>();
      p.beta = static_cast<acc>(a.beta);
    }
    const int threads = cuda::row_threads(vocab, 16 / sizeof(scalar_t), kMaxThreads);
    rows_kernel<scalar_t, acc><<<static_cast<unsigned>(n), threads, 0, at::cuda::getCurrentCUDAStream()>>>(
        logits.data_ptr<scalar_t>(), p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// ratio, adv, weight, out: [n]; logp, ref: [n] or null
template <typename T>
__global__ void surrogate_dratio_kernel(const T* ratio, const T* adv, const T* weight, const T* logp, const T* ref,
                                        T beta, const SurrogateParams<T> clip, T* out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = weight[i] * sequence_dloss_dratio(logp ? logp[i] : T(0), ratio[i], adv[i], ref != nullptr,
                                               ref ? ref[i] : T(0), beta, clip);
  }
}

// ratio, adv, weight: [n] of one float dtype, logp, ref: the same or undefined
// -> [n] weight * sequence_dloss_dratio.
at::Tensor surrogate_dratio_cuda(const at::Tensor& ratio, const at::Tensor& adv, const at::Tensor& weight,
                                 const at::Tensor& logp, const at::Tensor& ref, double beta,
                                 const SurrogateParams<double>& clip) {
  TORCH_CHECK(ratio.is_cuda(), "surrogate_dratio: ratio: expected a CUDA tensor");
  for (const auto& [t, name] : {std::pair{&adv, "adv"}, std::pair{&weight, "weight"}, std::pair{&logp, "logp"},
                                std::pair{&ref, "ref"}}) {
    if (!t->defined()) continue;  // logp, ref: optional
    TORCH_CHECK(t->sizes() == ratio.sizes(), "surrogate_dratio: ", name, ": expected shape ", ratio.sizes(),
                ", got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == ratio.scalar_type(), "surrogate_dratio: ", name, ": expected ",
                ratio.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == ratio.device(), "surrogate_dratio: ", name, ": expected device ", ratio.device());
  }
  const at::Tensor r = ratio.contiguous(), a = adv.contiguous(), w = weight.contiguous();
  const at::Tensor lp = logp.defined() ? logp.contiguous() : logp, rf = ref.defined() ? ref.contiguous() : ref;
  at::Tensor out = at::empty_like(r);
  const int64_t n = r.numel();
  if (n == 0) return out;
  const c10::cuda::CUDAGuard guard(ratio.device());
  constexpr int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 4096);
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "sgpo_surrogate_dratio", [&] {
    surrogate_dratio_kernel<scalar_t><<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
        r.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
        lp.defined() ? lp.data_ptr<scalar_t>() : nullptr, rf.defined() ? rf.data_ptr<scalar_t>() : nullptr,
        static_cast<scalar_t>(beta), clip.cast<scalar_t>(), out.data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

const LMHeadBackend kCudaLMHead{&rows_cuda, &surrogate_dratio_cuda};

}  // namespace sgpo
