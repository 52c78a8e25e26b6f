// Unit tests of the torch-free shared math (csrc/common/), which the CPU and
// CUDA kernels both run: each function against a direct double-precision
// formula (or a finite difference, for derivatives). No torch, no framework:
// a failed check prints itself, and the exit code is the number of failures
// (capped), so ctest reports it.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "common/group_stats.h"
#include "common/lse.h"
#include "common/policy_loss.h"
#include "common/sampling.h"

namespace {

int g_checks = 0, g_failures = 0;

void check(bool ok, const char* what, int line, double got = 0, double want = 0) {
  ++g_checks;
  if (ok) return;
  ++g_failures;
  std::printf("FAIL line %d: %s (got %.17g, want %.17g)\n", line, what, got, want);
}
#define CHECK(cond) check((cond), #cond, __LINE__)
// |got - want| <= tol * max(1, |want|); equal infinities pass.
#define CHECK_CLOSE(got, want, tol)                                                           \
  do {                                                                                         \
    const double g_ = (got), w_ = (want);                                                      \
    check(g_ == w_ || std::fabs(g_ - w_) <= (tol) * std::fmax(1.0, std::fabs(w_)),             \
          #got " ~= " #want, __LINE__, g_, w_);                                                \
  } while (0)

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

std::mt19937_64 rng(12345);
double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }

// ---- reference formulas, double precision -----------------------------------
double direct_lse(const std::vector<double>& x) {
  double m = -kInf;
  for (double v : x) m = std::fmax(m, v);
  if (m == -kInf) return -kInf;
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s);
}
double direct_entropy(const std::vector<double>& x) {
  const double lse = direct_lse(x);
  double h = 0;
  for (double v : x) {
    if (v == -kInf) continue;  // p = 0 contributes 0
    const double lp = v - lse;
    h -= std::exp(lp) * lp;
  }
  return h;
}
template <typename T>
sgpo::OnlineLSE<T> fold(const std::vector<double>& x, size_t begin, size_t end) {
  sgpo::OnlineLSE<T> st;
  for (size_t i = begin; i < end; ++i) st.add(static_cast<T>(x[i]));
  return st;
}

double surrogate_loss(double r, double a, const sgpo::SurrogateParams<double>& p) {
  const double r1 = p.has_delta ? std::fmin(r, p.delta) : r;
  const double r2 = std::fmin(std::fmax(r, 1 - p.eps_low), 1 + p.eps_high);
  return -std::fmin(r1 * a, r2 * a);
}

// ---- tests ------------------------------------------------------------------
template <typename T>
void test_online_lse(double tol) {
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + rng() % 300;
    const double spread = trial % 3 == 0 ? 1.0 : (trial % 3 == 1 ? 30.0 : 1e3);
    std::vector<double> x(n);
    for (double& v : x) v = static_cast<double>(static_cast<T>(uniform(-spread, spread) + spread * 0.5));
    if (trial % 4 == 0) x[rng() % n] = -kInf;  // masked logits
    if (trial % 8 == 0) {
      for (double& v : x) v = rng() % 3 == 0 ? -kInf : v;
    }
    const bool all_masked = direct_lse(x) == -kInf;

    const sgpo::OnlineLSE<T> whole = fold<T>(x, 0, n);
    CHECK_CLOSE(whole.lse(), direct_lse(x), tol);
    if (!all_masked) CHECK_CLOSE(whole.entropy(), direct_entropy(x), tol * spread);

    // Fold three slices (some possibly empty) separately, merge in another order.
    const size_t a = rng() % (n + 1), b = a + rng() % (n - a + 1);
    sgpo::OnlineLSE<T> s0 = fold<T>(x, 0, a), s1 = fold<T>(x, a, b), s2 = fold<T>(x, b, n);
    s2.merge(s0);
    s1.merge(s2);
    CHECK_CLOSE(s1.lse(), direct_lse(x), tol);
    if (!all_masked) CHECK_CLOSE(s1.entropy(), direct_entropy(x), tol * spread);
  }

  // Empty states: lse = -inf; merging them is a no-op in both directions.
  sgpo::OnlineLSE<T> empty, other = fold<T>({1.0, 2.0}, 0, 2), e2;
  CHECK(empty.lse() == -kInf);
  e2.merge(empty);
  CHECK(e2.m == -kInf && e2.s == 0 && e2.sx == 0);
  const T before = other.lse();
  other.merge(empty);
  CHECK(other.lse() == before);
  empty.merge(other);
  CHECK(empty.lse() == before);
  CHECK_CLOSE(before, std::log(std::exp(1.0) + std::exp(2.0)), tol);
  CHECK(fold<T>({-kInf, -kInf}, 0, 2).lse() == -kInf);

  // Large and small magnitudes: no overflow, no underflow to -inf.
  const double big = std::is_same<T, float>::value ? 1e30 : 1e300;
  CHECK_CLOSE(fold<T>({big, big}, 0, 2).lse(), big, tol);
  CHECK_CLOSE(fold<T>({-big, 0.0}, 0, 2).lse(), 0.0, tol);
  CHECK_CLOSE(fold<T>({1000.0, 999.0, -1000.0}, 0, 3).lse(), direct_lse({1000.0, 999.0, -1000.0}), tol);
  CHECK_CLOSE(fold<T>({1e-30, 2e-30}, 0, 2).lse(), std::log(2.0), tol);
  // A single logit: lse is the logit itself, entropy exactly 0.
  CHECK(fold<T>({3.5}, 0, 1).lse() == T(3.5));
  CHECK(fold<T>({3.5}, 0, 1).entropy() == T(0));
  // Uniform over n: entropy log n.
  CHECK_CLOSE(fold<T>(std::vector<double>(64, -2.0), 0, 64).entropy(), std::log(64.0), tol);
}

