/**
 * Element types and their exact decoding to float32.
 *
 * bfloat16 and float16 arrive as Uint16Array bit patterns. Both decode exactly to float32 (every bf16 and
 * every f16 value is a float32 value), so the reference computes on the same numbers the GPU reads.
 */

export type FloatDType = 'float32' | 'bfloat16' | 'float16' | 'float64'
export type DType = FloatDType | 'int32' | 'uint8'

export const FLOAT_DTYPES: readonly FloatDType[] = ['float32', 'bfloat16', 'float16', 'float64']
export const DTYPES: readonly DType[] = ['float32', 'bfloat16', 'float16', 'float64', 'int32', 'uint8']

export type DTypeArray = {
  float32: Float32Array
  float64: Float64Array
  bfloat16: Uint16Array
  float16: Uint16Array
  int32: Int32Array
  uint8: Uint8Array
}

/** The typed-array class that holds each dtype. */
export const ARRAY_CLASS: { [K in DType]: { new (n: number): DTypeArray[K]; name: string } } = {
  float32: Float32Array,
  float64: Float64Array,
  bfloat16: Uint16Array,
  float16: Uint16Array,
  int32: Int32Array,
  uint8: Uint8Array,
}

/** The dtype an array class implies when none is given (Uint16Array is ambiguous: bf16 or f16). */
export function inferDType(arrayClass: string): DType | undefined {
  return ({ Float32Array: 'float32', Float64Array: 'float64', Int32Array: 'int32', Uint8Array: 'uint8' } as const)[arrayClass as 'Float32Array']
}

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** bfloat16 bits → float32 value (exact: bf16 is the top half of a float32). */
export function bf16ToFloat(bits: number): number {
  u32[0] = (bits & 0xffff) << 16
  return f32[0]
}

/** float32 value → bfloat16 bits, round to nearest even (NaN stays NaN). */
export function floatToBf16(value: number): number {
  f32[0] = value
  const x = u32[0]
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff
  const rounded = x + 0x7fff + ((x >>> 16) & 1)
  return (rounded >>> 16) & 0xffff
}

/** float16 bits → float32 value (exact, subnormals included). */
export function f16ToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1
  const exp = (bits >> 10) & 0x1f
  const frac = bits & 0x3ff
  if (exp === 0) return sign * frac * 2 ** -24
  if (exp === 31) return frac === 0 ? sign * Infinity : NaN
  return sign * (1024 + frac) * 2 ** (exp - 25)
}

/** float32 value → float16 bits, round to nearest even, overflow to ±inf. */
export function floatToF16(value: number): number {
  f32[0] = value
  const x = u32[0]
  const sign = (x >>> 16) & 0x8000
  const exp = (x >>> 23) & 0xff
  let frac = x & 0x7fffff
  if (exp === 0xff) return sign | 0x7c00 | (frac ? 0x200 : 0)
  let e = exp - 127 + 15
  if (e >= 31) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    frac |= 0x800000
    const shift = 14 - e
    const half = 1 << (shift - 1)
    let m = frac >>> shift
    const rest = frac & ((1 << shift) - 1)
    if (rest > half || (rest === half && m & 1)) m++
    return sign | m
  }
  let m = frac >>> 13
  const rest = frac & 0x1fff
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++
    if (m === 0x400) {
      m = 0
      e++
      if (e >= 31) return sign | 0x7c00
    }
  }
  return sign | (e << 10) | m
}

/**
 * Float data as numbers: float32/float64 arrays as they are, bf16/f16 decoded exactly into a new Float32Array.
 */
export function decodeFloats(data: ArrayBufferView, dtype: FloatDType): Float32Array | Float64Array {
  if (dtype === 'float32') return data as Float32Array
  if (dtype === 'float64') return data as Float64Array
  const bits = data as Uint16Array
  const out = new Float32Array(bits.length)
  if (dtype === 'bfloat16') {
    const outBits = new Uint32Array(out.buffer)
    for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16
  } else {
    for (let i = 0; i < bits.length; i++) out[i] = f16ToFloat(bits[i])
  }
  return out
}

/** Encodes float values into bf16 or f16 bit patterns (for building inputs; outputs are always float32). */
export function encodeFloats(values: ArrayLike<number>, dtype: 'bfloat16' | 'float16'): Uint16Array {
  const out = new Uint16Array(values.length)
  const enc = dtype === 'bfloat16' ? floatToBf16 : floatToF16
  for (let i = 0; i < values.length; i++) out[i] = enc(values[i])
  return out
}
