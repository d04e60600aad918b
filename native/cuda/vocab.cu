// CUDA vocabulary kernels (DESIGN §1.1, §1.2). Math: src/reference/vocab.ts; CPU twin: native/cpu/vocab.cc.
//
// - Forward (logProbs, the loss of crossEntropy without gradient): one block per row, one read. Each
//   thread keeps an online (max, Σ exp) pair, plus Σ exp·x for the entropy, over a strided slice; the block
//   combines the pairs in a fixed tree order.
// - Fused forward+backward (crossEntropy with grad), version 2: the row held on chip (rowtile.cuh), split
//   over a cluster above 16384 columns: one read of the logits and one write of the gradient.
// - The two-pass version 1 (a forward kernel, then a gradient kernel reading the row again: 2 reads + 1
//   write) stays for what version 2 does not take: class weights, unaligned rows, V > 131072, pre-sm_90
//   devices for rows that need a cluster.
// - Batch loss: a single-block kernel sums the per-row losses and weights in row order, and writes the loss
//   and the mean's 1/denominator to device memory.
#include <cstdint>

#include "common.cuh"
#include "rlhf/cuda_ops.h"
#include "rlhf/cuda_memory.h"
#include "rlhf/cuda_vocab.h"
#include "rowtile.cuh"

namespace rk::gpu {
namespace {

constexpr int THREADS = 512;

__device__ __forceinline__ void flag_bad_row(DeviceFlags* flags, int32_t row) { atomicMin(&flags->first_bad_row, row); }

// The block's largest value and its first index (ties: the smaller index); NaN values were never taken.
__device__ __forceinline__ int64_t block_argmax(float v, int64_t i) {
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  auto better = [](float a, int64_t ia, float b, int64_t ib) { return b > a || (b == a && ib < ia); };
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    const int64_t iw = __shfl_xor_sync(0xffffffffu, i, o);
    if (better(v, i, w, iw)) v = w, i = iw;
  }
  __syncthreads();
  if (lane == 0) sv[warp] = v, si[warp] = i;
  __syncthreads();
  v = lane < warps ? sv[lane] : -INFINITY;
  i = lane < warps ? si[lane] : INT64_MAX;
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    const int64_t iw = __shfl_xor_sync(0xffffffffu, i, o);
    if (better(v, i, w, iw)) v = w, i = iw;
  }
  return i;
}

// The optional row statistics of row_stats (Stats): Σ p², and the first index of the largest logit (raw,
// before the division by T, so a rounding tie of z·invT does not move it; INT64_MAX when every logit is −inf).
struct RowExtras {
  float sum_sq = 0.f;
  int64_t argmax = INT64_MAX;
};

