/** Test helpers: a seeded generator, closeness checks that report the worst element, finite differences. */
import { readFileSync } from 'node:fs'
import { expect } from 'vitest'
import { aggregationOptions } from '../src/aggregate.js'
import type { AggregationMode } from '../src/choices.js'
import { tokenLayout } from '../src/tokens.js'
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

// ---- shared by the family suites (test/ops/<family>.test.ts) ----

export const f64 = (n: number) => new Float64Array(n)

/** Every combination of the axes' values, as objects (the rows of an it.each). */
export const combos = <T extends Record<string, readonly unknown[]>>(axes: T): { [K in keyof T]: T[K][number] }[] =>
  Object.entries(axes).reduce<Record<string, unknown>[]>(
    (acc, [k, vs]) => acc.flatMap((c) => vs.map((v) => ({ ...c, [k]: v }))), [{}],
  ) as never
/** A combination in a title: `key=value …`. */
export const label = (c: object) => Object.entries(c).map(([k, v]) => `${k}=${v}`).join(' ')

/** The finite-difference tests' per-token batch: B = 3 sequences of T = 5, sequence 1 fully masked. */
export function gradientTokens() {
  const B = 3, T = 5, M = B * T
  const layout = tokenLayout('t', 'x', [B, T], undefined)
  const mask = Uint8Array.of(1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1) // sequence 1 fully masked
  const aggs = (mode: AggregationMode, extra = {}) => aggregationOptions('t', { aggregation: mode, ...extra })
  return { B, T, M, layout, mask, aggs }
}

interface GoldenCase { op: string; expected: Record<string, any>; [k: string]: any }
let goldenFile: { cases: GoldenCase[] } | null = null
/** The PyTorch golden cases of one op (test/fixtures/golden.json, from test/fixtures/generate-golden.py). */
export function golden(op: string): GoldenCase[] {
  goldenFile ??= JSON.parse(readFileSync(new URL('./fixtures/golden.json', import.meta.url), 'utf8'))
  return goldenFile!.cases.filter((c) => c.op === op)
}
/** Golden data (numbers) as float64 inputs. */
export const floats = (x: number[]) => Float64Array.from(x)

/**
 * The gradient a kernel writes against central differences of the loss it returns, wrt x: `run(grad)`
 * computes the loss and writes d loss/d x into grad (size elements).
 */
export function expectKernelGradient(x: Float64Array, size: number, run: (grad: Float64Array) => number, what: string) {
  const grad = f64(size)
  run(grad)
  expectGradient(grad, numericGradient(() => run(f64(size)), x), what)
}
