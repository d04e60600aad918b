// CUDA kept-set log-probs (sampling replay, issue 15). Math: src/reference/vocab.ts keptLogProbsKernel; CPU
// twin: native/cpu/vocab.cc kept_rows. One block per row, in one launch, with no device scratch:
// - the set given as CSR: the block reads only the kept tokens;
// - the set drawn by top-k / top-p / min-p: the block finds the row's cut (rlhf/vocab.h KeptCut) on chip,
//   then takes "(key(z_v), v) ≥ cut" as its membership test. No [N, V] mask and no CSR are materialised.
#include <cstdint>

#include "common.cuh"
#include "rlhf/cuda_vocab.h"

namespace rk::gpu {
namespace {

constexpr int THREADS = 512;
constexpr int RADIX_BITS = 8, BUCKETS = 1 << RADIX_BITS;

// The block's shared state of the cut search.
struct CutShared {
  unsigned long long hist[BUCKETS];  // counts (top-k) or fixed-point masses (top-p) per digit
  int digit;
  unsigned long long rest;           // top-k: the rank still wanted; top-p: the mass below the digit
  int64_t index, last;
  uint32_t warp_count[THREADS / 32];
};

__device__ __forceinline__ bool kept_by(const KeptCut& c, int64_t v, float z) {
  const uint32_t k = kept_order_key(z);
  return z != -INFINITY && (k > c.key || (k == c.key && v >= c.index));
}

// One radix pass over the row: hist[d] = Σ weight(z) over the z with key ≥ lo whose key agrees with `prefix`
// above bit shift + RADIX_BITS and has digit d at `shift`. Integer shared atomics: exact in any order.
template <typename T, class W>
__device__ __forceinline__ void radix_pass(const T* row, int64_t V, uint32_t lo, uint32_t prefix, int shift, CutShared& sh, W weight) {
  for (int i = threadIdx.x; i < BUCKETS; i += blockDim.x) sh.hist[i] = 0;
  __syncthreads();
  const uint32_t high = shift + RADIX_BITS >= 32 ? 0u : ~0u << (shift + RADIX_BITS);
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float z = to_float(row[v]);
    const uint32_t k = kept_order_key(z);
    if (k >= lo && ((k ^ prefix) & high) == 0) atomicAdd(&sh.hist[(k >> shift) & (BUCKETS - 1)], weight(z));
  }
  __syncthreads();
}

// Top-k: the key of the k-th largest logit among those with key ≥ lo (every tie of it is kept), found digit by
// digit from the top; lo itself when fewer than k qualify.
template <typename T>
__device__ uint32_t top_k_key(const T* row, int64_t V, uint32_t lo, int64_t k, CutShared& sh) {
  uint32_t prefix = 0;
  unsigned long long need = (unsigned long long)k;
  for (int shift = 32 - RADIX_BITS; shift >= 0; shift -= RADIX_BITS) {
    radix_pass(row, V, lo, prefix, shift, sh, [](float) { return 1ull; });
    if (threadIdx.x == 0) {
      int d = BUCKETS - 1;
      unsigned long long above = 0;
      for (; d >= 0 && above + sh.hist[d] < need; d--) above += sh.hist[d];
      sh.digit = d;
      sh.rest = need - above;
    }
    __syncthreads();
    const int d = sh.digit;
    need = sh.rest;
    if (d < 0) return lo;  // only in the first pass: fewer than k survivors
    prefix |= uint32_t(d) << shift;
  }
  return prefix;
}

// The index of the t-th (from 0) logit of key `key` in index order, or the last one when there are ≤ t: the
// row in chunks of blockDim.x, each counted by warp ballots; stops at the chunk that holds it.
template <typename T>
__device__ int64_t nth_tie(const T* row, int64_t V, uint32_t key, unsigned long long t, CutShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  unsigned long long seen = 0;
  for (int64_t base = 0; base < V; base += blockDim.x) {
    const int64_t v = base + threadIdx.x;
    const bool hit = v < V && kept_order_key(to_float(row[v])) == key;
    const unsigned ballot = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) sh.warp_count[warp] = __popc(ballot);
    __syncthreads();
    unsigned before = 0, total = 0;
    for (int w = 0; w < warps; w++) before += w < warp ? sh.warp_count[w] : 0, total += sh.warp_count[w];
    const unsigned rank = before + __popc(ballot & ((1u << lane) - 1u));
    if (hit && seen + rank == t) sh.index = v;
    if (hit && rank + 1 == total) sh.last = v;
    __syncthreads();
    if (seen + total > t) return sh.index;
    seen += total;
  }
  return sh.last;
}

