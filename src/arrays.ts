/**
 * The one place where host arrays and shapes are checked (every Tensor, every typed-array option).
 *
 * A typed array is recognised by its internal slots, through the intrinsic %TypedArray% getters, never by
 * `instanceof` or its own properties: a Proxy of a Float32Array, a DataView, an object that only inherits from
 * Float32Array.prototype, a subclass overriding `length` or an own `length` property cannot pass for what it
 * is not. What the ops read is a fresh plain view over the same memory (no copy), made by these checks.
 */

import { describe, rangeError, typeError } from './errors.js'

/** The typed-array classes that hold op data. */
const CLASSES = {
  Float32Array,
  Float64Array,
  Uint16Array,
  Int32Array,
  Uint8Array,
} as const

export type ArrayName = keyof typeof CLASSES
export type ArrayOf<N extends ArrayName> = InstanceType<(typeof CLASSES)[N]>

const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object
const intrinsic = (key: PropertyKey) => Object.getOwnPropertyDescriptor(TypedArrayPrototype, key)!.get! as (this: unknown) => unknown
const tagOf = intrinsic(Symbol.toStringTag)
const lengthOf = intrinsic('length')
const bufferOf = intrinsic('buffer')
const byteOffsetOf = intrinsic('byteOffset')

/** The class of a genuine typed array (any realm) of one of the five op classes, else undefined. */
export function arrayName(x: unknown): ArrayName | undefined {
  if ((typeof x !== 'object' && typeof x !== 'function') || x === null) return undefined
  const tag = tagOf.call(x)
  return typeof tag === 'string' && Object.hasOwn(CLASSES, tag) ? (tag as ArrayName) : undefined
}

/**
 * A plain view (this realm's class, fixed length, same memory) of a genuine `name` array, or undefined when x
 * is anything else. A detached array, or one whose resizable buffer shrank below it, is seen as empty.
 */
export function plainView<N extends ArrayName>(x: unknown, name: N): ArrayOf<N> | undefined {
  if (arrayName(x) !== name) return undefined
  const Cls = CLASSES[name] as unknown as { new (b: ArrayBufferLike, offset: number, n: number): ArrayOf<N>; new (n: number): ArrayOf<N> }
  const n = lengthOf.call(x) as number
  return n === 0 ? new Cls(0) : new Cls(bufferOf.call(x) as ArrayBufferLike, byteOffsetOf.call(x) as number, n)
}

/**
 * A zero-filled Int32Array or Uint8Array that validation makes for the kernels (a layout's offsets, a mask read
 * as bytes), never returned to a caller. A small one is a view into a shared buffer, each range handed out once:
 * V8 keeps a new typed array of at most 64 bytes inside its object and moves it out to a new ArrayBuffer (four
 * allocations, freed later by its sweeper thread) the first time its buffer is asked for, which the addon does
 * for every input; a 64-token policyLoss spent ~1 µs there (bench/NOTES.md "Version 11").
 */
export function madeArray<C extends Int32ArrayConstructor | Uint8ArrayConstructor>(Cls: C, n: number): InstanceType<C> {
  const bytes = n * Cls.BYTES_PER_ELEMENT
  if (bytes > MADE_MAX || bytes === 0) return new Cls(n) as InstanceType<C>
  if (madeUsed + bytes > MADE_BYTES) {
    made = new ArrayBuffer(MADE_BYTES)
    madeUsed = 0
  }
  const a = new Cls(made, madeUsed, n) as InstanceType<C>
  madeUsed = (madeUsed + bytes + 7) & ~7
  return a
}
const MADE_BYTES = 8192, MADE_MAX = 512
let made = new ArrayBuffer(MADE_BYTES)
let madeUsed = 0

/** The largest element count: every dimension and the product of the nonzero ones are exact doubles. */
export const MAX_ELEMENTS = Number.MAX_SAFE_INTEGER

/**
 * A copy of `shape`, checked: an array of non-negative integers whose nonzero product is at most
 * MAX_ELEMENTS (so every partial product is exact), with its element count. The copy is taken first, so a
 * shape that changes while it is read is checked as it was copied.
 */
export function checkShape(where: string, shape: unknown): { dims: number[]; size: number } {
  if (!Array.isArray(shape)) throw typeError(where, 'shape', 'an array of non-negative integers', shape)
  const dims = Array.from(shape as unknown[])
  let nonzero = 1
  let zero = false
  for (const d of dims) {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
      throw typeError(where, 'shape', 'an array of non-negative integers', `[${dims.map((x) => describe(x)).join(', ')}]`)
    }
    if (d === 0) zero = true
    else if (nonzero > MAX_ELEMENTS / d) throw rangeError(where, 'shape', 'at most 2^53 - 1 elements', `[${dims.join(', ')}]`)
    else nonzero *= d
  }
  return { dims: dims as number[], size: zero ? 0 : nonzero }
}