// fold_max / merge_max carry accumulators other than OnlineLSE's, as decode
// attention does: a softmax-weighted mean of values, folded in slices and
// merged, equals the direct one.
template <typename T>
void test_online_softmax_weights(double tol) {
  for (int trial = 0; trial < 100; ++trial) {
    const size_t n = 1 + rng() % 200;
    std::vector<double> x(n), v(n);
    for (size_t i = 0; i < n; ++i) {
      x[i] = static_cast<double>(static_cast<T>(uniform(-20, 20)));
      v[i] = static_cast<double>(static_cast<T>(uniform(-3, 3)));
    }
    const double lse = direct_lse(x);
    double want = 0;
    for (size_t i = 0; i < n; ++i) want += std::exp(x[i] - lse) * v[i];

    struct State { T m = sgpo::neg_inf<T>(), l = T(0), o = T(0); };
    auto fold = [&](size_t begin, size_t end) {
      State st;
      for (size_t i = begin; i < end; ++i) {
        const sgpo::Rescale<T> r = sgpo::fold_max(st.m, static_cast<T>(x[i]));
        st.l = st.l * r.old + r.add;
        st.o = st.o * r.old + r.add * static_cast<T>(v[i]);
      }
      return st;
    };
    const size_t a = rng() % (n + 1);
    State s0 = fold(0, a);
    const State s1 = fold(a, n);
    const sgpo::Rescale<T> r = sgpo::merge_max(s0.m, s1.m);
    s0.l = s0.l * r.old + s1.l * r.add;
    s0.o = s0.o * r.old + s1.o * r.add;
    CHECK_CLOSE(s0.o / s0.l, want, tol);
    CHECK_CLOSE(fold(0, n).o / fold(0, n).l, want, tol);
  }
  // Merging with an empty side leaves the other unscaled.
  T m = T(2);
  const sgpo::Rescale<T> keep = sgpo::merge_max(m, sgpo::neg_inf<T>());
  CHECK(m == T(2) && keep.old == T(1) && keep.add == T(0));
  T e = sgpo::neg_inf<T>();
  const sgpo::Rescale<T> take = sgpo::merge_max(e, T(2));
  CHECK(e == T(2) && take.old == T(0) && take.add == T(1));
}

