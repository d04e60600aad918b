/** Value-function loss (DESIGN §1.6), aggregated as §1.9. */
import { AGGREGATION_OPTIONS, type AggregationOptions } from './aggregate.js'
import { typeError } from './errors.js'
import { defineOp } from './ops.js'
import { valueOptions } from './options.js'
import { type TokenBatch, type TokenFloats, type TokenMask, tokenBatch, tokenShape } from './tokens.js'
import { type FloatData, type OptionNames, floatVector, optionsObject } from './validate.js'
import { PRESET_OPTION, type PresetOption } from './presets.js'

export interface ValueLossOptions extends AggregationOptions, PresetOption {
  values: TokenFloats
  returns: TokenFloats
  /** required with `clip` */
  oldValues?: TokenFloats
  /** ε_v ≥ 0: max((V − R)², (clip(V, V_old ± ε_v) − R)²) (TRL 0.2, verl/OpenRLHF 0.5); default off */
  clip?: number | null
  /** multiply by ½ as TRL, verl and OpenRLHF do; default false (the seed's form) */
  half?: boolean
  mask?: TokenMask
}

export interface ValueLossResult {
  loss: number
  gradValues: Float32Array
  perToken: Float32Array
  /** share of counted tokens where the clipped term is the larger */
  clipFraction: number
}

export interface ValueLossArgs extends TokenBatch {
  values: FloatData
  returns: FloatData
  oldValues: FloatData | null
  clip: number | null
  half: boolean
}

const VALUE_LOSS_OPTIONS: OptionNames<ValueLossOptions> = {
  ...AGGREGATION_OPTIONS, ...PRESET_OPTION, values: true, returns: true, oldValues: true, clip: true, half: true, mask: true,
}

function validateValueLoss(options: ValueLossOptions): ValueLossArgs {
  const op = 'valueLoss'
  const o = optionsObject(op, options, VALUE_LOSS_OPTIONS)
  const batch = tokenBatch(op, 'values', tokenShape(op, 'values', o.values), o)
  const M = batch.layout.tokens
  const opts = valueOptions(op, 'clip', o.clip, o.half)
  if (opts.clip !== null && o.oldValues === undefined) throw typeError(op, 'oldValues', 'given when clip is set', undefined)
  // one literal: V8 builds `{ ...a, b }` through a slow path (a new map per call; bench/NOTES.md "Version 5")
  return {
    layout: batch.layout, mask: batch.mask, agg: batch.agg, clip: opts.clip, half: opts.half,
    values: floatVector(op, 'values', o.values, M),
    returns: floatVector(op, 'returns', o.returns, M),
    oldValues: o.oldValues === undefined ? null : floatVector(op, 'oldValues', o.oldValues, M),
  }
}

export const [valueLoss, valueLossAsync] = defineOp('valueLoss', validateValueLoss, VALUE_LOSS_OPTIONS)
