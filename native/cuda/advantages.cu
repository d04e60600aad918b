// CUDA advantage estimators (DESIGN §1.8); math in src/reference/advantages.ts.
#include <cub/block/block_scan.cuh>

#include "common.cuh"
#include "rlhf/cuda_ops.h"

namespace rk::gpu {
namespace {

constexpr int GAE_THREADS = 512;

// An affine map a ↦ mul·a + add: GAE's step A_t = δ_t + γλ·A_next over the counted tokens, the identity
// over masked ones. In double, as the cpu's recursion (rlhf/advantages.h gae_sequence): A_t sums many terms
// that may cancel, and a float32 scan loses them (emulated in test/gpu-math.test.ts).
struct Affine {
  double mul, add;
};
// The value of the nearest counted token (has = 0: none yet).
struct Nearest {
  int has;
  float value;
};

// GAE as a reverse scan, one block per sequence, in chunks of GAE_THREADS tokens from the end. Thread i
// takes the token hi − 1 − i, so a forward block scan runs backwards in time:
//   next_t = the value of the nearest counted token after t (or the carried one; lastValues at the end),
//   δ_t = r_t + γ next_t − v_t,  A_t = (f_t ∘ f_{t+1} ∘ … )(A carried in), f_t(a) = δ_t + γλ a (identity if masked).
// Masked tokens get 0, as in gae_sequence (the CPU loop). Composition is associative, so the result is the
// recursion's, with rounding in tree order instead of sequential order; δ_t = r_t + γ·next_t − v_t, the maps,
// their composition and A_t are in double (the cpu's order of operations), rounded to float32 once at the end.
__global__ void __launch_bounds__(GAE_THREADS, blocks_within(GAE_THREADS, 64)) gae_scan_kernel(GaeParams p) {
  // warp scans, not the default raking: the double maps fit 64 registers (raking spilled 212 bytes)
  using AffineScan = cub::BlockScan<Affine, GAE_THREADS, cub::BLOCK_SCAN_WARP_SCANS>;
  using NearestScan = cub::BlockScan<Nearest, GAE_THREADS>;
  __shared__ union {
    typename AffineScan::TempStorage affine;
    typename NearestScan::TempStorage nearest;
  } temp;
  __shared__ double carry_a;
  __shared__ float carry_next;
  const int64_t s = blockIdx.x;
  const int64_t first = p.offsets[s], last = p.offsets[s + 1];
  const double c = p.gamma * p.lambda;
  if (threadIdx.x == 0) {
    carry_a = 0.0;
    carry_next = p.last_values.data ? read(p.last_values, s) : 0.f;
  }
  __syncthreads();
  for (int64_t hi = last; hi > first; hi -= GAE_THREADS) {
    const int64_t t = hi - 1 - threadIdx.x;
    const bool in = t >= first;
    const bool counted = in && (!p.mask || p.mask[t]);
    const float v = counted ? read(p.values, t) : 0.f;
    const float r = counted ? read(p.rewards, t) : 0.f;
    // the nearest counted value after t: an exclusive scan (later in scan order = nearer to t wins); the
    // aggregate is the chunk's first counted value, carried to the next chunk
    const auto nearer = [](Nearest a, Nearest b) { return b.has ? b : a; };
    Nearest next, seen;
    NearestScan(temp.nearest).ExclusiveScan(Nearest{counted ? 1 : 0, v}, next, Nearest{1, carry_next}, nearer, seen);
    __syncthreads();
    const Affine f = counted ? Affine{c, r + p.gamma * next.value - v} : Affine{1.0, 0.0};
    // F_t = f_t ∘ (every map after t in this chunk): op(a, b) = b ∘ a, with a earlier in scan order
    Affine F, chunk;
    AffineScan(temp.affine).InclusiveScan(f, F, [](Affine a, Affine b) { return Affine{b.mul * a.mul, b.mul * a.add + b.add}; }, chunk);
    const double a = F.mul * carry_a + F.add;
    if (in) {
      p.advantages[t] = counted ? float(a) : 0.f;
      p.returns[t] = counted ? float(a + v) : 0.f;
    }
    __syncthreads();  // every thread has read the carries
    if (threadIdx.x == 0) {
      carry_a = chunk.mul * carry_a + chunk.add;
      if (seen.has) carry_next = seen.value;
    }
    __syncthreads();
  }
}

constexpr int WHITEN_THREADS = 256;

// Scratch of whiten: two tickets, stats = { mean, 1/sqrt(var + eps), count }, then the blocks' partial sums,
// all in double: the mean of rewards far from 0 must be subtracted exactly (as native/cpu/advantages.cc).
struct WhitenScratch {
  unsigned* tickets;
  double* stats;
  double* partials;
};

// Two grid passes with a last-block-done reduction each (common.cuh, grid_sum): Σ and the count → mean,
// then Σ (v − mean)² → 1/sqrt(var + eps). Deterministic, and the whole GPU reads the values.
__global__ void __launch_bounds__(WHITEN_THREADS, blocks_within(WHITEN_THREADS, 32)) whiten_mean_kernel(WhitenParams p, WhitenScratch s) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool counted = i < p.values.size && (!p.mask || p.mask[i]);
  const double v[2] = {counted ? read(p.values, i) : 0.0, counted ? 1.0 : 0.0};
  grid_sum(v, s.partials, s.tickets, [&](const double* total) {
    s.stats[0] = total[1] > 0 ? total[0] / total[1] : 0.0;
    s.stats[2] = total[1];
  });
}

__global__ void __launch_bounds__(WHITEN_THREADS, blocks_within(WHITEN_THREADS, 32)) whiten_var_kernel(WhitenParams p, WhitenScratch s) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool counted = i < p.values.size && (!p.mask || p.mask[i]);
  const double d = counted ? read(p.values, i) - s.stats[0] : 0.0;
  const double v[1] = {d * d};
  grid_sum(v, s.partials + 2 * gridDim.x, s.tickets + 1, [&](const double* total) {
    const double n = s.stats[2];
    const double den = p.unbiased ? n - 1 : n;
    const double var = (n >= 2 && den > 0) ? total[0] / den : 0.0;
    s.stats[1] = 1.0 / sqrt(var + p.eps);
  });
}

