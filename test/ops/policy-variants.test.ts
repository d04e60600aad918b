/**
 * The policy variants of policyLoss and ppoLoss (issue 14): GSPO / GSPO-token (isLevel), CISPO, DPPO binary
 * TV / KL masks, rollout correction with a behavior policy, off-policy sequence masking and their metrics.
 * Finite differences on the float64 reference for every variant × isLevel (the stop-gradient forms
 * included), PyTorch golden values of each anchor's formula (test/fixtures/generate-golden.py), and the
 * native backends against js on fresh random inputs.
 */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { aggregationOptions } from '../../src/aggregate.js'
import { type PolicyKernelOptions, policyLossKernel } from '../../src/reference/policy.js'
import { ppoLossKernel } from '../../src/reference/ppo.js'
import type { TokenLayout } from '../../src/tokens.js'
import { NATIVE_BACKENDS, on } from '../backends.js'
import { parityError } from '../compare.js'
import { F32, expectClose, expectGradient, numericGradient, rng } from '../helpers.js'
import { SEED } from '../parity.js'

const f64 = (n: number) => new Float64Array(n)
const CORRECTIONS = [null, ...rk.ROLLOUT_CORRECTIONS] as const

// ragged packed sequences 5, 3, 0, 4, 3 with the second fully masked
const LENGTHS = [5, 3, 0, 4, 3]
const M = LENGTHS.reduce((a, b) => a + b, 0)
const layout: TokenLayout = { tokens: M, offsets: Int32Array.from([0, 5, 8, 8, 12, 15]), width: 5 }
const MASK = Uint8Array.of(1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1)

/** Log-probs of taken tokens (negative, so DPPO's p = exp(logp) is a probability), old and behavior nearby. */
function inputs(seed: number, n = M) {
  const r = rng(seed)
  const logp = Float64Array.from({ length: n }, () => -(0.05 + 2 * r.uniform()))
  const old = Float64Array.from(logp, (x) => Math.min(-0.01, x + r.normal() * 0.3))
  const behavior = Float64Array.from(old, (x) => x + r.normal() * 0.15)
  const A = r.f64(n, 1)
  return { logp, old, behavior, A }
}

const seqOf = (t: number) => LENGTHS.findIndex((_, i) => t < layout.offsets[i + 1])
const combos = rk.POLICY_VARIANTS.flatMap((variant) => rk.IS_LEVELS.flatMap((isLevel) => rk.AGGREGATIONS.map((aggregation) => ({ variant, isLevel, aggregation }))))

