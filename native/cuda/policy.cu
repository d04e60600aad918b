// CUDA policy loss (DESIGN §1.4) and its variants; per-token math shared with the CPU (rlhf/policy.h:
// policy_seq, policy_term). One block per sequence (tokens.cuh), in three phases as the CPU's
// policy_sequence: the sequence's sums when an option needs them (block sums in double), its tokens, and for
// GSPO through the mean (coupled()) each token's gradient (1/n) Σ_u w_u g_u. Per-sequence partials are
// summed in sequence order (the two maxima by max).
#include "rlhf/cuda_ops.h"
#include "tokens.cuh"

namespace rk::gpu {
namespace {

using S = PolicySlot;
static_assert(S::w_max == S::K - 2 && S::ratio_max == S::K - 1, "the max accumulators are the last two");

__global__ void __launch_bounds__(TOKEN_THREADS, blocks_within(TOKEN_THREADS, 64)) policy_kernel(PolicyLossParams p, const int32_t* counts,
                                                                                             const float* totals, float* partials) {
  const TokenBatch& b = p.batch;
  const int64_t s = blockIdx.x, begin = b.offsets[s], end = b.offsets[s + 1];
  const int32_t n = counts[s];
  const float w = seq_weight(b.mode, totals, n);
  const bool has_b = p.behavior_logp.data != nullptr;
  auto counted = [&](int64_t t) { return !b.mask || b.mask[t]; };
  PolicySeq q;
  if (p.opts.needs_sequences()) {  // phase 1 (uniform over the block)
    double d_sum = 0, b_sum = 0;
    for (int64_t t = begin + threadIdx.x; t < end; t += blockDim.x) {
      if (!counted(t)) continue;
      const float old = read(p.old_logp, t);
      d_sum += double(read(p.logp, t) - old);
      if (has_b) b_sum += double(old - read(p.behavior_logp, t));
    }
    d_sum = block_sum(d_sum);
    b_sum = block_sum(b_sum);
    q = policy_seq(d_sum, b_sum, n, p.opts);
  }
  float acc[S::K];
  for (int k = 0; k < S::K; k++) acc[k] = k >= S::w_max ? -INFINITY : 0.f;
  double g_sum = 0;
  for (int64_t t = begin + threadIdx.x; t < end; t += blockDim.x) {  // phase 2
    if (!counted(t)) {
      p.per_token[t] = 0.f;
      p.grad[t] = 0.f;
      continue;
    }
    const float lp = read(p.logp, t), old = read(p.old_logp, t);
    const float behavior = has_b ? read(p.behavior_logp, t) : 0.f;
    const float div = p.divergence.data ? read(p.divergence, t) : NAN;
    const PolicyTerm k = policy_term(lp, old, read(p.advantages, t), has_b ? &behavior : nullptr, q, p.opts, div);
    p.per_token[t] = k.loss;
    const float g = w * k.grad;
    if (p.opts.coupled()) g_sum += double(g);
    else p.grad[t] = g;
    acc[S::loss] += w * k.loss;
    acc[S::approx_kl] += w * (old - lp);
    acc[S::ratio_sum] += k.k.ratio;
    acc[S::count] += 1.f;
    acc[S::clipped_low] += k.k.clipped_low;
    acc[S::clipped_high] += k.k.clipped_high;
    acc[S::dual_clipped] += k.k.dual_clipped;
    acc[S::ratio_max] = fmaxf(acc[S::ratio_max], k.k.ratio);
    if (has_b) {
      acc[S::w_sum] += k.w;
      acc[S::k1_sum] += -k.b;
      acc[S::k3_sum] += k.w - 1.f - k.b;
      acc[S::mismatch] += (k.w - 1.f > 0.1f || k.w - 1.f < -0.1f) ? 1.f : 0.f;
      acc[S::w_max] = fmaxf(acc[S::w_max], k.w);
    }
    acc[S::dropped] += k.dropped;
    acc[S::truncated] += k.truncated;
    acc[S::opsm] += k.opsm;
  }
  if (p.opts.coupled()) {  // phase 3
    g_sum = block_sum(g_sum);
    const float g = n > 0 ? float(g_sum / double(n)) : 0.f;
    for (int64_t t = begin + threadIdx.x; t < end; t += blockDim.x) if (counted(t)) p.grad[t] = g;
  }
  if (threadIdx.x == 0 && n > 0) {
    acc[S::seqs] += 1.f;
    acc[S::seq_dropped] += q.seq_dropped;
    acc[S::seq_truncated] += q.seq_truncated;
  }
  for (int k = 0; k < S::K; k++) {
    const float v = k >= S::w_max ? block_max(acc[k]) : block_sum(acc[k]);
    if (threadIdx.x == 0) partials[s * S::K + k] = v;
  }
}

}  // namespace

cudaError_t policy_loss(const PolicyLossParams& p, float* result, void* scratch, cudaStream_t stream) {
  const TokenBatch& b = p.batch;
  const TokenScratch s = token_scratch(scratch, b.num_seqs);
  cudaError_t err = launch_token_weights(b, s, stream);
  if (err != cudaSuccess) return err;
  if (b.num_seqs > 0) policy_kernel<<<unsigned(b.num_seqs), TOKEN_THREADS, 0, stream>>>(p, s.counts, s.totals, s.partials);
  reduce_partials_kernel<<<1, 1024, 0, stream>>>(s.partials, b.num_seqs, S::K, S::w_max, result);
  return cudaGetLastError();
}

}  // namespace rk::gpu
