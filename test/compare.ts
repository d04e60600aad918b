/**
 * Comparing a native backend's result with the js reference's, within the README tolerances
 * (src/tolerance.ts): shared by the parity cases (test/parity.ts, test/ops/<family>.test.ts) and the differential fuzz
 * (test/fuzz.test.ts).
 */
import * as rk from '../src/index.js'
import { PARITY, type Tolerance, closeness, isGradient } from '../src/tolerance.js'

/** Everything numeric in a result, flattened: [path, values]. */
export function leaves(x: unknown, path = ''): [string, ArrayLike<number>][] {
  if (typeof x === 'number') return [[path, [x]]]
  if (x instanceof rk.Tensor) return [[path, x.toFloat32Array()]]
  if (ArrayBuffer.isView(x)) return [[path, x as unknown as ArrayLike<number>]]
  if (x && typeof x === 'object') return Object.entries(x).flatMap(([k, v]) => leaves(v, path ? `${path}.${k}` : k))
  return []
}

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
