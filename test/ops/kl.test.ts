/**
 * The KL family (src/kl.ts: klDivergence, klPenalty): parity of each native backend with the js reference
 * (test/parity.ts), finite-difference gradients of the float64 reference, PyTorch and verl golden values and
 * edge cases.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { type KlEstimator } from '../../src/choices.js'
import { klDivergenceKernel, klPenaltyKernel } from '../../src/reference/kl.js'
import { HOST_BACKENDS, useBackend } from '../backends.js'
import { F32, combos, expectClose, expectGradient, expectKernelGradient, f64, floats, golden, gradientTokens, label, numericGradient, rng } from '../helpers.js'
import { asDtype, compare, type Dtype, halfGrad, klGradP, logitsOf, describeParity, SEED, shared, titled, tokenBatch, tokenCases, tokenLayout, vocabCases } from '../parity.js'

const allFinite = (x: ArrayLike<number>) => Array.prototype.every.call(x, (v: number) => Number.isFinite(v))
const mat = (x: number[], N: number, V: number) => rk.tensor(floats(x), [N, V])

describeParity('kl', () => {
  // q independent of p (KL ≈ 9 nats), and q a small step from p (KL ≈ 0.05, as between PPO iterations)
  const divergence = [
    ...combos({ q: ['independent', 'near'] as const, reduction: ['mean', 'sum', 'none'] as const, temperature: [1, 1.3], grad: ['both'] as const, half: [false] }),
    ...combos({ q: ['independent', 'near'] as const, reduction: ['mean'] as const, temperature: [1, 1.3], grad: ['q', 'both'] as const, half: [true] }),
    // the q gradient alone: the KL and the gradient in one pass over the rows (native/cpu/kl.cc row_sum_map)
    ...combos({ q: ['independent', 'near'] as const, reduction: ['mean'] as const, temperature: [1, 1.3], grad: ['q'] as const, half: [false] }),
  ].map((c) => ({ ...c, label: `${c.q} ${c.reduction} T=${c.temperature}${c.half ? ` grad ${c.grad} gradDtype input` : c.grad === 'q' ? ' grad q' : ''}` }))

  const inputs = shared((dtype: Dtype, N: number, V: number) => {
    const r = rng(SEED + 2 + V)
    const pLogits = logitsOf(r, N, V, dtype)
    const mask = N > 2 ? Uint8Array.from({ length: N }, (_, i) => (i === 1 ? 0 : 1)) : undefined
    const near = asDtype(pLogits.toFloat32Array().map((x) => x + r.normal() * 0.3), [N, V], dtype)
    return { pLogits, mask, q: { independent: logitsOf(r, N, V, dtype), near } }
  })

  it.each(titled('klDivergence, $dtype [$N, $V] $label on $backend', vocabCases(4, divergence)))('%s', (_, { backend, dtype, N, V, variant }) => {
    const { pLogits, mask, q } = inputs(dtype, N, V)
    const qLogits = q[variant.q]
    const { reduction, temperature, grad } = variant
    const options = { pLogits, qLogits, mask, reduction, temperature, grad, ...(variant.half ? { gradDtype: 'input' as const } : {}) }
    compare(backend, rk.klDivergence, options, 'klDivergence', (e) => ({ ...klGradP(e), ...(variant.half ? halfGrad(dtype, 'gradQ', 'gradP')() : {}) }))
  })

  const penalty = [
    ...rk.KL_ESTIMATORS.map((estimator) => ({ label: estimator, options: { estimator } })),
    { label: 'outputClamp', options: { outputClamp: 0.05 } },
  ]
  it.each(titled('klPenalty $label, $aggregation $layout on $backend', tokenCases(penalty)))('%s', (_, { backend, aggregation, layout, variant }) => {
    const x = tokenBatch()
    compare(backend, rk.klPenalty, { ...tokenLayout(layout, x), refLogp: x.oldLogp, mask: x.mask, aggregation, ...variant.options }, 'klPenalty')
  })
})

describe('kl finite-difference gradients (float64 reference)', () => {
  const { M, layout, mask, aggs } = gradientTokens()

  it.each(combos({ reduction: ['mean', 'sum', 'none'] as const, temperature: [1, 1.3], masked: [false, true] }).map((c) => [label(c), c] as const))(
    'klDivergence %s (wrt q and p)', (_, c) => {
      const r = rng(6)
      const N = 4, V = 6
      const zp = r.f64(N * V, 2), zq = r.f64(N * V, 2)
      const valid = c.masked ? Uint8Array.of(1, 0, 1, 1) : null
      const f = () => klDivergenceKernel(zp, zq, N, V, valid, c.reduction, c.temperature, f64(N), null, null).loss
      const gq = f64(N * V), gp = f64(N * V)
      klDivergenceKernel(zp, zq, N, V, valid, c.reduction, c.temperature, f64(N), gq, gp)
      expectGradient(gq, numericGradient(f, zq), 'dq')
      expectGradient(gp, numericGradient(f, zp), 'dp')
    })

  it.each(combos({ estimator: ['k1', 'abs', 'k2', 'k3'] as KlEstimator[], outputClamp: [null, 0.5], aggregation: ['token-mean', 'seq-mean-token-mean'] as const })
    .map((c) => [label(c), c] as const))('klPenalty %s', (_, c) => {
    const r = rng(7)
    const logp = r.f64(M, 1), ref = r.f64(M, 1)
    const agg = aggs(c.aggregation)
    const o = { estimator: c.estimator, logRatioClamp: 20, outputClamp: c.outputClamp }
    expectKernelGradient(logp, M, (grad) => klPenaltyKernel(logp, ref, mask, layout, agg, o, f64(M), grad), 'dlogp')
  })
})

describe('kl golden values from PyTorch (js reference)', () => {
  useBackend('js')

  it.each(golden('klDivergence').map((c, i) => [i, c] as const))('klDivergence case %i matches F.kl_div', (_, c) => {
    const r = rk.klDivergence({ pLogits: mat(c.pLogits, c.N, c.V), qLogits: mat(c.qLogits, c.N, c.V), grad: 'both' })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.perRow, c.expected.perRow, F32, 'perRow')
    expectClose(r.gradQ!.data, c.expected.gradQ, F32, 'gradQ')
    expectClose(r.gradP!.data, c.expected.gradP, F32, 'gradP')
  })

  it.each(golden('klPenalty').map((c) => [c.estimator, c] as const))('klPenalty %s matches verl kl_penalty', (_, c) => {
    const r = rk.klPenalty({ logp: floats(c.logp), refLogp: floats(c.refLogp), estimator: c.estimator })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.perToken, c.expected.perToken, F32, 'perToken')
    expectClose(r.gradLogp, c.expected.gradLogp, F32, 'gradLogp')
  })
})

describe.each(HOST_BACKENDS)('kl edge cases on %s', (backend) => {
  useBackend(backend)

  it('klDivergence: a p without mass is KL 0 with zero gradients, a q without mass +inf with zero gradients, NaN is NaN', () => {
    const V = 3
    const ninf = -Infinity
    const p = rk.tensor(Float32Array.of(ninf, ninf, ninf, ninf, ninf, ninf, 0, 1, 2, 0, 1, NaN, 0, 1, 2), [5, V])
    const q = rk.tensor(Float32Array.of(ninf, ninf, ninf, 0, 1, 2, ninf, ninf, ninf, 1, 1, 1, 0, ninf, 2), [5, V])
    const r = rk.klDivergence({ pLogits: p, qLogits: q, grad: 'both', reduction: 'none' })
    expect(Array.from(r.perRow.slice(0, 3))).toEqual([0, 0, Infinity])
    expect(Number.isNaN(r.perRow[3])).toBe(true)
    expect(r.perRow[4]).toBe(Infinity)  // p > 0 where q = 0
    expect(Array.from(r.gradQ!.data.slice(0, 3 * V))).toEqual(new Array(3 * V).fill(0))
    expect(Array.from(r.gradP!.data.slice(0, 3 * V))).toEqual(new Array(3 * V).fill(0))
    expect(r.gradQ!.data.slice(3 * V, 4 * V).every(Number.isNaN) && r.gradP!.data.slice(3 * V, 4 * V).every(Number.isNaN)).toBe(true)
    expect(Array.from(r.gradP!.data.slice(4 * V))).toEqual([0, 0, 0])  // no finite gradient of an infinite KL wrt p
    expect(allFinite(r.gradQ!.data.slice(4 * V))).toBe(true)  // softmax(q) − softmax(p), as cross-entropy's
  })

  // grad 'q' alone takes one pass over the KL and the q gradient (native/cpu/kl.cc): the same sums and values
  // as the two passes of grad 'both', at V off the lane and block multiples, with −inf columns, over several rows
  it.each(combos({ dtype: ['float32', 'bfloat16', 'float16'] as const, V: [37, 1001, 4099], T: [1, 1.3] }))('klDivergence grad q = grad both\'s q part and KL, $dtype V=$V T=$T', ({ dtype, V, T }) => {
    const r = rng(SEED + 71 + V)
    const N = 5
    const pLogits = logitsOf(r, N, V, dtype, 3, true), qLogits = logitsOf(r, N, V, dtype, 3, true)
    const options = { pLogits, qLogits, reduction: 'none' as const, temperature: T }
    const one = rk.klDivergence({ ...options, grad: 'q' }), both = rk.klDivergence({ ...options, grad: 'both' })
    expect(Array.from(one.perRow)).toEqual(Array.from(both.perRow))
    expect(Array.from(one.gradQ!.data)).toEqual(Array.from(both.gradQ!.data))
    expect(allFinite(one.perRow) && allFinite(one.gradQ!.data)).toBe(true)
    // equal rows: KL exactly 0 (−inf columns included), and the gradient q − p zero but for the rounding of
    // one product (the native kernels contract q·(1/S) − p·(1/S) into a fused multiply-add): |g| ≤ 2⁻²³
    const same = rk.klDivergence({ pLogits, qLogits: pLogits, reduction: 'none', temperature: T, grad: 'q' })
    expect(Array.from(same.perRow)).toEqual(new Array(N).fill(0))
    expect(same.gradQ!.data.every((g) => Math.abs(g) <= 2 ** -23)).toBe(true)
  })
})
