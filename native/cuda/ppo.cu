// CUDA fused PPO objective from logits (DESIGN §1.7); math in src/reference/ppo.ts, token terms shared with
// the CPU (rlhf/policy.h, kl.h, value.h). Per token row: the row's lse, the token's policy / KL / value
// terms, and dloss/dlogits written once. Per-token terms go to scratch and are summed in token order by
// one block. Version 2 holds the row on chip (one read); version 1 reads it two or three times and serves
// the full-vocabulary KL (anchor logits) and the shapes version 2 does not take. With a policy variant
// (ppo_policy_first): a first kernel forms every token's log-prob (and old log-prob; with trustRegion 'full'
// its full-vocabulary TV / KL to π_old), policy_loss (policy.cu) their policy terms, and version 1 the rows
// with that coefficient.
#include "rlhf/cuda_memory.h"
#include "rlhf/cuda_ops.h"
#include "rowtile.cuh"
#include "tokens.cuh"

namespace rk::gpu {
namespace {

constexpr int THREADS = 512;
// Each token's terms, summed in token order into the result slots policy_loss .. dual_clipped: w·policy, w·kl,
// w·value, w·approxKl, ratio, low, high, dual (value_clipped apart, in vclip).
using S = PpoSlot;
constexpr int TERMS = S::dual_clipped - S::policy_loss + 1;
__host__ __device__ constexpr int term_of(int slot) { return slot - S::policy_loss; }

__device__ int64_t sequence_of(const TokenBatch& b, int64_t t) {
  int64_t lo = 0, hi = b.num_seqs - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (b.offsets[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The policy-first path's per-token policy terms (policy_loss's per_token and grad), old log-probs and,
// with trust_full, trust-region divergences.
struct PolicyPre {
  float *loss, *grad, *old, *div;
};

// p (log p − log q) of the full KL with xlogy semantics, +inf wherever log q = −inf under a finite p logit
// (p may round to 0 in float32, but the KL is +inf however small p is): rowmath.h kl_term.
__device__ __forceinline__ float kl_term(float p, float log_ratio) {
  return log_ratio == INFINITY ? log_ratio : p != 0.f ? p * log_ratio : 0.f;
}

// log p_a − log q of an anchor row a and a policy row z at one temperature, from differences to each row's
// max: ((a − m_a) − (z − m_q))·invT + (c_a − c_q), never (a − z)·invT − (lse_a − lse_q), which would cancel
// two terms of size |z|/T (rowmath.h log_ratio).
__device__ __forceinline__ float log_ratio(const RowShift& a_row, const RowShift& q_row, float a, float z, float invT) {
  return ((a - a_row.m) - (z - q_row.m)) * invT + (a_row.c - q_row.c);
}

// A token the loss skips (masked, or a bad action): zero terms, logp and value gradient (thread 0).
__device__ __forceinline__ void ppo_skip_token(const PpoLossParams& p, int64_t t, float* term, float* vclip) {
  for (int k = 0; k < TERMS; k++) term[k] = 0.f;
  term[term_of(S::ratio_sum)] = -INFINITY;  // ratio: ignored by the max, and the sum skips masked tokens
  vclip[t] = 0.f;
  p.logp[t] = 0.f;
  if (p.grad_values) p.grad_values[t] = 0.f;
}

// The token's policy, KL and value terms once its log-prob lp is known (`write`: one thread stores them); returns
// dloss/dlogp from the policy and the sampled-estimator KL: the coefficient of (onehot_y − p)/T in the
// gradient. With the full-vocabulary KL (kl_full ≥ 0 given) the KL's gradient is added by the caller.
// pre_loss, pre_grad: the policy-first path's token terms (ρℓ, w·dℓ/dlogp), or null.
__device__ __forceinline__ float ppo_token(const PpoLossParams& p, int64_t t, float lp, float old, float anchor_lp, bool has_anchor,
                                           float w, float kl_full, float* term, float* vclip, bool write, const float* pre_loss = nullptr,
                                           const float* pre_grad = nullptr) {
  const PolicyToken s = pre_grad ? PolicyToken{pre_loss[t], 0.f, 0.f, false, false, false} : ppo_clip_token(read(p.advantages, t), p.policy, lp - old);
  float c_logp = pre_grad ? pre_grad[t] : w * s.grad, kl = kl_full;
  if (!p.full_kl) {
    const float ref = p.ref_logp.data ? read(p.ref_logp, t) : (has_anchor ? anchor_lp : old);
    float gk;
    kl_token(lp - ref, p.kl, kl, gk);
    c_logp += p.beta * w * gk;
  }
  if (write) {
    p.logp[t] = lp;
    float vl = 0.f, gv = 0.f;
    bool clipped = false;
    if (p.values.data && p.returns.data) {
      clipped = value_token(read(p.values, t), read(p.returns, t), p.old_values.data ? read(p.old_values, t) : 0.f, p.value, vl, gv);
      if (p.grad_values) p.grad_values[t] = p.c1 * w * gv;
    }
    term[term_of(S::policy_loss)] = w * s.loss;
    term[term_of(S::kl)] = w * kl;
    term[term_of(S::value_loss)] = w * vl;
    term[term_of(S::approx_kl)] = w * (old - lp);
    term[term_of(S::ratio_sum)] = s.ratio;
    term[term_of(S::clipped_low)] = s.clipped_low;
    term[term_of(S::clipped_high)] = s.clipped_high;
    term[term_of(S::dual_clipped)] = s.dual_clipped;
    vclip[t] = clipped;
  }
  return c_logp;
}

// Version 1, one block per token row, two or three reads of the row: the lse (and the anchor's), then
// the full KL when asked, then the gradient. Taken with anchor logits, unaligned rows, V > 131072.
// As on the cpu (ppo.cc): log q_v = (z_v − m)·invT + c (RowShift), and
//   dloss/dz_v = [−c_logp·q_v + c_full·(q_v − p_anchor,v)] / T,  with −c_logp·expm1(log q_y) at the action
// (1 − q_y exact where q_y is near 1).
template <typename T>
__global__ void __launch_bounds__(THREADS, blocks_within(THREADS, 32)) ppo_rows_kernel(PpoLossParams p, const int32_t* counts, const float* totals, float* terms, float* vclip,
                                                           DeviceFlags* flags, PolicyPre pre) {
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
    if (threadIdx.x == 0) ppo_skip_token(p, t, term, vclip);
    return;
  }
  const T* row = static_cast<const T*>(p.logits.data) + t * V;
  const T* arow = p.anchor_logits.data ? static_cast<const T*>(p.anchor_logits.data) + t * V : nullptr;
  const float invT = 1.f / row_temperature(p.temperatures, p.temperature, t);
  const RowShift sq = block_row_shift(row, V, invT);
  const RowShift sa = arow ? block_row_shift(arow, V, invT) : RowShift{0.f, 0.f};
  const float lp = pre.grad ? p.logp[t] : sq.logp(to_float(row[y]), invT);
  const float anchor_lp = arow ? sa.logp(to_float(arow[y]), invT) : 0.f;
  const float old = p.old_logp.data ? read(p.old_logp, t) : anchor_lp;
  const float w = seq_weight(b.mode, totals, counts[sequence_of(b, t)]);
  float kl = 0.f, c_full = 0.f;
  if (p.full_kl) {
    float part = 0.f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float a = to_float(arow[v]);
      part += kl_term(__expf(sa.logp(a, invT)), log_ratio(sa, sq, a, to_float(row[v]), invT));
    }
    kl = block_sum(part);
    c_full = p.beta * w;
  }
  const float c_logp = ppo_token(p, t, lp, old, anchor_lp, arow != nullptr, w, kl, term, vclip, threadIdx.x == 0, pre.loss, pre.grad);
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float lq = sq.logp(to_float(row[v]), invT);
    const float q = __expf(lq);
    float d = v == y ? -c_logp * expm1f(lq) : -c_logp * q;
    if (c_full != 0.f) d += c_full * (q - __expf(sa.logp(to_float(arow[v]), invT)));
    g[v] = d * invT;
  }
}

// The policy-first path's first pass, one block per row: log π(a) into p.logp and the old log-prob into old
// (from the anchor logits when oldLogp is absent), as version 1 forms them; 0 for masked rows and bad actions.
// div (trust_full, else null): one more read of both rows once their lse are known, each thread's strided
// partial sum then block_sum: ½ Σ_v |q_v − p_v| (dppo-tv) or Σ_v p_v (log p_v − log q_v) (dppo-kl),
// q = π_θ, p = π_old = softmax(anchor / T); log-probs from differences to the row max (RowShift), as on the cpu.
template <typename T>
__global__ void __launch_bounds__(THREADS) ppo_logp_kernel(PpoLossParams p, float* old, float* div) {
  const int64_t t = blockIdx.x;
  const int32_t y = p.actions[t];
  if ((p.batch.mask && !p.batch.mask[t]) || y < 0 || y >= p.V) {
    if (threadIdx.x == 0) p.logp[t] = old[t] = 0.f;
    if (div && threadIdx.x == 0) div[t] = 0.f;
    return;
  }
  const float invT = 1.f / row_temperature(p.temperatures, p.temperature, t);
  const T* row = static_cast<const T*>(p.logits.data) + t * p.V;
  const RowShift sq = block_row_shift(row, p.V, invT);
  const float lp = sq.logp(to_float(row[y]), invT);
  const T* arow = p.anchor_logits.data ? static_cast<const T*>(p.anchor_logits.data) + t * p.V : nullptr;
  const RowShift sa = arow && (div || !p.old_logp.data) ? block_row_shift(arow, p.V, invT) : RowShift{0.f, 0.f};
  const float o = p.old_logp.data ? read(p.old_logp, t) : sa.logp(to_float(arow[y]), invT);
  float d = 0.f;
  if (div) {
    const bool kl = p.policy.variant == PolicyVariant::dppo_kl;
    float part = 0.f;
    for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) {
      const float a = to_float(arow[v]), z = to_float(row[v]);
      const float pa = __expf(sa.logp(a, invT));
      if (kl) part += kl_term(pa, log_ratio(sa, sq, a, z, invT));
      else part += fabsf(__expf(sq.logp(z, invT)) - pa);
    }
    d = block_sum(part);
    if (!kl) d *= 0.5f;
  }
  if (threadIdx.x == 0) {
    p.logp[t] = lp, old[t] = o;
    if (div) div[t] = d;
  }
}