describe('policy variants: finite differences on the float64 reference', () => {
  it.each(combos.map((c, i) => [`${c.variant} ${c.isLevel} ${c.aggregation}`, c, i] as const))('%s', (_, c, i) => {
    const { logp, old, behavior, A } = inputs(100 + i)
    // each case also takes one rollout correction and, every other case, OPSM
    const o: PolicyKernelOptions = {
      clipLow: 0.2, clipHigh: 0.28, dualClip: c.variant === 'ppo' && i % 3 === 0 ? 3 : null, logRatioClamp: 20,
      variant: c.variant, isLevel: c.isLevel, ratioCap: 1.2, rolloutCorrection: CORRECTIONS[i % CORRECTIONS.length],
      rolloutIsLow: 0.9, rolloutIsHigh: 1.1, opsmDelta: i % 2 === 0 ? 0.02 : null,
    }
    const agg = aggregationOptions('t', { aggregation: c.aggregation })
    const valid = i % 2 === 0 ? MASK : null
    // the stop-gradient quantities held at the base point: their values, not their derivatives, enter the loss
    const sg = Float64Array.from(logp)
    const run = (grad: Float64Array) => policyLossKernel(logp, old, A, valid, layout, agg, o, f64(M), grad, behavior, sg)
    const grad = f64(M)
    const r = run(grad)
    expectGradient(grad, numericGradient(() => run(f64(M)).loss, logp), 'dlogp')
    expect(grad.some((g) => g !== 0)).toBe(true)
    expect(Number.isFinite(r.loss)).toBe(true)
  })

  it('GSPO: the sequence and sequence-token gradients agree for sequence-level advantages under seq-mean-token-mean, and differ otherwise', () => {
    const { logp, old } = inputs(7)
    const A = Float64Array.from({ length: M }, (_, t) => [0.8, -0.5, 0, 1.3, -1.1][seqOf(t)])
    const grad = (isLevel: rk.IsLevel, adv: Float64Array, aggregation: rk.AggregationMode) => {
      const g = f64(M)
      policyLossKernel(logp, old, adv, MASK, layout, aggregationOptions('t', { aggregation }), { clipLow: 0.2, clipHigh: 0.2, dualClip: null, logRatioClamp: 20, isLevel }, f64(M), g)
      return g
    }
    expectClose(grad('sequence', A, 'seq-mean-token-mean'), grad('sequence-token', A, 'seq-mean-token-mean'), { atol: 1e-15, rtol: 1e-12 }, 'gspo')
    const perToken = rng(8).f64(M, 1)
    const a = grad('sequence', perToken, 'seq-mean-token-mean'), b = grad('sequence-token', perToken, 'seq-mean-token-mean')
    expect(a.some((x, t) => Math.abs(x - b[t]) > 1e-6)).toBe(true)
  })

  it.each(rk.POLICY_VARIANTS.flatMap((variant) => rk.IS_LEVELS.map((isLevel) => [variant, isLevel] as const)))(
    'ppoLoss %s %s: d/dlogits by finite differences, and its policy terms are policyLoss on its log-probs', (variant, isLevel) => {
      const r = rng(300 + variant.length + isLevel.length)
      const V = 5, Mp = 9
      const lay: TokenLayout = { tokens: Mp, offsets: Int32Array.of(0, 4, 4, 9), width: 5 }
      const z = r.f64(Mp * V, 1.5), actions = r.ints(Mp, V)
      const { old, behavior, A } = inputs(400, Mp)
      const valid = Uint8Array.of(1, 1, 0, 1, 1, 1, 1, 1, 0)
      const agg = aggregationOptions('t', { aggregation: 'seq-mean-token-mean' })
      const policy: PolicyKernelOptions = {
        clipLow: 0.2, clipHigh: 0.2, dualClip: null, logRatioClamp: 20, variant, isLevel, ratioCap: 1.2,
        rolloutCorrection: 'token-truncate', rolloutIsLow: 0.9, rolloutIsHigh: 1.05, opsmDelta: 0.01,
      }
      const x = {
        logits: z, V, actions, oldLogp: old, anchorLogits: null, refLogp: null, behaviorLogp: behavior, advantages: A,
        values: null, returns: null, oldValues: null, valid, layout: lay, agg,
      }
      const o = { temperature: 1.1, beta: 0.2, c1: 0, klEstimator: 'k3' as const, klOutputClamp: null, policy, value: { clip: null, half: false } }
      const gz = f64(Mp * V), lp = f64(Mp)
      const res = ppoLossKernel(x, o, gz, null, lp)
      const held = { ...x, sgLogp: Float64Array.from(lp) }
      expectGradient(gz, numericGradient(() => ppoLossKernel(held, o, f64(Mp * V), null, f64(Mp)).loss, z), 'dlogits')
      const p = policyLossKernel(lp, old, A, valid, lay, agg, policy, f64(Mp), f64(Mp), behavior)
      expectClose(res.policyLoss, p.loss, { atol: 1e-12, rtol: 1e-12 }, 'policyLoss')
      for (const k of ['clipFraction', 'ratioMean', 'rolloutTruncateFraction', 'rolloutKlK3', 'opsmDropFraction'] as const) expect(res[k]).toBeCloseTo(p[k], 12)
    })
})

interface Case { op: string; name: string; B: number; T: number; options: Record<string, unknown>; expected: Record<string, any>; [k: string]: any }
const golden: { cases: Case[] } = JSON.parse(readFileSync(new URL('../fixtures/golden.json', import.meta.url), 'utf8'))

describe('policy variants: golden values of the anchors (PyTorch, float64)', () => {
  const tensor = (c: Case, x: number[]) => rk.tensor(Float64Array.from(x), [c.B, c.T])
  it.each(golden.cases.filter((c) => c.op === 'policyVariant').map((c) => [`${c.name} ${c.options.aggregation}`, c] as const))('%s', (_, c) => {
    const r = on('js', () => rk.policyLoss({
      logp: tensor(c, c.logp), oldLogp: tensor(c, c.oldLogp), advantages: tensor(c, c.advantages), behaviorLogp: tensor(c, c.behaviorLogp),
      mask: Float64Array.from(c.mask), ...c.options,
    }))
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.gradLogp, c.expected.gradLogp, F32, 'gradLogp')
    expectClose(r.perToken, c.expected.perToken, F32, 'perToken')
  })

  it('rollout metrics: verl compute_offpolicy_metrics kl / k3_kl and the IS weights mean / max', () => {
    const c = golden.cases.find((x) => x.op === 'rolloutMetrics')!
    const r = on('js', () => rk.policyLoss({
      logp: Float64Array.from(c.logp), oldLogp: Float64Array.from(c.oldLogp), advantages: Float64Array.from(c.advantages),
      behaviorLogp: Float64Array.from(c.behaviorLogp), mask: Float64Array.from(c.mask),
    }))
    for (const [k, v] of Object.entries(c.expected)) expectClose(r[k as keyof rk.PolicyLossResult] as number, v as number, F32, k)
  })
})

