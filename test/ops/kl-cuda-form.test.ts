/**
 * The CUDA klDivergence and rewardLoss kernels (native/cuda/kl.cu, reward.cu) emulated on the CPU in their own
 * order of operations, against the float64 reference: the arithmetic of code that runs only on a GPU, checked
 * on every machine. Float32 steps are rounded with Math.fround, __expf is taken as a correctly rounded expf,
 * and each product that nvcc may fuse into the add after it is emulated both ways (`fma`). Each kernel is
 * emulated in its current form, the cpu's (native/cpu/kl.cc, reward.cc), and in the form it had before, which
 * these inputs show off the contract:
 * - kl_rows_kernel (two-pass) and kl_tile_kernel (single-pass, rows in registers over a cluster of CTAs):
 *   shifted log-ratios ((x − m_p) − (y − m_q))·invT + c_p − c_q, the maxima counted apart in S, and the
 *   +inf rule (KL = +inf where q = 0 under a finite p logit, even where p rounds to 0), where the earlier
 *   kernels formed z·invT − lse in float32;
 * - reward_prompt: a prompt's softmax in double with log p = (s − M) − log Σ and the chosen candidate's
 *   p − 1 as expm1(log p), where the earlier kernel formed lse = M + log Σ and lse − s in float32.
 */
import { describe, expect, it } from 'vitest'
import { klDivergenceKernel } from '../../src/reference/kl.js'
import { rewardLossKernel } from '../../src/reference/reward.js'
import { PARITY, closeness, gradTolerance, klGradPTolerance, type Tolerance } from '../../src/tolerance.js'
import { rng } from '../helpers.js'

const f = Math.fround
const fexp = (x: number) => f(Math.exp(x))
/** a·b + c in float32: fused (one rounding; a·b of two floats is exact in float64) or not */
const madd = (a: number, b: number, c: number, fma: boolean) => (fma ? f(a * b + c) : f(f(a * b) + c))
const THREADS = 512, R = 32, SPAN = THREADS * R

/** The 32 lanes' butterfly (lane ^ 16, 8, 4, 2, 1) of a combine; every kernel takes lane 0's result. */
function butterfly<P>(lanes: P[], combine: (a: P, b: P) => P): P {
  for (let o = 16; o > 0; o >>= 1) lanes = lanes.map((v, l) => combine(v, lanes[l ^ o]))
  return lanes[0]
}

/** block_sum<float> (common.cuh) over 512 threads' values: each warp's butterfly, then one warp over the 16. */
function blockSum(parts: number[]): number {
  const add = (a: number, b: number) => f(a + b)
  const warps = Array.from({ length: 32 }, (_, w) => (w < THREADS / 32 ? butterfly(parts.slice(32 * w, 32 * w + 32), add) : 0))
  return butterfly(warps, add)
}

interface KlResult { kl: number; gq: Float64Array; gp: Float64Array }

/** The float64 reference (src/reference/kl.ts) for one row, reduction 'sum' (gradient scale 1). */
function reference(zp: Float32Array, zq: Float32Array, T: number): KlResult {
  const V = zp.length, perRow = new Float64Array(1), gq = new Float64Array(V), gp = new Float64Array(V)
  klDivergenceKernel(Float64Array.from(zp), Float64Array.from(zq), 1, V, null, 'sum', T, perRow, gq, gp)
  return { kl: perRow[0], gq, gp }
}

/** kl_fixed_row: NaN in either row → NaN everywhere; p without mass → 0; q without mass → +inf; zero gradients. */
function fixedRow(mp: number, mq: number, V: number): KlResult | null {
  const nan = mp !== mp || mq !== mq
  if (!nan && mp !== -Infinity && mq !== -Infinity) return null
  const g = nan ? NaN : 0
  return { kl: nan ? NaN : mp === -Infinity ? 0 : Infinity, gq: new Float64Array(V).fill(g), gp: new Float64Array(V).fill(g) }
}

const maxNan = (a: number, b: number) => (a !== a || b !== b ? NaN : Math.max(a, b))

