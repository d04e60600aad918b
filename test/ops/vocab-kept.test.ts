/**
 * Kept-set log-probs (issue 15, sampling replay): z_y/T − log Σ_{v∈K} exp(z_v/T) with K given as CSR or drawn
 * by vLLM's min-p / top-k / top-p. Golden values from PyTorch (vLLM's top-k/top-p written in torch), the
 * reference against finite differences and hand-made sets (ties), cpu against js over dtype × shape × form.
 */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { keptLogProbsKernel, samplingKeep } from '../../src/reference/vocab.js'
import { gradTolerance } from '../../src/tolerance.js'
import { HOST_BACKENDS, NATIVE_BACKENDS, on } from '../backends.js'
import { parityError } from '../compare.js'
import { F32, expectClose, expectGradient, numericGradient, rng } from '../helpers.js'
import { SEED } from '../parity.js'

const f64 = (n: number) => new Float64Array(n)
type R = ReturnType<typeof rng>

interface Case { op: string; expected: Record<string, any>; [k: string]: any }
const golden: { cases: Case[] } = JSON.parse(readFileSync(new URL('../fixtures/golden.json', import.meta.url), 'utf8'))

describe.each(HOST_BACKENDS)('golden values from PyTorch: vLLM top-k / top-p on %s', (backend) => {
  const cases = golden.cases.filter((c) => c.op === 'keptLogProbs')
  it('there are four cases', () => expect(cases.length).toBe(4))
  it.each(cases.map((c, i) => [i, c] as const))('case %i', (_, c) => on(backend, () => {
    const r = rk.keptLogProbs({
      logits: rk.tensor(Float32Array.from(c.logits), [c.N, c.V]), targets: Int32Array.from(c.targets), temperature: c.temperature,
      topK: c.topK, topP: c.topP, gradLogp: Float32Array.from(c.gradLogp),
    })
    // the logits are float64 in the file, float32 here (their rounding is within F32 of these values)
    expectClose(r.logp, c.expected.logp, F32, 'logp')
    expectClose(r.lse, c.expected.lse, F32, 'lse')
    expectClose(r.gradLogits!.toFloat32Array(), c.expected.gradLogits, F32, 'gradLogits')
  }))
})

describe('kept sets of the reference, as vLLM draws them', () => {
  const s = [1, 3, 2, 3, 0, -Infinity, 3, 2.5]
  it.each([
    ['top-k 2: the three tied at the 2nd largest all kept', 2, 1, 0, [1, 3, 6]],
    ['top-k 4', 4, 1, 0, [1, 3, 6, 7]],
    ['top-k ≥ V: off', 8, 1, 0, [0, 1, 2, 3, 4, 6, 7]],
    ['min-p 0.5: exp(s − 3) ≥ 0.5', 0, 1, 0.5, [1, 3, 6, 7]],
    ['top-p 1e-3: the largest, the last of the ties by index', 0, 1e-3, 0, [6]],
    ['top-p 0.5 over top-k 4', 4, 0.5, 0, [3, 6]],
  ])('%s', (_, k, p, m, want) => {
    const keep = samplingKeep(s, s.length, k, p, m)
    expect(Array.from(keep.keys()).filter((v) => keep[v])).toEqual(want)
  })
  it('top-p: c_i ≤ 1 − p drops, the cumulative sum taken ascending', () => {
    // p = softmax(log [1, 2, 3, 4]) = [.1, .2, .3, .4]; c = .1, .3, .6, 1: p = 0.7 drops c ≤ 0.3 (the first two)
    const keep = samplingKeep([0, Math.log(2), Math.log(3), Math.log(4)], 4, 0, 0.7, 0)
    expect(Array.from(keep)).toEqual([0, 0, 1, 1])
  })
})