// Version 2, the row on chip (rowtile.cuh): one read of the logits, one write of the gradient, for the
// sampled-estimator KL (no anchor logits). dloss/dz_v = −c·p_v/T (v ≠ a), −c·expm1(log p_a)/T at the action a,
// with c from ppo_token; the tile holds the raw logits z and p_v = exp((z_v − m_t)·invT)·exp((m_t − m)·invT)/Σ,
// one exp per element; log p_a = (z_a − m)·invT + c (RowShift): only differences from the max are scaled.
template <typename T, typename O, int Ver>
__global__ void __launch_bounds__(TILE_THREADS, tile_blocks<T>()) ppo_tile_kernel(PpoLossParams p, O* grad_out, const int32_t* counts, const float* totals, float* terms,
                                                               float* vclip, DeviceFlags* flags, int cluster) {
  const int64_t t = blockIdx.x / cluster;
  const int64_t V = p.V;
  const int64_t begin = int64_t(blockIdx.x % cluster) * TILE_SPAN, end = min(begin + TILE_SPAN, V);
  const bool lead = blockIdx.x % cluster == 0;
  O* g = grad_out + t * V;
  float* term = terms + t * TERMS;
  const TokenBatch& b = p.batch;
  const int32_t y = p.actions[t];
  const bool bad = y < 0 || y >= V;
  const bool masked = b.mask && !b.mask[t];
  RowTile<T> tile;
  if (masked || bad) {  // every CTA of the cluster takes this branch together: the same token
    if (bad && !masked && lead && threadIdx.x == 0) atomicMin(&flags->first_bad_row, int32_t(t));
    tile.store(g, begin, end, [](int64_t, float) { return 0.f; });
    if (lead && threadIdx.x == 0) ppo_skip_token(p, t, term, vclip);
    return;
  }
  const float invT = 1.f / row_temperature(p.temperatures, p.temperature, t);
  tile.load(static_cast<const T*>(p.logits.data) + t * V, begin, end, 1.f);
  MaxSums<1> part;
  part.plain = 0.f;
  part.m = tile.max();
  const float mt = part.m;
  part.s[0] = tile.exp_shift(mt, invT);
  const MaxSums<1> all = row_combine<Ver>(part, cluster, invT);
  const RowShift sq = row_shift(MaxSum{all.m, all.s[0]});
  const float lp = sq.logp(to_float(static_cast<const T*>(p.logits.data)[t * V + y]), invT);
  const float old = read(p.old_logp, t);
  const float w = seq_weight(b.mode, totals, counts[sequence_of(b, t)]);
  const float c_logp = ppo_token(p, t, lp, old, 0.f, false, w, 0.f, term, vclip, lead && threadIdx.x == 0) * invT;
  const float a = mt == -INFINITY ? 0.f : -c_logp * (__expf((mt - all.m) * invT) / all.s[0]);  // the gradient is a·e
  const float gy = -c_logp * expm1f(lp);
  tile.store(g, begin, end, [&](int64_t v, float e) { return v == y ? gy : a * e; });
}

