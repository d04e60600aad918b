/**
 * The advantages family on shapes the parity batch (test/ops/advantages.test.ts) does not reach: the cpu
 * kernels run gae several sequences at once (a lane takes the next sequence when its own ends, so ragged and
 * empty sequences put the lanes at different points), and whiten / groupAdvantages 8 values at a time with a
 * partial vector at the end of the input or of a group. Each native backend against the js reference.
 */
import { describe, it } from 'vitest'
import * as rk from '../../src/index.js'
import { NATIVE_BACKENDS } from '../backends.js'
import { rng } from '../helpers.js'
import { SEED, asDtype, compare } from '../parity.js'

describe.each(NATIVE_BACKENDS)(`advantages on lane-shaped inputs on %s (seed ${SEED})`, (backend) => {
  it('gae over 150 ragged sequences, some empty, masked and not, with and without lastValues', () => {
    const r = rng(SEED + 61)
    const lengths = Int32Array.from({ length: 150 }, (_, i) => (i % 7 === 3 ? 0 : 1 + r.int(i % 3 ? 60 : 6)))
    const M = lengths.reduce((a, b) => a + b, 0)
    for (const mask of [r.mask(M, 0.8), undefined]) {
      for (const lastValues of [r.f32(lengths.length), undefined]) {
        const o = { rewards: r.f32(M), values: r.f32(M), seqLengths: lengths, mask, gamma: 0.99, lambda: 0.95, lastValues }
        compare(backend, rk.gae, o, `gae ${M} tokens, mask ${mask !== undefined}, lastValues ${lastValues !== undefined}`)
      }
    }
  })

  it.each(['float32', 'bfloat16'] as const)('whiten of 1003 values around 1000 and groupAdvantages in groups of 1 to 21, %s', (dtype) => {
    const r = rng(SEED + 62)
    const N = 1003
    const x = Float32Array.from(r.f32(N), (v) => 1000 + 0.01 * v)
    const values = asDtype(dtype === 'float32' ? x : r.f32(N), [N], dtype)
    compare(backend, rk.whiten, { values, mask: r.mask(N, 0.7) }, `whiten ${dtype} masked`)
    compare(backend, rk.whiten, { values, shiftMean: false }, `whiten ${dtype}`)
    const sizes = Array.from({ length: 60 }, (_, i) => 1 + (i % 21))
    const offsets = Int32Array.from([0, ...sizes.map((_, i) => sizes.slice(0, i + 1).reduce((a, b) => a + b, 0))])
    const K = offsets[offsets.length - 1]
    const scores = asDtype(Float32Array.from(r.f32(K), (v) => 5 + 0.005 * v), [K], dtype)
    for (const method of rk.GROUP_METHODS) compare(backend, rk.groupAdvantages, { scores, offsets, method }, `groupAdvantages ${dtype} ${method}`)
  })
})