describe('finite-difference gradients of the reference', () => {
  it.each(['csr', 'sampling'] as const)('%s form, per-row T', (form) => {
    const r = rng(31)
    const N = 4, V = 9
    const z = r.f64(N * V, 2)
    const targets = Int32Array.of(0, 3, 8, -100)
    const o = {
      temperature: Float32Array.of(0.7, 1, 1.5, 1), ignoreIndex: -100,
      keepOffsets: form === 'csr' ? Int32Array.of(0, 3, 6, 9, 9) : null, keepTokens: form === 'csr' ? Int32Array.of(0, 2, 5, 1, 3, 4, 6, 7, 8) : null,
      sampling: form === 'csr' ? null : { topK: Int32Array.of(0, 5, 3, 0), topP: Float32Array.of(0.9, 1, 1, 1), minP: Float32Array.of(0, 0, 0.01, 0) },
    }
    // targets inside each set: a logp of −inf has no gradient
    if (form === 'sampling') {
      const lp = f64(N)
      keptLogProbsKernel(z, N, V, targets, o, lp, f64(N), null, null)
      for (let n = 0; n < 3; n++) if (lp[n] === -Infinity) targets[n] = Array.from(z.subarray(n * V, (n + 1) * V)).indexOf(Math.max(...z.subarray(n * V, (n + 1) * V)))
    }
    const g = r.f64(N)
    const f = () => {
      const lp = f64(N)
      keptLogProbsKernel(z, N, V, targets, o, lp, f64(N), null, null)
      return lp.reduce((a, x, n) => a + g[n] * x, 0)
    }
    const grad = f64(N * V)
    keptLogProbsKernel(z, N, V, targets, o, f64(N), f64(N), g, grad)
    expect(Number.isFinite(f())).toBe(true)
    expectGradient(grad, numericGradient(f, z), 'dlogits')
  })
})

type Dtype = 'float32' | 'bfloat16' | 'float16'
const DTYPES: Dtype[] = ['float32', 'bfloat16', 'float16']
const SHAPES: [number, number][] = [[1, 37], [6, 1001], [3, 4099], [2, 32000]]

function logitsOf(r: R, N: number, V: number, dtype: Dtype) {
  const z = r.f32(N * V, 3)
  for (let i = 5; i < z.length; i += 11) z[i] = -Infinity
  return dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
}

/** A random kept set per row (CSR), holding the target for most rows. */
function randomSets(r: R, N: number, V: number, targets: Int32Array) {
  const offsets = [0], tokens: number[] = []
  for (let n = 0; n < N; n++) {
    const size = 1 + r.int(Math.min(V, 300))
    const set = new Set<number>()
    if (n % 4 !== 3 && targets[n] >= 0) set.add(targets[n])
    while (set.size < size) set.add(r.int(V))
    tokens.push(...[...set].sort((a, b) => a - b))
    offsets.push(tokens.length)
  }
  return { keepOffsets: Int32Array.from(offsets), keepTokens: Int32Array.from(tokens) }
}

describe.each(NATIVE_BACKENDS)(`keptLogProbs: %s against js (seed ${SEED})`, (backend) => {
  const cases = DTYPES.flatMap((dtype) => SHAPES.flatMap(([N, V]) => (['csr', 'top-k', 'top-p', 'all three'] as const).map((form) => [dtype, N, V, form] as const)))
  it.each(cases)('%s [%i, %i] %s', (dtype, N, V, form) => {
    const r = rng(SEED + V + N)
    const logits = logitsOf(r, N, V, dtype)
    const targets = r.ints(N, V)
    if (N > 2) targets[1] = -100
    const temperature = Float32Array.from({ length: N }, () => 0.5 + r.uniform())
    const gradLogp = r.f32(N)
    const set = form === 'csr' ? randomSets(r, N, V, targets)
      : form === 'top-k' ? { topK: Int32Array.from({ length: N }, (_, n) => [1, 5, 50, 0][n % 4]) }
        : form === 'top-p' ? { topP: Float32Array.from({ length: N }, (_, n) => [0.9, 0.5, 1, 0.99][n % 4]) }
          : { topK: 40, topP: 0.8, minP: 0.02 }
    // a target the sampler could have drawn: the row's largest logit (always kept), on half the rows
    if (form !== 'csr') {
      const zz = logits.toFloat32Array()
      for (let n = 0; n < N; n += 2) if (targets[n] !== -100) targets[n] = zz.subarray(n * V, (n + 1) * V).reduce((b, x, v, a) => (x > a[b] ? v : b), 0)
    }
    const run = () => rk.keptLogProbs({ logits, targets, temperature, gradLogp, ...set })
    const expected = on('js', run)
    const error = parityError(on(backend, run), expected, { gradLogits: gradTolerance(0.5) })
    if (error !== null) expect.fail(`keptLogProbs ${dtype} [${N}, ${V}] ${form}: ${error}`)
  })
})

