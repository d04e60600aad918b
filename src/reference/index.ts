/**
 * The `js` backend: the reference kernels behind the Kernels interface. Inputs are decoded (bf16/f16 → exact
 * float32), computed in float64 and stored into float32 outputs.
 */
import { decodeFloats } from '../dtypes.js'
import type { Kernels } from '../kernels.js'
import { checkChosen, uniformOffsets } from '../options.js'
import { Tensor } from '../tensor.js'
import type { FloatData } from '../validate.js'
import { gaeKernel, groupAdvantagesKernel, whitenKernel } from './advantages.js'
import { klDivergenceKernel, klPenaltyKernel } from './kl.js'
import { policyLossKernel } from './policy.js'
import { ppoLossKernel } from './ppo.js'
import { preferenceLossKernel, sequenceLogProbsKernel } from './preference.js'
import { rewardLossKernel } from './reward.js'
import { valueLossKernel } from './value.js'
import { crossEntropyKernel, keptLogProbsKernel, logProbsBackwardKernel, logProbsKernel } from './vocab.js'

const f = (x: FloatData) => decodeFloats(x.data, x.dtype)
const fOrNull = (x: FloatData | null) => (x === null ? null : f(x))

/**
 * float32: the `js` backend. float64: the exact reference that the `parity` command compares every backend
 * and a file's expected values against.
 */
export type OutputPrecision = 'float32' | 'float64'

