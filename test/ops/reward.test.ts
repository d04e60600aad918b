/**
 * The reward family (src/reward.ts: rewardLoss): parity of each native backend with the js reference
 * (test/parity.ts), finite-difference gradients of the float64 reference, PyTorch and TRL golden values, the
 * seed's identities and edge cases.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { rewardLossKernel } from '../../src/reference/reward.js'
import { HOST_BACKENDS, useBackend } from '../backends.js'
import { F32, combos, expectClose, expectKernelGradient, f64, floats, golden, label, rng } from '../helpers.js'
import { compare, optionCases, describeParity, SEED, titled } from '../parity.js'

/** The parity batch: 7 prompts of ragged K (one ignored), hard and soft labels, margins; the same every case. */
function rewardBatch() {
  const r = rng(SEED + 4)
  const sizes = [3, 1, 5, 2, 4, 2, 7]
  const offsets = Int32Array.from([0, ...sizes.map((_, i) => sizes.slice(0, i + 1).reduce((a, b) => a + b, 0))])
  const total = offsets[sizes.length]
  const scores = r.f32(total, 2)
  const chosen = Int32Array.from(sizes, (k) => r.int(k))
  chosen[4] = -100
  const targetProbs = new Float32Array(total)
  for (let n = 0; n < sizes.length; n++) {
    let s = 0
    for (let i = offsets[n]; i < offsets[n + 1]; i++) s += (targetProbs[i] = r.uniform())
    for (let i = offsets[n]; i < offsets[n + 1]; i++) targetProbs[i] /= s
  }
  return { offsets, total, scores, chosen, targetProbs, margins: r.f32(total, 0.5) }
}

describeParity('reward', () => {
  type Batch = ReturnType<typeof rewardBatch>
  const labels = [{ label: 'chosen', of: (b: Batch) => ({ chosen: b.chosen }) }, { label: 'targetProbs', of: (b: Batch) => ({ targetProbs: b.targetProbs }) }]
  const extras = [
    { label: '', of: () => ({}) }, { label: 'margins', of: (b: Batch) => ({ margins: b.margins }) },
    { label: 'centerCoef sum', of: () => ({ centerCoef: 0.01, reduction: 'sum' as const }) }, { label: 'none', of: () => ({ reduction: 'none' as const }) },
  ]
  const variants: { label: string; options: (b: Batch) => object }[] = combos({ y: labels, extra: extras }).map(({ y, extra }) => ({
    label: `${y.label} ${extra.label}`.trim(), options: (b: Batch) => ({ scores: b.scores, offsets: b.offsets, ...y.of(b), ...extra.of(b) }),
  }))
  variants.push({ label: 'bf16 scores', options: (b) => ({ scores: rk.tensor(rk.encodeFloats(b.scores, 'bfloat16'), [b.total], { dtype: 'bfloat16' }), offsets: b.offsets, chosen: b.chosen }) })

  it.each(titled('rewardLoss $label on $backend', optionCases(variants)))('%s', (_, { backend, variant }) => {
    compare(backend, rk.rewardLoss, variant.options(rewardBatch()) as rk.RewardLossOptions, 'rewardLoss')
  })
})

describe('reward finite-difference gradients (float64 reference)', () => {
  it.each(combos({ label: ['hard', 'soft'] as const, margins: [false, true], centerCoef: [0, 0.05], reduction: ['mean', 'sum'] as const })
    .map((c) => [label(c), c] as const))('rewardLoss %s', (_, c) => {
    const r = rng(3)
    const offsets = Int32Array.of(0, 3, 5, 6, 10, 12) // K = 3, 2, 1 (excluded), 4, 2
    const total = 12, N = 5
    const R = r.f64(total, 1.5)
    const chosen = Int32Array.of(2, 0, 0, 3, -100)
    let Y: Float64Array | null = null
    if (c.label === 'soft') {
      Y = f64(total)
      for (let n = 0; n < N; n++) {
        let s = 0
        for (let i = offsets[n]; i < offsets[n + 1]; i++) s += (Y[i] = r.uniform())
        for (let i = offsets[n]; i < offsets[n + 1]; i++) Y[i] /= s
      }
    }
    const o = {
      chosen: c.label === 'hard' ? chosen : null, targetProbs: Y, margins: c.margins ? r.f64(total, 0.5) : null,
      centerCoef: c.centerCoef, reduction: c.reduction, ignoreIndex: -100,
    }
    expectKernelGradient(R, total, (grad) => rewardLossKernel(R, offsets, o, f64(total), grad, f64(N)).loss, 'dscores')
  })
})