// Per-row statistics: lse of z·invT, its parts m (the max of the raw logits z; T > 0 keeps the argmax) and
// ls = log Σ exp(d), d = (z − m)·invT, and, with Entropy, H = ls − Σ p·d (−inf terms skipped: xlogy).
// A log-probability is (z − m)·invT − ls, not z·invT − lse: only differences from the max are scaled, as on
// the cpu (rowmath.h RowSoftmax), since z·invT and lse would each carry |z|/T·2⁻²⁴ (6e-4 at |z|/T = 1e4).
// Each thread keeps (m, Σ exp(d), Σ exp(d)·d) over its columns, d from its running max m; when m rises by δ
// (δ = (m_old − m_new)·invT ≤ 0) the sums become S·e^δ and e^δ·(U + S·δ). Rows aligned to 16 bytes are read
// as 16-byte vectors (streaming: read once), rescaling the running sums once per vector, so the cost is one
// exp per element; other rows element by element. With Stats, in the same pass: Σ exp(x − m)² (Σ p² =
// that / S²) and each thread's first largest raw logit, combined by block_argmax.
template <typename T, bool Entropy, bool Stats = false>
__device__ __forceinline__ void row_stats(const T* row, int64_t V, float invT, float& lse, float& entropy, float& m, float& ls,
                                          RowExtras* extras = nullptr) {
  MaxSum ms{-INFINITY, 0.f};
  float t = 0.f;  // Σ exp(x − m)·x at the thread's running max m
  float t2 = 0.f, best = -INFINITY;  // Stats: Σ exp(x − m)², and the largest raw logit seen, at index bi
  int64_t bi = INT64_MAX;
  constexpr int VEC = 16 / sizeof(T);
  if ((reinterpret_cast<uintptr_t>(row) & 15) == 0 && V % VEC == 0) {
    const int4* vectors = reinterpret_cast<const int4*>(row);
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < V / VEC; i += blockDim.x) {
      const int4 raw = __ldcs(vectors + i);
      const T* e = reinterpret_cast<const T*>(&raw);
      float x[VEC];
      float vm = -INFINITY;
#pragma unroll
      for (int j = 0; j < VEC; j++) {
        x[j] = to_float(e[j]);
        vm = fmaxf(vm, x[j]);
        if (Stats && x[j] > best) best = x[j], bi = i * VEC + j;
      }
      if (vm > ms.m) {
        const float sh = (ms.m - vm) * invT;
        const float r = ms.m == -INFINITY ? 0.f : __expf(sh);
        if (Entropy) t = ms.m == -INFINITY ? 0.f : r * (t + ms.s * sh);
        ms.s *= r;
        if (Stats) t2 *= r * r;
        ms.m = vm;
      }
      if (ms.m == -INFINITY) {  // nothing but −inf so far: a NaN must still reach the sum
#pragma unroll
        for (int j = 0; j < VEC; j++) ms.s += x[j] != x[j] ? NAN : 0.f;
        continue;
      }
#pragma unroll
      for (int j = 0; j < VEC; j++) {
        const float d = (x[j] - ms.m) * invT;
        const float q = __expf(d);
        ms.s += q;
        if (Entropy && x[j] != -INFINITY) t += q * d;
        if (Stats) t2 += q * q;
      }
    }
  } else {
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float x = to_float(row[v]);  // raw
      if (Stats) {
        if (x > best) best = x, bi = v;
        if (x != -INFINITY) {
          if (x > ms.m) {
            const float r = ms.m == -INFINITY ? 0.f : __expf((ms.m - x) * invT);
            t2 = t2 * r * r + 1.f;
          } else {
            const float q = __expf((x - ms.m) * invT);
            t2 += q * q;
          }
        }
      }
      if (Entropy && x != -INFINITY) {
        if (x > ms.m) {  // the new element's d is 0
          const float sh = (ms.m - x) * invT;
          t = ms.m == -INFINITY ? 0.f : __expf(sh) * (t + ms.s * sh);
        } else {
          const float d = (x - ms.m) * invT;
          t += __expf(d) * d;
        }
      }
      ms = maxsum_add(ms, x, invT);
    }
  }
  const MaxSum all = block_maxsum(ms, invT);
  lse = all.m == -INFINITY && all.s == 0.f ? -INFINITY : float(double(all.m) * invT + log(double(all.s)));
  m = all.m;
  ls = logf(all.s);
  if (Entropy) {
    const float sh = (ms.m - all.m) * invT;
    const float part = ms.m == -INFINITY ? 0.f : __expf(sh) * (t + ms.s * sh);
    const float pt = block_sum(part) / all.s;  // Σ p·d
    entropy = lse == -INFINITY ? 0.f : lse != lse ? NAN : ls - pt;
  }
  if (Stats) {
    const float scale = ms.m == -INFINITY ? 0.f : __expf((ms.m - all.m) * invT);
    const float q = block_sum(t2 * scale * scale) / (all.s * all.s);
    extras->sum_sq = lse != lse || lse == INFINITY ? NAN : lse == -INFINITY ? 0.f : q;
    extras->argmax = block_argmax(best, bi);
  }
}

