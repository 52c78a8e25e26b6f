// CUDA group_advantages (ops.h; spec: reference.group_advantages).
//
// One thread per group: groups are small (the G responses of one prompt), and
// a thread walking its group serially runs the very same arithmetic as the CPU
// driver (common/group_stats.h), including the shifted two-pass moments that
// make a group of equal rewards give advantages of exactly 0.
// scale="batch" needs the std of all used rewards first: it is computed on the
// device (Tensor::std) and read from device memory by a second kernel, so the
// op never synchronizes with the host.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <limits>

#include "../common/group_stats.h"
#include "../ops.h"

namespace sgpo {
namespace {

constexpr int kThreads = 128;

template <typename T>
struct GroupParams {
  const T* rewards;        // [N]
  const bool* correct;     // [N]?
  const T* rts;            // [N]? (NaN = not judged)
  const int64_t* offsets;  // [P+1]?
  int64_t group_size;      // used when offsets is null
  int64_t num_groups;      // P
  int64_t n;               // N
  CreditParams<T> credit;
  Scale scale;
  T eps;
  T* adv;                  // [N]
  T* used;                 // [N]
  T* mean;                 // [P]
  T* stdev;                // [P]
  bool* all_neg;           // [P]
};

template <typename T>
__device__ __forceinline__ void group_range(const GroupParams<T>& p, int64_t g, int64_t& begin, int64_t& end) {
  if (p.offsets) {
    begin = p.offsets[g];
    end = p.offsets[g + 1];
  } else {
    begin = g * p.group_size;
    end = begin + p.group_size;
  }
  // Offsets are not range-checked on the host (that would sync): non-empty
  // groups that start at 0 and end at N cover [0, N) exactly once.
  CUDA_KERNEL_ASSERT(0 <= begin && begin < end && end <= p.n);
  CUDA_KERNEL_ASSERT((g != 0 || begin == 0) && (g != p.num_groups - 1 || end == p.n));
}

// grid * block >= P threads, one per group. Writes used, mean, std, all_neg,
// and adv unless scale is Batch.
template <typename T>
__global__ void group_stats_kernel(const GroupParams<T> p) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= p.num_groups) return;
  int64_t begin, end;
  group_range(p, g, begin, end);

  // Without `correct`, a reward > 0 counts as correct (binary-reward convention).
  bool any_correct = false;
  for (int64_t i = begin; i < end; ++i) any_correct |= p.correct ? p.correct[i] : p.rewards[i] > T(0);
  const bool all_neg = !any_correct;

  // Credit needs both the verdict and the judge's score (entry.h sets scope Off otherwise).
  const bool can_credit = p.correct && p.rts && p.credit.scope != Scope::Off;
  bool any_credited = false;
  for (int64_t i = begin; i < end; ++i) {
    const bool credited = can_credit && is_credited(p.correct[i], p.rts[i], all_neg, p.credit.scope);
    p.used[i] = credited ? rts_credit(p.rts[i], p.credit) : p.rewards[i];
    any_credited |= credited;
  }

  const T* used = p.used + begin;  // written above by this same thread
  const Moments<T> mom = group_moments<T>([used](int64_t j) { return used[j]; }, end - begin);
  p.mean[g] = mom.mean;
  p.stdev[g] = mom.std;
  p.all_neg[g] = all_neg;

  if (p.scale == Scale::Batch) return;
  const T denom = group_denominator(mom.std, any_credited, p.credit.std_floor, p.eps);
  for (int64_t i = begin; i < end; ++i) {
    const T centered = used[i - begin] - mom.mean;
    p.adv[i] = p.scale == Scale::Group ? safe_div(centered, denom) : centered;  // else None (Dr. GRPO)
  }
}

// scale="batch": adv = (used - group mean) / (batch_std + eps), one thread per
// group. batch_std: a device scalar, or null for N == 1 (std 0).
template <typename T>
__global__ void batch_scale_kernel(const GroupParams<T> p, const T* batch_std) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= p.num_groups) return;
  int64_t begin, end;
  group_range(p, g, begin, end);
  const T denom = (batch_std ? *batch_std : T(0)) + p.eps;
  const T mean = p.mean[g];
  for (int64_t i = begin; i < end; ++i) p.adv[i] = safe_div(p.used[i] - mean, denom);
}

}  // namespace

// See ops.h: rewards [N], offsets [P+1]? or group_size, correct [N] bool?,
// rts [N]? -> (advantages [N], used [N], mean [P], std [P], all_negative [P]).
GroupAdvOut group_advantages_cuda(const GroupAdvArgs& a) {
  TORCH_CHECK(a.rewards.is_cuda(), "rewards: expected a CUDA tensor");
  const c10::cuda::CUDAGuard guard(a.rewards.device());
  const at::ScalarType dtype = a.rewards.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor rewards = a.rewards.to(dtype).contiguous();
  const at::Tensor rts = a.rts.defined() ? a.rts.to(dtype).contiguous() : at::Tensor();
  const int64_t n = rewards.size(0), groups = a.num_groups;
  TORCH_CHECK(groups <= std::numeric_limits<int32_t>::max() * int64_t(kThreads), "rewards: too many groups: ",
              groups);

  at::Tensor adv = at::empty_like(rewards);
  at::Tensor used = at::empty_like(rewards);
  at::Tensor mean = at::empty({groups}, rewards.options());
  at::Tensor stdev = at::empty({groups}, rewards.options());
  at::Tensor all_neg = at::empty({groups}, rewards.options().dtype(at::kBool));

  const unsigned blocks = static_cast<unsigned>((groups + kThreads - 1) / kThreads);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "sgpo_group_advantages", [&] {
    using T = scalar_t;
    GroupParams<T> p{};
    p.rewards = rewards.data_ptr<T>();
    p.correct = a.correct.defined() ? a.correct.data_ptr<bool>() : nullptr;
    p.rts = rts.defined() ? rts.data_ptr<T>() : nullptr;
    p.offsets = a.offsets.defined() ? a.offsets.data_ptr<int64_t>() : nullptr;
    p.group_size = a.group_size;
    p.num_groups = groups;
    p.n = n;
    p.credit = CreditParams<T>{a.credit.scope, a.credit.credit, static_cast<T>(a.credit.credit_beta),
                               static_cast<T>(a.credit.credit_gamma), static_cast<T>(a.credit.credit_scale),
                               static_cast<T>(a.credit.std_floor)};
    p.scale = a.scale;
    p.eps = static_cast<T>(a.eps);
    p.adv = adv.data_ptr<T>();
    p.used = used.data_ptr<T>();
    p.mean = mean.data_ptr<T>();
    p.stdev = stdev.data_ptr<T>();
    p.all_neg = all_neg.data_ptr<bool>();
    group_stats_kernel<T><<<blocks, kThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (a.scale == Scale::Batch) {
      // Unbiased std of all used rewards, left on the device; N == 1 -> 0 (torch gives NaN).
      const at::Tensor batch_std = n > 1 ? used.std(/*unbiased=*/true) : at::Tensor();
      batch_scale_kernel<T><<<blocks, kThreads, 0, stream>>>(p, n > 1 ? batch_std.data_ptr<T>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {adv, used, mean, stdev, all_neg};
}

}  // namespace sgpo
