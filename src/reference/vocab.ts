/**
 * Reference vocabulary kernels (DESIGN §1.1, §1.2): log-softmax of the taken token, entropy, cross-entropy
 * and their gradients, one logits row at a time, accumulated in float64.
 *
 * For a row z (length V) at temperature T (one for every row, or row n's own), with s = z/T:
 *   lse   = log Σ_v exp(s_v)                       (max-shifted; an all −inf row has lse = −inf)
 *   logp  = s_y − lse
 *   H     = −Σ_{p_v > 0} p_v log p_v               (xlogy: a −inf logit contributes 0, never NaN)
 *   d/dz  = [g_logp (onehot_y − p) − g_H p (log p + H) + 2 g_Q p (p − Q)] / T
 * Row statistics (optional, from the same lse): Q = Σ_v p_v² (verl's optimal-token baseline), whose
 * gradient is the g_Q term above; the largest probability p_max = exp(z_max/T − lse) and its token, the first
 * index of the largest logit (−1 for a row holding NaN). p_max has no gradient term of its own: where the
 * argmax is unique, d p_max/dz = p_max (onehot_argmax − p)/T, which is g_logp's term at target argmax,
 * scaled by p_max (so logProbsBackward with targets = maxToken and gradLogp = g·maxProb gives it).
 * Cross-entropy with label smoothing ε, z-loss s, class weights w (W = Σ w) and token weights τ, of s = z/T
 * (lse, p = softmax(s) at row n's temperature T, 1 by default):
 *   ℓ_n   = τ_n [ (1−ε) w_y (lse − s_y) + ε/V Σ_v w_v (lse − s_v) + s lse² ]
 *   dℓ/dz = τ_n/T [ (1−ε) w_y (p − onehot_y) + ε/V (W p − w) + 2 s lse p ]
 * The mean divides by the number of non-ignored rows (Σ w_y over them with class weights, as PyTorch).
 */
import type { Reduction } from '../choices.js'
import { type Temperature, invTemperature } from '../options.js'
import type { Floats } from './aggregate.js'
import { exp } from './exp.js'

/**
 * lse of one row of z scaled by invT, in one pass (online: the running sum is rescaled when the max grows).
 * A −inf logit adds nothing, so an all −inf row gives −inf (the max − max = NaN trap is never taken); a row
 * holding NaN gives NaN (an all-NaN one too); else a row holding +inf gives +inf.
 */
export function rowLse(z: Floats, base: number, V: number, invT: number): number {
  let m = -Infinity
  let sum = 0
  let nan = false
  for (let v = 0; v < V; v++) {
    const s = z[base + v] * invT
    if (s > m) {
      sum = sum * exp(m - s) + 1
      m = s
    } else if (s !== -Infinity) {
      sum += exp(s - m)
      nan ||= s !== s
    }
  }
  return nan ? NaN : m === -Infinity || m === Infinity ? m : m + Math.log(sum)
}

/** log p_v = z_v·invT − lse of a row with this lse: −inf everywhere in a row without mass (lse −inf). */
export function logProb(zv: number, invT: number, lse: number): number {
  return lse === -Infinity ? -Infinity : zv * invT - lse
}

/** Entropy of a row given its lse, with xlogy semantics (a p = 0 term adds 0; a NaN p makes it NaN). */
export function rowEntropy(z: Floats, base: number, V: number, invT: number, lse: number): number {
  if (lse === -Infinity) return 0
  let h = 0
  for (let v = 0; v < V; v++) {
    const lp = z[base + v] * invT - lse
    const p = exp(lp)
    if (p !== 0) h -= p * lp
  }
  return h
}

/** Σ_v p_v² of a row given its lse (0 for a row without mass; NaN where any p is NaN). */
export function rowSumProbSq(z: Floats, base: number, V: number, invT: number, lse: number): number {
  if (lse === -Infinity) return 0
  let q = 0
  for (let v = 0; v < V; v++) {
    const p = exp(z[base + v] * invT - lse)
    q += p * p
  }
  return q
}

/** The first index of the largest logit of a row (0 for an all −inf row), −1 for a row holding NaN. */
export function rowArgmax(z: Floats, base: number, V: number): number {
  let best = 0
  for (let v = 0; v < V; v++) {
    const x = z[base + v]
    if (x !== x) return -1
    if (x > z[base + best]) best = v
  }
  return best
}

