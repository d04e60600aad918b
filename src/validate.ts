/**
 * Argument checking shared by every op module. Each op validates its arguments once, here, and hands the
 * backends plain, trusted data: the backends do not re-check shapes (the native addon repeats only the cheap
 * checks that keep memory safe).
 *
 * Device tensors: their storage (a DeviceData, with the same `length`) stands in for the host array in the
 * validated arguments, under the host array's type. ops.ts sends any arguments that hold one to the cuda
 * backend, the only one that reads them; values that only the GPU holds (device targets) are checked there,
 * and inputs whose values must be checked here (offsets, soft labels) must be host data.
 */
import { madeArray, plainView } from './arrays.js'
import { GRAD_DTYPES } from './choices.js'
import { type FloatDType } from './dtypes.js'
import { describe, rangeError, typeError } from './errors.js'
import { DeviceData, Tensor, isDeviceData, isTensor } from './tensor.js'

/** A tensor's data for validated arguments: the host array, or (typed as one) its device storage. */
function dataOf<T>(op: string, name: string, t: Tensor): T {
  return t.storage(`${op}: ${name}`) as unknown as T
}

const throwError = (error: Error): never => {
  throw error
}

/** The host array of an input whose values are checked here: device tensors are refused with a TypeError. */
export function hostOnly<T>(op: string, name: string, data: T): T {
  if (isDeviceData(data)) throw typeError(op, name, 'host data (its values are checked on the host), not a cuda tensor', 'Tensor(cuda)')
  return data
}

/** True when validated arguments hold any device storage (then they run on the cuda backend). */
export function onDevice(args: object): boolean {
  for (const key in args) {
    const v = (args as Record<string, unknown>)[key]
    if (v instanceof DeviceData) return true
    if (v !== null && typeof v === 'object' && !ArrayBuffer.isView(v) && (v as { data?: unknown }).data instanceof DeviceData) return true
  }
  return false
}

/** Float data as given, not yet decoded: backends decode bf16/f16 themselves (the native ones in the kernel). */
export interface FloatData {
  readonly data: Float32Array | Float64Array | Uint16Array
  readonly dtype: FloatDType
}

const FLOAT_TENSOR = "a float Tensor (dtype 'float32', 'bfloat16', 'float16' or 'float64')"

function floatDType(t: Tensor): FloatDType | undefined {
  return t.dtype === 'int32' || t.dtype === 'uint8' ? undefined : t.dtype
}

/** A matrix input: a float Tensor of rank ≥ 2 whose last dimension is the row length. */
export function floatMatrix(op: string, name: string, value: unknown): FloatData & { rows: number; cols: number; shape: readonly number[] } {
  if (!isTensor(value)) throw typeError(op, name, FLOAT_TENSOR, value)
  const dtype = floatDType(value)
  if (dtype === undefined) throw typeError(op, name, FLOAT_TENSOR, `Tensor(dtype '${value.dtype}')`)
  if (value.rank < 2) {
    throw rangeError(op, `${name}.shape`, 'rank 2 [N, V] (or [B, T, V])', `[${value.shape.join(', ')}]`)
  }
  const cols = value.shape[value.rank - 1]
  const rows = value.shape.slice(0, -1).reduce((a, b) => a * b, 1)
  return { data: dataOf(op, name, value), dtype, rows, cols, shape: value.shape }
}

/** A float vector: a Float32Array, a Float64Array or a float Tensor of any shape, with `length` elements. */
export function floatVector(op: string, name: string, value: unknown, length?: number): FloatData {
  let out: FloatData
  let view: Float32Array | Float64Array | undefined
  if (isTensor(value)) {
    const dtype = floatDType(value)
    if (dtype === undefined) throw typeError(op, name, FLOAT_TENSOR, `Tensor(dtype '${value.dtype}')`)
    out = { data: dataOf(op, name, value), dtype }
  } else if ((view = plainView(value, 'Float32Array')) !== undefined) {
    out = { data: view, dtype: 'float32' }
  } else if ((view = plainView(value, 'Float64Array')) !== undefined) {
    out = { data: view, dtype: 'float64' }
  } else {
    throw typeError(op, name, 'a Float32Array, a Float64Array or a float Tensor', value)
  }
  if (length !== undefined && out.data.length !== length) {
    throw rangeError(op, `${name}.length`, String(length), out.data.length)
  }
  return out
}

