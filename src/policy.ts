/**
 * PPO clipped policy loss (DESIGN §1.4) on per-token log-probabilities, aggregated as §1.9.
 * Token inputs are [B, T] Tensors or flat vectors (with `seqLengths` for packed sequences).
 */
import {
  AGGREGATION_OPTIONS, type AggregationOptions, type Aggregation, type TokenLayout, aggregationOptions, tokenLayout, tokenShape,
} from './aggregate.js'
import { defineOp } from './ops.js'
import type { Tensor } from './tensor.js'
import { type FloatData, type OptionNames, floatVector, maskVector, numberOption, optionalNumber, optionsObject } from './validate.js'

export type TokenFloats = Float32Array | Float64Array | Tensor
export type TokenMask = Uint8Array | Float32Array | Float64Array | Tensor

export interface PolicyLossOptions extends AggregationOptions {
  logp: TokenFloats
  oldLogp: TokenFloats
  advantages: TokenFloats
  /** nonzero = the token counts; default all */
  mask?: TokenMask
  /** ε_low ≥ 0; default 0.2 */
  clipLow?: number
  /** ε_high ≥ 0; default clipLow (DAPO uses 0.28) */
  clipHigh?: number
  /** dual clip c > 1 (Ye et al.; verl's default is 3); default off */
  dualClip?: number | null
  /** |logp − oldLogp| is clamped to this before exp (verl/OpenRLHF: 20); default 20 */
  logRatioClamp?: number
}

export interface PolicyLossResult {
  loss: number
  /** d loss / d logp, float32 */
  gradLogp: Float32Array
  /** −min(r A, clip(r) A) per token (0 where masked) */
  perToken: Float32Array
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

export interface TokenBatch {
  layout: TokenLayout
  mask: Uint8Array | null
  agg: Aggregation
}

/** The layout, mask and aggregation of a per-token op whose leading input has this shape. */
export function tokenBatch(op: string, name: string, shape: readonly number[], o: AggregationOptions & { mask?: unknown }): TokenBatch {
  const layout = tokenLayout(op, name, shape, o.seqLengths)
  return { layout, mask: maskVector(op, 'mask', o.mask, layout.tokens), agg: aggregationOptions(op, o) }
}

export interface PolicyLossArgs extends TokenBatch {
  logp: FloatData
  oldLogp: FloatData
  advantages: FloatData
  clipLow: number
  clipHigh: number
  dualClip: number | null
  logRatioClamp: number
}

/** |logp − oldLogp| ≤ C before exp: above 80, exp(C) would leave the float32 range (3.4e38 at 88.7). */
export const LOG_RATIO_CLAMP = { above: 0, max: 80 }

/** The clipping options, shared with ppoLoss. */
export const POLICY_OPTIONS: OptionNames<Pick<PolicyLossOptions, 'clipLow' | 'clipHigh' | 'dualClip' | 'logRatioClamp'>> = {
  clipLow: true, clipHigh: true, dualClip: true, logRatioClamp: true,
}

const POLICY_LOSS_OPTIONS: OptionNames<PolicyLossOptions> = {
  ...AGGREGATION_OPTIONS, ...POLICY_OPTIONS, logp: true, oldLogp: true, advantages: true, mask: true,
}

export function policyOptions(op: string, o: Pick<PolicyLossOptions, 'clipLow' | 'clipHigh' | 'dualClip' | 'logRatioClamp'>) {
  const clipLow = numberOption(op, 'clipLow', o.clipLow, 0.2, { min: 0 })
  return {
    clipLow,
    clipHigh: numberOption(op, 'clipHigh', o.clipHigh, clipLow, { min: 0 }),
    dualClip: optionalNumber(op, 'dualClip', o.dualClip, { above: 1 }),
    logRatioClamp: numberOption(op, 'logRatioClamp', o.logRatioClamp, 20, LOG_RATIO_CLAMP),
  }
}

function validatePolicyLoss(options: PolicyLossOptions): PolicyLossArgs {
  const op = 'policyLoss'
  const o = optionsObject(op, options, POLICY_LOSS_OPTIONS)
  const batch = tokenBatch(op, 'logp', tokenShape(op, 'logp', o.logp), o)
  const M = batch.layout.tokens
  return {
    ...batch,
    logp: floatVector(op, 'logp', o.logp, M),
    oldLogp: floatVector(op, 'oldLogp', o.oldLogp, M),
    advantages: floatVector(op, 'advantages', o.advantages, M),
    ...policyOptions(op, o),
  }
}

export const [policyLoss, policyLossAsync] = defineOp('policyLoss', validatePolicyLoss)
