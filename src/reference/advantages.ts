/**
 * Reference advantage estimators (DESIGN §1.8).
 *
 * GAE per sequence, backwards in time: δ_t = r_t + γ V_{t+1} − V_t, A_t = δ_t + γλ A_{t+1}, returns A + V.
 * Mask-aware as verl: a masked token (e.g. a tool observation inside a response) carries the next value and
 * the running advantage through unchanged; its own outputs are 0 and its data is never read.
 * whiten: (x − mean) / sqrt(var + eps) over unmasked values (unbiased variance; fewer than two values → 0).
 * groupAdvantages over ragged groups: grpo (r − mean)/(std + eps), rloo r − mean of the others, mean-centered
 * r − mean; a singleton group gives 0.
 */
import type { Floats } from './aggregate.js'

export function gaeKernel(
  rewards: Floats, values: Floats, valid: Uint8Array | null, offsets: Int32Array, lastValues: Floats | null,
  gamma: number, lambda: number, advantages: Floats, returns: Floats,
): void {
  const S = offsets.length - 1
  for (let s = 0; s < S; s++) {
    let next = lastValues === null ? 0 : lastValues[s]
    let gae = 0
    for (let t = offsets[s + 1] - 1; t >= offsets[s]; t--) {
      if (valid !== null && !valid[t]) {
        advantages[t] = 0
        returns[t] = 0
        continue
      }
      const v = values[t]
      gae = rewards[t] + gamma * next - v + gamma * lambda * gae
      next = v
      advantages[t] = gae
      returns[t] = gae + v
    }
  }
}

export function whitenKernel(
  x: Floats, valid: Uint8Array | null, shiftMean: boolean, unbiased: boolean, eps: number, out: Floats,
): void {
  const N = x.length
  let n = 0
  let sum = 0
  for (let i = 0; i < N; i++) if (valid === null || valid[i]) { n++; sum += x[i] }
  const mean = n > 0 ? sum / n : 0
  let ss = 0
  for (let i = 0; i < N; i++) if (valid === null || valid[i]) ss += (x[i] - mean) * (x[i] - mean)
  const den = unbiased ? n - 1 : n
  const variance = n >= 2 && den > 0 ? ss / den : 0
  const inv = 1 / Math.sqrt(variance + eps)
  for (let i = 0; i < N; i++) {
    out[i] = valid === null || valid[i] ? (x[i] - mean) * inv + (shiftMean ? 0 : mean) : 0
  }
}

export type GroupMethod = 'grpo' | 'rloo' | 'mean-centered'

export function groupAdvantagesKernel(
  scores: Floats, offsets: Int32Array, method: GroupMethod, eps: number, unbiased: boolean, out: Floats,
): void {
  const G = offsets.length - 1
  for (let g = 0; g < G; g++) {
    const a = offsets[g]
    const K = offsets[g + 1] - a
    if (K < 2) {
      out.fill(0, a, a + K)
      continue
    }
    let sum = 0
    for (let i = 0; i < K; i++) sum += scores[a + i]
    const mean = sum / K
    if (method === 'rloo') {
      for (let i = 0; i < K; i++) out[a + i] = scores[a + i] - (sum - scores[a + i]) / (K - 1)
      continue
    }
    if (method === 'mean-centered') {
      for (let i = 0; i < K; i++) out[a + i] = scores[a + i] - mean
      continue
    }
    let ss = 0
    for (let i = 0; i < K; i++) ss += (scores[a + i] - mean) * (scores[a + i] - mean)
    const std = Math.sqrt(ss / (unbiased ? K - 1 : K))
    for (let i = 0; i < K; i++) out[a + i] = (scores[a + i] - mean) / (std + eps)
  }
}
