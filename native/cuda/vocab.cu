// CUDA vocabulary kernels (DESIGN §1.1, §1.2). Math: src/reference/vocab.ts; CPU twin: native/cpu/vocab.cc.
//
// Version 1: one block per row and two passes for the gradient.
// - Forward: one read of the row. Each thread keeps an online (max, Σ exp) pair, plus Σ exp·x for the
//   entropy, over a strided slice. The block combines the pairs in a fixed tree order.
// - Batch loss: a second, single-block kernel sums the per-row losses and weights in row order, and writes
//   the loss and the mean's 1/denominator to device memory.
// - Gradient: a third kernel reads each row again and writes dlogits once, so 2 reads + 1 write. The
//   design's 1 read + 1 write (the row held in registers, or a cluster sharing (max, sum) through
//   distributed shared memory) is the next version; bench/NOTES.md has the plan.
#include <cstdint>

#include "common.cuh"
#include "rlhf/cuda_ops.h"
#include "rlhf/cuda_vocab.h"

namespace rk::gpu {
namespace {

constexpr int THREADS = 512;

__device__ __forceinline__ void flag_bad_row(DeviceFlags* flags, int32_t row) { atomicMin(&flags->first_bad_row, row); }

// Per-row statistics: lse of z·invT and, with Entropy, H = lse − Σ p·x (−inf terms skipped: xlogy).
template <typename T, bool Entropy>
__device__ __forceinline__ void row_stats(const T* row, int64_t V, float invT, float& lse, float& entropy) {
  MaxSum ms{-INFINITY, 0.f};
  float t = 0.f;  // Σ exp(x − m)·x at the thread's running max m
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float x = to_float(row[v]) * invT;
    if (Entropy && x != -INFINITY) {
      if (x > ms.m) {
        const float r = ms.m == -INFINITY ? 0.f : __expf(ms.m - x);
        t = t * r + x;
      } else {
        t += __expf(x - ms.m) * x;
      }
    }
    ms = maxsum_add(ms, x);
  }
  const MaxSum all = block_maxsum(ms);
  lse = all.m == -INFINITY ? -INFINITY : all.m + __logf(all.s);
  if (Entropy) {
    const float scale = ms.m == -INFINITY ? 0.f : __expf(ms.m - all.m);
    const float pt = block_sum(t * scale) / all.s;  // Σ p·x
    entropy = all.m == -INFINITY ? 0.f : lse - pt;
  }
}

template <typename T, bool Entropy>
__global__ void __launch_bounds__(THREADS) log_probs_kernel(LogProbsParams p, DeviceFlags* flags) {
  const int64_t n = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits.data) + n * p.V;
  const float invT = 1.f / p.temperature;
  float lse, ent = 0.f;
  row_stats<T, Entropy>(row, p.V, invT, lse, ent);
  if (threadIdx.x == 0) {
    const int32_t y = p.targets[n];
    const bool ignored = y == p.ignore_index;
    const bool bad = !ignored && (y < 0 || y >= p.V);
    if (bad) flag_bad_row(flags, int32_t(n));
    p.lse[n] = lse;
    p.logp[n] = ignored || bad ? 0.f : (lse == -INFINITY ? -INFINITY : to_float(row[y]) * invT - lse);
    if (Entropy) p.entropy[n] = ent;
  }
}

// Cross-entropy forward per row: loss and the row's weight in the mean (w_y, or 0 when ignored).
template <typename T>
__global__ void __launch_bounds__(THREADS) cross_entropy_rows_kernel(CrossEntropyParams p, float* row_weight, DeviceFlags* flags) {
  const int64_t n = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits.data) + n * p.V;
  float lse, unused;
  row_stats<T, false>(row, p.V, 1.f, lse, unused);
  const int32_t y = p.targets[n];
  const bool ignored = y == p.ignore_index;
  const bool bad = !ignored && (y < 0 || y >= p.V);
  const float* cw = static_cast<const float*>(p.class_weights.data);  // float32 on the device
  float smooth = 0.f;
  if (p.label_smoothing != 0.f && !ignored && !bad) {
    float s = 0.f;
    for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) s += (cw ? cw[v] : 1.f) * (lse - to_float(row[v]));
    smooth = block_sum(s);
  }
  if (threadIdx.x != 0) return;
  p.lse[n] = lse;
  if (bad) flag_bad_row(flags, int32_t(n));
  if (ignored || bad) {
    p.losses[n] = 0.f;
    row_weight[n] = 0.f;
    return;
  }
  const float wy = cw ? cw[y] : 1.f;
  const float tw = p.token_weights.data ? static_cast<const float*>(p.token_weights.data)[n] : 1.f;
  float loss;
  if (lse == -INFINITY) {
    loss = INFINITY;
  } else {
    loss = (1.f - p.label_smoothing) * wy * (lse - to_float(row[y])) + p.label_smoothing / float(p.V) * smooth;
    if (p.z_loss != 0.f) loss += p.z_loss * lse * lse;
  }
  p.losses[n] = tw * loss;
  row_weight[n] = wy;
}

// One block: Σ losses and Σ weights in a fixed order; result = { loss, count, scale, W }.
__global__ void __launch_bounds__(1024) finalize_kernel(const float* losses, const float* weights, const int32_t* targets,
                                                        int32_t ignore_index, int64_t N, Reduction reduction, float* result) {
  float l = 0.f, w = 0.f, c = 0.f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    l += losses[n];
    w += weights[n];
    c += targets[n] != ignore_index ? 1.f : 0.f;
  }
  l = block_sum(l);
  w = block_sum(w);
  c = block_sum(c);
  if (threadIdx.x == 0) {
    const float scale = reduction == Reduction::mean ? (w > 0.f ? 1.f / w : 0.f) : 1.f;
    result[0] = l * scale;
    result[1] = c;
    result[2] = scale;
  }
}

