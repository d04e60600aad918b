/**
 * ppoLoss's full-vocabulary DPPO trust region (trustRegion 'full', issue 14): the DPPO mask of variant
 * 'dppo-tv' / 'dppo-kl' by each position's exact TV ½Σ_v|π_v − π_old,v| or KL(π_old ‖ π) from oldLogits,
 * instead of the taken token's binary one. PyTorch golden values (test/fixtures/golden_dppo.py), finite
 * differences on the float64 reference, a row where the two criteria disagree, the options' errors, the
 * native backends against js, and the CUDA first pass's divergence sum (ppo_logp_kernel) emulated in float32.
 */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { aggregationOptions } from '../../src/aggregate.js'
import type { PolicyKernelOptions } from '../../src/reference/policy.js'
import { ppoLossKernel, trustRegionDivergence } from '../../src/reference/ppo.js'
import { rowLse } from '../../src/reference/vocab.js'
import type { TokenLayout } from '../../src/tokens.js'
import { NATIVE_BACKENDS, on } from '../backends.js'
import { parityError } from '../compare.js'
import { F32, expectClose, expectGradient, f64, numericGradient, rng } from '../helpers.js'
import { SEED } from '../parity.js'

const DPPO = ['dppo-tv', 'dppo-kl'] as const

interface TrustCase {
  variant: 'dppo-tv' | 'dppo-kl'
  aggregation: 'token-mean' | 'seq-mean-token-mean'
  B: number; T: number; V: number
  temperature: number; clipLow: number; clipHigh: number; ratioCap: number
  logits: number[]; oldLogits: number[]; actions: number[]; advantages: number[]; mask: number[]
  expected: { loss: number; gradLogits: number[]; logp: number[]; divergence: number[]; kept: number[] }
}
const fixture: { cases: TrustCase[] } = JSON.parse(readFileSync(new URL('../fixtures/ppo_trust_region.json', import.meta.url), 'utf8'))

const caseOptions = (c: TrustCase) => ({
  logits: rk.tensor(Float64Array.from(c.logits), [c.B, c.T, c.V]), oldLogits: rk.tensor(Float64Array.from(c.oldLogits), [c.B, c.T, c.V]),
  actions: Int32Array.from(c.actions), advantages: Float64Array.from(c.advantages), mask: Uint8Array.from(c.mask),
  variant: c.variant, trustRegion: 'full' as const, clipLow: c.clipLow, clipHigh: c.clipHigh, ratioCap: c.ratioCap,
  aggregation: c.aggregation, temperature: c.temperature, beta: 0,
})

describe('trustRegion full: golden values (PyTorch, float64)', () => {
  it.each(fixture.cases.map((c) => [`${c.variant} ${c.aggregation}`, c] as const))('%s', (_, c) => {
    const res = on('js', () => rk.ppoLoss(caseOptions(c)))
    expectClose(res.loss, c.expected.loss, F32, 'loss')
    expectClose(res.policyLoss, c.expected.loss, F32, 'policyLoss')
    expectClose(res.logp, c.expected.logp, F32, 'logp')
    expectClose(res.gradLogits.toFloat32Array(), c.expected.gradLogits, F32, 'gradLogits')
    // the divergence itself, in float64
    const z = Float64Array.from(c.logits), a = Float64Array.from(c.oldLogits), invT = 1 / c.temperature
    const kind = c.variant === 'dppo-kl' ? 'kl' : 'tv'
    const div = c.expected.divergence.map((_, t) => trustRegionDivergence(z, a, t * c.V, c.V, invT, rowLse(z, t * c.V, c.V, invT), rowLse(a, t * c.V, c.V, invT), kind))
    expectClose(div, c.expected.divergence, { atol: 1e-13, rtol: 1e-12 }, 'divergence')
    // each counted token dropped by the mask is a clip-fraction count
    const counted = c.mask.filter((m) => m > 0).length
    const dropped = c.mask.filter((m, t) => m > 0 && c.expected.kept[t] === 0).length
    expect(dropped).toBeGreaterThan(0)
    expect(res.metrics.clipFraction).toBeCloseTo(dropped / counted, 6)
  })

  it.each(NATIVE_BACKENDS)('%s reproduces them', (backend) => {
    for (const c of fixture.cases) {
      const o = caseOptions(c)
      const res = on(backend, () => rk.ppoLoss({ ...o, logits: rk.tensor(Float32Array.from(c.logits), [c.B, c.T, c.V]), oldLogits: rk.tensor(Float32Array.from(c.oldLogits), [c.B, c.T, c.V]) }))
      const tol = { atol: 1e-5, rtol: 1e-4 }
      expectClose(res.loss, c.expected.loss, tol, `${c.variant} ${c.aggregation} loss`)
      expectClose(res.gradLogits.toFloat32Array(), c.expected.gradLogits, tol, `${c.variant} ${c.aggregation} gradLogits`)
    }
  })
})