describe.each(NATIVE_BACKENDS)('keptLogProbs at |z|/T near 1e4 on %s (z/T is never rounded to float32 before the max is taken off)', (backend) => {
  it.each(['CSR', 'min-p', 'top-p'] as const)('%s', (how) => {
    const r = rng(77)
    const N = 4, V = 300, T = 3e-4
    // z = 3 + T·x: z/T near 1e4, whose float32 units (~1e-3) are far coarser than the spread x of the row
    const logits = rk.tensor(Float32Array.from(r.f32(N * V, 2), (x) => 3 + T * x), [N, V])
    const targets = Int32Array.from(on('js', () => rk.logProbs({ logits, targets: new Int32Array(N), maxProb: true })).maxToken!)
    const rows = Array.from({ length: N }, () => Array.from({ length: V }, (_, v) => v).filter((v) => v % 3 !== 1 || targets.includes(v)))
    const kept = how === 'CSR'
      ? { keepOffsets: Int32Array.from([0, ...rows.map((_, i) => rows.slice(0, i + 1).reduce((a, b) => a + b.length, 0))]), keepTokens: Int32Array.from(rows.flat()) }
      : how === 'min-p' ? { minP: 0.01 } : { topP: 0.9 }
    const o = { logits, targets, temperature: T, ...kept, gradLogp: r.f32(N) }
    const error = parityError(on(backend, () => rk.keptLogProbs(o)), on('js', () => rk.keptLogProbs(o)), { gradLogits: gradTolerance(T) })
    if (error !== null) expect.fail(error)
  })
})

/**
 * The CUDA kept-set kernel (native/cuda/vocab.cu kept_log_probs_kernel) in float32: each of `threads` threads
 * walks kept tokens i, i + threads, … keeping a running max m of the raw logits and S = Σ exp((z − m)·invT),
 * the block combines them at the max M; lse = M·invT + log S and log p_y = (z_y − M)·invT − log S in double.
 * `scaled` emulates the earlier kernel: x = z·invT rounded to float32 first, lse = M_x + log S, log p = x_y − lse.
 */
function cudaKept(z: Float32Array, tokens: number[], y: number, T: number, threads: number, scaled = false) {
  const f = Math.fround
  const invT = f(1 / T)
  const val = (v: number) => (scaled ? f(z[v] * invT) : z[v])
  const k = scaled ? 1 : invT
  const add = (a: [number, number], x: number): [number, number] =>
    x > a[0] ? [x, f(f(a[1] * f(Math.exp(f(f(a[0] - x) * k)))) + 1)] : [a[0], f(a[1] + f(Math.exp(f(f(x - a[0]) * k))))]
  const parts: [number, number][] = []
  for (let t = 0; t < threads; t++) {
    let a: [number, number] = [-Infinity, 0]
    for (let i = t; i < tokens.length; i += threads) a = add(a, val(tokens[i]))
    parts.push(a)
  }
  const M = Math.max(...parts.map((a) => a[0]))
  let S = 0
  for (const [m, s] of parts) S = f(S + (m === -Infinity ? 0 : f(s * f(Math.exp(f(f(m - M) * k))))))
  const logS = Math.log(S)
  if (scaled) return { lse: f(M + logS), logp: f(val(y) - (M + logS)) }
  return { lse: f(M * invT + logS), logp: f((z[y] - M) * invT - logS) }
}

