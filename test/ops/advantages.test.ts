/**
 * The advantages family (src/advantages.ts: gae, whiten, groupAdvantages): parity of each native backend
 * with the js reference (test/parity.ts), verl and GRPO/RLOO golden values, and precision on each host backend.
 */
import { describe, it } from 'vitest'
import * as rk from '../../src/index.js'
import { PARITY } from '../../src/tolerance.js'
import { HOST_BACKENDS, useBackend } from '../backends.js'
import { F32, expectClose, floats, golden, rng } from '../helpers.js'
import { compare, optionCases, describeParity, SEED, titled } from '../parity.js'

/** The parity batch: B = 5 sequences of T = 41 with a mask; the same every case. */
function advantageBatch() {
  const r = rng(SEED + 6)
  const B = 5, T = 41, M = B * T
  const mask = r.mask(M, 0.8)
  const rewards = rk.tensor(r.f32(M), [B, T]), values = r.f32(M)
  return { B, mask, rewards, values, lastValues: r.f32(B), scores: r.f32(28), offsets: Int32Array.of(0, 4, 5, 12, 20, 28) }
}

describeParity('advantages', () => {
  const gae = [[1, 0.95], [0.99, 1], [0.9, 0]].map(([gamma, lambda]) => ({ label: `γ=${gamma} λ=${lambda}`, gamma, lambda }))
  it.each(titled('gae $label on $backend', optionCases(gae)))('%s', (_, { backend, variant: { gamma, lambda } }) => {
    const x = advantageBatch()
    compare(backend, rk.gae, { rewards: x.rewards, values: x.values, mask: x.mask, gamma, lambda, lastValues: x.lastValues }, 'gae')
  })

  const whiten = [true, false].flatMap((shiftMean) => [true, false].map((unbiased) => ({ label: `shiftMean=${shiftMean} unbiased=${unbiased}`, shiftMean, unbiased })))
  it.each(titled('whiten $label on $backend', optionCases(whiten)))('%s', (_, { backend, variant: { shiftMean, unbiased } }) => {
    const x = advantageBatch()
    compare(backend, rk.whiten, { values: x.values, mask: x.mask, shiftMean, unbiased }, 'whiten')
  })

  it.each(titled('groupAdvantages $label on $backend', optionCases(rk.GROUP_METHODS.map((method) => ({ label: method, method })))))('%s', (_, { backend, variant: { method } }) => {
    const x = advantageBatch()
    compare(backend, rk.groupAdvantages, { scores: x.scores, offsets: x.offsets, method }, 'groupAdvantages')
  })
})

describe('advantages golden values from PyTorch (js reference)', () => {
  useBackend('js')

  it('gae matches verl compute_gae_advantage_return and whiten matches masked_whiten', () => {
    const [c] = golden('gae')
    const mask = floats(c.mask)
    const r = rk.gae({ rewards: rk.tensor(floats(c.rewards), [c.B, c.T]), values: floats(c.values), mask, gamma: c.gamma, lambda: c.lambda })
    const sel = (x: number[]) => x.map((v, i) => (c.mask[i] ? v : 0))
    expectClose(r.advantages, sel(c.expected.advantages), F32, 'advantages')
    expectClose(r.returns, sel(c.expected.returns), F32, 'returns')
    const w = rk.whiten({ values: floats(c.expected.advantages), mask })
    expectClose(w, sel(c.expected.whitened), F32, 'whitened')
  })

  it('groupAdvantages matches GRPO (torch.std) and RLOO, singleton groups 0', () => {
    const [c] = golden('groupAdvantages')
    const offsets = Int32Array.from([0, ...c.sizes.map((_: number, i: number) => c.sizes.slice(0, i + 1).reduce((a: number, b: number) => a + b, 0))])
    expectClose(rk.groupAdvantages({ scores: floats(c.scores), offsets }), c.expected.grpo, F32, 'grpo')
    expectClose(rk.groupAdvantages({ scores: floats(c.scores), offsets, method: 'rloo' }), c.expected.rloo, F32, 'rloo')
  })
})

describe.each(HOST_BACKENDS)('advantages precision on %s (README tolerances against float64 formulas)', (backend) => {
  useBackend(backend)
  const VALUES = PARITY.value
  const GRADS = PARITY.grad

  it('whiten and groupAdvantages of rewards far from 0 (5 ± 0.005, 1000 ± 0.01)', () => {
    for (const [centre, spread] of [[5, 0.005], [1000, 0.01]]) {
      const r = rng(7)
      const x = Float32Array.from({ length: 64 }, () => centre + spread * r.normal())
      const mean = x.reduce((a, b) => a + b, 0) / x.length
      const ss = x.reduce((a, b) => a + (b - mean) ** 2, 0)
      const whitened = Array.from(x, (v) => (v - mean) / Math.sqrt(ss / (x.length - 1) + 1e-8))
      expectClose(rk.whiten({ values: x }), whitened, VALUES, `whiten ${centre}`)
      const grpo = Array.from(x, (v) => (v - mean) / (Math.sqrt(ss / (x.length - 1)) + 1e-6))
      expectClose(rk.groupAdvantages({ scores: x, groupSize: x.length }), grpo, VALUES, `groupAdvantages ${centre}`)
    }
  })
})
