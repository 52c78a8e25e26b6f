// CUDA decode attention over a shared-prefix KV cache (contract in ops.h).
//
// Grid (S, Hq): one block per query row and head. Each warp of the block
// walks a strided share of the key positions (prompt prefix first, then the
// row's own suffix); lanes split the head dimension, so a score is a warp
// reduction and the running output stays in registers (D / 32 per lane).
// Warps keep flash-style online-softmax state (max, sum, values [D]), folded
// and merged with common/lse.h's fold_max / merge_max (the LM-head rows'
// softmax), through shared memory at the end. Lengths are clamped to the cache
// sizes and the prompt / slot indices asserted in range (the host does not
// range-check CUDA indices: that would sync every step).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../common/lse.h"
#include "../ops.h"
#include "cuda_utils.cuh"

namespace sgpo {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxPerLane = 8;  // D <= 256

template <typename scalar_t, typename acc>
__global__ void decode_attention_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ pk,
                                        const scalar_t* __restrict__ pv, const int64_t* __restrict__ plen,
                                        const int64_t* __restrict__ pof, const scalar_t* __restrict__ sk,
                                        const scalar_t* __restrict__ sv, const int64_t* __restrict__ slen,
                                        const int64_t* __restrict__ slot, scalar_t* __restrict__ out, int Hq,
                                        int Hkv, int D, int64_t P, int64_t C, int64_t Lp, int64_t Ls, acc scale,
                                        int64_t window) {
  const int s = blockIdx.x, hq = blockIdx.y, h = hq / (Hq / Hkv);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t p = pof[s], c = slot[s];
  CUDA_KERNEL_ASSERT(p >= 0 && p < P && c >= 0 && c < C);  // the host checks no CUDA index (a sync per step)
  const int64_t np = min(plen[p], Lp), ns = min(slen[s], Ls);
  // Sliding window (0 = none): keys at absolute positions > np + ns - 1 - window.
  const int64_t lo_p = window > 0 ? max(int64_t(0), np + ns - window) : 0;
  const int64_t lo_s = window > 0 ? max(int64_t(0), ns - window) : 0;
  const scalar_t* kp = pk + (p * Hkv + h) * Lp * D;
  const scalar_t* vp = pv + (p * Hkv + h) * Lp * D;
  const scalar_t* ks = sk + (c * Hkv + h) * Ls * D;
  const scalar_t* vs = sv + (c * Hkv + h) * Ls * D;

  acc qr[kMaxPerLane], o[kMaxPerLane];
  const scalar_t* qrow = q + (int64_t(s) * Hq + hq) * D;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    qr[i] = d < D ? acc(qrow[d]) * scale : acc(0);
    o[i] = acc(0);
  }
  acc m = neg_inf<acc>(), l = acc(0);
  for (int64_t t = warp; t < np + ns; t += kWarps) {
    if (t < np ? t < lo_p : t - np < lo_s) continue;
    const scalar_t* krow = t < np ? kp + t * D : ks + (t - np) * D;
    const scalar_t* vrow = t < np ? vp + t * D : vs + (t - np) * D;
    acc part = acc(0);
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) part += qr[i] * acc(krow[d]);
    }
    const acc score = cuda::warp_sum(part);  // the same in every lane: the branch is warp-uniform
    if (score == neg_inf<acc>()) continue;     // weight 0 (and fold_max never sees -inf - -inf)
    const Rescale<acc> r = fold_max(m, score);
    l = l * r.old + r.add;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) o[i] = o[i] * r.old + r.add * acc(vrow[d]);
    }
  }

  // Merge the warps' (m, l, o) states.
  __shared__ acc sm_m[kWarps], sm_l[kWarps];
  extern __shared__ unsigned char smem_raw[];
  acc* sm_o = reinterpret_cast<acc*>(smem_raw);  // [kWarps, D]
  if (lane == 0) {
    sm_m[warp] = m;
    sm_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) sm_o[warp * D + d] = o[i];
  }
  __syncthreads();
  scalar_t* orow = out + (int64_t(s) * Hq + hq) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    acc M = sm_m[0], L = sm_l[0], num = sm_o[d];
    for (int w = 1; w < kWarps; ++w) {
      const Rescale<acc> r = merge_max(M, sm_m[w]);
      L = L * r.old + sm_l[w] * r.add;
      num = num * r.old + sm_o[w * D + d] * r.add;
    }
    orow[d] = scalar_t(L > acc(0) ? num / L : acc(0));  // no keys: zeros, never NaN
  }
}

}  // namespace

at::Tensor decode_attention_cuda(const DecodeAttnArgs& a) {
  const c10::cuda::CUDAGuard guard(a.q.device());
  const int64_t S = a.q.size(0), Hq = a.q.size(1), D = a.q.size(2);
  TORCH_CHECK_VALUE(D <= 32 * kMaxPerLane, "q: head dim D = ", D, " exceeds the CUDA kernel's limit of ",
              32 * kMaxPerLane);
  at::Tensor out = at::empty(a.q.sizes(), a.q.options());
  if (S == 0) return out;
  const int64_t Hkv = a.prefix_k.size(1), Lp = a.prefix_k.size(2), Ls = a.suffix_k.size(2);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.q.scalar_type(), "sgpo_decode_attention_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const dim3 grid{unsigned(S), unsigned(Hq)};
    const size_t smem = size_t(kWarps) * D * sizeof(acc);
    decode_attention_kernel<scalar_t, acc><<<grid, kWarps * 32, smem, stream>>>(
        a.q.data_ptr<scalar_t>(), a.prefix_k.data_ptr<scalar_t>(), a.prefix_v.data_ptr<scalar_t>(),
        a.prefix_len.data_ptr<int64_t>(), a.prefix_of.data_ptr<int64_t>(), a.suffix_k.data_ptr<scalar_t>(),
        a.suffix_v.data_ptr<scalar_t>(), a.suffix_len.data_ptr<int64_t>(), a.slot.data_ptr<int64_t>(),
        out.data_ptr<scalar_t>(), int(Hq), int(Hkv), int(D), a.prefix_k.size(0), a.suffix_k.size(0), Lp, Ls,
        acc(a.scale), a.window);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace sgpo
