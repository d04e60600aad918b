/** Advantage estimation (DESIGN §1.8): GAE, masked whitening, and group (GRPO/RLOO) advantages. */
import { GROUP_METHODS, type GroupMethod } from './choices.js'
import { defineOp } from './ops.js'
import { groupOffsets, groupSize } from './options.js'
import { type TokenFloats, type TokenLayout, type TokenMask, tokenLayout, tokenShape } from './tokens.js'
import { type Tensor, isDeviceData } from './tensor.js'
import { type FloatData, type OptionNames, booleanOption, choiceOption, floatVector, maskVector, numberOption, optionsObject } from './validate.js'
import { PRESET_OPTION, type PresetOption } from './presets.js'

export interface GaeOptions extends PresetOption {
  /** [B, T] (or flat with seqLengths) */
  rewards: TokenFloats
  values: TokenFloats
  mask?: TokenMask
  seqLengths?: Int32Array | Tensor
  /** γ in [0, 1]; default 1 */
  gamma?: number
  /** λ in [0, 1]; default 0.95 */
  lambda?: number
  /** V after the last token of each sequence (bootstrap for truncated ones); default 0 */
  lastValues?: Float32Array | Float64Array | Tensor
}

const GAE_OPTIONS: OptionNames<GaeOptions> = {
  ...PRESET_OPTION, rewards: true, values: true, mask: true, seqLengths: true, gamma: true, lambda: true, lastValues: true,
}

export interface GaeResult {
  /** per token, 0 where masked */
  advantages: Float32Array
  /** advantages + values, 0 where masked */
  returns: Float32Array
}

export interface GaeArgs {
  rewards: FloatData
  values: FloatData
  mask: Uint8Array | null
  layout: TokenLayout
  lastValues: FloatData | null
  gamma: number
  lambda: number
}

function validateGae(options: GaeOptions): GaeArgs {
  const op = 'gae'
  const o = optionsObject(op, options, GAE_OPTIONS)
  const layout = tokenLayout(op, 'rewards', tokenShape(op, 'rewards', o.rewards), o.seqLengths)
  const M = layout.tokens
  const S = layout.offsets.length - 1
  return {
    layout,
    rewards: floatVector(op, 'rewards', o.rewards, M),
    values: floatVector(op, 'values', o.values, M),
    mask: maskVector(op, 'mask', o.mask, M),
    lastValues: o.lastValues === undefined ? null : floatVector(op, 'lastValues', o.lastValues, S),
    gamma: numberOption(op, 'gamma', o.gamma, 1, { min: 0, max: 1 }),
    lambda: numberOption(op, 'lambda', o.lambda, 0.95, { min: 0, max: 1 }),
  }
}

export interface WhitenOptions extends PresetOption {
  values: Float32Array | Float64Array | Tensor
  mask?: TokenMask
  /** false adds the mean back (TRL's shift_mean=False, for rewards); default true */
  shiftMean?: boolean
  /** Bessel-corrected variance; default true */
  unbiased?: boolean
  /** > 0 (with 0, fewer than two values or equal ones would give 0/0); default 1e-8 */
  eps?: number
}

/** eps of whiten and groupAdvantages: > 0, so that a constant group gives 0, not 0/0. */
const EPS = { above: 0 }

const WHITEN_OPTIONS: OptionNames<WhitenOptions> = { ...PRESET_OPTION, values: true, mask: true, shiftMean: true, unbiased: true, eps: true }

export interface WhitenArgs {
  values: FloatData
  mask: Uint8Array | null
  shiftMean: boolean
  unbiased: boolean
  eps: number
}

function validateWhiten(options: WhitenOptions): WhitenArgs {
  const op = 'whiten'
  const o = optionsObject(op, options, WHITEN_OPTIONS)
  const values = floatVector(op, 'values', o.values)
  return {
    values,
    mask: maskVector(op, 'mask', o.mask, values.data.length),
    shiftMean: booleanOption(op, 'shiftMean', o.shiftMean, true),
    unbiased: booleanOption(op, 'unbiased', o.unbiased, true),
    eps: numberOption(op, 'eps', o.eps, 1e-8, EPS),
  }
}

export interface GroupAdvantagesOptions extends PresetOption {
  /** one scalar reward per completion, group after group */
  scores: Float32Array | Float64Array | Tensor
  offsets?: Int32Array | Tensor
  groupSize?: number
  /** 'grpo' (default): (r − mean)/(std + eps); 'rloo': r − mean of the others; 'mean-centered': r − mean */
  method?: GroupMethod
  /** default 1e-6 (verl); TRL uses 1e-4, OpenRLHF 1e-9 */
  eps?: number
  /** Bessel-corrected std (all three anchors); default true */
  unbiased?: boolean
}

export interface GroupAdvantagesArgs {
  scores: FloatData
  /** ragged groups (or uniform ones of device scores: the cuda kernel reads offsets); null with groupSize */
  offsets: Int32Array | null
  /** uniform groups of host scores: their size, and no offsets built per call; null with offsets */
  groupSize: number | null
  method: GroupMethod
  eps: number
  unbiased: boolean
}

const GROUP_ADVANTAGES_OPTIONS: OptionNames<GroupAdvantagesOptions> = {
  ...PRESET_OPTION, scores: true, offsets: true, groupSize: true, method: true, eps: true, unbiased: true,
}

function validateGroupAdvantages(options: GroupAdvantagesOptions): GroupAdvantagesArgs {
  const op = 'groupAdvantages'
  const o = optionsObject(op, options, GROUP_ADVANTAGES_OPTIONS)
  const scores = floatVector(op, 'scores', o.scores)
  const total = scores.data.length
  const uniform = o.offsets === undefined && o.groupSize !== undefined && !isDeviceData(scores.data)
  return {
    scores,
    offsets: uniform ? null : groupOffsets(op, total, o.offsets, o.groupSize, 'groupSize'),
    groupSize: uniform ? groupSize(op, total, o.groupSize, 'groupSize') : null,
    method: choiceOption(op, 'method', o.method, GROUP_METHODS, 'grpo'),
    eps: numberOption(op, 'eps', o.eps, 1e-6, EPS),
    unbiased: booleanOption(op, 'unbiased', o.unbiased, true),
  }
}

export const [gae, gaeAsync] = defineOp('gae', validateGae, GAE_OPTIONS)
export const [whiten, whitenAsync] = defineOp('whiten', validateWhiten, WHITEN_OPTIONS)
export const [groupAdvantages, groupAdvantagesAsync] = defineOp('groupAdvantages', validateGroupAdvantages, GROUP_ADVANTAGES_OPTIONS)