// Top-p over the logits with key ≥ lo, whose largest is mx: the survivors ascending by (z, v) drop the longest
// prefix of cumulative mass ≤ (1 − p)·total. Masses in 64-bit fixed point (rlhf/vocab.h kept_mass_bits:
// exact integer sums, so the shared-atomic histograms stay deterministic), each from exp in double, as the
// cpu computes it. Digit by digit from the bottom, the first bucket whose mass takes the running sum past the
// limit holds the boundary; at the last digit that bucket is one value z_c with mass q each, `below` under it,
// and its first (limit − below)/q ties by index are dropped. When rounding puts the whole mass within the
// limit (p near 0), only the last survivor stays: the largest logit's last index.
template <typename T>
__device__ KeptCut top_p_cut(const T* row, int64_t V, uint32_t lo, float mx, float invT, float p, CutShared& sh) {
  const double scale = ldexp(1.0, kept_mass_bits(V));
  auto mass = [=](float z) { return __double2ull_rn(exp((double(z) - double(mx)) * double(invT)) * scale); };
  uint32_t prefix = 0;
  unsigned long long below = 0, limit = 0;
  for (int shift = 32 - RADIX_BITS; shift >= 0; shift -= RADIX_BITS) {
    radix_pass(row, V, lo, prefix, shift, sh, mass);
    if (threadIdx.x == 0) {
      if (shift == 32 - RADIX_BITS) {
        unsigned long long total = 0;
        for (int d = 0; d < BUCKETS; d++) total += sh.hist[d];
        limit = (unsigned long long)((1.0 - double(p)) * double(total));
      }
      int d = 0;
      for (; d < BUCKETS && below + sh.hist[d] <= limit; d++) below += sh.hist[d];
      sh.digit = d;
      sh.rest = below;
    }
    __syncthreads();
    const int d = sh.digit;
    if (d == BUCKETS) {  // only in the first pass
      const uint32_t top = kept_order_key(mx);
      return {top, nth_tie(row, V, top, ~0ull, sh)};
    }
    prefix |= uint32_t(d) << shift;
  }
  if (threadIdx.x == 0) sh.rest = (limit - sh.rest) / mass(kept_key_value(prefix));  // < the tie count
  __syncthreads();
  const unsigned long long drop = sh.rest;
  return {prefix, drop == 0 ? 0 : nth_tie(row, V, prefix, drop, sh)};
}

// The row's cut (rlhf/vocab.h KeptCut) under min-p m, top-k k and top-p p, in vLLM's order; mx is the row's
// largest logit (finite or −inf: then nothing is kept; the row holds no NaN or +inf).
template <typename T>
__device__ KeptCut sampling_cut(const T* row, int64_t V, float invT, float mx, int32_t k, float p, float m, CutShared& sh) {
  if (mx == -INFINITY) return {};
  uint32_t lo = kKeptFiniteKey;
  if (m > 0.f) {  // exp((z − max)·invT) ≥ m keeps, in double as on the cpu; the test is monotone in z
    float least = INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float z = to_float(row[v]);
      if (z != -INFINITY && exp((double(z) - double(mx)) * double(invT)) >= double(m)) least = fminf(least, z);
    }
    lo = kept_order_key(-block_max(-least));
  }
  if (k > 0 && int64_t(k) < V) lo = top_k_key(row, V, lo, k, sh);
  if (p < 1.f) return top_p_cut(row, V, lo, mx, invT, p, sh);
  return {lo, 0};
}

