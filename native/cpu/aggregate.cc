// CPU aggregation weights (DESIGN §1.9); math in src/reference/aggregate.ts.
#include "rlhf/aggregate.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "scratch.h"

namespace rk {

int64_t count_nonzero(const uint8_t* p, int64_t n) {
  typedef uint8_t v16 __attribute__((vector_size(16)));
  constexpr int64_t step = 16, run = 255 * step;  // a byte counter takes at most 255 steps: it never wraps
  int64_t count = 0, i = 0;
  while (i + step <= n) {
    v16 acc = {};
    const int64_t end = std::min(n - (n - i) % step, i + run);
    for (; i < end; i += step) {
      v16 v;
      std::memcpy(&v, p + i, sizeof v);
      acc -= (v16)(v != 0);  // −1 in each nonzero byte
    }
    for (int l = 0; l < step; l++) count += acc[l];
  }
  for (; i < n; i++) count += p[i] != 0;
  return count;
}

int64_t sequence_weights(const TokenBatch& b, float* ws) {
  SmallArray<int64_t> counts(static_cast<size_t>(b.num_seqs));
  int64_t tokens = 0, seqs = 0;
  for (int64_t s = 0; s < b.num_seqs; s++) {
    const int64_t begin = b.offsets[s], end = b.offsets[s + 1];
    int64_t n = end - begin;
    if (b.mask) n = count_nonzero(b.mask + begin, n);
    counts[size_t(s)] = n;
    tokens += n;
    seqs += n > 0;
  }
  const double seq_den = std::max(1.0, is_on(b.global_seqs) ? b.global_seqs : double(seqs));
  const double tok_den = std::max(1.0, is_on(b.global_tokens) ? b.global_tokens : double(tokens));
  const double norm = is_on(b.norm_const) ? b.norm_const : std::max<double>(1.0, double(b.width));
  for (int64_t s = 0; s < b.num_seqs; s++) {
    const int64_t n = counts[size_t(s)];
    double w = 0;
    switch (b.mode) {
      case Aggregation::token_mean: w = 1.0 / tok_den; break;
      case Aggregation::seq_mean_token_mean: w = 1.0 / (seq_den * double(std::max<int64_t>(1, n))); break;
      case Aggregation::seq_mean_token_sum: w = 1.0 / seq_den; break;
      case Aggregation::seq_mean_token_sum_norm: w = 1.0 / (seq_den * norm); break;
    }
    ws[s] = float(w);
  }
  return tokens;
}

int64_t aggregation_weights(const TokenBatch& b, float* w) {
  SmallArray<float> ws(static_cast<size_t>(b.num_seqs));
  const int64_t tokens = sequence_weights(b, ws.data());
  for (int64_t s = 0; s < b.num_seqs; s++) {
    for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++) w[t] = b.mask == nullptr || b.mask[t] ? ws[size_t(s)] : 0.f;
  }
  return tokens;
}

}  // namespace rk