describe('the CUDA kept-set algorithm, emulated in float32', () => {
  // z = 3 + T·x at T = 3e-4: z/T near 1e4, whose float32 units (~1e-3) are far coarser than the row's spread x
  it('|z|/T near 1e4: (z − max)·invT matches float64; z·invT rounded first (the earlier kernel) does not', () => {
    const r = rng(78)
    const V = 700, T = 3e-4
    const z = Float32Array.from(r.f32(V, 2), (x) => 3 + T * x)
    const tokens = Array.from({ length: V }, (_, v) => v).filter((v) => v % 3 !== 1)
    const ys = [0, 5, 300, 698]
    const o = { temperature: T, ignoreIndex: -100, keepOffsets: Int32Array.of(0, tokens.length), keepTokens: Int32Array.from(tokens), sampling: null }
    let errNew = 0, errOld = 0
    for (const y of ys) {
      const lp = f64(1), lse = f64(1)
      keptLogProbsKernel(Float64Array.from(z), 1, V, Int32Array.of(y), o, lp, lse, null, null)
      const gpu = cudaKept(z, tokens, y, T, 256)
      expectClose(gpu.logp, lp[0], { atol: 2e-5, rtol: 2e-5 }, `log p at ${y}`)
      expectClose(gpu.lse, lse[0], { atol: 0, rtol: 2e-6 }, 'lse')
      const old = cudaKept(z, tokens, y, T, 256, true)
      errNew = Math.max(errNew, Math.abs(gpu.logp - lp[0]))
      errOld = Math.max(errOld, Math.abs(old.logp - lp[0]))
    }
    expect(errOld).toBeGreaterThan(10 * errNew + 1e-4)
  })
})

/**
 * The cut of the drawn kept set (rlhf/vocab.h KeptCut), as native/cuda/kept.cu finds it and native/cpu/vocab.cc
 * sampling_kept takes it for top-p: every rule keeps the logits whose (key(z), v) is ≥ the row's cut, the key
 * an order-preserving map of the float bits. min-p: the smallest z with exp((z − max)·invT) ≥ m (in double);
 * top-k: the k-th largest key among those, by 8-bit digits from the top (counts); top-p: by 8-bit digits, the
 * first bucket in ascending order whose fixed-point mass (q = round-half-even(exp((z − max)·invT)·2^F), exact
 * integer sums, BigInt here) takes the running sum past limit = trunc((1 − p)·total), then (limit − below)/q
 * of its ties dropped by index; nothing found (p near 0): the largest logit's last index. `bad`: a NaN or +inf
 * in the row (NaN results, no cut).
 */