describe('policy variants: options', () => {
  const base = { logp: Float32Array.of(-1, -2), oldLogp: Float32Array.of(-1.1, -2), advantages: Float32Array.of(1, -1) }
  it('rejects what has no meaning, naming the option', () => {
    expect(() => rk.policyLoss({ ...base, variant: 'grpo' as never })).toThrow(/variant/)
    expect(() => rk.policyLoss({ ...base, isLevel: 'seq' as never })).toThrow(/isLevel/)
    expect(() => rk.policyLoss({ ...base, variant: 'cispo', dualClip: 3 })).toThrow(TypeError)
    expect(() => rk.policyLoss({ ...base, rolloutCorrection: 'token-mask' })).toThrow(/behaviorLogp/)
    expect(() => rk.policyLoss({ ...base, behaviorLogp: Float32Array.of(-1), rolloutCorrection: 'token-mask' })).toThrow(RangeError)
    expect(() => rk.policyLoss({ ...base, behaviorLogp: base.oldLogp, rolloutIsLow: 3 })).toThrow(/rolloutIsLow/)
    expect(() => rk.policyLoss({ ...base, opsmDelta: -1 })).toThrow(/opsmDelta/)
    expect(() => rk.policyLoss({ ...base, ratioCap: 0 })).toThrow(/ratioCap/)
  })
  it('without behaviorLogp and opsmDelta the rollout metrics are 0 and the loss is the plain one', () => {
    const plain = on('js', () => rk.policyLoss(base))
    expect(plain.rolloutWeightMean).toBe(0)
    expect(plain.opsmDropFraction).toBe(0)
    const metricsOnly = on('js', () => rk.policyLoss({ ...base, behaviorLogp: Float32Array.of(-1, -2.5) }))
    expect(metricsOnly.loss).toBe(plain.loss)
    expect(metricsOnly.rolloutWeightMax).toBeCloseTo(Math.exp(0.5), 6)
  })
})

const DTYPES = ['float32', 'float64', 'bfloat16'] as const
const parityCombos = rk.POLICY_VARIANTS.flatMap((variant) => rk.IS_LEVELS.flatMap((isLevel) => DTYPES.map((dtype, d) => ({
  variant, isLevel, dtype, aggregation: rk.AGGREGATIONS[(variant.length + isLevel.length + d) % rk.AGGREGATIONS.length],
}))))

