/**
 * Per-row temperature (issue 15): `temperature` as a Float32Array of one T per row, in logProbs,
 * logProbsBackward, klDivergence, ppoLoss and crossEntropy (whose scalar temperature is new too). Row n is computed at T[n]: the float64 reference against
 * finite differences, each row against a call at that row's scalar T, and cpu against js on fresh inputs.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { tokenLayout } from '../../src/tokens.js'
import { aggregationOptions } from '../../src/aggregate.js'
import { minTemperature } from '../../src/options.js'
import { klDivergenceKernel } from '../../src/reference/kl.js'
import { ppoLossKernel } from '../../src/reference/ppo.js'
import { crossEntropyKernel, logProbsBackwardKernel, logProbsKernel } from '../../src/reference/vocab.js'
import { type Tolerance, gradTolerance, klGradPTolerance } from '../../src/tolerance.js'
import { HOST_BACKENDS, NATIVE_BACKENDS, on } from '../backends.js'
import { parityError } from '../compare.js'
import { expectGradient, numericGradient, rng } from '../helpers.js'
import { SEED } from '../parity.js'

const f64 = (n: number) => new Float64Array(n)
type R = ReturnType<typeof rng>
/** N temperatures in [0.4, 2.5], each exactly a float32 */
const temps = (r: R, N: number) => Float32Array.from({ length: N }, () => 0.4 + 2.1 * r.uniform())

describe('per-row temperature: finite-difference gradients of the float64 reference', () => {
  it.each([false, true])('logProbsBackward (entropy %s)', (entropy) => {
    const r = rng(11)
    const N = 4, V = 7
    const z = r.f64(N * V, 2), targets = r.ints(N, V)
    targets[2] = -100
    const o = { temperature: Float32Array.of(0.5, 1.7, 0.9, 2.25), ignoreIndex: -100 }
    const gl = r.f64(N), gh = entropy ? r.f64(N) : null
    const f = () => {
      const logp = f64(N), H = f64(N)
      logProbsKernel(z, N, V, targets, o, logp, f64(N), H)
      let s = 0
      for (let n = 0; n < N; n++) s += gl[n] * logp[n] + (gh ? gh[n] * H[n] : 0)
      return s
    }
    const lse = f64(N)
    logProbsKernel(z, N, V, targets, o, f64(N), lse, null)
    const grad = f64(N * V)
    logProbsBackwardKernel(z, N, V, targets, lse, gl, gh, null, o, grad)
    expectGradient(grad, numericGradient(f, z), 'dlogits')
  })

  it.each(['mean', 'sum'] as const)('klDivergence, reduction %s (wrt q and p)', (reduction) => {
    const r = rng(12)
    const N = 4, V = 6
    const zp = r.f64(N * V, 2), zq = r.f64(N * V, 2)
    const T = Float32Array.of(0.6, 1.3, 2, 0.8)
    const f = () => klDivergenceKernel(zp, zq, N, V, null, reduction, T, f64(N), null, null).loss
    const gq = f64(N * V), gp = f64(N * V)
    klDivergenceKernel(zp, zq, N, V, null, reduction, T, f64(N), gq, gp)
    expectGradient(gq, numericGradient(f, zq), 'dq')
    expectGradient(gp, numericGradient(f, zp), 'dp')
  })

  it.each([
    ['mean, plain', { labelSmoothing: 0, zLoss: 0, weights: false }],
    ['mean, ε 0.1, z-loss, class and token weights', { labelSmoothing: 0.1, zLoss: 0.01, weights: true }],
  ] as const)('crossEntropy, %s (wrt logits)', (_, c) => {
    const r = rng(15)
    const N = 4, V = 6
    const z = r.f64(N * V, 2), targets = r.ints(N, V)
    targets[1] = -100
    const o = {
      ignoreIndex: -100, reduction: 'mean' as const, labelSmoothing: c.labelSmoothing, zLoss: c.zLoss,
      classWeights: c.weights ? Float64Array.from({ length: V }, () => 0.5 + r.uniform()) : null,
      tokenWeights: c.weights ? Float64Array.from({ length: N }, () => r.uniform()) : null,
      temperature: Float32Array.of(0.5, 1.7, 0.9, 2.25),
    }
    const f = () => crossEntropyKernel(z, N, V, targets, o, f64(N), f64(N), null).loss
    const grad = f64(N * V)
    crossEntropyKernel(z, N, V, targets, o, f64(N), f64(N), grad)
    expectGradient(grad, numericGradient(f, z), 'dlogits')
  })

  it.each(['full', 'k3'] as const)('ppoLoss, kl %s (wrt logits)', (kl) => {
    const r = rng(13)
    const layout = tokenLayout('t', 'x', [2, 3], undefined)
    const M = layout.tokens, V = 5
    const z = r.f64(M * V, 1.5)
    const anchor = Float64Array.from(z, (x) => x + r.normal() * 0.3)
    const actions = r.ints(M, V)
    const T = temps(r, M)
    const oldLogp = f64(M)
    logProbsKernel(anchor, M, V, actions, { temperature: T, ignoreIndex: -100 }, oldLogp, f64(M), null)
    const x = {
      logits: z, V, actions, oldLogp, anchorLogits: anchor, refLogp: null, advantages: r.f64(M),
      values: null, returns: null, oldValues: null, valid: null, layout, agg: aggregationOptions('t', { aggregation: 'token-mean' }),
    }
    const o = {
      temperature: T, beta: 0.3, c1: 0, klEstimator: kl, klOutputClamp: null,
      policy: { clipLow: 0.2, clipHigh: 0.2, dualClip: null, logRatioClamp: 20 }, value: { clip: null, half: false },
    }
    const f = () => ppoLossKernel(x, o, f64(M * V), null, f64(M)).loss
    const gz = f64(M * V)
    ppoLossKernel(x, o, gz, null, f64(M))
    expectGradient(gz, numericGradient(f, z), 'dlogits')
  })
})

