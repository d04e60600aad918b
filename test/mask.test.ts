/**
 * Byte masks (src/validate.ts maskVector): a Uint8Array of 0/1 bytes is passed on as it is, any other byte
 * value makes it converted to 0/1 (nonzero counts). The 0/1 test reads four bytes at a time over the
 * aligned middle, so a byte > 1 is placed in the unaligned head, the middle, at a block boundary and in the
 * tail, for every byte offset of the view.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { maskVector } from '../src/validate.js'
import { HOST_BACKENDS, on } from './backends.js'

const counted = (m: Uint8Array) => Uint8Array.from(m, (x) => (x !== 0 ? 1 : 0))

/** The first index where the two differ (a length difference counts), or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length)
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i
  return -1
}

describe('maskVector on byte masks', () => {
  const lengths = [0, 1, 3, 4, 5, 9, 4 * 4096 + 7, 3 * 4 * 4096 + 2]
  for (const length of lengths) {
    it(`length ${length}, every byte offset, a byte > 1 anywhere`, () => {
      for (let offset = 0; offset < 4; offset++) {
        const buffer = new Uint8Array(length + 8)
        const view = new Uint8Array(buffer.buffer, offset, length)
        for (let i = 0; i < length; i++) view[i] = (i * 7) % 3 === 0 ? 0 : 1
        // all 0/1: the same bytes come back, not a converted copy
        const binary = maskVector('t', 'mask', view, length)!
        if (length > 0) {
          expect(binary.buffer).toBe(view.buffer)
          expect(binary.byteOffset).toBe(offset)
        }
        expect(firstDifference(binary, view)).toBe(-1)
        // bytes 0..19: each of the four accumulators of the word loop, whatever the offset
        const places = new Set([...Array.from({ length: 20 }, (_, i) => i), (length >> 1), 4 * 4096 - 1, 4 * 4096, 4 * 4096 + 1, length - 2, length - 1])
        for (const at of places) {
          if (at < 0 || at >= length) continue
          for (const big of [2, 0x80, 0xff]) {
            const m = view.slice()
            const copy = new Uint8Array(buffer.buffer, offset, length)
            copy.set(m)
            copy[at] = big
            const got = maskVector('t', 'mask', copy, length)!
            expect(got.buffer, `byte ${big} at ${at}, offset ${offset}`).not.toBe(copy.buffer)
            expect(firstDifference(got, counted(copy)), `byte ${big} at ${at}, offset ${offset}`).toBe(-1)
            copy.set(m)  // restore for the next place
          }
        }
      }
    })
  }
})

describe('maskVector on float masks', () => {
  // 0 and −0 and NaN do not count; a subnormal and any other number do. Short masks are read into views of a
  // shared buffer at nonzero offsets (src/arrays.ts madeArray), longer ones into arrays of their own.
  const value = (i: number) => [0, Number.NaN, -0, 1e-40, 2.5, -3][i % 6]
  const expected = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i % 6 === 0 || i % 6 === 1 || i % 6 === 2 ? 0 : 1))
  for (const length of [1, 3, 4, 5, 9, 100, 511, 512, 513, 4097]) {
    it(`length ${length}, Float32Array and Float64Array, read twice`, () => {
      for (const Cls of [Float32Array, Float64Array]) {
        const m = new Cls(length)
        for (let i = 0; i < length; i++) m[i] = value(i)
        for (let k = 0; k < 2; k++) {
          const got = maskVector('t', 'mask', m, length)!
          expect(firstDifference(got, expected(length)), `${Cls.name} read ${k}`).toBe(-1)
        }
      }
    })
  }
})

describe('a byte mask with values > 1 runs on every host backend', () => {
  const M = 4 * 4096 + 5
  const logp = Float32Array.from({ length: M }, (_, i) => -1 - 0.5 * Math.sin(i))
  const oldLogp = Float32Array.from({ length: M }, (_, i) => -1 - 0.5 * Math.sin(i + 0.1))
  const advantages = Float32Array.from({ length: M }, (_, i) => Math.cos(i * 0.3))
  const ones = Uint8Array.from({ length: M }, (_, i) => (i % 5 === 0 ? 0 : 1))
  const bytes = Uint8Array.from(ones, (x, i) => x * (i === M - 1 ? 7 : i === 4096 * 4 - 3 ? 2 : 1))
  for (const backend of HOST_BACKENDS) {
    it(backend, () => {
      const a = on(backend, () => rk.policyLoss({ logp, oldLogp, advantages, mask: ones }))
      const b = on(backend, () => rk.policyLoss({ logp, oldLogp, advantages, mask: bytes }))
      expect(b.loss).toBe(a.loss)
      expect(b.gradLogp).toEqual(a.gradLogp)
    })
  }
})