const keyView = new Float32Array(1)
const keyBits = new Uint32Array(keyView.buffer)
function orderKey(z: number): number {
  keyView[0] = z
  let b = keyBits[0]
  if (b === 0x80000000) b = 0
  return b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0
}
function keyValue(k: number): number {
  keyBits[0] = k & 0x80000000 ? k & 0x7fffffff : ~k >>> 0
  return keyView[0]
}
const FINITE_KEY = 0x00800000  // one above −inf's key
function massBits(V: number): number {
  let bits = 0
  for (let v = V; v > 0; v = Math.floor(v / 2)) bits++
  return 62 - bits
}
function roundHalfEven(x: number): number {
  const r = Math.round(x)
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r
}
interface EmulatedCut { bad: boolean; key: number; index: number }
function emulatedCut(z: Float32Array, invT: number, k: number, p: number, m: number, broken = ''): EmulatedCut {
  const V = z.length
  let mx = -Infinity, bad = false
  for (const x of z) {
    bad ||= x !== x || Math.fround(x * invT) === Infinity
    if (x > mx) mx = x
  }
  if (bad) return { bad, key: 0, index: 0 }
  if (mx === -Infinity) return { bad, key: 0xffffffff, index: 0 }
  let lo = FINITE_KEY
  if (m > 0) {
    let least = Infinity
    for (const x of z) if (x !== -Infinity && Math.exp((x - mx) * invT) >= m) least = Math.min(least, x)
    lo = orderKey(least)
  }
  const radix = (prefix: number, shift: number, weight: (x: number) => bigint) => {
    const hist = new Array<bigint>(256).fill(0n)
    const high = shift + 8 >= 32 ? 0 : (~0 << (shift + 8)) >>> 0
    for (const x of z) {
      const key = orderKey(x)
      if (key >= lo && ((key ^ prefix) & high) >>> 0 === 0) hist[(key >>> shift) & 255] += weight(x)
    }
    return hist
  }
  if (k > 0 && k < V) {
    let prefix = 0, need = BigInt(k), found = true
    for (let shift = 24; shift >= 0 && found; shift -= 8) {
      const hist = radix(prefix, shift, () => 1n)
      let d = 255, above = 0n
      for (; d >= 0 && above + hist[d] < need; d--) above += hist[d]
      if (d < 0) found = false
      else {
        need -= above
        prefix = (prefix | (d << shift)) >>> 0
      }
    }
    if (found) lo = prefix
  }
  const nthTie = (key: number, t: bigint) => {
    let seen = 0n, last = -1
    for (let v = 0; v < V; v++) {
      if (orderKey(z[v]) !== key) continue
      if (seen === t) return v
      seen++
      last = v
    }
    return last
  }
  if (!(p < 1)) return { bad, key: lo, index: 0 }
  const scale = 2 ** massBits(V)
  const mass = (x: number) => BigInt(roundHalfEven(Math.exp((x - mx) * invT) * scale))
  let prefix = 0, below = 0n, limit = 0n
  for (let shift = 24; shift >= 0; shift -= 8) {
    const hist = radix(prefix, shift, mass)
    if (shift === 24) limit = BigInt(Math.trunc((1 - p) * Number(hist.reduce((a, b) => a + b, 0n))))
    let d = 0
    for (; d < 256 && below + hist[d] <= limit; d++) below += hist[d]
    if (d === 256) return { bad, key: orderKey(mx), index: nthTie(orderKey(mx), -1n) }
    prefix = (prefix | (d << shift)) >>> 0
  }
  let drop = (limit - below) / mass(keyValue(prefix))
  if (broken === 'one more tie') drop += 1n
  return { bad, key: prefix, index: drop === 0n ? 0 : nthTie(prefix, drop) }
}
function emulatedKeep(z: Float32Array, invT: number, k: number, p: number, m: number, broken = ''): number[] | 'NaN' {
  const c = emulatedCut(z, invT, k, p, m, broken)
  if (c.bad) return 'NaN'
  const kept: number[] = []
  for (let v = 0; v < z.length; v++) {
    const key = orderKey(z[v])
    if (z[v] !== -Infinity && (key > c.key || (key === c.key && v >= c.index))) kept.push(v)
  }
  return kept
}
/** The reference's kept set of raw row z at invT (s = z·invT in float64), or 'NaN' where its results are NaN. */
function referenceKeep(z: Float32Array, invT: number, k: number, p: number, m: number): number[] | 'NaN' {
  const s = Float64Array.from(z, (x) => x * invT)
  if (s.some((x) => x !== x || x === Infinity)) return 'NaN'
  const keep = samplingKeep(s, s.length, k, p, m)
  return Array.from(keep.keys()).filter((v) => keep[v])
}

