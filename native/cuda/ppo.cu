// CUDA fused PPO objective from logits (DESIGN §1.7); math in src/reference/ppo.ts, token terms shared with
// the CPU (rlhf/policy.h, kl.h, value.h). One block per token row: the row's lse (and the anchor's), the
// token's policy / KL / value terms, the full KL when asked, and dloss/dlogits written once. Per-token
// terms go to scratch and are summed in token order by one block. v1 reads a row up to three times.
#include "rlhf/cuda_ops.h"
#include "tokens.cuh"

namespace rk::gpu {
namespace {

constexpr int THREADS = 512;
constexpr int TERMS = 8;  // w·policy, w·kl, w·value, w·approxKl, ratio, low, high, dual (+ vclip below)

// lse in double: the full KL takes the difference of two of them (as native/cuda/kl.cu)
template <typename T>
__device__ double lse_of(const T* row, int64_t V, float invT) {
  MaxSum ms{-INFINITY, 0.f};
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) ms = maxsum_add(ms, to_float(row[v]) * invT);
  const MaxSum all = block_maxsum(ms);
  return all.m == -INFINITY ? -INFINITY : double(all.m) + log(double(all.s));
}

__device__ int64_t sequence_of(const TokenBatch& b, int64_t t) {
  int64_t lo = 0, hi = b.num_seqs - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (b.offsets[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

template <typename T>
__global__ void __launch_bounds__(THREADS) ppo_rows_kernel(PpoLossParams p, const int32_t* counts, const float* totals, float* terms, float* vclip,
                                                           DeviceFlags* flags) {
  const int64_t t = blockIdx.x;
  const int64_t V = p.V;
  float* g = p.grad_logits + t * V;
  float* term = terms + t * TERMS;
  const TokenBatch& b = p.batch;
  const int32_t y = p.actions[t];
  const bool bad = y < 0 || y >= V;  // device actions: flagged, never read out of the row
  if (bad && threadIdx.x == 0 && !(b.mask && !b.mask[t])) atomicMin(&flags->first_bad_row, int32_t(t));
  if ((b.mask && !b.mask[t]) || bad) {
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) g[v] = 0.f;
    if (threadIdx.x == 0) {
      for (int k = 0; k < TERMS; k++) term[k] = 0.f;
      term[4] = -INFINITY;  // ratio: ignored by the max, and the sum skips masked tokens
      vclip[t] = 0.f;
      p.logp[t] = 0.f;
      if (p.grad_values) p.grad_values[t] = 0.f;
    }
    return;
  }
  const T* row = static_cast<const T*>(p.logits.data) + t * V;
  const T* arow = p.anchor_logits.data ? static_cast<const T*>(p.anchor_logits.data) + t * V : nullptr;
  const float invT = 1.f / p.temperature;
  const double lse_exact = lse_of(row, V, invT);
  const double lse_a_exact = arow ? lse_of(arow, V, invT) : 0.0;
  const float lse = float(lse_exact), lse_a = float(lse_a_exact);
  const float lp = to_float(row[y]) * invT - lse;
  const float anchor_lp = arow ? to_float(arow[y]) * invT - lse_a : 0.f;
  const float old = p.old_logp.data ? read(p.old_logp, t) : anchor_lp;
  const float w = seq_weight(b.mode, totals, counts[sequence_of(b, t)]);
  const PolicyToken s = policy_token(lp, old, read(p.advantages, t), p.policy);
  float c_logp = w * s.grad, c_full = 0.f, kl = 0.f;
  if (p.full_kl) {
    const float dl = float(lse_a_exact - lse_exact);
    float part = 0.f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float a = to_float(arow[v]);
      const float pa = __expf(a * invT - lse_a);
      if (pa > 0.f) part += pa * ((a - to_float(row[v])) * invT - dl);
    }
    kl = block_sum(part);
    c_full = p.beta * w;
  } else {
    const float ref = p.ref_logp.data ? read(p.ref_logp, t) : (arow ? anchor_lp : old);
    float gk;
    kl_token(lp - ref, p.kl, kl, gk);
    c_logp += p.beta * w * gk;
  }
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float q = __expf(to_float(row[v]) * invT - lse);
    float d = c_logp * ((v == y ? 1.f : 0.f) - q);
    if (c_full != 0.f) d += c_full * (q - __expf(to_float(arow[v]) * invT - lse_a));
    g[v] = d * invT;
  }
  if (threadIdx.x == 0) {
    p.logp[t] = lp;
    float vl = 0.f, gv = 0.f;
    bool clipped = false;
    if (p.values.data && p.returns.data) {
      clipped = value_token(read(p.values, t), read(p.returns, t), p.old_values.data ? read(p.old_values, t) : 0.f, p.value, vl, gv);
      if (p.grad_values) p.grad_values[t] = p.c1 * w * gv;
    }
    term[0] = w * s.loss;
    term[1] = w * kl;
    term[2] = w * vl;
    term[3] = w * (old - lp);
    term[4] = s.ratio;
    term[5] = s.clipped_low;
    term[6] = s.clipped_high;
    term[7] = s.dual_clipped;
    vclip[t] = clipped;
  }
}

// result: loss, policyLoss, kl, valueLoss, approxKl, ratioSum, low, high, dual, vclip, ratioMax, count
__global__ void ppo_total_kernel(const float* terms, const float* vclip, int64_t M, float beta, float c1, const float* totals, float* result) {
  for (int k = 0; k < TERMS; k++) {
    float v = 0.f;
    for (int64_t t = threadIdx.x; t < M; t += blockDim.x) {
      const float x = terms[t * TERMS + k];
      if (k != 4 || x != -INFINITY) v += x;
    }
    v = block_sum(v);
    if (threadIdx.x == 0) result[1 + k] = v;
  }
  float vc = 0.f, mx = -INFINITY;
  for (int64_t t = threadIdx.x; t < M; t += blockDim.x) {
    vc += vclip[t];
    mx = fmaxf(mx, terms[t * TERMS + 4]);
  }
  vc = block_sum(vc);
  mx = block_max(mx);
  if (threadIdx.x == 0) {
    result[9] = vc;
    result[10] = mx;
    result[11] = totals[3];
    result[0] = result[1] + beta * result[2] + c1 * result[3];
  }
}

}  // namespace

