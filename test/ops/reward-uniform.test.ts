/**
 * rewardLoss with a uniform K (every prompt K candidates, a hard label, no margins or centering), which the cpu
 * backend runs L prompts at a time: parity with the js reference over K, dtypes and reductions, N not a multiple
 * of the lanes and past a block of prompts, ignored prompts, extreme and infinite scores; tiny losses to their
 * relative precision; the same results from K, from offsets all K apart, and prompt by prompt (ragged offsets).
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { PARITY } from '../../src/tolerance.js'
import { NATIVE_BACKENDS, on } from '../backends.js'
import { combos, expectClose, label, rng } from '../helpers.js'
import { SEED, compare, describeParity } from '../parity.js'

const KS = [2, 3, 4, 8, 16]
const DTYPES = ['float32', 'float64', 'bfloat16', 'float16'] as const
type ScoreDtype = (typeof DTYPES)[number]

/** N prompts of K scores in (−3, 3), a few prompts of extreme scores; every 5th prompt ignored. */
function uniformBatch(N: number, K: number, seed: number) {
  const r = rng(seed)
  const scores = r.f32(N * K, 3)
  const chosen = Int32Array.from({ length: N }, (_, n) => (n % 5 === 3 ? -100 : r.int(K)))
  const set = (n: number, values: number[]) => values.forEach((v, i) => (scores[n * K + i] = v))
  const spread = (hi: number, lo: number) => Array.from({ length: K }, (_, i) => (i === 0 ? hi : lo + i))
  set(0, spread(1e4, -1e4))      // one candidate far above the others
  set(1, spread(-1e4, 1e4 - 40)) // scores near 1e4 apart by units: s − m must not lose them
  set(2, spread(9000, 9000))     // all near 9000
  chosen[0] = 0
  chosen[1] = K - 1
  if (N > 5) set(5, spread(30, 0)) // a chosen candidate at p ≈ 1 − (K − 1)e^−30
  if (N > 5) chosen[5] = 0
  return { scores, chosen }
}

function asDtype(scores: Float32Array, dtype: ScoreDtype) {
  if (dtype === 'float32') return scores
  if (dtype === 'float64') return Float64Array.from(scores)
  return rk.tensor(rk.encodeFloats(scores, dtype), [scores.length], { dtype })
}

describeParity('reward uniform K', () => {
  const cases = combos({ backend: NATIVE_BACKENDS, K: KS, dtype: DTYPES, reduction: ['mean', 'none'] as const, N: [13, 4096 + 21] })
  it.each(cases.map((c) => [label(c), c] as const))('rewardLoss %s', (_, c) => {
    const { scores, chosen } = uniformBatch(c.N, c.K, SEED + c.K)
    compare(c.backend, rk.rewardLoss, { scores: asDtype(scores, c.dtype), K: c.K, chosen, reduction: c.reduction }, 'rewardLoss')
  })

  it.each(combos({ backend: NATIVE_BACKENDS, K: KS }).map((c) => [label(c), c] as const))('rewardLoss with ±inf scores %s', (_, c) => {
    const N = 11
    const { scores, chosen } = uniformBatch(N, c.K, SEED + 100 + c.K)
    scores[3 * c.K + 1] = -Infinity                    // one candidate impossible: probability 0
    scores.fill(-Infinity, 4 * c.K, 5 * c.K)           // every candidate −inf: NaN, as the reference
    scores[6 * c.K] = Infinity                         // +inf, chosen
    chosen[6] = 0
    scores[7 * c.K + 1] = Infinity                     // +inf, not chosen
    chosen[7] = 0
    compare(c.backend, rk.rewardLoss, { scores, K: c.K, chosen, reduction: 'none' as const }, 'rewardLoss')
  })
})

