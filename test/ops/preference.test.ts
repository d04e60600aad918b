/**
 * The preference family (src/preference.ts): sequenceLogProbs and preferenceLoss. PyTorch golden values
 * (test/fixtures/golden_preference.py: K = 2 against TRL's / OpenRLHF's / SimPO's formulas, ragged
 * Plackett–Luce and pairwise K > 2 written directly in torch), identities (PL at K = 2 is DPO; top-1 PL is
 * rewardLoss on the implicit rewards), finite-difference gradients of the float64 kernels, cpu vs js parity
 * on fresh random inputs over dtype × shape × options, and bad input.
 */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { preferenceLossKernel, sequenceLogProbsKernel, type PreferenceKernelOptions } from '../../src/reference/preference.js'
import { HOST_BACKENDS, NATIVE_BACKENDS, on } from '../backends.js'
import { parityError } from '../compare.js'
import { F32, expectClose, expectGradient, numericGradient, rng } from '../helpers.js'
import { SEED } from '../parity.js'

interface Case { op: string; expected: Record<string, any>; [k: string]: any }
const golden: { cases: Case[] } = JSON.parse(readFileSync(new URL('../fixtures/preference.json', import.meta.url), 'utf8'))
const cases = (op: string) => golden.cases.filter((c) => c.op === op).map((c, i) => [`${i} ${c.type ?? ''}`, c] as const)
const f64 = (x: number[]) => Float64Array.from(x)
const i32 = (x: number[]) => Int32Array.from(x)
const PAIRWISE = ['dpo', 'robust', 'ipo', 'hinge', 'simpo'] as const

/** Golden results hold float64 math on float64 inputs; our outputs are float32 on every backend. */
function expectGolden(r: Record<string, any>, expected: Record<string, any>, keys: string[]) {
  for (const k of keys) if (expected[k] !== null && expected[k] !== undefined) expectClose(r[k], expected[k], F32, k)
}

describe.each(HOST_BACKENDS)('preference golden values from PyTorch (%s)', (backend) => {
  it.each(cases('preferenceK2'))('K = 2, case %s: the anchor formula (loss, losses, gradients, metrics)', (_, c) => {
    const r = on(backend, () => rk.preferenceLoss({
      logp: f64(c.logp), ...(c.refLogp ? { refLogp: f64(c.refLogp), refGrad: true } : {}), K: 2, chosen: i32(c.chosen),
      type: c.type, beta: c.beta, ...(c.labelSmoothing ? { labelSmoothing: c.labelSmoothing } : {}),
      ...(c.gamma !== undefined ? { gamma: c.gamma } : {}), ...(c.lengths ? { lengths: f64(c.lengths) } : {}), reduction: 'none',
    }))
    expect(r.count).toBe(c.chosen.length)
    const mean = r.losses!.reduce((a, b) => a + b, 0) / r.count
    expectClose(mean, c.expected.loss, F32, 'mean of losses')
    // reduction 'none' gives the per-prompt gradient (no 1/N); the golden gradient is of the mean
    const N = c.chosen.length
    expectClose(r.gradLogp.map((g) => g / N), c.expected.gradLogp, F32, 'gradLogp')
    if (c.refLogp) expectClose(r.gradRefLogp!.map((g) => g / N), c.expected.gradRefLogp, F32, 'gradRefLogp')
    expectGolden(r, c.expected, ['losses', 'chosenReward', 'rejectedReward', 'margin', 'accuracy'])
    const m = on(backend, () => rk.preferenceLoss({
      logp: f64(c.logp), ...(c.refLogp ? { refLogp: f64(c.refLogp) } : {}), K: 2, chosen: i32(c.chosen), type: c.type, beta: c.beta,
      ...(c.labelSmoothing ? { labelSmoothing: c.labelSmoothing } : {}), ...(c.gamma !== undefined ? { gamma: c.gamma } : {}),
      ...(c.lengths ? { lengths: f64(c.lengths) } : {}),
    }))
    expectGolden(m, c.expected, ['loss', 'gradLogp'])
  })

  it.each(cases('plackettLuce'))('Plackett–Luce over ragged K, case %s: −Σ log softmax over the not-yet-ranked (torch)', (_, c) => {
    const offsets = i32(c.offsets)
    const grouping = c.top1
      ? { chosen: Int32Array.from({ length: offsets.length - 1 }, (_, n) => c.ranking[offsets[n]]) }
      : { ranking: i32(c.ranking) }
    const r = on(backend, () => rk.preferenceLoss({
      logp: f64(c.logp), refLogp: f64(c.refLogp), offsets, ...grouping, type: 'plackett-luce', beta: c.beta, refGrad: true,
    }))
    expectGolden(r, c.expected, ['loss', 'gradLogp', 'gradRefLogp'])
  })

  it.each(cases('pairwise'))('pairwise types over K > 2, case %s: chosen vs each other / every ranked pair (torch)', (_, c) => {
    const offsets = i32(c.offsets)
    const grouping = c.useRanking
      ? { ranking: i32(c.ranking) }
      : { chosen: Int32Array.from({ length: offsets.length - 1 }, (_, n) => c.ranking[offsets[n]]) }
    const r = on(backend, () => rk.preferenceLoss({ logp: f64(c.logp), refLogp: f64(c.refLogp), offsets, ...grouping, type: c.type, beta: c.beta }))
    expectGolden(r, c.expected, ['loss', 'gradLogp'])
  })

  it.each(cases('sequenceLogProbs'))('sequenceLogProbs, case %s: masked sum / mean and the scattered gradient (torch)', (_, c) => {
    const r = on(backend, () => rk.sequenceLogProbs({
      logp: rk.tensor(f64(c.logp), [c.B, c.T]), mask: f64(c.mask), reduction: c.reduction, gradSeq: f64(c.gradSeq),
    }))
    expectGolden(r, c.expected, ['seqLogp', 'lengths', 'gradLogp'])
  })
})

