/**
 * gradDtype 'input' on the cpu backend: the kernels write the 16-bit gradient themselves (GradRow,
 * native/cpu/rowmath.h). Each element must be, bit for bit, the cpu float32 gradient of the same call rounded
 * by src/dtypes.ts encodeFloats (what the TypeScript layer did before), across rounding ties, float16
 * subnormals and overflow (gradients scaled by tiny and huge token weights), NaN and ±inf rows.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { encodeFloats } from '../src/dtypes.js'
import { HOST_BACKENDS, on } from './backends.js'

const N = 9, V = 37
const values = (n: number, seed: number, scale = 3) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 5.3 + i * 0.77) * scale)

/** Logits with the awkward rows: a NaN, a −inf logit, a row all −inf, a +inf logit, huge and tiny spreads. */
function logitsData(seed: number): Float32Array {
  const z = values(N * V, seed)
  z[1 * V + 3] = NaN
  z[2 * V + 5] = -Infinity
  z.fill(-Infinity, 3 * V, 4 * V)
  z[4 * V + 7] = Infinity
  for (let v = 0; v < V; v++) z[5 * V + v] *= 1e4
  for (let v = 0; v < V; v++) z[6 * V + v] *= 1e-4
  return z
}
const tokenWeights = Float32Array.of(1, 1, 1, 1, 1, 1, 1e5, 1e-6, 2.5e-8)

const CASES: [string, (dtype: 'bfloat16' | 'float16', gradDtype: 'input' | 'float32') => object][] = [
  ['crossEntropy', (dtype, gradDtype) => rk.crossEntropy({
    logits: half(logitsData(1), dtype), targets: Int32Array.from({ length: N }, (_, i) => (i * 7) % V), grad: true, gradDtype, reduction: 'sum', tokenWeights, labelSmoothing: 0.1,
  })],
  ['klDivergence', (dtype, gradDtype) => rk.klDivergence({ pLogits: half(logitsData(2), dtype), qLogits: half(logitsData(3), dtype), grad: 'both', gradDtype, reduction: 'sum' })],
  ['ppoLoss', (dtype, gradDtype) => rk.ppoLoss({
    logits: half(logitsData(4), dtype), actions: Int32Array.from({ length: N }, (_, i) => (i * 5) % V), oldLogits: half(logitsData(5), dtype),
    advantages: Float32Array.of(1, -2, 0.5, 3, -1, 2, 4e4, -1e-6, 1e-7), beta: 0.1, gradDtype, aggregation: 'seq-mean-token-sum',
  })],
]
function half(data: Float32Array, dtype: 'bfloat16' | 'float16'): rk.Tensor {
  return rk.tensor(encodeFloats(data, dtype), [N, V], { dtype })
}

describe('16-bit gradients written by the kernels', () => {
  for (const backend of HOST_BACKENDS) {
    for (const [op, call] of CASES) {
      for (const dtype of ['bfloat16', 'float16'] as const) {
        it(`${backend} ${op} ${dtype}: the float32 gradient rounded to nearest even, bit for bit`, () => {
          const wide = on(backend, () => call(dtype, 'float32')) as Record<string, unknown>
          const narrow = on(backend, () => call(dtype, 'input')) as Record<string, unknown>
          let grads = 0
          for (const [key, value] of Object.entries(wide)) {
            if (!(value instanceof rk.Tensor)) {
              if (typeof value === 'number') expect(Object.is(narrow[key], value), key).toBe(true)
              continue
            }
            grads++
            const t = narrow[key] as rk.Tensor
            expect(t.dtype, key).toBe(dtype)
            expect(t.data).toBeInstanceOf(Uint16Array)
            const want = encodeFloats(value.data as Float32Array, dtype)
            const got = t.data as Uint16Array
            let bad = -1
            for (let i = 0; i < want.length && bad < 0; i++) if (got[i] !== want[i]) bad = i
            expect(bad, bad < 0 ? key : `${key}[${bad}] = 0x${got[bad].toString(16)}, want 0x${want[bad].toString(16)} (float32 ${(value.data as Float32Array)[bad]})`).toBe(-1)
          }
          expect(grads).toBeGreaterThan(0)
        })
      }
    }
  }
  it('the cases reach the rounding edges: float16 subnormals, overflow to inf, NaN', () => {
    const g = (on('js', () => CASES[0][1]('float16', 'float32')) as { gradLogits: rk.Tensor }).gradLogits
    const f = g.data as Float32Array
    const abs = Array.from(f, Math.abs)
    expect(abs.some((x) => x > 0 && x < 6.1e-5), 'a float16 subnormal').toBe(true)
    expect(abs.some((x) => x > 65520 && x !== Infinity), 'a float16 overflow').toBe(true)
    expect(abs.some((x) => Number.isNaN(x)), 'a NaN').toBe(true)
  })
})