void test_clipped_surrogate() {
  const sgpo::SurrogateParams<double> params[] = {{0.2, 0.2, 0.0, false}, {0.2, 0.28, 0.0, false},
                                             {0.1, 0.3, 1.5, true}, {0.2, 0.2, 3.0, true}};
  const double h = 1e-6;
  for (const auto& p : params) {
    const double kinks[] = {1 - p.eps_low, 1 + p.eps_high, p.has_delta ? p.delta : -1.0};
    for (int i = 0; i < 400; ++i) {
      const double r = uniform(0.0, 4.0), adv = uniform(-3.0, 3.0);
      const sgpo::Surrogate<double> s = sgpo::clipped_surrogate(r, adv, p);
      CHECK_CLOSE(s.loss, surrogate_loss(r, adv, p), 1e-15);
      CHECK(s.clip_low == (r < 1 - p.eps_low && adv < 0));
      CHECK(s.clip_high == (r > 1 + p.eps_high && adv > 0));
      bool near_kink = false;
      for (double k : kinks) near_kink |= std::fabs(r - k) < 1e-4;
      if (near_kink) continue;
      const double fd = (surrogate_loss(r + h, adv, p) - surrogate_loss(r - h, adv, p)) / (2 * h);
      CHECK_CLOSE(s.dloss_dratio, fd, 1e-7);
    }
  }
  // Subgradients as torch autograd takes them: clamp passes the gradient at
  // its bounds and min() splits it evenly between equal arguments.
  const sgpo::SurrogateParams<double> p{0.2, 0.2, 0.0, false};
  CHECK_CLOSE(sgpo::clipped_surrogate(1.2, 2.0, p).dloss_dratio, -2.0, 1e-15);
  CHECK_CLOSE(sgpo::clipped_surrogate(0.8, -2.0, p).dloss_dratio, 2.0, 1e-15);
  CHECK(!sgpo::clipped_surrogate(1.2, 2.0, p).clip_high);  // clip counts are strict at the bounds
  CHECK(!sgpo::clipped_surrogate(0.8, -2.0, p).clip_low);
  CHECK_CLOSE(sgpo::clipped_surrogate(1.5, 2.0, p).dloss_dratio, 0.0, 1e-15);   // clipped high
  CHECK_CLOSE(sgpo::clipped_surrogate(1.5, -2.0, p).dloss_dratio, 2.0, 1e-15);  // unclipped l1 wins
  const sgpo::SurrogateParams<double> pd{0.2, 0.2, 1.5, true};
  CHECK_CLOSE(sgpo::clipped_surrogate(2.0, -2.0, pd).loss, 3.0, 1e-15);  // -(delta * A)
  CHECK_CLOSE(sgpo::clipped_surrogate(2.0, -2.0, pd).dloss_dratio, 0.0, 1e-15);
  // A = 0: no loss, no gradient, no clipping counted.
  const sgpo::Surrogate<double> z = sgpo::clipped_surrogate(3.0, 0.0, p);
  CHECK(z.loss == 0 && z.dloss_dratio == 0 && !z.clip_low && !z.clip_high);
}

// cispo and sapo against their formulas written out, and sapo's derivative
// by finite difference; cispo's ratio is detached, so its gradient is direct.
void test_cispo_and_sapo() {
  const double h = 1e-6;
  sgpo::SurrogateParams<double> cispo{0.2, 1.5, 0.0, false};
  cispo.kind = sgpo::SurrogateKind::Cispo;
  sgpo::SurrogateParams<double> sapo{0.2, 0.2, 0.0, false};
  sapo.kind = sgpo::SurrogateKind::Sapo;
  sapo.tau_pos = 0.8;
  sapo.tau_neg = 1.3;
  const auto sapo_loss = [&](double r, double a) {
    const double tau = a > 0 ? sapo.tau_pos : sapo.tau_neg;
    return -1.0 / (1.0 + std::exp(-tau * (r - 1))) * 4 / tau * a;
  };
  for (int i = 0; i < 400; ++i) {
    const double r = uniform(0.0, 4.0), adv = uniform(-3.0, 3.0), logp = uniform(-8.0, 0.0);
    const sgpo::Surrogate<double> c = sgpo::surrogate(logp, r, adv, cispo);
    CHECK_CLOSE(c.loss, -std::fmin(r, 1.5) * adv * logp, 1e-14);
    CHECK_CLOSE(c.dloss_dlogp, -std::fmin(r, 1.5) * adv, 1e-15);
    CHECK(c.dloss_dratio == 0.0 && !c.clip_low);
    CHECK(c.clip_high == (r > 1.5 && adv > 0));
    const sgpo::Surrogate<double> s = sgpo::surrogate(logp, r, adv, sapo);
    CHECK_CLOSE(s.loss, sapo_loss(r, adv), 1e-14);
    CHECK_CLOSE(s.dloss_dratio, (sapo_loss(r + h, adv) - sapo_loss(r - h, adv)) / (2 * h), 1e-7);
    CHECK(s.dloss_dlogp == 0.0 && !s.clip_low && !s.clip_high);
  }
  // at ratio 1 sapo's slope is that of the unclipped surrogate, -A
  CHECK_CLOSE(sgpo::surrogate(-1.0, 1.0, 2.0, sapo).dloss_dratio, -2.0, 1e-15);
  // the dispatcher's default kind is the clipped surrogate
  const sgpo::SurrogateParams<double> plain{0.2, 0.2, 0.0, false};
  CHECK(sgpo::surrogate(-1.0, 1.7, 2.0, plain).loss == sgpo::clipped_surrogate(1.7, 2.0, plain).loss);
}

