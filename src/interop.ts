/**
 * Tensors of other JavaScript ML libraries as op inputs: onnxruntime-node / onnxruntime-web and
 * transformers.js tensors are `{ type, dims, data }` objects. Wherever an op accepts a Tensor it accepts one
 * of these too, wrapped without copying its data (float16 data is a Uint16Array of bit patterns, as here).
 * int64 tensors (token ids as onnxruntime and transformers.js give them) are the one exception: they are
 * copied to int32, each value checked to fit.
 */
import { DTYPES, type DType } from './dtypes.js'
import { describe, rangeError, typeError } from './errors.js'
import { type HostArray, Tensor, isTensor, tensor } from './tensor.js'

/** A tensor of onnxruntime or transformers.js, as far as ops read it. */
export interface ForeignTensor {
  readonly type: string
  readonly dims: readonly number[]
  readonly data: unknown
  /** onnxruntime's data location: only host data ('cpu', 'cpu-pinned') can be read */
  readonly location?: string
}

/** The foreign type names that differ from ours; the others are the same (DTYPES). */
const RENAMED: Record<string, DType> = { bool: 'uint8' }

/** True for an object shaped like an onnxruntime / transformers.js tensor (and not one of ours). */
export function isForeignTensor(x: unknown): x is ForeignTensor {
  if (x === null || typeof x !== 'object' || isTensor(x) || ArrayBuffer.isView(x)) return false
  const o = x as Record<string, unknown>
  return typeof o.type === 'string' && Array.isArray(o.dims) && 'data' in o
}

/** int64 token ids as int32, every value checked to fit (the one copy interop makes). */
function int64ToInt32(where: string, data: BigInt64Array): Int32Array {
  const out = new Int32Array(data.length)
  for (let i = 0; i < data.length; i++) {
    const v = data[i]
    if (v < -2147483648n || v > 2147483647n) throw rangeError(where, `data[${i}]`, 'an int64 value that fits in int32', String(v))
    out[i] = Number(v)
  }
  return out
}

/**
 * An onnxruntime / transformers.js tensor as a Tensor over the same memory. Each field is read once, and
 * the result is checked as `tensor()` checks its arguments.
 */
export function fromForeign(x: ForeignTensor, where = 'fromForeign'): Tensor {
  const location = x.location
  if (location !== undefined && location !== 'cpu' && location !== 'cpu-pinned') {
    throw typeError(where, 'location', "host data ('cpu' or 'cpu-pinned'): download it first with getData()", describe(location))
  }
  const type = x.type
  const dims = [...x.dims]
  let data = x.data
  if (type === 'int64' && data instanceof BigInt64Array) return tensor(int64ToInt32(where, data), dims)
  const dtype = (RENAMED[type] ?? ((DTYPES as readonly string[]).includes(type) ? type : undefined)) as DType | undefined
  if (dtype === undefined) {
    throw typeError(where, 'type', `a tensor of type ${[...DTYPES, 'int64 (copied to int32)', ...Object.keys(RENAMED)].join(', ')}`, describe(type))
  }
  // float16 may come as a Float16Array where the runtime has one: the same bits, seen as Uint16Array
  if (dtype === 'float16' && ArrayBuffer.isView(data) && !(data instanceof Uint16Array) && (data as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT === 2) {
    const view = data as unknown as { buffer: ArrayBufferLike; byteOffset: number; length: number }
    data = new Uint16Array(view.buffer, view.byteOffset, view.length)
  }
  return tensor(data as HostArray, dims, { dtype })
}

/** Options where every Tensor may also be a foreign tensor. */
export type WithForeign<O> = { [K in keyof O]: Tensor extends O[K] ? O[K] | ForeignTensor : O[K] }

/**
 * The options of an op with its foreign tensors wrapped as Tensors: the same object when it holds none,
 * else a copy whose each property was read once.
 */
export function wrapForeign<O>(op: string, options: O): O {
  if (options === null || typeof options !== 'object') return options
  const entries = Object.entries(options)
  if (!entries.some(([, v]) => isForeignTensor(v))) return options
  return Object.fromEntries(entries.map(([k, v]) => [k, isForeignTensor(v) ? fromForeign(v, `${op}: ${k}`) : v])) as O
}
