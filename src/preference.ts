/**
 * The preference family (README "Preference losses"): per-sequence log-probs from per-token ones (sequenceLogProbs), and
 * preference losses over K_n candidates per prompt from policy and reference sequence log-probs
 * (preferenceLoss: DPO/cDPO, robust DPO, IPO, hinge, SimPO, Plackett–Luce). Candidates are grouped like
 * rewardLoss's: flat, prompt after prompt, with offsets[N + 1] (ragged) or a uniform K.
 */
import { PREFERENCE_TYPES, type PreferenceType, REDUCTIONS, type Reduction, SEQUENCE_REDUCTIONS, type SequenceReduction } from './choices.js'
import { decodeFloats } from './dtypes.js'
import { rangeError, typeError } from './errors.js'
import { defineOp } from './ops.js'
import { chosenLabels, promptCandidates } from './options.js'
import type { Tensor } from './tensor.js'
import { type TokenFloats, type TokenLayout, type TokenMask, tokenLayout, tokenShape } from './tokens.js'
import {
  type FloatData, type OptionNames, INT32, booleanOption, choiceOption, floatVector, hostOnly, intVector, maskVector, numberOption, optionsObject,
} from './validate.js'

type Floats = Float32Array | Float64Array | Tensor

// ---- sequenceLogProbs ----

export interface SequenceLogProbsOptions {
  /** per-token log-probs, [B, T] or flat (e.g. logProbs' logp) */
  logp: TokenFloats
  /** 1 = the token counts; absent = every token counts */
  mask?: TokenMask
  /** packed sequences: their lengths, summing to the token count (else a [B, T] input is B sequences) */
  seqLengths?: Int32Array | Tensor
  /** 'sum' (default; DPO's log π(y|x)) or 'mean' over the counted tokens (SimPO's, TRL's IPO's) */
  reduction?: SequenceReduction
  /** the upstream gradient dL/dseqLogp, one per sequence: the result then carries gradLogp = dL/dlogp */
  gradSeq?: Floats
}

export interface SequenceLogProbsResult {
  /** per sequence: Σ of its counted tokens' logp ('sum'), or that over max(1, count) ('mean'); 0 when none counts */
  seqLogp: Float32Array
  /** per sequence: its counted tokens (SimPO's |y|, preferenceLoss's lengths) */
  lengths: Float32Array
  /** with gradSeq: gradSeq[s] (over max(1, count) for 'mean') at the counted tokens of sequence s, else 0 */
  gradLogp?: Float32Array
}

export interface SequenceLogProbsArgs {
  logp: FloatData
  layout: TokenLayout
  mask: Uint8Array | null
  reduction: SequenceReduction
  gradSeq: FloatData | null
}

const SEQUENCE_LOG_PROBS_OPTIONS: OptionNames<SequenceLogProbsOptions> = { logp: true, mask: true, seqLengths: true, reduction: true, gradSeq: true }

function validateSequenceLogProbs(options: SequenceLogProbsOptions): SequenceLogProbsArgs {
  const op = 'sequenceLogProbs'
  const o = optionsObject(op, options, SEQUENCE_LOG_PROBS_OPTIONS)
  const shape = tokenShape(op, 'logp', o.logp)
  const layout = tokenLayout(op, 'logp', shape, o.seqLengths)
  const logp = floatVector(op, 'logp', o.logp, layout.tokens)
  return {
    logp, layout,
    mask: maskVector(op, 'mask', o.mask, layout.tokens),
    reduction: choiceOption(op, 'reduction', o.reduction, SEQUENCE_REDUCTIONS, 'sum'),
    gradSeq: o.gradSeq === undefined ? null : floatVector(op, 'gradSeq', o.gradSeq, layout.offsets.length - 1),
  }
}

export const [sequenceLogProbs, sequenceLogProbsAsync] = defineOp('sequenceLogProbs', validateSequenceLogProbs, SEQUENCE_LOG_PROBS_OPTIONS)

