// CUDA kernels of the preference family (README "Preference losses"); math in src/reference/preference.ts.
// sequenceLogProbs: one block per sequence; each thread sums its strided tokens in double, then a fixed-order
// block sum (common.cuh): the order differs from the CPU's, but a double sum rounded to float32 does not
// show it. Then the block writes the gradient of its tokens.
// preferenceLoss: one thread per prompt running the per-prompt math the CPU kernel runs (rlhf/preference.h,
// in double); two launches, each a grid with a last-block-done reduction (grid_sum, in double): the counted
// prompts (the mean's denominator), then the per-prompt terms and the batch result. Deterministic: fixed-order
// sums, no float atomics.
#include "common.cuh"
#include "rlhf/cuda_ops.h"

namespace rk::gpu {
namespace {

constexpr int SEQ_THREADS = 256;

template <typename T>
__global__ void __launch_bounds__(SEQ_THREADS, blocks_within(SEQ_THREADS, 64)) sequence_kernel(SequenceLogProbsParams p) {
  const TokenBatch& b = p.batch;
  const int64_t s = blockIdx.x, begin = b.offsets[s], end = b.offsets[s + 1];
  const T* logp = static_cast<const T*>(p.logp.data);
  double sum = 0, count = 0;
  for (int64_t t = begin + threadIdx.x; t < end; t += blockDim.x) {
    if (b.mask && !b.mask[t]) continue;  // a device mask counts where nonzero
    sum += double(to_float(logp[t]));
    count += 1;
  }
  sum = block_sum(sum);
  count = block_sum(count);
  const double scale = p.mean ? 1.0 / fmax(1.0, count) : 1.0;
  if (threadIdx.x == 0) {
    p.seq_logp[s] = float(sum * scale);
    p.lengths[s] = float(count);
  }
  if (!p.grad_logp) return;
  const float g = float(double(read(p.grad_seq, s)) * scale);
  for (int64_t t = begin + threadIdx.x; t < end; t += blockDim.x) p.grad_logp[t] = b.mask && !b.mask[t] ? 0.f : g;
}

constexpr int PREF_THREADS = 128;

// Scratch: two tickets, the blocks' partial sums (count; loss, chosen, rejected, correct), the per-candidate
// working space.
struct PreferenceScratch {
  unsigned* tickets;
  double* partials;
  PreferenceWork work;
};

int64_t preference_blocks(int64_t N) { return N > 0 ? (N + PREF_THREADS - 1) / PREF_THREADS : 1; }

PreferenceScratch preference_scratch(const PreferenceLossParams& p, void* scratch) {
  char* base = static_cast<char*>(scratch);
  const int64_t blocks = preference_blocks(p.N), total = p.logp.size;
  double* partials = reinterpret_cast<double*>(base + 256);
  double* work = partials + blocks * 5;
  return {reinterpret_cast<unsigned*>(base), partials, {work, work + total, work + 2 * total, reinterpret_cast<int32_t*>(work + 3 * total)}};
}

__global__ void __launch_bounds__(PREF_THREADS) preference_count_kernel(PreferenceLossParams p, PreferenceScratch s, float* result) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const double c[1] = {n < p.N && preference_counted(p, n) ? 1.0 : 0.0};
  grid_sum(c, s.partials, s.tickets, [&](const double* total) { result[PreferenceSlot::count] = float(total[0]); });
}

__global__ void __launch_bounds__(PREF_THREADS) preference_prompt_kernel(PreferenceLossParams p, PreferenceScratch s, float* result) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const double count = result[PreferenceSlot::count];
  const double scale = preference_scale(p.reduction, count);
  PreferenceTerms t;
  if (n < p.N) t = preference_prompt(p, n, scale, s.work);
  const double v[4] = {t.loss, t.chosen, t.rejected, t.correct};
  grid_sum(v, s.partials + gridDim.x, s.tickets + 1, [&](const double* total) {
    PreferenceTerms sum;
    sum.loss = total[0];
    sum.chosen = total[1];
    sum.rejected = total[2];
    sum.correct = total[3];
    const PreferenceLossResult r = preference_totals(count, sum, scale);
    result[PreferenceSlot::loss] = r.loss;
    result[PreferenceSlot::accuracy] = r.accuracy;
    result[PreferenceSlot::chosen_reward] = r.chosen_reward;
    result[PreferenceSlot::rejected_reward] = r.rejected_reward;
    result[PreferenceSlot::margin] = r.margin;
  });
}

}  // namespace

cudaError_t sequence_log_probs(const SequenceLogProbsParams& p, cudaStream_t stream) {
  if (p.batch.num_seqs == 0) return cudaSuccess;
  dispatch_dtype(p.logp.dtype, [&]<typename T>() { sequence_kernel<T><<<unsigned(p.batch.num_seqs), SEQ_THREADS, 0, stream>>>(p); });
  return cudaGetLastError();
}

size_t preference_scratch_bytes(const PreferenceLossParams& p) {
  return 256 + size_t(preference_blocks(p.N)) * 5 * sizeof(double) + size_t(p.logp.size) * (3 * sizeof(double) + sizeof(int32_t));
}

cudaError_t preference_loss(const PreferenceLossParams& p, float* result, void* scratch, cudaStream_t stream) {
  const PreferenceScratch s = preference_scratch(p, scratch);
  const unsigned blocks = unsigned(preference_blocks(p.N));
  cudaError_t err = cudaMemsetAsync(s.tickets, 0, 2 * sizeof(unsigned), stream);
  if (err != cudaSuccess) return err;
  preference_count_kernel<<<blocks, PREF_THREADS, 0, stream>>>(p, s, result);
  preference_prompt_kernel<<<blocks, PREF_THREADS, 0, stream>>>(p, s, result);
  return cudaGetLastError();
}

}  // namespace rk::gpu