describe('reward golden values from PyTorch (js reference)', () => {
  useBackend('js')

  it('rewardLoss with ragged K matches F.cross_entropy over −inf padded scores', () => {
    const [c] = golden('rewardLoss')
    const offsets = Int32Array.from([0, ...c.Ks.map((_: number, i: number) => c.Ks.slice(0, i + 1).reduce((a: number, b: number) => a + b, 0))])
    const r = rk.rewardLoss({ scores: floats(c.scores), offsets, chosen: Int32Array.from(c.chosen) })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.gradScores, c.expected.gradScores, F32, 'gradScores')
    expectClose(r.probs, c.expected.probs, F32, 'probs')
  })

  it('rewardLoss at K = 2 with margins and centering equals TRL RewardTrainer', () => {
    const [c] = golden('rewardPairwise')
    const n = c.chosenScores.length
    const scores = new Float64Array(2 * n), margins = new Float64Array(2 * n)
    for (let i = 0; i < n; i++) {
      scores[2 * i] = c.chosenScores[i]
      scores[2 * i + 1] = c.rejectedScores[i]
      margins[2 * i + 1] = c.margin[i]
    }
    const r = rk.rewardLoss({ scores, K: 2, chosen: new Int32Array(n), margins, centerCoef: c.centerCoef })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    expectClose(r.gradScores.filter((_, i) => i % 2 === 0), c.expected.gradChosen, F32, 'gradChosen')
    expectClose(r.gradScores.filter((_, i) => i % 2 === 1), c.expected.gradRejected, F32, 'gradRejected')
    expectClose(r.accuracy, c.expected.accuracy, { atol: 0, rtol: 0 }, 'accuracy')
  })
})

describe('reward identities of the seed (js reference)', () => {
  useBackend('js')

  it('reward gradient = (P − onehot)/N', () => {
    const r = rng(11)
    const offsets = Int32Array.of(0, 4, 6, 9, 13)
    const scores = r.f64(13, 2)
    const chosen = Int32Array.of(1, 0, 2, 3)
    const out = rk.rewardLoss({ scores, offsets, chosen })
    const expected = new Float64Array(13)
    for (let n = 0; n < 4; n++) {
      for (let i = offsets[n]; i < offsets[n + 1]; i++) expected[i] = (out.probs[i] - (i - offsets[n] === chosen[n] ? 1 : 0)) / 4
    }
    expectClose(out.gradScores, expected, F32, 'gradScores')
    // and P is the softmax of each prompt's scores
    for (let n = 0; n < 4; n++) {
      let s = 0
      for (let i = offsets[n]; i < offsets[n + 1]; i++) s += Math.exp(scores[i])
      for (let i = offsets[n]; i < offsets[n + 1]; i++) expectClose(out.probs[i], Math.exp(scores[i]) / s, F32, 'probs')
    }
  })

  it('a one-hot soft label gives the hard-label loss and gradient', () => {
    const r = rng(12)
    const scores = r.f64(12, 2)
    const chosen = Int32Array.of(2, 0, 1)
    const targetProbs = new Float64Array(12)
    chosen.forEach((b, n) => (targetProbs[4 * n + b] = 1))
    const hard = rk.rewardLoss({ scores, K: 4, chosen })
    const soft = rk.rewardLoss({ scores, K: 4, targetProbs })
    expectClose(soft.loss, hard.loss, F32, 'loss')
    expectClose(soft.gradScores, hard.gradScores, F32, 'gradScores')
    expect(soft.accuracy).toBe(hard.accuracy)
  })

  it('K = 2 with a margin equals −log σ(r_c − r_r − m)', () => {
    const r = rng(13)
    const n = 16
    const scores = r.f64(2 * n, 3)
    const margins = new Float64Array(2 * n)
    const chosen = Int32Array.from({ length: n }, () => r.int(2))
    let expected = 0
    for (let i = 0; i < n; i++) {
      const m = r.uniform()
      const c = chosen[i]
      margins[2 * i + 1 - c] = m
      const x = scores[2 * i + c] - scores[2 * i + 1 - c] - m
      expected += x > 0 ? Math.log1p(Math.exp(-x)) : -x + Math.log1p(Math.exp(x)) // −log σ(x), stable
    }
    expectClose(rk.rewardLoss({ scores, K: 2, chosen, margins }).loss, expected / n, F32, 'loss')
  })
})

describe.each(HOST_BACKENDS)('reward edge cases on %s', (backend) => {
  useBackend(backend)

  it('a one-candidate prompt is excluded like an ignored one', () => {
    const scores = Float64Array.of(1, 2, 0.5, 3, 1, 4)
    const withSingle = rk.rewardLoss({ scores, offsets: Int32Array.of(0, 2, 3, 6), chosen: Int32Array.of(0, 0, 2) })
    const withIgnored = rk.rewardLoss({ scores, offsets: Int32Array.of(0, 2, 3, 6), chosen: Int32Array.of(0, -100, 2) })
    const without = rk.rewardLoss({ scores: Float64Array.of(1, 2, 3, 1, 4), offsets: Int32Array.of(0, 2, 5), chosen: Int32Array.of(0, 2) })
    expect(withSingle.count).toBe(2)
    expect(withSingle.loss).toBe(without.loss)
    expect(withIgnored.loss).toBe(without.loss)
    expect(withSingle.gradScores[2]).toBe(0)
    expect(withSingle.accuracy).toBe(without.accuracy)
    expect(withSingle.probs[2]).toBe(1)
  })
})
