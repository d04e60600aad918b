/**
 * Reference policy losses (DESIGN §1.4; README "Policy variants"), per token t with log-ratio d = logp − oldLogp:
 *   r      = exp(clamp(d, ±C))                              (C = logRatioClamp, default 20)
 * 'ppo':   ℓ_t = −min(r A, clip(r, 1 − ε_low, 1 + ε_high) A);  dual clip c > 1: for A < 0, ℓ_t = min(ℓ_t, −c A)
 *          dℓ_t/dlogp = −r A where the unclipped branch is active (and d inside the clamp), else 0
 * 'cispo': ℓ_t = −sg(clip(r, 1 − ε_low, 1 + ε_high)) A logp       (verl compute_policy_loss_cispo, MiniMax-M1)
 * 'dppo-tv' / 'dppo-kl': ℓ_t = −A sg(min(r, c)) logp on kept tokens, 0 on dropped ones, with p = exp(logp),
 *          p_old = exp(oldLogp) (verl compute_policy_loss_dppo_tv / _kl; ε_low, ε_high are the thresholds δ):
 *          tv: keep = A > 0 ? p − p_old ≤ δ_h : p − p_old ≥ −δ_l
 *          kl: b = p_old (oldLogp − logp) + (1 − p_old) log((1 − p_old + 1e-8)/(1 − p + 1e-8));
 *              keep = A > 0 ? b ≤ δ_h ∨ p ≤ p_old : b ≤ δ_l ∨ p ≥ p_old
 *          full (ppoLoss trustRegion 'full'): D_t, the position's full-vocabulary TV ½Σ_v|π_v − π_old,v| or
 *              KL(π_old ‖ π), in place of b: keep = A > 0 ? D_t ≤ δ_h ∨ p ≤ p_old : D_t ≤ δ_l ∨ p ≥ p_old
 *              (with D_t = |p − p_old|, the binary TV, this is the tv rule above)
 * isLevel 'sequence' / 'sequence-token' (GSPO): d is replaced by the mean of d over sequence i's counted
 *   tokens, so r = s_i. 'sequence-token' (verl gspo) differentiates sg(s_i)·exp(logp − sg(logp)): the token
 *   formula above. 'sequence' (TRL/OpenRLHF gspo) differentiates s_i itself: with 'ppo',
 *   dL/dlogp_t = (1/n_i) Σ_{u∈i} W_u dℓ_u/dlog s (the other variants detach the ratio: no coupling).
 * Rollout correction (three policies): w_t = exp(clamp(oldLogp − behaviorLogp, ±C)); ℓ_t and its gradient
 *   are multiplied by ρ_t: 'token-truncate' min(w_t, C_is); 'token-mask' w_t inside [lo, hi], else 0;
 *   'sequence-*' the same with the geometric mean w_i = exp(clamp(mean_i(oldLogp − behaviorLogp), ±C)).
 * OPSM (δ): ρ_t = 0 for A_t < 0 in sequences with mean_i(oldLogp − logp) > δ.
 * Dropped tokens keep their place in the aggregation's counts. The loss is Σ_t W_t ℓ_t with W_t the
 * aggregation weight (§1.9), its gradient W_t ρ_t dℓ_t/dlogp.
 */
import type { Aggregation } from '../aggregate.js'
import type { IsLevel, PolicyVariant, RolloutCorrection } from '../choices.js'
import type { ClipMetrics, RolloutMetrics } from '../options.js'
import type { TokenLayout } from '../tokens.js'
import { aggregationWeights, countValid, type Floats } from './aggregate.js'

export interface PolicyKernelOptions {
  clipLow: number
  clipHigh: number
  dualClip: number | null
  logRatioClamp: number
  /** the variant options (PolicyVariantArgs); absent: 'ppo' at token level, no correction */
  variant?: PolicyVariant
  isLevel?: IsLevel
  ratioCap?: number
  rolloutCorrection?: RolloutCorrection | null
  rolloutIsLow?: number
  rolloutIsHigh?: number
  opsmDelta?: number | null
}

/** The options with every variant option present. */
function withVariantDefaults(o: PolicyKernelOptions): Required<PolicyKernelOptions> {
  return {
    variant: 'ppo', isLevel: 'token', ratioCap: 20, rolloutCorrection: null, rolloutIsLow: 0.5, rolloutIsHigh: 2, opsmDelta: null,
    ...o,
  } as Required<PolicyKernelOptions>
}

/** What one token contributes; filled by policyToken (a reused record, no allocation per token). */
export interface PolicyTokenState {
  loss: number
  /** dℓ/dlogp; for 'ppo', dℓ/dlog r (the same at token level) */
  grad: number
  ratio: number
  clippedLow: boolean
  clippedHigh: boolean
  dualClipped: boolean
}

export function newPolicyTokenState(): PolicyTokenState {
  return { loss: 0, grad: 0, ratio: 1, clippedLow: false, clippedHigh: false, dualClipped: false }
}

