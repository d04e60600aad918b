/**
 * Tensor: a typed array with a shape and a dtype, on the host or (with the cuda backend) on a GPU.
 *
 * Host tensors wrap the caller's typed array without copying it; no op ever writes into an input.
 * float32 data is a Float32Array, float64 a Float64Array, bfloat16/float16 a Uint16Array of bit patterns,
 * int32 an Int32Array (targets, actions), uint8 a Uint8Array (masks).
 *
 * Device tensors (`t.to('cuda')`, and the results of ops on device tensors) own GPU memory: `dispose()`
 * gives it back at once (to the addon's caching pool); a tensor that is garbage-collected undisposed has its
 * memory queued for release by a finaliser and freed at the next GPU call. Their bytes count as V8 external
 * memory, and `rk.memory()` shows what is held.
 */
import { ARRAY_CLASS, DTYPES, type DType, type FloatDType, decodeFloats, inferDType } from './dtypes.js'
import { type ArrayName, arrayName, checkShape, plainView } from './arrays.js'
import { RlhfKernelsError, rangeError, typeError } from './errors.js'

export type Device = 'cpu' | 'cuda'

export type HostArray = Float32Array | Float64Array | Uint16Array | Int32Array | Uint8Array

export interface TensorOptions {
  /** Required for Uint16Array data ('bfloat16' or 'float16'); otherwise implied by the array class. */
  dtype?: DType
}

/** What the addon provides for device memory (installed by the loader when the cuda backend is usable). */
export interface DeviceMemory {
  upload(data: HostArray): unknown
  download(handle: unknown, into: HostArray): void
  downloadAsync(handle: unknown, into: HostArray): Promise<void>
  dispose(handle: unknown): void
}

let deviceMemory: DeviceMemory | null = null
let deviceReason = 'the native addon is not loaded'

/** Installs the addon's device memory functions, or records why there are none. */
export function installDeviceMemory(memory: DeviceMemory | null, reason = ''): void {
  deviceMemory = memory
  deviceReason = reason
}

function requireDeviceMemory(where: string): DeviceMemory {
  if (deviceMemory === null) {
    throw new RlhfKernelsError('ERR_CUDA_UNAVAILABLE', `${where}: the cuda backend is not available: ${deviceReason}`)
  }
  return deviceMemory
}

/**
 * The storage of a device tensor as the op layer sees it: the addon's handle and the element count. It
 * stands in for the host array in validated arguments (see validate.ts); only the cuda backend reads it.
 */
export class DeviceData {
  constructor(readonly handle: unknown, readonly length: number, readonly dtype: DType) {}
}

export function isDeviceData(x: unknown): x is DeviceData {
  return x instanceof DeviceData
}

/** A Tensor whose data is on the GPU. */
export interface DeviceTensor extends Tensor {
  readonly device: 'cuda'
}

export class Tensor {
  readonly shape: readonly number[]
  readonly dtype: DType
  readonly device: Device
  readonly size: number
  #host: HostArray | null
  #device: DeviceData | null
  #disposed = false

  constructor(data: HostArray, shape: readonly number[], dtype: DType)
  /** @internal a device tensor over an addon handle (ops and `to('cuda')` make these) */
  constructor(data: DeviceData, shape: readonly number[], dtype: DType)
  constructor(data: HostArray | DeviceData, shape: readonly number[], dtype: DType) {
    if (typeof dtype !== 'string' || !DTYPES.includes(dtype)) throw typeError('Tensor', 'dtype', `one of ${DTYPES.join(', ')}`, dtype)
    const { dims, size } = checkShape('Tensor', shape)
    this.shape = Object.freeze(dims)
    this.dtype = dtype
    this.size = size
    if (data instanceof DeviceData) {
      if (data.length !== size || data.dtype !== dtype) {
        throw rangeError('Tensor', 'data', `${size} elements of dtype '${dtype}'`, `${data.length} of '${data.dtype}'`)
      }
      this.#host = null
      this.#device = data
      this.device = 'cuda'
    } else {
      hostView('Tensor', data, dtype, size, this.shape)  // and again at each use (storage): the buffer may change
      this.#host = data
      this.#device = null
      this.device = 'cpu'
    }
  }

  /** The host typed array. A device tensor has none: use toHost() or toFloat32Array(). */
  get data(): HostArray {
    if (this.#host === null) {
      throw new RlhfKernelsError('ERR_DEVICE_TENSOR', 'Tensor.data: this tensor is on the GPU; use toHost() or toFloat32Array() to read it')
    }
    return this.#host
  }

  get rank(): number {
    return this.shape.length
  }

  /** True once dispose() has freed a device tensor's memory. */
  get isDisposed(): boolean {
    return this.#disposed
  }

