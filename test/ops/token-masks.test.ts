/**
 * Token masks on the native path: a sync call reads a mask in place and checks its 0/1 bytes a word at a
 * time (native/addon/args.h), the kernels count a token where its byte is nonzero (count_nonzero,
 * native/cpu/aggregate.cc, 16 bytes a step in runs of 255 steps; policyLoss's mask lanes from 32-bit words),
 * and a float32 mask becomes bytes from its bits (src/validate.ts). Parity with the js reference on
 * sequences whose lengths are not multiples of the lanes, of the 16-byte steps or of the runs, with an empty
 * and an all-masked sequence, in every aggregation mode, for byte and float masks; the addon's 0/1 check
 * wherever the bad byte sits; a mask in a SharedArrayBuffer rewritten by another thread during sync calls.
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { AGGREGATIONS, KL_ESTIMATORS } from '../../src/choices.js'
import { maskVector } from '../../src/validate.js'
import { combos, rng } from '../helpers.js'
import { NATIVE_BACKENDS } from '../backends.js'
import { SEED, compare, describeParity, titled } from '../parity.js'

// 0 and 1 tokens, odd lengths around a vector of 8 and a step of 16, one run of 255 steps (4080) and past
// it, a long one, an all-masked one (index 8)
const LENGTHS = [0, 1, 7, 15, 17, 4080, 4081, 8200, 300, 33]
const ALL_MASKED = 8
// float mask values: counted where nonzero and not NaN (a subnormal and infinity count, −0 does not)
const FLOAT_VALUES = [0, 1, 0.5, -2, NaN, -0, 1e-45, Infinity, -Infinity, 0, 1, 1]

function batch(seed: number) {
  const r = rng(seed)
  const seqLengths = Int32Array.from(LENGTHS)
  const M = LENGTHS.reduce((a, b) => a + b, 0)
  const start = LENGTHS.slice(0, ALL_MASKED).reduce((a, b) => a + b, 0)
  const bytes = r.mask(M, 0.8)
  bytes.fill(0, start, start + LENGTHS[ALL_MASKED])
  const floats = Float32Array.from(bytes, (b) => (b ? FLOAT_VALUES[r.int(FLOAT_VALUES.length)] : 0))
  floats.forEach((x, i) => { if (bytes[i] && !(x !== 0 && x === x)) bytes[i] = 0 })  // the same tokens count
  const logp = r.f32(M, 0.5)
  return { M, seqLengths, bytes, floats, logp, old: Float32Array.from(logp, (x) => x + r.normal() * 0.3), adv: r.f32(M), ret: r.f32(M) }
}

describeParity('token masks', () => {
  const cases = combos({ backend: NATIVE_BACKENDS, aggregation: AGGREGATIONS, maskKind: ['bytes', 'float32'] as const })
  it.each(titled('$aggregation, a $maskKind mask on $backend', cases.map((c, i) => ({ ...c, seed: SEED + i }))))('%s', (_, c) => {
    const x = batch(c.seed)
    const mask = c.maskKind === 'bytes' ? x.bytes : x.floats
    const common = { seqLengths: x.seqLengths, mask, aggregation: c.aggregation }
    compare(c.backend, rk.policyLoss, { logp: x.logp, oldLogp: x.old, advantages: x.adv, ...common }, 'policyLoss')
    compare(c.backend, rk.policyLoss, { logp: x.logp, oldLogp: x.old, advantages: x.adv, dualClip: 3, ...common }, 'policyLoss dual clip')
    compare(c.backend, rk.klPenalty, { logp: x.logp, refLogp: x.old, estimator: 'k3' as const, ...common }, 'klPenalty')
    compare(c.backend, rk.valueLoss, { values: x.logp, returns: x.ret, oldValues: x.old, clip: 0.2, ...common }, 'valueLoss')
    // a float mask counts the tokens its bytes count
    const byBytes = rk.policyLoss({ logp: x.logp, oldLogp: x.old, advantages: x.adv, ...common, mask: x.bytes })
    const byFloats = rk.policyLoss({ logp: x.logp, oldLogp: x.old, advantages: x.adv, ...common, mask: x.floats })
    expect(byFloats.loss).toBe(byBytes.loss)
    expect(byFloats.gradLogp).toEqual(byBytes.gradLogp)
  })
})

describe('a float32 mask to bytes (src/validate.ts)', () => {
  it.each([0, 1, 3, 4, 5, 8, 13, 4099])('length %i, at a byte offset of 4, every special value', (n) => {
    const buffer = new Float32Array(n + 2)
    const m = new Float32Array(buffer.buffer, 4, n)
    for (let i = 0; i < n; i++) m[i] = FLOAT_VALUES[(i * 5 + n) % FLOAT_VALUES.length]
    const got = maskVector('t', 'mask', m, n)!
    expect(Array.from(got)).toEqual(Array.from(m, (x) => (x !== 0 && x === x ? 1 : 0)))
    // a NaN with the sign bit and a payload, the largest float, the smallest normal
    const special = Float32Array.of(-NaN, 3.4028234663852886e38, 1.1754943508222875e-38, -1.1754943508222875e-38)
    new Uint32Array(special.buffer)[0] = 0xffc00001
    expect(Array.from(maskVector('t', 'mask', special, 4)!)).toEqual([0, 1, 1, 1])
  })
})

const addonPath = new URL('../../build/Release/rlhf_kernels.node', import.meta.url).pathname
const cpu = rk.backends().find((b) => b.name === 'cpu')!

describe.runIf(cpu.available && existsSync(addonPath))('the addon reads a mask in place and checks its bytes', () => {
  const addon = createRequire(import.meta.url)(addonPath)
  const M = 3 * 4096 + 37
  const f = (n: number) => ({ data: Float32Array.from({ length: n }, (_, i) => -1 - 0.001 * i), dtype: 'float32' })
  const layout = { tokens: M, offsets: Int32Array.of(0, 100, 4196, M), width: 4096 }
  const logp = f(M), old = f(M), adv = f(M)
  const policy = (mask: Uint8Array) => addon.policyLoss({ layout, logp, oldLogp: old, advantages: adv, mask, clipLow: 0.2, clipHigh: 0.2, logRatioClamp: 20 })
  const kl = (mask: Uint8Array) => addon.klPenalty({ layout, logp, refLogp: old, mask, estimator: KL_ESTIMATORS.indexOf('k3'), logRatioClamp: 20 })
  const ones = Uint8Array.from({ length: M }, (_, i) => (i % 3 === 0 ? 0 : 1))

  // every byte of a word, the word loop's four accumulators, a 4 KiB block's edges, the bytes past the last whole block
  it.each([0, 1, 2, 3, 4, 5, 6, 7, 8, 31, 32, 4093, 4095, 4096, 8191, 12287, 12288, M - 1])('a byte 2 at %i is a RangeError (policyLoss, klPenalty, sync and async)', async (at) => {
    for (const big of [2, 0x80]) {
      const m = ones.slice()
      m[at] = big
      expect(() => policy(m)).toThrow(RangeError)
      expect(() => policy(m)).toThrow(/mask must hold 0 or 1/)
      expect(() => kl(m)).toThrow(/mask must hold 0 or 1/)
      await expect(addon.policyLossAsync({ layout, logp, oldLogp: old, advantages: adv, mask: m, clipLow: 0.2, clipHigh: 0.2, logRatioClamp: 20 })).rejects.toThrow(/mask must hold 0 or 1/)
    }
    expect(policy(ones).count).toBe(ones.reduce((a, b) => a + b, 0))
  })

  it('a mask in a SharedArrayBuffer rewritten (1 ↔ 2, 0) by another thread during sync calls: a result or the RangeError, never a crash', async () => {
    const at = Math.ceil(M / 4) * 4  // the stop flag, after the mask
    const shared = new SharedArrayBuffer(at + 4)
    const mask = new Uint8Array(shared, 0, M)
    mask.set(ones)
    const stop = new Int32Array(shared, at, 1)
    const code = `
      const { parentPort, workerData } = require('node:worker_threads')
      const { shared, M, at } = workerData
      const mask = new Uint8Array(shared, 0, M), stop = new Int32Array(shared, at, 1)
      parentPort.postMessage('ready')
      let x = 1
      for (let k = 0; Atomics.load(stop, 0) === 0; k++) {
        const i = (k * 2654435761) % M
        mask[i] = (x = (x * 1103515245 + 12345) >>> 0) % 3
      }
      parentPort.postMessage('done')`
    const worker = new Worker(code, { eval: true, workerData: { shared, M, at } })
    await new Promise((resolve) => worker.once('message', resolve))
    const done = new Promise((resolve) => worker.once('message', resolve))
    let results = 0, refused = 0
    try {
      for (let k = 0; k < 300; k++) {
        for (const call of [() => policy(mask), () => kl(mask), () => rk.policyLoss({ logp: logp.data, oldLogp: old.data, advantages: adv.data, mask })]) {
          try {
            const r = call()
            expect(Number.isFinite(r.loss)).toBe(true)
            results++
          } catch (e) {
            expect(e).toBeInstanceOf(RangeError)
            expect(String(e)).toMatch(/mask must hold 0 or 1/)
            refused++
          }
        }
      }
    } finally {
      Atomics.store(stop, 0, 1)
      await done
      await worker.terminate()
    }
    expect(results + refused).toBe(900)
  })
})