template <typename T, bool Entropy, bool Stats>
__global__ void __launch_bounds__(THREADS, blocks_within(THREADS, 32)) log_probs_kernel(LogProbsParams p, DeviceFlags* flags) {
  const int64_t n = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits.data) + n * p.V;
  const float invT = 1.f / row_temperature(p.temperatures, p.temperature, n);
  float lse, ent = 0.f, m, ls;
  RowExtras extras;
  row_stats<T, Entropy, Stats>(row, p.V, invT, lse, ent, m, ls, &extras);
  if (Stats && threadIdx.x == 0) {
    const bool ignored = p.targets[n] == p.ignore_index;
    // the first largest logit: −1 on ignored rows and rows holding NaN, 0 for an all −inf row
    const int64_t a = ignored || lse != lse ? -1 : extras.argmax == INT64_MAX ? 0 : extras.argmax;
    if (p.sum_prob_sq) p.sum_prob_sq[n] = ignored ? 0.f : extras.sum_sq;
    if (p.max_token) p.max_token[n] = float(a);
    if (p.max_prob) p.max_prob[n] = ignored ? 0.f : a < 0 ? NAN : lse == -INFINITY ? 0.f : __expf((to_float(row[a]) - m) * invT - ls);
  }
  if (threadIdx.x == 0) {
    const int32_t y = p.targets[n];
    const bool ignored = y == p.ignore_index;
    const bool bad = !ignored && (y < 0 || y >= p.V);
    if (bad) flag_bad_row(flags, int32_t(n));
    // an ignored row: every per-row result is 0
    p.lse[n] = ignored ? 0.f : lse;
    p.logp[n] = ignored || bad ? 0.f : (lse == -INFINITY ? -INFINITY : (to_float(row[y]) - m) * invT - ls);
    if (Entropy) p.entropy[n] = ignored ? 0.f : ent;
  }
}

// One row's outputs (one thread): lse, the token-weighted loss and the row's weight in the mean (w_y);
// ignored and bad-target rows get a zero loss and weight, and a bad one is flagged.
__device__ __forceinline__ void cross_entropy_row_outputs(const CrossEntropyParams& p, int64_t n, float lse, bool ignored, bool bad, float loss,
                                                          float wy, float* row_weight, DeviceFlags* flags) {
  p.lse[n] = ignored ? 0.f : lse;  // an ignored row: every per-row result is 0
  if (bad) flag_bad_row(flags, int32_t(n));
  const bool counted = !ignored && !bad;
  p.losses[n] = counted ? (p.token_weights.data ? read(p.token_weights, n) : 1.f) * loss : 0.f;
  row_weight[n] = counted ? wy : 0.f;
}

// Cross-entropy forward per row: loss = (1−ε) w_y (ls − d_y) + ε/V Σ_v w_v (ls − d_v) + s lse², d = (z − m)·invT
// (−log p = ls − d, never lse − z·invT), and the row's weight in the mean (w_y, or 0 when ignored). The row's
// max m and c = −ls go to shift (CrossEntropyShift) for the gradient kernel.
template <typename T>
__global__ void __launch_bounds__(THREADS, blocks_within(THREADS, 32)) cross_entropy_rows_kernel(CrossEntropyParams p, float* row_weight, float2* shift,
                                                                                               DeviceFlags* flags) {
  const int64_t n = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits.data) + n * p.V;
  const float invT = 1.f / row_temperature(p.temperatures, p.temperature, n);
  float lse, unused, m, ls;
  row_stats<T, false>(row, p.V, invT, lse, unused, m, ls);
  const int32_t y = p.targets[n];
  const bool ignored = y == p.ignore_index;
  const bool bad = !ignored && (y < 0 || y >= p.V);
  const bool cw = p.class_weights.data != nullptr;  // any float dtype: read() decodes it
  float smooth = 0.f;
  if (p.label_smoothing != 0.f && !ignored && !bad) {
    float s = 0.f;
    for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) s += (cw ? read(p.class_weights, v) : 1.f) * (ls - (to_float(row[v]) - m) * invT);
    smooth = block_sum(s);
  }
  if (threadIdx.x != 0) return;
  shift[n] = make_float2(m, -ls);
  float loss = 0.f, wy = 0.f;
  if (!ignored && !bad) {
    wy = cw ? read(p.class_weights, y) : 1.f;
    loss = INFINITY;
    if (lse != -INFINITY) {
      loss = (1.f - p.label_smoothing) * wy * (ls - (to_float(row[y]) - m) * invT) + p.label_smoothing / float(p.V) * smooth;
      if (p.z_loss != 0.f) loss += p.z_loss * lse * lse;
    }
  }
  cross_entropy_row_outputs(p, n, lse, ignored, bad, loss, wy, row_weight, flags);
}