void test_k3_and_token_terms() {
  const double h = 1e-6;
  for (int i = 0; i < 300; ++i) {
    const double ref = uniform(-8.0, 0.0), logp = uniform(-8.0, 0.0);
    const double d = ref - logp;
    CHECK_CLOSE(sgpo::k3_kl(ref, logp), std::exp(d) - d - 1, 1e-14);
    CHECK(sgpo::k3_kl(ref, logp) >= 0);
    const double fd = (sgpo::k3_kl(ref, logp + h) - sgpo::k3_kl(ref, logp - h)) / (2 * h);
    CHECK_CLOSE(sgpo::k3_kl_dlogp(ref, logp), fd, 1e-6);
  }
  CHECK(sgpo::k3_kl(-1.25, -1.25) == 0.0);
  CHECK(sgpo::k3_kl_dlogp(-1.25, -1.25) == 0.0);

  // Token level, ratio = exp(logp - old): d loss / d logp by finite difference,
  // with the KL term k3 and k3 * ratio (kl_times_ratio) alike.
  sgpo::SurrogateParams<double> p{0.2, 0.28, 2.0, true};
  const auto loss_at = [&](double logp, double old, double adv, double w, bool has_ref, double ref, double beta) {
    const double ratio = std::exp(logp - old);
    return sgpo::policy_token_terms(logp, ratio, ratio, adv, w, has_ref, ref, beta, p).loss;
  };
  for (int i = 0; i < 800; ++i) {
    p.kl_times_ratio = i >= 400;
    const double logp = uniform(-6.0, -0.1), old = logp + uniform(-1.0, 1.0);
    const double adv = uniform(-2.0, 2.0), w = uniform(0.0, 1.0), ref = uniform(-6.0, -0.1);
    const bool has_ref = i % 2 == 0;
    const double beta = i % 4 == 0 ? 0.0 : uniform(0.0, 0.5);
    const double ratio = std::exp(logp - old);
    if (std::fabs(ratio - 0.8) < 1e-4 || std::fabs(ratio - 1.28) < 1e-4 || std::fabs(ratio - 2.0) < 1e-4) continue;
    const sgpo::TokenTerms<double> t = sgpo::policy_token_terms(logp, ratio, ratio, adv, w, has_ref, ref, beta, p);
    const double kl = has_ref ? sgpo::k3_kl(ref, logp) * (p.kl_times_ratio ? ratio : 1.0) : 0.0;
    const double want_loss = w * (surrogate_loss(ratio, adv, p) + beta * kl);
    CHECK_CLOSE(t.loss, want_loss, 1e-14);
    CHECK_CLOSE(t.kl, kl, 1e-15);
    const double fd = (loss_at(logp + h, old, adv, w, has_ref, ref, beta) -
                       loss_at(logp - h, old, adv, w, has_ref, ref, beta)) / (2 * h);
    CHECK_CLOSE(t.dloss_dlogp, fd, 1e-6);
  }
  // Sequence level: d(per-token loss) / d (sequence ratio) by finite difference in the ratio,
  // the KL term counted only when it is ratio-weighted.
  for (int i = 0; i < 400; ++i) {
    p.kl_times_ratio = i % 2 == 0;
    const double logp = uniform(-6.0, -0.1), ratio = uniform(0.3, 3.0), adv = uniform(-2.0, 2.0);
    const double ref = uniform(-6.0, -0.1), beta = uniform(0.0, 0.5);
    const bool has_ref = i % 3 != 0;
    if (std::fabs(ratio - 0.8) < 1e-4 || std::fabs(ratio - 1.28) < 1e-4 || std::fabs(ratio - 2.0) < 1e-4) continue;
    const auto loss_of_ratio = [&](double r) {
      return surrogate_loss(r, adv, p) + (has_ref && p.kl_times_ratio ? beta * sgpo::k3_kl(ref, logp) * r : 0.0);
    };
    const double fd = (loss_of_ratio(ratio + h) - loss_of_ratio(ratio - h)) / (2 * h);
    CHECK_CLOSE(sgpo::sequence_dloss_dratio(logp, ratio, adv, has_ref, ref, beta, p), fd, 1e-6);
  }
  p.kl_times_ratio = false;
  // Sequence level passes dratio_dlogp = 0: only the KL term depends on this token.
  const sgpo::TokenTerms<double> s = sgpo::policy_token_terms(-1.0, 1.1, 0.0, 1.0, 0.5, true, -1.5, 0.1, p);
  CHECK_CLOSE(s.dloss_dlogp, 0.5 * 0.1 * sgpo::k3_kl_dlogp(-1.5, -1.0), 1e-15);
}

