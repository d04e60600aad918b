/**
 * Reference fused PPO objective (DESIGN §1.7) from logits, per token t (a row of the logits):
 *   logp_t = log softmax(z_t / T)[a_t]
 *   ℓ^RL_t  policy term (§1.4 and its variants, src/reference/policy.ts policyTerms) against oldLogp;  ℓ^KL_t  full-vocabulary KL(π_anchor ‖ π_θ) or a sampled
 *   estimator (§1.5);  ℓ^V_t  value term (§1.6)
 *   loss = agg(ℓ^RL) + β agg(ℓ^KL) + c1 agg(ℓ^V) = −(L_RL − β L_KL − c1 L_V)
 * One pass per row gives the loss and dloss/dz_t = (w_t/T)[(g^RL_t + β g^KL_t)(onehot − q) + β (q − p_anchor)],
 * the last term only for the full KL, and dloss/dV_t = c1 w_t g^V_t.
 * trustRegion 'full' (variant 'dppo-tv' / 'dppo-kl', π_old = softmax(oldLogits / T)): each position's exact
 *   D_t = ½ Σ_v |π_θ,v − π_old,v| (tv) or KL(π_old ‖ π_θ) = Σ_v π_old,v (log π_old,v − log π_θ,v) (kl) decides
 *   the DPPO mask in place of the taken token's binary TV / KL (src/reference/policy.ts); the mask is held
 *   (no gradient through D_t), so the gradient keeps its form.
 */
import type { Aggregation } from '../aggregate.js'
import type { TokenLayout } from '../tokens.js'
import { exp } from './exp.js'
import { aggregationWeights, countValid, type Floats } from './aggregate.js'
import type { KlEstimator, TrustRegion } from '../choices.js'
import { type ClipMetrics, type RolloutMetrics, type Temperature, invTemperature } from '../options.js'
import { klTerm, klToken } from './kl.js'
import { policyTerms, type PolicyKernelOptions } from './policy.js'
import { valueToken, type ValueKernelOptions } from './value.js'
import { logProb, rowLse } from './vocab.js'

export interface PpoKernelInputs {
  logits: Floats
  V: number
  actions: Int32Array
  /** null: taken from anchorLogits at the actions */
  oldLogp: Floats | null
  /** the logits of π_old or π_ref, for the full KL or to derive oldLogp / refLogp */
  anchorLogits: Floats | null
  refLogp: Floats | null
  /** log π_behavior(a) of the rollout correction, or absent */
  behaviorLogp?: Floats | null
  /** logp inside the policy terms' stop-gradients (a finite-difference check holds it fixed); default the live logp */
  sgLogp?: Floats
  /** the trust-region divergences to use instead of those of the logits (a finite-difference check holds them fixed) */
  sgDivergence?: Floats
  advantages: Floats
  values: Floats | null
  returns: Floats | null
  oldValues: Floats | null
  valid: Uint8Array | null
  layout: TokenLayout
  agg: Aggregation
}

export interface PpoKernelOptions {
  temperature: Temperature
  policy: PolicyKernelOptions
  beta: number
  c1: number
  klEstimator: KlEstimator | 'full'
  klOutputClamp: number | null
  value: ValueKernelOptions
  /** 'full': the DPPO mask by each position's full-vocabulary TV / KL to anchorLogits (π_old); default 'binary' */
  trustRegion?: TrustRegion
}

/**
 * The trust-region divergence of row `base` against π_old's row (both at 1/T = invT, lse given): the total
 * variation ½ Σ_v |q_v − p_v| (tv) or KL(p ‖ q) (kl), with q = π_θ and p = π_old.
 */
export function trustRegionDivergence(z: Floats, a: Floats, base: number, V: number, invT: number, lse: number, lseA: number, kind: 'tv' | 'kl'): number {
  let d = 0
  for (let v = 0; v < V; v++) {
    const lq = logProb(z[base + v], invT, lse), la = logProb(a[base + v], invT, lseA)
    d += kind === 'tv' ? Math.abs(exp(lq) - exp(la)) : klTerm(exp(la), la - lq)
  }
  return kind === 'tv' ? 0.5 * d : d
}

export interface PpoKernelResult extends ClipMetrics, RolloutMetrics {
  loss: number
  policyLoss: number
  kl: number
  valueLoss: number
  valueClipFraction: number
}