// One block: Σ losses and Σ weights in a fixed order into the result block (CrossEntropySlot).
__global__ void __launch_bounds__(1024, 1) finalize_kernel(const float* losses, const float* weights, const int32_t* targets,
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
    result[CrossEntropySlot::loss] = l * scale;
    result[CrossEntropySlot::count] = c;
    result[CrossEntropySlot::scale] = scale;
  }
}

// dℓ/dz = scale·τ_n/T [ (1−ε) w_y (p − onehot_y) + ε/V (W p − w) + 2 s lse p ], p = softmax(z/T), written once.
// With cp = (1−ε) w_y + ε W/V + 2 s lse and rest = cp − (1−ε) w_y:
//   d_v = cp·p_v − ε/V w_v (v ≠ y),   d_y = cp·expm1(log p_y) + rest − ε/V w_y   (exact where p_y is near 1),
// log p_v = (z_v − m)·invT + c from the forward's m and c (shift), as on the cpu: never z·invT − lse.
template <typename T>
// result[scale] is the mean's 1/denominator; w_sum (Σ class weights) is read only with class weights
__global__ void __launch_bounds__(THREADS, blocks_within(THREADS, 32)) cross_entropy_grad_kernel(CrossEntropyParams p, const float* result, const float* w_sum,
                                                                                               const float2* shift) {
  const int64_t n = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits.data) + n * p.V;
  float* g = p.grad + n * p.V;
  const int32_t y = p.targets[n];
  const float lse = p.lse[n];
  if (y == p.ignore_index || y < 0 || y >= p.V || lse == -INFINITY) {
    for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) g[v] = 0.f;
    return;
  }
  const bool cw = p.class_weights.data != nullptr;
  const float eps = p.label_smoothing;
  const float wy = cw ? read(p.class_weights, y) : 1.f;
  const float invT = 1.f / row_temperature(p.temperatures, p.temperature, n);
  const float gs = result[CrossEntropySlot::scale] * (p.token_weights.data ? read(p.token_weights, n) : 1.f) * invT;
  const float W = cw ? *w_sum : float(p.V);
  const float rest = eps * W / float(p.V) + 2.f * p.z_loss * lse;
  const float cp = (1.f - eps) * wy + rest;
  const float e = eps / float(p.V);
  const float2 mc = shift[n];
  for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) {
    const float lp = (to_float(row[v]) - mc.x) * invT + mc.y;
    const float d = v == y ? cp * expm1f(lp) + rest : cp * __expf(lp);
    g[v] = gs * (d - e * (cw ? read(p.class_weights, v) : 1.f));
  }
}

