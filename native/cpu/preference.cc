// CPU kernels of the preference family (README "Preference losses"); math in src/reference/preference.ts. Sequences and
// prompts are spread over the thread pool; batch sums are taken afterwards in prompt order.
#include "rlhf/preference.h"

#include <vector>

#include "parallel.h"

namespace rk {

namespace {

// Sequences [begin, end): the counted tokens' sum in double (so that the sum's order, here and on the GPU,
// does not show in the float32 result), its count, and the gradient gradSeq_s · dS_s/dlogp_t.
template <typename T>
void sequence_range(const SequenceLogProbsParams& p, int64_t begin, int64_t end) {
  const T* logp = static_cast<const T*>(p.logp.data);
  const TokenBatch& b = p.batch;
  for (int64_t s = begin; s < end; s++) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++) {
      if (b.mask && !b.mask[t]) continue;
      sum += double(load(logp, t));
      count++;
    }
    const double scale = p.mean ? 1.0 / double(count > 1 ? count : 1) : 1.0;
    p.seq_logp[s] = float(sum * scale);
    p.lengths[s] = float(count);
    if (!p.grad_logp) continue;
    const float g = float(double(read(p.grad_seq, s)) * scale);
    for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++) p.grad_logp[t] = b.mask && !b.mask[t] ? 0.f : g;
  }
}

}  // namespace

void sequence_log_probs(const SequenceLogProbsParams& p) {
  dispatch_dtype(p.logp.dtype, [&]<typename T>() {
    parallel_for(p.batch.num_seqs, 64, [&](int64_t b, int64_t e) { sequence_range<T>(p, b, e); });
  });
}

PreferenceLossResult preference_loss(const PreferenceLossParams& p) {
  double count = 0;
  for (int64_t n = 0; n < p.N; n++) count += preference_counted(p, n);
  const double scale = preference_scale(p.reduction, count);
  const size_t total = size_t(p.N > 0 ? p.offsets[p.N] : 0);
  std::vector<double> u(total), du(total), lse(total);
  std::vector<int32_t> order(total);
  const PreferenceWork w{u.data(), du.data(), lse.data(), order.data()};
  std::vector<PreferenceTerms> terms(static_cast<size_t>(p.N));
  parallel_for(p.N, 1024, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; n++) terms[size_t(n)] = preference_prompt(p, n, scale, w);
  });
  PreferenceTerms sum;  // in prompt order, whatever the thread count
  for (const PreferenceTerms& t : terms) {
    sum.loss += t.loss;
    sum.chosen += t.chosen;
    sum.rejected += t.rejected;
    sum.correct += t.correct;
  }
  return preference_totals(count, sum, scale);
}

}  // namespace rk