size_t ppo_scratch_bytes(const PpoLossParams& p) {
  return token_scratch_bytes(p.batch.num_seqs, 0) + size_t(p.batch.tokens) * (TERMS + 1) * sizeof(float);
}

cudaError_t ppo_loss(const PpoLossParams& p, float* result, void* scratch, DeviceFlags* flags, cudaStream_t stream) {
  const TokenBatch& b = p.batch;
  const TokenScratch s = token_scratch(scratch, b.num_seqs);
  float* terms = reinterpret_cast<float*>(static_cast<char*>(scratch) + token_scratch_bytes(b.num_seqs, 0));
  float* vclip = terms + b.tokens * TERMS;
  cudaError_t err = launch_token_weights(b, s, stream);
  if (err != cudaSuccess) return err;
  if (b.tokens > 0) {
    switch (p.logits.dtype) {
      case DType::bf16: ppo_rows_kernel<bf16><<<unsigned(b.tokens), THREADS, 0, stream>>>(p, s.counts, s.totals, terms, vclip, flags); break;
      case DType::f16: ppo_rows_kernel<f16><<<unsigned(b.tokens), THREADS, 0, stream>>>(p, s.counts, s.totals, terms, vclip, flags); break;
      case DType::f64: ppo_rows_kernel<double><<<unsigned(b.tokens), THREADS, 0, stream>>>(p, s.counts, s.totals, terms, vclip, flags); break;
      default: ppo_rows_kernel<float><<<unsigned(b.tokens), THREADS, 0, stream>>>(p, s.counts, s.totals, terms, vclip, flags);
    }
  }
  ppo_total_kernel<<<1, 1024, 0, stream>>>(terms, vclip, b.tokens, p.beta, p.c1, s.totals, result);
  return cudaGetLastError();
}

}  // namespace rk::gpu
