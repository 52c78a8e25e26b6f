// CPU decode attention over a shared-prefix KV cache (see ops.h).
//
// Each query row s attends to the KV of its prompt (prefix_k/v[prefix_of[s]],
// first prefix_len positions, shared by the G samples of the group: never
// copied) and then to its own generated tokens (suffix_k/v[slot[s]], first
// suffix_len[s] positions). Work is split over (row, kv head); the query heads
// of one kv head (GQA) reuse the K/V rows while they are in cache.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../ops.h"
#include "simd.h"

namespace sgpo::cpu {
namespace {

// q . k over D (D % 8 == 0 uses 8 lanes; q is already fp32).
template <typename scalar_t>
SGPO_CPU_CLONES float dot(const float* q, const scalar_t* k, int64_t D) {
  float s = 0.f;
  int64_t j = 0;
  if (D % kLanes == 0) {
    v8f acc = splat(0.f);
    for (; j < D; j += kLanes) acc += load8(q + j) * load8(k + j);
    s = hsum(acc);
  }
  for (; j < D; ++j) s += q[j] * float(k[j]);
  return s;
}
double dot(const double* q, const double* k, int64_t D) {
  double s = 0;
  for (int64_t j = 0; j < D; ++j) s += q[j] * k[j];
  return s;
}

// out += p * v over D.
template <typename acc, typename scalar_t>
void axpy(acc* out, acc p, const scalar_t* v, int64_t D) {
  for (int64_t j = 0; j < D; ++j) out[j] += p * acc(v[j]);
}

template <typename scalar_t>
void decode_attention_typed(const DecodeAttnArgs& a, at::Tensor& out) {
  using acc = acc_t<scalar_t>;
  const int64_t S = a.q.size(0), Hq = a.q.size(1), D = a.q.size(2);
  const int64_t Hkv = a.prefix_k.size(1), Lp = a.prefix_k.size(2), Ls = a.suffix_k.size(2);
  const int64_t group = Hq / Hkv;
  const scalar_t *q = a.q.data_ptr<scalar_t>(), *pk = a.prefix_k.data_ptr<scalar_t>(),
                 *pv = a.prefix_v.data_ptr<scalar_t>(), *sk = a.suffix_k.data_ptr<scalar_t>(),
                 *sv = a.suffix_v.data_ptr<scalar_t>();
  const int64_t *plen = a.prefix_len.data_ptr<int64_t>(), *pof = a.prefix_of.data_ptr<int64_t>(),
                *slen = a.suffix_len.data_ptr<int64_t>(), *slot = a.slot.data_ptr<int64_t>();
  scalar_t* o = out.data_ptr<scalar_t>();
  const acc scale = acc(a.scale);

  at::parallel_for(0, S * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> qf(D), scores, accum(D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task / Hkv, h = task % Hkv;
      const int64_t np = plen[pof[s]], ns = slen[s];
      // Sliding window: the first visible prefix / suffix position.
      const int64_t lo_p = a.window > 0 ? std::max<int64_t>(0, np + ns - a.window) : 0;
      const int64_t lo_s = a.window > 0 ? std::max<int64_t>(0, ns - a.window) : 0;
      const scalar_t* kp = pk + (pof[s] * Hkv + h) * Lp * D;
      const scalar_t* vp = pv + (pof[s] * Hkv + h) * Lp * D;
      const scalar_t* ks = sk + (slot[s] * Hkv + h) * Ls * D;
      const scalar_t* vs = sv + (slot[s] * Hkv + h) * Ls * D;
      scores.resize(np + ns);
      for (int64_t g = 0; g < group; ++g) {
        const int64_t hq = h * group + g;
        const scalar_t* qrow = q + (s * Hq + hq) * D;
        for (int64_t j = 0; j < D; ++j) qf[j] = acc(qrow[j]) * scale;
        acc m = -INFINITY;
        for (int64_t t = lo_p; t < np; ++t) m = std::max(m, scores[t] = dot(qf.data(), kp + t * D, D));
        for (int64_t t = lo_s; t < ns; ++t) m = std::max(m, scores[np + t] = dot(qf.data(), ks + t * D, D));
        std::fill(accum.begin(), accum.end(), acc(0));
        acc sum = 0;
        for (int64_t t = 0; t < np + ns; ++t) {
          if (t < np ? t < lo_p : t - np < lo_s) continue;
          const acc p = std::exp(scores[t] - m);
          sum += p;
          axpy(accum.data(), p, t < np ? vp + t * D : vs + (t - np) * D, D);
        }
        scalar_t* orow = o + (s * Hq + hq) * D;
        const acc inv = sum > acc(0) ? acc(1) / sum : acc(0);  // no keys: zeros, never NaN
        for (int64_t j = 0; j < D; ++j) orow[j] = scalar_t(accum[j] * inv);
      }
    }
  });
}

}  // namespace
}  // namespace sgpo::cpu

namespace sgpo {

at::Tensor decode_attention_cpu(const DecodeAttnArgs& a) {
  at::Tensor out = at::empty(a.q.sizes(), a.q.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.q.scalar_type(), "sgpo_decode_attention",
                                  [&] { cpu::decode_attention_typed<scalar_t>(a, out); });
  return out;
}

}  // namespace sgpo
