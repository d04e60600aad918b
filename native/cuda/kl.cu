// CUDA KL divergences (DESIGN §1.5): sampled-token estimators (math shared with the CPU, rlhf/kl.h) and the
// full-vocabulary KL(p‖q) per row. Version 2 holds both rows on chip (rowtile.cuh): two reads and one
// write for the KL and its gradient wrt q. Version 1 reads the row pair three times (both lse, the KL, the
// gradients) and serves the gradient wrt p and the shapes version 2 does not take.
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

// The rows whose KL is fixed by their lse alone (as native/cpu/kl.cc): a NaN in either row makes the row NaN
// (gradients too); else a p without mass (lse −inf) has KL 0, a q without mass KL +inf, both zero gradients.
// Returns whether the row is one of them, with its KL and gradient value.
__device__ __forceinline__ bool kl_fixed_row(double lse_p, double lse_q, float& kl, float& grad) {
  const bool nan = lse_p != lse_p || lse_q != lse_q;
  kl = nan ? NAN : lse_p == -INFINITY ? 0.f : INFINITY;
  grad = nan ? NAN : 0.f;
  return nan || lse_p == -INFINITY || lse_q == -INFINITY;
}

__global__ void row_count_kernel(const uint8_t* mask, int64_t N, Reduction reduction, float* result) {
  float c = 0.f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) c += mask ? mask[n] : 1;
  c = block_sum(c);
  if (threadIdx.x == 0) {
    result[KlDivergenceSlot::count] = c;
    result[KlDivergenceSlot::scale] = reduction == Reduction::mean ? (c > 0.f ? 1.f / c : 0.f) : 1.f;
  }
}

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
  const double lse_p = block_lse_exact(rp, V, invT), lse_q = block_lse_exact(rq, V, invT);
  float fixed_kl, fixed_grad;
  if (kl_fixed_row(lse_p, lse_q, fixed_kl, fixed_grad)) {
    if (threadIdx.x == 0) p.per_row[n] = fixed_kl;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      if (gq) gq[v] = fixed_grad;
      if (gp) gp[v] = fixed_grad;
    }
    return;
  }
  const float lp_ = float(lse_p), lq_ = float(lse_q);
  // log p − log q = (z_p − z_q)/T − (lse_p − lse_q): one rounding of the difference (as the CPU kernel)
  const float dl = float(lse_p - lse_q);
  float part = 0.f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float a = to_float(rp[v]), b = to_float(rq[v]);
    const float pv = __expf(a * invT - lp_);
    if (pv != 0.f) part += pv * ((a - b) * invT - dl);
  }
  const float kl = block_sum(part);
  if (threadIdx.x == 0) p.per_row[n] = kl;
  const float s = result[KlDivergenceSlot::scale] * invT;
  const float c = float(lse_p - lse_q + double(kl));
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float a = to_float(rp[v]), b = to_float(rq[v]);
    const float pv = __expf(a * invT - lp_);
    if (gq) gq[v] = s * (__expf(b * invT - lq_) - pv);
    if (gp) gp[v] = pv != 0.f && kl != INFINITY ? s * pv * ((a - b) * invT - c) : 0.f;  // an infinite KL: 0 wrt p
  }
}

// Version 2. With a = z_p/T, b = z_q/T and each thread's maxima m_a, m_b, the registers hold
// e_a = exp(a − m_a) and e_b = exp(b − m_b) (one exp each per element) and the thread sums
// S_a = Σ e_a, S_b = Σ e_b, U = Σ e_a (a − b). After the row-wide combination (rescaled to the row maxima):
//   KL = U/S_a − (lse_p − lse_q),  dKL/dz_q,v = (q_v − p_v)/T,  scaled by result[scale] (mean, sum or none).
// lse_p − lse_q is taken in double, as the CPU kernel does: the KL is their small difference.
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
  a.load(static_cast<const T*>(p.p_logits.data) + n * V, begin, end, invT);
  b.load(static_cast<const T*>(p.q_logits.data) + n * V, begin, end, invT);
  MaxSums<2> pa;  // (m_a; S_a, U)
  MaxSums<1> pb;  // (m_b; S_b)
  pa.plain = pb.plain = 0.f;
  pa.m = a.max();
  pb.m = b.max();
  const float ma = pa.m, mb = pb.m;
  float sa = 0.f, u = 0.f, sb = 0.f;
#pragma unroll
  for (int i = 0; i < TILE_R; i++) {
    const float ea = ma == -INFINITY ? 0.f : __expf(a.x[i] - ma);
    const float eb = mb == -INFINITY ? 0.f : __expf(b.x[i] - mb);
    if (ea > 0.f) u += ea * (a.x[i] - b.x[i]);
    sa += ea;
    sb += eb;
    a.x[i] = ea;
    b.x[i] = eb;
  }
  pa.s[0] = sa;
  pa.s[1] = u;
  pb.s[0] = sb;
  // v3: both rows' statistics in one exchange (two cluster barriers instead of four)
  MaxSums<2> A;
  MaxSums<1> B;
  if constexpr (Ver >= 3) {
    const Both<MaxSums<2>, MaxSums<1>> ab = row_combine<Ver>(Both<MaxSums<2>, MaxSums<1>>{pa, pb}, cluster);
    A = ab.a;
    B = ab.b;
  } else {
    A = row_combine<Ver>(pa, cluster);
    B = row_combine<Ver>(pb, cluster);
  }
  const double lse_p = A.m == -INFINITY ? -INFINITY : double(A.m) + log(double(A.s[0]));
  const double lse_q = B.m == -INFINITY ? -INFINITY : double(B.m) + log(double(B.s[0]));
  float fixed_kl, fixed_grad;
  if (kl_fixed_row(lse_p, lse_q, fixed_kl, fixed_grad)) {  // the same for every CTA of the cluster
    a.store(grad_out + n * V, begin, end, [&](int64_t, float) { return fixed_grad; });
    if (lead && threadIdx.x == 0) p.per_row[n] = fixed_kl;
    return;
  }
  if (lead && threadIdx.x == 0) p.per_row[n] = A.s[1] / A.s[0] - float(lse_p - lse_q);
  const float s = result[KlDivergenceSlot::scale] * invT;
  const float ra = ma == -INFINITY ? 0.f : __expf(ma - A.m) / A.s[0];
  const float rb = mb == -INFINITY ? 0.f : __expf(mb - B.m) / B.s[0];
  // the store walks a's columns; b's register of the same index is the same column
  O* gq = grad_out + n * V;
#pragma unroll
  for (int k = 0; k < RowTile<T>::LOADS; k++) {
    const int64_t c = RowTile<T>::col(begin, k);
    if (c >= end) continue;
#pragma unroll
    for (int j = 0; j < RowTile<T>::VEC; j++) b.x[k * RowTile<T>::VEC + j] = s * (b.x[k * RowTile<T>::VEC + j] * rb - a.x[k * RowTile<T>::VEC + j] * ra);
  }
  b.store(gq, begin, end, [](int64_t, float g) { return g; });
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