/** rows [n, n+1) of a [N, V] float32 tensor, as a [1, V] tensor */
const rowOf = (z: Float32Array, V: number, n: number) => rk.tensor(z.slice(n * V, (n + 1) * V), [1, V])

describe.each(HOST_BACKENDS)('per-row temperature on %s: row n is the op at T[n]', (backend) => {
  const N = 5, V = 33
  const r = rng(14)
  const zp = r.f32(N * V, 3), zq = r.f32(N * V, 3)
  const targets = r.ints(N, V)
  const T = Float32Array.of(0.5, 1, 1.75, 0.25, 3)  // exact in float32, so the scalar calls see the same T

  it('logProbs and logProbsBackward', () => on(backend, () => {
    const logits = rk.tensor(zp, [N, V])
    const all = rk.logProbs({ logits, targets, temperature: T, entropy: true })
    const gradLogp = Float32Array.from({ length: N }, (_, n) => n - 2), gradEntropy = Float32Array.from({ length: N }, (_, n) => 0.5 * n)
    const g = rk.logProbsBackward({ logits, targets, temperature: T, lse: all.lse, gradLogp, gradEntropy }).gradLogits.toFloat32Array()
    for (let n = 0; n < N; n++) {
      const one = rk.logProbs({ logits: rowOf(zp, V, n), targets: targets.subarray(n, n + 1), temperature: T[n], entropy: true })
      expect([all.logp[n], all.lse[n], all.entropy![n]]).toEqual([one.logp[0], one.lse[0], one.entropy![0]])
      const gOne = rk.logProbsBackward({
        logits: rowOf(zp, V, n), targets: targets.subarray(n, n + 1), temperature: T[n], lse: one.lse,
        gradLogp: gradLogp.subarray(n, n + 1), gradEntropy: gradEntropy.subarray(n, n + 1),
      }).gradLogits.toFloat32Array()
      expect(g.subarray(n * V, (n + 1) * V)).toEqual(gOne)
    }
  }))

  it('klDivergence', () => on(backend, () => {
    const all = rk.klDivergence({ pLogits: rk.tensor(zp, [N, V]), qLogits: rk.tensor(zq, [N, V]), temperature: T, reduction: 'none', grad: 'both' })
    for (let n = 0; n < N; n++) {
      const one = rk.klDivergence({ pLogits: rowOf(zp, V, n), qLogits: rowOf(zq, V, n), temperature: T[n], reduction: 'none', grad: 'both' })
      expect(all.perRow[n]).toBe(one.perRow[0])
      expect(all.gradQ!.toFloat32Array().subarray(n * V, (n + 1) * V)).toEqual(one.gradQ!.toFloat32Array())
      expect(all.gradP!.toFloat32Array().subarray(n * V, (n + 1) * V)).toEqual(one.gradP!.toFloat32Array())
    }
  }))

  it('crossEntropy (losses, lse and the gradient of Σ losses)', () => on(backend, () => {
    const o = { targets, reduction: 'sum' as const, labelSmoothing: 0.1, zLoss: 1e-3, grad: true }
    const all = rk.crossEntropy({ ...o, logits: rk.tensor(zp, [N, V]), temperature: T, reduction: 'none' })
    const g = rk.crossEntropy({ ...o, logits: rk.tensor(zp, [N, V]), temperature: T }).gradLogits!.toFloat32Array()
    for (let n = 0; n < N; n++) {
      const one = rk.crossEntropy({ ...o, logits: rowOf(zp, V, n), targets: targets.subarray(n, n + 1), temperature: T[n] })
      expect([all.losses![n], all.lse[n]]).toEqual([one.loss, one.lse[0]])
      expect(g.subarray(n * V, (n + 1) * V)).toEqual(one.gradLogits!.toFloat32Array())
    }
  }))

  it('crossEntropy at T is crossEntropy of logits / T, with the gradient over T', () => on(backend, () => {
    const T0 = 0.5  // z/T exact in float32
    const a = rk.crossEntropy({ logits: rk.tensor(zp, [N, V]), targets, temperature: T0, grad: true })
    const b = rk.crossEntropy({ logits: rk.tensor(zp.map((x) => x / T0), [N, V]), targets, grad: true })
    expect(a.loss).toBe(b.loss)
    expect(a.lse).toEqual(b.lse)
    expect(a.gradLogits!.toFloat32Array()).toEqual(b.gradLogits!.toFloat32Array().map((x) => x / T0))
  }))

  it('ppoLoss (logp per token)', () => on(backend, () => {
    const o = { logits: rk.tensor(zp, [N, V]), actions: targets, oldLogits: rk.tensor(zq, [N, V]), advantages: r.f32(N), beta: 0.1 }
    const all = rk.ppoLoss({ ...o, temperature: T })
    for (let n = 0; n < N; n++) {
      const one = rk.ppoLoss({ ...o, temperature: T[n] })
      expect(all.logp[n]).toBe(one.logp[n])
    }
  }))

  it('a per-row array of one value is the scalar temperature, bitwise', () => on(backend, () => {
    const logits = rk.tensor(zp, [N, V])
    expect(rk.logProbs({ logits, targets, temperature: new Float32Array(N).fill(0.75), entropy: true }))
      .toEqual(rk.logProbs({ logits, targets, temperature: 0.75, entropy: true }))
  }))
})

