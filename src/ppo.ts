/**
 * The fused PPO objective (DESIGN §1.7): from the policy logits, everything one update step needs.
 * loss = policyLoss + β·kl + c1·valueLoss = −(L_RL − β L_KL − c1 L_V), all three aggregated alike (§1.9).
 */
import { AGGREGATION_OPTIONS, type AggregationOptions } from './aggregate.js'
import { rangeError, typeError } from './errors.js'
import { TRUST_REGIONS, type GradDTypeChoice, type KlEstimator, type TrustRegion } from './choices.js'
import { defineOp } from './ops.js'
import {
  CLIP_OPTIONS, type ClipMetrics, type ClipOptions, POLICY_VARIANT_OPTIONS, type PolicyVariantArgs, type PolicyVariantOptions, type RolloutMetrics,
  type Temperature, checkTargets, clipOptions, klEstimatorOption, policyVariantOptions, temperatureOption, valueOptions,
} from './options.js'
import { type TokenBatch, type TokenFloats, type TokenMask, tokenBatch } from './tokens.js'
import type { Tensor } from './tensor.js'
import {
  type FloatData, type GradDType, type OptionNames, choiceOption, floatMatrix, floatVector, gradDTypeOption, intVector, numberOption, optionalNumber,
  optionsObject,
} from './validate.js'
import { PRESET_OPTION, type PresetOption } from './presets.js'

export interface PpoLossOptions extends AggregationOptions, ClipOptions, PolicyVariantOptions, PresetOption {
  /** policy logits, [N, V] or [B, T, V]; one row per token */
  logits: Tensor
  /** the sampled token of each row */
  actions: Int32Array | Tensor
  /** log π_old(a); taken from oldLogits when absent */
  oldLogp?: TokenFloats
  /** π_old logits: the anchor of the full KL (the seed's KL(π_old ‖ π_θ)) */
  oldLogits?: Tensor
  /** π_ref logits: the anchor of the KL instead of π_old */
  refLogits?: Tensor
  /** log π_ref(a) for the sampled estimators */
  refLogp?: TokenFloats
  advantages: TokenFloats
  values?: TokenFloats
  returns?: TokenFloats
  oldValues?: TokenFloats
  mask?: TokenMask
  /** logits are divided by T: one number, or a Float32Array of one T per token; default 1 */
  temperature?: number | Float32Array
  /** KL coefficient β ≥ 0; default 0 */
  beta?: number
  /** value coefficient c1 ≥ 0; default 0.1 (TRL's vf_coef) */
  c1?: number
  /** 'full' (default when anchor logits are given) or a sampled estimator (default 'k3' otherwise) */
  klEstimator?: KlEstimator | 'full'
  /** clamp each sampled KL estimate to ±this; default off */
  klOutputClamp?: number | null
  /** ε_v of the clipped value loss; default off */
  valueClip?: number | null
  /** the ½ of TRL/verl/OpenRLHF on the value loss; default false */
  half?: boolean
  /** 'float32' (default) or 'input': gradLogits in the logits' dtype when it is bfloat16/float16 */
  gradDtype?: GradDTypeChoice
  /**
   * variant 'dppo-tv' / 'dppo-kl': 'binary' (default; the taken token's binary TV / KL, as verl) or 'full' (each
   * position's exact full-vocabulary TV or KL(π_old ‖ π) against oldLogits, computed with the loss)
   */
  trustRegion?: TrustRegion
}

export interface PpoMetrics extends ClipMetrics, RolloutMetrics {
  valueClipFraction: number
}

export interface PpoLossResult {
  /** −objective: minimise this */
  loss: number
  /** L_RL − β L_KL − c1 L_V */
  objective: number
  policyLoss: number
  kl: number
  valueLoss: number
  /** log π_θ(a) at the given temperature, 0 where masked */
  logp: Float32Array
  gradLogits: Tensor
  gradValues?: Float32Array
  metrics: PpoMetrics
}

export interface PpoLossArgs extends TokenBatch, PolicyVariantArgs {
  logits: FloatData
  shape: readonly number[]
  V: number
  actions: Int32Array
  oldLogp: FloatData | null
  anchorLogits: FloatData | null
  refLogp: FloatData | null
  advantages: FloatData
  values: FloatData | null
  returns: FloatData | null
  oldValues: FloatData | null
  temperature: Temperature
  clipLow: number
  clipHigh: number
  dualClip: number | null
  logRatioClamp: number
  beta: number
  c1: number
  klEstimator: KlEstimator | 'full'
  klOutputClamp: number | null
  valueClip: number | null
  half: boolean
  gradDtype: GradDType
  trustRegion: TrustRegion
}

const PPO_LOSS_OPTIONS: OptionNames<PpoLossOptions> = {
  ...AGGREGATION_OPTIONS, ...CLIP_OPTIONS, ...POLICY_VARIANT_OPTIONS, ...PRESET_OPTION, logits: true, actions: true, oldLogp: true, oldLogits: true, refLogits: true, refLogp: true,
  advantages: true, values: true, returns: true, oldValues: true, mask: true, temperature: true, beta: true, c1: true, klEstimator: true,
  klOutputClamp: true, valueClip: true, half: true, gradDtype: true, trustRegion: true,
}

