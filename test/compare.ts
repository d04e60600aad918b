/**
 * Comparing a native backend's result with the js reference's, within the README tolerances: shared by the
 * parity suite (test/parity.test.ts) and the differential fuzz (test/fuzz.test.ts).
 */
import * as rk from '../src/index.js'
import { BACKEND_TOLERANCE } from '../src/cli/parity.js'
import { type Tolerance, closeness } from './helpers.js'

/** Documented in the README: native float32 kernels against the float64-accumulating reference. */
export const PARITY: Record<'value' | 'grad', Tolerance> = BACKEND_TOLERANCE.cpu

/** Everything numeric in a result, flattened: [path, values]. */
export function leaves(x: unknown, path = ''): [string, ArrayLike<number>][] {
  if (typeof x === 'number') return [[path, [x]]]
  if (x instanceof rk.Tensor) return [[path, x.toFloat32Array()]]
  if (ArrayBuffer.isView(x)) return [[path, x as unknown as ArrayLike<number>]]
  if (x && typeof x === 'object') return Object.entries(x).flatMap(([k, v]) => leaves(v, path ? `${path}.${k}` : k))
  return []
}

const isGradient = (path: string) => /^grad/.test(path.split('.').pop()!)

/** Where actual and expected differ beyond the tolerances (NaN and ±inf must match exactly), or null. */
export function parityError(actual: unknown, expected: unknown, overrides: Record<string, Tolerance> = {}): string | null {
  const a = new Map(leaves(actual))
  const e = leaves(expected)
  const fields = (keys: string[]) => keys.sort().join(', ')
  if (fields([...a.keys()]) !== fields(e.map(([k]) => k))) return `result fields ${fields([...a.keys()])}, js reference ${fields(e.map(([k]) => k))}`
  for (const [path, want] of e) {
    const got = a.get(path)!
    if (got.length !== want.length) return `${path}.length = ${got.length}, js reference ${want.length}`
    const tol = overrides[path] ?? (isGradient(path) ? PARITY.grad : PARITY.value)
    const { worst, at } = closeness(got, want, tol)
    if (!(worst <= 1)) return `${path}[${at}] = ${got[at]}, js reference ${want[at]} (${worst.toExponential(2)}× tolerance)`
  }
  return null
}

/**
 * A gradient wrt logits at temperature T is 1/T times a function of z/T: its float32 rounding scales with
 * 1/T too, so atol is PARITY.grad.atol·max(1, 1/T) (README: Tests and tolerances).
 */
export const temperatureGradTolerance = (temperature: number, paths: string[]): Record<string, Tolerance> =>
  Object.fromEntries(paths.map((p) => [p, { atol: PARITY.grad.atol * Math.max(1, 1 / temperature), rtol: PARITY.grad.rtol }]))

/**
 * d KL(p‖q)/d z_p = p (log p − log q − KL)/T: a float32 KL carries an absolute error of about 5e-7·KL (its
 * terms are evaluated in float32), which every element of the gradient inherits, times p/T.
 */
export const klGradPTolerance = (r: { perRow: ArrayLike<number> }, temperature = 1) => {
  const kl = Math.max(1, ...Array.from(r.perRow, (x) => (Number.isFinite(x) ? Math.abs(x) : 0)))
  return { gradP: { atol: PARITY.grad.atol * kl * Math.max(1, 1 / temperature), rtol: PARITY.grad.rtol } }
}
