/**
 * Option readers that more than one op uses (the clipping of policyLoss and ppoLoss, the value clip of
 * valueLoss and ppoLoss, the KL estimator of klPenalty and ppoLoss, index vectors checked against V, ragged
 * groups of rewardLoss and groupAdvantages). Op modules import them from here, never from each other.
 */
import { KL_ESTIMATORS, KL_ESTIMATOR_ALIASES, type KlEstimator } from './choices.js'
import { rangeError, typeError } from './errors.js'
import { isDeviceData } from './tensor.js'
import { type NumberRule, type OptionNames, booleanOption, choiceOption, hostOnly, intVector, numberOption, optionalNumber } from './validate.js'

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

/** Each group's chosen index in [0, K_n), or equal to ignoreIndex (rewardLoss, preferenceLoss); device labels are the kernel's to check. */
export function checkChosen(op: string, chosen: Int32Array, offsets: Int32Array, ignoreIndex: number): void {
  if (isDeviceData(chosen)) return  // a device flag, then a RangeError naming the prompt
  for (let n = 0; n < chosen.length; n++) {
    const b = chosen[n], K = offsets[n + 1] - offsets[n]
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
  const k = numberOption(op, sizeName, size, 1, { integer: true, min: 1 })
  if (total % k !== 0) throw rangeError(op, 'scores.length', `a multiple of ${sizeName} = ${k}`, total)
  if (total > 0x7fffffff) throw rangeError(op, 'scores.length', 'at most 2^31 - 1 (offsets are int32)', total)
  const out = new Int32Array(total / k + 1)
  for (let n = 0; n < out.length; n++) out[n] = n * k
  return out
}
