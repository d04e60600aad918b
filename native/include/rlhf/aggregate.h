// Aggregation weights (DESIGN §1.9): loss = Σ_t w_t x_t and d loss / d x_t = w_t, w_t = 0 where masked.
// Math in src/reference/aggregate.ts.
#pragma once
#include "common.h"

namespace rk {

// Fills w[tokens]; returns the number of counted tokens.
int64_t aggregation_weights(const TokenBatch& b, float* w);

// The aggregated loss of a per-token op (math in src/reference/aggregate.ts tokenLoss): token(t, l, g) gives
// counted token t's loss l and d l / d x_t g (never called for a masked token); per_token[t] = l and
// grad[t] = w_t g, both 0 where masked; returns Σ_t w_t l (Kahan-summed in token order).
template <class Token>
float token_loss(const TokenBatch& b, const float* w, float* per_token, float* grad, Token&& token) {
  KahanSum loss;
  for (int64_t t = 0; t < b.tokens; t++) {
    if (b.mask && !b.mask[t]) {
      per_token[t] = 0.f;
      grad[t] = 0.f;
      continue;
    }
    float l, g;
    token(t, l, g);
    per_token[t] = l;
    grad[t] = w[t] * g;
    loss.add(w[t] * l);
  }
  return loss.value();
}

}  // namespace rk