describe.each(NATIVE_BACKENDS)('reward uniform K on %s', (backend) => {
  it.each(KS)('tiny losses keep their relative precision at K = %i', (K) => {
    // chosen ahead by 8..20: p_b = 1 − O(e^−8 .. e^−20), a loss near Σ_{i≠b} e_i, which log of a float32 Σe
    // rounds to 0 below 2^−24 (and the float64 reference still holds to 1e-7 relative)
    const N = 29
    const scores = new Float32Array(N * K)
    for (let n = 0; n < N; n++) for (let i = 1; i < K; i++) scores[n * K + i] = -8 - 0.4 * n - 0.03 * i
    const chosen = new Int32Array(N)
    const options = { scores, K, chosen, reduction: 'none' as const }
    const expected = on('js', () => rk.rewardLoss(options))
    const actual = on(backend, () => rk.rewardLoss(options))
    expect(Math.min(...expected.losses!)).toBeGreaterThan(0)
    expectClose(actual.losses!, expected.losses!, { atol: 0, rtol: 1e-5 }, 'losses')
    expectClose(actual.gradScores, expected.gradScores, { atol: 0, rtol: 1e-5 }, 'gradScores')
  })

  it.each(combos({ K: KS, reduction: ['mean', 'sum', 'none'] as const }).map((c) => [label(c), c] as const))('K, offsets all K apart and ragged offsets agree: %s', (_, c) => {
    const N = 4096 + 37
    const { scores, chosen } = uniformBatch(N, c.K, SEED + 200 + c.K)
    const offsets = Int32Array.from({ length: N + 1 }, (_, n) => n * c.K)
    const byK = on(backend, () => rk.rewardLoss({ scores, K: c.K, chosen, reduction: c.reduction }))
    const byOffsets = on(backend, () => rk.rewardLoss({ scores, offsets, chosen, reduction: c.reduction }))
    expect(byOffsets).toEqual(byK)
    // one more prompt of K + 1 candidates: every prompt then runs one at a time
    const extra = new Float32Array(scores.length + c.K + 1)
    extra.set(scores)
    const ragged = on(backend, () => rk.rewardLoss({
      scores: extra, offsets: Int32Array.from([...offsets, offsets[N] + c.K + 1]), chosen: Int32Array.from([...chosen, -100]), reduction: c.reduction,
    }))
    const M = N * c.K
    expectClose(ragged.probs.subarray(0, M), byK.probs, PARITY.value, 'probs')
    expectClose(ragged.gradScores.subarray(0, M), byK.gradScores, PARITY.grad, 'gradScores')
    expectClose(ragged.loss, byK.loss, PARITY.value, 'loss')
    if (c.reduction === 'none') expectClose(ragged.losses!.subarray(0, N), byK.losses!, PARITY.value, 'losses')
    expect(ragged.count).toBe(byK.count)
    expect(ragged.accuracy).toBe(byK.accuracy)
  })

  it('a chosen index out of [0, K) is a RangeError naming the prompt, for K as for offsets', () => {
    const scores = new Float32Array(40), chosen = new Int32Array(10)
    chosen[7] = 4
    // the message of the js backend's check, word for word (each backend checks the labels it reads)
    const message = 'rewardLoss: chosen[7] must be in [0, 4) or equal to ignoreIndex (-100), got 4'
    expect(() => on('js', () => rk.rewardLoss({ scores, K: 4, chosen }))).toThrow(message)
    expect(() => on(backend, () => rk.rewardLoss({ scores, K: 4, chosen }))).toThrow(message)
    expect(() => on(backend, () => rk.rewardLoss({ scores, offsets: Int32Array.from({ length: 11 }, (_, n) => 4 * n), chosen }))).toThrow(message)
    expect(() => on(backend, () => rk.rewardLoss({ scores, K: 4, chosen, ignoreIndex: 9 }))).toThrow('ignoreIndex (9), got 4')
    expect(() => on(backend, () => rk.rewardLoss({ scores, K: 3, chosen }))).toThrow(/K = 3|multiple/)
  })
})
