/**
 * Reference K-wise reward-model loss (DESIGN §1.3). Prompt n owns scores R[offsets[n] .. offsets[n+1]).
 *
 *   R'_i   = R_i + m_i for i ≠ b (margins on the non-chosen candidates; soft labels: on every candidate)
 *   P      = softmax(R'),  lse = log Σ exp R'
 *   hard:  ℓ_n = lse − R'_b            dℓ/dR_i = P_i − 1[i = b]
 *   soft:  ℓ_n = Σ_i Y_i (lse − R'_i)  dℓ/dR_i = P_i Σ_j Y_j − Y_i   (= P − Y when Y sums to 1)
 *   centering: + c (Σ_i R_i)²          d/dR_i  = 2 c Σ_j R_j
 * mean divides by the number of counted prompts (chosen ≠ ignoreIndex and K_n ≥ 2). Stable form lse − R'_b,
 * never log(1 + exp). Accuracy: R_b strictly above every other raw score (ties are wrong).
 */
import type { Floats } from './aggregate.js'
import type { Reduction } from '../choices.js'

export interface RewardKernelOptions {
  chosen: Int32Array | null
  targetProbs: Floats | null
  margins: Floats | null
  centerCoef: number
  reduction: Reduction
  ignoreIndex: number
}

export interface RewardKernelResult {
  loss: number
  count: number
  accuracy: number
}

/** Whether prompt n takes part in the loss: at least two candidates and a label that is not ignored. */
export function rewardPromptCounted(offsets: Int32Array, chosen: Int32Array | null, ignoreIndex: number, n: number): boolean {
  return offsets[n + 1] - offsets[n] >= 2 && (chosen === null || chosen[n] !== ignoreIndex)
}

export function rewardLossKernel(
  R: Floats, offsets: Int32Array, o: RewardKernelOptions,
  probs: Floats, grad: Floats, losses: Floats,
): RewardKernelResult {
  const N = offsets.length - 1
  const { chosen, targetProbs: Y, margins } = o
  let count = 0
  for (let n = 0; n < N; n++) if (rewardPromptCounted(offsets, chosen, o.ignoreIndex, n)) count++
  const scale = o.reduction === 'mean' ? (count > 0 ? 1 / count : 0) : 1

  let shifted = new Float64Array(16) // R' of one prompt; K is small, the scratch row is reused
  let correct = 0
  let total = 0
  for (let n = 0; n < N; n++) {
    const a = offsets[n]
    const K = offsets[n + 1] - a
    if (shifted.length < K) shifted = new Float64Array(K)
    const b = chosen === null ? -1 : chosen[n]
    let m = -Infinity
    for (let i = 0; i < K; i++) {
      const r = R[a + i] + (margins !== null && i !== b ? margins[a + i] : 0)
      shifted[i] = r
      if (r > m) m = r
    }
    let sum = 0
    for (let i = 0; i < K; i++) sum += Math.exp(shifted[i] - m)
    const lse = m + Math.log(sum)
    for (let i = 0; i < K; i++) probs[a + i] = Math.exp(shifted[i] - lse)
    losses[n] = 0
    if (!rewardPromptCounted(offsets, chosen, o.ignoreIndex, n)) {
      grad.fill(0, a, a + K)
      continue
    }
    let loss = 0
    let label = b
    let ySum = 1
    if (Y === null) {
      loss = lse - shifted[b]
    } else {
      label = 0
      ySum = 0
      for (let i = 0; i < K; i++) {
        const y = Y[a + i]
        ySum += y
        if (y !== 0) loss += y * (lse - shifted[i])
        if (y > Y[a + label]) label = i
      }
    }
    let center = 0
    if (o.centerCoef !== 0) {
      let s = 0
      for (let i = 0; i < K; i++) s += R[a + i]
      loss += o.centerCoef * s * s
      center = 2 * o.centerCoef * s
    }
    losses[n] = loss
    total += loss
    for (let i = 0; i < K; i++) {
      const target = Y === null ? (i === b ? 1 : 0) : Y[a + i]
      grad[a + i] = scale * (Math.exp(shifted[i] - lse) * ySum - target + center)
    }
    let best = true
    for (let i = 0; i < K; i++) if (i !== label && !(R[a + label] > R[a + i])) best = false
    if (best) correct++
  }
  return { loss: total * scale, count, accuracy: count > 0 ? correct / count : 0 }
}