describe('the top-k / top-p / min-p cut of the cuda kernel (and the cpu top-p), emulated', () => {
  // p and m in float32, as the kernels get them: 1 − p then sits off the exact ratios of tied masses (p = 0.8
  // in float64 would put 1 − p on 38/190 exactly, where the result is decided by rounding)
  const PARAMS = ([[0, 0.9, 0], [0, 0.5, 0], [40, 1, 0], [40, 0.8, 0.02], [1, 1, 0], [3, 0.95, 0], [0, 0.99, 0.05], [0, 1, 0.1], [7, 0.3, 0]] as const)
    .map(([k, p, m]) => [k, Math.fround(p), Math.fround(m)] as const)
  const INVT = [1, Math.fround(1 / 0.7), Math.fround(1 / 1.6)]
  const rows = (name: string, make: (r: R, V: number) => Float32Array) => it(name, () => {
    const r = rng(SEED + name.length)
    let compared = 0
    for (const V of [37, 1001, 4099]) {
      for (let rep = 0; rep < 3; rep++) {
        const z = make(r, V)
        for (const [k, p, m] of PARAMS) {
          for (const invT of INVT) {
            expect(emulatedKeep(z, invT, k, p, m), `V ${V} k ${k} p ${p} m ${m} invT ${invT}`).toEqual(referenceKeep(z, invT, k, p, m))
            compared++
          }
        }
      }
    }
    expect(compared).toBe(3 * 3 * PARAMS.length * INVT.length)
  })
  rows('random float32 rows with −inf', (r, V) => {
    const z = r.f32(V, 3)
    for (let i = r.int(7); i < V; i += 13) z[i] = -Infinity
    return z
  })
  // bfloat16 keeps 8 significant bits: a row of 4099 normal logits holds each value many times
  rows('bf16-like rows (many ties)', (r, V) => Float32Array.from(rk.encodeFloats(r.f32(V, 2), 'bfloat16'), rk.bf16ToFloat))
  rows('few distinct values (top-k and top-p boundaries inside tie groups)', (r, V) => Float32Array.from({ length: V }, () => r.int(6) * 0.5))
  it('rows of −inf, NaN or +inf; k ≥ V, p = 1, min-p = 1, p near 0', () => {
    const r = rng(SEED + 3)
    const z = r.f32(300, 2)
    const cases: [Float32Array, number, number, number][] = [
      [new Float32Array(50).fill(-Infinity), 5, 0.9, 0.1],
      [Float32Array.from(z, (x, i) => (i === 17 ? NaN : x)), 5, 0.9, 0],
      [Float32Array.from(z, (x, i) => (i === 200 ? Infinity : x)), 0, 1, 0.5],
      [Float32Array.from(z, (x, i) => (i < 299 ? -Infinity : x)), 3, 0.5, 0.5],
      [z, 300, 1, 0], [z, 1000, 0.9, 0], [z, 0, 1, 0], [z, 0, 1, 1], [z, 10, 0.5, 1],
      [Float32Array.from(z, (x, i) => (i % 3 ? x : 1.25)), 0, 1e-30, 0],
      [Float32Array.of(1, 3, 2, 3, 0, -Infinity, 3, 2.5), 0, 1e-3, 0],
      [Float32Array.of(1, 3, 2, 3, 0, -Infinity, 3, 2.5), 2, 1, 0],
      [Float32Array.of(1, 3, 2, 3, 0, -Infinity, 3, 2.5), 4, 0.5, 0],
      [Float32Array.of(0, -0, 0, -0, -1), 2, 1, 0],
      [Float32Array.of(2, 2, 2, 2, 2, 2), 0, 0.5, 0],
    ]
    for (const [row, k, p, m] of cases) {
      const want = referenceKeep(row, 1, k, p, m)
      expect(emulatedKeep(row, 1, k, p, m), `k ${k} p ${p} m ${m}`).toEqual(want)
    }
    // six equal logits at p = 0.5: c = 1/6 … 3/6 ≤ 0.5 drops the first three by index
    expect(emulatedKeep(Float32Array.of(2, 2, 2, 2, 2, 2), 1, 0, 0.5, 0)).toEqual([3, 4, 5])
    expect(emulatedKeep(Float32Array.of(2, 2, 2, 2, 2, 2), 1, 0, 0.5, 0, 'one more tie')).toEqual([4, 5])
  })
  it('fails when the tie rule is broken (the check can fail)', () => {
    const r = rng(SEED + 4)
    let differ = 0
    for (let i = 0; i < 20; i++) {
      const z = Float32Array.from({ length: 200 }, () => r.int(6) * 0.5)
      const ref = referenceKeep(z, 1, 0, 0.9, 0)
      if (JSON.stringify(emulatedKeep(z, 1, 0, 0.9, 0, 'one more tie')) !== JSON.stringify(ref)) differ++
    }
    expect(differ).toBeGreaterThan(10)
  })
})

