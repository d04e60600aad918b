/**
 * Tensor: a typed array with a shape and a dtype, on the host or (with the cuda backend) on a GPU.
 *
 * Host tensors wrap the caller's typed array without copying it; no op ever writes into an input.
 * float32 data is a Float32Array, float64 a Float64Array, bfloat16/float16 a Uint16Array of bit patterns,
 * int32 an Int32Array (targets, actions), uint8 a Uint8Array (masks).
 */
import { ARRAY_CLASS, DTYPES, type DType, type FloatDType, decodeFloats, inferDType } from './dtypes.js'
import { RlhfKernelsError, describe, rangeError, typeError } from './errors.js'

export type Device = 'cpu' | 'cuda'

export type HostArray = Float32Array | Float64Array | Uint16Array | Int32Array | Uint8Array

export interface TensorOptions {
  /** Required for Uint16Array data ('bfloat16' or 'float16'); otherwise implied by the array class. */
  dtype?: DType
}

export class Tensor {
  readonly data: HostArray
  readonly shape: readonly number[]
  readonly dtype: DType
  readonly device: Device = 'cpu'
  readonly size: number

  constructor(data: HostArray, shape: readonly number[], dtype: DType) {
    this.data = data
    this.shape = Object.freeze([...shape])
    this.dtype = dtype
    this.size = data.length
  }

  get rank(): number {
    return this.shape.length
  }

  /**
   * Copies this tensor to a device. Device tensors need the cuda backend, whose kernels are built
   * (native/cuda) but not yet connected to tensors: `rk.backends()` says why cuda is unavailable here.
   */
  to(device: Device): Tensor {
    if (device === 'cpu') return this
    if (device === 'cuda') {
      throw new RlhfKernelsError(
        'ERR_CUDA_UNAVAILABLE',
        'Tensor.to: the cuda backend is not available (rk.backends() gives the reason); host tensors run on the cpu or js backend',
      )
    }
    throw typeError('Tensor.to', 'device', "'cpu' or 'cuda'", device)
  }

  /** The host copy of this tensor (a host tensor is its own host copy). */
  toHost(): Tensor {
    return this
  }

  /** The values as float32 (bf16/f16 decoded exactly; float64 rounded; integers converted). */
  toFloat32Array(): Float32Array {
    if (this.dtype === 'float32') return Float32Array.from(this.data as Float32Array)
    if (this.dtype === 'bfloat16' || this.dtype === 'float16') {
      return Float32Array.from(decodeFloats(this.data, this.dtype))
    }
    return Float32Array.from(this.data as ArrayLike<number>)
  }

  /** Frees device memory; a no-op for host tensors. Safe to call twice. */
  dispose(): void {}

  [Symbol.dispose](): void {
    this.dispose()
  }
}

const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x)

/** Wraps host data as a Tensor after checking that the array class, dtype and shape agree. */
export function tensor(data: HostArray, shape?: readonly number[], options: TensorOptions = {}): Tensor {
  if (!ArrayBuffer.isView(data) || data instanceof DataView) {
    throw typeError('tensor', 'data', 'a typed array (Float32Array, Float64Array, Uint16Array, Int32Array or Uint8Array)', data)
  }
  let dtype = options.dtype
  if (dtype !== undefined && !DTYPES.includes(dtype)) {
    throw typeError('tensor', 'dtype', `one of ${DTYPES.join(', ')}`, dtype)
  }
  if (dtype === undefined) {
    dtype = inferDType(data)
    if (dtype === undefined) {
      const hint = data instanceof Uint16Array ? " (a Uint16Array needs dtype 'bfloat16' or 'float16')" : ''
      throw typeError('tensor', 'data', `a Float32Array, Float64Array, Int32Array or Uint8Array${hint}`, data)
    }
  }
  const cls = ARRAY_CLASS[dtype]
  if (!(data instanceof cls)) {
    throw typeError('tensor', 'data', `a ${cls.name} for dtype '${dtype}'`, data)
  }
  const dims = shape === undefined ? [data.length] : shape
  if (!Array.isArray(dims) || !dims.every((d) => isInt(d) && d >= 0)) {
    throw typeError('tensor', 'shape', 'an array of non-negative integers', describe(shape))
  }
  const size = dims.reduce((a, b) => a * b, 1)
  if (size !== data.length) {
    throw rangeError('tensor', 'data.length', `the product of shape [${dims.join(', ')}] = ${size}`, data.length)
  }
  return new Tensor(data, dims, dtype)
}

export function isTensor(x: unknown): x is Tensor {
  return x instanceof Tensor
}

export type { DType, FloatDType }
