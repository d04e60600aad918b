/**
 * Reference PPO clipped policy loss (DESIGN §1.4), per token t with d = logp − oldLogp:
 *   r      = exp(clamp(d, ±C))                              (C = logRatioClamp, default 20)
 *   L_RL   = min(r A, clip(r, 1 − ε_low, 1 + ε_high) A)
 *   ℓ_t    = −L_RL;  dual clip c > 1: for A < 0, ℓ_t = min(ℓ_t, −c A)
 *   dℓ_t/dlogp = −r A where the unclipped branch is active (and d inside the clamp), else 0
 * The loss is the aggregate of ℓ (§1.9), its gradient w_t · dℓ_t/dlogp.
 */
import type { Aggregation } from '../aggregate.js'
import type { ClipMetrics } from '../options.js'
import type { TokenLayout } from '../tokens.js'
import { aggregationWeights, countValid, type Floats } from './aggregate.js'

export interface PolicyKernelOptions {
  clipLow: number
  clipHigh: number
  dualClip: number | null
  logRatioClamp: number
}

/** What one token contributes; filled by policyToken (a reused record, no allocation per token). */
export interface PolicyTokenState {
  loss: number
  grad: number
  ratio: number
  clippedLow: boolean
  clippedHigh: boolean
  dualClipped: boolean
}

export function newPolicyTokenState(): PolicyTokenState {
  return { loss: 0, grad: 0, ratio: 1, clippedLow: false, clippedHigh: false, dualClipped: false }
}

export function policyToken(logp: number, old: number, A: number, o: PolicyKernelOptions, s: PolicyTokenState): void {
  const d = logp - old
  const C = o.logRatioClamp
  const dc = d > C ? C : d < -C ? -C : d
  const r = Math.exp(dc)
  const lo = 1 - o.clipLow
  const hi = 1 + o.clipHigh
  const surr1 = r * A
  const surr2 = (r < lo ? lo : r > hi ? hi : r) * A
  const clipped = surr2 < surr1
  let loss = -(clipped ? surr2 : surr1)
  let dual = false
  if (o.dualClip !== null && A < 0 && -o.dualClip * A < loss) {
    loss = -o.dualClip * A
    dual = true
  }
  s.loss = loss
  s.grad = clipped || dual || d > C || d < -C ? 0 : -r * A
  s.ratio = r
  s.clippedHigh = clipped && A > 0
  s.clippedLow = clipped && A < 0
  s.dualClipped = dual
}

/** The clip metrics over the counted tokens, shared by policyLoss and ppoLoss. */
export class ClipStats {
  private ratioSum = 0
  private ratioMax = -Infinity
  private low = 0
  private high = 0
  private dual = 0

  add(s: PolicyTokenState): void {
    this.ratioSum += s.ratio
    if (s.ratio > this.ratioMax) this.ratioMax = s.ratio
    if (s.clippedLow) this.low++
    if (s.clippedHigh) this.high++
    if (s.dualClipped) this.dual++
  }

  /** Fractions of the n counted tokens, ratio mean and max (0 when n = 0). */
  result(n: number) {
    const f = n > 0 ? 1 / n : 0
    return {
      clipFraction: (this.low + this.high) * f, clipFractionLow: this.low * f, clipFractionHigh: this.high * f,
      dualClipFraction: this.dual * f, ratioMean: this.ratioSum * f, ratioMax: n > 0 ? this.ratioMax : 0,
    }
  }
}

export interface PolicyKernelResult extends ClipMetrics {
  loss: number
}

export function policyLossKernel(
  logp: Floats, old: Floats, A: Floats, valid: Uint8Array | null, layout: TokenLayout, agg: Aggregation,
  o: PolicyKernelOptions, perToken: Floats, grad: Floats,
): PolicyKernelResult {
  const M = layout.tokens
  const w = new Float64Array(M)
  aggregationWeights(layout, valid, agg, w)
  const s = newPolicyTokenState()
  const stats = new ClipStats()
  let loss = 0, kl = 0
  for (let t = 0; t < M; t++) {
    if (valid !== null && !valid[t]) {
      perToken[t] = 0
      grad[t] = 0
      continue
    }
    policyToken(logp[t], old[t], A[t], o, s)
    perToken[t] = s.loss
    grad[t] = w[t] * s.grad
    loss += w[t] * s.loss
    kl += w[t] * (old[t] - logp[t])
    stats.add(s)
  }
  const n = countValid(valid, M)
  return { loss, count: n, approxKl: kl, ...stats.result(n) }
}