void test_credit() {
  const sgpo::CreditParams<double> sig{sgpo::Scope::AllNegative, sgpo::Credit::Sigmoid, 5.0, 0.5, 0.5};
  const sgpo::CreditParams<double> lin{sgpo::Scope::AllNegative, sgpo::Credit::Linear, 5.0, 0.5, 0.5};
  for (double r = 0.0; r <= 1.0; r += 0.03125) {
    CHECK_CLOSE(sgpo::rts_credit(r, sig), 1 / (1 + std::exp(-5.0 * (r - 0.5))), 1e-15);
    CHECK(sgpo::rts_credit(r, lin) == 0.5 * r);
    CHECK(sgpo::rts_credit(r, sig) > 0 && sgpo::rts_credit(r, sig) < 1);  // below a correct answer
  }
  CHECK(sgpo::rts_credit(0.5, sig) == 0.5);
  // the group denominator: the floor binds only for credited groups with a smaller std
  CHECK(sgpo::group_denominator(0.01, true, 0.2, 1e-4) == 0.2 + 1e-4);
  CHECK(sgpo::group_denominator(0.3, true, 0.2, 1e-4) == 0.3 + 1e-4);
  CHECK(sgpo::group_denominator(0.01, false, 0.2, 1e-4) == 0.01 + 1e-4);
  CHECK(sgpo::group_denominator(0.0, true, 0.0, 0.0) == 0.0);  // floor off: 0 / 0 stays safe_div's 0
  CHECK(sgpo::rts_credit(0.5f, sgpo::CreditParams<float>{sgpo::Scope::AllNegative, sgpo::Credit::Sigmoid, 5.f,
                                                         0.5f, 0.5f}) == 0.5f);

  using sgpo::Scope;
  for (Scope scope : {Scope::AllNegative, Scope::AllIncorrect, Scope::Off}) {
    for (int correct = 0; correct < 2; ++correct) {
      for (int all_neg = 0; all_neg < 2; ++all_neg) {
        for (double rts : {0.0, 0.4, 1.0, kNaN}) {
          const bool want = !correct && !std::isnan(rts) &&
                            (scope == Scope::AllIncorrect || (scope == Scope::AllNegative && all_neg));
          CHECK(sgpo::is_credited(correct != 0, rts, all_neg != 0, scope) == want);
          CHECK(sgpo::is_credited(correct != 0, static_cast<float>(rts), all_neg != 0, scope) == want);
        }
      }
    }
  }
}

