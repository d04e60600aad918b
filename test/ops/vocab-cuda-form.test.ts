/**
 * The CUDA cross-entropy and ppoLoss kernels (native/cuda/vocab.cu, ppo.cu) in their float32 arithmetic,
 * emulated step by step (Math.fround after every float32 operation, in the kernel's order), against the
 * float64 reference (issue 10): every log-prob is formed from differences to the row max, (z − m)·invT + c,
 * never z·invT − lse, and the true class's p − 1 is expm1(log p). Each case also runs the kernel's earlier
 * form and shows that it misses the same tolerance:
 *   - rows with |z|/T near 1e4, where float32 z·invT and lse each carry ~6e-4;
 *   - confident rows (p_y = 1 − 6.7e-6) whose other exps sum to a float32-exact S, where 1 − fl(p_y) keeps
 *     only a few digits: there expm1(log p_y) is what decides.
 * The block reductions are emulated as each thread's strided walk then a fold in thread order (the kernels'
 * trees differ only in the order of float32 additions, far below the tolerances here).
 */
import { afterAll, describe, expect, it } from 'vitest'
import { trustRegionDivergence } from '../../src/reference/ppo.js'
import { crossEntropyKernel, logProbsBackwardKernel, logProbsKernel, rowLse } from '../../src/reference/vocab.js'
import { rng } from '../helpers.js'

const f = Math.fround
const exp32 = (x: number) => f(Math.exp(x))
const expm1f = (x: number) => f(Math.expm1(x))
const THREADS = 512

type MS = [m: number, s: number]

/** common.cuh maxsum_add: the running raw max m and S = Σ exp((x − m)·invT) of one thread */
function maxsumAdd([m, s]: MS, x: number, invT: number): MS {
  if (x === -Infinity) return [m, s]
  if (x > m) return [x, f(f(s * exp32(f(f(m - x) * invT))) + 1)]
  return [m, f(s + exp32(f(f(x - m) * invT)))]
}

/** common.cuh maxsum_combine (rowtile.cuh combine is the same for K = 1) */
function maxsumCombine([am, as]: MS, [bm, bs]: MS, invT: number): MS {
  if (am === -Infinity) return [bm, f(bs + as)]
  if (bm === -Infinity) return [am, f(as + bs)]
  const m = Math.max(am, bm)
  return [m, f(f(as * exp32(f(f(am - m) * invT))) + f(bs * exp32(f(f(bm - m) * invT))))]
}

/** block_maxsum over a row read by THREADS threads, columns t, t + THREADS, … */
function blockMaxSum(x: ArrayLike<number>, invT: number): MS {
  let all: MS = [-Infinity, 0]
  for (let t = 0; t < THREADS; t++) {
    let part: MS = [-Infinity, 0]
    for (let v = t; v < x.length; v += THREADS) part = maxsumAdd(part, x[v], invT)
    all = maxsumCombine(all, part, invT)
  }
  return all
}

/** common.cuh block_row_shift (finite rows): log p_v = (z_v − m)·invT + c, c = −log S rounded once */
function rowShift(z: ArrayLike<number>, invT: number) {
  const [m, S] = blockMaxSum(z, invT)
  const c = f(-Math.log(S))
  return { m, S, c, logp: (zv: number) => f(f(f(zv - m) * invT) + c) }
}

/** the earlier kernels: block_lse_exact of z·invT rounded to float32 first, lse in double */
function scaledLse(z: ArrayLike<number>, invT: number): number {
  const [m, S] = blockMaxSum(Array.from(z, (v) => f(v * invT)), 1)
  return m + Math.log(S)
}

/** max |a − e| / max |e|: the error against the float64 reference, relative to the row's scale */
function relErr(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let d = 0, s = 0
  for (let i = 0; i < e.length; i++) {
    d = Math.max(d, Math.abs(a[i] - e[i]))
    s = Math.max(s, Math.abs(e[i]))
  }
  return d / s
}

/** max_v |a_v − e_v| / |e_v| over e_v ≠ 0: the error of every probability term, small ones included */
function elemErr(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let d = 0
  for (let i = 0; i < e.length; i++) if (e[i] !== 0) d = Math.max(d, Math.abs(a[i] / e[i] - 1))
  return d
}

