/**
 * KL divergences (DESIGN §1.5): the exact full-vocabulary KL(p‖q) between two logits tensors, and the
 * sampled-token estimators k1/abs/k2/k3 from per-token log-probabilities.
 */
import { AGGREGATION_OPTIONS, type AggregationOptions } from './aggregate.js'
import { KL_GRADS, REDUCTIONS, type GradDTypeChoice, type KlEstimator, type KlGrad, type Reduction } from './choices.js'
import { rangeError, typeError } from './errors.js'
import { defineOp } from './ops.js'
import { LOG_RATIO_CLAMP, type Temperature, klEstimatorOption, temperatureOption } from './options.js'
import { type TokenBatch, type TokenFloats, type TokenMask, tokenBatch, tokenShape } from './tokens.js'
import type { Tensor } from './tensor.js'
import {
  type FloatData, type OptionNames, choiceOption, floatMatrix, floatVector, maskVector, numberOption, optionalNumber, optionsObject,
  type GradDType, gradDTypeOption,
} from './validate.js'
import { PRESET_OPTION, type PresetOption } from './presets.js'

export interface KlDivergenceOptions {
  /** logits of p (e.g. π_old or π_ref), [N, V] */
  pLogits: Tensor
  /** logits of q (e.g. π_θ), same shape */
  qLogits: Tensor
  /** N rows; nonzero = the row counts */
  mask?: TokenMask
  /** 'mean' over counted rows (default), 'sum' or 'none' */
  reduction?: Reduction
  /** both logits are divided by T: one number, or a Float32Array of N (row n's T); default 1 */
  temperature?: number | Float32Array
  /** which gradients to return: 'q' (default when true), 'p', 'both', or false */
  grad?: boolean | KlGrad
  /** 'float32' (default) or 'input': the gradients in the logits' dtype when it is bfloat16/float16 */
  gradDtype?: GradDTypeChoice
}

export interface KlDivergenceResult {
  /** the reduced KL; Σ perRow for reduction 'none' */
  loss: number
  perRow: Float32Array
  count: number
  gradQ?: Tensor
  gradP?: Tensor
}

export interface KlDivergenceArgs {
  pLogits: FloatData
  qLogits: FloatData
  shape: readonly number[]
  N: number
  V: number
  mask: Uint8Array | null
  reduction: Reduction
  temperature: Temperature
  gradQ: boolean
  gradP: boolean
  gradDtype: GradDType
}

const KL_DIVERGENCE_OPTIONS: OptionNames<KlDivergenceOptions> = {
  pLogits: true, qLogits: true, mask: true, reduction: true, temperature: true, grad: true, gradDtype: true,
}

function validateKlDivergence(options: KlDivergenceOptions): KlDivergenceArgs {
  const op = 'klDivergence'
  const o = optionsObject(op, options, KL_DIVERGENCE_OPTIONS)
  const p = floatMatrix(op, 'pLogits', o.pLogits)
  const q = floatMatrix(op, 'qLogits', o.qLogits)
  if (p.shape.length !== q.shape.length || p.shape.some((d, i) => d !== q.shape[i])) {
    throw rangeError(op, 'qLogits.shape', `[${p.shape.join(', ')}] (the shape of pLogits)`, `[${q.shape.join(', ')}]`)
  }
  if (p.dtype !== q.dtype) throw typeError(op, 'qLogits', `a Tensor of dtype '${p.dtype}' (the dtype of pLogits)`, `Tensor(dtype '${q.dtype}')`)
  const grad = o.grad === true ? 'q' : o.grad === undefined ? false : o.grad
  if (grad !== false && grad !== 'q' && grad !== 'p' && grad !== 'both') {
    choiceOption(op, 'grad', grad, KL_GRADS, 'q')
  }
  return {
    pLogits: p, qLogits: q, shape: p.shape, N: p.rows, V: p.cols,
    mask: maskVector(op, 'mask', o.mask, p.rows),
    reduction: choiceOption(op, 'reduction', o.reduction, REDUCTIONS, 'mean'),
    temperature: temperatureOption(op, o.temperature, p.rows),
    gradQ: grad === 'q' || grad === 'both',
    gradP: grad === 'p' || grad === 'both',
    gradDtype: gradDTypeOption(op, o.gradDtype, p.dtype),
  }
}

export interface KlPenaltyOptions extends AggregationOptions, PresetOption {
  logp: TokenFloats
  refLogp: TokenFloats
  /** 'k1' | 'abs' | 'k2' | 'k3' (aliases kl, mse, low_var_kl); default 'k3' */
  estimator?: KlEstimator | 'kl' | 'mse' | 'low_var_kl'
  mask?: TokenMask
  /** δ = logp − refLogp is clamped to ±this before exp; default 20 */
  logRatioClamp?: number
  /** clamp each estimate to ±this (verl/OpenRLHF: 10); default off */
  outputClamp?: number | null
}

export interface KlPenaltyResult {
  loss: number
  perToken: Float32Array
  gradLogp: Float32Array
}

export interface KlPenaltyArgs extends TokenBatch {
  logp: FloatData
  refLogp: FloatData
  estimator: KlEstimator
  logRatioClamp: number
  outputClamp: number | null
}

const KL_PENALTY_OPTIONS: OptionNames<KlPenaltyOptions> = {
  ...AGGREGATION_OPTIONS, ...PRESET_OPTION, logp: true, refLogp: true, estimator: true, mask: true, logRatioClamp: true, outputClamp: true,
}

function validateKlPenalty(options: KlPenaltyOptions): KlPenaltyArgs {
  const op = 'klPenalty'
  const o = optionsObject(op, options, KL_PENALTY_OPTIONS)
  const batch = tokenBatch(op, 'logp', tokenShape(op, 'logp', o.logp), o)
  const M = batch.layout.tokens
  // one literal: V8 builds `{ ...a, b }` through a slow path (a new map per call; bench/NOTES.md "Version 5")
  return {
    layout: batch.layout, mask: batch.mask, agg: batch.agg,
    logp: floatVector(op, 'logp', o.logp, M),
    refLogp: floatVector(op, 'refLogp', o.refLogp, M),
    estimator: klEstimatorOption(op, o.estimator, 'k3'),
    logRatioClamp: numberOption(op, 'logRatioClamp', o.logRatioClamp, 20, LOG_RATIO_CLAMP),
    outputClamp: optionalNumber(op, 'outputClamp', o.outputClamp, { above: 0 }),
  }
}

export const [klDivergence, klDivergenceAsync] = defineOp('klDivergence', validateKlDivergence, KL_DIVERGENCE_OPTIONS)
export const [klPenalty, klPenaltyAsync] = defineOp('klPenalty', validateKlPenalty, KL_PENALTY_OPTIONS)