/** shifted_row: m, c = float(−log S), 1/S as float; a row holding +inf: c = 0 and 1/S = 1. */
interface Shifted { m: number; c: number; inv: number }
const shiftedRow = (m: number, others: number, ties: number): Shifted =>
  m === Infinity ? { m, c: 0, inv: 1 } : { m, c: f(-Math.log(ties + others)), inv: f(1 / (ties + others)) }
const rowProb = (r: Shifted, z: number, invT: number) => f(fexp(f(f(z - r.m) * invT)) * r.inv)
const logRatio = (p: Shifted, q: Shifted, x: number, y: number, invT: number, c: number, fma: boolean) =>
  madd(f(f(x - p.m) - f(y - q.m)), invT, c, fma)
const klTerm = (p: number, lr: number) => (lr === Infinity ? lr : p !== 0 ? f(p * lr) : 0)

/** kl_rows_kernel as it is now: four passes over the row pair, thread t taking columns t, t + 512, … */
function klRowsNow(zp: Float32Array, zq: Float32Array, T: number, fma: boolean): KlResult {
  const V = zp.length, invT = f(1 / T)
  let mp = -Infinity, mq = -Infinity
  for (let v = 0; v < V; v++) { mp = maxNan(mp, zp[v]); mq = maxNan(mq, zq[v]) }
  const fixed = fixedRow(mp, mq, V)
  if (fixed) return fixed
  const sp = new Array(THREADS).fill(0), sq = new Array(THREADS).fill(0)
  let tp = 0, tq = 0
  for (let t = 0; t < THREADS; t++) {
    for (let v = t; v < V; v += THREADS) {
      if (zp[v] === mp) tp++
      else sp[t] = f(sp[t] + fexp(f(f(zp[v] - mp) * invT)))
      if (zq[v] === mq) tq++
      else sq[t] = f(sq[t] + fexp(f(f(zq[v] - mq) * invT)))
    }
  }
  const P = shiftedRow(mp, blockSum(sp), tp), Q = shiftedRow(mq, blockSum(sq), tq)
  const dc = f(P.c - Q.c)
  const parts = new Array(THREADS).fill(0)
  for (let t = 0; t < THREADS; t++) {
    for (let v = t; v < V; v += THREADS) parts[t] = f(parts[t] + klTerm(rowProb(P, zp[v], invT), logRatio(P, Q, zp[v], zq[v], invT, dc, fma)))
  }
  const kl = blockSum(parts)
  const s = invT, dck = f(dc - kl)  // s = result[scale]·invT, scale 1
  const gq = new Float64Array(V), gp = new Float64Array(V)
  for (let v = 0; v < V; v++) {
    const pv = rowProb(P, zp[v], invT)
    gq[v] = f(s * f(rowProb(Q, zq[v], invT) - pv))
    gp[v] = kl === Infinity || pv === 0 ? 0 : f(s * f(pv * logRatio(P, Q, zp[v], zq[v], invT, dck, fma)))
  }
  return { kl, gq, gp }
}