// The result block (PpoSlot); the ratio's sum skips the masked tokens' −inf.
__global__ void ppo_total_kernel(const float* terms, const float* vclip, int64_t M, float beta, float c1, const float* totals, bool first,
                                 float* result) {
  for (int k = 0; k < TERMS; k++) {
    float v = 0.f;
    for (int64_t t = threadIdx.x; t < M; t += blockDim.x) {
      const float x = terms[t * TERMS + k];
      if (k != term_of(S::ratio_sum) || x != -INFINITY) v += x;
    }
    v = block_sum(v);
    if (threadIdx.x == 0) result[S::policy_loss + k] = v;
  }
  float vc = 0.f, mx = -INFINITY;
  for (int64_t t = threadIdx.x; t < M; t += blockDim.x) {
    vc += vclip[t];
    mx = fmaxf(mx, terms[t * TERMS + term_of(S::ratio_sum)]);
  }
  vc = block_sum(vc);
  mx = block_max(mx);
  if (threadIdx.x == 0) {
    result[S::value_clipped] = vc;
    result[S::ratio_max] = mx;
    result[S::count] = totals[3];
    result[S::policy_first] = first ? 1.f : 0.f;
    result[S::loss] = result[S::policy_loss] + beta * result[S::kl] + c1 * result[S::value_loss];
  }
}

}  // namespace