type Dtype = 'float32' | 'bfloat16' | 'float16'
const DTYPES: Dtype[] = ['float32', 'bfloat16', 'float16']
const SHAPES: [number, number][] = [[1, 37], [5, 1001], [3, 4099], [4, 32000]]
const OPS = ['logProbs', 'logProbsBackward', 'klDivergence', 'ppoLoss', 'crossEntropy'] as const

function logitsOf(r: R, N: number, V: number, dtype: Dtype) {
  const z = r.f32(N * V, 3)
  for (let i = 5; i < z.length; i += 11) z[i] = -Infinity
  return dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
}

describe.each(NATIVE_BACKENDS)(`per-row temperature: %s against js (seed ${SEED})`, (backend) => {
  const cases = OPS.flatMap((op) => DTYPES.flatMap((dtype) => SHAPES.map(([N, V]) => [op, dtype, N, V] as const)))
  it.each(cases)('%s %s [%i, %i]', (op, dtype, N, V) => {
    const r = rng(SEED + V + N)
    const T = temps(r, N)
    const logits = logitsOf(r, N, V, dtype)
    const targets = r.ints(N, V)
    const grad = gradTolerance(minTemperature(T))
    let run: () => unknown
    let tol: (e: any) => Record<string, Tolerance> = () => ({})
    switch (op) {
      case 'logProbs':
        run = () => rk.logProbs({ logits, targets, temperature: T, entropy: true })
        break
      case 'logProbsBackward': {
        const lse = on('js', () => rk.logProbs({ logits, targets, temperature: T })).lse
        const gradLogp = r.f32(N), gradEntropy = r.f32(N)
        run = () => rk.logProbsBackward({ logits, targets, temperature: T, lse, gradLogp, gradEntropy })
        tol = () => ({ gradLogits: grad })
        break
      }
      case 'klDivergence': {
        const qLogits = logitsOf(r, N, V, dtype)
        run = () => rk.klDivergence({ pLogits: logits, qLogits, temperature: T, grad: 'both', reduction: 'sum' })
        tol = (e) => ({ gradQ: grad, gradP: klGradPTolerance(e.perRow, minTemperature(T)) })
        break
      }
      case 'crossEntropy': {
        // finite logits (label smoothing makes a −inf logit's row loss +inf)
        const z = r.f32(N * V, 3)
        const finite = dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
        const tokenWeights = r.f32(N).map(Math.abs)
        run = () => rk.crossEntropy({ logits: finite, targets, temperature: T, grad: true, labelSmoothing: 0.05, zLoss: 1e-3, tokenWeights, reduction: 'none' })
        tol = () => ({ gradLogits: grad })
        break
      }
      case 'ppoLoss': {
        const oldLogits = logitsOf(r, N, V, dtype)
        const actions = Int32Array.from(targets, (y, n) => ((n * V + y) % 11 === 5 ? (y + 1) % V : y))  // at a finite logit
        const advantages = r.f32(N)
        run = () => rk.ppoLoss({ logits, actions, oldLogits, advantages, temperature: T, beta: 0.05 })
        tol = () => ({ gradLogits: grad })
        break
      }
    }
    const expected = on('js', run)
    const actual = on(backend, run)
    const error = parityError(actual, expected, tol(expected))
    if (error !== null) expect.fail(`${op} ${dtype} [${N}, ${V}] per-row T: ${error}`)
  })
})