/** The earlier kl_rows_kernel: lse of z·invT (float32 products, online max and Σ exp per thread, in double). */
function klRowsBefore(zp: Float32Array, zq: Float32Array, T: number, fma: boolean): KlResult {
  const V = zp.length, invT = f(1 / T)
  type MaxSum = { m: number; s: number }
  const combine = (a: MaxSum, b: MaxSum): MaxSum => {
    if (a.m === -Infinity) return { m: b.m, s: f(b.s + a.s) }
    if (b.m === -Infinity) return { m: a.m, s: f(a.s + b.s) }
    const m = Math.max(a.m, b.m)
    return { m, s: f(f(a.s * fexp(f(a.m - m))) + f(b.s * fexp(f(b.m - m)))) }
  }
  const lse = (z: Float32Array) => {
    const lanes: MaxSum[] = []
    for (let t = 0; t < THREADS; t++) {
      let a: MaxSum = { m: -Infinity, s: 0 }
      for (let v = t; v < V; v += THREADS) {
        const x = f(z[v] * invT)
        if (x === -Infinity) continue
        a = x > a.m ? { m: x, s: f(f(a.s * fexp(f(a.m - x))) + 1) } : { m: a.m, s: f(a.s + fexp(f(x - a.m))) }
      }
      lanes.push(a)
    }
    const warps = Array.from({ length: 32 }, (_, w) => (w < THREADS / 32 ? butterfly(lanes.slice(32 * w, 32 * w + 32), combine) : { m: -Infinity, s: 0 }))
    const all = butterfly(warps, combine)
    return all.m + Math.log(all.s)
  }
  const lseP = lse(zp), lseQ = lse(zq)
  const lp = f(lseP), lq = f(lseQ), dl = f(lseP - lseQ)
  const prob = (a: number) => fexp(fma ? f(a * invT - lp) : f(f(a * invT) - lp))
  const ratio = (a: number, b: number, c: number) => madd(f(a - b), invT, -c, fma)
  const parts = new Array(THREADS).fill(0)
  for (let t = 0; t < THREADS; t++) {
    for (let v = t; v < V; v += THREADS) {
      const pv = prob(zp[v])
      if (pv !== 0) parts[t] = madd(pv, ratio(zp[v], zq[v], dl), parts[t], fma)
    }
  }
  const kl = blockSum(parts)
  const s = invT, c = f(lseP - lseQ + kl)
  const gq = new Float64Array(V), gp = new Float64Array(V)
  for (let v = 0; v < V; v++) {
    const pv = prob(zp[v])
    gq[v] = f(s * f(fexp(fma ? f(zq[v] * invT - lq) : f(f(zq[v] * invT) - lq)) - pv))
    gp[v] = pv !== 0 && kl !== Infinity ? f(f(s * pv) * ratio(zp[v], zq[v], c)) : 0
  }
  return { kl, gq, gp }
}

/** RowTile::col for float32 (4 per 16-byte vector): thread t's registers of the CTA whose slice starts at begin. */
function columnsOf(begin: number, t: number): number[] {
  const cols: number[] = []
  for (let k = 0; k < R / 4; k++) for (let j = 0; j < 4; j++) cols.push(begin + (k * THREADS + t) * 4 + j)
  return cols
}

/** row_combine<2>: each warp's butterfly, thread 0 folding the 16 warps in order, then the ranks in order. */
function rowCombineV2<P>(parts: P[][], combine: (a: P, b: P) => P): P {
  const ranks = parts.map((threads) => {
    const warps = Array.from({ length: THREADS / 32 }, (_, w) => butterfly(threads.slice(32 * w, 32 * w + 32), combine))
    return warps.reduce((a, b) => combine(a, b))
  })
  return ranks.reduce((a, b) => combine(a, b))
}

/** The registers of a row over its cluster: x, y (−inf past the row) and the columns, per rank and thread. */
function tiles(zp: Float32Array, zq: Float32Array) {
  const V = zp.length, cluster = Math.ceil(V / SPAN)
  return Array.from({ length: cluster }, (_, rank) => {
    const begin = rank * SPAN, end = Math.min(begin + SPAN, V)
    return Array.from({ length: THREADS }, (_, t) => {
      const cols = columnsOf(begin, t)
      return { cols: cols.map((c) => (c < end ? c : -1)), x: cols.map((c) => (c < end ? zp[c] : -Infinity)), y: cols.map((c) => (c < end ? zq[c] : -Infinity)) }
    })
  })
}

/** kl_tile_kernel<float, float, 2> as it is now: three exchanges (maxima, S, KL) of the registers' values. */
function klTileNow(zp: Float32Array, zq: Float32Array, T: number, fma: boolean): KlResult {
  const V = zp.length, invT = f(1 / T), regs = tiles(zp, zq)
  type Maxes = [number, number]
  const M = rowCombineV2<Maxes>(regs.map((r) => r.map(({ x, y }) => [x.reduce(maxNan, -Infinity), y.reduce(maxNan, -Infinity)])), (a, b) => [maxNan(a[0], b[0]), maxNan(a[1], b[1])])
  const fixed = fixedRow(M[0], M[1], V)
  if (fixed) return { ...fixed, gp: new Float64Array(V) }
  const add = (a: number[], b: number[]) => a.map((v, k) => f(v + b[k]))
  const S = rowCombineV2(regs.map((r) => r.map(({ x, y }) => {
    const s = [0, 0, 0, 0]  // others_p, ties_p, others_q, ties_q
    for (let i = 0; i < R; i++) {
      if (x[i] === M[0]) s[1] = f(s[1] + 1)
      else s[0] = f(s[0] + fexp(f(f(x[i] - M[0]) * invT)))
      if (y[i] === M[1]) s[3] = f(s[3] + 1)
      else s[2] = f(s[2] + fexp(f(f(y[i] - M[1]) * invT)))
    }
    return s
  })), add)
  const P = shiftedRow(M[0], S[0], S[1]), Q = shiftedRow(M[1], S[2], S[3])
  const dc = f(P.c - Q.c), s = invT
  const gq = new Float64Array(V)
  const kl = rowCombineV2(regs.map((r) => r.map(({ cols, x, y }) => {
    let k = 0
    for (let i = 0; i < R; i++) {
      const pv = rowProb(P, x[i], invT)
      k = f(k + klTerm(pv, logRatio(P, Q, x[i], y[i], invT, dc, fma)))
      if (cols[i] >= 0) gq[cols[i]] = f(s * f(rowProb(Q, y[i], invT) - pv))
    }
    return [k]
  })), add)[0]
  return { kl, gq, gp: new Float64Array(V) }
}