// The cluster size of the single-pass kernel this call would launch (no anchor logits; clusters that fit),
// 0 for the two-pass kernel.
static int ppo_cluster(const PpoLossParams& p, int version) {
  if (p.anchor_logits.data || !p.old_logp.data || ppo_policy_first(p)) return 0;
  return dispatch_tile(p.logits.dtype, p.grad_logits16 != nullptr, version, [&]<typename T, typename O, int Ver>() {
    return tile_plan<T>(ppo_tile_kernel<T, O, Ver>, p.V, Ver);
  });
}

bool ppo_single_pass(const PpoLossParams& p) { return ppo_cluster(p, vocab_kernel_version()) > 0; }

// The policy-first path's policy_loss call on this call's buffers (pre: loss, grad, old).
static PolicyLossParams ppo_policy_params(const PpoLossParams& p, const PolicyPre& pre) {
  PolicyLossParams pp;
  pp.batch = p.batch;
  pp.logp = {p.logp, DType::f32, p.batch.tokens};
  pp.old_logp = {pre.old, DType::f32, p.batch.tokens};
  pp.advantages = p.advantages;
  pp.behavior_logp = p.behavior_logp;
  pp.opts = p.policy;
  if (pre.div) pp.divergence = {pre.div, DType::f32, p.batch.tokens};
  pp.per_token = pre.loss;
  pp.grad = pre.grad;
  return pp;
}

