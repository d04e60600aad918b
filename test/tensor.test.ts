/** Tensors and dtypes: exact bf16/f16 decoding, round-to-nearest-even encoding, shapes, backends, async. */
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { rng } from './helpers.js'

describe('dtypes', () => {
  it('bfloat16 decodes exactly (the top half of a float32)', () => {
    const f = new Float32Array(1), u = new Uint32Array(f.buffer)
    for (let bits = 0; bits < 0x10000; bits += 7) {
      u[0] = bits << 16
      expect(Object.is(rk.bf16ToFloat(bits), f[0]) || (Number.isNaN(f[0]) && Number.isNaN(rk.bf16ToFloat(bits)))).toBe(true)
    }
  })

  it('float16 decodes exactly: known values, subnormals, infinities, NaN', () => {
    expect(rk.f16ToFloat(0x3c00)).toBe(1)
    expect(rk.f16ToFloat(0xc000)).toBe(-2)
    expect(rk.f16ToFloat(0x7bff)).toBe(65504)
    expect(rk.f16ToFloat(0x0001)).toBe(2 ** -24)
    expect(rk.f16ToFloat(0x0400)).toBe(2 ** -14)
    expect(rk.f16ToFloat(0x7c00)).toBe(Infinity)
    expect(rk.f16ToFloat(0xfc00)).toBe(-Infinity)
    expect(rk.f16ToFloat(0x7e00)).toBeNaN()
    expect(Object.is(rk.f16ToFloat(0x8000), -0)).toBe(true)
  })

  it('encode then decode is the identity on every finite bf16 and f16 value', () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      const h = rk.f16ToFloat(bits)
      if (Number.isFinite(h)) expect(rk.floatToF16(h)).toBe(bits)
      const b = rk.bf16ToFloat(bits)
      if (Number.isFinite(b)) expect(rk.floatToBf16(b)).toBe(bits)
    }
  })

  it('encoding rounds to nearest even and overflows to infinity', () => {
    expect(rk.f16ToFloat(rk.floatToF16(1 + 2 ** -11))).toBe(1) // halfway, ties to even
    expect(rk.f16ToFloat(rk.floatToF16(1 + 3 * 2 ** -11))).toBe(1 + 2 ** -9)
    expect(rk.f16ToFloat(rk.floatToF16(70000))).toBe(Infinity)
    expect(rk.bf16ToFloat(rk.floatToBf16(1 + 2 ** -8))).toBe(1)
    expect(rk.bf16ToFloat(rk.floatToBf16(1 + 3 * 2 ** -8))).toBe(1 + 2 ** -6)
  })

  it('bf16 and f16 logits give exactly the results of their float32 decoding', () => {
    const r = rng(31)
    const N = 4, V = 33
    const z = r.f32(N * V, 3)
    const targets = r.ints(N, V)
    for (const dtype of ['bfloat16', 'float16'] as const) {
      const bits = rk.encodeFloats(z, dtype)
      const low = rk.tensor(bits, [N, V], { dtype })
      const decoded = low.toFloat32Array()
      const a = rk.crossEntropy({ logits: low, targets, grad: true, labelSmoothing: 0.1 })
      const b = rk.crossEntropy({ logits: rk.tensor(decoded, [N, V]), targets, grad: true, labelSmoothing: 0.1 })
      expect(a.loss).toBe(b.loss)
      expect(Array.from(a.gradLogits!.data)).toEqual(Array.from(b.gradLogits!.data))
    }
  })
})

describe('tensor', () => {
  it('wraps without copying, infers the dtype, freezes the shape', () => {
    const data = new Float32Array(6)
    const t = rk.tensor(data, [2, 3])
    expect(t.data).toBe(data)
    expect([t.dtype, t.device, t.size, t.rank]).toEqual(['float32', 'cpu', 6, 2])
    expect(Object.isFrozen(t.shape)).toBe(true)
    expect(rk.tensor(new Int32Array(2)).dtype).toBe('int32')
    expect(rk.tensor(new Uint8Array(2)).shape).toEqual([2])
    expect(t.toHost()).toBe(t)
    t.dispose()
    t.dispose()
  })

  it(".to('cuda') says why when the cuda backend is absent", () => {
    const t = rk.tensor(new Float32Array(2))
    if (rk.backends().find((b) => b.name === 'cuda')!.available) return
    expect(() => t.to('cuda')).toThrow(expect.objectContaining({ code: 'ERR_CUDA_UNAVAILABLE' }))
  })
})

describe('backends', () => {
  it('reports js available and the others with a reason', () => {
    const list = rk.backends()
    expect(list.map((b) => b.name)).toEqual(['cuda', 'cpu', 'js'])
    expect(list.find((b) => b.name === 'js')!.available).toBe(true)
    for (const b of list) if (!b.available) expect(b.reason).toMatch(/\w+/)
  })

  it('setBackend forces a backend, refuses an absent one, and rejects unknown names', () => {
    rk.setBackend('js')
    expect(rk.currentBackend()).toBe('js')
    rk.setBackend('auto')
    for (const b of rk.backends()) if (!b.available) expect(() => rk.setBackend(b.name)).toThrow(/not available/)
    expect(() => rk.setBackend('tpu' as never)).toThrow(RangeError)
  })
})

describe('async twins', () => {
  it('resolve to the same result as the sync form, after the caller continues', async () => {
    const r = rng(32)
    const logits = rk.tensor(r.f32(8 * 16), [8, 16])
    const targets = r.ints(8, 16)
    const order: string[] = []
    const p = rk.crossEntropyAsync({ logits, targets, grad: true }).then((x) => { order.push('done'); return x })
    order.push('caller')
    const a = await p
    const b = rk.crossEntropy({ logits, targets, grad: true })
    expect(order).toEqual(['caller', 'done'])
    expect(a.loss).toBe(b.loss)
    expect(Array.from(a.gradLogits!.data)).toEqual(Array.from(b.gradLogits!.data))
    const g = await rk.gaeAsync({ rewards: r.f32(6), values: r.f32(6) })
    expect(g.advantages).toHaveLength(6)
  })

  it('every op has an Async twin', () => {
    const ops = ['logProbs', 'logProbsBackward', 'crossEntropy', 'rewardLoss', 'policyLoss', 'klDivergence', 'klPenalty', 'valueLoss', 'gae', 'whiten', 'groupAdvantages', 'ppoLoss']
    for (const op of ops) {
      expect(typeof (rk as Record<string, unknown>)[op]).toBe('function')
      expect(typeof (rk as Record<string, unknown>)[`${op}Async`]).toBe('function')
    }
  })
})