// Kept-set log-probs, one block per row. The set given as CSR: an online (max m of the raw z, Σ exp((z −
// m)·invT)) per thread over the kept tokens (gathered), and whether one is NaN or +inf (NaN results then, as
// on the cpu). Drawn: a NaN or +inf anywhere in the row gives NaN; else the cut, then the same online pair
// over the row's members. Both combine in a fixed tree order. As on the cpu only differences from the max are
// scaled: log p_v = (z_v − m)·invT − log S, lse = m·invT + log S in double, so |z|/T up to 1e4 loses nothing to
// a float32 z·invT. Gradient g (onehot_y − p_v)/T on the kept tokens, 0 elsewhere.
template <typename T, bool Drawn>
__global__ void __launch_bounds__(THREADS, blocks_within(THREADS, Drawn ? 64 : 32)) kept_log_probs_kernel(KeptLogProbsParams p, DeviceFlags* flags) {
  const int64_t n = blockIdx.x;
  const int64_t V = p.V;
  const T* row = static_cast<const T*>(p.logits.data) + n * V;
  float* g = p.grad ? p.grad + n * V : nullptr;
  const int32_t y = p.targets[n];
  const bool ignored = y == p.ignore_index;
  const bool bad_target = !ignored && (y < 0 || y >= V);
  if (bad_target && threadIdx.x == 0) atomicMin(&flags->first_bad_row, int32_t(n));
  const float invT = 1.f / row_temperature(p.temperatures, p.temperature, n);
  const int32_t* tok = nullptr;
  int64_t count = 0;
  float bad = 0.f;  // > 0 when a logit read is NaN or +inf
  KeptCut cut;
  MaxSum ms{-INFINITY, 0.f};
  bool nan;
  if constexpr (Drawn) {
    __shared__ CutShared sh;
    float mx = -INFINITY;
    for (int64_t v = threadIdx.x; v < V && !ignored; v += blockDim.x) {
      const float z = to_float(row[v]);
      bad += z != z || z * invT == INFINITY ? 1.f : 0.f;
      mx = fmaxf(mx, z);
    }
    mx = block_max(mx);
    nan = block_sum(bad) > 0.f;
    if (!ignored && !nan) cut = sampling_cut(row, V, invT, mx, p.top_k[n], p.top_p[n], p.min_p[n], sh);
    for (int64_t v = threadIdx.x; v < V && !ignored && !nan; v += blockDim.x) {
      const float z = to_float(row[v]);
      if (kept_by(cut, v, z)) ms = maxsum_add(ms, z, invT);
    }
  } else {
    tok = p.keep_tokens + p.keep_offsets[n];
    count = p.keep_offsets[n + 1] - p.keep_offsets[n];
    for (int64_t i = threadIdx.x; i < count && !ignored; i += blockDim.x) {
      const float z = to_float(row[tok[i]]);
      bad += z != z || z * invT == INFINITY ? 1.f : 0.f;
      ms = maxsum_add(ms, z, invT);
    }
    nan = block_sum(bad) > 0.f;
  }
  const MaxSum all = block_maxsum(ms, invT);
  const double log_s = log(double(all.s));
  const double lse = nan ? NAN : all.m == -INFINITY && all.s == 0.f ? -INFINITY : double(all.m) * invT + log_s;
  bool in_k = false;  // y kept (every thread reads the same tokens)
  if (!ignored && !bad_target) {
    if constexpr (Drawn) in_k = kept_by(cut, y, to_float(row[y]));
    else for (int64_t i = 0; i < count && !in_k; i++) in_k = tok[i] == y;
  }
  const float lp = ignored || bad_target ? 0.f : nan ? NAN : in_k && lse != -INFINITY ? float((double(to_float(row[y])) - double(all.m)) * invT - log_s) : -INFINITY;
  if (threadIdx.x == 0) {
    p.logp[n] = lp;
    p.lse[n] = ignored ? 0.f : float(lse);
  }
  if (!g) return;
  const float gl = p.grad_logp.data ? read(p.grad_logp, n) : 0.f;
  const bool write = !(ignored || bad_target || nan || gl == 0.f || lp == -INFINITY);
  const float c = float(-log_s);  // log p_v = (z_v − m)·invT + c
  // 1 − q as −expm1(log q), as on the cpu
  auto grad_of = [&](int64_t v, float z) { const float lq = (z - all.m) * invT + c; return (v == y ? -gl * expm1f(lq) : -gl * __expf(lq)) * invT; };
  if constexpr (Drawn) {  // each element once: its gradient where kept, else 0
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      float x = nan && !ignored ? NAN : 0.f;
      if (write) {
        const float z = to_float(row[v]);
        if (kept_by(cut, v, z)) x = grad_of(v, z);
      }
      g[v] = x;
    }
  } else {  // cleared, then written at the kept tokens
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) g[v] = nan && !ignored ? NAN : 0.f;
    if (!write) return;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) g[tok[i]] = grad_of(tok[i], to_float(row[tok[i]]));
  }
}

}  // namespace

cudaError_t kept_log_probs(const KeptLogProbsParams& p, DeviceFlags* flags, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  return dispatch_dtype(p.logits.dtype, [&]<typename T>() {
    if (p.keep_offsets) kept_log_probs_kernel<T, false><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
    else kept_log_probs_kernel<T, true><<<unsigned(p.N), THREADS, 0, stream>>>(p, flags);
    return cudaGetLastError();
  });
}

}  // namespace rk::gpu
