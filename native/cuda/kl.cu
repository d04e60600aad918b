// CUDA KL divergences (DESIGN §1.5): sampled-token estimators (math shared with the CPU, rlhf/kl.h) and the
// full-vocabulary KL(p‖q) per row. Version 2 holds both rows on chip (rowtile.cuh): two reads and one
// write for the KL and its gradient wrt q. Version 1 reads the row pair four times (the maxima, the sums, the
// KL, the gradients) and serves the gradient wrt p and the shapes version 2 does not take. Both compute the
// cpu's formulas (native/cpu/kl.cc, rowmath.h) in the same order of operations.
#include "rlhf/cuda_memory.h"
#include "rlhf/cuda_ops.h"
#include "rowtile.cuh"
#include "tokens.cuh"

namespace rk::gpu {
namespace {

struct KlPenaltyOp {
  static constexpr int K = KlPenaltySlot::K;
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
    acc[KlPenaltySlot::loss] += w * k;
  }
};

constexpr int THREADS = 512;

// The KL of a row pair, as native/cpu/kl.cc computes it (float32, the same order of subtraction; math in
// src/reference/kl.ts). Each row's softmax at temperature T in the cpu's shifted form (rowmath.h RowSoftmax):
// with m the row's largest raw logit and S = (the number of v with z_v = m) + Σ_{z_v ≠ m} exp((z_v − m)·invT)
// (the maxima counted apart, then added in double: in float32 the small terms would be lost next to the 1s),
//   p_v = exp((z_v − m)·invT) · float(1/S),   log p_v = (z_v − m)·invT + c,  c = float(−log S),
// and log p_v − log q_v − k = ((x_v − m_p) − (y_v − m_q))·invT + (c_p − c_q − k): only differences from the
// max are scaled, never z·invT − lse, whose float32 z·invT would carry |z|/T·2⁻²⁴ (6e-4 at |z|/T = 1e4).
// A row holding +inf (no NaN) has m = +inf, c = 0 and 1/S taken as 1: p is NaN at a +inf and 0 elsewhere.
struct ShiftedRow {
  float m, c, inv_sum;
};

__device__ __forceinline__ ShiftedRow shifted_row(float m, float others, double ties) {
  if (m == INFINITY) return {m, 0.f, 1.f};
  const double S = ties + double(others);
  return {m, float(-log(S)), float(1.0 / S)};
}

__device__ __forceinline__ float row_prob(const ShiftedRow& r, float z, float invT) { return __expf((z - r.m) * invT) * r.inv_sum; }

// log p_v − log q_v − k, given c = c_p − c_q − k (rowmath.h log_ratio)
__device__ __forceinline__ float log_ratio(const ShiftedRow& p, const ShiftedRow& q, float x, float y, float invT, float c) {
  return ((x - p.m) - (y - q.m)) * invT + c;
}

// p·(log p − log q), xlogy (0 where p = 0), and +inf wherever log p − log q is (q = 0 under a finite p logit),
// however small p is: a p that float32 rounds to 0 must not hide an infinite KL (rowmath.h kl_term).
__device__ __forceinline__ float kl_term(float p, float lr) { return lr == INFINITY ? lr : p != 0.f ? p * lr : 0.f; }

// The rows whose KL is fixed by their maxima alone (as native/cpu/kl.cc): a NaN in either row makes the row
// NaN (gradients too); else a p without mass (all −inf) has KL 0, a q without mass KL +inf, both with zero
// gradients. Returns whether the row is one of them, with its KL and gradient value.
__device__ __forceinline__ bool kl_fixed_row(float m_p, float m_q, float& kl, float& grad) {
  const bool nan = m_p != m_p || m_q != m_q;
  kl = nan ? NAN : m_p == -INFINITY ? 0.f : INFINITY;
  grad = nan ? NAN : 0.f;
  return nan || m_p == -INFINITY || m_q == -INFINITY;
}

// The largest of two maxima, NaN if either is (fmaxf would drop it, and an all-NaN row would look empty).
__device__ __forceinline__ float max_nan(float a, float b) { return a != a || b != b ? NAN : fmaxf(a, b); }

__device__ __forceinline__ float block_max_nan(float v) {
  __shared__ float s[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) s[warp] = v;
  __syncthreads();
  v = lane < warps ? s[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The single-pass kernel's three exchanges (rowtile.cuh row_combine): both rows' maxima; both rows' sums
// of the others' exps and counts of maxima; the KL. None holds a scaled value: row_combine's invT is unused.
struct RowMaxes {
  float p, q;
};
__device__ __forceinline__ RowMaxes combine(const RowMaxes& a, const RowMaxes& b, float = 1.f) { return {max_nan(a.p, b.p), max_nan(a.q, b.q)}; }
struct RowSums {
  float others_p, ties_p, others_q, ties_q;  // ties ≤ 16 CTAs × 16384 columns: exact in float32
};
__device__ __forceinline__ RowSums combine(const RowSums& a, const RowSums& b, float = 1.f) {
  return {a.others_p + b.others_p, a.ties_p + b.ties_p, a.others_q + b.others_q, a.ties_q + b.ties_q};
}
struct RowKl {
  float kl;
};
__device__ __forceinline__ RowKl combine(const RowKl& a, const RowKl& b, float = 1.f) { return {a.kl + b.kl}; }

}  // namespace

template <> struct Identity<RowMaxes> {
  __device__ static RowMaxes get() { return {-INFINITY, -INFINITY}; }
};
template <> struct Identity<RowSums> {
  __device__ static RowSums get() { return {0.f, 0.f, 0.f, 0.f}; }
};
template <> struct Identity<RowKl> {
  __device__ static RowKl get() { return {0.f}; }
};

namespace {

__global__ void row_count_kernel(const uint8_t* mask, int64_t N, Reduction reduction, float* result) {
  float c = 0.f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) c += mask ? mask[n] : 1;
  c = block_sum(c);
  if (threadIdx.x == 0) {
    result[KlDivergenceSlot::count] = c;
    result[KlDivergenceSlot::scale] = reduction == Reduction::mean ? (c > 0.f ? 1.f / c : 0.f) : 1.f;
  }
}

// Version 1, one block per row pair, four reads of each row: both maxima (and whether either row holds NaN);
// both S; KL = Σ_v kl_term(p_v, log p_v − log q_v); then the gradients, scaled by s = result[scale]/T:
//   dKL/dz_q,v = s·(q_v − p_v),  dKL/dz_p,v = s·xlogy(p_v, log p_v − log q_v − KL)  (0 where KL = +inf).
template <typename T>
__global__ void __launch_bounds__(THREADS, blocks_within(THREADS, 32)) kl_rows_kernel(KlDivergenceParams p, const float* result) {
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
  const float invT = 1.f / row_temperature(p.temperatures, p.temperature, n);
  float mp = -INFINITY, mq = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    mp = max_nan(mp, to_float(rp[v]));
    mq = max_nan(mq, to_float(rq[v]));
  }
  mp = block_max_nan(mp);
  mq = block_max_nan(mq);
  float fixed_kl, fixed_grad;
  if (kl_fixed_row(mp, mq, fixed_kl, fixed_grad)) {
    if (threadIdx.x == 0) p.per_row[n] = fixed_kl;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      if (gq) gq[v] = fixed_grad;
      if (gp) gp[v] = fixed_grad;
    }
    return;
  }
  float sp = 0.f, sq = 0.f, tp = 0.f, tq = 0.f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float a = to_float(rp[v]), b = to_float(rq[v]);
    if (a == mp) tp += 1.f;
    else sp += __expf((a - mp) * invT);
    if (b == mq) tq += 1.f;
    else sq += __expf((b - mq) * invT);
  }
  sp = block_sum(sp);
  sq = block_sum(sq);
  const double ties_p = block_sum(double(tp)), ties_q = block_sum(double(tq));  // exact for any V
  const ShiftedRow P = shifted_row(mp, sp, ties_p), Q = shifted_row(mq, sq, ties_q);
  const float dc = P.c - Q.c;
  float part = 0.f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float a = to_float(rp[v]), b = to_float(rq[v]);
    part += kl_term(row_prob(P, a, invT), log_ratio(P, Q, a, b, invT, dc));
  }
  const float kl = block_sum(part);
  if (threadIdx.x == 0) p.per_row[n] = kl;
  const float s = result[KlDivergenceSlot::scale] * invT;
  const float dck = dc - kl;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float a = to_float(rp[v]), b = to_float(rq[v]);
    const float pv = row_prob(P, a, invT);
    if (gq) gq[v] = s * (row_prob(Q, b, invT) - pv);
    if (gp) gp[v] = kl == INFINITY || pv == 0.f ? 0.f : s * (pv * log_ratio(P, Q, a, b, invT, dck));  // an infinite KL: 0 wrt p
  }
}

