// CUDA sample (ops.h; filter semantics: common/sampling.h; spec: reference.sample).
//
// One block per row, no sort. With x = logits / temperature, m = max x and
// weights e_v = exp(x_v - m) (so max e = 1), every filter keeps {e >= cut}:
//   top-k: the exact k-th largest e, by bisection over the weights' bit
//          patterns (non-negative floats order like their bits), one
//          block-wide count per bit;
//   top-p: the largest key t whose set {e >= t} (within the top-k set) still
//          holds top_p of the top-k mass, by the same bisection over masses;
//   min-p: min_p.
// The token is the first v, in vocabulary order, whose running kept mass
// exceeds u * (kept mass): a block-wide prefix scan over the row in tiles.
// Every sum of weights goes through the same loop and reduction order, so the
// same set always gives the bitwise same mass. Nothing synchronizes with the
// host.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <cub/block/block_scan.cuh>
#include <limits>

#include "../common/sampling.h"
#include "../ops.h"
#include "cuda_utils.cuh"

namespace sgpo {
namespace {

using cuda::block_allreduce;
using cuda::kWarp;
using cuda::Max;
using cuda::Min;
using cuda::Sum;
constexpr int kScanItems = 4;              // consecutive elements per thread in a scan tile
constexpr int64_t kLargeVocab = 8192;      // from here on, rows get the big block
constexpr int kSmallBlock = 128, kLargeBlock = 1024;

// Order-preserving integer keys of non-negative weights.
template <typename C>
struct WeightKey;
template <>
struct WeightKey<float> {
  using Key = uint32_t;
  static constexpr int kBits = 32;
  static __device__ Key key(float e) { return weight_key(e); }
  static __device__ float weight(Key k) { return key_weight(k); }
};
template <>
struct WeightKey<double> {
  using Key = uint64_t;
  static constexpr int kBits = 64;
  static __device__ Key key(double e) { return static_cast<Key>(__double_as_longlong(e)); }
  static __device__ double weight(Key k) { return __longlong_as_double(static_cast<long long>(k)); }
};

// A product rounded on its own, never fused into an FMA with what follows:
// every pass then sees bitwise the same x, and the max weight is exactly
// exp(m - m) = 1.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// Per-row parameters, all [B].
struct RowParams {
  const double* temperature;  // 0 = greedy
  const int64_t* top_k;       // 0 = off
  const double* top_p;        // 1 = off
  const double* min_p;        // 0 = off
  const double* uniform;      // in [0, 1)
};

// grid = B rows, block = kBlock. logits [B, V] contiguous; tokens [B];
// logprobs [B] of C (fp32, fp64 for fp64 logits).
template <typename scalar_t, typename C, int kBlock>
__global__ __launch_bounds__(kBlock) void sample_kernel(const scalar_t* logits, int64_t vocab, const RowParams p,
                                                        int64_t* tokens, C* logprobs) {
  using K = WeightKey<C>;
  using Key = typename K::Key;
  using Scan = cub::BlockScan<C, kBlock>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ C scratch_c[kBlock / kWarp];
  __shared__ int64_t scratch_i[kBlock / kWarp];

  const int64_t b = blockIdx.x;
  const scalar_t* row = logits + b * vocab;
  const C temp = static_cast<C>(p.temperature[b]);
  const bool greedy = temp == C(0);
  const C inv_temp = greedy ? C(1) : C(1) / temp;  // greedy log-probs are at temperature 1
  // x as the CPU kernel computes it: logit * (1 / temperature).
  const auto x_at = [&](int64_t v) { return mul_rn(static_cast<C>(row[v]), inv_temp); };

  C m = neg_inf<C>();
  for (int64_t v = threadIdx.x; v < vocab; v += kBlock) m = max_(m, x_at(v));
  m = block_allreduce<kBlock>(m, Max{}, scratch_c);
  const auto e_at = [&](int64_t v) { return exp_(x_at(v) - m); };

  const auto mass_at_least = [&](Key k) {  // sum of e over {v : key(e_v) >= k}
    C s = C(0);
    for (int64_t v = threadIdx.x; v < vocab; v += kBlock) {
      const C e = e_at(v);
      if (K::key(e) >= k) s += e;
    }
    return block_allreduce<kBlock>(s, Sum{}, scratch_c);
  };
  const C total = mass_at_least(Key(0));  // sum of all e: the log-prob's normalizer

  int64_t token;
  if (greedy) {
    // First index of the max (torch.argmax): m is bitwise the max of these x.
    int64_t first = vocab;
    for (int64_t v = threadIdx.x; v < vocab; v += kBlock) {
      if (x_at(v) == m) {
        first = v;
        break;
      }
    }
    token = block_allreduce<kBlock>(first, Min{}, scratch_i);
  } else {
    const SampleParams<C> sp{temp, p.top_k[b], static_cast<C>(p.top_p[b]), static_cast<C>(p.min_p[b])};
    // Cuts are built bit by bit from the top: a bit stays set when the set
    // {key >= candidate} still satisfies the filter, which yields the largest
    // such key because both counts and masses shrink as the key grows.
    Key cut_key = 0;
    if (top_k_active(sp, vocab)) {
      for (int bit = K::kBits - 1; bit >= 0; --bit) {
        const Key cand = cut_key | (Key(1) << bit);
        int64_t count = 0;
        for (int64_t v = threadIdx.x; v < vocab; v += kBlock) count += K::key(e_at(v)) >= cand;
        if (block_allreduce<kBlock>(count, Sum{}, scratch_i) >= sp.top_k) cut_key = cand;
      }
    }
    if (top_p_active(sp)) {
      const C need = sp.top_p * (cut_key == 0 ? total : mass_at_least(cut_key));
      Key t = 0;
      for (int bit = K::kBits - 1; bit >= 0; --bit) {
        const Key cand = t | (Key(1) << bit);
        const C mass = mass_at_least(cand > cut_key ? cand : cut_key);
        if (mass >= need && mass > C(0)) t = cand;  // mass > 0: top_p = 0 keeps the max, not nothing
      }
      if (t > cut_key) cut_key = t;
    }
    // max e is exactly 1 here (see mul_rn). Clamping the cut to [0, max e]
    // keeps the most likely token whatever min_p is, and stops a -0.0 from
    // becoming a key above every weight.
    C cut = max_(K::weight(cut_key), min_p_cut(sp, C(1)));
    cut = cut > C(0) ? (cut < C(1) ? cut : C(1)) : C(0);
    const Key kept_key = K::key(cut);
    const C kept_mass = kept_key == 0 ? total : mass_at_least(kept_key);
    const C goal = static_cast<C>(p.uniform[b]) * kept_mass;

    // Inverse CDF in vocabulary order, one tile of kBlock * kScanItems at a
    // time. Only tokens with positive weight can be drawn: a tree scan's
    // rounding may let the running mass step up by an ulp at a zero weight.
    token = vocab;
    int64_t last = -1;  // last drawable token seen by this thread
    C carry = C(0);     // kept mass before this tile
    for (int64_t tile = 0; tile < vocab; tile += int64_t(kBlock) * kScanItems) {
      const int64_t first_v = tile + int64_t(threadIdx.x) * kScanItems;
      C w[kScanItems], running[kScanItems];
#pragma unroll
      for (int j = 0; j < kScanItems; ++j) {
        const int64_t v = first_v + j;
        const C e = v < vocab ? e_at(v) : C(0);
        w[j] = e >= cut ? e : C(0);
      }
      C tile_mass;
      Scan(scan_storage).InclusiveSum(w, running, tile_mass);
      int64_t hit = vocab;
#pragma unroll
      for (int j = 0; j < kScanItems; ++j) {
        if (w[j] > C(0)) {
          last = first_v + j;
          if (hit == vocab && carry + running[j] > goal) hit = first_v + j;
        }
      }
      // Also the barrier that lets the next tile reuse scan_storage.
      token = block_allreduce<kBlock>(hit, Min{}, scratch_i);
      if (token < vocab) break;
      carry += tile_mass;
    }
    // Rounding ran past the end of the CDF: the last kept token.
    if (token == vocab) token = block_allreduce<kBlock>(last, Max{}, scratch_i);
    token = token < 0 ? 0 : token;  // only NaN logits leave nothing drawable
  }

  if (threadIdx.x == 0) {
    tokens[b] = token;
    logprobs[b] = x_at(token) - m - log_(total);
  }
}

template <typename scalar_t, typename C, int kBlock>
void launch(const at::Tensor& logits, const RowParams& p, at::Tensor& tokens, at::Tensor& logprobs) {
  sample_kernel<scalar_t, C, kBlock><<<static_cast<unsigned>(logits.size(0)), kBlock, 0,
                                       at::cuda::getCurrentCUDAStream()>>>(
      logits.data_ptr<scalar_t>(), logits.size(1), p, tokens.data_ptr<int64_t>(), logprobs.data_ptr<C>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

// logits [B, V] contiguous; temperature, top_p, min_p, uniform [B] fp64;
// top_k [B] int64 -> (tokens [B] int64, logprobs [B] fp32, fp64 for fp64 logits).
std::tuple<at::Tensor, at::Tensor> sample_cuda(const at::Tensor& logits, const at::Tensor& temperature,
                                               const at::Tensor& top_k, const at::Tensor& top_p,
                                               const at::Tensor& min_p, const at::Tensor& uniform) {
  TORCH_CHECK(logits.is_cuda() && logits.is_contiguous(), "logits: expected a contiguous CUDA tensor");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  TORCH_CHECK(rows <= std::numeric_limits<int32_t>::max(), "logits: too many rows for one grid: ", rows);
  const c10::cuda::CUDAGuard guard(logits.device());
  const bool is64 = logits.scalar_type() == at::kDouble;
  at::Tensor tokens = at::empty({rows}, logits.options().dtype(at::kLong));
  at::Tensor logprobs = at::empty({rows}, logits.options().dtype(is64 ? at::kDouble : at::kFloat));
  if (rows == 0) return {tokens, logprobs};

  const RowParams p{temperature.data_ptr<double>(), top_k.data_ptr<int64_t>(), top_p.data_ptr<double>(),
                    min_p.data_ptr<double>(), uniform.data_ptr<double>()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sgpo_sample", [&] {
    using C = acc_t<scalar_t>;
    if (vocab >= kLargeVocab) {
      launch<scalar_t, C, kLargeBlock>(logits, p, tokens, logprobs);
    } else {
      launch<scalar_t, C, kSmallBlock>(logits, p, tokens, logprobs);
    }
  });
  return {tokens, logprobs};
}

}  // namespace sgpo