/** |z|/T near 1e4: z = 7000 + x at T = 0.7 */
function farRow(seed: number, V: number, T = 0.7) {
  return { z: Float32Array.from(rng(seed).f32(V, 2), (x) => 7000 + x), T }
}

/**
 * A confident row at moderate values: z_y = 5, the others z_y − 20·ln2·T, so each other exp is 2⁻²⁰ (to
 * float32 rounding) and S = 1 + (V − 1)·2⁻²⁰ is exact in float32; p_y = 1/S, 1 − p_y ≈ (V − 1)·2⁻²⁰.
 */
function confidentRow(V: number, y: number, T: number) {
  const z = new Float32Array(V).fill(f(5 - 20 * Math.LN2 * T))
  z[y] = 5
  return z
}

/** the float64 cross-entropy gradient and loss of one row (reduction 'sum': scale 1) */
function ceReference(z: Float32Array, y: number, T: number, eps: number) {
  const V = z.length
  const grad = new Float64Array(V), losses = new Float64Array(1)
  crossEntropyKernel(Float64Array.from(z), 1, V, Int32Array.of(y), {
    ignoreIndex: -100, reduction: 'sum', labelSmoothing: eps, zLoss: 0, classWeights: null, tokenWeights: null, temperature: T,
  }, losses, new Float64Array(1), grad)
  return { grad, loss: losses[0] }
}

/** a record of the errors measured, printed once (the numbers quoted in the commit and the report) */
const measured: string[] = []
const note = (what: string, now: number, before: number) => measured.push(`${what}: ${now.toExponential(2)} (earlier form ${before.toExponential(2)})`)

describe('cross_entropy_grad_kernel (two-pass, any temperature), emulated in float32', () => {
  /**
   * row_stats gives m and ls = logf(S); the rows kernel keeps (m, c = −ls). With cp = (1−ε) + ε + 2 s lse and
   * rest = cp − (1−ε), e = ε/V, gs the scale times 1/T:
   *   log p_v = (z_v − m)·invT + c,  d_v = cp·exp(log p_v) (v ≠ y), d_y = cp·expm1(log p_y) + rest,  g_v = gs·(d_v − e)
   * The earlier form: q = exp(fl(z·invT) − lse), g_v = gs·(cp·q − (1−ε)[v = y] − e).
   */
  function grad(z: Float32Array, y: number, T: number, eps: number, earlier: boolean): number[] {
    const V = z.length
    const invT = f(1 / T)
    const [m, S] = blockMaxSum(z, invT)
    const ls = f(Math.log(S))
    const lse = f(m * invT + Math.log(S))
    const gs = f(1 * invT)
    const rest = f(f(eps * V) / V)  // ε·W/V + 2 s lse with W = V, s = 0
    const cp = f(f(1 - eps) + rest)
    const e = f(eps / V)
    return Array.from(z, (zv, v) => {
      if (earlier) {
        const q = exp32(f(f(zv * invT) - lse))
        return f(gs * f(f(f(cp * q) - (v === y ? f(1 - eps) : 0)) - e))
      }
      const lp = f(f(f(zv - m) * invT) + -ls)
      const d = v === y ? f(f(cp * expm1f(lp)) + rest) : f(cp * exp32(lp))
      return f(gs * f(d - e))
    })
  }

  it('|z|/T near 1e4, ε = 0.1', () => {
    const { z, T } = farRow(101, 1001)
    const ref = ceReference(z, 17, T, 0.1).grad
    const now = relErr(grad(z, 17, T, 0.1, false), ref), before = relErr(grad(z, 17, T, 0.1, true), ref)
    note('cross_entropy_grad_kernel, |z|/T ≈ 1e4', now, before)
    expect(now).toBeLessThan(2e-5)
    expect(before).toBeGreaterThan(10 * now + 1e-4)
  })

  it('a confident row at T = 0.7: the true class by expm1', () => {
    const V = 8, y = 3, T = 0.7
    const z = confidentRow(V, y, T)
    const ref = ceReference(z, y, T, 0).grad
    const g = grad(z, y, T, 0, false), old = grad(z, y, T, 0, true)
    const now = Math.abs(g[y] / ref[y] - 1), before = Math.abs(old[y] / ref[y] - 1)
    note('cross_entropy_grad_kernel, confident row, relative error of dℓ/dz_y', now, before)
    expect(now).toBeLessThan(1e-5)
    expect(before).toBeGreaterThan(1e-3)
  })
})