// Version 2: the row pair on chip, the raw logits x, y in registers (RowTile at invT = 1), one read of each
// row and one write of the gradient wrt q, with the formulas of version 1: three row-wide exchanges (both
// maxima; both S; the KL), each in the fixed order of row_combine, so every CTA of the cluster gets the same
// bits. Four exps per element (two for S, two for p_v, q_v).
template <typename T, typename O, int Ver>
__global__ void __launch_bounds__(TILE_THREADS, 1) kl_tile_kernel(KlDivergenceParams p, O* grad_out, const float* result, int cluster) {
  const int64_t n = blockIdx.x / cluster;
  const int64_t V = p.V;
  const int64_t begin = int64_t(blockIdx.x % cluster) * TILE_SPAN, end = min(begin + TILE_SPAN, V);
  const bool lead = blockIdx.x % cluster == 0;
  RowTile<T> a, b;
  if (p.mask && !p.mask[n]) {  // the same for every CTA of the cluster: the same row
    a.store(grad_out + n * V, begin, end, [](int64_t, float) { return 0.f; });
    if (lead && threadIdx.x == 0) p.per_row[n] = 0.f;
    return;
  }
  const float invT = 1.f / row_temperature(p.temperatures, p.temperature, n);
  a.load(static_cast<const T*>(p.p_logits.data) + n * V, begin, end, 1.f);  // raw logits; −inf past the row
  b.load(static_cast<const T*>(p.q_logits.data) + n * V, begin, end, 1.f);
  const RowMaxes M = row_combine<Ver>(RowMaxes{a.max(), b.max()}, cluster);
  float fixed_kl, fixed_grad;
  if (kl_fixed_row(M.p, M.q, fixed_kl, fixed_grad)) {  // the same for every CTA of the cluster
    a.store(grad_out + n * V, begin, end, [&](int64_t, float) { return fixed_grad; });
    if (lead && threadIdx.x == 0) p.per_row[n] = fixed_kl;
    return;
  }
  RowSums part = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < TILE_R; i++) {
    if (a.x[i] == M.p) part.ties_p += 1.f;
    else part.others_p += __expf((a.x[i] - M.p) * invT);  // a column past the row: exp(−inf) = 0
    if (b.x[i] == M.q) part.ties_q += 1.f;
    else part.others_q += __expf((b.x[i] - M.q) * invT);
  }
  const RowSums S = row_combine<Ver>(part, cluster);
  const ShiftedRow P = shifted_row(M.p, S.others_p, S.ties_p), Q = shifted_row(M.q, S.others_q, S.ties_q);
  const float dc = P.c - Q.c, s = result[KlDivergenceSlot::scale] * invT;
  float kl = 0.f;