/** The earlier kl_tile_kernel: registers z·invT, per-thread e = exp(x − m), U = Σ e (a − b), KL = U/S_a − (lse_p − lse_q). */
function klTileBefore(zp: Float32Array, zq: Float32Array, T: number, fma: boolean): KlResult {
  const V = zp.length, invT = f(1 / T), regs = tiles(zp, zq)
  type MS = { m: number; s: number[] }
  const combine = (a: MS, b: MS): MS => {
    if (b.m === -Infinity) return a
    if (a.m === -Infinity) return b
    const m = Math.max(a.m, b.m), fa = fexp(f(a.m - m)), fb = fexp(f(b.m - m))
    return { m, s: a.s.map((v, k) => madd(v, fa, f(b.s[k] * fb), fma)) }
  }
  const threads = regs.map((r) => r.map(({ cols, x: z, y: w }) => {
    const x = z.map((v) => f(v * invT)), y = w.map((v) => f(v * invT))
    const ma = x.reduce((a, b) => Math.max(a, b)), mb = y.reduce((a, b) => Math.max(a, b))
    let sa = 0, u = 0, sb = 0
    const ea = x.map((v) => (ma === -Infinity ? 0 : fexp(f(v - ma)))), eb = y.map((v) => (mb === -Infinity ? 0 : fexp(f(v - mb))))
    for (let i = 0; i < R; i++) {
      if (ea[i] > 0) u = madd(ea[i], f(x[i] - y[i]), u, fma)
      sa = f(sa + ea[i])
      sb = f(sb + eb[i])
    }
    return { cols, ma, mb, ea, eb, A: { m: ma, s: [sa, u] }, B: { m: mb, s: [sb] } }
  }))
  const A = rowCombineV2(threads.map((r) => r.map((t) => t.A)), combine)
  const B = rowCombineV2(threads.map((r) => r.map((t) => t.B)), combine)
  const lseP = A.m + Math.log(A.s[0]), lseQ = B.m + Math.log(B.s[0])
  const kl = f(f(A.s[1] / A.s[0]) - f(lseP - lseQ))
  const gq = new Float64Array(V), s = invT
  for (const r of threads) {
    for (const { cols, ma, mb, ea, eb } of r) {
      const ra = ma === -Infinity ? 0 : f(fexp(f(ma - A.m)) / A.s[0]), rb = mb === -Infinity ? 0 : f(fexp(f(mb - B.m)) / B.s[0])
      for (let i = 0; i < R; i++) if (cols[i] >= 0) gq[cols[i]] = f(s * f(f(eb[i] * rb) - f(ea[i] * ra)))
    }
  }
  return { kl, gq, gp: new Float64Array(V) }
}

/** The worst error of a result as a multiple of its parity tolerance (≤ 1 passes), and of which part. */
function parity(got: KlResult, want: KlResult, T: number, withGp: boolean) {
  const parts: [string, number][] = [
    ['KL', closeness([got.kl], [want.kl], PARITY.value).worst],
    ['gradQ', closeness(got.gq, want.gq, gradTolerance(T)).worst],
  ]
  if (withGp) parts.push(['gradP', closeness(got.gp, want.gp, klGradPTolerance([want.kl], T)).worst])
  return parts.reduce((a, b) => (b[1] > a[1] || b[1] !== b[1] ? b : a))
}

