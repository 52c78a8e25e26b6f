// CPU `sample`: rows in parallel; per row one vectorized sweep for the
// weights e = exp(x - max x), then the filters of common/sampling.h by
// selection (nth_element for top-k, a mass-quickselect for top-p: expected
// O(V), no sort of the vocabulary), then one inverse-CDF sweep.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <vector>

#include "../common/sampling.h"
#include "../ops.h"
#include "simd.h"

namespace sgpo::cpu {
namespace {

// e[v] = exp(z[v] * inv_temp - m) with m = max(z) * inv_temp; returns m.
template <typename scalar_t>
SGPO_CPU_CLONES float row_weights(const scalar_t* z, int64_t V, float inv_temp, float* e) {
  const int64_t Vv = V - V % kLanes;
  const float m = row_max(z, V) * inv_temp;
  for (int64_t j = 0; j < Vv; j += kLanes) store8(e + j, vexp(load8(z + j) * inv_temp - m));
  for (int64_t j = Vv; j < V; ++j) e[j] = std::exp(float(z[j]) * inv_temp - m);
  return m;
}
double row_weights(const double* z, int64_t V, double inv_temp, double* e) {
  double zmax = -INFINITY;
  for (int64_t j = 0; j < V; ++j) zmax = std::max(zmax, z[j]);
  const double m = zmax * inv_temp;
  for (int64_t j = 0; j < V; ++j) e[j] = std::exp(z[j] * inv_temp - m);
  return m;
}

template <typename T>
double sum(const T* b, const T* e) {
  double s = 0;
  for (; b != e; ++b) s += *b;
  return s;
}

// Sum of a row of weights, 8 lanes at a time (fp32 partial sums of values
// in [0, 1], ample for a log-normalizer reported in fp32).
SGPO_CPU_CLONES double row_sum(const float* e, int64_t V) {
  const int64_t Vv = V - V % kLanes;
  v8f acc = splat(0.f);
  for (int64_t j = 0; j < Vv; j += kLanes) acc += load8(e + j);
  double s = hsum(acc);
  for (int64_t j = Vv; j < V; ++j) s += e[j];
  return s;
}
double row_sum(const double* e, int64_t V) { return sum(e, e + V); }

// The smallest value of the shortest descending prefix of v[0..n) whose sum
// reaches `target` (n > 0). Partitions v in place: a quickselect that keeps
// the mass of everything already known to rank above the current range.
template <typename T>
T mass_threshold(T* v, int64_t n, double target) {
  T* lo = v;
  T* hi = v + n;
  T smallest = *std::min_element(v, v + n);
  double above = 0;
  while (hi - lo > 32) {
    T a = lo[0], b = lo[(hi - lo) / 2], c = hi[-1];
    const T pivot = std::max(std::min(a, b), std::min(std::max(a, b), c));  // median of three
    T* gt_end = std::partition(lo, hi, [&](T x) { return x > pivot; });
    T* eq_end = std::partition(gt_end, hi, [&](T x) { return x == pivot; });
    const double m_gt = sum(lo, gt_end);
    if (above + m_gt >= target) {
      hi = gt_end;
      continue;
    }
    above += m_gt + double(pivot) * double(eq_end - gt_end);
    if (above >= target) return pivot;
    lo = eq_end;
  }
  std::sort(lo, hi, [](T x, T y) { return x > y; });
  for (T* p = lo; p != hi; ++p) {
    above += *p;
    if (above >= target) return *p;
  }
  return smallest;  // rounding: the whole set is needed
}

// fp32 rows narrow every selection with a histogram first: the bucket of a
// weight e in [0, 1] is its exponent and top 5 mantissa bits, so buckets are
// ordered like the weights. One pass bins counts (or masses), a walk from the
// top bucket finds the one holding the cut, and only that bucket's elements
// are selected exactly: ~2 sweeps of V instead of a partition-heavy
// quickselect over all of it (the decode loop samples every step).
constexpr int kBucketShift = 18;
constexpr int kBuckets = 1 << (31 - kBucketShift);
// Any bit pattern lands in a bucket: a row without a finite logit gives NaN
// weights (inf - inf, sign bit set on x86) whose key is past the weights' range;
// they go to the top bucket and the row is rejected after the selection.
inline int bucket_of(float e) {
  const uint32_t b = weight_key(e) >> kBucketShift;
  return b < uint32_t(kBuckets) ? int(b) : kBuckets - 1;
}

template <typename acc>
struct Scratch {
  std::vector<int64_t> count = std::vector<int64_t>(kBuckets);
  std::vector<double> mass = std::vector<double>(kBuckets);
  std::vector<acc> work;
};

// The k-th largest weight (1 <= k <= V).
float kth_largest(const float* e, int64_t V, int64_t k, Scratch<float>& s) {
  std::fill(s.count.begin(), s.count.end(), 0);
  for (int64_t v = 0; v < V; ++v) ++s.count[bucket_of(e[v])];
  int64_t above = 0;
  int b = kBuckets - 1;
  for (; b > 0 && above + s.count[b] < k; --b) above += s.count[b];
  s.work.clear();
  for (int64_t v = 0; v < V; ++v)
    if (bucket_of(e[v]) == b) s.work.push_back(e[v]);
  const int64_t r = k - above - 1;  // rank inside the bucket
  std::nth_element(s.work.begin(), s.work.begin() + r, s.work.end(), std::greater<float>());
  return s.work[r];
}

// The top-p cut among the weights >= floor: see mass_threshold.
float mass_cut(const float* e, int64_t V, float floor, double top_p, Scratch<float>& s) {
  std::fill(s.mass.begin(), s.mass.end(), 0.0);
  double kept = 0;
  for (int64_t v = 0; v < V; ++v)
    if (e[v] >= floor) s.mass[bucket_of(e[v])] += e[v];
  for (double m : s.mass) kept += m;
  const double target = top_p * kept;
  double above = 0;
  int b = kBuckets - 1;
  for (; b > 0 && above + s.mass[b] < target; --b) above += s.mass[b];
  s.work.clear();
  for (int64_t v = 0; v < V; ++v)
    if (e[v] >= floor && bucket_of(e[v]) == b) s.work.push_back(e[v]);
  if (s.work.empty()) return floor;  // rounding left nothing to cut: keep all above the floor
  return mass_threshold(s.work.data(), int64_t(s.work.size()), target - above);
}

// The cut of common/sampling.h: the largest of the top-k, top-p and min-p cuts.
template <typename acc>
acc filter_cut(std::vector<acc>& e, const SampleParams<acc>& p, Scratch<acc>& s) {
  const int64_t V = int64_t(e.size());
  acc cut = acc(0);
  if constexpr (std::is_same_v<acc, float>) {
    if (top_k_active(p, V)) cut = kth_largest(e.data(), V, p.top_k, s);
    if (top_p_active(p)) cut = max_(cut, mass_cut(e.data(), V, cut, double(p.top_p), s));
  } else {  // fp64 (the tests' precision): plain selection
    if (top_k_active(p, V)) {
      s.work.assign(e.begin(), e.end());
      std::nth_element(s.work.begin(), s.work.begin() + (p.top_k - 1), s.work.end(), std::greater<acc>());
      cut = s.work[p.top_k - 1];
    }
    if (top_p_active(p)) {
      s.work.clear();
      for (acc x : e)
        if (x >= cut) s.work.push_back(x);
      const double mass = sum(s.work.data(), s.work.data() + s.work.size());
      cut = max_(cut, mass_threshold(s.work.data(), int64_t(s.work.size()), double(p.top_p) * mass));
    }
  }
  if (p.min_p > acc(0)) {
    // Against the computed max weight (1 up to rounding), so the most likely
    // token survives any min_p <= 1.
    const acc e_max = *std::max_element(e.begin(), e.end());
    cut = std::min(max_(cut, min_p_cut(p, e_max)), e_max);
  }
  return cut;
}

template <typename scalar_t>
void sample_typed(const at::Tensor& logits, const double* temperature, const int64_t* top_k, const double* top_p,
                  const double* min_p, const double* uniform, int64_t* tokens, acc_t<scalar_t>* logprobs) {
  using acc = acc_t<scalar_t>;
  const int64_t B = logits.size(0), V = logits.size(1);
  const scalar_t* base = logits.data_ptr<scalar_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc> e(V);
    Scratch<acc> scratch;
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* z = base + b * V;
      const SampleParams<acc> p{acc(temperature[b]), top_k[b], acc(top_p[b]), acc(min_p[b])};
      if (p.temperature == acc(0)) {  // greedy; log-prob at temperature 1
        const int64_t tok = std::max_element(z, z + V, [](scalar_t x, scalar_t y) { return acc(x) < acc(y); }) - z;
        const acc m = row_weights(z, V, acc(1), e.data());
        tokens[b] = tok;
        logprobs[b] = acc(z[tok]) - m - acc(std::log(row_sum(e.data(), V)));
        continue;
      }
      const acc inv_temp = acc(1) / p.temperature;
      const acc m = row_weights(z, V, inv_temp, e.data());
      const double total = row_sum(e.data(), V);
      // every logit -inf gives NaN weights (inf - inf), so does a NaN or +inf logit
      TORCH_CHECK_VALUE(total > 0 && std::isfinite(total), "logits: row ", b,
                  " cannot be sampled (no finite logit, or a NaN / +inf one)");
      const acc cut = filter_cut(e, p, scratch);
      double kept = total;  // no filter: everything is kept
      if (cut > acc(0)) {
        kept = 0;
        for (acc x : e)
          if (x >= cut) kept += x;
      }
      const double goal = uniform[b] * kept;
      int64_t tok = -1;
      double run = 0;
      for (int64_t v = 0; v < V; ++v) {
        if (e[v] < cut) continue;
        run += e[v];
        tok = v;  // also the last kept token, should rounding run past the end
        if (run > goal) break;
      }
      tokens[b] = tok;
      logprobs[b] = acc(z[tok]) * inv_temp - m - acc(std::log(total));
    }
  });
}

}  // namespace
}  // namespace sgpo::cpu

namespace sgpo {

std::tuple<at::Tensor, at::Tensor> sample_cpu(const at::Tensor& logits, const at::Tensor& temperature,
                                              const at::Tensor& top_k, const at::Tensor& top_p,
                                              const at::Tensor& min_p, const at::Tensor& uniform) {
  const int64_t B = logits.size(0);
  const auto out_dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor tokens = at::empty({B}, logits.options().dtype(at::kLong));
  at::Tensor logprobs = at::empty({B}, logits.options().dtype(out_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sgpo_sample", [&] {
    cpu::sample_typed<scalar_t>(logits, temperature.data_ptr<double>(), top_k.data_ptr<int64_t>(),
                                top_p.data_ptr<double>(), min_p.data_ptr<double>(), uniform.data_ptr<double>(),
                                tokens.data_ptr<int64_t>(), logprobs.data_ptr<acc_t<scalar_t>>());
  });
  return {tokens, logprobs};
}

}  // namespace sgpo