// dℓ/dz = scale·τ_n [ (1−ε) w_y (p − onehot_y) + ε/V (W p − w) + 2 s lse p ], written once.
template <typename T>
// result[2] is the mean's 1/denominator; w_sum (Σ class weights) is read only with class weights
__global__ void __launch_bounds__(THREADS) cross_entropy_grad_kernel(CrossEntropyParams p, const float* result, const float* w_sum) {
  const int64_t n = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits.data) + n * p.V;
  float* g = p.grad + n * p.V;
  const int32_t y = p.targets[n];
  const float lse = p.lse[n];
  if (y == p.ignore_index || y < 0 || y >= p.V || lse == -INFINITY) {
    for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) g[v] = 0.f;
    return;
  }
  const float* cw = static_cast<const float*>(p.class_weights.data);
  const float eps = p.label_smoothing;
  const float wy = cw ? cw[y] : 1.f;
  const float gs = result[2] * (p.token_weights.data ? static_cast<const float*>(p.token_weights.data)[n] : 1.f);
  const float W = cw ? *w_sum : float(p.V);
  const float cp = (1.f - eps) * wy + eps * W / float(p.V) + 2.f * p.z_loss * lse;
  const float e = eps / float(p.V);
  for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) {
    const float q = __expf(to_float(row[v]) - lse);
    g[v] = gs * (cp * q - (v == y ? (1.f - eps) * wy : 0.f) - e * (cw ? cw[v] : 1.f));
  }
}

// d/dz = [g_logp (onehot − p) − g_H p (log p + H)] / T, one row per block; H from p.entropy or recomputed.
template <typename T>
__global__ void __launch_bounds__(THREADS) log_probs_backward_kernel(LogProbsBackwardParams p, DeviceFlags* flags) {
  const int64_t n = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits.data) + n * p.V;
  float* g = p.grad + n * p.V;
  const float invT = 1.f / p.temperature;
  const float l = read(p.lse, n);
  const int32_t y = p.targets[n];
  const bool target_ok = y != p.ignore_index && y >= 0 && y < p.V;
  if (!target_ok && y != p.ignore_index && threadIdx.x == 0) flag_bad_row(flags, int32_t(n));
  const float gl = (p.grad_logp.data && target_ok) ? read(p.grad_logp, n) : 0.f;
  const float gh = p.grad_entropy.data ? read(p.grad_entropy, n) : 0.f;
  if (l == -INFINITY || (gl == 0.f && gh == 0.f)) {
    for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) g[v] = 0.f;
    return;
  }
  float h = 0.f;
  if (gh != 0.f) {
    if (p.entropy.data) {
      h = read(p.entropy, n);
    } else {
      float part = 0.f;
      for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) {
        const float lp = to_float(row[v]) * invT - l;
        const float q = __expf(lp);
        if (q > 0.f) part -= q * lp;
      }
      h = block_sum(part);
    }
  }
  for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) {
    const float lp = to_float(row[v]) * invT - l;
    const float q = __expf(lp);
    const float ent = q > 0.f ? gh * q * (lp + h) : 0.f;
    g[v] = ((v == y ? gl * (1.f - q) : -gl * q) - ent) * invT;
  }
}

__global__ void sum_weights_kernel(const float* w, int64_t V, float* out) {
  float s = 0.f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) s += w[v];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

template <typename F>
cudaError_t with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::bf16: return f(bf16{});
    case DType::f16: return f(f16{});
    case DType::f64: return f(double{});
    default: return f(float{});
  }
}

}  // namespace

cudaError_t log_probs(const LogProbsParams& p, DeviceFlags* flags, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  return with_dtype(p.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (p.entropy) log_probs_kernel<T, true><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
    else log_probs_kernel<T, false><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
    return cudaGetLastError();
  });
}

cudaError_t log_probs_backward(const LogProbsBackwardParams& p, DeviceFlags* flags, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  return with_dtype(p.logits.dtype, [&](auto tag) {
    log_probs_backward_kernel<decltype(tag)><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
    return cudaGetLastError();
  });
}

cudaError_t cross_entropy(const CrossEntropyParams& p, float* result, float* scratch, DeviceFlags* flags, cudaStream_t stream) {
  // scratch: [N] row weights, then 1 float for Σ class weights
  float* row_weight = scratch;
  float* w_sum = scratch + p.N;
  return with_dtype(p.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (p.class_weights.data) sum_weights_kernel<<<1, 1024, 0, stream>>>(static_cast<const float*>(p.class_weights.data), p.V, w_sum);
    if (p.N > 0) cross_entropy_rows_kernel<T><<<unsigned(p.N), THREADS, 0, stream>>>(p, row_weight, flags);
    finalize_kernel<<<1, 1024, 0, stream>>>(p.losses, row_weight, p.targets, p.ignore_index, p.N, p.reduction, result);
    if (p.grad && p.N > 0) cross_entropy_grad_kernel<T><<<unsigned(p.N), THREADS, 0, stream>>>(p, result, w_sum);
    return cudaGetLastError();
  });
}

}  // namespace rk::gpu
