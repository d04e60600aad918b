/**
 * PPO clipped policy loss (DESIGN §1.4) on per-token log-probabilities, aggregated as §1.9.
 * Token inputs are [B, T] Tensors or flat vectors (with `seqLengths` for packed sequences).
 */
import { AGGREGATION_OPTIONS, type AggregationOptions } from './aggregate.js'
import { defineOp } from './ops.js'
import {
  CLIP_OPTIONS, type ClipMetrics, type ClipOptions, POLICY_VARIANT_OPTIONS, type PolicyVariantArgs, type PolicyVariantOptions, type RolloutMetrics,
  clipOptions, policyVariantOptions,
} from './options.js'
import { type TokenBatch, type TokenFloats, type TokenMask, tokenBatch, tokenShape } from './tokens.js'
import { type FloatData, type OptionNames, floatVector, optionsObject } from './validate.js'
import { PRESET_OPTION, type PresetOption } from './presets.js'

export interface PolicyLossOptions extends AggregationOptions, ClipOptions, PolicyVariantOptions, PresetOption {
  logp: TokenFloats
  oldLogp: TokenFloats
  advantages: TokenFloats
  /** nonzero = the token counts; default all */
  mask?: TokenMask
}

export interface PolicyLossResult extends ClipMetrics, RolloutMetrics {
  loss: number
  /** d loss / d logp, float32 */
  gradLogp: Float32Array
  /** the token's loss (−min(r A, clip(r) A) for 'ppo'), times its rollout weight; 0 where masked */
  perToken: Float32Array
}

export interface PolicyLossArgs extends TokenBatch, PolicyVariantArgs {
  logp: FloatData
  oldLogp: FloatData
  advantages: FloatData
  clipLow: number
  clipHigh: number
  dualClip: number | null
  logRatioClamp: number
}

const POLICY_LOSS_OPTIONS: OptionNames<PolicyLossOptions> = {
  ...AGGREGATION_OPTIONS, ...CLIP_OPTIONS, ...POLICY_VARIANT_OPTIONS, ...PRESET_OPTION, logp: true, oldLogp: true, advantages: true, mask: true,
}

function validatePolicyLoss(options: PolicyLossOptions): PolicyLossArgs {
  const op = 'policyLoss'
  const o = optionsObject(op, options, POLICY_LOSS_OPTIONS)
  const batch = tokenBatch(op, 'logp', tokenShape(op, 'logp', o.logp), o)
  const M = batch.layout.tokens
  const inputs = {
    layout: batch.layout,
    mask: batch.mask,
    agg: batch.agg,
    logp: floatVector(op, 'logp', o.logp, M),
    oldLogp: floatVector(op, 'oldLogp', o.oldLogp, M),
    advantages: floatVector(op, 'advantages', o.advantages, M),
  }
  // Object.assign, not `{ ...a, ...b }`: V8 builds a spread after the first through a slow path (a new map
  // per call, tens of µs), which a 64-token call cannot afford (issue 13, bench/NOTES.md "Version 5")
  return Object.assign(inputs, clipOptions(op, o), policyVariantOptions(op, o, M))
}

export const [policyLoss, policyLossAsync] = defineOp('policyLoss', validatePolicyLoss, POLICY_LOSS_OPTIONS)