/** An int32 vector: an Int32Array or an int32 Tensor. */
export function intVector(op: string, name: string, value: unknown, length?: number): Int32Array {
  let data: Int32Array
  if (isTensor(value)) {
    if (value.dtype !== 'int32') throw typeError(op, name, "an Int32Array or an int32 Tensor", `Tensor(dtype '${value.dtype}')`)
    data = dataOf(op, name, value)
  } else {
    data = plainView(value, 'Int32Array') ?? throwError(typeError(op, name, 'an Int32Array or an int32 Tensor', value))
  }
  if (length !== undefined && data.length !== length) throw rangeError(op, `${name}.length`, String(length), data.length)
  return data
}

/**
 * A mask: Uint8Array, Float32Array, Float64Array or a uint8/float Tensor. An element counts when it is
 * nonzero (and not NaN). Returned as 0/1 bytes; null when no mask was given (everything counts).
 */
export function maskVector(op: string, name: string, value: unknown, length: number): Uint8Array | null {
  if (value === undefined || value === null) return null
  let data: ArrayLike<number>
  if (isTensor(value)) {
    if (value.dtype === 'int32' || value.dtype === 'bfloat16' || value.dtype === 'float16') {
      throw typeError(op, name, 'a uint8 or float32/float64 mask', `Tensor(dtype '${value.dtype}')`)
    }
    data = dataOf(op, name, value)
    if (isDeviceData(data)) {
      // a device mask is used as it is: a token counts where the byte is nonzero
      if (value.dtype !== 'uint8') throw typeError(op, name, 'a uint8 Tensor (on the GPU, masks are bytes)', `Tensor(cuda, dtype '${value.dtype}')`)
      if (data.length !== length) throw rangeError(op, `${name}.length`, String(length), data.length)
      return data as unknown as Uint8Array
    }
  } else {
    data = plainView(value, 'Uint8Array') ?? plainView(value, 'Float32Array') ?? plainView(value, 'Float64Array') ??
      throwError(typeError(op, name, 'a Uint8Array, Float32Array, Float64Array or a uint8/float Tensor', value))
  }
  if (data.length !== length) throw rangeError(op, `${name}.length`, String(length), data.length)
  if (data instanceof Uint8Array && isBinary(data)) return data
  const out = madeArray(Uint8Array, length)
  if (data instanceof Float32Array) return float32Counted(data, out)
  for (let i = 0; i < length; i++) {
    const m = data[i]
    out[i] = m !== 0 && m === m ? 1 : 0
  }
  return out
}

/**
 * out[i] = 1 where the float32 m[i] counts (nonzero, not NaN), else 0, from its bits without a branch: with
 * x = |m[i]| as bits − 1, it counts when 0 ≤ x < 0x7f800000 (a subnormal up to infinity), the sign bit of
 * ~x & (x − 0x7f800000). Four bytes are written as one word (out is madeArray's: its offset a multiple of 8; little-endian hosts). 2^20 floats: about half
 * the time of reading them as numbers (whose 0/NaN test is a mispredicted branch on a mixed mask).
 */
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1

function float32Counted(m: Float32Array, out: Uint8Array): Uint8Array {
  const n = m.length
  const bits = new Int32Array(m.buffer, m.byteOffset, n)
  const counts = (i: number) => {
    const x = (bits[i] & 0x7fffffff) - 1
    return (~x & (x - 0x7f800000)) >>> 31
  }
  const words = LITTLE_ENDIAN ? n >>> 2 : 0
  const w = new Int32Array(out.buffer, out.byteOffset, words)
  for (let k = 0, i = 0; k < words; k++, i += 4) w[k] = counts(i) | (counts(i + 1) << 8) | (counts(i + 2) << 16) | (counts(i + 3) << 24)
  for (let i = 4 * words; i < n; i++) out[i] = counts(i)
  return out
}

