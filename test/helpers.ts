/** Test helpers: a seeded generator, closeness checks that report the worst element, finite differences. */
import { expect } from 'vitest'
import { F32_ROUNDING, closeness, type Tolerance } from '../src/tolerance.js'

/** The package's seeded generator (src/random.ts) with array helpers, so every failure can be replayed from its seed. */
export { rng } from '../src/random.js'
export { closeness, type Tolerance } from '../src/tolerance.js'

export function expectClose(actual: ArrayLike<number> | number, expected: ArrayLike<number> | number, tol: Tolerance, what = 'value') {
  const a = typeof actual === 'number' ? [actual] : actual
  const e = typeof expected === 'number' ? [expected] : expected
  expect(a.length, `${what}: length`).toBe(e.length)
  const { worst, at } = closeness(a, e, tol)
  if (!(worst <= 1)) {
    expect.fail(`${what}[${at}] = ${a[at]}, expected ${e[at]} (error ${worst.toExponential(2)}× the tolerance atol ${tol.atol}, rtol ${tol.rtol})`)
  }
}

/** Tolerance for float32 results of the reference against float64 truth. */
export const F32: Tolerance = F32_ROUNDING

/**
 * Central finite differences of f at x, every coordinate (x is perturbed in place and restored).
 * h is relative to |x_i|, so the truncation error stays far below 1e-6 relative.
 */
export function numericGradient(f: () => number, x: Float64Array, h = 1e-6): Float64Array {
  const g = new Float64Array(x.length)
  for (let i = 0; i < x.length; i++) {
    const xi = x[i]
    const step = h * Math.max(1, Math.abs(xi))
    x[i] = xi + step
    const up = f()
    x[i] = xi - step
    const down = f()
    x[i] = xi
    g[i] = (up - down) / (2 * step)
  }
  return g
}

/** Analytic vs numeric gradient: |a − n| ≤ 1e-6 · max(|a|, |n|, scale), scale = the largest |gradient|·1e-2. */
export function expectGradient(analytic: ArrayLike<number>, numeric: ArrayLike<number>, what: string, rel = 1e-6) {
  let scale = 0
  for (let i = 0; i < numeric.length; i++) scale = Math.max(scale, Math.abs(numeric[i]), Math.abs(analytic[i]))
  const floor = scale * 1e-2 + 1e-12
  for (let i = 0; i < numeric.length; i++) {
    const a = analytic[i]
    const n = numeric[i]
    const err = Math.abs(a - n) / Math.max(Math.abs(a), Math.abs(n), floor)
    if (!(err <= rel)) expect.fail(`${what}: d/dx[${i}] analytic ${a}, numeric ${n}, relative error ${err.toExponential(2)} > ${rel}`)
  }
}
