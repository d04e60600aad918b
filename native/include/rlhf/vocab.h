// Vocabulary kernels (DESIGN §1.1, §1.2): log-probs of the taken token with entropy, their backward, and
// cross-entropy, over logits [N, V]. Math in src/reference/vocab.ts; the CPU version is native/cpu/vocab.cc.
#pragma once
#include "common.h"

namespace rk {

// What every vocabulary op reads first: logits [N, V], targets [N] in [0, V) or ignore_index, and the
// temperature (one T, or row n's from temperatures; the logits are divided by it)
struct VocabRowParams {
  FloatIn logits;
  int64_t N = 0, V = 0;
  const int32_t* targets = nullptr;
  int32_t ignore_index = -100;
  double temperature = 1.0;
  const float* temperatures = nullptr;  // [N] or null: row n's T, in place of temperature
};

struct LogProbsParams : VocabRowParams {
  float* logp = nullptr;     // [N]
  float* lse = nullptr;      // [N]
  float* entropy = nullptr;  // [N] or null
  // row statistics from the same pass (src/reference/vocab.ts): Σ_v p_v², max_v p_v and the first token of the
  // largest logit (as a float32: exact below 2^24; −1 on ignored rows and rows holding NaN); each [N] or null
  float* sum_prob_sq = nullptr;
  float* max_prob = nullptr;
  float* max_token = nullptr;
};
void log_probs(const LogProbsParams& p);

struct LogProbsBackwardParams : VocabRowParams {
  FloatIn lse;           // [N]
  FloatIn grad_logp;     // [N] or absent
  FloatIn grad_entropy;  // [N] or absent
  FloatIn entropy;       // [N] or absent (recomputed where grad_entropy is given)
  FloatIn grad_sum_prob_sq;  // [N] or absent: d/d(Σ p²), adding 2 g p (p − Σ p²)/T
  FloatIn sum_prob_sq;       // [N] or absent (recomputed where grad_sum_prob_sq is given)
  float* grad = nullptr; // [N, V]
};
void log_probs_backward(const LogProbsBackwardParams& p);

// with T: the loss of z/T, and its gradient 1/T times the gradient in z/T
struct CrossEntropyParams : VocabRowParams {
  Reduction reduction = Reduction::mean;
  float label_smoothing = 0.f;
  float z_loss = 0.f;
  FloatIn class_weights;  // [V] or absent
  FloatIn token_weights;  // [N] or absent
  float* losses = nullptr;  // [N]
  float* lse = nullptr;     // [N]
  float* grad = nullptr;    // [N, V] or null
  uint16_t* grad16 = nullptr;  // [N, V] in the logits' 16-bit dtype instead (gradDtype 'input'), or null
};
#define RK_CROSS_ENTROPY_FIELDS(X) X("loss", float, loss) X("count", int64_t, count)
struct CrossEntropyResult {
  RK_CROSS_ENTROPY_FIELDS(RK_RESULT_MEMBER)
};
CrossEntropyResult cross_entropy(const CrossEntropyParams& p);

// Kept-set log-probs (sampling replay; math in src/reference/vocab.ts keptLogProbsKernel): z_y/T − log Σ_{v∈K}
// exp(z_v/T), −inf for y ∉ K; gradient g (onehot_y − p^K)/T on K, 0 elsewhere. K per row from keep_offsets /
// keep_tokens (CSR, each row strictly increasing), else from top_k / top_p / min_p (vLLM's order: min-p,
// top-k, top-p), on both backends through one cut (below).
struct KeptLogProbsParams : VocabRowParams {
  const int32_t* keep_offsets = nullptr;  // [N + 1] or null
  const int32_t* keep_tokens = nullptr;
  const int32_t* top_k = nullptr;  // [N] (0: off), with top_p and min_p, when keep_offsets is null
  const float* top_p = nullptr;    // [N] (1: off)
  const float* min_p = nullptr;    // [N] (0: off)
  FloatIn grad_logp;      // [N] or absent
  float* logp = nullptr;  // [N]
  float* lse = nullptr;   // [N]
  float* grad = nullptr;  // [N, V] or null
};
void kept_log_probs(const KeptLogProbsParams& p);

// The kept set of the sampling parameters as one cut (native/cpu/vocab.cc sampling_kept, native/cuda/kept.cu).
// Each rule keeps a suffix of the row's finite logits in the order of the key (z_v, v): min-p keeps z ≥ the
// smallest z with exp((z − max)·invT) ≥ m, top-k z ≥ the k-th largest (ties kept), and top-p, which sorts the
// survivors ascending by (z, v) and drops the prefix whose cumulative mass is ≤ (1 − p) of the total (never the
// last), a suffix from some (z_c, v_c). So K = {v : z_v finite, (key(z_v), v) ≥ (key, index)}.
struct KeptCut {
  uint32_t key = 0xffffffffu;  // the order key (kept_order_key) of the smallest kept logit
  int64_t index = 0;           // among the logits whose key equals `key`, the first kept index
};
// An order-preserving key of a non-NaN float (a < b ⇔ key(a) < key(b); −0 is +0, as the rules compare values).
RK_HD inline uint32_t kept_order_key(float z) {
  uint32_t b;
#if defined(__CUDA_ARCH__)
  b = __float_as_uint(z);
#else
  std::memcpy(&b, &z, 4);
#endif
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}
// The float of a key (its inverse).
RK_HD inline float kept_key_value(uint32_t k) {
  const uint32_t b = (k & 0x80000000u) ? k & 0x7fffffffu : ~k;
  float z;
#if defined(__CUDA_ARCH__)
  z = __uint_as_float(b);
#else
  std::memcpy(&z, &b, 4);
#endif
  return z;
}
// The smallest key min-p and top-k can leave: one above −inf's.
constexpr uint32_t kKeptFiniteKey = 0x00800000u;
// Top-p's masses in 64-bit fixed point: q_v = round(exp((z_v − max)·invT)·2^F) ≤ 2^F, F = 62 − bit length of V,
// so that Σ q over a row stays below 2^62. Integer sums are exact in any order (the CUDA histograms add them
// with atomics and stay deterministic); a mass is resolved to 2^−F of the largest's (2^−45 at V = 131072).
RK_HD inline int kept_mass_bits(int64_t V) {
  int bits = 0;
  for (uint64_t v = uint64_t(V); v != 0; v >>= 1) bits++;
  return 62 - bits;
}

}  // namespace rk
