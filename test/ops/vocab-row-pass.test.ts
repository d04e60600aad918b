/**
 * The row pass of the CPU vocabulary kernels (native/cpu/rowmath.h row_exps_ahead, row_argmax_lanes): each
 * row's exps with per-lane compensated totals over 256-element blocks and the maxima counted apart, exp
 * without range clamps for (z − max)/T ≤ 0, the next row prefetched, and the first maximum found 4 vectors at
 * a time. Against the js reference (logProbs with every statistic, crossEntropy forward and backward) over
 * dtype × V × T, V around the lane, 4-vector and block sizes; rows whose maximum comes first, last, at a
 * vector or block edge, tied later; rows of equal values; columns at −inf and far below the max (past exp's
 * underflow); and a row long enough for the tie counts to be folded into double, against formulas.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { NATIVE_BACKENDS, on } from '../backends.js'
import { gradTolerance } from '../../src/tolerance.js'
import { parityError } from '../compare.js'
import { expectClose, rng } from '../helpers.js'
import { SEED } from '../parity.js'

type Dtype = 'float32' | 'bfloat16' | 'float16'
const DTYPES: Dtype[] = ['float32', 'bfloat16', 'float16']
// around 16 lanes, 4 × 16 (the argmax step) and the 256-element block; 32000 + 7 a bench-sized row with a tail
const SIZES = [37, 64, 65, 255, 256, 257, 1000, 4099, 32007]

const tensorOf = (z: Float32Array, N: number, V: number, dtype: Dtype) =>
  dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })

/** the positions of row n's largest logit: first, last, at vector and block edges */
function maxPositions(V: number) {
  return [...new Set([0, 1, 15, 16, 63, 64, 65, 127, 255, 256, V >> 1, V - 65, V - 17, V - 2, V - 1].filter((p) => p >= 0 && p < V))]
}

/**
 * Rows: one per position of the max (value 8, with a tie at a later position where there is one, and the
 * value just below 8 before it); then a row of equal values, a row whose other logits are all past exp's
 * underflow below the max (p = 1 at the max), and a row with −inf columns and logits at max − 87, −87.5, −88,
 * −200. The other logits normal, clamped to ±3.
 */
function rowsOf(V: number, seed: number) {
  const r = rng(seed)
  const pos = maxPositions(V)
  const N = pos.length + 3
  const z = r.f32(N * V).map((x) => Math.max(-3, Math.min(3, x)))
  pos.forEach((p, n) => {
    z[n * V + p] = 8
    if (p > 0) z[n * V + p - 1] = 7.5
    const tie = p + 1 + ((n * 37) % Math.max(1, V - p - 1))
    if (tie < V && n % 2 === 0) z[n * V + tie] = 8
  })
  const eq = pos.length, far = eq + 1, low = eq + 2
  z.fill(0.5, eq * V, (eq + 1) * V)
  z.fill(-100, far * V, (far + 1) * V)
  z[far * V + (V >> 2)] = 1
  for (let v = 0; v < V; v += 7) z[low * V + v] = -Infinity
  const edge = [-87, -87.5, -88, -200]
  for (let i = 0; i < edge.length; i++) z[low * V + 3 + 7 * i] = 4 + edge[i]
  z[low * V + 3 + 7 * edge.length] = 4  // the max: the others are within ±3
  const targets = r.ints(N, V)
  targets[far] = V >> 2
  targets[low] = 3  // the logit at max − 87
  return { z, N, targets, pos, eq, far, low }
}

describe.each(NATIVE_BACKENDS)(`vocabulary row pass: %s against js (seed ${SEED})`, (backend) => {
  const cases = DTYPES.flatMap((dtype) => SIZES.flatMap((V) => [1, 0.6].map((T) => [dtype, V, T] as const)))
  it.each(cases)('%s V=%i T=%s', (dtype, V, T) => {
    const { z, N, targets, pos, eq } = rowsOf(V, SEED + V)
    const logits = tensorOf(z, N, V, dtype)
    const fwd = () => rk.logProbs({ logits, targets, temperature: T, entropy: true, sumProbSq: true, maxProb: true })
    const expected = on('js', fwd)
    const actual = on(backend, fwd)
    const error = parityError(actual, expected)
    if (error !== null) expect.fail(`logProbs ${dtype} V=${V} T=${T}: ${error}`)
    // the first largest logit, wherever it is
    expect(Array.from(actual.maxToken!.subarray(0, pos.length))).toEqual(pos)
    expect(actual.maxToken).toEqual(expected.maxToken)
    // a row of equal values: p = 1/V everywhere (the whole row counted as maxima)
    expectClose([actual.logp[eq], actual.entropy![eq], actual.sumProbSq![eq]], [-Math.log(V), Math.log(V), 1 / V], { atol: 1e-6, rtol: 2e-6 }, 'equal row')
    for (const out of [false, true]) {
      const ce = () => {
        const o = out ? { out: { gradLogits: new Float32Array(N * V), lse: new Float32Array(N) } } : {}
        return rk.crossEntropy({ logits, targets, temperature: T, grad: true, reduction: 'none', ...o })
      }
      const e = parityError(on(backend, ce), on('js', ce), { gradLogits: gradTolerance(T) })
      if (e !== null) expect.fail(`crossEntropy ${dtype} V=${V} T=${T} out=${out}: ${e}`)
    }
  })

  it('the row past exp\'s underflow: p = 1 at the max, log p 0, entropy 0, gradient 0 (p − 1 = 0, the rest 0)', () => {
    const V = 4099
    const { z, N, targets, far } = rowsOf(V, SEED)
    const logits = tensorOf(z, N, V, 'float32')
    const lp = on(backend, () => rk.logProbs({ logits, targets, entropy: true, sumProbSq: true, maxProb: true }))
    expect([lp.logp[far], lp.entropy![far], lp.sumProbSq![far], lp.maxProb![far]]).toEqual([0, 0, 1, 1])
    const g = (on(backend, () => rk.crossEntropy({ logits, targets, grad: true, reduction: 'sum' })).gradLogits!.data as Float32Array).subarray(far * V, (far + 1) * V)
    expect(g.every((x) => x === 0)).toBe(true)
  })

  // 2^20 + 300 columns: more than 4096 blocks of 256, where each lane's tie count is folded into double
  it.each([1, 0.6])('a row of 2^20 + 300 equal values and a random one, T=%s, against formulas and js', (T) => {
    const V = 2 ** 20 + 300, N = 2
    const r = rng(SEED + 7)
    const z = new Float32Array(N * V).fill(0.5)
    z.set(r.f32(V, 3), V)
    const logits = rk.tensor(z, [N, V])
    const targets = Int32Array.of(12345, 99)
    const fwd = () => rk.logProbs({ logits, targets, temperature: T, entropy: true, sumProbSq: true, maxProb: true })
    const actual = on(backend, fwd)
    const error = parityError(actual, on('js', fwd))
    if (error !== null) expect.fail(`logProbs V=${V} T=${T}: ${error}`)
    expectClose([actual.lse[0], actual.logp[0], actual.entropy![0], actual.sumProbSq![0], actual.maxProb![0]],
      [0.5 / T + Math.log(V), -Math.log(V), Math.log(V), 1 / V, 1 / V], { atol: 0, rtol: 2e-6 }, 'equal row')
    expect(actual.maxToken![0]).toBe(0)
  })
})
