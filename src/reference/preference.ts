/**
 * Reference kernels of the preference family (README "Preference losses"), float64.
 *
 * sequenceLogProbs: sequence s holds tokens offsets[s] .. offsets[s+1]; c_s = its counted tokens (mask 1).
 *   sum:  S_s = Σ_counted logp_t          dS_s/dlogp_t = 1
 *   mean: S_s = Σ_counted logp_t / max(1, c_s)   dS_s/dlogp_t = 1 / max(1, c_s)
 *   gradLogp_t = gradSeq_s · dS_s/dlogp_t at counted tokens, 0 elsewhere (masked values are never read).
 *
 * preferenceLoss: prompt n owns candidates offsets[n] .. offsets[n+1] (K_n of them). For candidate i:
 *   u_i = (logp_i − ref_i) / max(1, len_i)   (ref = 0 for simpo; len = 1 without lengths)
 *   r_i = β u_i                               (the implicit reward, returned as `rewards`)
 * The order π of a prompt: a ranking as given (best first), or with `chosen` b: [b, the others ascending].
 * Pairwise types (dpo, robust, ipo, hinge, simpo) average a per-pair loss f(Δ), Δ = u_w − u_l, over the pairs
 * (w preferred to l): with chosen, b against each of the K_n − 1 others; with a ranking, every pair a < b of
 * positions (K_n(K_n−1)/2, the InstructGPT reward-model form). At K_n = 2 both are the single pair.
 *   dpo     h = βΔ        f = −(1−ε) log σ(h) − ε log σ(−h)              df/dΔ = β (σ(h) − (1−ε))
 *   robust  h = βΔ        f = (−(1−ε) log σ(h) + ε log σ(−h)) / (1−2ε)   df/dΔ = β (σ(h) − (1−ε)/(1−2ε))
 *   simpo   h = βΔ − γ    f as dpo                                        df/dΔ = β (σ(h) − (1−ε))
 *   ipo     f = (Δ − 1/(2β))²                                             df/dΔ = 2 (Δ − 1/(2β))
 *   hinge   f = max(0, 1 − βΔ)                                            df/dΔ = −β where 1 − βΔ > 0, else 0
 * plackett-luce: D = K_n − 1 stages (a ranking) or 1 (chosen: the K-wise softmax of rewardLoss on r):
 *   ℓ = Σ_{k<D} (L_k − r_{π_k}),  L_k = log Σ_{m ≥ k} exp r_{π_m}  (the not-yet-ranked candidates)
 *   dℓ/dr_{π_m} = Σ_{k ≤ min(m, D−1)} exp(r_{π_m} − L_k) − [m < D]
 * formed in O(K_n) as exp(r_{π_m} − L_q) · A_q, q = min(m, D−1), A_q = Σ_{k ≤ q} exp(L_q − L_k) = A_{q−1}·exp(L_q − L_{q−1}) + 1
 * (every factor ≤ 1). At K_n = 2 it is dpo with ε = 0.
 * Chain rule: dℓ/dlogp_i = dℓ/du_i / max(1, len_i), dℓ/dref_i = −dℓ/dlogp_i; the reduction scales both.
 * A prompt counts when K_n ≥ 2 and its chosen index is not ignoreIndex; mean divides by the count.
 * Metrics over counted prompts, t = π_0: chosenReward = mean r_t, rejectedReward = mean of the mean r of the
 * others, margin = their difference, accuracy = share with r_t strictly above every other r (ties wrong).
 * Stable forms: log σ(h) = min(h, 0) − log1p(exp(−|h|)); L_k by a running log-add-exp from the last rank.
 */
import type { PreferenceType, Reduction, SequenceReduction } from '../choices.js'
import type { TokenLayout } from '../tokens.js'
import type { Floats } from './aggregate.js'

export function sequenceLogProbsKernel(
  logp: Floats, layout: TokenLayout, valid: Uint8Array | null, reduction: SequenceReduction, gradSeq: Floats | null,
  seqLogp: Floats, lengths: Floats, gradLogp: Floats | null,
): void {
  const { offsets } = layout
  for (let s = 0; s + 1 < offsets.length; s++) {
    let sum = 0
    let count = 0
    for (let t = offsets[s]; t < offsets[s + 1]; t++) {
      if (valid !== null && valid[t] === 0) continue
      sum += logp[t]
      count++
    }
    const scale = reduction === 'mean' ? 1 / Math.max(1, count) : 1
    seqLogp[s] = sum * scale
    lengths[s] = count
    if (gradLogp === null) continue
    const g = gradSeq![s] * scale
    for (let t = offsets[s]; t < offsets[s + 1]; t++) gradLogp[t] = valid !== null && valid[t] === 0 ? 0 : g
  }
}

export interface PreferenceKernelOptions {
  type: PreferenceType
  beta: number
  labelSmoothing: number
  gamma: number
  chosen: Int32Array | null
  ranking: Int32Array | null
  reduction: Reduction
  ignoreIndex: number
}

export interface PreferenceKernelResult {
  loss: number
  count: number
  accuracy: number
  chosenReward: number
  rejectedReward: number
  margin: number
}