// ---- preferenceLoss ----

export interface PreferenceLossOptions {
  /** the policy's sequence log-probs log π_θ(y|x), one per candidate, prompt after prompt */
  logp: Floats
  /** the reference model's, same layout; every type but simpo needs it, simpo takes none */
  refLogp?: Floats
  /** N + 1 non-decreasing offsets into logp, from 0 to logp.length (ragged K) */
  offsets?: Int32Array | Tensor
  /** candidates per prompt (uniform K) */
  K?: number
  /** the preferred candidate of each prompt, in [0, K_n), or ignoreIndex (host data) */
  chosen?: Int32Array | Tensor
  /** a full ranking: for each prompt, its K_n candidate indices best first, a permutation of 0..K_n−1 (host data) */
  ranking?: Int32Array | Tensor
  /** 'dpo' (default), 'robust', 'ipo', 'hinge', 'simpo' or 'plackett-luce' */
  type?: PreferenceType
  /** β > 0; default 0.1 (TRL's DPOConfig) */
  beta?: number
  /** ε: cDPO for dpo and simpo (in [0, 1]), the robust type's noise rate (in [0, 0.5)); default 0; other types: absent */
  labelSmoothing?: number
  /** simpo's target margin γ (TRL's simpo_gamma = SimPO's gamma_beta_ratio · β); default 0.5; other types: absent */
  gamma?: number
  /** per candidate, its token count: every log-ratio (simpo: log-prob) is divided by max(1, length); simpo needs it */
  lengths?: Floats
  /** 'mean' (default, over counted prompts), 'sum' or 'none' */
  reduction?: Reduction
  /** a chosen value that skips the prompt; default −100 */
  ignoreIndex?: number
  /** also return gradRefLogp (the gradient wrt refLogp, = −gradLogp); default false */
  refGrad?: boolean
}

export interface PreferenceLossResult {
  loss: number
  /** per-prompt losses (reduction 'none'); 0 for prompts not counted */
  losses?: Float32Array
  /** each candidate's implicit reward β·(logp − refLogp)/length (simpo: β·logp/length) */
  rewards: Float32Array
  gradLogp: Float32Array
  /** refGrad: the gradient wrt refLogp */
  gradRefLogp?: Float32Array
  /** share of counted prompts whose chosen (top-ranked) candidate's reward is strictly above every other's */
  accuracy: number
  /** prompts counted: at least two candidates and a chosen index that is not ignoreIndex */
  count: number
  /** mean over counted prompts of the chosen (top-ranked) candidate's reward */
  chosenReward: number
  /** mean over counted prompts of the mean reward of the other candidates */
  rejectedReward: number
  /** chosenReward − rejectedReward */
  margin: number
}

export interface PreferenceLossArgs {
  logp: FloatData
  refLogp: FloatData | null
  lengths: FloatData | null
  offsets: Int32Array
  chosen: Int32Array | null
  ranking: Int32Array | null
  type: PreferenceType
  beta: number
  labelSmoothing: number
  gamma: number
  reduction: Reduction
  ignoreIndex: number
  refGrad: boolean
}

const PREFERENCE_LOSS_OPTIONS: OptionNames<PreferenceLossOptions> = {
  logp: true, refLogp: true, offsets: true, K: true, chosen: true, ranking: true, type: true, beta: true, labelSmoothing: true,
  gamma: true, lengths: true, reduction: true, ignoreIndex: true, refGrad: true,
}

/** The range of labelSmoothing per type; types absent here take none. */
const SMOOTHING: Partial<Record<PreferenceType, { max?: number; below?: number }>> = { dpo: { max: 1 }, simpo: { max: 1 }, robust: { below: 0.5 } }