/** The optional per-row statistics of logProbs (each null when not asked for). */
export interface RowStatsOutputs {
  sumProbSq: Floats | null
  maxProb: Floats | null
  maxToken: Int32Array | null
}

export interface LogProbsKernelOptions {
  temperature: Temperature
  ignoreIndex: number
}

/** logp[n], lse[n], and entropy[n] when an output is given; all three 0 on ignored rows. */
export function logProbsKernel(
  z: Floats, N: number, V: number, targets: Int32Array, o: LogProbsKernelOptions,
  logp: Floats, lse: Floats, entropy: Floats | null, stats: RowStatsOutputs | null = null,
): void {
  for (let n = 0; n < N; n++) {
    const base = n * V
    const y = targets[n]
    const invT = invTemperature(o.temperature, n)
    if (y === o.ignoreIndex) {
      lse[n] = logp[n] = 0
      if (entropy !== null) entropy[n] = 0
      if (stats?.sumProbSq) stats.sumProbSq[n] = 0
      if (stats?.maxProb) stats.maxProb[n] = 0
      if (stats?.maxToken) stats.maxToken[n] = -1
      continue
    }
    const l = rowLse(z, base, V, invT)
    lse[n] = l
    logp[n] = logProb(z[base + y], invT, l)
    if (entropy !== null) entropy[n] = rowEntropy(z, base, V, invT, l)
    if (stats === null) continue
    if (stats.sumProbSq) stats.sumProbSq[n] = rowSumProbSq(z, base, V, invT, l)
    const a = rowArgmax(z, base, V)
    if (stats.maxToken) stats.maxToken[n] = a
    if (stats.maxProb) stats.maxProb[n] = a < 0 ? NaN : exp(logProb(z[base + a], invT, l))
  }
}

/**
 * Gradient of Σ_n g_logp[n]·logp[n] + g_H[n]·H[n] with respect to the logits (zero on ignored rows, whose
 * results are constants). `entropy` may be null, in which case it is recomputed where g_H is given.
 */
export function logProbsBackwardKernel(
  z: Floats, N: number, V: number, targets: Int32Array, lse: ArrayLike<number>,
  gradLogp: ArrayLike<number> | null, gradEntropy: ArrayLike<number> | null, entropy: ArrayLike<number> | null,
  o: LogProbsKernelOptions, grad: Floats,
  gradSumProbSq: ArrayLike<number> | null = null, sumProbSq: ArrayLike<number> | null = null,
): void {
  for (let n = 0; n < N; n++) {
    const base = n * V
    const invT = invTemperature(o.temperature, n)
    const l = lse[n]
    const y = targets[n]
    const gl = gradLogp === null ? 0 : gradLogp[n]
    const gh = gradEntropy === null ? 0 : gradEntropy[n]
    const gq = gradSumProbSq === null ? 0 : gradSumProbSq[n]
    if (y === o.ignoreIndex || l === -Infinity || (gl === 0 && gh === 0 && gq === 0)) {
      grad.fill(0, base, base + V)
      continue
    }
    const h = gh === 0 ? 0 : entropy !== null ? entropy[n] : rowEntropy(z, base, V, invT, l)
    const q = gq === 0 ? 0 : sumProbSq !== null ? sumProbSq[n] : rowSumProbSq(z, base, V, invT, l)
    for (let v = 0; v < V; v++) {
      const lp = z[base + v] * invT - l
      const p = exp(lp)
      // the true-class term is formed here, in float64, not added to a rounded output afterwards
      let d = v === y ? gl * (1 - p) : -gl * p
      if (gh !== 0 && p !== 0) d -= gh * p * (lp + h)
      if (gq !== 0) d += 2 * gq * p * (p - q)
      grad[base + v] = d * invT
    }
  }
}

export interface CrossEntropyKernelOptions {
  ignoreIndex: number
  reduction: Reduction
  labelSmoothing: number
  zLoss: number
  classWeights: Floats | null
  tokenWeights: Floats | null
  /** the logits are divided by T (one, or row n's); default 1 */
  temperature?: Temperature
}

export interface CrossEntropyKernelResult {
  loss: number
  count: number
}