/**
 * True when every byte is 0 or 1, that is when no byte has a bit of 0xfe set: the bytes are OR-ed four at a
 * time through an Int32Array over the 4-byte-aligned middle (the unaligned head and the tail bytewise), into
 * four accumulators (no chain of dependent ORs), in blocks of 4096 words so that a mask that is not binary
 * stops early. 2^20 bytes: ~0.12 ms against ~0.83 for a byte loop. The addon checks its own copy again.
 */
function isBinary(bytes: Uint8Array): boolean {
  const n = bytes.length
  const head = Math.min(n, (4 - (bytes.byteOffset & 3)) & 3)
  const words = Math.floor((n - head) / 4)
  let a0 = 0, a1 = 0, a2 = 0, a3 = 0
  for (let i = 0; i < head; i++) a0 |= bytes[i]
  for (let i = head + 4 * words; i < n; i++) a0 |= bytes[i]
  if ((a0 & 0xfe) !== 0) return false
  if (words === 0) return true
  const w = new Int32Array(bytes.buffer, bytes.byteOffset + head, words)
  for (let start = 0; start < words; start += 4096) {
    const end = Math.min(words, start + 4096)
    let i = start
    for (; i + 4 <= end; i += 4) { a0 |= w[i]; a1 |= w[i + 1]; a2 |= w[i + 2]; a3 |= w[i + 3] }
    for (; i < end; i++) a0 |= w[i]
    if (((a0 | a1 | a2 | a3) & 0xfefefefe) !== 0) return false
  }
  return true
}

/** The dtype of a logits gradient: float32, or the logits' own 16-bit dtype ('input'). */
export type GradDType = 'float32' | 'bfloat16' | 'float16'

/**
 * gradDtype: 'float32' (default) or 'input': the gradient in the logits' dtype when that is bfloat16 or
 * float16 (each element the float32 value rounded to nearest even, once), else float32. A bf16 gradient
 * halves the bytes written: the single-pass GPU kernels then move 1 read + 1 write of bf16.
 */
export function gradDTypeOption(op: string, value: unknown, logits: FloatDType): GradDType {
  const choice = choiceOption(op, 'gradDtype', value, GRAD_DTYPES, 'float32')
  return choice === 'input' && (logits === 'bfloat16' || logits === 'float16') ? logits : 'float32'
}

export interface NumberRule {
  /** inclusive lower bound */ min?: number
  /** inclusive upper bound */ max?: number
  /** exclusive lower bound */ above?: number
  /** exclusive upper bound */ below?: number
  integer?: boolean
}

function ruleText(rule: NumberRule): string {
  const parts: string[] = [rule.integer ? 'an integer' : 'a finite number']
  if (rule.min !== undefined) parts.push(`≥ ${rule.min}`)
  if (rule.above !== undefined) parts.push(`> ${rule.above}`)
  if (rule.max !== undefined) parts.push(`≤ ${rule.max}`)
  if (rule.below !== undefined) parts.push(`< ${rule.below}`)
  return parts.join(' ')
}

function follows(value: number, rule: NumberRule): boolean {
  return Number.isFinite(value) &&
    (!rule.integer || Number.isInteger(value)) &&
    (rule.min === undefined || value >= rule.min) &&
    (rule.max === undefined || value <= rule.max) &&
    (rule.above === undefined || value > rule.above) &&
    (rule.below === undefined || value < rule.below)
}

/**
 * A finite number option, `fallback` when undefined. Non-numbers are TypeErrors, out of range RangeErrors.
 * The native kernels read most options as float32, so the value rounded to float32 must follow the rule too:
 * 1e39 (infinite there) or 1e-50 for an option > 0 (0 there) is refused on every backend.
 */
export function numberOption(op: string, name: string, value: unknown, fallback: number, rule: NumberRule = {}): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number') throw typeError(op, name, 'a number', value)
  if (!follows(value, rule)) throw rangeError(op, name, ruleText(rule), value)
  if (!follows(Math.fround(value), rule)) throw rangeError(op, name, `${ruleText(rule)} as a float32`, value)
  return value
}