// d/dz = [g_logp (onehot − p) − g_H p (log p + H)] / T, one row per block; H from p.entropy or recomputed.
// At the target, 1 − p is −expm1(log p), exact where p is near 1 (as on the cpu).
// log p = (z − m)·invT + c with m the row's largest raw logit and c = m/T − lse (in double), as on the cpu
// (rowmath.h row_softmax with a given lse): never z·invT − lse, whose float32 z·invT is off by |z|/T·2⁻²⁴.
template <typename T>
__global__ void __launch_bounds__(THREADS, blocks_within(THREADS, 32)) log_probs_backward_kernel(LogProbsBackwardParams p, DeviceFlags* flags) {
  const int64_t n = blockIdx.x;
  const T* row = static_cast<const T*>(p.logits.data) + n * p.V;
  float* g = p.grad + n * p.V;
  const double temp = row_temperature(p.temperatures, p.temperature, n);
  const float invT = float(1.0 / temp);
  const float l = read(p.lse, n);
  const int32_t y = p.targets[n];
  const bool target_ok = y != p.ignore_index && y >= 0 && y < p.V;
  if (!target_ok && y != p.ignore_index && threadIdx.x == 0) flag_bad_row(flags, int32_t(n));
  const float gl = (p.grad_logp.data && target_ok) ? read(p.grad_logp, n) : 0.f;
  const float gh = (p.grad_entropy.data && target_ok) ? read(p.grad_entropy, n) : 0.f;  // ignored rows: zero gradient
  const float gs = (p.grad_sum_prob_sq.data && target_ok) ? read(p.grad_sum_prob_sq, n) : 0.f;
  if (l == -INFINITY || (gl == 0.f && gh == 0.f && gs == 0.f)) {
    for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) g[v] = 0.f;
    return;
  }
  float mx = -INFINITY;
  for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) mx = fmaxf(mx, to_float(row[v]));
  const float m = block_max(mx);  // a NaN row has a NaN lse, so NaN results either way
  const float c = m == INFINITY ? 0.f : float(double(m) / temp - double(l));  // m/T in double, as on the cpu
  float h = 0.f;
  if (gh != 0.f) {
    if (p.entropy.data) {
      h = read(p.entropy, n);
    } else {
      float part = 0.f;
      for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) {
        const float lp = (to_float(row[v]) - m) * invT + c;
        const float q = __expf(lp);
        if (q != 0.f) part -= q * lp;  // xlogy; a NaN q stays NaN
      }
      h = block_sum(part);
    }
  }
  float sq = 0.f;  // Σ p², given or recomputed where its gradient is
  if (gs != 0.f) {
    if (p.sum_prob_sq.data) {
      sq = read(p.sum_prob_sq, n);
    } else {
      float part = 0.f;
      for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) {
        const float q = __expf((to_float(row[v]) - m) * invT + c);
        part += q * q;
      }
      sq = block_sum(part);
    }
  }
  // d/dz = [g_logp (onehot − p) − g_H p (log p + H) + 2 g_Q p (p − Q)] / T
  for (int64_t v = threadIdx.x; v < p.V; v += blockDim.x) {
    const float lp = (to_float(row[v]) - m) * invT + c;
    const float q = __expf(lp);
    const float ent = q != 0.f ? gh * q * (lp + h) : 0.f;
    g[v] = ((v == y ? -gl * expm1f(lp) : -gl * q) - ent + 2.f * gs * q * (q - sq)) * invT;
  }
}

// The mean's 1/denominator before the fused kernel writes gradients: result[count] = non-ignored rows,
// result[scale] = 1/(rows with a valid target) for the mean, else 1. (finalize_kernel later recomputes both,
// identically: the same integer-valued sums.)
__global__ void __launch_bounds__(1024, 1) cross_entropy_scale_kernel(const int32_t* targets, int32_t ignore_index, int64_t N, int64_t V,
                                                                   Reduction reduction, float* result) {
  float c = 0.f, w = 0.f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const int32_t y = targets[n];
    c += y != ignore_index ? 1.f : 0.f;
    w += y != ignore_index && y >= 0 && y < V ? 1.f : 0.f;
  }
  c = block_sum(c);
  w = block_sum(w);
  if (threadIdx.x == 0) {
    result[CrossEntropySlot::count] = c;
    result[CrossEntropySlot::scale] = reduction == Reduction::mean ? (w > 0.f ? 1.f / w : 0.f) : 1.f;
  }
}

// row[i] through L2 (ld.global.cg, volatile): never merged with another read of the same element, so no
// register holds the value between the two (in the tile kernel that register spilled the 16-bit tiles).
template <typename T>
__device__ __forceinline__ float load_cg(const T* row, int64_t i) {
  if constexpr (sizeof(T) == 2) {
    T t;
    t.bits = __ldcg(reinterpret_cast<const unsigned short*>(row) + i);
    return to_float(t);
  } else {
    return to_float(__ldcg(row + i));
  }
}