describe('cross_entropy_tile_kernel (single pass, T = 1), emulated in float32', () => {
  /**
   * RowTile<float>: thread t holds columns (k·512 + t)·4 + j, k < 8, j < 4, in register order. Per thread:
   * m_t, s_t = Σ exp(x − m_t) and (ε ≠ 0) Σ (x − r), r = x_y (0 where not finite); row_combine folds them
   * (MaxSums combine), then with ls = logf(S), lse = m + ls, log p_y = (x_y − m) − ls:
   *   loss = (1−ε)·(−log p_y) + [ε·(ls − (r − m)) − ε/V·Σ(x − r)]
   *   dℓ/dx_v = a·exp(x_v − m_t) − ge (v ≠ y), gy = gs·(cp·expm1(log p_y) + rest) − ge at y,
   *   a = gs·cp·exp(m_t − m)/S, ge = gs·ε/V, cp = 1 − ε + rest, rest = ε (z-loss 0), gs = 1.
   * The earlier form: lse = fl(m + log S) in double, loss = (1−ε)(lse − x_y) + ε/V·(V·lse − Σx), and
   * dℓ/dx_v = gs·(cp·(e_v·r) − (1−ε)[v = y] − ε/V), r = exp(m_t − m)/S.
   */
  function tile(z: Float32Array, y: number, eps: number, earlier: boolean) {
    const V = z.length
    const cols: number[][] = []
    for (let t = 0; t < THREADS; t++) {
      const c: number[] = []
      for (let k = 0; k < 8; k++) for (let j = 0; j < 4; j++) if ((k * THREADS + t) * 4 + j < V) c.push((k * THREADS + t) * 4 + j)
      cols.push(c)
    }
    const xy = z[y]
    const r = earlier ? 0 : Number.isFinite(xy) ? xy : 0
    const mts: number[] = []
    let all: MS = [-Infinity, 0], plain = 0
    for (const c of cols) {
      let p = 0
      if (eps !== 0) for (const v of c) p = f(p + (earlier ? z[v] : f(z[v] - r)))
      const mt = c.reduce((a, v) => Math.max(a, z[v]), -Infinity)
      let s = 0
      for (const v of c) s = f(s + (mt === -Infinity ? 0 : exp32(f(z[v] - mt))))
      mts.push(mt)
      all = maxsumCombine(all, [mt, s], 1)
      plain = f(plain + p)
    }
    const [m, S] = all
    const e = f(eps / V)
    const grad = new Array<number>(V)
    let loss: number
    if (earlier) {
      const lse = f(m + Math.log(S))
      loss = f(f(f(1 - eps) * f(lse - xy)) + f(e * f(f(V * lse) - plain)))
      const cp = 1
      cols.forEach((c, t) => {
        const rr = f(exp32(f(mts[t] - m)) / S)
        for (const v of c) grad[v] = f(f(f(cp * f(exp32(f(z[v] - mts[t])) * rr)) - (v === y ? f(1 - eps) : 0)) - e)
      })
    } else {
      const ls = f(Math.log(S))
      const lpy = f(f(xy - m) - ls)
      loss = f(f(1 - eps) * -lpy)
      if (eps !== 0) loss = f(loss + f(f(eps * f(ls - f(r - m))) - f(e * plain)))
      const gs = 1, rest = eps, ge = f(gs * e)
      const cp = f(f(1 - eps) + rest)
      const gy = f(f(gs * f(f(cp * expm1f(lpy)) + rest)) - ge)
      cols.forEach((c, t) => {
        const a = f(f(gs * cp) * f(exp32(f(mts[t] - m)) / S))
        for (const v of c) grad[v] = v === y ? gy : f(f(a * exp32(f(z[v] - mts[t]))) - ge)
      })
    }
    return { loss, grad }
  }

  it('|z| near 1e4, ε = 0.1: the loss from differences, not lse − x_y and V·lse − Σ x', () => {
    const z2 = Float32Array.from(farRow(102, 4096, 1).z, (x) => f(x + 3000))  // 1e4 + x
    const y = 1234
    const ref = ceReference(z2, y, 1, 0.1)
    const t = tile(z2, y, 0.1, false), old = tile(z2, y, 0.1, true)
    const now = Math.abs(t.loss - ref.loss) / ref.loss, before = Math.abs(old.loss - ref.loss) / ref.loss
    note('cross_entropy_tile_kernel loss, |z| ≈ 1e4, ε = 0.1, relative error', now, before)
    expect(now).toBeLessThan(2e-6)
    expect(before).toBeGreaterThan(10 * now + 1e-5)
    expect(relErr(t.grad, ref.grad)).toBeLessThan(2e-5)
  })

  // expm1(log p_y) is as exact as the earlier 1 − p_y here: p_y = e_y·exp(m_t − m)/S, and both are limited by
  // the float32 S alone (exact in this row); the tile keeps the cpu's form for the true class all the same
  it('a confident row: the true class by expm1, within float32 S', () => {
    const V = 4096, y = 2049
    const z = confidentRow(V, y, 1)
    const ref = ceReference(z, y, 1, 0)
    const t = tile(z, y, 0, false), old = tile(z, y, 0, true)
    const now = Math.abs(t.grad[y] / ref.grad[y] - 1), before = Math.abs(old.grad[y] / ref.grad[y] - 1)
    note('cross_entropy_tile_kernel, confident row (V = 4096), relative error of dℓ/dz_y', now, before)
    expect(now).toBeLessThan(1e-5)
    expect(Math.abs(t.loss / ref.loss - 1)).toBeLessThan(1e-5)
  })
})

