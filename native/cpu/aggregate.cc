// CPU aggregation weights (DESIGN §1.9); math in src/reference/aggregate.ts.
#include "rlhf/aggregate.h"

#include <algorithm>

namespace rk {

int64_t aggregation_weights(const TokenBatch& b, float* w) {
  auto counted = [&](int64_t t) -> int64_t { return b.mask == nullptr ? 1 : b.mask[t]; };
  int64_t tokens = 0, seqs = 0;
  for (int64_t s = 0; s < b.num_seqs; s++) {
    int64_t n = 0;
    for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++) n += counted(t);
    tokens += n;
    seqs += n > 0;
  }
  const double seq_den = std::max(1.0, is_on(b.global_seqs) ? b.global_seqs : double(seqs));
  const double tok_den = std::max(1.0, is_on(b.global_tokens) ? b.global_tokens : double(tokens));
  const double norm = is_on(b.norm_const) ? b.norm_const : std::max<double>(1.0, double(b.width));
  for (int64_t s = 0; s < b.num_seqs; s++) {
    int64_t n = 0;
    for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++) n += counted(t);
    double ws = 0;
    switch (b.mode) {
      case Aggregation::token_mean: ws = 1.0 / tok_den; break;
      case Aggregation::seq_mean_token_mean: ws = 1.0 / (seq_den * double(std::max<int64_t>(1, n))); break;
      case Aggregation::seq_mean_token_sum: ws = 1.0 / seq_den; break;
      case Aggregation::seq_mean_token_sum_norm: ws = 1.0 / (seq_den * norm); break;
    }
    for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++) w[t] = counted(t) ? float(ws) : 0.f;
  }
  return tokens;
}

}  // namespace rk
