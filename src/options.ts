/**
 * Option readers that more than one op uses (the clipping of policyLoss and ppoLoss, the value clip of
 * valueLoss and ppoLoss, the KL estimator of klPenalty and ppoLoss, index vectors checked against V, ragged
 * groups of rewardLoss and groupAdvantages). Op modules import them from here, never from each other.
 */
import {
  IS_LEVELS, KL_ESTIMATORS, KL_ESTIMATOR_ALIASES, POLICY_VARIANTS, ROLLOUT_CORRECTIONS, type IsLevel, type KlEstimator, type PolicyVariant,
  type RolloutCorrection,
} from './choices.js'
import { rangeError, typeError } from './errors.js'
import { isDeviceData } from './tensor.js'
import { madeArray, plainView } from './arrays.js'
import type { TokenFloats } from './tokens.js'
import { type FloatData, type NumberRule, type OptionNames, TEMPERATURE, booleanOption, choiceOption, floatVector, hostOnly, intVector, numberOption, optionalNumber } from './validate.js'

/** The clipping options of policyLoss and ppoLoss. */
export interface ClipOptions {
  /** ε_low ≥ 0; default 0.2 */
  clipLow?: number
  /** ε_high ≥ 0; default clipLow (DAPO uses 0.28) */
  clipHigh?: number
  /** dual clip c > 1 (Ye et al.; verl's default is 3); default off */
  dualClip?: number | null
  /** |logp − oldLogp| is clamped to this before exp (verl/OpenRLHF: 20); default 20 */
  logRatioClamp?: number
}

/** What the clipping reports: policyLoss's result and ppoLoss's metrics include these. */
export interface ClipMetrics {
  /** share of counted tokens whose clipped branch is active (= low + high) */
  clipFraction: number
  clipFractionLow: number
  clipFractionHigh: number
  dualClipFraction: number
  /** agg(oldLogp − logp) */
  approxKl: number
  ratioMean: number
  ratioMax: number
  /** counted tokens */
  count: number
}

/** |logp − oldLogp| ≤ C before exp: above 80, exp(C) would leave the float32 range (3.4e38 at 88.7). */
export const LOG_RATIO_CLAMP: NumberRule = { above: 0, max: 80 }

export const CLIP_OPTIONS: OptionNames<ClipOptions> = { clipLow: true, clipHigh: true, dualClip: true, logRatioClamp: true }

export function clipOptions(op: string, o: ClipOptions) {
  const clipLow = numberOption(op, 'clipLow', o.clipLow, 0.2, { min: 0 })
  return {
    clipLow,
    clipHigh: numberOption(op, 'clipHigh', o.clipHigh, clipLow, { min: 0 }),
    dualClip: optionalNumber(op, 'dualClip', o.dualClip, { above: 1 }),
    logRatioClamp: numberOption(op, 'logRatioClamp', o.logRatioClamp, 20, LOG_RATIO_CLAMP),
  }
}

export function valueOptions(op: string, clipName: string, clipValue: unknown, halfValue: unknown) {
  return {
    clip: optionalNumber(op, clipName, clipValue, { min: 0 }),
    half: booleanOption(op, 'half', halfValue, false),
  }
}

export function klEstimatorOption(op: string, value: unknown, fallback: KlEstimator): KlEstimator {
  if (typeof value === 'string' && value in KL_ESTIMATOR_ALIASES) return KL_ESTIMATOR_ALIASES[value]
  return choiceOption(op, 'estimator', value, KL_ESTIMATORS, fallback)
}

/** Every index in [0, V), or equal to ignoreIndex when there is one; the first bad row is named. */
export function checkTargets(op: string, name: string, t: Int32Array, V: number, ignoreIndex: number | null): void {
  if (isDeviceData(t)) return  // checked by the kernel: a device flag, then a RangeError naming the row
  for (let n = 0; n < t.length; n++) {
    const y = t[n]
    if ((y < 0 || y >= V) && y !== ignoreIndex) {
      const expected = ignoreIndex === null ? `in [0, ${V})` : `in [0, ${V}) or equal to ignoreIndex (${ignoreIndex})`
      throw rangeError(op, `${name}[${n}]`, expected, y)
    }
  }
}