describe.each(NATIVE_BACKENDS)('keptLogProbs on %s: the drawn kept set is the reference\'s, ties included', (backend) => {
  // the support of the gradient at the row's last largest logit (always kept) is the kept set; a spread of 2.5 at
  // T ≥ 0.7 keeps every kept p_v far above float32's underflow
  it.each(['float32', 'bfloat16'] as const)('%s', (dtype) => {
    const r = rng(SEED + 11)
    const N = 8, V = 3001
    const z = Float32Array.from({ length: N * V }, () => r.int(6) * 0.5)
    if (dtype === 'bfloat16') for (let i = 0; i < z.length; i++) z[i] += Math.fround(r.int(3) * 0.0078125)
    const logits = dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
    const zz = logits.toFloat32Array()
    // the last index of the largest logit: top-p drops ties by index, the last one never
    const targets = Int32Array.from({ length: N }, (_, n) => zz.subarray(n * V, (n + 1) * V).reduce((b, x, v, a) => (x >= a[b] ? v : b), 0))
    const topK = Int32Array.from({ length: N }, (_, n) => [0, 7, 300, 0, 5000, 40, 0, 1][n])
    // no p with 1 − p exactly a ratio i/n of tied masses (p = 0.5 over n equal survivors, n even, puts the cut on
    // c = 1/2 exactly, which the kernels' exact fixed-point sum and the reference's float64 sum may decide apart)
    const topP = Float32Array.from({ length: N }, (_, n) => [0.9, 1, 0.55, 0.3, 0.95, 0.8, 1, 0.7][n])
    const minP = Float32Array.from({ length: N }, (_, n) => [0, 0, 0, 0.2, 0, 0.02, 0.5, 0][n])
    const temperature = Float32Array.from({ length: N }, (_, n) => [1, 0.7, 1.6, 1, 1, 0.7, 1, 1.2][n])
    const res = on(backend, () => rk.keptLogProbs({ logits, targets, temperature, topK, topP, minP, gradLogp: new Float32Array(N).fill(1) }))
    const g = res.gradLogits!.toFloat32Array()
    for (let n = 0; n < N; n++) {
      const row = zz.subarray(n * V, (n + 1) * V)
      const got = Array.from({ length: V }, (_, v) => v).filter((v) => v === targets[n] || g[n * V + v] !== 0)
      const invT = Math.fround(1 / temperature[n])
      expect(got, `row ${n}`).toEqual(referenceKeep(row, invT, topK[n], topP[n], minP[n]))
      expect(got, `row ${n}, the emulated cut`).toEqual(emulatedKeep(row, invT, topK[n], topP[n], minP[n]))
    }
  })
})

describe.each(NATIVE_BACKENDS)('keptLogProbs on %s: top-k over long rows (the selection\'s buffer refills and grows)', (backend) => {
  // rows of 20000: ascending (every logit raises the bound: the buffer refills again and again), mostly tied at
  // the k-th largest (the buffer holds the ties and grows), random with −inf among them; top-k alone (the whole
  // row's selection) and after min-p (the survivors' selection)
  const V = 20000
  const r = rng(SEED + 23)
  const rows = [
    Float32Array.from({ length: V }, (_, v) => v * 1e-3),
    Float32Array.from({ length: V }, (_, v) => (v % 997 === 0 ? 2 : v % 13 === 0 ? -Infinity : 1)),
    Float32Array.from({ length: V }, (_, v) => (v % 7 === 0 ? -Infinity : r.normal() * 2)),
  ]
  it.each([
    ['top-k 10', 10, 0], ['top-k 1', 1, 0], ['top-k 4000', 4000, 0], ['top-k 25 after min-p 1e-3', 25, 1e-3],
  ] as const)('%s', (_, k, minP) => {
    const N = rows.length
    const z = new Float32Array(N * V)
    rows.forEach((row, n) => z.set(row, n * V))
    const targets = Int32Array.from(rows, (row) => row.reduce((b, x, v, a) => (x >= a[b] ? v : b), 0))
    const res = on(backend, () => rk.keptLogProbs({ logits: rk.tensor(z, [N, V]), targets, topK: k, minP, gradLogp: new Float32Array(N).fill(1) }))
    const g = res.gradLogits!.toFloat32Array()
    for (let n = 0; n < N; n++) {
      const got = Array.from({ length: V }, (_, v) => v).filter((v) => v === targets[n] || g[n * V + v] !== 0)
      expect(got, `row ${n}`).toEqual(referenceKeep(rows[n], 1, k, 1, minP))
    }
  })
})

