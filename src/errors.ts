/**
 * The error contract (DESIGN §2, Errors):
 * - TypeError for a wrong type or dtype,
 * - RangeError for a shape, length or value outside what the op accepts,
 * - RlhfKernelsError (an Error with a `code`) for native failures.
 * Every message names the argument, what was expected and what was given.
 */
import { types } from 'node:util'

/** An Error raised by a native backend, with a stable `code` such as `ERR_CUDA_UNAVAILABLE`. */
export class RlhfKernelsError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RlhfKernelsError'
    this.code = code
  }
}

/** Describes a value for an error message: its class or type and, for arrays, its length. */
export function describe(value: unknown): string {
  if (types.isProxy(value)) return 'Proxy'
  if (value === null) return 'null'
  if (value === undefined) return 'undefined'
  if (ArrayBuffer.isView(value)) {
    const n = (value as unknown as { length?: number }).length
    return `${value.constructor.name}(${n ?? value.byteLength})`
  }
  if (Array.isArray(value)) return `Array(${value.length})`
  if (typeof value === 'number') return String(value)
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'object') {
    const ctor = (value as object).constructor
    return ctor && ctor.name ? ctor.name : 'object'
  }
  return typeof value
}

export function typeError(op: string, arg: string, expected: string, actual: unknown): TypeError {
  return new TypeError(`${op}: ${arg} must be ${expected}, got ${describe(actual)}`)
}

export function rangeError(op: string, arg: string, expected: string, actual: string | number): RangeError {
  return new RangeError(`${op}: ${arg} must be ${expected}, got ${actual}`)
}
