/** The reference's exp: within 5e-16 relative of Math.exp, exact at the special values. */
import { describe, expect, it } from 'vitest'
import { exp } from '../src/reference/exp.js'
import { rng } from './helpers.js'

describe('reference exp', () => {
  it('agrees with Math.exp to 5e-16 relative over [−745, 709]', () => {
    const r = rng(41)
    let worst = 0
    for (let i = 0; i < 200_000; i++) {
      const x = -745 + r.uniform() * 1454
      const e = Math.exp(x)
      if (e > 0) worst = Math.max(worst, Math.abs(exp(x) - e) / e)
    }
    for (let i = 0; i < 100_000; i++) {
      const x = (r.uniform() - 0.5) * 20
      worst = Math.max(worst, Math.abs(exp(x) - Math.exp(x)) / Math.exp(x))
    }
    expect(worst).toBeLessThan(5e-16)
  })

  it('handles the special values', () => {
    expect(exp(0)).toBe(1)
    expect(exp(-Infinity)).toBe(0)
    expect(exp(Infinity)).toBe(Infinity)
    expect(exp(NaN)).toBeNaN()
    expect(exp(800)).toBe(Infinity)
    expect(exp(-800)).toBe(0)
  })
})
