// CPU advantage estimators (DESIGN §1.8); math in src/reference/advantages.ts. GAE's recursion runs in
// float32, backwards through each sequence; the statistics of whiten and group_advantages in double.
#include "rlhf/advantages.h"

#include <algorithm>
#include <cmath>

namespace rk {

void gae(const GaeParams& p) {
  for (int64_t s = 0; s < p.num_seqs; s++) gae_sequence(p, s);
}

// The statistics of whiten and group_advantages are summed, and the values centred, in double: a float32
// mean of rewards 5 ± 0.005 is off by 2.4e-7, which whitening turns into 5e-5 on values of size 1.
void whiten(const WhitenParams& p) {
  const int64_t N = p.values.size;
  auto counted = [&](int64_t i) { return p.mask == nullptr || p.mask[i]; };
  double sum = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < N; i++) if (counted(i)) { sum += read(p.values, i); n++; }
  const double mean = n > 0 ? sum / double(n) : 0.0;
  double ss = 0;
  for (int64_t i = 0; i < N; i++) if (counted(i)) { const double d = read(p.values, i) - mean; ss += d * d; }
  const int64_t den = p.unbiased ? n - 1 : n;
  const double var = (n >= 2 && den > 0) ? ss / double(den) : 0.0;
  const double inv = 1.0 / std::sqrt(var + p.eps);
  for (int64_t i = 0; i < N; i++) {
    p.out[i] = counted(i) ? float((read(p.values, i) - mean) * inv + (p.shift_mean ? 0.0 : mean)) : 0.f;
  }
}

void group_advantages(const GroupAdvantagesParams& p) {
  for (int64_t g = 0; g < p.num_groups; g++) {
    const int64_t a = p.offsets[g], K = p.offsets[g + 1] - a;
    if (K < 2) {
      std::fill(p.out + a, p.out + a + K, 0.f);
      continue;
    }
    double sum = 0;
    for (int64_t i = 0; i < K; i++) sum += read(p.scores, a + i);
    const double mean = sum / double(K);
    double ss = 0;
    for (int64_t i = 0; i < K; i++) { const double d = read(p.scores, a + i) - mean; ss += d * d; }
    const double sd = std::sqrt(ss / double(p.unbiased ? K - 1 : K));
    for (int64_t i = 0; i < K; i++) {
      const double r = read(p.scores, a + i);
      p.out[a + i] = float(p.method == GroupMethod::rloo ? r - (sum - r) / double(K - 1)
                         : p.method == GroupMethod::mean_centered ? r - mean
                         : (r - mean) / (sd + p.eps));
    }
  }
}

}  // namespace rk