// Cross-entropy forward+backward in one pass (no class weights, T = 1), the row on chip. Row n, target y, ε the
// label smoothing, s the z-loss coefficient, τ_n the token weight, c = result[scale] the reduction's scale,
// m the row max, ls = log Σ exp(x − m), lse = m + ls, r = x_y (0 where x_y is not finite):
//   loss_n = τ_n [(1−ε)(ls − (x_y − m)) + ε(ls − (r − m)) − ε/V·Σ_v (x_v − r) + s·lse²]
//   dℓ/dx_v = c·τ_n [cp·p_v − ε/V] (v ≠ y),  dℓ/dx_y = c·τ_n [cp·expm1(log p_y) + ε + 2 s lse − ε/V],
//   cp = 1 + 2 s lse,  log p_y = (x_y − m) − ls.
// Formed from differences (x − m, x − r: exact where the row has mass), never lse − x_y or V·lse − Σ x, which
// cancel terms of size |x| (6e-4 at |x| = 1e4 in float32); expm1 keeps 1 − p_y where p_y is near 1.
// p_v = exp(x_v − m_t)·exp(m_t − m)/Σ: the thread's registers hold exp(x_v − m_t), one exp per element.
// The stores write cp·p_v − ε/V everywhere; thread 0 of the CTA holding y then writes the true class over it,
// so that no register holds it through the stores (64 registers a thread, 32 of them the row).
// Ignored and bad-target rows get lse, a zero loss and a zero gradient row (bad ones are flagged).
// The gradient goes to grad_out: float32, or (O = T) the logits' 16-bit dtype, rounded once from float32.
template <typename T, typename O, int Ver>
__global__ void __launch_bounds__(TILE_THREADS, tile_blocks<T>()) cross_entropy_tile_kernel(CrossEntropyParams p, O* grad_out, const float* result, float* row_weight,
                                                                         DeviceFlags* flags, int cluster) {
  const int64_t n = blockIdx.x / cluster;
  const int64_t V = p.V;
  const int64_t begin = int64_t(blockIdx.x % cluster) * TILE_SPAN, end = min(begin + TILE_SPAN, V);
  const T* row = static_cast<const T*>(p.logits.data) + n * V;
  const int32_t y = p.targets[n];
  const bool ignored = y == p.ignore_index;
  const bool bad = !ignored && (y < 0 || y >= V);
  const float eps = p.label_smoothing;
  RowTile<T> tile;
  tile.load(row, begin, end, 1.f);
  MaxSums<1> part;
  part.plain = 0.f;
  if (eps != 0.f && !ignored && !bad) {
    const float xy = load_cg(row, y);
    const float r = isfinite(xy) ? xy : 0.f;  // every CTA of the cluster the same
    for (int i = 0; i < TILE_R; i++) part.plain += RowTile<T>::col(begin, i / RowTile<T>::VEC) < end ? tile.x[i] - r : 0.f;
  }
  part.m = tile.max();
  const float mt = part.m;
  part.s[0] = tile.exp_shift(mt);
  const MaxSums<1> all = row_combine<Ver>(part, cluster);
  const float ls = logf(all.s[0]);
  const float lse = all.m == -INFINITY ? -INFINITY : all.m + ls;
  const bool zero = ignored || bad || lse == -INFINITY;
  const float gs = result[CrossEntropySlot::scale] * (p.token_weights.data ? read(p.token_weights, n) : 1.f);
  const float rest = eps + 2.f * p.z_loss * lse;  // cp − (1 − ε)
  const float cp = 1.f - eps + rest;
  const float ge = gs * (eps / float(V));
  // thread 0: the true class's gradient (kept in shared memory, not a register, through the stores) and, in
  // the lead CTA, the row's outputs
  __shared__ float gy;
  if (threadIdx.x == 0) {
    const float xy = zero ? 0.f : to_float(row[y]);
    const float lpy = (xy - all.m) - ls;  // log p_y
    gy = gs * (cp * expm1f(lpy) + rest) - ge;
    if (blockIdx.x % cluster == 0) {
      float loss = ignored || bad ? 0.f : INFINITY;
      if (!zero) {
        loss = (1.f - eps) * -lpy;
        if (eps != 0.f) loss += eps * (ls - ((isfinite(xy) ? xy : 0.f) - all.m)) - eps / float(V) * all.plain;
        if (p.z_loss != 0.f) loss += p.z_loss * lse * lse;
      }
      cross_entropy_row_outputs(p, n, lse, ignored, bad, loss, 1.f, row_weight, flags);
    }
  }
  const float a = mt == -INFINITY ? 0.f : gs * cp * (__expf(mt - all.m) / all.s[0]);  // the gradient is a·ev − ge
  O* g = grad_out + n * V;
  tile.store(g, begin, end, [&](int64_t, float ev) { return zero ? 0.f : a * ev - ge; });
  // then thread 0 writes the true class over the value another thread stored there (the barrier orders them)
  __syncthreads();
  if (threadIdx.x == 0 && !zero && begin <= y && y < end) {
    if constexpr (std::is_same_v<O, float>) g[y] = gy;
    else g[y].bits = to_bits<O>(gy);
  }
}