  /**
   * @internal what validated arguments carry: the device storage, or a plain view of the host array checked
   * now against the dtype and shape (its buffer may have been resized, detached or transferred since)
   */
  storage(where: string): HostArray | DeviceData {
    if (this.#disposed) throw new RlhfKernelsError('ERR_DISPOSED', `${where}: the tensor was disposed`)
    return this.#host !== null ? hostView(where, this.#host, this.dtype, this.size, this.shape) : this.#device!
  }

  /** @internal the same storage seen with another shape of the same size */
  reshaped(shape: readonly number[]): Tensor {
    const s = this.storage('reshape')
    return s instanceof DeviceData ? new Tensor(s, shape, this.dtype) : new Tensor(s, shape, this.dtype)
  }

  /**
   * A copy of this tensor on `device`: `to('cuda')` uploads (the host array may change afterwards),
   * `to('cpu')` downloads. A tensor already there is returned as is.
   */
  to(device: 'cuda'): DeviceTensor
  to(device: 'cpu'): Tensor
  to(device: Device): Tensor
  to(device: Device): Tensor {
    if (device !== 'cpu' && device !== 'cuda') throw typeError('Tensor.to', 'device', "'cpu' or 'cuda'", device)
    if (device === this.device) {
      this.storage('Tensor.to')
      return this
    }
    if (device === 'cpu') return this.toHost()
    const memory = requireDeviceMemory('Tensor.to')
    const host = this.storage('Tensor.to') as HostArray
    return new Tensor(new DeviceData(memory.upload(host), host.length, this.dtype), this.shape, this.dtype)
  }

  /** The host copy of this tensor (a host tensor is its own host copy). Waits for queued GPU work. */
  toHost(): Tensor {
    const s = this.storage('Tensor.toHost')
    if (!(s instanceof DeviceData)) return this
    const out = new ARRAY_CLASS[this.dtype](s.length) as HostArray
    requireDeviceMemory('Tensor.toHost').download(s.handle, out)
    return new Tensor(out, this.shape, this.dtype)
  }

  /** toHost() without blocking the JS thread: the copy is enqueued and the promise settles when it is done. */
  async toHostAsync(): Promise<Tensor> {
    const s = this.storage('Tensor.toHostAsync')
    if (!(s instanceof DeviceData)) return this
    const out = new ARRAY_CLASS[this.dtype](s.length) as HostArray
    await requireDeviceMemory('Tensor.toHostAsync').downloadAsync(s.handle, out)
    return new Tensor(out, this.shape, this.dtype)
  }

  /** The values as float32 (bf16/f16 decoded exactly; float64 rounded; integers converted). */
  toFloat32Array(): Float32Array {
    if (this.device === 'cuda') {
      const host = this.toHost()
      return this.dtype === 'float32' ? (host.data as Float32Array) : host.toFloat32Array()
    }
    const data = this.storage('Tensor.toFloat32Array') as HostArray
    if (this.dtype === 'float32') return Float32Array.from(data as Float32Array)
    if (this.dtype === 'bfloat16' || this.dtype === 'float16') {
      return Float32Array.from(decodeFloats(data, this.dtype))
    }
    return Float32Array.from(data as ArrayLike<number>)
  }

  /** Frees device memory now (back to the addon's pool); a no-op for host tensors. Safe to call twice. */
  dispose(): void {
    if (this.#device === null || this.#disposed) return
    this.#disposed = true
    deviceMemory?.dispose(this.#device.handle)
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
}

/**
 * The checked plain view (arrays.ts) of host data for a tensor: the typed-array class of `dtype`, with the
 * element count of `shape`. Every host tensor's data goes through here, when it is made and at each use.
 */
function hostView(where: string, data: unknown, dtype: DType, size: number, shape: readonly number[]): HostArray {
  const name = ARRAY_CLASS[dtype].name as ArrayName
  const view = plainView(data, name)
  if (view === undefined) throw typeError(where, 'data', `a ${name} for dtype '${dtype}'`, data)
  if (view.length !== size) throw rangeError(where, 'data.length', `the product of shape [${shape.join(', ')}] = ${size}`, view.length)
  return view
}

/** Wraps host data as a Tensor after checking that the array class, dtype and shape agree. */
export function tensor(data: HostArray, shape?: readonly number[], options: TensorOptions = {}): Tensor {
  const name = arrayName(data)
  if (name === undefined) {
    throw typeError('tensor', 'data', 'a typed array (Float32Array, Float64Array, Uint16Array, Int32Array or Uint8Array)', data)
  }
  let dtype = options.dtype
  if (dtype !== undefined && !DTYPES.includes(dtype)) {
    throw typeError('tensor', 'dtype', `one of ${DTYPES.join(', ')}`, dtype)
  }
  if (dtype === undefined) {
    dtype = inferDType(name)
    if (dtype === undefined) throw typeError('tensor', 'data', "a Float32Array, Float64Array, Int32Array or Uint8Array (a Uint16Array needs dtype 'bfloat16' or 'float16')", data)
  }
  return new Tensor(data, shape === undefined ? [plainView(data, name)!.length] : shape, dtype)
}

export function isTensor(x: unknown): x is Tensor {
  return x instanceof Tensor
}

export type { DType, FloatDType }