/**
 * The candidates of rewardLoss and preferenceLoss: one float each under `key`, flat, prompt after prompt,
 * grouped by `offsets` (ragged) or a uniform `K`; N prompts.
 */
export function promptCandidates(op: string, key: string, values: unknown, o: { offsets?: unknown; K?: unknown }) {
  const data = floatVector(op, key, values)
  const total = data.data.length
  const offsets = groupOffsets(op, total, o.offsets, o.K, 'K', 'prompt')
  return { data, total, offsets, N: offsets.length - 1 }
}

/** N groups of K items each, for callers that need no offsets array (a uniform K of rewardLoss). */
export interface UniformGroups {
  N: number
  K: number
}

/** The first item of group n (0 ≤ n ≤ N): offsets[n], or n·K for a uniform K (offsets null). */
export function groupStart(g: { offsets: Int32Array | null; K: number | null }, n: number): number {
  return g.offsets === null ? n * g.K! : g.offsets[n]
}

/**
 * The label of rewardLoss and preferenceLoss: `chosen` (one index per prompt; host data only when `host`), or
 * the op's other label `otherName` (the caller reads it), exactly one of the two. null: the other. The indices
 * are checked here when `check`, else by the kernel that reads them (rewardLoss: the js kernel through
 * checkChosen, the addon after its last copy; once, not twice per call over a million prompts).
 */
export function chosenLabels(
  op: string, chosen: unknown, otherName: string, other: unknown, groups: Int32Array | UniformGroups, ignoreIndex: number, host: boolean,
  check = true,
): Int32Array | null {
  if ((chosen === undefined) === (other === undefined)) {
    throw typeError(op, 'chosen', `given, or ${otherName}, but not both`, chosen === undefined ? undefined : 'both')
  }
  if (chosen === undefined) return null
  const labels = intVector(op, 'chosen', chosen, groups instanceof Int32Array ? groups.length - 1 : groups.N)
  if (host) hostOnly(op, 'chosen', labels)
  if (check) checkChosen(op, labels, groups, ignoreIndex)
  return labels
}

/** Each group's chosen index in [0, K_n), or equal to ignoreIndex (rewardLoss, preferenceLoss); device labels are the kernel's to check. */
export function checkChosen(op: string, chosen: Int32Array, groups: Int32Array | UniformGroups, ignoreIndex: number): void {
  if (isDeviceData(chosen)) return  // a device flag, then a RangeError naming the prompt
  const offsets = groups instanceof Int32Array ? groups : null, uniformK = offsets === null ? (groups as UniformGroups).K : 0
  for (let n = 0; n < chosen.length; n++) {
    const b = chosen[n], K = offsets === null ? uniformK : offsets[n + 1] - offsets[n]
    if (!(b >= 0 && b < K) && b !== ignoreIndex) throw rangeError(op, `chosen[${n}]`, `in [0, ${K}) or equal to ignoreIndex (${ignoreIndex})`, b)
  }
}

/** Offsets of ragged groups, from `offsets` or a uniform group size; an empty group is a RangeError. */
export function groupOffsets(op: string, total: number, offsets: unknown, size: unknown, sizeName: string, what = 'group'): Int32Array {
  if (offsets !== undefined && size !== undefined) throw typeError(op, sizeName, `absent when offsets is given`, size)
  if (offsets !== undefined) {
    const off = hostOnly(op, 'offsets', intVector(op, 'offsets', offsets))
    if (off.length < 1) throw rangeError(op, 'offsets.length', '≥ 1 (N + 1 entries)', off.length)
    if (off[0] !== 0) throw rangeError(op, 'offsets[0]', '0', off[0])
    for (let n = 1; n < off.length; n++) {
      if (off[n] < off[n - 1]) throw rangeError(op, `offsets[${n}]`, `non-decreasing (≥ offsets[${n - 1}] = ${off[n - 1]})`, off[n])
      if (off[n] === off[n - 1]) {
        throw new RangeError(`${op}: ${what} ${n - 1} has no candidates (offsets[${n}] = offsets[${n - 1}] = ${off[n]}); every ${what} needs at least one`)
      }
    }
    if (off[off.length - 1] !== total) {
      throw rangeError(op, `offsets[${off.length - 1}]`, `the score count ${total}`, off[off.length - 1])
    }
    return off
  }
  if (size === undefined) throw typeError(op, 'offsets', `an Int32Array (or ${sizeName}: a number)`, undefined)
  return uniformOffsets(total, groupSize(op, total, size, sizeName))
}

