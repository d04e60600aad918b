/** The seed's identities (DESIGN §1.3, §1.4, §1.7), checked through the public API. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { F32, expectClose, rng } from './helpers.js'

const TOL = { atol: 2e-6, rtol: 1e-5 }

describe('identities of the seed (js reference)', () => {
  beforeAll(() => rk.setBackend('js'))
  afterAll(() => rk.setBackend('auto'))

  it('reward gradient = (P − onehot)/N', () => {
    const r = rng(11)
    const offsets = Int32Array.of(0, 4, 6, 9, 13)
    const scores = r.f64(13, 2)
    const chosen = Int32Array.of(1, 0, 2, 3)
    const out = rk.rewardLoss({ scores, offsets, chosen })
    const expected = new Float64Array(13)
    for (let n = 0; n < 4; n++) {
      for (let i = offsets[n]; i < offsets[n + 1]; i++) expected[i] = (out.probs[i] - (i - offsets[n] === chosen[n] ? 1 : 0)) / 4
    }
    expectClose(out.gradScores, expected, F32, 'gradScores')
    // and P is the softmax of each prompt's scores
    for (let n = 0; n < 4; n++) {
      let s = 0
      for (let i = offsets[n]; i < offsets[n + 1]; i++) s += Math.exp(scores[i])
      for (let i = offsets[n]; i < offsets[n + 1]; i++) expectClose(out.probs[i], Math.exp(scores[i]) / s, F32, 'probs')
    }
  })

  it('a one-hot soft label gives the hard-label loss and gradient', () => {
    const r = rng(12)
    const scores = r.f64(12, 2)
    const chosen = Int32Array.of(2, 0, 1)
    const targetProbs = new Float64Array(12)
    chosen.forEach((b, n) => (targetProbs[4 * n + b] = 1))
    const hard = rk.rewardLoss({ scores, K: 4, chosen })
    const soft = rk.rewardLoss({ scores, K: 4, targetProbs })
    expectClose(soft.loss, hard.loss, F32, 'loss')
    expectClose(soft.gradScores, hard.gradScores, F32, 'gradScores')
    expect(soft.accuracy).toBe(hard.accuracy)
  })

  it('K = 2 with a margin equals −log σ(r_c − r_r − m)', () => {
    const r = rng(13)
    const n = 16
    const scores = r.f64(2 * n, 3)
    const margins = new Float64Array(2 * n)
    const chosen = Int32Array.from({ length: n }, () => r.int(2))
    let expected = 0
    for (let i = 0; i < n; i++) {
      const m = r.uniform()
      const c = chosen[i]
      margins[2 * i + 1 - c] = m
      const x = scores[2 * i + c] - scores[2 * i + 1 - c] - m
      expected += x > 0 ? Math.log1p(Math.exp(-x)) : -x + Math.log1p(Math.exp(x)) // −log σ(x), stable
    }
    expectClose(rk.rewardLoss({ scores, K: 2, chosen, margins }).loss, expected / n, F32, 'loss')
  })

  it('the PPO gradient is zero where the ratio is clipped (and where the dual clip binds)', () => {
    // tokens: r > 1+ε with A > 0; r < 1−ε with A < 0; r inside; A < 0 with r large (dual clip at c = 2)
    const logp = Float64Array.of(Math.log(1.5), Math.log(0.5), Math.log(1.1), Math.log(3))
    const oldLogp = new Float64Array(4)
    const advantages = Float64Array.of(1, -1, 0.7, -1)
    const out = rk.policyLoss({ logp, oldLogp, advantages, dualClip: 2, aggregation: 'seq-mean-token-sum' })
    expect(out.gradLogp[0]).toBe(0)
    expect(out.gradLogp[1]).toBe(0)
    expectClose(out.gradLogp[2], -1.1 * 0.7, F32, 'unclipped gradient')
    expect(out.gradLogp[3]).toBe(0)
    expectClose(out.perToken[3], 2, F32, 'dual-clipped loss −c·A')
    expect(out.clipFractionHigh).toBe(0.25)
    expect(out.clipFractionLow).toBe(0.25)
    expect(out.dualClipFraction).toBe(0.25)
    expect(out.clipFraction).toBe(0.5)
  })

  it.each([
    ['full KL, token-mean', 'full', 'token-mean'],
    ['k3, seq-mean-token-mean', 'k3', 'seq-mean-token-mean'],
    ['k2, seq-mean-token-sum', 'k2', 'seq-mean-token-sum'],
  ] as const)("ppoLoss's objective equals L_RL − β·KL − c1·L_V from the separate ops (%s)", (_, est, aggregation) => {
    const r = rng(14)
    const B = 3, T = 4, V = 9, N = B * T
    const logits = rk.tensor(r.f64(N * V, 2), [B, T, V])
    const refLogits = rk.tensor(Float64Array.from(logits.data, (x) => x + r.normal() * 0.5), [B, T, V])
    const actions = r.ints(N, V)
    const mask = Uint8Array.of(1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1)
    const oldLogp = Float64Array.from(rk.logProbs({ logits, targets: actions }).logp, (x) => x + r.normal() * 0.3)
    const advantages = r.f64(N), values = r.f64(N), returns = r.f64(N), oldValues = r.f64(N)
    const beta = 0.2, c1 = 0.5
    const common = { mask, aggregation, seqLengths: undefined } as const
    const ppo = rk.ppoLoss({
      logits, actions, oldLogp, refLogits, advantages, values, returns, oldValues, beta, c1,
      klEstimator: est, valueClip: 0.2, dualClip: 3, ...common,
    })
    const logp = rk.logProbs({ logits, targets: actions })
    const lp2 = rk.tensor(Float64Array.from(logp.logp), [B, T])
    const pol = rk.policyLoss({ logp: lp2, oldLogp, advantages, dualClip: 3, ...common })
    let kl: number
    if (est === 'full') {
      kl = rk.klDivergence({ pLogits: refLogits, qLogits: logits, mask }).loss
    } else {
      const refLogp = rk.logProbs({ logits: refLogits, targets: actions }).logp
      kl = rk.klPenalty({ logp: lp2, refLogp, estimator: est, ...common }).loss
    }
    const val = rk.valueLoss({ values: rk.tensor(values, [B, T]), returns, oldValues, clip: 0.2, ...common })
    expectClose(ppo.policyLoss, pol.loss, TOL, 'policy term')
    expectClose(ppo.kl, kl, TOL, 'KL term')
    expectClose(ppo.valueLoss, val.loss, TOL, 'value term')
    expectClose(ppo.objective, -pol.loss - beta * kl - c1 * val.loss, TOL, 'objective')
    expectClose(ppo.loss, -ppo.objective, { atol: 0, rtol: 0 }, 'loss = −objective')
    expectClose(ppo.gradValues!, Float64Array.from(val.gradValues, (g) => c1 * g), TOL, 'gradValues')
    // dloss/dlogits = logProbsBackward(policy gradient) (+ β × the KL's gradient)
    let gradLogp = Float64Array.from(pol.gradLogp)
    if (est !== 'full') {
      const refLogp = rk.logProbs({ logits: refLogits, targets: actions }).logp
      const k = rk.klPenalty({ logp: lp2, refLogp, estimator: est, ...common })
      gradLogp = gradLogp.map((g, i) => g + beta * k.gradLogp[i])
    }
    const viaLogp = rk.logProbsBackward({ logits, targets: actions, lse: logp.lse, gradLogp }).gradLogits.data
    const expected = Float64Array.from(viaLogp)
    if (est === 'full') {
      const gq = rk.klDivergence({ pLogits: refLogits, qLogits: logits, mask, grad: true }).gradQ!.data
      for (let i = 0; i < expected.length; i++) expected[i] += beta * gq[i]
    }
    expectClose(ppo.gradLogits.data, expected, TOL, 'gradLogits')
  })
})