const KERNELS = [
  { name: 'kl_rows_kernel', now: klRowsNow, before: klRowsBefore, gp: true, V: 1001 },
  { name: 'kl_tile_kernel', now: klTileNow, before: klTileBefore, gp: false, V: 20000 },  // a cluster of 2 CTAs
] as const

describe.each(KERNELS)('$name, emulated in float32', ({ now, before, gp, V }) => {
  // z near 7000 at T = 0.7: |z|/T near 1e4, whose float32 units (~1e-3) the earlier z·invT − lse form lost;
  // −inf columns in both rows, and a tie for p's largest logit
  function nearTenThousand(seed: number) {
    const r = rng(seed)
    const zp = Float32Array.from({ length: V }, () => 7000 + 3 * r.normal())
    const zq = Float32Array.from(zp, (x) => x + 0.5 * r.normal())
    for (let i = 5; i < V; i += 97) zp[i] = zq[i] = -Infinity
    zp[3] = zp[V - 2] = 7015
    return { zp, zq }
  }

  it('|z|/T near 1e4: within the parity tolerance of float64; the earlier form is not', () => {
    const T = 0.7
    const { zp, zq } = nearTenThousand(81 + V)
    const want = reference(zp, zq, T)
    for (const fma of [false, true]) {
      const [part, err] = parity(now(zp, zq, T, fma), want, T, gp)
      expect(err, `${part} (fma ${fma})`).toBeLessThanOrEqual(1)
      const [oldPart, oldErr] = parity(before(zp, zq, T, fma), want, T, gp)
      expect(oldErr, `the earlier form's ${oldPart} (fma ${fma}): ${oldErr}× the tolerance`).toBeGreaterThan(1)
    }
  })

  it('ordinary rows (|z| ≈ 3, T = 1 and 1.7) stay within the parity tolerance', () => {
    const r = rng(82 + V)
    for (const T of [1, 1.7]) {
      const zp = r.f32(V, 3), zq = Float32Array.from(zp, (x) => x + r.normal())
      const [part, err] = parity(now(zp, zq, T, true), reference(zp, zq, T), T, gp)
      expect(err, `${part} at T = ${T}`).toBeLessThanOrEqual(1)
    }
  })

  it('the +inf rule: q = 0 where p rounds to 0 under a finite logit gives KL = +inf (the earlier form: finite)', () => {
    const r = rng(83 + V)
    const zp = r.f32(V, 1), zq = r.f32(V, 1)
    zp[7] = -200  // p_7 = e^-200: 0 in float32
    zq[7] = -Infinity
    const want = reference(zp, zq, 1)
    expect(want.kl).toBe(Infinity)
    const got = now(zp, zq, 1, true)
    expect(got.kl).toBe(Infinity)
    expect(parity(got, want, 1, gp)[1]).toBeLessThanOrEqual(1)
    if (gp) expect(got.gp.every((g) => g === 0)).toBe(true)
    expect(Number.isFinite(before(zp, zq, 1, true).kl)).toBe(true)
  })

  it.each([
    ['NaN in p', (p: Float32Array) => { p[9] = NaN }],
    ['NaN in q', (_: Float32Array, q: Float32Array) => { q[9] = NaN }],
    ['p all −inf', (p: Float32Array) => { p.fill(-Infinity) }],
    ['q all −inf', (_: Float32Array, q: Float32Array) => { q.fill(-Infinity) }],
    ['both all −inf', (p: Float32Array, q: Float32Array) => { p.fill(-Infinity); q.fill(-Infinity) }],
    ['p all −inf, q NaN', (p: Float32Array, q: Float32Array) => { p.fill(-Infinity); q[2] = NaN }],
    ['+inf in p', (p: Float32Array) => { p[4] = p[11] = Infinity }],
    ['+inf in q', (_: Float32Array, q: Float32Array) => { q[4] = Infinity }],
    ['+inf in q where p is −inf', (p: Float32Array, q: Float32Array) => { q[4] = Infinity; p[4] = -Infinity }],
    ['−inf in both at the same columns', (p: Float32Array, q: Float32Array) => { p.fill(-Infinity, 0, 64); q.fill(-Infinity, 0, 64) }],
  ])('%s: the reference\'s KL and gradients (NaN and infinities exactly)', (_, edit) => {
    const r = rng(84)
    const zp = r.f32(V, 2), zq = r.f32(V, 2)
    edit(zp, zq)
    const want = reference(zp, zq, 1)
    const got = now(zp, zq, 1, true)
    const [part, err] = parity(got, want, 1, gp)
    expect(err, `${part}: KL ${got.kl}, reference ${want.kl}`).toBeLessThanOrEqual(1)
  })
})