__global__ void whiten_apply_kernel(WhitenParams p, const double* stats) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.values.size) return;
  p.out[i] = (p.mask && !p.mask[i]) ? 0.f : float((read(p.values, i) - stats[0]) * stats[1] + (p.shift_mean ? 0.0 : stats[0]));
}

__global__ void group_kernel(GroupAdvantagesParams p) {
  const int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= p.num_groups) return;
  const int64_t a = p.offsets[g], K = p.offsets[g + 1] - a;
  if (K < 2) {
    for (int64_t i = 0; i < K; i++) p.out[a + i] = 0.f;
    return;
  }
  // in double, as native/cpu/advantages.cc
  double sum = 0;
  for (int64_t i = 0; i < K; i++) sum += read(p.scores, a + i);
  const double mean = sum / double(K);
  double ss = 0;
  for (int64_t i = 0; i < K; i++) ss += (read(p.scores, a + i) - mean) * (read(p.scores, a + i) - mean);
  const double sd = sqrt(ss / double(p.unbiased ? K - 1 : K));
  for (int64_t i = 0; i < K; i++) {
    const double r = read(p.scores, a + i);
    p.out[a + i] = float(p.method == GroupMethod::rloo ? r - (sum - r) / double(K - 1)
                         : p.method == GroupMethod::mean_centered ? r - mean
                         : (r - mean) / (sd + p.eps));
  }
}

}  // namespace

cudaError_t gae(const GaeParams& p, cudaStream_t stream) {
  if (p.num_seqs > 0) gae_scan_kernel<<<unsigned(p.num_seqs), GAE_THREADS, 0, stream>>>(p);
  return cudaGetLastError();
}

size_t whiten_scratch_bytes(int64_t n) {
  const int64_t blocks = n > 0 ? (n + WHITEN_THREADS - 1) / WHITEN_THREADS : 1;
  return 256 + size_t(blocks) * 3 * sizeof(double);
}

cudaError_t whiten(const WhitenParams& p, void* scratch, cudaStream_t stream) {
  char* base = static_cast<char*>(scratch);
  const WhitenScratch s{reinterpret_cast<unsigned*>(base), reinterpret_cast<double*>(base + 64), reinterpret_cast<double*>(base + 256)};
  const unsigned blocks = unsigned(p.values.size > 0 ? (p.values.size + WHITEN_THREADS - 1) / WHITEN_THREADS : 1);
  cudaError_t err = cudaMemsetAsync(s.tickets, 0, 2 * sizeof(unsigned), stream);
  if (err != cudaSuccess) return err;
  whiten_mean_kernel<<<blocks, WHITEN_THREADS, 0, stream>>>(p, s);
  whiten_var_kernel<<<blocks, WHITEN_THREADS, 0, stream>>>(p, s);
  if (p.values.size > 0) whiten_apply_kernel<<<unsigned((p.values.size + 255) / 256), 256, 0, stream>>>(p, s.stats);
  return cudaGetLastError();
}

cudaError_t group_advantages(const GroupAdvantagesParams& p, cudaStream_t stream) {
  if (p.num_groups > 0) group_kernel<<<unsigned((p.num_groups + 127) / 128), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace rk::gpu