// ---- identities ----

describe('preference identities', () => {
  const r = rng(SEED)
  const N = 9
  const logp = r.f64(2 * N, 8), refLogp = r.f64(2 * N, 8)
  const chosen = r.ints(N, 2)
  const ranking = Int32Array.from({ length: 2 * N }, (_, i) => (i % 2 === 0 ? chosen[i >> 1] : 1 - chosen[i >> 1]))

  it.each(HOST_BACKENDS)(`Plackett–Luce at K = 2 is DPO exactly, with chosen or a ranking (seed ${SEED}, %s)`, (backend) => {
    const dpo = on(backend, () => rk.preferenceLoss({ logp, refLogp, K: 2, chosen, beta: 0.3, refGrad: true }))
    for (const grouping of [{ chosen }, { ranking }]) {
      const pl = on(backend, () => rk.preferenceLoss({ logp, refLogp, K: 2, ...grouping, type: 'plackett-luce', beta: 0.3, refGrad: true }))
      const error = parityError(pl, dpo)
      if (error !== null) expect.fail(error)
    }
  })

  it.each(HOST_BACKENDS)(`top-1 Plackett–Luce is rewardLoss on the implicit rewards (ragged K = 1..6, seed ${SEED}, %s)`, (backend) => {
    const Ks = [3, 1, 6, 2, 5, 4]
    const offsets = Int32Array.from([0, ...Ks.map((_, n) => Ks.slice(0, n + 1).reduce((a, b) => a + b))])
    const total = offsets[Ks.length]
    const lp = r.f64(total, 5), ref = r.f64(total, 5)
    const ch = Int32Array.from(Ks, (k) => r.int(k))
    const beta = 0.7
    const pl = on(backend, () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: ch, type: 'plackett-luce', beta }))
    const scores = Float64Array.from(lp, (x, i) => beta * (x - ref[i]))
    const rw = on(backend, () => rk.rewardLoss({ scores, offsets, chosen: ch }))
    expectClose(pl.loss, rw.loss, { atol: 1e-6, rtol: 1e-5 }, 'loss')
    expectClose(pl.gradLogp, rw.gradScores.map((g) => beta * g), { atol: 1e-6, rtol: 1e-5 }, 'gradLogp')
    expect(pl.accuracy).toBeCloseTo(rw.accuracy, 6)
    expect(pl.count).toBe(rw.count)
  })

  it.each(HOST_BACKENDS)('reductions: sum = Σ losses = count × mean; gradRefLogp = −gradLogp; the async form agrees (%s)', async (backend) => {
    const o = { logp, refLogp, K: 2, chosen, type: 'robust' as const, labelSmoothing: 0.2, beta: 0.4, refGrad: true }
    const [mean, sum, none] = on(backend, () => [rk.preferenceLoss(o), rk.preferenceLoss({ ...o, reduction: 'sum' }), rk.preferenceLoss({ ...o, reduction: 'none' })])
    expectClose(sum.loss, none.losses!.reduce((a, b) => a + b, 0), F32, 'sum')
    expectClose(mean.loss * mean.count, sum.loss, F32, 'mean × count')
    expect(Array.from(sum.gradRefLogp!)).toEqual(Array.from(sum.gradLogp, (g) => -g + 0))
    rk.setBackend(backend)
    try {
      expect(await rk.preferenceLossAsync(o)).toEqual(mean)
    } finally {
      rk.setBackend('auto')
    }
  })

  it.each(HOST_BACKENDS)('ignored and single-candidate prompts count for nothing (%s)', (backend) => {
    const lp = Float64Array.of(-3, -5, -4, -2, -9, -1, -6), ref = Float64Array.of(-3.5, -4, -4, -3, -9, -2, -5)
    const offsets = Int32Array.of(0, 2, 3, 5, 7)
    const all = on(backend, () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: Int32Array.of(0, 0, -100, 1), reduction: 'none' }))
    expect(all.count).toBe(2)
    expect(Array.from(all.losses!.subarray(1, 3))).toEqual([0, 0])
    expect(Array.from(all.gradLogp.subarray(2, 5))).toEqual([0, 0, 0])
    const two = on(backend, () => rk.preferenceLoss({ logp: lp.filter((_, i) => i < 2 || i >= 5), refLogp: ref.filter((_, i) => i < 2 || i >= 5), K: 2, chosen: Int32Array.of(0, 1) }))
    expectClose(all.losses![0] / 2 + all.losses![3] / 2, two.loss, F32, 'mean over counted prompts')
  })
})