describe('log_probs_backward_kernel: the true class by expm1, emulated in float32', () => {
  // log p = (z − m)·invT + c, c = m/T − lse in double (lse the float32 input); d_y = −g·expm1(log p_y)/T,
  // earlier g·(1 − p_y)/T. The reference is given the same float32 lse.
  it('a confident row at T = 0.3', () => {
    const V = 4, y = 1, T = 0.3
    const z = confidentRow(V, y, T)
    const invT = f(1 / T)
    const lse = f(rowLse(Float64Array.from(z), 0, V, 1 / T))
    const ref = new Float64Array(V)
    logProbsBackwardKernel(Float64Array.from(z), 1, V, Int32Array.of(y), [lse], [1], null, null, { temperature: T, ignoreIndex: -100 }, ref)
    const m = z[y]
    const c = f(m / T - lse)
    const lp = f(f(f(z[y] - m) * invT) + c)
    const now = f(f(-1 * expm1f(lp)) * invT), before = f(f(1 * f(1 - exp32(lp))) * invT)
    note('log_probs_backward_kernel, confident row, relative error of d/dz_y', Math.abs(now / ref[y] - 1), Math.abs(before / ref[y] - 1))
    expect(Math.abs(now / ref[y] - 1)).toBeLessThan(1e-5)
    expect(Math.abs(before / ref[y] - 1)).toBeGreaterThan(1e-3)
  })
})

