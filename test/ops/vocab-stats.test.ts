/**
 * One-pass row statistics of logProbs (issue 15): Σ_v p_v² (`sumProbSq`, with its gradient in
 * logProbsBackward), the largest probability and its token (`maxProb`, `maxToken`). The reference against a
 * plain float64 softmax and finite differences; cpu against js over dtype × shape × temperature, with ties,
 * −inf, NaN and +inf rows; the CUDA kernel's per-thread online Σ e², entropy and shifted log p emulated in
 * float32, also at |z|/T near 1e4.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { logProbsBackwardKernel, logProbsKernel } from '../../src/reference/vocab.js'
import { gradTolerance } from '../../src/tolerance.js'
import { NATIVE_BACKENDS, on } from '../backends.js'
import { parityError } from '../compare.js'
import { expectClose, expectGradient, numericGradient, rng } from '../helpers.js'
import { SEED } from '../parity.js'

const f64 = (n: number) => new Float64Array(n)

/** softmax of z/T in float64, the plain way */
function softmax(z: ArrayLike<number>, T: number): number[] {
  const s = Array.from(z, (x) => x / T)
  const m = Math.max(...s)
  const e = s.map((x) => Math.exp(x - m))
  const S = e.reduce((a, b) => a + b, 0)
  return e.map((x) => x / S)
}

describe('row statistics of the float64 reference', () => {
  it('Σ p², max p and its token against a plain softmax, at T = 0.7, ties to the first token', () => {
    const r = rng(21)
    const N = 6, V = 9
    const z = r.f64(N * V, 2)
    z[1 * V + 3] = z[1 * V + 7] = 9  // a tie for the largest logit: token 3
    const targets = r.ints(N, V)
    const sq = f64(N), mp = f64(N), mt = new Int32Array(N)
    logProbsKernel(z, N, V, targets, { temperature: 0.7, ignoreIndex: -100 }, f64(N), f64(N), null, { sumProbSq: sq, maxProb: mp, maxToken: mt })
    for (let n = 0; n < N; n++) {
      const row = Array.from(z.subarray(n * V, (n + 1) * V))
      const p = softmax(row, 0.7)
      expectClose(sq[n], p.reduce((a, b) => a + b * b, 0), { atol: 0, rtol: 1e-13 }, `sumProbSq[${n}]`)
      expectClose(mp[n], Math.max(...p), { atol: 0, rtol: 1e-13 }, `maxProb[${n}]`)
      expect(mt[n]).toBe(row.indexOf(Math.max(...row)))
    }
    expect(mt[1]).toBe(3)
  })

  it.each([
    ['a row with −inf logits', [-Infinity, 1, -Infinity, 2], [0.2689414213699951 ** 2 + 0.7310585786300049 ** 2, 0.7310585786300049, 3]],
    ['an all −inf row', [-Infinity, -Infinity, -Infinity, -Infinity], [0, 0, 0]],
    ['a row holding NaN', [1, NaN, 2, 0], [NaN, NaN, -1]],
    ['a row holding +inf', [1, Infinity, 2, Infinity], [NaN, NaN, 1]],
  ])('%s', (_, row, [sq, mp, mt]) => {
    const out = { sumProbSq: f64(1), maxProb: f64(1), maxToken: new Int32Array(1) }
    logProbsKernel(Float64Array.from(row), 1, 4, Int32Array.of(0), { temperature: 1, ignoreIndex: -100 }, f64(1), f64(1), null, out)
    expectClose([out.sumProbSq[0], out.maxProb[0]], [sq, mp], { atol: 1e-15, rtol: 1e-14 })
    expect(out.maxToken[0]).toBe(mt)
  })

  it.each([
    ['alone, recomputed', false, false, 1],
    ['with gradLogp and gradEntropy, Σ p² given', true, true, 0.6],
  ])('d(Σ p²)/dz by finite differences: %s', (_, withOthers, given, T) => {
    const r = rng(22)
    const N = 4, V = 7
    const z = r.f64(N * V, 2), targets = r.ints(N, V)
    targets[1] = -100
    const o = { temperature: T, ignoreIndex: -100 }
    const gq = r.f64(N), gl = withOthers ? r.f64(N) : null, gh = withOthers ? r.f64(N) : null
    const f = () => {
      const logp = f64(N), H = f64(N), sq = f64(N)
      logProbsKernel(z, N, V, targets, o, logp, f64(N), H, { sumProbSq: sq, maxProb: null, maxToken: null })
      let s = 0
      for (let n = 0; n < N; n++) s += gq[n] * sq[n] + (gl ? gl[n] * logp[n] : 0) + (gh ? gh[n] * H[n] : 0)
      return s
    }
    const lse = f64(N), sq = f64(N)
    logProbsKernel(z, N, V, targets, o, f64(N), lse, null, { sumProbSq: sq, maxProb: null, maxToken: null })
    const grad = f64(N * V)
    logProbsBackwardKernel(z, N, V, targets, lse, gl, gh, null, o, grad, gq, given ? sq : null)
    expectGradient(grad, numericGradient(f, z), 'dlogits')
  })

  it('d(max p)/dz is the gradLogp term at target maxToken, scaled by max p (as README says)', () => {
    const r = rng(23)
    const N = 3, V = 6, T = 0.8
    const z = r.f64(N * V, 2)
    const o = { temperature: T, ignoreIndex: -100 }
    const zero = new Int32Array(N)
    const stats = () => {
      const s = { sumProbSq: null, maxProb: f64(N), maxToken: new Int32Array(N) }
      logProbsKernel(z, N, V, zero, o, f64(N), f64(N), null, s)
      return s
    }
    const { maxProb, maxToken } = stats()
    const w = r.f64(N)
    const f = () => stats().maxProb.reduce((a, p, n) => a + w[n] * p, 0)
    const lse = f64(N)
    logProbsKernel(z, N, V, maxToken, o, f64(N), lse, null)
    const grad = f64(N * V)
    logProbsBackwardKernel(z, N, V, maxToken, lse, maxProb.map((p, n) => p * w[n]), null, null, o, grad)
    expectGradient(grad, numericGradient(f, z, 1e-7), 'd max p')
  })
})