// ---- finite differences of the float64 kernels ----

type Grouping = 'chosen' | 'ranking'
const FD_CASES: [string, rk.PreferenceType, Grouping, boolean][] = []
for (const type of [...PAIRWISE, 'plackett-luce'] as const) {
  for (const grouping of ['chosen', 'ranking'] as const) {
    for (const lengths of [false, true]) if (type !== 'simpo' || lengths) FD_CASES.push([`${type} ${grouping}${lengths ? ' lengths' : ''}`, type, grouping, lengths])
  }
}

describe('preference gradients: finite differences of the float64 reference', () => {
  it.each(FD_CASES)('preferenceLoss %s (ragged K = 1..5)', (_, type, grouping, withLengths) => {
    const r = rng(4242)
    const offsets = Int32Array.of(0, 2, 5, 6, 10, 15)
    const total = 15, N = 5
    const logp = Float64Array.from(r.f64(total, 3), (x) => x - 20)
    const ref = type === 'simpo' ? null : Float64Array.from(logp, (x) => x + r.normal() * 2)
    const len = withLengths ? Float64Array.from({ length: total }, () => 1 + r.int(20)) : null
    const chosen = grouping === 'chosen' ? Int32Array.from({ length: N }, (_, n) => r.int(offsets[n + 1] - offsets[n])) : null
    let ranking: Int32Array | null = null
    if (grouping === 'ranking') {
      ranking = new Int32Array(total)
      for (let n = 0; n < N; n++) {
        const K = offsets[n + 1] - offsets[n]
        const perm = Array.from({ length: K }, (_, i) => i).sort(() => r.uniform() - 0.5)
        ranking.set(perm, offsets[n])
      }
    }
    const o: PreferenceKernelOptions = {
      type, beta: type === 'ipo' ? 0.5 : 0.3, labelSmoothing: type === 'robust' ? 0.2 : type === 'dpo' || type === 'simpo' ? 0.1 : 0,
      gamma: type === 'simpo' ? 0.4 : 0, chosen, ranking, reduction: 'mean', ignoreIndex: -100,
    }
    const out = () => [new Float64Array(total), new Float64Array(total), new Float64Array(total), new Float64Array(N)] as const
    const loss = () => { const [w, g, gr, l] = out(); return preferenceLossKernel(logp, ref, len, offsets, o, w, g, gr, l).loss }
    const [w, grad, gradRef, l] = out()
    preferenceLossKernel(logp, ref, len, offsets, o, w, grad, ref === null ? null : gradRef, l)
    expect(grad.some((g) => g !== 0)).toBe(true)
    expectGradient(grad, numericGradient(loss, logp), 'd/dlogp')
    if (ref !== null) expectGradient(gradRef, numericGradient(loss, ref), 'd/drefLogp')
  })

  it.each(['sum', 'mean'] as const)('sequenceLogProbs %s: gradLogp is d(Σ_s gradSeq_s · seqLogp_s)/dlogp', (reduction) => {
    const r = rng(77)
    const layout = { tokens: 12, offsets: Int32Array.of(0, 5, 5, 9, 12), width: 5 }
    const logp = r.f64(12, 2), gradSeq = r.f64(4, 1), mask = r.mask(12)
    const seq = new Float64Array(4), lengths = new Float64Array(4), grad = new Float64Array(12)
    const f = () => { sequenceLogProbsKernel(logp, layout, mask, reduction, null, seq, lengths, null); return seq.reduce((a, s, i) => a + s * gradSeq[i], 0) }
    sequenceLogProbsKernel(logp, layout, mask, reduction, gradSeq, seq, lengths, grad)
    expectGradient(grad, numericGradient(f, logp), 'd/dlogp')
  })
})