export function ppoLossKernel(x: PpoKernelInputs, o: PpoKernelOptions, gradLogits: Floats, gradValues: Floats | null, logp: Floats): PpoKernelResult {
  const { logits: z, V, actions, layout } = x
  const M = layout.tokens
  const w = new Float64Array(M)
  aggregationWeights(layout, x.valid, x.agg, w)
  const ks = new Float64Array(2)
  const vs = new Float64Array(2)
  const klOpts = { estimator: o.klEstimator === 'full' ? 'k1' as const : o.klEstimator, logRatioClamp: o.policy.logRatioClamp, outputClamp: o.klOutputClamp }
  // first the log-probs of every token (the policy terms may need whole sequences), then the policy terms,
  // then each row's KL, value term and gradient
  const lps = new Float64Array(M), olds = new Float64Array(M), anchorLps = new Float64Array(M)
  const full = o.trustRegion === 'full' && x.anchorLogits !== null
  const divergence = full ? new Float64Array(M) : null
  for (let t = 0; t < M; t++) {
    if (x.valid !== null && !x.valid[t]) continue
    const base = t * V
    const invT = invTemperature(o.temperature, t)
    const lse = rowLse(z, base, V, invT)
    lps[t] = logProb(z[base + actions[t]], invT, lse)
    if (x.anchorLogits !== null) {
      const lseA = rowLse(x.anchorLogits, base, V, invT)
      anchorLps[t] = logProb(x.anchorLogits[base + actions[t]], invT, lseA)
      if (divergence !== null) divergence[t] = trustRegionDivergence(z, x.anchorLogits, base, V, invT, lse, lseA, o.policy.variant === 'dppo-kl' ? 'kl' : 'tv')
    }
    olds[t] = x.oldLogp !== null ? x.oldLogp[t] : anchorLps[t]
  }
  const perToken = new Float64Array(M), gPolicy = new Float64Array(M)
  const pt = policyTerms(lps, olds, x.advantages, x.behaviorLogp ?? null, x.valid, layout, w, o.policy, perToken, gPolicy, x.sgLogp ?? lps, x.sgDivergence ?? divergence)
  let kl = 0, valueLoss = 0, approxKl = 0, vclip = 0
  for (let t = 0; t < M; t++) {
    const base = t * V
    if (x.valid !== null && !x.valid[t]) {
      gradLogits.fill(0, base, base + V)
      if (gradValues !== null) gradValues[t] = 0
      logp[t] = 0
      continue
    }
    const y = actions[t]
    const invT = invTemperature(o.temperature, t)
    const lse = rowLse(z, base, V, invT)
    const lp = lps[t]
    logp[t] = lp
    const lseA = x.anchorLogits !== null ? rowLse(x.anchorLogits, base, V, invT) : 0
    const anchorLp = anchorLps[t]
    const old = olds[t]
    approxKl += w[t] * (old - lp)

    // coefficient of (onehot − q) and of (q − p_anchor) in this row's gradient
    let cLogp = gPolicy[t]
    let cFull = 0
    if (o.klEstimator === 'full') {
      const A = x.anchorLogits as Floats
      let k = 0
      for (let v = 0; v < V; v++) {
        const la = logProb(A[base + v], invT, lseA)
        const pa = exp(la)
        k += klTerm(pa, la - logProb(z[base + v], invT, lse))
      }
      kl += w[t] * k
      cFull = o.beta * w[t]
    } else {
      const ref = x.refLogp !== null ? x.refLogp[t] : x.anchorLogits !== null ? anchorLp : old
      klToken(lp - ref, klOpts, ks)
      kl += w[t] * ks[0]
      cLogp += o.beta * w[t] * ks[1]
    }
    // the target's 1 − q_y as the mass of the other tokens where the row has a finite lse: q_y rounds to 1 in
    // float64 once lse − s_y is below an ulp of lse (a confident row of large logits), where that mass does not
    let rest = 0
    const complement = Number.isFinite(lse)
    for (let v = 0; v < V; v++) {
      const q = exp(logProb(z[base + v], invT, lse))
      if (v !== y) rest += q
      let d = cLogp * ((v === y ? 1 : 0) - q)
      if (cFull !== 0) d += cFull * (q - exp(logProb((x.anchorLogits as Floats)[base + v], invT, lseA)))
      gradLogits[base + v] = d * invT
    }
    if (complement) {
      const qy = exp(logProb(z[base + y], invT, lse))
      let d = cLogp * rest
      if (cFull !== 0) d += cFull * (qy - exp(logProb((x.anchorLogits as Floats)[base + y], invT, lseA)))
      gradLogits[base + y] = d * invT
    }
    if (x.values !== null && x.returns !== null) {
      if (valueToken(x.values[t], x.returns[t], x.oldValues === null ? 0 : x.oldValues[t], o.value, vs)) vclip++
      valueLoss += w[t] * vs[0]
      if (gradValues !== null) gradValues[t] = o.c1 * w[t] * vs[1]
    }
  }
  const n = countValid(x.valid, M)
  const { loss: policyLoss, ...policyMetrics } = pt
  return {
    loss: policyLoss + o.beta * kl + o.c1 * valueLoss,
    policyLoss, kl, valueLoss, approxKl, count: n,
    ...policyMetrics, valueClipFraction: vclip * (n > 0 ? 1 / n : 0),
  }
}
