// Aggregation weights (DESIGN §1.9): loss = Σ_t w_t x_t and d loss / d x_t = w_t, w_t = 0 where masked.
// Math in src/reference/aggregate.ts.
#pragma once
#include <algorithm>
#include <cstring>
#include "common.h"

namespace rk {

// The bytes of p[0, n) that are nonzero: the tokens a mask counts (a byte counts where it is nonzero, whatever
// its value; see native/addon/args.h on masks read in place).
int64_t count_nonzero(const uint8_t* p, int64_t n);

// The L = sizeof(I) / 4 mask bytes from p as the int32 lanes of I: −1 where the byte is nonzero, else 0 (L a
// multiple of 4). Each 32-bit word of the bytes is broadcast to its four lanes and each lane keeps its own
// byte (an AND, a compare): a broadcast and three vector instructions, where converting a vector of bytes
// to int32 lanes (__builtin_convertvector) compiles to a scalar insert per byte.
template <typename I>
inline I mask_lanes(const uint8_t* p) {
  constexpr int L = int(sizeof(I) / 4);
  static_assert(L % 4 == 0, "whole 32-bit words of mask bytes");
  uint32_t w[L / 4];
  std::memcpy(w, p, sizeof w);
  I x, byte;
  for (int l = 0; l < L; l++) x[l] = int32_t(w[l / 4]), byte[l] = int32_t(0xffu << (8 * (l % 4)));
  return (x & byte) != 0;
}

// ws[s]: the weight of each counted token of sequence s (w_t = ws[s], or 0 where masked), for every
// sequence; returns the number of counted tokens. The one place the aggregation's weights are formed.
int64_t sequence_weights(const TokenBatch& b, float* ws);

// Fills w[tokens] from sequence_weights; returns the number of counted tokens.
int64_t aggregation_weights(const TokenBatch& b, float* w);

// Tokens [t0, t1) as the runs that lie in one sequence: f(begin, end, s) for each, in token order.
template <class F>
void for_sequence_runs(const TokenBatch& b, int64_t t0, int64_t t1, F&& f) {
  if (t0 >= t1) return;
  // the sequence holding t0: the last with offsets[s] ≤ t0 (an empty sequence before it has the same offset)
  int64_t s = std::upper_bound(b.offsets, b.offsets + b.num_seqs + 1, int64_t(t0), [](int64_t t, int32_t o) { return t < o; }) - b.offsets - 1;
  for (int64_t t = t0; t < t1 && s < b.num_seqs; s++) {
    const int64_t e = std::min<int64_t>(t1, b.offsets[s + 1]);
    if (e > t) f(t, e, s), t = e;
  }
}

// Per-token sums of one block of tokens, in double, added afterwards in block order (results do not depend
// on the thread count).
constexpr int64_t TOKEN_BLOCK = 4096;

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
