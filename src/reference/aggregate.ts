/**
 * Reference aggregation (DESIGN §1.9): the weight w_t of every token in the aggregated loss, so that
 * loss = Σ_t w_t x_t and d loss / d x_t = w_t. One mechanism gives the value and the gradient of every mode.
 * Masked tokens get weight 0 and their values are never read.
 */
import type { Aggregation } from '../aggregate.js'
import type { TokenLayout } from '../tokens.js'

export type Floats = Float32Array | Float64Array

/** Fills `w` (length = tokens) with each token's weight in the aggregate. */
export function aggregationWeights(layout: TokenLayout, valid: Uint8Array | null, agg: Aggregation, w: Float64Array): void {
  const { offsets } = layout
  const S = offsets.length - 1
  let tokens = 0
  let seqs = 0
  for (let s = 0; s < S; s++) {
    let n = 0
    for (let t = offsets[s]; t < offsets[s + 1]; t++) n += valid === null ? 1 : valid[t]
    tokens += n
    if (n > 0) seqs++
  }
  const seqDen = Math.max(1, agg.globalSeqCount ?? seqs)
  const tokDen = Math.max(1, agg.globalTokenCount ?? tokens)
  const norm = agg.normConst ?? Math.max(1, layout.width)
  for (let s = 0; s < S; s++) {
    let n = 0
    for (let t = offsets[s]; t < offsets[s + 1]; t++) n += valid === null ? 1 : valid[t]
    let ws: number
    switch (agg.mode) {
      case 'token-mean': ws = 1 / tokDen; break
      case 'seq-mean-token-mean': ws = 1 / (seqDen * Math.max(1, n)); break
      case 'seq-mean-token-sum': ws = 1 / seqDen; break
      case 'seq-mean-token-sum-norm': ws = 1 / (seqDen * norm); break
    }
    for (let t = offsets[s]; t < offsets[s + 1]; t++) w[t] = valid === null || valid[t] ? ws : 0
  }
}

/**
 * The aggregated loss of a per-token op whose counted token t gives its loss s[0] and d loss_t / d x_t s[1]
 * (`token(t, s)`, never called for a masked token): perToken[t] = s[0], grad[t] = w_t s[1], both 0 where
 * masked; returns Σ_t w_t s[0] (klPenalty, valueLoss).
 */
export function tokenLoss(
  layout: TokenLayout, valid: Uint8Array | null, agg: Aggregation, perToken: Floats, grad: Floats,
  token: (t: number, s: Float64Array) => void,
): number {
  const M = layout.tokens
  const w = new Float64Array(M)
  aggregationWeights(layout, valid, agg, w)
  const s = new Float64Array(2)
  let loss = 0
  for (let t = 0; t < M; t++) {
    if (valid !== null && !valid[t]) {
      perToken[t] = 0
      grad[t] = 0
      continue
    }
    token(t, s)
    perToken[t] = s[0]
    grad[t] = w[t] * s[1]
    loss += w[t] * s[0]
  }
  return loss
}

/** Σ_t w_t x_t over tokens with w_t ≠ 0 (a masked NaN is never read). */
export function weightedSum(w: Float64Array, x: ArrayLike<number>): number {
  let sum = 0
  for (let t = 0; t < w.length; t++) if (w[t] !== 0) sum += w[t] * x[t]
  return sum
}

/** Number of counted tokens (mask nonzero). */
export function countValid(valid: Uint8Array | null, n: number): number {
  if (valid === null) return n
  let c = 0
  for (let i = 0; i < n; i++) c += valid[i]
  return c
}