/**
 * One token's loss and gradient; d is the log-ratio to use (the token's own, or its sequence's mean), sgLogp
 * the value of logp inside the stop-gradients (DPPO's p; equal to logp except in finite-difference checks).
 */
export function policyToken(logp: number, old: number, A: number, o: PolicyKernelOptions, s: PolicyTokenState, d = logp - old, sgLogp = logp, divergence = NaN): void {
  const C = o.logRatioClamp
  const dc = d > C ? C : d < -C ? -C : d
  const r = Math.exp(dc)
  const lo = 1 - o.clipLow
  const hi = 1 + o.clipHigh
  s.ratio = r
  s.dualClipped = false
  if (o.variant === 'cispo') {
    const wgt = r < lo ? lo : r > hi ? hi : r
    s.loss = -wgt * A * logp
    s.grad = -wgt * A
    s.clippedLow = r < lo
    s.clippedHigh = r > hi
    return
  }
  if (o.variant === 'dppo-tv' || o.variant === 'dppo-kl') {
    const p = Math.exp(sgLogp), pOld = Math.exp(old)
    let keep: boolean
    if (!Number.isNaN(divergence)) {  // the full-vocabulary divergence of the position (trustRegion 'full')
      keep = A > 0 ? divergence <= o.clipHigh || p <= pOld : divergence <= o.clipLow || p >= pOld
    } else if (o.variant === 'dppo-tv') {
      keep = A > 0 ? p - pOld <= o.clipHigh : p - pOld >= -o.clipLow
    } else {
      const b = pOld * (old - sgLogp) + (1 - pOld) * Math.log((1 - pOld + 1e-8) / (1 - p + 1e-8))
      keep = A > 0 ? b <= o.clipHigh || p <= pOld : b <= o.clipLow || p >= pOld
    }
    const cap = o.ratioCap ?? 20
    const wgt = r < cap ? r : cap
    s.loss = keep ? -A * wgt * logp : 0
    s.grad = keep ? -A * wgt : 0
    s.clippedLow = !keep && !(A > 0)
    s.clippedHigh = !keep && A > 0
    s.dualClipped = keep && r > cap
    return
  }
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
  s.clippedHigh = clipped && A > 0
  s.clippedLow = clipped && A < 0
  s.dualClipped = dual
}

/** Whether the variant options need per-sequence sums (the ratio's or the rollout weight's mean, OPSM). */
export function needsSequences(o: Required<PolicyKernelOptions>): boolean {
  return o.isLevel !== 'token' || o.rolloutCorrection === 'sequence-truncate' || o.rolloutCorrection === 'sequence-mask' || o.opsmDelta !== null
}

/** The rollout metrics' sums over the counted tokens (and sequences), shared by policyLoss and ppoLoss. */
export class RolloutStats {
  wSum = 0
  wMax = -Infinity
  k1 = 0
  k3 = 0
  mismatch = 0
  dropped = 0
  truncated = 0
  seqs = 0
  seqDropped = 0
  seqTruncated = 0
  opsm = 0

  result(n: number) {
    const f = n > 0 ? 1 / n : 0, fs = this.seqs > 0 ? 1 / this.seqs : 0
    return {
      rolloutDropFraction: this.dropped * f, rolloutTruncateFraction: this.truncated * f,
      rolloutSeqDropFraction: this.seqDropped * fs, rolloutSeqTruncateFraction: this.seqTruncated * fs,
      rolloutWeightMean: this.wSum * f, rolloutWeightMax: n > 0 && this.wMax > -Infinity ? this.wMax : 0,
      rolloutKlK1: this.k1 * f, rolloutKlK3: this.k3 * f, rolloutMismatchFraction: this.mismatch * f, opsmDropFraction: this.opsm * f,
    }
  }
}

/**
 * The policy terms of every token: perToken[t] = ρ_t ℓ_t, grad[t] = d(Σ_u W_u ρ_u ℓ_u)/dlogp_t, the loss
 * Σ_t W_t ρ_t ℓ_t, and the metrics. W: the aggregation weights; behavior may be null (no rollout terms).
 * Phases: per sequence the means of d and of oldLogp − behaviorLogp (when a sequence option asks), then the
 * tokens, then (isLevel 'sequence' with 'ppo') each sequence's gradient spread over its tokens.
 * sgLogp: the values of logp inside the stop-gradients (default logp itself); a finite-difference check holds
 * them at the base point, so that the derivative of the loss it sees is the gradient the kernel returns.
 * divergence: each token's full-vocabulary trust-region divergence D_t for 'dppo-*' (ppoLoss trustRegion
 * 'full'), or null (the binary one).
 */