/** The reference kernels with outputs (arrays, tensors and scalar losses) in this precision. */
export function referenceKernels(precision: OutputPrecision): Kernels {
  const float64 = precision === 'float64'
  const f32 = (n: number) => (float64 ? new Float64Array(n) : new Float32Array(n)) as Float32Array
  const round = (x: number): number => (float64 ? x : Math.fround(x))
  const matrix = (data: Float32Array, shape: readonly number[]) => new Tensor(data, shape, precision)
  return {
    logProbs(a) {
      const logp = f32(a.N), lse = f32(a.N)
      const entropy = a.entropy ? f32(a.N) : null
      const stats = { sumProbSq: a.sumProbSq ? f32(a.N) : null, maxProb: a.maxProb ? f32(a.N) : null, maxToken: a.maxProb ? new Int32Array(a.N) : null }
      logProbsKernel(f(a.logits), a.N, a.V, a.targets, a, logp, lse, entropy, stats)
      return {
        logp, lse, ...(entropy !== null ? { entropy } : {}), ...(stats.sumProbSq !== null ? { sumProbSq: stats.sumProbSq } : {}),
        ...(stats.maxProb !== null ? { maxProb: stats.maxProb, maxToken: stats.maxToken! } : {}),
      }
    },

    logProbsBackward(a) {
      const grad = f32(a.N * a.V)
      logProbsBackwardKernel(f(a.logits), a.N, a.V, a.targets, f(a.lse), fOrNull(a.gradLogp), fOrNull(a.gradEntropy), fOrNull(a.entropy), a, grad, fOrNull(a.gradSumProbSq), fOrNull(a.sumProbSq))
      return { gradLogits: matrix(grad, a.shape) }
    },

    crossEntropy(a) {
      const losses = f32(a.N), lse = f32(a.N)
      const grad = a.grad ? f32(a.N * a.V) : null
      const r = crossEntropyKernel(f(a.logits), a.N, a.V, a.targets, {
        ...a, classWeights: fOrNull(a.classWeights), tokenWeights: fOrNull(a.tokenWeights),
      }, losses, lse, grad)
      return {
        loss: round(r.loss), count: r.count, lse,
        ...(a.reduction === 'none' ? { losses } : {}),
        ...(grad !== null ? { gradLogits: matrix(grad, a.shape) } : {}),
      }
    },

    rewardLoss(a) {
      const K = a.scores.data.length
      const N = a.N
      const offsets = a.offsets ?? uniformOffsets(K, a.K!)
      if (a.chosen !== null) checkChosen('rewardLoss', a.chosen, offsets, a.ignoreIndex)
      const probs = f32(K), gradScores = f32(K), losses = f32(N)
      const r = rewardLossKernel(f(a.scores), offsets, {
        ...a, targetProbs: fOrNull(a.targetProbs), margins: fOrNull(a.margins),
      }, probs, gradScores, losses)
      return {
        loss: round(r.loss), probs, gradScores, accuracy: r.accuracy, count: r.count,
        ...(a.reduction === 'none' ? { losses } : {}),
      }
    },

    policyLoss(a) {
      const M = a.layout.tokens
      const perToken = f32(M), gradLogp = f32(M)
      const r = policyLossKernel(f(a.logp), f(a.oldLogp), f(a.advantages), a.mask, a.layout, a.agg, a, perToken, gradLogp, fOrNull(a.behaviorLogp))
      return {
        ...r, loss: round(r.loss), approxKl: round(r.approxKl), ratioMean: round(r.ratioMean), ratioMax: round(r.ratioMax),
        rolloutWeightMean: round(r.rolloutWeightMean), rolloutWeightMax: round(r.rolloutWeightMax), rolloutKlK1: round(r.rolloutKlK1),
        rolloutKlK3: round(r.rolloutKlK3), gradLogp, perToken,
      }
    },

    klDivergence(a) {
      const perRow = f32(a.N)
      const gq = a.gradQ ? f32(a.N * a.V) : null
      const gp = a.gradP ? f32(a.N * a.V) : null
      const r = klDivergenceKernel(f(a.pLogits), f(a.qLogits), a.N, a.V, a.mask, a.reduction, a.temperature, perRow, gq, gp)
      return {
        loss: round(r.loss), perRow, count: r.count,
        ...(gq !== null ? { gradQ: matrix(gq, a.shape) } : {}),
        ...(gp !== null ? { gradP: matrix(gp, a.shape) } : {}),
      }
    },

    klPenalty(a) {
      const M = a.layout.tokens
      const perToken = f32(M), gradLogp = f32(M)
      const loss = klPenaltyKernel(f(a.logp), f(a.refLogp), a.mask, a.layout, a.agg, a, perToken, gradLogp)
      return { loss: round(loss), perToken, gradLogp }
    },

    valueLoss(a) {
      const M = a.layout.tokens
      const perToken = f32(M), gradValues = f32(M)
      const r = valueLossKernel(f(a.values), f(a.returns), fOrNull(a.oldValues), a.mask, a.layout, a.agg, a, perToken, gradValues)
      return { loss: round(r.loss), clipFraction: r.clipFraction, perToken, gradValues }
    },

    gae(a) {
      const M = a.layout.tokens
      const advantages = f32(M), returns = f32(M)
      gaeKernel(f(a.rewards), f(a.values), a.mask, a.layout.offsets, fOrNull(a.lastValues), a.gamma, a.lambda, advantages, returns)
      return { advantages, returns }
    },

    whiten(a) {
      const out = f32(a.values.data.length)
      whitenKernel(f(a.values), a.mask, a.shiftMean, a.unbiased, a.eps, out)
      return out
    },

    groupAdvantages(a) {
      const out = f32(a.scores.data.length)
      groupAdvantagesKernel(f(a.scores), a.offsets ?? uniformOffsets(a.scores.data.length, a.groupSize!), a.method, a.eps, a.unbiased, out)
      return out
    },

    ppoLoss(a) {
      const M = a.layout.tokens
      const gradLogits = f32(M * a.V), logp = f32(M)
      const gradValues = a.values !== null ? f32(M) : null
      const r = ppoLossKernel({
        logits: f(a.logits), V: a.V, actions: a.actions, oldLogp: fOrNull(a.oldLogp), anchorLogits: fOrNull(a.anchorLogits),
        refLogp: fOrNull(a.refLogp), behaviorLogp: fOrNull(a.behaviorLogp), advantages: f(a.advantages), values: fOrNull(a.values), returns: fOrNull(a.returns),
        oldValues: fOrNull(a.oldValues), valid: a.mask, layout: a.layout, agg: a.agg,
      }, {
        temperature: a.temperature, beta: a.beta, c1: a.c1, klEstimator: a.klEstimator, klOutputClamp: a.klOutputClamp,
        policy: a, value: { clip: a.valueClip, half: a.half }, trustRegion: a.trustRegion,
      }, gradLogits, gradValues, logp)
      const { loss, policyLoss, kl, valueLoss, ...metrics } = r
      return {
        loss: round(loss), objective: round(-loss), policyLoss: round(policyLoss), kl: round(kl),
        valueLoss: round(valueLoss), logp, gradLogits: matrix(gradLogits, a.shape),
        ...(gradValues !== null ? { gradValues } : {}),
        metrics,
      }
    },

    keptLogProbs(a) {
      const logp = f32(a.N), lse = f32(a.N)
      const grad = a.gradLogp !== null ? f32(a.N * a.V) : null
      const sampling = a.keepOffsets === null ? { topK: a.topK, topP: a.topP, minP: a.minP } : null
      keptLogProbsKernel(f(a.logits), a.N, a.V, a.targets, { ...a, sampling }, logp, lse, fOrNull(a.gradLogp), grad)
      return { logp, lse, ...(grad !== null ? { gradLogits: matrix(grad, a.shape) } : {}) }
    },

    sequenceLogProbs(a) {
      const S = a.layout.offsets.length - 1
      const seqLogp = f32(S), lengths = f32(S)
      const gradLogp = a.gradSeq !== null ? f32(a.layout.tokens) : null
      sequenceLogProbsKernel(f(a.logp), a.layout, a.mask, a.reduction, fOrNull(a.gradSeq), seqLogp, lengths, gradLogp)
      return gradLogp === null ? { seqLogp, lengths } : { seqLogp, lengths, gradLogp }
    },

    preferenceLoss(a) {
      const total = a.logp.data.length
      const rewards = f32(total), gradLogp = f32(total), losses = f32(a.offsets.length - 1)
      const gradRefLogp = a.refGrad ? f32(total) : null
      const r = preferenceLossKernel(f(a.logp), fOrNull(a.refLogp), fOrNull(a.lengths), a.offsets, a, rewards, gradLogp, gradRefLogp, losses)
      return {
        loss: round(r.loss), rewards, gradLogp, count: r.count, accuracy: r.accuracy,
        chosenReward: round(r.chosenReward), rejectedReward: round(r.rejectedReward), margin: round(r.margin),
        ...(gradRefLogp !== null ? { gradRefLogp } : {}),
        ...(a.reduction === 'none' ? { losses } : {}),
      }
    },
  }
}

export const jsKernels = referenceKernels('float32')