/** A uniform group size (≥ 1, dividing `total`), checked as groupOffsets checks it. */
export function groupSize(op: string, total: number, size: unknown, sizeName: string): number {
  const k = numberOption(op, sizeName, size, 1, { integer: true, min: 1 })
  if (total % k !== 0) throw rangeError(op, 'scores.length', `a multiple of ${sizeName} = ${k}`, total)
  if (total > 0x7fffffff) throw rangeError(op, 'scores.length', 'at most 2^31 - 1 (offsets are int32)', total)
  return k
}

/** The offsets of total / k groups of k. */
export function uniformOffsets(total: number, k: number): Int32Array {
  const out = madeArray(Int32Array, total / k + 1)
  for (let n = 0; n < out.length; n++) out[n] = n * k
  return out
}

/**
 * The policy variants of policyLoss and ppoLoss (README "Policy variants"): the objective, where the ratio is
 * formed, the three-policy rollout correction and off-policy sequence masking.
 */
export interface PolicyVariantOptions {
  /** 'ppo' (default), 'cispo' (MiniMax-M1), 'dppo-tv' / 'dppo-kl' (DPPO binary trust-region masks) */
  variant?: PolicyVariant
  /** 'token' (default), 'sequence' (GSPO: the ratio through the sequence mean), 'sequence-token' (GSPO-token) */
  isLevel?: IsLevel
  /** c of dppo-*: the detached weight is min(r, c) (verl's clip_ratio_c in dppo_tv/dppo_kl); default 20 */
  ratioCap?: number
  /** log π_behavior(a): the inference engine's log-probs, the third policy; w = exp(oldLogp − behaviorLogp) */
  behaviorLogp?: TokenFloats
  /** how w corrects the loss; absent or null: metrics only */
  rolloutCorrection?: RolloutCorrection | null
  /** lower bound of the *-mask modes; default 1/rolloutIsHigh */
  rolloutIsLow?: number
  /** C of the *-truncate modes and upper bound of the *-mask modes (verl rollout_is_threshold, slime tis_clip); default 2 */
  rolloutIsHigh?: number
  /** δ of off-policy sequence masking (slime opsm_delta): drop tokens with A < 0 of sequences with mean(oldLogp − logp) > δ; default off */
  opsmDelta?: number | null
}

/** What the rollout correction and OPSM report (0 when behaviorLogp / opsmDelta is absent). */
export interface RolloutMetrics {
  /** share of counted tokens whose correction weight is 0 (a *-mask mode) */
  rolloutDropFraction: number
  /** share of counted tokens whose weight was truncated to C (a *-truncate mode) */
  rolloutTruncateFraction: number
  /** share of sequences (with a counted token) dropped by 'sequence-mask' */
  rolloutSeqDropFraction: number
  /** share of sequences truncated by 'sequence-truncate' */
  rolloutSeqTruncateFraction: number
  /** mean and max of the per-token w = exp(oldLogp − behaviorLogp) over counted tokens */
  rolloutWeightMean: number
  rolloutWeightMax: number
  /** k1 estimate of KL(behavior ‖ old): mean(behaviorLogp − oldLogp) */
  rolloutKlK1: number
  /** k3 estimate of KL(behavior ‖ old): mean(w − 1 − log w) */
  rolloutKlK3: number
  /** share of counted tokens with |w − 1| > 0.1 */
  rolloutMismatchFraction: number
  /** share of counted tokens dropped by off-policy sequence masking */
  opsmDropFraction: number
}