describe('trustRegion full: the float64 reference', () => {
  const V = 6, Mp = 8
  const lay: TokenLayout = { tokens: Mp, offsets: Int32Array.of(0, 5, 5, 8), width: 5 }
  const valid = Uint8Array.of(1, 1, 0, 1, 1, 1, 1, 1)

  it.each(DPPO.flatMap((variant) => rk.IS_LEVELS.map((isLevel) => [variant, isLevel] as const)))('%s %s: d/dlogits by finite differences, the mask held', (variant, isLevel) => {
    const r = rng(1400 + variant.length + isLevel.length)
    const z = r.f64(Mp * V, 1.5), anchor = Float64Array.from(z, (x) => x + 0.5 * r.normal())
    const x = {
      logits: z, V, actions: r.ints(Mp, V), oldLogp: null, anchorLogits: anchor, refLogp: null, behaviorLogp: null, advantages: r.f64(Mp, 1),
      values: null, returns: null, oldValues: null, valid, layout: lay, agg: aggregationOptions('t', { aggregation: 'seq-mean-token-mean' }),
    }
    const policy: PolicyKernelOptions = { clipLow: 0.15, clipHigh: 0.1, dualClip: null, logRatioClamp: 20, variant, isLevel, ratioCap: 1.2 }
    const o = { temperature: 0.8, beta: 0.3, c1: 0, klEstimator: 'full' as const, klOutputClamp: null, policy, value: { clip: null, half: false }, trustRegion: 'full' as const }
    const gz = f64(Mp * V), lp = f64(Mp)
    const res = ppoLossKernel(x, o, gz, null, lp)
    expect(res.clipFraction).toBeGreaterThan(0)  // some tokens dropped, some kept
    expect(res.clipFraction).toBeLessThan(1)
    const div = Float64Array.from({ length: Mp }, (_, t) => trustRegionDivergence(z, anchor, t * V, V, 1 / 0.8, rowLse(z, t * V, V, 1 / 0.8), rowLse(anchor, t * V, V, 1 / 0.8), variant === 'dppo-kl' ? 'kl' : 'tv'))
    const held = { ...x, sgLogp: Float64Array.from(lp), sgDivergence: div }
    expectGradient(gz, numericGradient(() => ppoLossKernel(held, o, f64(Mp * V), null, f64(Mp)).loss, z), 'dlogits')
  })

  it('a position whose mass moved off the taken token: binary keeps it, full drops it', () => {
    // π_old uniform over 4; π puts 0.26 on the taken token 0 (+0.01) and moves the rest: TV 0.46, KL 0.61
    const q = [0.26, 0.7, 0.02, 0.02]
    const base = {
      logits: rk.tensor(Float32Array.from(q, Math.log), [1, 4]), oldLogits: rk.tensor(new Float32Array(4), [1, 4]), actions: Int32Array.of(0),
      advantages: Float32Array.of(1), clipLow: 0.1, clipHigh: 0.1, beta: 0,
    }
    for (const variant of DPPO) {
      const binary = on('js', () => rk.ppoLoss({ ...base, variant }))
      const full = on('js', () => rk.ppoLoss({ ...base, variant, trustRegion: 'full' }))
      expectClose(binary.loss, -(0.26 / 0.25) * Math.log(0.26), F32, `${variant} binary loss`)
      expect(binary.metrics.clipFractionHigh).toBe(0)
      expect(full.loss).toBe(0)
      expect(full.metrics.clipFractionHigh).toBe(1)
      expect(full.gradLogits.toFloat32Array().every((g) => g === 0)).toBe(true)
      for (const backend of NATIVE_BACKENDS) expect(on(backend, () => rk.ppoLoss({ ...base, variant, trustRegion: 'full' })).metrics.clipFractionHigh).toBe(1)
    }
  })

  it('rejects what has no meaning, naming the option', () => {
    const x = Float32Array.of(0.1, -0.2, 0.3, 0.4)
    const base = { logits: rk.tensor(x, [1, 4]), actions: Int32Array.of(1), advantages: Float32Array.of(1), oldLogits: rk.tensor(x, [1, 4]) }
    expect(() => rk.ppoLoss({ ...base, trustRegion: 'full' })).toThrow(/trustRegion.*'dppo-tv' \/ 'dppo-kl'/)
    expect(() => rk.ppoLoss({ ...base, variant: 'cispo', trustRegion: 'full' })).toThrow(TypeError)
    expect(() => rk.ppoLoss({ ...base, variant: 'dppo-tv', trustRegion: 'wide' as never })).toThrow(/trustRegion/)
    const noOld = { ...base, oldLogits: undefined, oldLogp: Float32Array.of(-1), refLogits: rk.tensor(x, [1, 4]), variant: 'dppo-kl' as const }
    expect(() => rk.ppoLoss({ ...noOld, trustRegion: 'full' })).toThrow(/oldLogits.*trustRegion 'full'/)
    expect(() => rk.ppoLoss({ ...noOld, trustRegion: 'binary' })).not.toThrow()
    expect(() => rk.policyLoss({ logp: Float32Array.of(-1), oldLogp: Float32Array.of(-1), advantages: Float32Array.of(1), trustRegion: 'full' } as never)).toThrow(/trustRegion/)
  })
})

