/**
 * gae on the shapes of its cpu kernel's two paths: 8 sequences in 8 double lanes, 8 tokens of each at once
 * (vector loads transposed in registers) while every lane has 8 tokens left, one token at a time otherwise.
 * Uniform and ragged lengths, empty sequences and masks against the float64 reference (test/parity.ts
 * compare); and a sequence's outputs the same bits wherever it sits in the batch (its lane, its path).
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { NATIVE_BACKENDS, on } from '../backends.js'
import { rng } from '../helpers.js'
import { SEED, asDtype, compare } from '../parity.js'

type Lengths = { label: string; lengths: (r: ReturnType<typeof rng>) => Int32Array }
const LENGTHS: Lengths[] = [
  { label: '16 × 64 (uniform)', lengths: () => new Int32Array(16).fill(64) },
  { label: '13 × 37 (uniform, not a multiple of 8 either way)', lengths: () => new Int32Array(13).fill(37) },
  { label: '9 × 8', lengths: () => new Int32Array(9).fill(8) },
  { label: '40 ragged 0–100, every fifth empty', lengths: (r) => Int32Array.from({ length: 40 }, (_, i) => (i % 5 === 2 ? 0 : r.int(101))) },
  { label: '3 (fewer than the lanes)', lengths: () => Int32Array.of(20, 0, 11) },
]

describe.each(NATIVE_BACKENDS)(`gae on %s (seed ${SEED})`, (backend) => {
  it.each(LENGTHS)('$label: masked and not, lastValues or not, float32 and bfloat16', ({ label, lengths: make }) => {
    const r = rng(SEED + 140 + label.length)
    const lengths = make(r)
    const M = lengths.reduce((a, b) => a + b, 0)
    for (const dtype of ['float32', 'bfloat16'] as const) {
      for (const mask of [r.mask(M, 0.7), undefined]) {
        for (const lastValues of [r.f32(lengths.length), undefined]) {
          const o = {
            rewards: asDtype(r.f32(M), [M], dtype), values: asDtype(r.f32(M), [M], dtype), seqLengths: lengths, mask,
            gamma: 0.99, lambda: 0.95, lastValues,
          }
          compare(backend, rk.gae, o, `gae ${label} ${dtype} mask ${mask !== undefined} lastValues ${lastValues !== undefined}`)
        }
      }
    }
  })

  it('[B, T] tensors with runs of masked tokens (whole 8-token blocks and single ones), γ = λ = 1', () => {
    const r = rng(SEED + 150)
    const B = 11, T = 72, M = B * T
    const mask = Uint8Array.from({ length: M }, (_, i) => ((i % T) >= 16 && (i % T) < 32 ? 0 : i % 13 === 0 ? 0 : 1))
    compare(backend, rk.gae, { rewards: rk.tensor(r.f32(M, 3), [B, T]), values: r.f32(M, 3), mask, gamma: 1, lambda: 1 }, 'gae [11, 72] γ = λ = 1')
  })

  it('a sequence gives the same bits in any lane and beside any neighbours', () => {
    const r = rng(SEED + 160)
    const T = 45
    const x = { r: r.f32(T), v: r.f32(T), m: r.mask(T, 0.8) }
    const run = (before: number[]) => {
      // the sequence after `before` others of those lengths, and 7 more after it
      const lengths = Int32Array.from([...before, T, 50, 3, 60, 17, 80, 9, 64])
      const M = lengths.reduce((a, b) => a + b, 0)
      const start = before.reduce((a, b) => a + b, 0)
      const rewards = r.f32(M), values = r.f32(M), mask = r.mask(M, 0.8)
      rewards.set(x.r, start), values.set(x.v, start), mask.set(x.m, start)
      const out = on(backend, () => rk.gae({ rewards, values, mask, seqLengths: lengths, gamma: 0.97, lambda: 0.9 }))
      const adv = out.advantages as Float32Array
      return Array.from(adv.subarray(start, start + T))
    }
    const first = run([])
    for (const before of [[5], [64, 64, 64], [0, 200, 1, 30, 8, 8, 8], [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]]) {
      expect(run(before), `after ${before.join(', ')}`).toEqual(first)
    }
  })

  it('no sequences, and only empty ones', () => {
    const none = on(backend, () => rk.gae({ rewards: new Float32Array(0), values: new Float32Array(0), seqLengths: new Int32Array(0) }))
    expect(none.advantages.length).toBe(0)
    const empty = on(backend, () => rk.gae({ rewards: new Float32Array(0), values: new Float32Array(0), seqLengths: new Int32Array(5) }))
    expect(empty.returns.length).toBe(0)
  })
})