#pragma unroll
  for (int i = 0; i < TILE_R; i++) {
    const float pv = row_prob(P, a.x[i], invT);
    kl += kl_term(pv, log_ratio(P, Q, a.x[i], b.x[i], invT, dc));  // past the row: p = 0 and a NaN ratio, adding 0
    b.x[i] = s * (row_prob(Q, b.x[i], invT) - pv);
  }
  // the store walks b's columns: the same as a's
  b.store(grad_out + n * V, begin, end, [](int64_t, float g) { return g; });
  const RowKl total = row_combine<Ver>(RowKl{kl}, cluster);
  if (lead && threadIdx.x == 0) p.per_row[n] = total.kl;
}

__global__ void kl_total_kernel(const float* per_row, int64_t N, float* result) {
  float v = 0.f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) v += per_row[n];
  v = block_sum(v);
  if (threadIdx.x == 0) result[KlDivergenceSlot::loss] = v * result[KlDivergenceSlot::scale];
}

}  // namespace

cudaError_t kl_penalty(const KlPenaltyParams& p, float* result, void* scratch, cudaStream_t stream) {
  return launch_token_op(p.batch, KlPenaltyOp{p.logp, p.ref_logp, p.opts, p.per_token, p.grad}, result, scratch, stream);
}

// The cluster size of the single-pass kernel this call would launch (the gradient wrt q only; not float64,
// whose two rows per thread do not fit the registers; clusters that fit), 0 for the two-pass kernel.
static int kl_cluster(const KlDivergenceParams& p, int version) {
  if (!(p.grad_q || p.grad_q16) || p.grad_p || p.grad_p16) return 0;
  return dispatch_tile(p.p_logits.dtype, p.grad_q16 != nullptr, version, [&]<typename T, typename O, int Ver>() {
    if constexpr (sizeof(T) == 8) return 0;
    else return tile_plan<T>(kl_tile_kernel<T, O, Ver>, p.V, Ver);
  });
}

bool kl_single_pass(const KlDivergenceParams& p) { return kl_cluster(p, vocab_kernel_version()) > 0; }

cudaError_t kl_divergence(const KlDivergenceParams& p, float* result, float* scratch, cudaStream_t stream) {
  (void)scratch;
  row_count_kernel<<<1, 1024, 0, stream>>>(p.mask, p.N, p.reduction, result);
  const int version = vocab_kernel_version();
  const int cluster = kl_cluster(p, version);
  if (cluster > 0) {
    const float* res = result;
    const cudaError_t err = dispatch_tile(p.p_logits.dtype, p.grad_q16 != nullptr, version, [&]<typename T, typename O, int Ver>() {
      if constexpr (sizeof(T) == 8) return cudaErrorInvalidValue;  // float64 rows never take the tile (kl_cluster)
      else return launch_tiles(kl_tile_kernel<T, O, Ver>, p.N, cluster, stream, p, grad_out<O>(p.grad_q, p.grad_q16), res, cluster);
    });
    if (err != cudaSuccess) return err;
  } else if (p.N > 0) {
    dispatch_dtype(p.p_logits.dtype, [&]<typename T>() { kl_rows_kernel<T><<<unsigned(p.N), THREADS, 0, stream>>>(p, result); });
  }
  kl_total_kernel<<<1, 1024, 0, stream>>>(p.per_row, p.N, result);
  // the two-pass kernel wrote float32 staging: round it into the 16-bit gradients
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && cluster == 0 && p.grad_q16) err = round_to_16(p.grad_q, p.grad_q16, p.N * p.V, p.p_logits.dtype, stream);
  if (err == cudaSuccess && p.grad_p16) err = round_to_16(p.grad_p, p.grad_p16, p.N * p.V, p.p_logits.dtype, stream);
  return err;
}

}  // namespace rk::gpu