describe.each(NATIVE_BACKENDS)(`trustRegion full: %s against js (seed ${SEED})`, (backend) => {
  it.each(DPPO.flatMap((variant) => (['float32', 'bfloat16'] as const).map((dtype) => [variant, dtype] as const)))('%s %s', (variant, dtype) => {
    const r = rng(SEED + variant.length * 3 + dtype.length)
    const B = 3, T = 7, V = 301, Mt = B * T
    const raw = r.f32(Mt * V, 2), rawOld = Float32Array.from(raw, (x) => x + 0.3 * r.normal())
    const tensor = (x: Float32Array) => (dtype === 'float32' ? rk.tensor(x, [B, T, V]) : rk.tensor(rk.encodeFloats(x, dtype), [B, T, V], { dtype }))
    const mask = Uint8Array.from({ length: Mt }, (_, t) => (t >= T && t < 2 * T) || t % 5 === 4 ? 0 : 1)
    const temperature = Float32Array.from({ length: Mt }, () => 0.7 + 0.6 * r.uniform())
    const delta = variant === 'dppo-tv' ? 0.08 : 0.02
    const options = {
      logits: tensor(raw), oldLogits: tensor(rawOld), actions: r.ints(Mt, V), advantages: r.f32(Mt), mask, variant, trustRegion: 'full' as const,
      clipLow: delta, clipHigh: delta, ratioCap: 1.5, beta: 0.1, aggregation: 'seq-mean-token-mean' as const,
    }
    for (const extra of [{}, { temperature }, { isLevel: 'sequence' as const, behaviorLogp: r.f32(Mt), rolloutCorrection: 'token-truncate' as const, opsmDelta: 0.05 }]) {
      const js = on('js', () => rk.ppoLoss({ ...options, ...extra }))
      expect(js.metrics.clipFraction).toBeGreaterThan(0)
      expect(js.metrics.clipFraction).toBeLessThan(1)
      const err = parityError(on(backend, () => rk.ppoLoss({ ...options, ...extra })), js)
      if (err !== null) expect.fail(`${JSON.stringify(Object.keys(extra))}: ${err}`)
    }
  })
})

/**
 * ppo_logp_kernel's divergence (native/cuda/ppo.cu), step by step in float32: the two lse in double
 * (block_lse_exact), each of 512 threads' strided partial sum, block_sum (warp_sum's xor tree in each warp,
 * then the warps' sums by the same tree), ½ for the TV.
 */
function cudaDivergence(z: Float32Array, a: Float32Array, V: number, invT: number, kind: 'tv' | 'kl'): number {
  const fr = Math.fround
  const lseOf = (x: Float32Array) => rowLse(Float64Array.from(x, (v) => fr(v * fr(invT))), 0, V, 1)
  const lseExact = lseOf(z), lseAExact = lseOf(a)
  const lse = fr(lseExact), lseA = fr(lseAExact), dl = fr(lseAExact - lseExact)
  const THREADS = 512
  const part = new Array<number>(THREADS).fill(0)
  for (let t = 0; t < THREADS; t++) {
    for (let v = t; v < V; v += THREADS) {
      const pa = fr(Math.exp(fr(fr(a[v] * fr(invT)) - lseA)))
      if (kind === 'kl') part[t] = fr(part[t] + (pa > 0 ? fr(pa * fr(fr(fr(a[v] - z[v]) * fr(invT)) - dl)) : 0))
      else part[t] = fr(part[t] + Math.abs(fr(fr(Math.exp(fr(fr(z[v] * fr(invT)) - lse))) - pa)))
    }
  }
  const warpSum = (v: number[]) => {
    const x = v.slice()
    for (let o = 16; o > 0; o >>= 1) {
      const y = x.slice()
      for (let l = 0; l < 32; l++) x[l] = fr(y[l] + y[l ^ o])
    }
    return x[0]
  }
  const warps = Array.from({ length: THREADS / 32 }, (_, w) => warpSum(part.slice(w * 32, w * 32 + 32)))
  const d = warpSum(Array.from({ length: 32 }, (_, l) => (l < warps.length ? warps[l] : 0)))
  return kind === 'tv' ? fr(d * 0.5) : d
}

describe('trustRegion full: the CUDA divergence sum, emulated in float32', () => {
  it.each([['tv', 1000], ['kl', 1000], ['tv', 50257], ['kl', 7]] as const)('%s, V = %i, against the float64 reference', (kind, V) => {
    const r = rng(1416 + V)
    const z = r.f32(V, 3), a = Float32Array.from(z, (x) => x + 0.4 * r.normal())
    const invT = 1 / 0.9
    const z64 = Float64Array.from(z), a64 = Float64Array.from(a)
    const want = trustRegionDivergence(z64, a64, 0, V, invT, rowLse(z64, 0, V, invT), rowLse(a64, 0, V, invT), kind)
    expectClose(cudaDivergence(z, a, V, invT, kind), want, { atol: 1e-6, rtol: 2e-4 }, `${kind} V=${V}`)
  })
})
