/**
 * The js backend against golden values computed by PyTorch (test/fixtures/generate-golden.py), in float64
 * inputs; our outputs are float32, so the tolerance is float32 rounding.
 */
import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, it } from 'vitest'
import * as rk from '../src/index.js'
import { F32, expectClose } from './helpers.js'

interface Case { op: string; expected: Record<string, any>; [k: string]: any }
const golden: { cases: Case[] } = JSON.parse(readFileSync(new URL('./fixtures/golden.json', import.meta.url), 'utf8'))
const cases = (op: string) => golden.cases.filter((c) => c.op === op)
const f64 = (x: number[]) => Float64Array.from(x)
const mat = (x: number[], N: number, V: number) => rk.tensor(f64(x), [N, V])

describe('golden values from PyTorch (js reference)', () => {
  beforeAll(() => rk.setBackend('js'))
  afterAll(() => rk.setBackend('auto'))

  it.each(cases('crossEntropy').map((c, i) => [i, c] as const))('crossEntropy case %i matches F.cross_entropy', (_, c) => {
    const r = rk.crossEntropy({
      logits: mat(c.logits, c.N, c.V), targets: Int32Array.from(c.targets), labelSmoothing: c.labelSmoothing,
      zLoss: c.zLoss, reduction: c.reduction, classWeights: c.classWeights ? f64(c.classWeights) : undefined, grad: true,
    })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    // PyTorch's logsumexp covers every row; here an ignored row's lse is 0, as its other per-row results
    const ignoreIndex = c.ignoreIndex ?? -100
    expectClose(r.lse, c.expected.lse.map((l: number, n: number) => (c.targets[n] === ignoreIndex ? 0 : l)), F32, 'lse')
    expectClose(r.count, c.expected.count, { atol: 0, rtol: 0 }, 'count')
    if (c.reduction === 'none') expectClose(r.losses!, c.expected.losses, F32, 'losses')
    expectClose(r.gradLogits!.data, c.expected.gradLogits, F32, 'gradLogits')
  })

  it.each(cases('logProbs').map((c, i) => [i, c] as const))('logProbs case %i matches log_softmax, Categorical.entropy and autograd', (_, c) => {
    const logits = mat(c.logits, c.N, c.V)
    const targets = Int32Array.from(c.targets)
    const r = rk.logProbs({ logits, targets, temperature: c.temperature, entropy: true })
    expectClose(r.logp, c.expected.logp, F32, 'logp')
    expectClose(r.lse, c.expected.lse, F32, 'lse')
    expectClose(r.entropy!, c.expected.entropy, F32, 'entropy')
    const g = rk.logProbsBackward({
      logits, targets, lse: r.lse, entropy: r.entropy, temperature: c.temperature,
      gradLogp: f64(c.gradLogp), gradEntropy: f64(c.gradEntropy),
    })
    expectClose(g.gradLogits.data, c.expected.gradLogits, { atol: 1e-5, rtol: 1e-5 }, 'gradLogits')
  })

  it.each(cases('klDivergence').map((c, i) => [i, c] as const))('klDivergence case %i matches F.kl_div', (_, c) => {
    const r = rk.klDivergence({ pLogits: mat(c.pLogits, c.N, c.V), qLogits: mat(c.qLogits, c.N, c.V), grad: 'both' })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.perRow, c.expected.perRow, F32, 'perRow')
    expectClose(r.gradQ!.data, c.expected.gradQ, F32, 'gradQ')
    expectClose(r.gradP!.data, c.expected.gradP, F32, 'gradP')
  })

  it.each(cases('klPenalty').map((c) => [c.estimator, c] as const))('klPenalty %s matches verl kl_penalty', (_, c) => {
    const r = rk.klPenalty({ logp: f64(c.logp), refLogp: f64(c.refLogp), estimator: c.estimator })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.perToken, c.expected.perToken, F32, 'perToken')
    expectClose(r.gradLogp, c.expected.gradLogp, F32, 'gradLogp')
  })

  it.each(cases('policyLoss').map((c, i) => [i, c] as const))('policyLoss case %i matches verl vanilla PPO in every aggregation', (_, c) => {
    for (const [aggregation, e] of Object.entries<any>(c.expected.byAggregation)) {
      const r = rk.policyLoss({
        logp: rk.tensor(f64(c.logp), [c.B, c.T]), oldLogp: f64(c.oldLogp), advantages: f64(c.advantages), mask: f64(c.mask),
        clipLow: c.clipLow, clipHigh: c.clipHigh, dualClip: c.dualClip, aggregation: aggregation as rk.AggregationMode,
      })
      expectClose(r.loss, e.loss, F32, `${aggregation} loss`)
      expectClose(r.gradLogp, e.gradLogp, F32, `${aggregation} gradLogp`)
      const per = c.expected.perToken.map((x: number, i: number) => (c.mask[i] ? x : 0))
      expectClose(r.perToken, per, F32, 'perToken')
      if (aggregation === 'token-mean') expectClose(r.approxKl, c.expected.approxKl, F32, 'approxKl')
    }
  })

  it.each(cases('valueLoss').map((c) => [c.clip, c] as const))('valueLoss clip=%s matches the clipped value loss', (_, c) => {
    const r = rk.valueLoss({ values: f64(c.values), returns: f64(c.returns), oldValues: f64(c.oldValues), clip: c.clip })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.perToken, c.expected.perToken, F32, 'perToken')
    expectClose(r.gradValues, c.expected.gradValues, F32, 'gradValues')
  })

  it('gae matches verl compute_gae_advantage_return and whiten matches masked_whiten', () => {
    const [c] = cases('gae')
    const mask = f64(c.mask)
    const r = rk.gae({ rewards: rk.tensor(f64(c.rewards), [c.B, c.T]), values: f64(c.values), mask, gamma: c.gamma, lambda: c.lambda })
    const sel = (x: number[]) => x.map((v, i) => (c.mask[i] ? v : 0))
    expectClose(r.advantages, sel(c.expected.advantages), F32, 'advantages')
    expectClose(r.returns, sel(c.expected.returns), F32, 'returns')
    const w = rk.whiten({ values: f64(c.expected.advantages), mask })
    expectClose(w, sel(c.expected.whitened), F32, 'whitened')
  })

  it('rewardLoss with ragged K matches F.cross_entropy over −inf padded scores', () => {
    const [c] = cases('rewardLoss')
    const offsets = Int32Array.from([0, ...c.Ks.map((_: number, i: number) => c.Ks.slice(0, i + 1).reduce((a: number, b: number) => a + b, 0))])
    const r = rk.rewardLoss({ scores: f64(c.scores), offsets, chosen: Int32Array.from(c.chosen) })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.gradScores, c.expected.gradScores, F32, 'gradScores')
    expectClose(r.probs, c.expected.probs, F32, 'probs')
  })

  it('rewardLoss at K = 2 with margins and centering equals TRL RewardTrainer', () => {
    const [c] = cases('rewardPairwise')
    const n = c.chosenScores.length
    const scores = new Float64Array(2 * n), margins = new Float64Array(2 * n)
    for (let i = 0; i < n; i++) {
      scores[2 * i] = c.chosenScores[i]
      scores[2 * i + 1] = c.rejectedScores[i]
      margins[2 * i + 1] = c.margin[i]
    }
    const r = rk.rewardLoss({ scores, K: 2, chosen: new Int32Array(n), margins, centerCoef: c.centerCoef })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.gradScores.filter((_, i) => i % 2 === 0), c.expected.gradChosen, F32, 'gradChosen')
    expectClose(r.gradScores.filter((_, i) => i % 2 === 1), c.expected.gradRejected, F32, 'gradRejected')
    expectClose(r.accuracy, c.expected.accuracy, { atol: 0, rtol: 0 }, 'accuracy')
  })

  it('groupAdvantages matches GRPO (torch.std) and RLOO, singleton groups 0', () => {
    const [c] = cases('groupAdvantages')
    const offsets = Int32Array.from([0, ...c.sizes.map((_: number, i: number) => c.sizes.slice(0, i + 1).reduce((a: number, b: number) => a + b, 0))])
    expectClose(rk.groupAdvantages({ scores: f64(c.scores), offsets }), c.expected.grpo, F32, 'grpo')
    expectClose(rk.groupAdvantages({ scores: f64(c.scores), offsets, method: 'rloo' }), c.expected.rloo, F32, 'rloo')
  })
})