/** log σ(h), stable for either sign */
export const logSigmoid = (h: number) => Math.min(h, 0) - Math.log1p(Math.exp(-Math.abs(h)))
const sigmoid = (h: number) => (h >= 0 ? 1 / (1 + Math.exp(-h)) : Math.exp(h) / (1 + Math.exp(h)))

/** A pairwise type's loss f(Δ) and df/dΔ. */
export function pairLoss(o: Pick<PreferenceKernelOptions, 'type' | 'beta' | 'labelSmoothing' | 'gamma'>, delta: number): [number, number] {
  const { beta, labelSmoothing: e } = o
  switch (o.type) {
    case 'ipo': {
      const d = delta - 1 / (2 * beta)
      return [d * d, 2 * d]
    }
    case 'hinge': {
      const m = 1 - beta * delta
      return m > 0 ? [m, -beta] : [0, 0]
    }
    case 'robust': {
      const h = beta * delta
      return [(-(1 - e) * logSigmoid(h) + e * logSigmoid(-h)) / (1 - 2 * e), beta * (sigmoid(h) - (1 - e) / (1 - 2 * e))]
    }
    default: { // dpo, simpo
      const h = beta * delta - (o.type === 'simpo' ? o.gamma : 0)
      return [-(1 - e) * logSigmoid(h) - e * logSigmoid(-h), beta * (sigmoid(h) - (1 - e))]
    }
  }
}

export function preferenceLossKernel(
  logp: Floats, ref: Floats | null, len: Floats | null, offsets: Int32Array, o: PreferenceKernelOptions,
  rewards: Floats, gradLogp: Floats, gradRef: Floats | null, losses: Floats,
): PreferenceKernelResult {
  const N = offsets.length - 1
  const counted = (n: number) => offsets[n + 1] - offsets[n] >= 2 && (o.chosen === null || o.chosen[n] !== o.ignoreIndex)
  let count = 0
  for (let n = 0; n < N; n++) if (counted(n)) count++
  const scale = o.reduction === 'mean' ? (count > 0 ? 1 / count : 0) : 1
  let total = 0, correct = 0, chosenSum = 0, rejectedSum = 0
  for (let n = 0; n < N; n++) {
    const a = offsets[n], K = offsets[n + 1] - a
    const u = new Float64Array(K), du = new Float64Array(K)
    for (let i = 0; i < K; i++) {
      u[i] = (logp[a + i] - (ref === null ? 0 : ref[a + i])) / (len === null ? 1 : Math.max(1, len[a + i]))
      rewards[a + i] = o.beta * u[i]
    }
    losses[n] = 0
    if (!counted(n)) {
      for (let i = 0; i < K; i++) gradLogp[a + i] = 0
      if (gradRef !== null) for (let i = 0; i < K; i++) gradRef[a + i] = 0
      continue
    }
    const pi = new Int32Array(K)
    if (o.ranking !== null) pi.set(o.ranking.subarray(a, a + K))
    else {
      const b = o.chosen![n]
      pi[0] = b
      for (let i = 0, k = 1; i < K; i++) if (i !== b) pi[k++] = i
    }
    let loss = 0
    if (o.type === 'plackett-luce') {
      const D = o.ranking !== null ? K - 1 : 1
      const r = (m: number) => o.beta * u[pi[m]]
      const L = new Float64Array(K)
      L[K - 1] = r(K - 1)
      for (let k = K - 2; k >= 0; k--) {
        const x = r(k), y = L[k + 1], hi = Math.max(x, y)
        L[k] = hi + Math.log1p(Math.exp(Math.min(x, y) - hi))
      }
      for (let k = 0; k < D; k++) loss += L[k] - r(k)
      let A = 0
      for (let m = 0; m < K; m++) {
        const q = Math.min(m, D - 1)
        if (m <= D - 1) A = m === 0 ? 1 : A * Math.exp(L[m] - L[m - 1]) + 1
        du[pi[m]] = o.beta * (Math.exp(r(m) - L[q]) * A - (m < D ? 1 : 0))
      }
    } else {
      const last = o.ranking !== null ? K - 1 : 1  // winners: positions 0 .. last − 1
      const weight = 1 / (o.ranking !== null ? (K * (K - 1)) / 2 : K - 1)
      for (let x = 0; x < last; x++) {
        for (let y = x + 1; y < K; y++) {
          const w = pi[x], l = pi[y]
          const [f, g] = pairLoss(o, u[w] - u[l])
          loss += weight * f
          du[w] += weight * g
          du[l] -= weight * g
        }
      }
    }
    losses[n] = loss
    total += loss
    for (let i = 0; i < K; i++) {
      const g = (scale * du[i]) / (len === null ? 1 : Math.max(1, len[a + i]))
      gradLogp[a + i] = g
      if (gradRef !== null) gradRef[a + i] = -g
    }
    const t = pi[0]
    let others = 0
    let best = true
    for (let i = 0; i < K; i++) {
      if (i === t) continue
      others += o.beta * u[i]
      if (!(u[t] > u[i])) best = false
    }
    chosenSum += o.beta * u[t]
    rejectedSum += others / (K - 1)
    if (best) correct++
  }
  const per = count > 0 ? 1 / count : 0
  return {
    loss: total * scale, count, accuracy: correct * per,
    chosenReward: chosenSum * per, rejectedReward: rejectedSum * per, margin: (chosenSum - rejectedSum) * per,
  }
}