__global__ void sum_weights_kernel(FloatIn w, int64_t V, float* out) {
  float s = 0.f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) s += read(w, v);
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

// The cluster size of the single-pass kernel this call launches, 0 for the two-pass kernels.
// A temperature other than 1 takes the two-pass kernels: 1/T held in the single-pass kernel made it spill at sm_90.
int cross_entropy_cluster(const CrossEntropyParams& p, int version) {
  if (!(p.grad || p.grad16) || p.class_weights.data || p.temperatures || p.temperature != 1.0) return 0;
  return dispatch_tile(p.logits.dtype, p.grad16 != nullptr, version, [&]<typename T, typename O, int Ver>() {
    return tile_plan<T>(cross_entropy_tile_kernel<T, O, Ver>, p.V, Ver);
  });
}

}  // namespace

cudaError_t log_probs(const LogProbsParams& p, DeviceFlags* flags, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  return dispatch_dtype(p.logits.dtype, [&]<typename T>() {
    const bool stats = p.sum_prob_sq || p.max_prob;
    if (p.entropy) {
      if (stats) log_probs_kernel<T, true, true><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
      else log_probs_kernel<T, true, false><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
    } else if (stats) {
      log_probs_kernel<T, false, true><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
    } else {
      log_probs_kernel<T, false, false><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
    }
    return cudaGetLastError();
  });
}

cudaError_t log_probs_backward(const LogProbsBackwardParams& p, DeviceFlags* flags, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  return dispatch_dtype(p.logits.dtype, [&]<typename T>() {
    log_probs_backward_kernel<T><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
    return cudaGetLastError();
  });
}

bool cross_entropy_single_pass(const CrossEntropyParams& p) { return cross_entropy_cluster(p, vocab_kernel_version()) > 0; }

cudaError_t cross_entropy(const CrossEntropyParams& p, float* result, float* scratch, DeviceFlags* flags, cudaStream_t stream) {
  // scratch (cross_entropy_scratch_floats): [N] (m, c) pairs for the gradient (first: 8-byte aligned), [N] row
  // weights, Σ class weights
  float2* shift = reinterpret_cast<float2*>(scratch);
  float* row_weight = scratch + 2 * p.N;
  float* w_sum = scratch + 3 * p.N;
  const int version = vocab_kernel_version();
  const int cluster = cross_entropy_cluster(p, version);
  if (cluster > 0) {  // the row on chip: one pass
    cross_entropy_scale_kernel<<<1, 1024, 0, stream>>>(p.targets, p.ignore_index, p.N, p.V, p.reduction, result);
    const float* res = result;
    const cudaError_t err = dispatch_tile(p.logits.dtype, p.grad16 != nullptr, version, [&]<typename T, typename O, int Ver>() {
      return launch_tiles(cross_entropy_tile_kernel<T, O, Ver>, p.N, cluster, stream, p, grad_out<O>(p.grad, p.grad16), res, row_weight, flags, cluster);
    });
    if (err != cudaSuccess) return err;
    finalize_kernel<<<1, 1024, 0, stream>>>(p.losses, row_weight, p.targets, p.ignore_index, p.N, p.reduction, result);
    return cudaGetLastError();
  }
  return dispatch_dtype(p.logits.dtype, [&]<typename T>() {
    if (p.class_weights.data) sum_weights_kernel<<<1, 1024, 0, stream>>>(p.class_weights, p.V, w_sum);
    if (p.N > 0) cross_entropy_rows_kernel<T><<<unsigned(p.N), THREADS, 0, stream>>>(p, row_weight, shift, flags);
    finalize_kernel<<<1, 1024, 0, stream>>>(p.losses, row_weight, p.targets, p.ignore_index, p.N, p.reduction, result);
    if (p.grad && p.N > 0) cross_entropy_grad_kernel<T><<<unsigned(p.N), THREADS, 0, stream>>>(p, result, w_sum, shift);
    if (p.grad16) return round_to_16(p.grad, p.grad16, p.N * p.V, p.logits.dtype, stream);  // p.grad: the caller's staging
    return cudaGetLastError();
  });
}

}  // namespace rk::gpu
