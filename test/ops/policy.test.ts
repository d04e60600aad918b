/**
 * The policy family (src/policy.ts: policyLoss): parity of each native backend with the js reference
 * (test/parity.ts), finite-difference gradients of the float64 reference, verl golden values, the seed's
 * identities and edge cases.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { AGGREGATIONS } from '../../src/choices.js'
import { policyLossKernel } from '../../src/reference/policy.js'
import { HOST_BACKENDS, useBackend } from '../backends.js'
import { F32, combos, expectClose, expectKernelGradient, f64, floats, golden, gradientTokens, label, rng } from '../helpers.js'
import { compare, optionCases, describeParity, titled, tokenBatch, tokenCases, tokenLayout } from '../parity.js'

describeParity('policy', () => {
  const variants = [{ label: 'plain', options: {} }, { label: 'dual clip', options: { dualClip: 3, clipHigh: 0.28 } }]

  it.each(titled('policyLoss $label, $aggregation $layout on $backend', tokenCases(variants)))('%s', (_, { backend, aggregation, layout, variant }) => {
    const x = tokenBatch()
    compare(backend, rk.policyLoss, { ...tokenLayout(layout, x), oldLogp: x.oldLogp, advantages: x.adv, mask: x.mask, aggregation, ...variant.options }, 'policyLoss')
  })

  const bf = (x: Float32Array, b: ReturnType<typeof tokenBatch>) => rk.tensor(rk.encodeFloats(x, 'bfloat16'), [b.B, b.T], { dtype: 'bfloat16' })
  it.each(titled('policyLoss with $label on $backend', optionCases([
    { label: 'a global token count', options: (x: ReturnType<typeof tokenBatch>) => ({ logp: x.logp, oldLogp: x.oldLogp, advantages: x.adv, mask: x.mask, globalTokenCount: 1000 }) },
    { label: 'bf16 inputs', options: (x: ReturnType<typeof tokenBatch>) => ({ logp: bf(x.logp, x), oldLogp: bf(x.oldLogp, x), advantages: bf(x.adv, x), mask: x.mask }) },
  ])))('%s', (_, { backend, variant }) => {
    compare(backend, rk.policyLoss, variant.options(tokenBatch()), 'policyLoss')
  })
})

describe('policy finite-difference gradients (float64 reference)', () => {
  const { M, layout, mask, aggs } = gradientTokens()

  it.each(combos({
    clipHigh: [0.2, 0.28], dualClip: [null, 3], aggregation: AGGREGATIONS, masked: [false, true],
  }).map((c) => [label(c), c] as const))('policyLoss %s', (_, c) => {
    const r = rng(4)
    const logp = r.f64(M, 0.5)
    const old = Float64Array.from(logp, (x) => x + r.normal() * 0.4)
    const A = r.f64(M, 1)
    const agg = aggs(c.aggregation)
    const o = { clipLow: 0.2, clipHigh: c.clipHigh, dualClip: c.dualClip, logRatioClamp: 20 }
    const valid = c.masked ? mask : null
    expectKernelGradient(logp, M, (grad) => policyLossKernel(logp, old, A, valid, layout, agg, o, f64(M), grad).loss, 'dlogp')
  })

  it.each([
    ['globalTokenCount', aggs('token-mean', { globalTokenCount: 40 })],
    ['globalSeqCount', aggs('seq-mean-token-mean', { globalSeqCount: 7 })],
    ['normConst', aggs('seq-mean-token-sum-norm', { normConst: 16 })],
  ] as const)('policyLoss with %s', (_, agg) => {
    const r = rng(5)
    const logp = r.f64(M, 0.5)
    const old = Float64Array.from(logp, (x) => x + r.normal() * 0.4)
    const A = r.f64(M, 1)
    const o = { clipLow: 0.2, clipHigh: 0.2, dualClip: null, logRatioClamp: 20 }
    expectKernelGradient(logp, M, (grad) => policyLossKernel(logp, old, A, mask, layout, agg, o, f64(M), grad).loss, 'dlogp')
  })
})

describe('policy golden values from PyTorch (js reference)', () => {
  useBackend('js')

  it.each(golden('policyLoss').map((c, i) => [i, c] as const))('policyLoss case %i matches verl vanilla PPO in every aggregation', (_, c) => {
    for (const [aggregation, e] of Object.entries<any>(c.expected.byAggregation)) {
      const r = rk.policyLoss({
        logp: rk.tensor(floats(c.logp), [c.B, c.T]), oldLogp: floats(c.oldLogp), advantages: floats(c.advantages), mask: floats(c.mask),
        clipLow: c.clipLow, clipHigh: c.clipHigh, dualClip: c.dualClip, aggregation: aggregation as rk.AggregationMode,
      })
      expectClose(r.loss, e.loss, F32, `${aggregation} loss`)
      expectClose(r.gradLogp, e.gradLogp, F32, `${aggregation} gradLogp`)
      const per = c.expected.perToken.map((x: number, i: number) => (c.mask[i] ? x : 0))
      expectClose(r.perToken, per, F32, 'perToken')
      if (aggregation === 'token-mean') expectClose(r.approxKl, c.expected.approxKl, F32, 'approxKl')
    }
  })
})

describe('policy identities of the seed (js reference)', () => {
  useBackend('js')

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
})

describe.each(HOST_BACKENDS)('policy edge cases on %s', (backend) => {
  useBackend(backend)

  it('fully masked sequences are excluded from sequence means', () => {
    const r = rng(3)
    const T = 4
    const logp = r.f64(3 * T, 0.3), oldLogp = r.f64(3 * T, 0.3), advantages = r.f64(3 * T)
    const mask = Uint8Array.of(1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0)
    const keep = [0, 1, 2, 3, 8, 9, 10, 11]
    const pick = (x: Float64Array | Uint8Array) => keep.map((i) => x[i])
    for (const aggregation of ['seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'] as const) {
      const full = rk.policyLoss({ logp: rk.tensor(logp, [3, T]), oldLogp, advantages, mask, aggregation })
      const two = rk.policyLoss({
        logp: rk.tensor(Float64Array.from(pick(logp)), [2, T]), oldLogp: Float64Array.from(pick(oldLogp)),
        advantages: Float64Array.from(pick(advantages)), mask: Uint8Array.from(pick(mask)), aggregation,
      })
      expectClose(full.loss, two.loss, F32, aggregation)
    }
  })
})