describe('ppoLoss (ppo.cu), emulated in float32', () => {
  // log q_y and the row's gradient −c·(q − onehot)/T for a dloss/dlogp c, as the reference's logProbs and
  // logProbsBackward (gradLogp = c) give them in float64
  function reference(z: Float32Array, y: number, T: number, c: number) {
    const V = z.length
    const logp = new Float64Array(1), lse = new Float64Array(1), grad = new Float64Array(V)
    const o = { temperature: T, ignoreIndex: -100 }
    logProbsKernel(Float64Array.from(z), 1, V, Int32Array.of(y), o, logp, lse, null)
    logProbsBackwardKernel(Float64Array.from(z), 1, V, Int32Array.of(y), lse, [c], null, null, o, grad)
    return { logp: logp[0], grad }
  }

  /**
   * ppo_rows_kernel (and ppo_logp_kernel's log-prob): block_row_shift, log q_v = (z_v − m)·invT + c;
   * d_v = −c_logp·q_v, −c_logp·expm1(log q_y) at the action; g = d·invT.
   * The earlier form: lse = fl(block_lse_exact(z·invT)), log q_v = fl(z·invT) − lse, d = c_logp·(onehot − q).
   */
  function rows(z: Float32Array, y: number, T: number, cl: number, earlier: boolean) {
    const invT = f(1 / T)
    if (earlier) {
      const lse = f(scaledLse(z, invT))
      const lq = (zv: number) => f(f(zv * invT) - lse)
      return { logp: lq(z[y]), grad: Array.from(z, (zv, v) => f(f(cl * f((v === y ? 1 : 0) - exp32(lq(zv)))) * invT)) }
    }
    const r = rowShift(z, invT)
    const grad = Array.from(z, (zv, v) => {
      const lq = r.logp(zv)
      return f((v === y ? f(-cl * expm1f(lq)) : f(-cl * exp32(lq))) * invT)
    })
    return { logp: r.logp(z[y]), grad }
  }

  /**
   * ppo_tile_kernel: the tile holds the raw logits; m_t, s_t = Σ exp((z − m_t)·invT), combined at invT;
   * RowShift from (m, S); c_logp already times invT; a = −c_logp·exp((m_t − m)·invT)/S, g_v = a·e_v, and
   * −c_logp·expm1(log q_y) at the action.
   * The earlier form: the tile held fl(z·invT), lse = fl(m + log S), log q_y = fl(z_y·invT) − lse,
   * g_v = c_logp·(onehot − e_v·r), r = exp(m_t − m)/S.
   */
  function tile(z: Float32Array, y: number, T: number, cl: number, earlier: boolean) {
    const V = z.length
    const invT = f(1 / T)
    const x = earlier ? Array.from(z, (v) => f(v * invT)) : Array.from(z)
    const k = earlier ? 1 : invT  // the scale of differences
    const cols: number[][] = []
    for (let t = 0; t < THREADS; t++) {
      const c: number[] = []
      for (let kk = 0; kk < 8; kk++) for (let j = 0; j < 4; j++) if ((kk * THREADS + t) * 4 + j < V) c.push((kk * THREADS + t) * 4 + j)
      cols.push(c)
    }
    const mts = cols.map((c) => c.reduce((a, v) => Math.max(a, x[v]), -Infinity))
    let all: MS = [-Infinity, 0]
    cols.forEach((c, t) => {
      let s = 0
      for (const v of c) s = f(s + exp32(f(f(x[v] - mts[t]) * k)))
      all = maxsumCombine(all, [mts[t], s], k)
    })
    const [m, S] = all
    const c = f(cl * invT)
    const grad = new Array<number>(V)
    let logp: number
    if (earlier) {
      const lse = f(m + Math.log(S))
      logp = f(f(z[y] * invT) - lse)
      cols.forEach((col, t) => {
        const r = f(exp32(f(mts[t] - m)) / S)
        for (const v of col) grad[v] = f(c * f((v === y ? 1 : 0) - f(exp32(f(x[v] - mts[t])) * r)))
      })
    } else {
      logp = f(f(f(z[y] - m) * invT) + f(-Math.log(S)))
      const gy = f(-c * expm1f(logp))
      cols.forEach((col, t) => {
        const a = f(-c * f(exp32(f(f(mts[t] - m) * invT)) / S))
        for (const v of col) grad[v] = v === y ? gy : f(a * exp32(f(f(x[v] - mts[t]) * invT)))
      })
    }
    return { logp, grad }
  }

  for (const [name, kernel] of [['ppo_rows_kernel', rows], ['ppo_tile_kernel', tile]] as const) {
    it(`${name}: log π(a) and the gradient at |z|/T near 1e4`, () => {
      const { z, T } = farRow(103, 3001)
      const cl = -0.8
      let lpNow = 0, lpOld = 0, gNow = 0, gOld = 0
      for (const y of [0, 77, 1500, 3000]) {
        const ref = reference(z, y, T, cl)
        const now = kernel(z, y, T, cl, false), old = kernel(z, y, T, cl, true)
        lpNow = Math.max(lpNow, Math.abs(now.logp - ref.logp))
        lpOld = Math.max(lpOld, Math.abs(old.logp - ref.logp))
        gNow = Math.max(gNow, elemErr(now.grad, ref.grad))
        gOld = Math.max(gOld, elemErr(old.grad, ref.grad))
      }
      note(`${name} log π(a), |z|/T ≈ 1e4, absolute error`, lpNow, lpOld)
      note(`${name} gradient, |z|/T ≈ 1e4, largest relative error of an element`, gNow, gOld)
      expect(lpNow).toBeLessThan(2e-5)
      expect(lpOld).toBeGreaterThan(10 * lpNow + 1e-5)
      expect(gNow).toBeLessThan(2e-5)
      expect(gOld).toBeGreaterThan(10 * gNow + 1e-4)
    })

    // the tile's earlier form took 1 − e_a·r, r = 1/S, which the float32 S limits as much as it limits
    // expm1(log p_a): there the gain is log π(a) and the other terms at large |z|/T (above), not this one
    it(`${name}: a confident row at T = 0.3, the action's term by expm1`, () => {
      const V = 4, y = 2, T = 0.3, cl = 1.3
      const z = confidentRow(V, y, T)
      const ref = reference(z, y, T, cl)
      const now = kernel(z, y, T, cl, false), old = kernel(z, y, T, cl, true)
      const e = (g: ArrayLike<number>) => Math.abs(g[y] / ref.grad[y] - 1)
      note(`${name}, confident row, relative error of d/dz_a`, e(now.grad), e(old.grad))
      expect(e(now.grad)).toBeLessThan(1e-5)
      if (kernel === rows) expect(e(old.grad)).toBeGreaterThan(1e-3)
    })
  }

  /**
   * The full-vocabulary KL(π_anchor ‖ π_θ) of ppo_rows_kernel and the dppo-kl / dppo-tv divergences of
   * ppo_logp_kernel: p_v = exp(log p_v) of the anchor row a, log p_v − log q_v = ((a_v − m_a) − (z_v − m_q))·invT
   * + (c_a − c_q), KL = Σ kl_term(p_v, that); TV = ½ Σ |q_v − p_v|.
   * The earlier form: p_v = exp(fl(a·invT) − lse_a), log ratio (a − z)·invT − (lse_a − lse_q), lse in double.
   */
  function divergences(a: Float32Array, z: Float32Array, T: number, earlier: boolean) {
    const invT = f(1 / T)
    let kl = 0, tv = 0
    if (earlier) {
      const la = scaledLse(a, invT), lq = scaledLse(z, invT)
      const dl = f(la - lq), lsa = f(la), lsq = f(lq)
      for (let v = 0; v < a.length; v++) {
        const pa = exp32(f(f(a[v] * invT) - lsa))
        if (pa > 0) kl = f(kl + f(pa * f(f(f(a[v] - z[v]) * invT) - dl)))
        tv = f(tv + Math.abs(f(exp32(f(f(z[v] * invT) - lsq)) - pa)))
      }
    } else {
      const sa = rowShift(a, invT), sq = rowShift(z, invT)
      const dc = f(sa.c - sq.c)
      for (let v = 0; v < a.length; v++) {
        const pa = exp32(sa.logp(a[v]))
        const lr = f(f(f(f(a[v] - sa.m) - f(z[v] - sq.m)) * invT) + dc)
        kl = f(kl + (lr === Infinity ? lr : pa !== 0 ? f(pa * lr) : 0))
        tv = f(tv + Math.abs(f(exp32(sq.logp(z[v])) - pa)))
      }
    }
    return { kl, tv: f(0.5 * tv) }
  }

  it('full KL and the trust-region divergences at |z|/T near 1e4', () => {
    const { z, T } = farRow(104, 2000)
    const a = Float32Array.from(z, (v, i) => f(v + 0.3 * Math.sin(i)))  // a nearby anchor: a small KL
    const V = z.length
    const la = rowLse(Float64Array.from(a), 0, V, 1 / T), lq = rowLse(Float64Array.from(z), 0, V, 1 / T)
    const kl = trustRegionDivergence(Float64Array.from(z), Float64Array.from(a), 0, V, 1 / T, lq, la, 'kl')
    const tv = trustRegionDivergence(Float64Array.from(z), Float64Array.from(a), 0, V, 1 / T, lq, la, 'tv')
    const now = divergences(a, z, T, false), old = divergences(a, z, T, true)
    note('ppo full KL (and dppo-kl), |z|/T ≈ 1e4, relative error', Math.abs(now.kl / kl - 1), Math.abs(old.kl / kl - 1))
    note('ppo dppo-tv, |z|/T ≈ 1e4, relative error', Math.abs(now.tv / tv - 1), Math.abs(old.tv / tv - 1))
    expect(Math.abs(now.kl / kl - 1)).toBeLessThan(1e-4)
    expect(Math.abs(old.kl / kl - 1)).toBeGreaterThan(10 * Math.abs(now.kl / kl - 1) + 1e-4)
    expect(Math.abs(now.tv / tv - 1)).toBeLessThan(1e-4)
    expect(Math.abs(old.tv / tv - 1)).toBeGreaterThan(10 * Math.abs(now.tv / tv - 1) + 1e-4)
  })
})

afterAll(() => console.info(measured.join('\n')))
