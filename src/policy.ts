/**
 * PPO clipped policy loss (DESIGN §1.4) on per-token log-probabilities, aggregated as §1.9.
 * Token inputs are [B, T] Tensors or flat vectors (with `seqLengths` for packed sequences).
 */
import { AGGREGATION_OPTIONS, type AggregationOptions } from './aggregate.js'
import { defineOp } from './ops.js'
import { CLIP_OPTIONS, type ClipMetrics, type ClipOptions, clipOptions } from './options.js'
import { type TokenBatch, type TokenFloats, type TokenMask, tokenBatch, tokenShape } from './tokens.js'
import { type FloatData, type OptionNames, floatVector, optionsObject } from './validate.js'

export interface PolicyLossOptions extends AggregationOptions, ClipOptions {
  logp: TokenFloats
  oldLogp: TokenFloats
  advantages: TokenFloats
  /** nonzero = the token counts; default all */
  mask?: TokenMask
}

export interface PolicyLossResult extends ClipMetrics {
  loss: number
  /** d loss / d logp, float32 */
  gradLogp: Float32Array
  /** −min(r A, clip(r) A) per token (0 where masked) */
  perToken: Float32Array
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

const POLICY_LOSS_OPTIONS: OptionNames<PolicyLossOptions> = {
  ...AGGREGATION_OPTIONS, ...CLIP_OPTIONS, logp: true, oldLogp: true, advantages: true, mask: true,
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
    ...clipOptions(op, o),
  }
}

export const [policyLoss, policyLossAsync] = defineOp('policyLoss', validatePolicyLoss)