describe('per-row temperature: validation', () => {
  const logits = rk.tensor(new Float32Array(6), [2, 3])
  const targets = Int32Array.of(0, 1)
  it.each([
    ['a wrong length', Float32Array.of(1), RangeError, /logProbs: temperature.length must be 2, got 1/],
    ['a zero', Float32Array.of(1, 0), RangeError, /logProbs: temperature\[1\] must be a finite number ≥ 1e-6 as a float32, got 0/],
    ['1e-7', Float32Array.of(1e-7, 1), RangeError, /temperature\[0\]/],
    ['NaN', Float64Array.of(1, NaN), RangeError, /temperature\[1\]/],
    ['+inf', Float32Array.of(Infinity, 1), RangeError, /temperature\[0\]/],
    ['1e300 (past float32)', Float64Array.of(1e300, 1), RangeError, /temperature\[0\]/],
    ['an Int32Array', Int32Array.of(1, 1), TypeError, /temperature must be a number, or a Float32Array of one temperature per row/],
    ['a plain array', [1, 1], TypeError, /temperature must be a number, or a Float32Array/],
  ])('%s', (_, temperature, error, message) => {
    expect(() => rk.logProbs({ logits, targets, temperature: temperature as never })).toThrow(error)
    expect(() => rk.logProbs({ logits, targets, temperature: temperature as never })).toThrow(message)
  })
  it('the array is read once, as float32: a Float64Array is rounded, a later write changes nothing', () => {
    const T = Float64Array.of(0.7, 1.3)
    const a = rk.logProbs({ logits, targets, temperature: T as never })
    expect(a).toEqual(rk.logProbs({ logits, targets, temperature: Float32Array.of(0.7, 1.3) }))
  })
  it('crossEntropy checks its temperature as logProbs does', () => {
    expect(() => rk.crossEntropy({ logits, targets, temperature: Float32Array.of(1, 1, 1) })).toThrow(/crossEntropy: temperature.length must be 2, got 3/)
    expect(() => rk.crossEntropy({ logits, targets, temperature: 0 })).toThrow(/crossEntropy: temperature/)
    expect(() => rk.crossEntropy({ logits, targets, temperature: Float32Array.of(1, -1) })).toThrow(/crossEntropy: temperature\[1\]/)
  })
  it('klDivergence and ppoLoss check the length against their rows', () => {
    expect(() => rk.klDivergence({ pLogits: logits, qLogits: logits, temperature: Float32Array.of(1, 1, 1) })).toThrow(/klDivergence: temperature.length must be 2, got 3/)
    expect(() => rk.ppoLoss({ logits, actions: targets, oldLogp: new Float32Array(2), advantages: new Float32Array(2), temperature: Float32Array.of(1) }))
      .toThrow(/ppoLoss: temperature.length must be 2, got 1/)
  })
})