/**
 * The CUDA forward (native/cuda/vocab.cu row_stats with Stats and Entropy) in float32: each of `threads`
 * threads walks columns t, t + threads, … keeping a running max m_t of the raw logits, and with
 * d = (z − m_t)·invT: S_t = Σ exp(d), Q_t = Σ exp(d)² and U_t = Σ exp(d)·d, rescaled when m_t grows by
 * δ = (m_old − m_new)·invT (S·e^δ, Q·e^2δ, e^δ·(U + S·δ)), and its first largest raw logit; the block then
 * combines them at the row max M, Q = Σ_t Q_t·e^2δ_t / S², H = ls − Σ_t e^δ_t (U_t + S_t δ_t) / S, with
 * ls = log S, log p_y = (z_y − M)·invT − ls and the argmax by (largest value, then smallest index).
 * `scaled` emulates the earlier kernel instead: z·invT rounded to float32 first, then the same walk at T = 1.
 */
function cudaRowStats(z: Float32Array, T: number, threads: number, y = 0, scaled = false) {
  const f = Math.fround
  let invT = f(1 / T)
  if (scaled) {
    z = z.map((x) => f(x * invT))
    invT = 1
  }
  const ms: number[] = [], ss: number[] = [], qs: number[] = [], us: number[] = [], bv: number[] = [], bi: number[] = []
  for (let t = 0; t < threads; t++) {
    let m = -Infinity, s = 0, q = 0, u = 0, best = -Infinity, at = Infinity
    for (let v = t; v < z.length; v += threads) {
      const x = z[v]
      if (x > best) { best = x; at = v }
      if (x === -Infinity) continue
      if (x > m) {
        const sh = f(f(m - x) * invT)
        const r = m === -Infinity ? 0 : f(Math.exp(sh))
        u = m === -Infinity ? 0 : f(r * f(u + f(s * sh)))
        q = f(f(f(q * r) * r) + 1)
        s = f(f(s * r) + 1)
        m = x
      } else {
        const d = f(f(x - m) * invT)
        const e = f(Math.exp(d))
        q = f(q + f(e * e))
        s = f(s + e)
        u = f(u + f(e * d))
      }
    }
    ms.push(m); ss.push(s); qs.push(q); us.push(u); bv.push(best); bi.push(at)
  }
  const M = Math.max(...ms)
  let S = 0, Q = 0, U = 0, best = -Infinity, at = Infinity
  for (let t = 0; t < threads; t++) {
    const sh = f(f(ms[t] - M) * invT)
    const sc = ms[t] === -Infinity ? 0 : f(Math.exp(sh))
    S = f(S + f(ss[t] * sc))
    Q = f(Q + f(f(qs[t] * sc) * sc))
    U = f(U + (ms[t] === -Infinity ? 0 : f(sc * f(us[t] + f(ss[t] * sh)))))
    if (bv[t] > best || (bv[t] === best && bi[t] < at)) { best = bv[t]; at = bi[t] }
  }
  const ls = f(Math.log(S))
  const argmax = at === Infinity ? 0 : at
  const logp = (v: number) => f(f(f(z[v] - M) * invT) - ls)
  return { sumSq: f(Q / f(S * S)), argmax, entropy: f(ls - f(U / S)), logp: logp(y), maxProb: f(Math.exp(logp(argmax))) }
}