function validatePpoLoss(options: PpoLossOptions): PpoLossArgs {
  const op = 'ppoLoss'
  const o = optionsObject(op, options, PPO_LOSS_OPTIONS)
  const m = floatMatrix(op, 'logits', o.logits)
  // [N, V] logits give N tokens; [B, T, V] logits give B sequences of T tokens
  const batch = tokenBatch(op, 'logits', m.shape.slice(0, -1), o)
  const M = m.rows
  const actions = intVector(op, 'actions', o.actions, M)
  checkTargets(op, 'actions', actions, m.cols, null)
  if (o.oldLogits !== undefined && o.refLogits !== undefined) throw typeError(op, 'refLogits', 'absent when oldLogits is given (one KL anchor)', 'both')
  const anchorName = o.oldLogits !== undefined ? 'oldLogits' : 'refLogits'
  const anchor = o.oldLogits ?? o.refLogits
  let anchorLogits: FloatData | null = null
  if (anchor !== undefined) {
    const a = floatMatrix(op, anchorName, anchor)
    if (a.rows !== m.rows || a.cols !== m.cols) {
      throw rangeError(op, `${anchorName}.shape`, `[${m.shape.join(', ')}] (the shape of logits)`, `[${a.shape.join(', ')}]`)
    }
    if (a.dtype !== m.dtype) throw typeError(op, anchorName, `a Tensor of dtype '${m.dtype}' (the dtype of logits)`, `Tensor(dtype '${a.dtype}')`)
    anchorLogits = a
  }
  if (o.oldLogp === undefined && o.oldLogits === undefined) throw typeError(op, 'oldLogp', 'given (or oldLogits)', undefined)
  const vec = (name: string, v: unknown) => (v === undefined ? null : floatVector(op, name, v, M))
  const klEstimator: KlEstimator | 'full' =
    o.klEstimator === 'full' ? 'full' : o.klEstimator === undefined && anchorLogits !== null ? 'full' : klEstimatorOption(op, o.klEstimator, 'k3')
  if (klEstimator === 'full' && anchorLogits === null) throw typeError(op, 'oldLogits', "given (or refLogits) for klEstimator 'full'", undefined)
  const values = vec('values', o.values)
  const returns = vec('returns', o.returns)
  if ((values === null) !== (returns === null)) throw typeError(op, values === null ? 'values' : 'returns', 'given together with ' + (values === null ? 'returns' : 'values'), undefined)
  const vopts = valueOptions(op, 'valueClip', o.valueClip, o.half)
  const oldValues = vec('oldValues', o.oldValues)
  if (vopts.clip !== null && oldValues === null) throw typeError(op, 'oldValues', 'given when valueClip is set', undefined)
  const variants = policyVariantOptions(op, o, M)
  const trustRegion = choiceOption(op, 'trustRegion', o.trustRegion, TRUST_REGIONS, 'binary')
  if (trustRegion === 'full') {
    if (variants.variant !== 'dppo-tv' && variants.variant !== 'dppo-kl') {
      throw typeError(op, 'trustRegion', `'binary' or absent with variant '${variants.variant}' (the trust region belongs to 'dppo-tv' / 'dppo-kl')`, trustRegion)
    }
    if (o.oldLogits === undefined) throw typeError(op, 'oldLogits', "given for trustRegion 'full' (the full distribution of π_old)", undefined)
  }
  const inputs = {
    layout: batch.layout, mask: batch.mask, agg: batch.agg,
    logits: m, shape: m.shape, V: m.cols, actions,
    oldLogp: vec('oldLogp', o.oldLogp), anchorLogits, refLogp: vec('refLogp', o.refLogp),
    advantages: floatVector(op, 'advantages', o.advantages, M),
    values, returns, oldValues,
    temperature: temperatureOption(op, o.temperature, M),
  }
  // Object.assign, not `{ ...a, b, ...c }`: V8 builds properties after a spread through a slow path (a new map
  // per call, tens of µs; bench/NOTES.md "Version 5"). The fields keep their order and their reading order.
  return Object.assign(inputs, clipOptions(op, o), variants, {
    beta: numberOption(op, 'beta', o.beta, 0, { min: 0 }),
    c1: numberOption(op, 'c1', o.c1, 0.1, { min: 0 }),
    klEstimator,
    klOutputClamp: optionalNumber(op, 'klOutputClamp', o.klOutputClamp, { above: 0 }),
    valueClip: vopts.clip,
    half: vopts.half,
    gradDtype: gradDTypeOption(op, o.gradDtype, m.dtype),
    trustRegion,
  })
}

export const [ppoLoss, ppoLossAsync] = defineOp('ppoLoss', validatePpoLoss, PPO_LOSS_OPTIONS)
