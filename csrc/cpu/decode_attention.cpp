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

#include "../common/lse.h"
#include "../ops.h"
#include "simd.h"

namespace sgpo::cpu {
namespace {

// q . k over D (8 lanes when D % 8 == 0; q is already fp32 and scaled).
template <typename scalar_t>
SGPO_VINLINE float dot(const float* q, const scalar_t* k, int64_t D) {
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
inline double dot(const double* q, const double* k, int64_t D) {
  double s = 0;
  for (int64_t j = 0; j < D; ++j) s += q[j] * k[j];
  return s;
}

// out += p * v over D.
template <typename scalar_t>
SGPO_VINLINE void axpy(float* out, float p, const scalar_t* v, int64_t D) {
  int64_t j = 0;
  if (D % kLanes == 0)
    for (; j < D; j += kLanes) store8(out + j, load8(out + j) + load8(v + j) * p);
  for (; j < D; ++j) out[j] += p * float(v[j]);
}
inline void axpy(double* out, double p, const double* v, int64_t D) {
  for (int64_t j = 0; j < D; ++j) out[j] += p * v[j];
}

// One query head against its visible keys: the prefix positions [lo_p, np)
// then the suffix positions [lo_s, ns), in one pass with the online softmax of
// common/lse.h, as each warp of the CUDA kernel folds its keys. The output is
// rescaled only when the running max grows (rarely after the first keys).
// q: [D] scaled query; out: [D].
template <typename scalar_t, typename acc>
SGPO_CPU_CLONES void attend(const acc* q, const scalar_t* kp, const scalar_t* vp, int64_t lo_p, int64_t np,
                            const scalar_t* ks, const scalar_t* vs, int64_t lo_s, int64_t ns, int64_t D,
                            acc* out) {
  std::fill(out, out + D, acc(0));
  acc m = neg_inf<acc>(), l = acc(0);
  const scalar_t* keys[2] = {kp, ks};
  const scalar_t* values[2] = {vp, vs};
  const int64_t lo[2] = {lo_p, lo_s}, hi[2] = {np, ns};
  for (int part = 0; part < 2; ++part) {  // prefix, then suffix
    for (int64_t t = lo[part]; t < hi[part]; ++t) {
      const acc score = dot(q, keys[part] + t * D, D);
      if (score == neg_inf<acc>()) continue;  // weight 0 (and fold_max never sees -inf - -inf)
      const Rescale<acc> r = fold_max(m, score);
      if (r.old != acc(1)) {
        for (int64_t j = 0; j < D; ++j) out[j] *= r.old;
      }
      l = l * r.old + r.add;
      axpy(out, r.add, values[part] + t * D, D);
    }
  }
  const acc inv = l > acc(0) ? acc(1) / l : acc(0);  // no keys: zeros, never NaN
  for (int64_t j = 0; j < D; ++j) out[j] *= inv;
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
    std::vector<acc> qf(D), accum(D);
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
      for (int64_t g = 0; g < group; ++g) {
        const int64_t hq = h * group + g;
        const scalar_t* qrow = q + (s * Hq + hq) * D;
        for (int64_t j = 0; j < D; ++j) qf[j] = acc(qrow[j]) * scale;
        attend(qf.data(), kp, vp, lo_p, np, ks, vs, lo_s, ns, D, accum.data());
        scalar_t* orow = o + (s * Hq + hq) * D;
        for (int64_t j = 0; j < D; ++j) orow[j] = scalar_t(accum[j]);
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
