// CUDA primitives shared by every kernel in csrc/cuda/: warp and block
// all-reductions, with the online log-sum-exp state (common/lse.h) as one of
// the values they reduce.
//
// Determinism: a butterfly (shfl_xor) warp reduction leaves every lane with
// the same value, and the block reduction has every thread combine the warps'
// values from shared memory in warp order. So all threads of a block hold the
// bitwise same result, their branches on it are uniform, and a sum over the
// same elements always rounds the same way.
#pragma once
#include <cstdint>

#include "../common/lse.h"
#include "../common/macros.h"

namespace sgpo::cuda {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};
struct Min {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a < b ? a : b; }
};
// Merges online log-sum-exp states.
struct MergeLSE {
  template <typename T>
  __device__ OnlineLSE<T> operator()(OnlineLSE<T> a, const OnlineLSE<T>& b) const {
    a.merge(b);
    return a;
  }
};

// The value of lane (this lane ^ lane_mask): scalars, and OnlineLSE field by field.
template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int lane_mask) {
  return __shfl_xor_sync(kFullMask, v, lane_mask);
}
template <typename T>
__device__ __forceinline__ OnlineLSE<T> shfl_xor(const OnlineLSE<T>& a, int lane_mask) {
  OnlineLSE<T> o;
  o.m = shfl_xor(a.m, lane_mask);
  o.s = shfl_xor(a.s, lane_mask);
  o.sx = shfl_xor(a.sx, lane_mask);
  return o;
}

// Every lane of a full warp gets op over the 32 lanes' values.
template <typename T, typename Op>
__device__ __forceinline__ T warp_allreduce(T v, Op op) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v = op(v, shfl_xor(v, o));
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  return warp_allreduce(v, Sum{});
}

// Every thread of the block gets op over all threads' values.
// blockDim.x must be a multiple of 32 (kBlock when given at compile time,
// which unrolls the final loop). scratch: blockDim.x / 32 shared elements,
// free again on return (a trailing barrier), so calls may follow each other.
template <int kBlock = 0, typename T, typename Op>
__device__ __forceinline__ T block_allreduce(T v, Op op, T* scratch) {
  v = warp_allreduce(v, op);
  if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = v;
  __syncthreads();
  const int warps = kBlock > 0 ? kBlock / kWarp : static_cast<int>(blockDim.x) / kWarp;
  T all = scratch[0];
#pragma unroll
  for (int w = 1; w < warps; ++w) all = op(all, scratch[w]);
  __syncthreads();
  return all;
}

// Shared scratch for block_allreduce of a type with default member
// initializers (OnlineLSE), which __shared__ variables cannot have:
// raw storage for kWarps values.
template <typename T, int kWarps>
struct SharedScratch {
  alignas(T) unsigned char raw[sizeof(T) * kWarps];
  __device__ T* get() { return reinterpret_cast<T*>(raw); }
};

}  // namespace sgpo::cuda