template <typename T>
void test_group_moments(double tol) {
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 64);
    std::vector<T> x(n);
    for (T& v : x) v = static_cast<T>(uniform(-3.0, 5.0));
    double mean = 0;
    for (T v : x) mean += v;
    mean /= n;
    double ss = 0;
    for (T v : x) ss += (v - mean) * (v - mean);
    const double sd = n > 1 ? std::sqrt(ss / (n - 1)) : 0.0;
    const auto m = sgpo::group_moments<T>([&](int64_t i) { return x[i]; }, n);
    CHECK_CLOSE(m.mean, mean, tol);
    CHECK_CLOSE(m.std, sd, tol);
  }
  // Equal values: mean is the value and std is 0, exactly (advantages exactly 0).
  for (double value : {0.0, 1.0, 0.3, -0.7, 1e-3, 0.2689414213699951}) {
    for (int64_t n : {1, 2, 7, 16, 64}) {
      const T v = static_cast<T>(value);
      const auto m = sgpo::group_moments<T>([&](int64_t) { return v; }, n);
      CHECK(m.mean == v);
      CHECK(m.std == T(0));
    }
  }
  // safe_div: 0 / 0 = 0 (eps = 0 with equal rewards), otherwise plain division.
  CHECK(sgpo::safe_div(T(0), T(0)) == T(0));
  CHECK(sgpo::safe_div(T(3), T(2)) == T(1.5));
  CHECK(sgpo::safe_div(T(-1), T(4)) == T(-0.25));
  // One element: std 0 whatever the value.
  const auto one = sgpo::group_moments<T>([](int64_t) { return T(0.123); }, 1);
  CHECK(one.mean == T(0.123) && one.std == T(0));
}

void test_weight_key() {
  CHECK(sgpo::weight_key(0.0f) == 0u);
  CHECK(sgpo::key_weight(sgpo::weight_key(1.0f)) == 1.0f);
  // Adjacent floats have adjacent keys, over the whole [0, 1] range of weights.
  for (float e = std::numeric_limits<float>::denorm_min(); e < 1.0f; e = e * 1.37f + 1e-38f) {
    const float next = std::nextafter(e, 2.0f);
    CHECK(sgpo::weight_key(next) == sgpo::weight_key(e) + 1u);
    CHECK(sgpo::key_weight(sgpo::weight_key(e)) == e);
  }
  for (int i = 0; i < 2000; ++i) {
    const float a = static_cast<float>(std::exp(uniform(-100.0, 0.0)));
    const float b = static_cast<float>(std::exp(uniform(-100.0, 0.0)));
    CHECK((a < b) == (sgpo::weight_key(a) < sgpo::weight_key(b)));
    CHECK((a == b) == (sgpo::weight_key(a) == sgpo::weight_key(b)));
  }
}

void test_sample_params() {
  const sgpo::SampleParams<double> off{1.0, 0, 1.0, 0.0};
  CHECK(!sgpo::top_k_active(off, 100) && !sgpo::top_p_active(off) && sgpo::min_p_cut(off, 1.0) == 0.0);
  const sgpo::SampleParams<double> on{0.7, 5, 0.9, 0.05};
  CHECK(sgpo::top_k_active(on, 100) && sgpo::top_p_active(on) && sgpo::min_p_cut(on, 1.0) == 0.05);
  CHECK(sgpo::min_p_cut(on, 0.5) == 0.025);  // relative to the computed max weight
  CHECK(!sgpo::top_k_active(on, 5));  // k >= V keeps everything
  CHECK(sgpo::max_(0.25, 0.5) == 0.5 && sgpo::max_(0.5, 0.25) == 0.5);
}

}  // namespace

int main() {
  static_assert(std::is_same<sgpo::acc_t<double>, double>::value, "fp64 accumulates in fp64");
  static_assert(std::is_same<sgpo::acc_t<float>, float>::value, "fp32 accumulates in fp32");
  test_online_lse<double>(1e-12);
  test_online_lse<float>(2e-5);
  test_online_softmax_weights<double>(1e-12);
  test_online_softmax_weights<float>(2e-5);
  test_clipped_surrogate();
  test_cispo_and_sapo();
  test_k3_and_token_terms();
  test_credit();
  test_group_moments<double>(1e-12);
  test_group_moments<float>(2e-6);
  test_weight_key();
  test_sample_params();
  if (g_failures) {
    std::printf("test_common_math: %d of %d checks FAILED\n", g_failures, g_checks);
    return g_failures < 100 ? g_failures : 100;
  }
  std::printf("test_common_math: all %d checks passed\n", g_checks);
  return 0;
}
