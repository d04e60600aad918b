/**
 * Reference KL divergences (DESIGN §1.5).
 *
 * (a) Full vocabulary, per row: KL(p‖q) = Σ_v p_v (log p_v − log q_v), p = softmax(pLogits), q = softmax(qLogits).
 *     d/dq-logits = q − p;  d/dp-logits = p (log p − log q − KL). A p_v = 0 term contributes 0 (xlogy).
 * (b) Sampled-token estimators from δ = logp − refLogp (clamped to ±C before exp):
 *     k1 δ (grad 1), abs |δ| (sign δ), k2 ½δ² (δ), k3 exp(−δ) + δ − 1 (1 − exp(−δ)),
 *     then an optional output clamp to ±κ (verl/OpenRLHF use κ = 10); a clamp that binds has zero gradient.
 */
import type { Aggregation } from '../aggregate.js'
import type { KlEstimator, Reduction } from '../choices.js'
import { type Temperature, invTemperature } from '../options.js'
import type { TokenLayout } from '../tokens.js'
import { exp } from './exp.js'
import { type Floats, tokenLoss } from './aggregate.js'
import { rowLse } from './vocab.js'


/**
 * One term p (log p − log q) of a KL, xlogy: 0 where p = 0, and +inf wherever log p − log q is (q = 0 under a
 * finite p logit), however small p is: an underflowed p must not hide an infinite KL.
 */
export function klTerm(p: number, logRatio: number): number {
  return logRatio === Infinity ? Infinity : p !== 0 ? p * logRatio : 0
}

/**
 * KL(p‖q) of one row pair given both lse; optionally the gradients (times `scale`) into gq / gp. A NaN in
 * either row makes the row NaN; else a p without mass (all −inf) gives KL 0, and a q without mass KL +inf,
 * both with zero gradients; an infinite KL (p > 0 where q = 0) has gradient 0 wrt p.
 */
export function klRow(
  zp: Floats, zq: Floats, base: number, V: number, invT: number, lseP: number, lseQ: number,
  scale: number, gq: Floats | null, gp: Floats | null,
): number {
  if (lseP !== lseP || lseQ !== lseQ || lseP === -Infinity || lseQ === -Infinity) {
    const value = lseP !== lseP || lseQ !== lseQ ? NaN : lseP === -Infinity ? 0 : Infinity
    const g = value === value ? 0 : NaN
    gq?.fill(g, base, base + V)
    gp?.fill(g, base, base + V)
    return value
  }
  let kl = 0
  for (let v = 0; v < V; v++) {
    const lp = zp[base + v] * invT - lseP
    const p = exp(lp)
    kl += klTerm(p, lp - (zq[base + v] * invT - lseQ))
  }
  if (gq !== null) {
    for (let v = 0; v < V; v++) {
      gq[base + v] = scale * invT * (exp(zq[base + v] * invT - lseQ) - exp(zp[base + v] * invT - lseP))
    }
  }
  if (gp !== null) {
    for (let v = 0; v < V; v++) {
      const lp = zp[base + v] * invT - lseP
      const p = exp(lp)
      gp[base + v] = p !== 0 && kl !== Infinity ? scale * invT * p * (lp - (zq[base + v] * invT - lseQ) - kl) : 0
    }
  }
  return kl
}

export function klDivergenceKernel(
  zp: Floats, zq: Floats, N: number, V: number, valid: Uint8Array | null, reduction: Reduction,
  temperature: Temperature, perRow: Floats, gq: Floats | null, gp: Floats | null,
): { loss: number; count: number } {
  let count = 0
  for (let n = 0; n < N; n++) if (valid === null || valid[n]) count++
  const scale = reduction === 'mean' ? (count > 0 ? 1 / count : 0) : 1
  let total = 0
  for (let n = 0; n < N; n++) {
    const base = n * V
    if (valid !== null && !valid[n]) {
      perRow[n] = 0
      gq?.fill(0, base, base + V)
      gp?.fill(0, base, base + V)
      continue
    }
    const invT = invTemperature(temperature, n)
    const kl = klRow(zp, zq, base, V, invT, rowLse(zp, base, V, invT), rowLse(zq, base, V, invT), scale, gq, gp)
    perRow[n] = kl
    total += kl
  }
  return { loss: total * scale, count }
}


export interface KlPenaltyKernelOptions {
  estimator: KlEstimator
  logRatioClamp: number
  outputClamp: number | null
}

/** Value and d/dlogp of one estimator at δ = logp − refLogp; written into s[0], s[1]. */
export function klToken(delta: number, o: KlPenaltyKernelOptions, s: Float64Array): void {
  let k: number, g: number
  switch (o.estimator) {
    case 'k1': k = delta; g = 1; break
    case 'abs': k = Math.abs(delta); g = delta > 0 ? 1 : delta < 0 ? -1 : 0; break
    case 'k2': k = 0.5 * delta * delta; g = delta; break
    case 'k3': {
      const C = o.logRatioClamp
      const dc = delta > C ? C : delta < -C ? -C : delta
      const e = exp(-dc)
      k = e + dc - 1
      g = delta > C || delta < -C ? 0 : 1 - e
      break
    }
  }
  const K = o.outputClamp
  if (K !== null && (k > K || k < -K)) {
    k = k > K ? K : -K
    g = 0
  }
  s[0] = k
  s[1] = g
}

export function klPenaltyKernel(
  logp: Floats, ref: Floats, valid: Uint8Array | null, layout: TokenLayout, agg: Aggregation,
  o: KlPenaltyKernelOptions, perToken: Floats, grad: Floats,
): number {
  return tokenLoss(layout, valid, agg, perToken, grad, (t, s) => klToken(logp[t] - ref[t], o, s))
}