export const POLICY_VARIANT_OPTIONS: OptionNames<PolicyVariantOptions> = {
  variant: true, isLevel: true, ratioCap: true, behaviorLogp: true, rolloutCorrection: true, rolloutIsLow: true, rolloutIsHigh: true,
  opsmDelta: true,
}

export interface PolicyVariantArgs {
  variant: PolicyVariant
  isLevel: IsLevel
  ratioCap: number
  behaviorLogp: FloatData | null
  rolloutCorrection: RolloutCorrection | null
  rolloutIsLow: number
  rolloutIsHigh: number
  opsmDelta: number | null
}

/** The variant options of M tokens; dualClip (read by clipOptions) belongs to variant 'ppo' only. */
export function policyVariantOptions(op: string, o: PolicyVariantOptions & ClipOptions, M: number): PolicyVariantArgs {
  const variant = choiceOption(op, 'variant', o.variant, POLICY_VARIANTS, 'ppo')
  if (variant !== 'ppo' && o.dualClip !== undefined && o.dualClip !== null) {
    throw typeError(op, 'dualClip', `absent or null with variant '${variant}' (dual clip belongs to 'ppo')`, o.dualClip)
  }
  const behaviorLogp = o.behaviorLogp === undefined ? null : floatVector(op, 'behaviorLogp', o.behaviorLogp, M)
  const rolloutCorrection = o.rolloutCorrection === undefined || o.rolloutCorrection === null
    ? null : choiceOption(op, 'rolloutCorrection', o.rolloutCorrection, ROLLOUT_CORRECTIONS, 'token-truncate')
  if (rolloutCorrection !== null && behaviorLogp === null) throw typeError(op, 'behaviorLogp', `given for rolloutCorrection '${rolloutCorrection}'`, undefined)
  const rolloutIsHigh = numberOption(op, 'rolloutIsHigh', o.rolloutIsHigh, 2, { above: 0 })
  const rolloutIsLow = numberOption(op, 'rolloutIsLow', o.rolloutIsLow, 1 / rolloutIsHigh, { min: 0 })
  if (rolloutIsLow > rolloutIsHigh) throw rangeError(op, 'rolloutIsLow', `≤ rolloutIsHigh (${rolloutIsHigh})`, rolloutIsLow)
  return {
    variant,
    isLevel: choiceOption(op, 'isLevel', o.isLevel, IS_LEVELS, 'token'),
    ratioCap: numberOption(op, 'ratioCap', o.ratioCap, 20, { above: 0 }),
    behaviorLogp, rolloutCorrection, rolloutIsLow, rolloutIsHigh,
    opsmDelta: optionalNumber(op, 'opsmDelta', o.opsmDelta, { min: 0 }),
  }
}

/**
 * temperature: one T for every row (a number), or a T per row (a Float32Array, or a Float64Array, of the row
 * count), each > 0 as TEMPERATURE requires. A per-row array is copied (as float32) before its values are
 * checked, so a later write to the caller's array changes nothing; it must be host data.
 */
export type Temperature = number | Float32Array

export function temperatureOption(op: string, value: unknown, rows: number): Temperature {
  if (typeof value === 'number' || value === undefined) return numberOption(op, 'temperature', value, 1, TEMPERATURE)
  const view = plainView(value, 'Float32Array') ?? plainView(value, 'Float64Array')
  if (view === undefined) throw typeError(op, 'temperature', 'a number, or a Float32Array of one temperature per row', value)
  if (view.length !== rows) throw rangeError(op, 'temperature.length', String(rows), view.length)
  const t = Float32Array.from(view)
  for (let n = 0; n < rows; n++) {
    if (!(t[n] >= 1e-6 && t[n] < Infinity)) throw rangeError(op, `temperature[${n}]`, 'a finite number ≥ 1e-6 as a float32', view[n])
  }
  return t
}

/** 1/T of row n. */
export const invTemperature = (t: Temperature, n: number): number => 1 / (typeof t === 'number' ? t : t[n])

/** The smallest temperature of any row (the gradient tolerances scale with 1/T). */
export const minTemperature = (t: Temperature): number => (typeof t === 'number' ? t : t.reduce((a, b) => Math.min(a, b), Infinity))