// scratch: the token weights, the terms and vclip [tokens·(TERMS + 1)]; on the policy-first path then
// loss, grad, old, div [4·tokens] and policy_loss's scratch (256-byte aligned).
static size_t ppo_base_bytes(const PpoLossParams& p) {
  return (token_scratch_bytes(p.batch.num_seqs, 0) + size_t(p.batch.tokens) * (TERMS + 5) * sizeof(float) + 255) / 256 * 256;
}
size_t ppo_scratch_bytes(const PpoLossParams& p) {
  if (!ppo_policy_first(p)) return token_scratch_bytes(p.batch.num_seqs, 0) + size_t(p.batch.tokens) * (TERMS + 1) * sizeof(float);
  return ppo_base_bytes(p) + policy_scratch_bytes(ppo_policy_params(p, PolicyPre{}));
}

cudaError_t ppo_loss(const PpoLossParams& p, float* result, void* scratch, DeviceFlags* flags, cudaStream_t stream) {
  const TokenBatch& b = p.batch;
  const TokenScratch s = token_scratch(scratch, b.num_seqs);
  float* terms = reinterpret_cast<float*>(static_cast<char*>(scratch) + token_scratch_bytes(b.num_seqs, 0));
  float* vclip = terms + b.tokens * TERMS;
  cudaError_t err = launch_token_weights(b, s, stream);
  if (err != cudaSuccess) return err;
  const bool first = ppo_policy_first(p);
  PolicyPre pre{};
  if (first) {  // log-probs, then policy_loss's terms into pre and its result block at PpoSlot::policy
    const bool full = p.trust_full && p.anchor_logits.data;
    pre = {vclip + b.tokens, vclip + 2 * b.tokens, vclip + 3 * b.tokens, full ? vclip + 4 * b.tokens : nullptr};
    if (b.tokens > 0) dispatch_dtype(p.logits.dtype, [&]<typename T>() { ppo_logp_kernel<T><<<unsigned(b.tokens), THREADS, 0, stream>>>(p, pre.old, pre.div); });
    err = policy_loss(ppo_policy_params(p, pre), result + S::policy, static_cast<char*>(scratch) + ppo_base_bytes(p), stream);
    if (err != cudaSuccess) return err;
  }
  // version 2 where it applies (no anchor logits, aligned rows, a cluster this device runs), else version 1
  const int version = vocab_kernel_version();
  const int cluster = ppo_cluster(p, version);
  if (cluster > 0) {
    const float* totals = s.totals;
    const int32_t* counts = s.counts;
    err = dispatch_tile(p.logits.dtype, p.grad_logits16 != nullptr, version, [&]<typename T, typename O, int Ver>() {
      return launch_tiles(ppo_tile_kernel<T, O, Ver>, b.tokens, cluster, stream, p, grad_out<O>(p.grad_logits, p.grad_logits16), counts, totals, terms, vclip, flags, cluster);
    });
    if (err != cudaSuccess) return err;
  } else if (b.tokens > 0) {
    dispatch_dtype(p.logits.dtype, [&]<typename T>() { ppo_rows_kernel<T><<<unsigned(b.tokens), THREADS, 0, stream>>>(p, s.counts, s.totals, terms, vclip, flags, pre); });
  }
  ppo_total_kernel<<<1, 1024, 0, stream>>>(terms, vclip, b.tokens, p.beta, p.c1, s.totals, first, result);
  // the two-pass kernel wrote float32 staging (p.grad_logits): round it into the 16-bit gradient
  if (cluster == 0 && p.grad_logits16) return round_to_16(p.grad_logits, p.grad_logits16, b.tokens * p.V, p.logits.dtype, stream);
  return cudaGetLastError();
}

}  // namespace rk::gpu
