// CPU advantage estimators (DESIGN §1.8); math in src/reference/advantages.ts. GAE's recursion runs in
// float32, backwards through each sequence; the masked statistics use compensated sums.
#include "rlhf/advantages.h"

#include <algorithm>
#include <cmath>

namespace rk {

void gae(const GaeParams& p) {
  for (int64_t s = 0; s < p.num_seqs; s++) gae_sequence(p, s);
}

void whiten(const WhitenParams& p) {
  const int64_t N = p.values.size;
  auto counted = [&](int64_t i) { return p.mask == nullptr || p.mask[i]; };
  KahanSum sum;
  int64_t n = 0;
  for (int64_t i = 0; i < N; i++) if (counted(i)) { sum.add(read(p.values, i)); n++; }
  const float mean = n > 0 ? sum.value() / float(n) : 0.f;
  KahanSum ss;
  for (int64_t i = 0; i < N; i++) if (counted(i)) { const float d = read(p.values, i) - mean; ss.add(d * d); }
  const int64_t den = p.unbiased ? n - 1 : n;
  const float var = (n >= 2 && den > 0) ? ss.value() / float(den) : 0.f;
  const float inv = 1.f / std::sqrt(var + p.eps);
  for (int64_t i = 0; i < N; i++) {
    p.out[i] = counted(i) ? (read(p.values, i) - mean) * inv + (p.shift_mean ? 0.f : mean) : 0.f;
  }
}

void group_advantages(const GroupAdvantagesParams& p) {
  for (int64_t g = 0; g < p.num_groups; g++) {
    const int64_t a = p.offsets[g], K = p.offsets[g + 1] - a;
    if (K < 2) {
      std::fill(p.out + a, p.out + a + K, 0.f);
      continue;
    }
    KahanSum s;
    for (int64_t i = 0; i < K; i++) s.add(read(p.scores, a + i));
    const float sum = s.value(), mean = sum / float(K);
    if (p.method == GroupMethod::rloo) {
      for (int64_t i = 0; i < K; i++) {
        const float r = read(p.scores, a + i);
        p.out[a + i] = r - (sum - r) / float(K - 1);
      }
      continue;
    }
    if (p.method == GroupMethod::mean_centered) {
      for (int64_t i = 0; i < K; i++) p.out[a + i] = read(p.scores, a + i) - mean;
      continue;
    }
    KahanSum ss;
    for (int64_t i = 0; i < K; i++) { const float d = read(p.scores, a + i) - mean; ss.add(d * d); }
    const float sd = std::sqrt(ss.value() / float(p.unbiased ? K - 1 : K));
    for (int64_t i = 0; i < K; i++) p.out[a + i] = (read(p.scores, a + i) - mean) / (sd + p.eps);
  }
}

}  // namespace rk