/**
 * Cross-entropy per row into `losses` (0 on ignored rows; +inf on an all −inf row), lse per row (0 on ignored
 * rows), and, when
 * `grad` is given, the gradient of the reduced loss (for reduction 'none': of the returned Σ losses).
 */
export function crossEntropyKernel(
  z: Floats, N: number, V: number, targets: Int32Array, o: CrossEntropyKernelOptions,
  losses: Floats, lse: Floats, grad: Floats | null,
): CrossEntropyKernelResult {
  const eps = o.labelSmoothing
  const cw = o.classWeights
  let W = V
  if (cw !== null) {
    W = 0
    for (let v = 0; v < V; v++) W += cw[v]
  }
  const exact = new Float64Array(N)
  let count = 0
  let denom = 0
  let total = 0
  for (let n = 0; n < N; n++) {
    const base = n * V
    const y = targets[n]
    if (y === o.ignoreIndex) {
      lse[n] = losses[n] = 0
      continue
    }
    const invT = invTemperature(o.temperature ?? 1, n)
    const l = rowLse(z, base, V, invT)
    lse[n] = exact[n] = l
    count++
    const wy = cw === null ? 1 : cw[y]
    denom += wy
    const tw = o.tokenWeights === null ? 1 : o.tokenWeights[n]
    if (l === -Infinity) {
      // no probability mass anywhere: the target is impossible
      losses[n] = Infinity
      total += Infinity
      continue
    }
    let loss = (1 - eps) * wy * (l - z[base + y] * invT)
    if (eps !== 0) {
      let smooth = 0
      for (let v = 0; v < V; v++) smooth += (cw === null ? 1 : cw[v]) * (l - z[base + v] * invT)
      loss += (eps / V) * smooth
    }
    if (o.zLoss !== 0) loss += o.zLoss * l * l
    loss *= tw
    losses[n] = loss
    total += loss
  }
  const scale = o.reduction === 'mean' ? (denom > 0 ? 1 / denom : 0) : 1
  if (grad !== null) {
    for (let n = 0; n < N; n++) {
      const base = n * V
      const y = targets[n]
      const l = exact[n]  // not lse[n]: that output may be float32
      if (y === o.ignoreIndex || l === -Infinity) {
        grad.fill(0, base, base + V)
        continue
      }
      const invT = invTemperature(o.temperature ?? 1, n)
      const g = scale * (o.tokenWeights === null ? 1 : o.tokenWeights[n]) * invT
      const wy = cw === null ? 1 : cw[y]
      // coefficient of p_v in dℓ/dz_v: (1−ε) w_y + ε W / V + 2 s lse
      const cp = (1 - eps) * wy + (eps * W) / V + 2 * o.zLoss * l
      for (let v = 0; v < V; v++) {
        const p = exp(z[base + v] * invT - l)
        let d = cp * p
        if (v === y) d -= (1 - eps) * wy
        if (eps !== 0) d -= (eps / V) * (cw === null ? 1 : cw[v])
        grad[base + v] = g * d
      }
    }
  }
  return { loss: total * scale, count }
}

/**
 * Kept-set log-probabilities (sampling replay, issue 15). Row n at temperature T, s = z/T, K ⊆ [0, V) the
 * kept set, lse_K = log Σ_{v∈K} exp(s_v):
 *   logp = s_y − lse_K for y ∈ K, −inf for y ∉ K (a token the sampler could not have drawn)
 *   d logp/dz_v = [onehot_y − p^K_v] / T for v ∈ K (p^K = exp(s − lse_K)), 0 outside K and where logp = −inf
 * K given as CSR (keepOffsets, keepTokens: each row's tokens strictly increasing), or by the sampling
 * parameters as vLLM's sampler applies them after the temperature (vllm/v1/sample: min-p, then top-k, then
 * top-p over what is left):
 *   min-p m: drop v where exp(s_v − max s) < m (p_v < m·p_max)
 *   top-k k: drop v where s_v < the k-th largest remaining s (every token tied with it is kept)
 *   top-p p: order the remaining tokens ascending by s (ties by token index, as a stable sort), cumulative
 *            softmax probability c_i over them; drop those with c_i ≤ 1 − p, never the largest
 * A NaN or +inf logit gives NaN (logp, lse and the gradient row): among the kept tokens where K is given
 * (the others are never read), anywhere in the row where K comes from the sampling parameters.
 */
