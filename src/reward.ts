/**
 * Reward-model loss (DESIGN §1.3): a softmax over the K_n candidate scores of each prompt, with a hard label
 * (`chosen`) or a soft one (`targetProbs`). Ragged K: flat scores plus offsets[N + 1]; uniform K: `K`.
 */
import { REDUCTIONS, type Reduction } from './choices.js'
import { rangeError } from './errors.js'
import { defineOp } from './ops.js'
import { type UniformGroups, chosenLabels, groupOffsets, groupSize, groupStart } from './options.js'
import type { Tensor } from './tensor.js'
import { type FloatData, type OptionNames, INT32, choiceOption, floatVector, hostOnly, numberOption, optionsObject } from './validate.js'
import { decodeFloats } from './dtypes.js'

type Floats = Float32Array | Float64Array | Tensor

export interface RewardLossOptions {
  /** all candidates' scores, prompt after prompt */
  scores: Floats
  /** N + 1 non-decreasing offsets into scores, from 0 to scores.length (ragged K) */
  offsets?: Int32Array | Tensor
  /** candidates per prompt (uniform K) */
  K?: number
  /** the preferred candidate of each prompt, in [0, K_n), or ignoreIndex */
  chosen?: Int32Array | Tensor
  /** a distribution over each prompt's candidates (sums to 1 ± 1e-4) */
  targetProbs?: Floats
  /** per-candidate margins added to the non-chosen scores (K = 2: −log σ(r_c − r_r − m), as TRL/OpenRLHF) */
  margins?: Floats
  /** c ≥ 0: + c · mean_n (Σ_i R_{n,i})², TRL's reward centering at K = 2; default 0 */
  centerCoef?: number
  /** 'mean' (default, over counted prompts), 'sum' or 'none' */
  reduction?: Reduction
  /** a chosen value that skips the prompt; default −100 */
  ignoreIndex?: number
}

export interface RewardLossResult {
  loss: number
  /** per-prompt losses (reduction 'none'); 0 for prompts not counted */
  losses?: Float32Array
  /** softmax of each prompt's (margin-shifted) scores */
  probs: Float32Array
  gradScores: Float32Array
  /** share of counted prompts whose label candidate scores strictly highest */
  accuracy: number
  /** prompts counted: a label that is not ignored and at least two candidates */
  count: number
}

export interface RewardLossArgs {
  scores: FloatData
  /** N + 1 offsets (ragged K), or null when the caller gave a uniform K */
  offsets: Int32Array | null
  /** the uniform K, or null (offsets given); prompt n's candidates are then n·K .. (n + 1)·K */
  K: number | null
  /** prompts */
  N: number
  chosen: Int32Array | null
  targetProbs: FloatData | null
  margins: FloatData | null
  centerCoef: number
  reduction: Reduction
  ignoreIndex: number
}

const REWARD_LOSS_OPTIONS: OptionNames<RewardLossOptions> = {
  scores: true, offsets: true, K: true, chosen: true, targetProbs: true, margins: true, centerCoef: true, reduction: true, ignoreIndex: true,
}

function validateRewardLoss(options: RewardLossOptions): RewardLossArgs {
  const op = 'rewardLoss'
  const o = optionsObject(op, options, REWARD_LOSS_OPTIONS)
  const scores = floatVector(op, 'scores', o.scores)
  const total = scores.data.length
  // a uniform K makes no offsets array (1M prompts: 4 MiB written per call, more than the kernel takes)
  const K = o.offsets === undefined && o.K !== undefined ? groupSize(op, total, o.K, 'K') : null
  const uniform: UniformGroups | null = K === null ? null : { N: total / K, K }
  const offsets = uniform === null ? groupOffsets(op, total, o.offsets, o.K, 'K', 'prompt') : null
  const N = uniform === null ? offsets!.length - 1 : uniform.N
  const start = (n: number) => groupStart({ offsets, K: uniform?.K ?? null }, n)
  const ignoreIndex = numberOption(op, 'ignoreIndex', o.ignoreIndex, -100, INT32)
  const chosen = chosenLabels(op, o.chosen, 'targetProbs', o.targetProbs, offsets ?? uniform!, ignoreIndex, false, false)
  let targetProbs: FloatData | null = null
  if (chosen === null) {
    targetProbs = floatVector(op, 'targetProbs', o.targetProbs, total)
    hostOnly(op, 'targetProbs', targetProbs.data)
    const y = decodeFloats(targetProbs.data, targetProbs.dtype)
    for (let n = 0; n < N; n++) {
      let sum = 0
      for (let i = start(n); i < start(n + 1); i++) {
        if (!(y[i] >= 0 && y[i] <= 1)) throw rangeError(op, `targetProbs[${i}]`, 'in [0, 1]', y[i])
        sum += y[i]
      }
      if (Math.abs(sum - 1) > 1e-4) throw rangeError(op, `the sum of targetProbs of prompt ${n}`, '1 (± 1e-4)', sum)
    }
  }
  return {
    scores, offsets, K: uniform === null ? null : uniform.K, N, chosen, targetProbs,
    margins: o.margins === undefined ? null : floatVector(op, 'margins', o.margins, total),
    centerCoef: numberOption(op, 'centerCoef', o.centerCoef, 0, { min: 0 }),
    reduction: choiceOption(op, 'reduction', o.reduction, REDUCTIONS, 'mean'),
    ignoreIndex,
  }
}

export const [rewardLoss, rewardLossAsync] = defineOp('rewardLoss', validateRewardLoss, REWARD_LOSS_OPTIONS)
