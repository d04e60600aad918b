/**
 * groupAdvantages in uniform groups (`groupSize`): the cpu kernel takes the size itself (no offsets) and runs
 * several groups at once, one per double lane, so group counts that are not a multiple of the lanes, sizes
 * below, at, between and above the lane count, constant groups and large values are checked here against the float64
 * reference (test/parity.ts compare), and constant groups against the formula (exactly 0).
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { NATIVE_BACKENDS, on } from '../backends.js'
import { rng } from '../helpers.js'
import { SEED, asDtype, compare } from '../parity.js'

// sizes that divide the lanes, fall between them, equal them, exceed them and are multiples of them (a size
// that is not a multiple runs one group per lane: advantages.cc strided_groups); counts of groups below the
// lanes, with a partial last block, and of several blocks
const SIZES = [2, 3, 4, 5, 8, 12, 16, 20, 64]
const COUNTS = [1, 5, 13, 37]

describe.each(NATIVE_BACKENDS)(`groupAdvantages in uniform groups on %s (seed ${SEED})`, (backend) => {
  const cases = SIZES.flatMap((G) => COUNTS.map((groups) => ({ G, groups })))
  it.each(cases)('G = $G, $groups groups: every method, float32 / float64 / bfloat16', ({ G, groups }) => {
    const r = rng(SEED + 70 + G * 31 + groups)
    const N = G * groups
    const x = Float32Array.from(r.f32(N), (v) => 5 + 0.005 * v)  // a mean far from 0 against a small spread
    const inputs = [
      ['float32', asDtype(x, [N], 'float32')],
      // float64 data that float32 represents: the native backends round float64 to float32 as they load it (README)
      ['float64', Float64Array.from(x)],
      ['bfloat16', asDtype(r.f32(N), [N], 'bfloat16')],
    ] as const
    for (const [dtype, scores] of inputs) {
      for (const method of rk.GROUP_METHODS) {
        for (const unbiased of [true, false]) {
          compare(backend, rk.groupAdvantages, { scores, groupSize: G, method, unbiased }, `G ${G} × ${groups} ${dtype} ${method} unbiased ${unbiased}`)
        }
      }
    }
  })

  it.each(SIZES)('G = %i: large values (±1e30 and ±1e6 centres) against the reference', (G) => {
    const r = rng(SEED + 90 + G)
    const groups = 11
    const N = G * groups
    const scale = [1e30, -1e30, 1e6, -1e6, 1]
    const x = Float32Array.from({ length: N }, (_, i) => {
      const c = scale[Math.floor(i / G) % scale.length]
      return c * (1 + 0.01 * r.normal())
    })
    for (const method of rk.GROUP_METHODS) compare(backend, rk.groupAdvantages, { scores: x, groupSize: G, method }, `G ${G} large ${method}`)
  })

  it.each(SIZES)('G = %i: constant groups (std 0) give exactly 0 among varying ones', (G) => {
    const r = rng(SEED + 110 + G)
    const groups = 19
    const constants = [1e6 + 0.5, 3, -7.25, 0.1, 1e30]
    const x = new Float32Array(G * groups)
    for (let g = 0; g < groups; g++) {
      for (let j = 0; j < G; j++) x[g * G + j] = g % 2 === 0 ? constants[(g / 2) % constants.length] : r.normal()
    }
    for (const method of rk.GROUP_METHODS) {
      const out = on(backend, () => rk.groupAdvantages({ scores: x, groupSize: G, method })) as Float32Array
      for (let g = 0; g < groups; g += 2) {
        expect(Array.from(out.subarray(g * G, (g + 1) * G)), `${method} group ${g}`).toEqual(new Array(G).fill(0))
      }
      compare(backend, rk.groupAdvantages, { scores: x, groupSize: G, method }, `G ${G} constant groups ${method}`)
    }
  })

  it('groups of 1 give 0; groupSize and equivalent offsets agree with the reference alike', () => {
    const r = rng(SEED + 130)
    const x = r.f32(37)
    expect(Array.from(on(backend, () => rk.groupAdvantages({ scores: x, groupSize: 1 })) as Float32Array)).toEqual(new Array(37).fill(0))
    const y = r.f32(12 * 9)
    const offsets = Int32Array.from({ length: 10 }, (_, i) => i * 12)
    compare(backend, rk.groupAdvantages, { scores: y, groupSize: 12 }, 'groupSize 12')
    compare(backend, rk.groupAdvantages, { scores: y, offsets }, 'offsets of 12')
    expect(() => on(backend, () => rk.groupAdvantages({ scores: r.f32(10), groupSize: 3 }))).toThrow(RangeError)
  })
})
