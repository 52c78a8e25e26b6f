// CUDA primitives shared by every kernel in csrc/cuda/: warp and block
// all-reductions, with the online log-sum-exp state (common/lse.h) as one of
// the values they reduce, and the row helpers of one-block-per-row kernels.
//
// Determinism: a butterfly (shfl_xor) warp reduction leaves every lane with
// the same value, and the block reduction has every thread combine the warps'
// values from shared memory in warp order. So all threads of a block hold the
// bitwise same result, their branches on it are uniform, and a sum over the
// same elements always rounds the same way.
#pragma once
#include <algorithm>
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

// ---- rows: one block per row -------------------------------------------------
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Visits the elements of one row, f(v, x) with x a reference to element v:
// a scalar head up to the first 16-byte boundary, 16-byte packs, a scalar
// tail. With kWrite, what f leaves in x is stored back. Tensor data is always
// aligned to its element size, so the head is a whole number of elements.
template <bool kWrite, typename scalar_t, typename F>
__device__ __forceinline__ void for_row(scalar_t* row, int64_t vocab, F&& f) {
  constexpr int N = 16 / sizeof(scalar_t);
  using P = Pack<scalar_t, N>;
  const int64_t misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) % 16) / sizeof(scalar_t);
  const int64_t head = misalign == 0 ? 0 : (N - misalign < vocab ? N - misalign : vocab);
  const int64_t packs = (vocab - head) / N;
  const int64_t tail = head + packs * N;

  for (int64_t v = threadIdx.x; v < head; v += blockDim.x) {
    scalar_t x = row[v];
    f(v, x);
    if (kWrite) row[v] = x;
  }
  P* body = reinterpret_cast<P*>(row + head);
  for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
    P p = body[j];
#pragma unroll
    for (int k = 0; k < N; ++k) f(head + j * N + k, p.v[k]);
    if (kWrite) body[j] = p;
  }
  for (int64_t v = tail + threadIdx.x; v < vocab; v += blockDim.x) {
    scalar_t x = row[v];
    f(v, x);
    if (kWrite) row[v] = x;
  }
}

// Threads for one row of `vocab` elements, `pack` per 16 bytes: about four
// packs each, in whole warps, at most max_threads.
inline int row_threads(int64_t vocab, int64_t pack, int max_threads) {
  const int64_t want = (vocab + 4 * pack - 1) / (4 * pack);
  const int64_t warps = (want + kWarp - 1) / kWarp;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(warps, 1) * kWarp, max_threads));
}

}  // namespace sgpo::cuda