function validatePreferenceLoss(options: PreferenceLossOptions): PreferenceLossArgs {
  const op = 'preferenceLoss'
  const o = optionsObject(op, options, PREFERENCE_LOSS_OPTIONS)
  const { data: logp, total, offsets } = promptCandidates(op, 'logp', o.logp, o)
  const type = choiceOption(op, 'type', o.type, PREFERENCE_TYPES, 'dpo')
  const simpo = type === 'simpo'
  if (simpo && o.refLogp !== undefined) throw typeError(op, 'refLogp', "absent for type 'simpo' (SimPO uses no reference model)", o.refLogp)
  if (!simpo && o.refLogp === undefined) throw typeError(op, 'refLogp', `the reference's sequence log-probs (type '${type}')`, undefined)
  if (simpo && o.lengths === undefined) throw typeError(op, 'lengths', "each candidate's token count (type 'simpo' normalises by length)", undefined)
  if (!simpo && o.gamma !== undefined) throw typeError(op, 'gamma', "absent (it is simpo's margin)", o.gamma)
  const smoothing = SMOOTHING[type]
  if (smoothing === undefined && o.labelSmoothing !== undefined) throw typeError(op, 'labelSmoothing', `absent for type '${type}' (dpo, robust and simpo take it)`, o.labelSmoothing)
  const refGrad = booleanOption(op, 'refGrad', o.refGrad, false)
  if (simpo && refGrad) throw typeError(op, 'refGrad', "false for type 'simpo' (there is no reference)", true)
  const ignoreIndex = numberOption(op, 'ignoreIndex', o.ignoreIndex, -100, INT32)
  const chosen = chosenLabels(op, o.chosen, 'ranking', o.ranking, offsets, ignoreIndex, true)
  let ranking: Int32Array | null = null
  if (chosen === null) {
    ranking = hostOnly(op, 'ranking', intVector(op, 'ranking', o.ranking, total))
    checkRanking(op, ranking, offsets)
  }
  let lengths: FloatData | null = null
  if (o.lengths !== undefined) {
    lengths = floatVector(op, 'lengths', o.lengths, total)
    const l = decodeFloats(hostOnly(op, 'lengths', lengths.data), lengths.dtype)
    for (let i = 0; i < total; i++) if (!(l[i] >= 0 && l[i] < Infinity)) throw rangeError(op, `lengths[${i}]`, 'a finite number ≥ 0', l[i])
  }
  return {
    logp, offsets, chosen, ranking, type, lengths, ignoreIndex, refGrad,
    refLogp: simpo ? null : floatVector(op, 'refLogp', o.refLogp, total),
    beta: numberOption(op, 'beta', o.beta, 0.1, { above: 0 }),
    labelSmoothing: smoothing === undefined ? 0 : numberOption(op, 'labelSmoothing', o.labelSmoothing, 0, { min: 0, ...smoothing }),
    gamma: simpo ? numberOption(op, 'gamma', o.gamma, 0.5) : 0,
    reduction: choiceOption(op, 'reduction', o.reduction, REDUCTIONS, 'mean'),
  }
}

/** Each prompt's slice of ranking is a permutation of 0..K_n−1. */
function checkRanking(op: string, ranking: Int32Array, offsets: Int32Array) {
  const seen = new Uint8Array(ranking.length)
  for (let n = 0; n + 1 < offsets.length; n++) {
    const a = offsets[n], K = offsets[n + 1] - a
    for (let i = a; i < a + K; i++) {
      const j = ranking[i]
      if (!(j >= 0 && j < K)) throw rangeError(op, `ranking[${i}]`, `a candidate of prompt ${n}, in [0, ${K})`, j)
      if (seen[a + j]) throw rangeError(op, `ranking of prompt ${n}`, `a permutation of 0..${K - 1} (each candidate once)`, `${j} twice`)
      seen[a + j] = 1
    }
  }
}

export const [preferenceLoss, preferenceLossAsync] = defineOp('preferenceLoss', validatePreferenceLoss, PREFERENCE_LOSS_OPTIONS)
