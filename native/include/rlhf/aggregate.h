// Aggregation weights (DESIGN §1.9): loss = Σ_t w_t x_t and d loss / d x_t = w_t, w_t = 0 where masked.
// Math in src/reference/aggregate.ts.
#pragma once
#include "common.h"

namespace rk {

// Fills w[tokens]; returns the number of counted tokens.
int64_t aggregation_weights(const TokenBatch& b, float* w);

}  // namespace rk