// ---- parity: each native backend against js on fresh random inputs ----

type Dtype = 'float32' | 'float64' | 'bfloat16'
const DTYPES: Dtype[] = ['float32', 'float64', 'bfloat16']
const SHAPES: [string, number[]][] = [['K = 2 × 33', Array(33).fill(2)], ['ragged K = 1..7', [3, 1, 7, 2, 5, 4, 6, 2, 3]], ['K = 4 × 200', Array(200).fill(4)]]
const floats = (x: Float64Array, dtype: Dtype) =>
  dtype === 'float64' ? x : dtype === 'float32' ? Float32Array.from(x) : rk.tensor(rk.encodeFloats(x, 'bfloat16'), [x.length], { dtype: 'bfloat16' })

const PARITY_CASES: [string, Dtype, number[], rk.PreferenceType, Grouping][] = []
for (const dtype of DTYPES) {
  for (const [shape, Ks] of SHAPES) {
    for (const type of [...PAIRWISE, 'plackett-luce'] as const) {
      for (const grouping of ['chosen', 'ranking'] as const) PARITY_CASES.push([`${dtype} ${shape} ${type} ${grouping}`, dtype, Ks, type, grouping])
    }
  }
}

describe.each(NATIVE_BACKENDS)('preference parity, %s vs js', (backend) => {
  it.each(PARITY_CASES)(`preferenceLoss %s (seed ${SEED})`, (_, dtype, Ks, type, grouping) => {
    const r = rng(SEED + Ks.length)
    const offsets = Int32Array.from([0, ...Ks.map((_, n) => Ks.slice(0, n + 1).reduce((a, b) => a + b))])
    const total = offsets[Ks.length]
    const logp = Float64Array.from(r.f64(total, 4), (x) => x - 30)
    const ref = Float64Array.from(logp, (x) => x + r.normal() * 3)
    const lengths = Float64Array.from({ length: total }, () => r.int(40))
    const chosen = Int32Array.from(Ks, (k) => (r.uniform() < 0.1 ? -100 : r.int(k)))
    const ranking = new Int32Array(total)
    Ks.forEach((K, n) => ranking.set(Array.from({ length: K }, (_, i) => i).sort(() => r.uniform() - 0.5), offsets[n]))
    const simpo = type === 'simpo'
    const options: rk.PreferenceLossOptions = {
      logp: floats(logp, dtype), offsets, type, beta: 0.2,
      ...(simpo ? { lengths: floats(lengths, dtype), gamma: 0.3 } : { refLogp: floats(ref, dtype), refGrad: true }),
      ...(type === 'ipo' ? { lengths: floats(lengths, dtype) } : {}),
      ...(type === 'dpo' ? { labelSmoothing: 0.1 } : type === 'robust' ? { labelSmoothing: 0.25 } : {}),
      ...(grouping === 'chosen' ? { chosen } : { ranking }),
      reduction: r.uniform() < 0.5 ? 'none' : 'mean',
    }
    const expected = on('js', () => rk.preferenceLoss(options))
    const actual = on(backend, () => rk.preferenceLoss(options))
    const error = parityError(actual, expected)
    if (error !== null) expect.fail(error)
  })

  it.each(DTYPES.flatMap((d) => (['sum', 'mean'] as const).map((m) => [`${d} ${m}`, d, m] as const)))(`sequenceLogProbs %s, packed and [B, T] (seed ${SEED})`, (_, dtype, reduction) => {
    const r = rng(SEED + 1)
    const seqLengths = Int32Array.of(17, 0, 300, 1, 64)
    const tokens = 382
    const logp = Float64Array.from(r.f64(tokens, 2), (x) => -Math.abs(x))
    const mask = r.mask(tokens)
    const gradSeq = r.f64(5, 1)
    for (const layout of [{ seqLengths }, {}]) {
      const input = Object.keys(layout).length ? floats(logp, dtype) : rk.tensor(dtype === 'bfloat16' ? rk.encodeFloats(logp, 'bfloat16') : dtype === 'float32' ? Float32Array.from(logp) : logp, [2, 191], { dtype })
      const o = { logp: input, mask, reduction, ...layout, gradSeq: Object.keys(layout).length ? gradSeq : gradSeq.subarray(0, 2) }
      const error = parityError(on(backend, () => rk.sequenceLogProbs(o)), on('js', () => rk.sequenceLogProbs(o)))
      if (error !== null) expect.fail(error)
    }
  })
})