export interface SamplingParams {
  topK: Int32Array | null
  topP: Float64Array | Float32Array | null
  minP: Float64Array | Float32Array | null
}

/** The kept set of one scaled row s (length V) under k (0: off), p (1: off) and m (0: off), as a 0/1 mask. */
export function samplingKeep(s: ArrayLike<number>, V: number, k: number, p: number, m: number): Uint8Array {
  const x = Float64Array.from({ length: V }, (_, v) => s[v])
  let mx = -Infinity
  for (let v = 0; v < V; v++) mx = Math.max(mx, x[v])
  if (m > 0) for (let v = 0; v < V; v++) if (exp(x[v] - mx) < m) x[v] = -Infinity
  if (k > 0 && k < V) {
    const t = Float64Array.from(x).sort().reverse()[k - 1]
    for (let v = 0; v < V; v++) if (x[v] < t) x[v] = -Infinity
  }
  if (p < 1) {
    const order = Array.from({ length: V }, (_, v) => v).sort((a, b) => x[a] - x[b] || a - b)
    let top = -Infinity
    for (let v = 0; v < V; v++) top = Math.max(top, x[v])
    let S = 0
    for (let v = 0; v < V; v++) S += exp(x[v] - top)
    let c = 0
    for (let i = 0; i < V - 1; i++) {
      const v = order[i]
      c += exp(x[v] - top) / S
      if (c <= 1 - p) x[v] = -Infinity
    }
  }
  return Uint8Array.from(x, (y) => (y === -Infinity ? 0 : 1))
}

export interface KeptLogProbsKernelOptions {
  temperature: Temperature
  ignoreIndex: number
  keepOffsets: Int32Array | null
  keepTokens: Int32Array | null
  sampling: SamplingParams | null
}

/** logp[n] and the kept-set lse[n] (0 on ignored rows); the gradient of Σ g[n]·logp[n] when `grad` is given. */
export function keptLogProbsKernel(
  z: Floats, N: number, V: number, targets: Int32Array, o: KeptLogProbsKernelOptions,
  logp: Floats, lse: Floats, gradLogp: ArrayLike<number> | null, grad: Floats | null,
): void {
  const s = new Float64Array(V)
  for (let n = 0; n < N; n++) {
    const base = n * V
    const y = targets[n]
    grad?.fill(0, base, base + V)
    if (y === o.ignoreIndex) {
      logp[n] = lse[n] = 0
      continue
    }
    const invT = invTemperature(o.temperature, n)
    for (let v = 0; v < V; v++) s[v] = z[base + v] * invT
    const given = o.keepOffsets !== null ? Array.from(o.keepTokens!.subarray(o.keepOffsets[n], o.keepOffsets[n + 1])) : null
    const bad = (given ?? Array.from(s.keys())).some((v) => s[v] !== s[v] || s[v] === Infinity)
    if (bad) {
      logp[n] = lse[n] = NaN
      grad?.fill(NaN, base, base + V)
      continue
    }
    let kept: number[]
    if (given !== null) {
      kept = given
    } else {
      const sp = o.sampling!
      const mask = samplingKeep(s, V, sp.topK ? sp.topK[n] : 0, sp.topP ? sp.topP[n] : 1, sp.minP ? sp.minP[n] : 0)
      kept = []
      for (let v = 0; v < V; v++) if (mask[v]) kept.push(v)
    }
    let m = -Infinity
    for (const v of kept) m = Math.max(m, s[v])
    let S = 0
    if (m !== -Infinity) for (const v of kept) S += exp(s[v] - m)
    const l = m === -Infinity ? -Infinity : m + Math.log(S)
    lse[n] = l
    const inK = kept.includes(y)
    logp[n] = inK && l !== -Infinity ? s[y] - l : -Infinity
    const g = gradLogp === null ? 0 : gradLogp[n]
    if (grad === null || g === 0 || logp[n] === -Infinity) continue
    for (const v of kept) {
      const p = exp(s[v] - l)
      grad[base + v] = g * ((v === y ? 1 : 0) - p) * invT
    }
  }
}