describe.each(NATIVE_BACKENDS)(`policy variants: %s against js (seed ${SEED})`, (backend) => {
  const expectParity = (op: (o: any) => unknown, options: object, what: string) => {
    const err = parityError(on(backend, () => op(options)), on('js', () => op(options)))
    if (err !== null) expect.fail(`${what}: ${err}`)
  }
  const floats = (x: Float32Array, shape: number[], dtype: (typeof DTYPES)[number]) =>
    dtype === 'float32' ? rk.tensor(x, shape) : dtype === 'float64' ? rk.tensor(Float64Array.from(x), shape)
      : rk.tensor(rk.encodeFloats(x, dtype), shape, { dtype })

  it.each(parityCombos.map((c, i) => [`${c.variant} ${c.isLevel} ${c.dtype} ${c.aggregation}`, c, i] as const))('policyLoss %s', (_, c, i) => {
    const r = rng(SEED + i)
    const B = 5, T = 37, Mt = B * T
    const mask = r.mask(Mt)
    mask.fill(0, T, 2 * T)  // a fully masked sequence
    const logp = Float32Array.from({ length: Mt }, () => -(0.05 + 2 * r.uniform()))
    const old = Float32Array.from(logp, (x) => Math.min(-0.01, x + r.normal() * 0.3))
    const behavior = Float32Array.from(old, (x) => x + r.normal() * 0.1)
    const adv = r.f32(Mt)
    for (const [k, layout] of [[0, { shape: [B, T] }], [1, { shape: [Mt], seqLengths: Int32Array.of(30, 50, 0, 60, 45) }]] as const) {
      const rollout = CORRECTIONS[(i + k) % CORRECTIONS.length]
      const options = {
        logp: floats(logp, [...layout.shape], c.dtype), oldLogp: floats(old, [...layout.shape], c.dtype), advantages: floats(adv, [...layout.shape], c.dtype),
        behaviorLogp: floats(behavior, [...layout.shape], c.dtype), mask, aggregation: c.aggregation,
        seqLengths: 'seqLengths' in layout ? layout.seqLengths : undefined,
        variant: c.variant, isLevel: c.isLevel, clipHigh: 0.28, ratioCap: 1.2, rolloutCorrection: rollout, rolloutIsLow: 0.9, rolloutIsHigh: 1.1,
        opsmDelta: (i + k) % 2 === 0 ? 0.03 : null, dualClip: c.variant === 'ppo' ? 3 : null,
      }
      expectParity(rk.policyLoss, options, `${rollout} ${k === 0 ? '[B, T]' : 'packed'}`)
    }
  })

  it.each(rk.IS_LEVELS)('no tokens, and every token masked, isLevel %s: zeros as js gives them', (isLevel) => {
    const all = { variant: 'dppo-kl' as const, isLevel, rolloutCorrection: 'sequence-mask' as const, opsmDelta: 0 }
    const empty = new Float32Array(0)
    expectParity(rk.policyLoss, { logp: empty, oldLogp: empty, advantages: empty, behaviorLogp: empty, ...all }, 'no tokens')
    const x = Float32Array.of(-1, -2, -0.5, -3)
    const masked = { logp: rk.tensor(x, [2, 2]), oldLogp: x, advantages: x, behaviorLogp: x, mask: new Uint8Array(4), ...all }
    expectParity(rk.policyLoss, masked, 'every token masked')
    expect(on(backend, () => rk.policyLoss(masked)).loss).toBe(0)
  })

  it.each(rk.POLICY_VARIANTS.flatMap((variant) => rk.IS_LEVELS.map((isLevel) => [variant, isLevel] as const)))('ppoLoss %s %s', (variant, isLevel) => {
    const r = rng(SEED + variant.length * 7 + isLevel.length)
    const B = 3, T = 6, V = 301, Mt = B * T
    const logits = rk.tensor(r.f32(Mt * V, 2), [B, T, V])
    const actions = r.ints(Mt, V)
    const logp = on('js', () => rk.logProbs({ logits: rk.tensor(logits.toFloat32Array(), [Mt, V]), targets: actions }).logp)
    const oldLogp = Float32Array.from(logp, (x) => x + r.normal() * 0.2)
    const mask = Uint8Array.from({ length: Mt }, (_, t) => (t >= T && t < 2 * T) || t % 5 === 4 ? 0 : 1)
    const base = {
      logits, actions, oldLogp, advantages: r.f32(Mt), behaviorLogp: Float32Array.from(oldLogp, (x) => x + r.normal() * 0.1),
      values: r.f32(Mt), returns: r.f32(Mt), mask, beta: 0.1, c1: 0.5, klEstimator: 'k3' as const, variant, isLevel, ratioCap: 1.5,
      aggregation: 'seq-mean-token-mean' as const,
    }
    expectParity(rk.ppoLoss, { ...base, rolloutCorrection: 'token-mask', rolloutIsLow: 0.9, rolloutIsHigh: 1.1 }, 'token-mask')
    expectParity(rk.ppoLoss, { ...base, rolloutCorrection: 'sequence-truncate', opsmDelta: 0.05, temperature: 0.9 }, 'sequence-truncate + opsm')
    expectParity(rk.ppoLoss, { ...base, refLogits: rk.tensor(r.f32(Mt * V, 2), [B, T, V]), klEstimator: 'full' as const }, 'full KL')
    const oldLogits = rk.tensor(Float32Array.from(logits.toFloat32Array(), (x) => x + 0.3 * r.normal()), [B, T, V])
    expectParity(rk.ppoLoss, { ...base, oldLogp: undefined, oldLogits, klEstimator: 'full' as const, rolloutCorrection: 'sequence-mask', rolloutIsLow: 0.95, rolloutIsHigh: 1.05 }, 'old log-probs from oldLogits')
  })
})