// ---- bad input ----

describe('preference bad input: clear errors', () => {
  const lp = Float32Array.of(-1, -2, -3, -4, -5), ref = Float32Array.of(-1, -2, -3, -4, -5)
  const offsets = Int32Array.of(0, 2, 5)
  const bad: [string, () => unknown, new (...a: any[]) => Error, RegExp][] = [
    ['a ranking that repeats a candidate', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, ranking: Int32Array.of(1, 0, 2, 2, 0) }), RangeError, /ranking of prompt 1 must be a permutation of 0\.\.2 \(each candidate once\), got 2 twice/],
    ['a ranking index outside its prompt', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, ranking: Int32Array.of(0, 2, 0, 1, 2) }), RangeError, /ranking\[1\] must be a candidate of prompt 0, in \[0, 2\), got 2/],
    ['a ranking of the wrong length', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, ranking: Int32Array.of(0, 1, 0) }), RangeError, /ranking.length must be 5, got 3/],
    ['a prompt with no candidates (K_n = 0)', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets: Int32Array.of(0, 2, 2, 5), chosen: Int32Array.of(0, 0, 0) }), RangeError, /prompt 1 has no candidates/],
    ['chosen out of range', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: Int32Array.of(2, 0) }), RangeError, /chosen\[0\] must be in \[0, 2\) or equal to ignoreIndex \(-100\), got 2/],
    ['both chosen and ranking', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: Int32Array.of(0, 0), ranking: Int32Array.of(0, 1, 0, 1, 2) }), TypeError, /chosen must be given, or ranking, but not both/],
    ['no reference for dpo', () => rk.preferenceLoss({ logp: lp, offsets, chosen: Int32Array.of(0, 0) }), TypeError, /refLogp must be the reference's sequence log-probs \(type 'dpo'\)/],
    ['a reference for simpo', () => rk.preferenceLoss({ logp: lp, refLogp: ref, lengths: lp, offsets, chosen: Int32Array.of(0, 0), type: 'simpo' }), TypeError, /refLogp must be absent for type 'simpo'/],
    ['simpo without lengths', () => rk.preferenceLoss({ logp: lp, offsets, chosen: Int32Array.of(0, 0), type: 'simpo' }), TypeError, /lengths must be each candidate's token count/],
    ['gamma with dpo', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: Int32Array.of(0, 0), gamma: 1 }), TypeError, /gamma must be absent/],
    ['labelSmoothing with ipo', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: Int32Array.of(0, 0), type: 'ipo', labelSmoothing: 0.1 }), TypeError, /labelSmoothing must be absent for type 'ipo'/],
    ['robust with labelSmoothing 0.5', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: Int32Array.of(0, 0), type: 'robust', labelSmoothing: 0.5 }), RangeError, /labelSmoothing must be a finite number ≥ 0 < 0.5, got 0.5/],
    ['beta 0', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: Int32Array.of(0, 0), beta: 0 }), RangeError, /beta must be a finite number > 0/],
    ['an unknown type', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: Int32Array.of(0, 0), type: 'kto' as never }), RangeError, /type must be one of/],
    ['a negative length', () => rk.preferenceLoss({ logp: lp, refLogp: ref, offsets, chosen: Int32Array.of(0, 0), lengths: Float32Array.of(1, 2, -3, 4, 5) }), RangeError, /lengths\[2\] must be a finite number ≥ 0, got -3/],
    ['sequenceLogProbs, gradSeq of the wrong length', () => rk.sequenceLogProbs({ logp: rk.tensor(new Float32Array(6), [2, 3]), gradSeq: new Float32Array(3) }), RangeError, /gradSeq.length must be 2, got 3/],
    ['sequenceLogProbs, reduction none', () => rk.sequenceLogProbs({ logp: new Float32Array(6), reduction: 'none' as never }), RangeError, /reduction must be one of/],
  ]
  it.each(bad)('%s', (_, call, error, message) => {
    for (const backend of HOST_BACKENDS) expect(() => on(backend, call)).toThrow(error)
    expect(call).toThrow(message)
  })
})