interface RewardResult { loss: number; grad: Float64Array }

/** reward_prompt for one hard-label prompt as it is now: the softmax in double, log p = (s − M) − log Σ. */
function rewardNow(scores: Float32Array, b: number): RewardResult {
  const K = scores.length
  const s = Array.from(scores)
  const m = s.reduce((a, x) => Math.max(a, x))
  let se = 0
  for (const x of s) se += Math.exp(x - m)
  const ls = Math.log(se), inv = f(1 / se)
  const logp = (i: number) => f((s[i] - m) - ls)
  const grad = new Float64Array(K)
  for (let i = 0; i < K; i++) grad[i] = i === b ? f(Math.expm1(logp(i))) : f(fexp(s[i] - m) * inv)
  return { loss: f(-logp(b)), grad }
}

/** The earlier reward_prompt: lse = M + logf(Σ expf(s − M)) in float32, loss lse − s_b, gradient p − 1[i = b]. */
function rewardBefore(scores: Float32Array, b: number): RewardResult {
  const K = scores.length
  const m = scores.reduce((a, x) => Math.max(a, x), -Infinity)
  let sum = 0
  for (const x of scores) sum = f(sum + fexp(f(x - m)))
  const lse = f(m + f(Math.log(sum)))
  const grad = new Float64Array(K)
  for (let i = 0; i < K; i++) grad[i] = f(fexp(f(scores[i] - lse)) - (i === b ? 1 : 0))
  return { loss: f(lse - scores[b]), grad }
}

function rewardReference(scores: Float32Array, b: number): RewardResult {
  const K = scores.length, probs = new Float64Array(K), grad = new Float64Array(K), losses = new Float64Array(1)
  const o = { chosen: Int32Array.of(b), targetProbs: null, margins: null, centerCoef: 0, reduction: 'sum' as const, ignoreIndex: -100 }
  rewardLossKernel(Float64Array.from(scores), Int32Array.of(0, K), o, probs, grad, losses)
  return { loss: losses[0], grad }
}

const worst = (a: ArrayLike<number>, e: ArrayLike<number>, tol: Tolerance) => closeness(a, e, tol).worst

describe('reward_prompt, emulated', () => {
  it('scores near 9000: loss and gradient within the parity tolerance; the earlier float32 lse − s is not', () => {
    const r = rng(85)
    let oldWorst = 0
    for (let n = 0; n < 8; n++) {
      const scores = Float32Array.from({ length: 4 }, () => 9000 + 2 * r.normal())
      const b = n % 4
      const want = rewardReference(scores, b), got = rewardNow(scores, b), old = rewardBefore(scores, b)
      expect(worst([got.loss], [want.loss], PARITY.value), `loss ${n}`).toBeLessThanOrEqual(1)
      expect(worst(got.grad, want.grad, PARITY.grad), `grad ${n}`).toBeLessThanOrEqual(1)
      oldWorst = Math.max(oldWorst, worst([old.loss], [want.loss], PARITY.value))
    }
    expect(oldWorst, 'the earlier loss').toBeGreaterThan(10)
  })

  it('a confident chosen candidate: p − 1 as expm1(log p) keeps its relative precision; float32 p − 1 does not', () => {
    const scores = Float32Array.of(14, 0, 0.5, -1)  // p_b = 1 − 2.3e-6
    const want = rewardReference(scores, 0).grad[0]
    const rel = (g: number) => Math.abs(g - want) / Math.abs(want)
    expect(rel(rewardNow(scores, 0).grad[0])).toBeLessThan(1e-6)
    expect(rel(rewardBefore(scores, 0).grad[0])).toBeGreaterThan(1e-3)
  })
})
