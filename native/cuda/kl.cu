// CUDA KL divergences (DESIGN §1.5): sampled-token estimators (math shared with the CPU, rlhf/kl.h) and the
// full-vocabulary KL(p‖q) per row. v1 reads each row pair three times (both lse, the KL, the gradients).
#include "rlhf/cuda_ops.h"
#include "tokens.cuh"

namespace rk::gpu {
namespace {

struct KlPenaltyOp {
  static constexpr int K = 1;
  static constexpr bool kMaxLast = false;
  FloatIn logp, ref_logp;
  KlOptions opts;
  float *per_token, *grad;
  __device__ void masked(int64_t t) const { per_token[t] = 0.f; grad[t] = 0.f; }
  __device__ void operator()(int64_t t, float w, float* acc) const {
    float k, g;
    kl_token(read(logp, t) - read(ref_logp, t), opts, k, g);
    per_token[t] = k;
    grad[t] = w * g;
    acc[0] += w * k;
  }
};

constexpr int THREADS = 512;

// lse in double: the KL takes the difference of two of them (see native/cpu/rowmath.h, row_lse_exact)
template <typename T>
__device__ double row_lse(const T* row, int64_t V, float invT) {
  MaxSum ms{-INFINITY, 0.f};
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) ms = maxsum_add(ms, to_float(row[v]) * invT);
  const MaxSum all = block_maxsum(ms);
  return all.m == -INFINITY ? -INFINITY : double(all.m) + log(double(all.s));
}

__global__ void row_count_kernel(const uint8_t* mask, int64_t N, Reduction reduction, float* result) {
  float c = 0.f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) c += mask ? mask[n] : 1;
  c = block_sum(c);
  if (threadIdx.x == 0) {
    result[1] = c;
    result[2] = reduction == Reduction::mean ? (c > 0.f ? 1.f / c : 0.f) : 1.f;
  }
}

template <typename T>
__global__ void __launch_bounds__(THREADS) kl_rows_kernel(KlDivergenceParams p, const float* result) {
  const int64_t n = blockIdx.x;
  const int64_t V = p.V;
  float* gq = p.grad_q ? p.grad_q + n * V : nullptr;
  float* gp = p.grad_p ? p.grad_p + n * V : nullptr;
  if (p.mask && !p.mask[n]) {
    if (threadIdx.x == 0) p.per_row[n] = 0.f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      if (gq) gq[v] = 0.f;
      if (gp) gp[v] = 0.f;
    }
    return;
  }
  const T* rp = static_cast<const T*>(p.p_logits.data) + n * V;
  const T* rq = static_cast<const T*>(p.q_logits.data) + n * V;
  const float invT = 1.f / p.temperature;
  const double lse_p = row_lse(rp, V, invT), lse_q = row_lse(rq, V, invT);
  const float lp_ = float(lse_p), lq_ = float(lse_q);
  // log p − log q = (z_p − z_q)/T − (lse_p − lse_q): one rounding of the difference (as the CPU kernel)
  const float dl = float(lse_p - lse_q);
  float part = 0.f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float a = to_float(rp[v]), b = to_float(rq[v]);
    const float pv = __expf(a * invT - lp_);
    if (pv > 0.f) part += pv * ((a - b) * invT - dl);
  }
  const float kl = block_sum(part);
  if (threadIdx.x == 0) p.per_row[n] = kl;
  const float s = result[2] * invT;
  const float c = float(lse_p - lse_q + double(kl));
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float a = to_float(rp[v]), b = to_float(rq[v]);
    const float pv = __expf(a * invT - lp_);
    if (gq) gq[v] = s * (__expf(b * invT - lq_) - pv);
    if (gp) gp[v] = pv > 0.f ? s * pv * ((a - b) * invT - c) : 0.f;
  }
}

__global__ void kl_total_kernel(const float* per_row, int64_t N, float* result) {
  float v = 0.f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) v += per_row[n];
  v = block_sum(v);
  if (threadIdx.x == 0) result[0] = v * result[2];
}

}  // namespace

cudaError_t kl_penalty(const KlPenaltyParams& p, float* result, void* scratch, cudaStream_t stream) {
  return launch_token_op(p.batch, KlPenaltyOp{p.logp, p.ref_logp, p.opts, p.per_token, p.grad}, result, scratch, stream);
}

cudaError_t kl_divergence(const KlDivergenceParams& p, float* result, float* scratch, cudaStream_t stream) {
  (void)scratch;
  row_count_kernel<<<1, 1024, 0, stream>>>(p.mask, p.N, p.reduction, result);
  if (p.N > 0) {
    switch (p.p_logits.dtype) {
      case DType::bf16: kl_rows_kernel<bf16><<<unsigned(p.N), THREADS, 0, stream>>>(p, result); break;
      case DType::f16: kl_rows_kernel<f16><<<unsigned(p.N), THREADS, 0, stream>>>(p, result); break;
      case DType::f64: kl_rows_kernel<double><<<unsigned(p.N), THREADS, 0, stream>>>(p, result); break;
      default: kl_rows_kernel<float><<<unsigned(p.N), THREADS, 0, stream>>>(p, result);
    }
  }
  kl_total_kernel<<<1, 1024, 0, stream>>>(p.per_row, p.N, result);
  return cudaGetLastError();
}

}  // namespace rk::gpu
