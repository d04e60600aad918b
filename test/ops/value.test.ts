/**
 * The value family (src/value.ts: valueLoss): parity of each native backend with the js reference
 * (test/parity.ts), finite-difference gradients of the float64 reference and golden values.
 */
import { describe, it } from 'vitest'
import * as rk from '../../src/index.js'
import { valueLossKernel } from '../../src/reference/value.js'
import { useBackend } from '../backends.js'
import { F32, combos, expectClose, expectKernelGradient, f64, floats, golden, gradientTokens, label, rng } from '../helpers.js'
import { compare, describeParity, titled, tokenBatch, tokenCases, tokenLayout } from '../parity.js'

describeParity('value', () => {
  const variants = combos({ clip: [null, 0.2], half: [false, true] }).map((c) => ({ ...c, label: `clip=${c.clip} half=${c.half}` }))

  it.each(titled('valueLoss $label, $aggregation $layout on $backend', tokenCases(variants)))('%s', (_, { backend, aggregation, layout, variant }) => {
    const x = tokenBatch()
    const { logp: values, seqLengths } = tokenLayout(layout, x)
    compare(backend, rk.valueLoss, { values, seqLengths, returns: x.adv, oldValues: x.oldLogp, clip: variant.clip, half: variant.half, mask: x.mask, aggregation }, 'valueLoss')
  })
})

describe('value finite-difference gradients (float64 reference)', () => {
  const { M, layout, mask, aggs } = gradientTokens()

  it.each(combos({ clip: [null, 0.2], half: [false, true], aggregation: ['token-mean', 'seq-mean-token-sum'] as const })
    .map((c) => [label(c), c] as const))('valueLoss %s', (_, c) => {
    const r = rng(8)
    const V = r.f64(M), R = r.f64(M), Vold = Float64Array.from(V, (x) => x + r.normal() * 0.4)
    const agg = aggs(c.aggregation)
    const o = { clip: c.clip, half: c.half }
    expectKernelGradient(V, M, (grad) => valueLossKernel(V, R, Vold, mask, layout, agg, o, f64(M), grad).loss, 'dvalues')
  })
})

describe('value golden values from PyTorch (js reference)', () => {
  useBackend('js')

  it.each(golden('valueLoss').map((c) => [c.clip, c] as const))('valueLoss clip=%s matches the clipped value loss', (_, c) => {
    const r = rk.valueLoss({ values: floats(c.values), returns: floats(c.returns), oldValues: floats(c.oldValues), clip: c.clip })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.perToken, c.expected.perToken, F32, 'perToken')
    expectClose(r.gradValues, c.expected.gradValues, F32, 'gradValues')
  })
})