describe('the CUDA row-statistics algorithm, emulated in float32', () => {
  it.each([[1, 37], [0.7, 1001], [1.3, 4099]])('T = %s, V = %i', (T, V) => {
    const r = rng(24 + V)
    const z = r.f32(V, 4)
    for (let i = 3; i < V; i += 13) z[i] = -Infinity
    z[V - 1] = z[V >> 1] = 30  // a tie for the largest logit, in two threads' columns
    const ref = { sumProbSq: f64(1), maxProb: f64(1), maxToken: new Int32Array(1) }
    const ref2 = { logp: f64(1), entropy: f64(1) }
    logProbsKernel(Float64Array.from(z), 1, V, Int32Array.of(0), { temperature: T, ignoreIndex: -100 }, ref2.logp, f64(1), ref2.entropy, ref)
    const gpu = cudaRowStats(z, T, 512, 0)
    expectClose(gpu.sumSq, ref.sumProbSq[0], { atol: 1e-6, rtol: 1e-5 }, 'Σ p²')
    expect(gpu.argmax).toBe(ref.maxToken[0])
    expect(gpu.argmax).toBe(V >> 1)
    expectClose(gpu.entropy, ref2.entropy[0], { atol: 1e-5, rtol: 1e-5 }, 'entropy')
    expectClose(gpu.logp, ref2.logp[0], { atol: 1e-5, rtol: 1e-5 }, 'log p')
    expectClose(gpu.maxProb, ref.maxProb[0], { atol: 1e-6, rtol: 1e-5 }, 'max p')
  })

  // z = 7000 + x at T = 0.7: z/T near 1e4, whose float32 units (~1e-3) the old z·invT-first form lost in every
  // log p; only the differences from the max are scaled now, so the spread x of the row survives
  it('|z|/T near 1e4: (z − max)·invT matches float64; z·invT rounded first (the earlier kernel) does not', () => {
    const T = 0.7, V = 1001, y = 17
    const r = rng(1e4)
    const z = Float32Array.from(r.f32(V, 3), (x) => 7000 + x)
    const ref = { sumProbSq: f64(1), maxProb: f64(1), maxToken: new Int32Array(1) }
    const logp = f64(1), entropy = f64(1)
    logProbsKernel(Float64Array.from(z), 1, V, Int32Array.of(y), { temperature: T, ignoreIndex: -100 }, logp, f64(1), entropy, ref)
    const tol = { atol: 2e-5, rtol: 2e-5 }
    const err = (g: ReturnType<typeof cudaRowStats>) => Math.max(Math.abs(g.logp - logp[0]), Math.abs(g.entropy - entropy[0]), Math.abs(g.maxProb - ref.maxProb[0]) / ref.maxProb[0])
    const gpu = cudaRowStats(z, T, 512, y)
    expectClose(gpu.logp, logp[0], tol, 'log p')
    expectClose(gpu.entropy, entropy[0], tol, 'entropy')
    expectClose(gpu.maxProb, ref.maxProb[0], tol, 'max p')
    expectClose(gpu.sumSq, ref.sumProbSq[0], tol, 'Σ p²')
    expect(gpu.argmax).toBe(ref.maxToken[0])
    expect(err(cudaRowStats(z, T, 512, y, true))).toBeGreaterThan(10 * err(gpu) + 1e-4)
  })
})