describe('keptLogProbs: special rows and options', () => {
  const logits = rk.tensor(Float32Array.of(1, 2, NaN, 0, -Infinity, 3, Infinity, 1, 0), [3, 3])
  it.each(HOST_BACKENDS)('%s: NaN only where it is read; a target outside the set is −inf', (backend) => on(backend, () => {
    const r = rk.keptLogProbs({ logits, targets: Int32Array.of(0, 1, 1), keepOffsets: Int32Array.of(0, 2, 3, 5), keepTokens: Int32Array.of(0, 1, 2, 0, 1), gradLogp: Float32Array.of(1, 1, 1) })
    expect(r.logp[0]).toBeCloseTo(1 - Math.log(Math.exp(1) + Math.exp(2)), 6)  // the NaN at token 2 is not kept
    expect(r.logp[1]).toBe(-Infinity)  // target 1 not in {2}
    expect(r.logp[2]).toBeNaN()  // a kept +inf
    const g = r.gradLogits!.toFloat32Array()
    expect(Array.from(g.subarray(3, 6))).toEqual([0, 0, 0])
    expect(g.subarray(6, 9).every((x) => Number.isNaN(x))).toBe(true)
  }))
  it('validation', () => {
    const z = rk.tensor(new Float32Array(6), [2, 3])
    const y = Int32Array.of(0, 1)
    expect(() => rk.keptLogProbs({ logits: z, targets: y })).toThrow(/keptLogProbs: keepOffsets must be given \(with keepTokens\), or topK, topP or minP/)
    expect(() => rk.keptLogProbs({ logits: z, targets: y, topK: 2, keepOffsets: Int32Array.of(0, 1, 2), keepTokens: Int32Array.of(0, 1) })).toThrow(TypeError)
    expect(() => rk.keptLogProbs({ logits: z, targets: y, keepOffsets: Int32Array.of(0, 2, 2), keepTokens: Int32Array.of(1, 1) })).toThrow(/keepTokens\[1\] must be > keepTokens\[0\]/)
    expect(() => rk.keptLogProbs({ logits: z, targets: y, keepOffsets: Int32Array.of(0, 1, 2), keepTokens: Int32Array.of(0, 3) })).toThrow(/keepTokens\[1\] must be in \[0, 3\)/)
    expect(() => rk.keptLogProbs({ logits: z, targets: y, keepOffsets: Int32Array.of(0, 1, 3), keepTokens: Int32Array.of(0, 1) })).toThrow(/keepOffsets\[2\] must be keepTokens.length \(2\)/)
    expect(() => rk.keptLogProbs({ logits: z, targets: y, topP: 0 })).toThrow(/topP must be a finite number ≥ 0 ≤ 1|topP/)
    expect(() => rk.keptLogProbs({ logits: z, targets: y, topP: Float32Array.of(1, 1.5) })).toThrow(/topP\[1\] must be in \(0, 1\]/)
    expect(() => rk.keptLogProbs({ logits: z, targets: y, topK: -1 })).toThrow(RangeError)
    expect(() => rk.keptLogProbs({ logits: z, targets: y, minP: Float32Array.of(0.1) })).toThrow(/minP.length must be 2, got 1/)
  })
})