export function policyTerms(
  logp: Floats, old: Floats, A: Floats, behavior: Floats | null, valid: Uint8Array | null, layout: TokenLayout, W: Float64Array,
  options: PolicyKernelOptions, perToken: Floats, grad: Floats, sgLogp: Floats = logp, divergence: Floats | null = null,
) {
  const o = withVariantDefaults(options)
  const sg = sgLogp
  const { offsets } = layout
  const S = offsets.length - 1
  const C = o.logRatioClamp
  const s = newPolicyTokenState()
  const stats = new ClipStats()
  const ro = new RolloutStats()
  const seqs = needsSequences(o)
  const coupled = o.isLevel === 'sequence' && o.variant === 'ppo'
  const seqMode = o.rolloutCorrection === 'sequence-truncate' || o.rolloutCorrection === 'sequence-mask'
  let loss = 0
  for (let i = 0; i < S; i++) {
    let n = 0, dSum = 0, dSumSg = 0, bSum = 0
    if (seqs) {
      for (let t = offsets[i]; t < offsets[i + 1]; t++) {
        if (valid !== null && !valid[t]) continue
        n++
        dSum += logp[t] - old[t]
        dSumSg += sg[t] - old[t]
        if (behavior !== null) bSum += old[t] - behavior[t]
      }
    } else {
      for (let t = offsets[i]; t < offsets[i + 1]; t++) n += valid === null || valid[t] ? 1 : 0
    }
    const dMean = n > 0 ? dSum / n : 0
    const dMeanSg = n > 0 ? dSumSg / n : 0
    const bMean = n > 0 ? bSum / n : 0
    const wSeq = Math.exp(bMean > C ? C : bMean < -C ? -C : bMean)
    const opsmSeq = o.opsmDelta !== null && n > 0 && -dMeanSg > o.opsmDelta
    if (n > 0) {
      ro.seqs++
      if (o.rolloutCorrection === 'sequence-truncate' && wSeq > o.rolloutIsHigh) ro.seqTruncated++
      if (o.rolloutCorrection === 'sequence-mask' && (wSeq < o.rolloutIsLow || wSeq > o.rolloutIsHigh)) ro.seqDropped++
    }
    let gSum = 0
    for (let t = offsets[i]; t < offsets[i + 1]; t++) {
      if (valid !== null && !valid[t]) {
        perToken[t] = 0
        grad[t] = 0
        continue
      }
      // the log-ratio: 'ppo' differentiates it (token d, or s_i through the mean, or GSPO-token's
      // sg(log s_i) + logp − sg(logp)); the other variants detach it
      const live = o.variant === 'ppo'
      const d = o.isLevel === 'token' ? (live ? logp[t] : sg[t]) - old[t]
        : o.isLevel === 'sequence' ? (live ? dMean : dMeanSg)
          : dMeanSg + (live ? logp[t] - sg[t] : 0)
      policyToken(logp[t], old[t], A[t], o, s, d, sg[t], divergence === null ? NaN : divergence[t])
      let rho = 1
      if (behavior !== null) {
        const b = old[t] - behavior[t]
        const w = Math.exp(b > C ? C : b < -C ? -C : b)
        ro.wSum += w
        if (w > ro.wMax) ro.wMax = w
        ro.k1 += -b
        ro.k3 += w - 1 - b
        if (Math.abs(w - 1) > 0.1) ro.mismatch++
        const x = seqMode ? wSeq : w
        if (o.rolloutCorrection === 'token-truncate' || o.rolloutCorrection === 'sequence-truncate') {
          if (x > o.rolloutIsHigh) ro.truncated++
          rho = x > o.rolloutIsHigh ? o.rolloutIsHigh : x
        } else if (o.rolloutCorrection === 'token-mask' || o.rolloutCorrection === 'sequence-mask') {
          const drop = x < o.rolloutIsLow || x > o.rolloutIsHigh
          if (drop) ro.dropped++
          rho = drop ? 0 : x
        }
      }
      if (opsmSeq && A[t] < 0) {
        ro.opsm++
        rho = 0
      }
      stats.add(s)
      perToken[t] = rho * s.loss
      loss += W[t] * rho * s.loss
      const g = W[t] * rho * s.grad
      if (coupled) gSum += g
      else grad[t] = g
    }
    if (coupled) for (let t = offsets[i]; t < offsets[i + 1]; t++) if (valid === null || valid[t]) grad[t] = gSum / n
  }
  const n = countValid(valid, layout.tokens)
  return { loss, ...stats.result(n), ...ro.result(n) }
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

export interface PolicyKernelResult extends ClipMetrics, RolloutMetrics {
  loss: number
}

export function policyLossKernel(
  logp: Floats, old: Floats, A: Floats, valid: Uint8Array | null, layout: TokenLayout, agg: Aggregation,
  o: PolicyKernelOptions, perToken: Floats, grad: Floats, behavior: Floats | null = null, sgLogp: Floats = logp,
): PolicyKernelResult {
  const M = layout.tokens
  const w = new Float64Array(M)
  aggregationWeights(layout, valid, agg, w)
  const r = policyTerms(logp, old, A, behavior, valid, layout, w, o, perToken, grad, sgLogp)
  let kl = 0
  for (let t = 0; t < M; t++) if (valid === null || valid[t]) kl += w[t] * (old[t] - logp[t])
  return { ...r, count: countValid(valid, M), approxKl: kl }
}