/** ignoreIndex: compared with int32 targets, so an int32 itself. */
export const INT32: NumberRule = { integer: true, min: -(2 ** 31), max: 2 ** 31 - 1 }

/**
 * temperature: logits are divided by it in float32, so below 1e-6 ordinary logits would leave the float32
 * range (|z|/T > 3.4e38 for |z| > 3.4e32), and 1/T itself does below 2.9e-39.
 */
export const TEMPERATURE: NumberRule = { min: 1e-6 }

/** Like numberOption, but null/undefined mean "off" and give null. */
export function optionalNumber(op: string, name: string, value: unknown, rule: NumberRule = {}): number | null {
  if (value === undefined || value === null) return null
  return numberOption(op, name, value, 0, rule)
}

export function booleanOption(op: string, name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw typeError(op, name, 'a boolean', value)
  return value
}

export function choiceOption<T extends string>(op: string, name: string, value: unknown, choices: readonly T[], fallback: T): T {
  if (value === undefined) return fallback
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    const expected = `one of ${choices.map((c) => `'${c}'`).join(', ')}`
    throw typeof value === 'string' ? rangeError(op, name, expected, describe(value)) : typeError(op, name, expected, value)
  }
  return value as T
}

/** An op's option names, listed once against its options interface: the compiler rejects a missing or an extra one. */
export type OptionNames<O> = { readonly [K in keyof Required<O>]: true }

/** Levenshtein distance between two names, compared without case, '_' or '-' (ignore_index ~ ignoreIndex). */
function nameDistance(a: string, b: string): number {
  const x = a.toLowerCase().replace(/[_-]/g, ''), y = b.toLowerCase().replace(/[_-]/g, '')
  let row = Array.from({ length: y.length + 1 }, (_, j) => j)
  for (let i = 1; i <= x.length; i++) {
    const next = [i]
    for (let j = 1; j <= y.length; j++) {
      next.push(Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1)))
    }
    row = next
  }
  return row[y.length]
}

/** The TypeError for an option the op does not have, suggesting the nearest name when one is close. */
export function unknownOption(op: string, key: string, names: readonly string[]): TypeError {
  let best = '', distance = Infinity
  for (const name of names) {
    const d = nameDistance(key, name)
    if (d < distance) [best, distance] = [name, d]
  }
  const close = distance <= Math.max(1, Math.floor(Math.max(key.length, best.length) / 3))
  return new TypeError(`${op}: unknown option ${JSON.stringify(key)}${close ? ` (did you mean '${best}'?)` : ''}; the options are ${names.join(', ')}`)
}

/**
 * The options object itself (an object, not an array), as a snapshot: every enumerable property, own or
 * inherited, read once (as `for...in` lists them), so getters and Proxy traps run here, before any check, and
 * cannot change what was already checked. With `names`, a key outside them (a misspelled option) is a
 * TypeError that suggests the nearest name.
 */
export function optionsObject<T extends object>(op: string, value: T | undefined, names?: OptionNames<T>): T {
  const snapshot = readOptions(op, value, null)
  if (names) {
    for (const key of Object.keys(snapshot)) {
      if (!Object.hasOwn(names, key)) throw unknownOption(op, key, Object.keys(names))
    }
  }
  return snapshot as T
}

/**
 * optionsObject's snapshot without the `out` option, and `out` itself (ops.ts checks `out` after the other
 * options): one read of every property, no second copy to take `out` away.
 */
export function optionsAndOut(op: string, value: unknown): { options: Record<string, unknown>; out: unknown } {
  const held: { out?: unknown } = {}
  return { options: readOptions(op, value, held), out: held.out }
}

/** The snapshot of optionsObject; with `held`, the `out` property goes there instead. */
function readOptions(op: string, value: unknown, held: { out?: unknown } | null): Record<string, unknown> {
  if (value === undefined || value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw typeError(op, 'the argument', 'an options object', value)
  }
  const snapshot: Record<string, unknown> = {}
  for (const key in value) {
    if (key === '__proto__') continue
    const v = (value as Record<string, unknown>)[key]
    if (held !== null && key === 'out') held.out = v
    else snapshot[key] = v
  }
  return snapshot
}
