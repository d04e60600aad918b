/**
 * Every tolerance of the parity contract, each number written once: the tests (test/compare.ts and the
 * suites), the `parity` command (src/cli/parity.ts) and the GPU check (src/cli/check-gpu.ts) read them from
 * here, README states them.
 */
import type { BackendName } from './backend.js'
import type { FloatDType } from './dtypes.js'

export interface Tolerance {
  atol: number
  rtol: number
}

/** Native float32 kernels against the float64-accumulating reference: values, and gradients (`grad…` fields). */
export const PARITY: Readonly<Record<'value' | 'grad', Tolerance>> = {
  value: { atol: 5e-6, rtol: 5e-6 },
  grad: { atol: 1e-6, rtol: 5e-5 },
}

/** The js backend's float32 outputs against the same computation kept in float64: its rounding alone. */
export const F32_ROUNDING: Tolerance = { atol: 1e-6, rtol: 2e-6 }

/** Each backend against the float64 reference, values and gradients (the `parity` command). */
export const BACKEND_TOLERANCE: Readonly<Record<BackendName, Readonly<Record<'value' | 'grad', Tolerance>>>> = {
  js: { value: F32_ROUNDING, grad: F32_ROUNDING },
  cpu: PARITY,
  cuda: PARITY,
}

/** Against a file's expected values, which were computed in the peer's own precision (float32 usually). */
export const EXPECTED_TOLERANCE: Tolerance = { atol: 1e-4, rtol: 1e-4 }

/** A result field is a gradient when its last path component starts with `grad`. */
export const isGradient = (path: string) => /^grad/.test(path.split('.').pop()!)

/**
 * A gradient wrt logits at temperature T is 1/T times a function of z/T, and its float32 rounding scales
 * with 1/T too: atol is PARITY.grad.atol · max(1, 1/T).
 */
export function gradTolerance(temperature = 1): Tolerance {
  return { atol: PARITY.grad.atol * Math.max(1, 1 / temperature), rtol: PARITY.grad.rtol }
}

/**
 * d KL(p‖q)/d z_p = p (log p − log q − KL)/T: a float32 KL carries an absolute error of about 5e-7·KL (its
 * terms are evaluated in float32), which every element of the gradient inherits, times p/T ≤ 1/T. Rows whose
 * KL is not finite (+inf, NaN) have fixed gradients and do not widen it.
 */
export function klGradPTolerance(perRow: ArrayLike<number>, temperature = 1): Tolerance {
  let kl = 1
  for (let i = 0; i < perRow.length; i++) if (Number.isFinite(perRow[i])) kl = Math.max(kl, Math.abs(perRow[i]))
  const g = gradTolerance(temperature)
  return { atol: g.atol * kl, rtol: g.rtol }
}

/**
 * gradDtype 'input': both sides round a float32 gradient to 16 bits once, so they may differ by one unit in
 * the last place of the 16-bit format: at most 2^-7 of the value for bf16 (8 significant bits), 2^-10 for f16.
 */
export function halfGradTolerance(dtype: FloatDType): Tolerance {
  return { atol: PARITY.grad.atol, rtol: dtype === 'bfloat16' ? 2 ** -7 : 2 ** -10 }
}

/** Two results each within `tol` of the same reference are within this of each other. */
export const twice = (tol: Tolerance): Tolerance => ({ atol: 2 * tol.atol, rtol: 2 * tol.rtol })

/** max over elements of |a − e| / (atol + rtol·|e|), and where; ≤ 1 passes. Infinities and NaN must match exactly. */
export function closeness(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance) {
  let worst = 0
  let at = -1
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]
    const e = expected[i]
    let r: number
    if (a === e || (a !== a && e !== e)) r = 0
    else if (!Number.isFinite(e) || !Number.isFinite(a)) r = Infinity
    else r = Math.abs(a - e) / (tol.atol + tol.rtol * Math.abs(e))
    if (!(r <= worst)) {
      worst = r
      at = i
    }
  }
  return { worst, at }
}