type Dtype = 'float32' | 'bfloat16' | 'float16'
const DTYPES: Dtype[] = ['float32', 'bfloat16', 'float16']
const SHAPES: [number, number][] = [[1, 37], [7, 1001], [5, 4099], [3, 32000]]

function logitsOf(r: ReturnType<typeof rng>, N: number, V: number, dtype: Dtype) {
  const z = r.f32(N * V, 3)
  for (let i = 5; i < z.length; i += 11) z[i] = -Infinity
  if (N > 3) {
    z.fill(-Infinity, 2 * V, 3 * V)  // a row without mass
    z[3 * V + 1] = NaN  // a row holding NaN
  }
  if (N > 4) z[4 * V + 2] = z[4 * V + V - 1] = Infinity  // a row holding +inf
  // bf16/f16 round many logits to the same value: ties for the largest are common there
  return dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
}

describe.each(NATIVE_BACKENDS)(`row statistics: %s against js (seed ${SEED})`, (backend) => {
  const cases = DTYPES.flatMap((dtype) => SHAPES.flatMap(([N, V]) => [1, 0.6].map((T) => [dtype, N, V, T] as const)))
  it.each(cases)('%s [%i, %i] T=%s', (dtype, N, V, T) => {
    const r = rng(SEED + V + N)
    const logits = logitsOf(r, N, V, dtype)
    const targets = r.ints(N, V)
    if (N > 1) targets[N - 1] = -100
    const fwd = () => rk.logProbs({ logits, targets, temperature: T, entropy: true, sumProbSq: true, maxProb: true })
    const expected = on('js', fwd)
    const actual = on(backend, fwd)
    const error = parityError(actual, expected)
    if (error !== null) expect.fail(`logProbs stats ${dtype} [${N}, ${V}] T=${T}: ${error}`)
    expect(actual.maxToken).toEqual(expected.maxToken)
    expect(actual.maxToken).toBeInstanceOf(Int32Array)
    // the backward of Σ p², recomputed and given
    const gradSumProbSq = r.f32(N), gradLogp = r.f32(N)
    for (const sumProbSq of [undefined, expected.sumProbSq]) {
      const bwd = () => rk.logProbsBackward({ logits, targets, temperature: T, lse: expected.lse, gradLogp, gradSumProbSq, sumProbSq })
      const e = parityError(on(backend, bwd), on('js', bwd), { gradLogits: gradTolerance(T) })
      if (e !== null) expect.fail(`logProbsBackward gradSumProbSq ${dtype} [${N}, ${V}] T=${T} given=${!!sumProbSq}: ${e}`)
    }
  })
})

describe('row statistics: options', () => {
  const logits = rk.tensor(Float32Array.of(1, 2, 3, 3, 0, -1), [2, 3])
  const targets = Int32Array.of(0, -100)
  it('absent unless asked for; ignored rows give 0 and token −1', () => {
    expect(Object.keys(rk.logProbs({ logits, targets })).sort()).toEqual(['logp', 'lse'])
    const r = rk.logProbs({ logits, targets, sumProbSq: true, maxProb: true })
    expect(Array.from(r.maxToken!)).toEqual([2, -1])
    expect(r.sumProbSq![1]).toBe(0)
    expect(r.maxProb![1]).toBe(0)
  })
  it('gradSumProbSq alone is a gradient; none of the three is a TypeError', () => {
    expect(() => rk.logProbsBackward({ logits, targets, lse: new Float32Array(2), gradSumProbSq: Float32Array.of(1, 1) })).not.toThrow()
    expect(() => rk.logProbsBackward({ logits, targets, lse: new Float32Array(2) })).toThrow(/gradLogp must be given \(or gradEntropy, or gradSumProbSq\)/)
    expect(() => rk.logProbs({ logits, targets, maxProb: 1 as never })).toThrow(/maxProb must be a boolean/)
  })
})