// ---- the CUDA kernels' sums, emulated (float64 in JS is the kernels' double) ----

/** block_sum of common.cuh over one block's per-thread values: xor-butterfly per warp, then over the warps. */
function blockSum(v: number[]): number {
  const warp = (x: number[]) => {
    let w = x.slice()
    for (let o = 16; o > 0; o >>= 1) w = w.map((y, lane) => y + w[lane ^ o])
    return w[0]
  }
  const warps: number[] = []
  for (let w = 0; w < v.length; w += 32) warps.push(warp(v.slice(w, w + 32)))
  return warp(Array.from({ length: 32 }, (_, lane) => (lane < warps.length ? warps[lane] : 0)))
}

/** grid_sum of common.cuh: block sums, then the last block sums the partials by a strided loop and block_sum. */
function gridSum(v: number[], threads: number): number {
  const partials: number[] = []
  for (let b = 0; b < v.length; b += threads) partials.push(blockSum(Array.from({ length: threads }, (_, t) => v[b + t] ?? 0)))
  return blockSum(Array.from({ length: threads }, (_, t) => {
    let s = 0
    for (let i = t; i < partials.length; i += threads) s += partials[i]
    return s
  }))
}

describe('the CUDA preference kernels, emulated on the CPU', () => {
  it('sequence_kernel: 256 strided threads per sequence, double sums, block_sum; equals the reference', () => {
    const r = rng(SEED + 3)
    const seqLengths = Int32Array.of(1, 0, 255, 256, 257, 3000)
    const tokens = seqLengths.reduce((a, b) => a + b, 0)
    const logp = Float32Array.from(r.f64(tokens, 3), (x) => -Math.abs(x)), mask = r.mask(tokens), gradSeq = r.f64(seqLengths.length)
    for (const reduction of ['sum', 'mean'] as const) {
      const want = on('js', () => rk.sequenceLogProbs({ logp, mask, seqLengths, reduction, gradSeq }))
      let begin = 0
      const seqLogp: number[] = [], lengths: number[] = [], grad = new Float32Array(tokens)
      for (const n of seqLengths) {
        const sums = new Array(256).fill(0), counts = new Array(256).fill(0)
        for (let t = 0; t < 256; t++) for (let i = begin + t; i < begin + n; i += 256) if (mask[i]) { sums[t] += logp[i]; counts[t] += 1 }
        const count = blockSum(counts)
        const scale = reduction === 'mean' ? 1 / Math.max(1, count) : 1
        seqLogp.push(Math.fround(blockSum(sums) * scale))
        lengths.push(count)
        for (let i = begin; i < begin + n; i++) grad[i] = mask[i] ? Math.fround(Math.fround(gradSeq[seqLogp.length - 1]) * scale) : 0
        begin += n
      }
      expectClose(seqLogp, want.seqLogp, F32, `${reduction} seqLogp`)
      expect(lengths).toEqual(Array.from(want.lengths))
      expectClose(grad, want.gradLogp!, F32, `${reduction} gradLogp`)
    }
  })

  it('preference_prompt_kernel: 128 threads per block, grid sums of the per-prompt terms in double; equals the reference', () => {
    const r = rng(SEED + 4)
    const Ks = Array.from({ length: 1000 }, () => 1 + r.int(6))
    const offsets = Int32Array.from([0, ...Ks.map((_, n) => Ks.slice(0, n + 1).reduce((a, b) => a + b))])
    const total = offsets[Ks.length]
    const logp = Float64Array.from(r.f64(total, 3), (x) => Math.fround(x - 20)), ref = Float64Array.from(logp, (x) => Math.fround(x + r.normal()))
    const chosen = Int32Array.from(Ks, (k) => r.int(k))
    const o: PreferenceKernelOptions = { type: 'dpo', beta: 0.3, labelSmoothing: 0.1, gamma: 0, chosen, ranking: null, reduction: 'mean', ignoreIndex: -100 }
    const want = on('js', () => rk.preferenceLoss({ logp, refLogp: ref, offsets, chosen, beta: 0.3, labelSmoothing: 0.1 }))
    // the per-prompt terms (the function the CUDA thread runs is the CPU's, rlhf/preference.h), then the grid sums
    const terms = Ks.map((_, n) => {
      const a = offsets[n], b = offsets[n + 1]
      const one = preferenceLossKernel(logp.subarray(a, b), ref.subarray(a, b), null, Int32Array.of(0, b - a), { ...o, chosen: chosen.subarray(n, n + 1), reduction: 'sum' },
        new Float64Array(b - a), new Float64Array(b - a), null, new Float64Array(1))
      return one.count === 0 ? [0, 0, 0, 0, 0] : [1, one.loss, one.chosenReward, one.rejectedReward, one.accuracy]
    })
    const [count, loss, chosenSum, rejectedSum, correct] = [0, 1, 2, 3, 4].map((k) => gridSum(terms.map((t) => t[k]), 128))
    expect(count).toBe(want.count)
    expectClose(Math.fround(loss / count), want.loss, F32, 'loss')
    expectClose(Math.fround(chosenSum / count), want.chosenReward, F32, 'chosenReward')
    expectClose(Math.fround(rejectedSum / count), want.rejectedReward, F32, 'rejectedReward')
    expectClose(Math.fround((chosenSum - rejectedSum) / count), want.margin, F32, 'margin')
    expectClose(Math.fround(correct / count), want.accuracy, F32, 'accuracy')
  })
})
