// CPU value loss (DESIGN §1.6); math in native/include/rlhf/value.h (value_token).
#include "rlhf/value.h"

#include <vector>

#include "rlhf/aggregate.h"

namespace rk {

ValueLossResult value_loss(const ValueLossParams& p) {
  const TokenBatch& b = p.batch;
  std::vector<float> w(size_t(b.tokens));
  const int64_t count = aggregation_weights(b, w.data());
  KahanSum loss;
  int64_t clipped = 0;
  for (int64_t t = 0; t < b.tokens; t++) {
    if (b.mask && !b.mask[t]) {
      p.per_token[t] = 0.f;
      p.grad[t] = 0.f;
      continue;
    }
    float l, g;
    const float old = p.old_values.present() ? read(p.old_values, t) : 0.f;
    clipped += value_token(read(p.values, t), read(p.returns, t), old, p.opts, l, g);
    p.per_token[t] = l;
    p.grad[t] = w[t] * g;
    loss.add(w[t] * l);
  }
  return {loss.value(), count > 0 ? float(double(clipped) / double(count)) : 0.f};
}

}  // namespace rk
