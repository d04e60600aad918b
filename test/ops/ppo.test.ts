/**
 * The PPO family (src/ppo.ts: ppoLoss): parity of each native backend with the js reference
 * (test/parity.ts), finite-difference gradients of the float64 reference, and the objective's identity with
 * the separate ops.
 */
import { describe, it } from 'vitest'
import * as rk from '../../src/index.js'
import { logProbsKernel } from '../../src/reference/vocab.js'
import { ppoLossKernel } from '../../src/reference/ppo.js'
import { on, useBackend } from '../backends.js'
import { combos, expectClose, expectGradient, f64, gradientTokens, label, numericGradient, rng } from '../helpers.js'
import { compare, type Dtype, halfGrad, logitsOf, describeParity, SEED, shared, titled, vocabCases } from '../parity.js'

describeParity('ppo', () => {
  const variants = [
    { label: '', options: {} },
    { label: 'k3 T=0.8', options: { klEstimator: 'k3' as const, temperature: 0.8 } },
    { label: 'k1 dualClip valueClip', options: { klEstimator: 'k1' as const, dualClip: 2, valueClip: 0.2 } },
    { label: 'seq-mean-token-sum half clipHigh', options: { aggregation: 'seq-mean-token-sum' as const, half: true, clipHigh: 0.28 } },
    { label: 'sampled k3 gradDtype input', half: true, sampled: true, options: { klEstimator: 'k3' as const, gradDtype: 'input' as const } },
    { label: 'full KL gradDtype input', half: true, options: { gradDtype: 'input' as const } },
  ]

  const inputs = shared((dtype: Dtype, N: number, V: number) => {
    const r = rng(SEED + 3 + V)
    const logits = logitsOf(r, N, V, dtype, 2)
    const refLogits = logitsOf(r, N, V, dtype, 2)
    const actions = r.ints(N, V)
    const oldLogp = Float32Array.from(on('js', () => rk.logProbs({ logits, targets: actions })).logp, (x) => x + r.normal() * 0.2)
    const base = {
      logits, actions, oldLogp, refLogits, advantages: r.f32(N), values: r.f32(N), returns: r.f32(N), oldValues: r.f32(N),
      mask: N > 2 ? Uint8Array.from({ length: N }, (_, i) => (i === 2 ? 0 : 1)) : undefined, beta: 0.1, c1: 0.5,
    }
    const { refLogits: _, ...sampled } = base
    return { base, sampled }
  })

  it.each(titled('ppoLoss, $dtype [$N, $V] $label on $backend', vocabCases(5, variants)))('%s', (_, { backend, dtype, N, V, variant }) => {
    const { base, sampled } = inputs(dtype, N, V)
    compare(backend, rk.ppoLoss, { ...('sampled' in variant ? sampled : base), ...variant.options }, 'ppoLoss', 'half' in variant ? halfGrad(dtype, 'gradLogits') : undefined)
  })
})

describe('ppo finite-difference gradients (float64 reference)', () => {
  const { M, layout, mask, aggs } = gradientTokens()

  it.each(combos({
    kl: ['full', 'k1', 'k3'] as const, temperature: [1, 0.8], dualClip: [null, 2], valueClip: [null, 0.3], aggregation: ['token-mean', 'seq-mean-token-mean'] as const,
  }).map((c) => [label(c), c] as const))('ppoLoss %s (wrt logits and values)', (_, c) => {
    const r = rng(9)
    const Vv = 5
    const z = r.f64(M * Vv, 1.5)
    const anchor = Float64Array.from(z, (x) => x + r.normal() * 0.3)
    const actions = r.ints(M, Vv)
    const oldLogp = f64(M)
    logProbsKernel(anchor, M, Vv, actions, { temperature: c.temperature, ignoreIndex: -100 }, oldLogp, f64(M), null)
    const values = r.f64(M), returns = r.f64(M), oldValues = Float64Array.from(values, (x) => x + r.normal() * 0.4)
    const x = {
      logits: z, V: Vv, actions, oldLogp, anchorLogits: anchor, refLogp: null, advantages: r.f64(M),
      values, returns, oldValues, valid: mask, layout, agg: aggs(c.aggregation),
    }
    const o = {
      temperature: c.temperature, beta: 0.3, c1: 0.7, klEstimator: c.kl, klOutputClamp: null,
      policy: { clipLow: 0.2, clipHigh: 0.2, dualClip: c.dualClip, logRatioClamp: 20 }, value: { clip: c.valueClip, half: false },
    }
    const f = () => ppoLossKernel(x, o, f64(M * Vv), f64(M), f64(M)).loss
    const gz = f64(M * Vv), gv = f64(M)
    ppoLossKernel(x, o, gz, gv, f64(M))
    expectGradient(gz, numericGradient(f, z), 'dlogits')
    expectGradient(gv, numericGradient(f, values), 'dvalues')
  })
})

describe('ppo identities of the seed (js reference)', () => {
  useBackend('js')
  const TOL = { atol: 2e-6, rtol: 1e-5 }


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
