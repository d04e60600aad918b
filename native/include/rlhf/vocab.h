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
// top-k, top-p; cpu only).
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

}  // namespace rk
