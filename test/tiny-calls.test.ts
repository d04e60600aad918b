/**
 * The tiny-call path (issue 13, bench/NOTES.md "Version 5"): what was made cheaper must read and check
 * exactly what it did before. The options are read once each (`out` with them), the validated arguments
 * of the token ops hold every field the kernels read (they are now written out, not spread), and the
 * addon's argument snapshot reads keys of any length and skips non-string keys, interns keys and short
 * strings per thread (and reads the others as strings), and gives a call made from a getter its own records.
 * No timing here: speed lives in `npm run bench -- --host` (the `tiny` rows).
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { MessageChannel, Worker } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { validatorOf } from '../src/ops.js'
import { nativeArgs } from '../src/native.js'
import { optionsAndOut } from '../src/validate.js'
import { HOST_BACKENDS, on, useBackend } from './backends.js'

const M = 16
const values = (seed: number) => Float32Array.from({ length: M }, (_, i) => Math.sin(seed * 2.3 + i * 1.7) - 1.2)

/** An options object whose every property counts its reads. */
function counted(options: Record<string, unknown>): { options: Record<string, unknown>; reads: Record<string, number> } {
  const reads: Record<string, number> = {}
  const o: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) {
    reads[key] = 0
    Object.defineProperty(o, key, { enumerable: true, get: () => { reads[key]++; return value } })
  }
  return { options: o, reads }
}

describe('optionsAndOut: one read of every option, `out` apart', () => {
  it('reads each property once, own and inherited, and holds out apart', () => {
    const out = { perToken: new Float32Array(M) }
    const { options, reads } = counted({ logp: 1, out, clipLow: 0.1 })
    const child = Object.create(options) as Record<string, unknown>
    child.advantages = 2
    const r = optionsAndOut('policyLoss', child)
    expect(r.out).toBe(out)
    expect(r.options).toEqual({ advantages: 2, logp: 1, clipLow: 0.1 })
    expect(Object.hasOwn(r.options, 'out')).toBe(false)
    expect(reads).toEqual({ logp: 1, out: 1, clipLow: 1 })
  })
  it('refuses what is not an options object', () => {
    for (const bad of [undefined, null, 3, 'x', [1]]) {
      expect(() => optionsAndOut('policyLoss', bad)).toThrow(TypeError)
    }
  })
  for (const backend of HOST_BACKENDS) {
    it(`a public call reads each option once, out included (${backend})`, () => {
      on(backend, () => {
        const out = { perToken: new Float32Array(M), gradLogp: new Float32Array(M) }
        const { options, reads } = counted({ logp: values(1), oldLogp: values(2), advantages: values(3), clipLow: 0.1, out })
        const r = rk.policyLoss(options as never) as rk.PolicyLossResult
        expect(reads).toEqual({ logp: 1, oldLogp: 1, advantages: 1, clipLow: 1, out: 1 })
        expect(r.gradLogp).toBe(out.gradLogp)
        const plain = rk.policyLoss({ logp: values(1), oldLogp: values(2), advantages: values(3), clipLow: 0.1 })
        expect(Array.from(out.gradLogp)).toEqual(Array.from(plain.gradLogp))
        expect(r.loss).toBe(plain.loss)
      })
    })
  }
})

describe('the validated arguments of the token ops hold every field', () => {
  const f = (seed: number) => values(seed)
  const cases: [string, Record<string, unknown>, string[]][] = [
    ['policyLoss', { logp: f(1), oldLogp: f(2), advantages: f(3), dualClip: 3 }, [
      'layout', 'mask', 'agg', 'logp', 'oldLogp', 'advantages', 'clipLow', 'clipHigh', 'dualClip', 'logRatioClamp', 'variant', 'isLevel',
      'ratioCap', 'behaviorLogp', 'rolloutCorrection', 'rolloutIsLow', 'rolloutIsHigh', 'opsmDelta']],
    ['klPenalty', { logp: f(1), refLogp: f(2), outputClamp: 5 }, ['layout', 'mask', 'agg', 'logp', 'refLogp', 'estimator', 'logRatioClamp', 'outputClamp']],
    ['valueLoss', { values: f(1), returns: f(2), oldValues: f(3), clip: 0.2, half: true }, ['layout', 'mask', 'agg', 'clip', 'half', 'values', 'returns', 'oldValues']],
  ]
  for (const [op, options, keys] of cases) {
    it(op, () => {
      const args = validatorOf(op)!(options) as Record<string, unknown>
      expect(Object.keys(args).sort()).toEqual([...keys].sort())
      expect((args.layout as { tokens: number }).tokens).toBe(M)
      for (const [k, v] of Object.entries(options)) {
        if (typeof v === 'number' || typeof v === 'boolean') expect(args[k]).toBe(v)
        else expect((args[k] as { data: Float32Array }).data).toEqual(v)
      }
    })
  }
})

describe('the validated arguments of the vocabulary ops and ppoLoss hold every field, in order', () => {
  // their validators add to the fresh rows / batch by Object.assign, not after a spread (bench/NOTES.md "Version 5")
  const N = 4
  const V = 6
  const logits = () => new rk.Tensor(Float32Array.from({ length: N * V }, (_, i) => Math.sin(i * 0.7)), [N, V], 'float32')
  const targets = Int32Array.from([0, 5, 2, -100])
  const vec = (seed: number) => Float32Array.from({ length: N }, (_, i) => Math.cos(seed + i))
  const ROWS = ['logits', 'shape', 'N', 'V', 'targets', 'ignoreIndex', 'temperature']
  const cases: [string, Record<string, unknown>, string[]][] = [
    ['logProbs', { logits: logits(), targets, entropy: true }, [...ROWS, 'entropy', 'sumProbSq', 'maxProb']],
    ['logProbsBackward', { logits: logits(), targets, lse: vec(1), gradLogp: vec(2) },
      [...ROWS, 'lse', 'gradLogp', 'gradEntropy', 'entropy', 'gradSumProbSq', 'sumProbSq']],
    ['crossEntropy', { logits: logits(), targets, labelSmoothing: 0.25, zLoss: 0.5, grad: true },
      [...ROWS, 'reduction', 'labelSmoothing', 'zLoss', 'classWeights', 'tokenWeights', 'grad', 'gradDtype']],
    ['keptLogProbs', { logits: logits(), targets, topK: 3 }, [...ROWS, 'keepOffsets', 'keepTokens', 'topK', 'topP', 'minP', 'gradLogp']],
    ['ppoLoss', { logits: logits(), actions: Int32Array.from([0, 5, 2, 1]), oldLogp: vec(1), advantages: vec(2), beta: 0.125, clipHigh: 0.3 }, [
      'layout', 'mask', 'agg', 'logits', 'shape', 'V', 'actions', 'oldLogp', 'anchorLogits', 'refLogp', 'advantages', 'values', 'returns',
      'oldValues', 'temperature', 'clipLow', 'clipHigh', 'dualClip', 'logRatioClamp', 'variant', 'isLevel', 'ratioCap', 'behaviorLogp',
      'rolloutCorrection', 'rolloutIsLow', 'rolloutIsHigh', 'opsmDelta', 'beta', 'c1', 'klEstimator', 'klOutputClamp', 'valueClip', 'half',
      'gradDtype', 'trustRegion']],
  ]
  for (const [op, options, keys] of cases) {
    it(op, () => {
      const args = validatorOf(op)!(options) as Record<string, unknown>
      expect(Object.keys(args)).toEqual(keys)
      expect(args.V).toBe(V)
      expect(args.shape).toEqual([N, V])
      for (const [k, v] of Object.entries(options)) {
        if (typeof v === 'number' || typeof v === 'boolean') expect(ArrayBuffer.isView(args[k]) ? Array.from(args[k] as Int32Array) : args[k]).toEqual(ArrayBuffer.isView(args[k]) ? Array(N).fill(v) : v)
      }
      if (op !== 'ppoLoss') expect(Array.from(args.targets as Int32Array)).toEqual(Array.from(targets))
    })
  }
})

const addonPath = new URL('../build/Release/rlhf_kernels.node', import.meta.url).pathname
const addon = existsSync(addonPath) ? (createRequire(import.meta.url)(addonPath) as Record<string, (a: object) => any>) : null

describe.skipIf(addon === null)('the addon argument snapshot', () => {
  const args = () => nativeArgs(validatorOf('policyLoss')!({ logp: values(1), oldLogp: values(2), advantages: values(3) })) as Record<string, unknown>
  it('reads a key longer than its stack buffer in full', () => {
    for (const length of [62, 63, 64, 200]) {
      const key = 'k'.repeat(length)
      expect(() => addon!.policyLoss({ ...args(), out: { [key]: new Float32Array(M) } })).toThrow(new TypeError(`policyLoss: out.${key} must be absent: this call makes no ${key}`))
    }
    const key = 'é'.repeat(40)  // 80 bytes of UTF-8
    expect(() => addon!.policyLoss({ ...args(), out: { [key]: new Float32Array(M) } })).toThrow(new TypeError(`policyLoss: out.${key} must be absent: this call makes no ${key}`))
  })
  it('a getter that calls the addon while the arguments are read: each call reads its own arguments', () => {
    const a = args()
    const b = nativeArgs(validatorOf('policyLoss')!({ logp: values(4), oldLogp: values(5), advantages: values(6), clipHigh: 0.3 })) as Record<string, unknown>
    const [ra, rb] = [addon!.policyLoss(a), addon!.policyLoss(b)]
    expect(ra.loss).not.toBe(rb.loss)
    const inner: { loss: number; gradLogp: Float32Array }[] = []
    // the inner calls come after some of the outer arguments were read (top level and nested), and hold more
    // properties than the reader's first block has records, so a shared block would be overwritten and grown
    const many = () => Object.assign(Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`extra${i}`, i])), b)
    const outer = addon!.policyLoss({
      ...a,
      layout: { ...(a.layout as object), get width() { inner.push(addon!.policyLoss(many())); return (a.layout as { width: number }).width } },
      get clipHigh() { inner.push(addon!.policyLoss(many())); return a.clipHigh },
    })
    expect(outer.loss).toBe(ra.loss)
    expect(Array.from(outer.gradLogp)).toEqual(Array.from(ra.gradLogp))
    expect(inner.map((r) => r.loss)).toEqual([rb.loss, rb.loss])
    expect(Array.from(inner[1].gradLogp)).toEqual(Array.from(rb.gradLogp))
  })
  it('reads keys and strings it did not intern: a fresh thread whose table of names is full', async () => {
    const a = args()
    const expected = addon!.policyLoss(a)
    // the worker's env has its own reader: 5000 distinct keys fill its table first, so that every key of the
    // real call and its dtype strings arrive as strings
    const code = `
      const { parentPort, workerData } = require('node:worker_threads')
      const addon = require(workerData.path)
      const junk = {}
      for (let i = 0; i < 5000; i++) junk['junk' + i] = i
      try { addon.policyLoss(junk) } catch {}
      const r = addon.policyLoss(workerData.args)
      let error = ''
      try { addon.policyLoss({ ...workerData.args, logp: { data: workerData.args.logp.data, dtype: 'float64' } }) } catch (e) { error = e.message }
      parentPort.postMessage({ loss: r.loss, gradLogp: Array.from(r.gradLogp), count: r.count, error })`
    const worker = new Worker(code, { eval: true, workerData: { path: addonPath, args: a } })
    const got = await new Promise<{ loss: number; gradLogp: number[]; count: number; error: string }>((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
    })
    await worker.terminate()
    expect(got.loss).toBe(expected.loss)
    expect(got.count).toBe(M)
    expect(got.gradLogp).toEqual(Array.from(expected.gradLogp))
    expect(got.error).toBe('policyLoss: logp.data does not match its dtype float64')
  })
  it('a string value longer than the reader interns is read in full', () => {
    const a = args()
    const dtype = 'float32'.padEnd(100, ' ')
    expect(() => addon!.policyLoss({ ...a, logp: { data: (a.logp as { data: Float32Array }).data, dtype } })).toThrow(new TypeError('policyLoss: logp.dtype must be a float dtype'))
    expect(addon!.policyLoss({ ...a, clipLow: 0.2, clipHigh: 0.2 }).loss).toBe(addon!.policyLoss(nativeArgs(validatorOf('policyLoss')!({ logp: values(1), oldLogp: values(2), advantages: values(3), clipLow: 0.2, clipHigh: 0.2 }))).loss)
  })
  it('skips symbol keys and reads a function or an array as no object', () => {
    const expected = addon!.policyLoss(args())
    const withSymbol = { ...args(), [Symbol('logp')]: 1 }
    expect(addon!.policyLoss(withSymbol).loss).toBe(expected.loss)
    for (const notObject of [() => 0, [1, 2], new ArrayBuffer(8), new DataView(new ArrayBuffer(8))]) {
      expect(() => addon!.policyLoss({ ...args(), layout: notObject })).toThrow(new TypeError('policyLoss: layout must be an object'))
    }
  })
})

describe.skipIf(addon === null)('the addon result object (made by one function per op and output set)', () => {
  const fields = (addon as unknown as { resultFields: Record<string, string[]> } | null)?.resultFields ?? {}
  const policy = () => nativeArgs(validatorOf('policyLoss')!({ logp: values(1), oldLogp: values(2), advantages: values(3), dualClip: 3 }))
  it('holds the outputs in the order made, then the scalars in field order, each of its own call', async () => {
    const r = addon!.policyLoss(policy())
    expect(Object.keys(r)).toEqual(['perToken', 'gradLogp', ...fields.policyLoss])
    const js = on('js', () => rk.policyLoss({ logp: values(1), oldLogp: values(2), advantages: values(3), dualClip: 3 })) as unknown as Record<string, unknown>
    for (const key of fields.policyLoss) expect(r[key], key).toBeCloseTo(js[key] as number, 5)
    expect(r.count).toBe(M)
    // a second call (other inputs) does not change the first result; an async one has its own values
    const other = addon!.policyLoss(nativeArgs(validatorOf('policyLoss')!({ logp: values(4), oldLogp: values(5), advantages: values(6) })))
    expect(other.loss).not.toBe(r.loss)
    expect(addon!.policyLoss(policy()).loss).toBe(r.loss)
    const [a, b] = await Promise.all([addon!.policyLossAsync(policy()), addon!.policyLossAsync(nativeArgs(validatorOf('policyLoss')!({ logp: values(4), oldLogp: values(5), advantages: values(6) })))])
    expect([a.loss, b.loss]).toEqual([r.loss, other.loss])
    expect(Object.keys(a)).toEqual(Object.keys(r))
  })
  it('puts grouped scalars in a nested object (ppoLoss metrics) and follows the outputs each call makes', () => {
    const logits = rk.tensor(Float32Array.from({ length: 8 }, (_, i) => Math.sin(i)), [2, 4])
    const ppo = (values?: boolean) => addon!.ppoLoss(nativeArgs(validatorOf('ppoLoss')!({
      logits, actions: Int32Array.from([1, 3]), oldLogp: Float32Array.from([-1, -2]), advantages: Float32Array.from([0.5, -1]),
      ...(values ? { values: Float32Array.from([0.1, 0.2]), returns: Float32Array.from([0.3, -0.1]) } : {}),
    })))
    const withValues = ppo(true)
    expect(Object.keys(withValues)).toEqual(['gradLogits', 'logp', 'gradValues', ...fields.ppoLoss, 'metrics'])
    expect(Object.keys(withValues.metrics)).toEqual(fields['ppoLoss.metrics'])
    expect(withValues.metrics.count).toBe(2)
    expect(Object.keys(ppo(false))).toEqual(['gradLogits', 'logp', ...fields.ppoLoss, 'metrics'])
    const ce = (grad: boolean) => addon!.crossEntropy(nativeArgs(validatorOf('crossEntropy')!({ logits, targets: Int32Array.from([0, 3]), grad })))
    expect(Object.keys(ce(true))).toEqual(['losses', 'lse', 'gradLogits', ...fields.crossEntropy])
    expect(Object.keys(ce(false))).toEqual(['losses', 'lse', ...fields.crossEntropy])
  })
})

for (const backend of HOST_BACKENDS) {
  describe(`async calls of at most 16 KiB of inputs run on the calling thread (cpu), on ${backend}`, () => {
    useBackend(backend)
    it('small and large calls give the sync results, unmoved by later changes to the inputs', async () => {
      for (const n of [M, 1365, 1366, 4096]) {  // 3 × 4 B × 1365 = 16380 B: inline; 1366 and up: the pool
        const make = (seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 2.3 + i * 1.7) - 1.2)
        const o = { logp: make(1), oldLogp: make(2), advantages: make(3) }
        const expected = rk.policyLoss(o)
        const pending = rk.policyLossAsync(o)
        o.logp.fill(0)
        o.advantages.fill(1)
        const r = await pending
        expect(r.loss).toBe(expected.loss)
        expect(Array.from(r.gradLogp)).toEqual(Array.from(expected.gradLogp))
      }
    })
    it('a bad call rejects its promise', async () => {
      await expect(rk.policyLossAsync({ logp: values(1), oldLogp: values(2), advantages: new Float32Array(3) })).rejects.toThrow(RangeError)
    })
  })
}

describe.runIf(HOST_BACKENDS.includes('cpu'))('small results of sync cpu calls share a pool buffer (native/addon/env.h ResultPool)', () => {
  useBackend('cpu')
  const o = { logp: values(1), oldLogp: values(2), advantages: values(3) }
  const arrays = (r: rk.PolicyLossResult) => [r.perToken, r.gradLogp]
  // the same call on arrays of their own (bitwise: the cpu backend is deterministic)
  const reference = (options: typeof o & { mask?: Uint8Array }) => rk.policyLoss(Object.fromEntries(Object.entries(options).map(([k, v]) => [k, v.slice()])) as typeof o)

  it('hands out each range once: results of later calls neither overlap nor change earlier ones', () => {
    const results = Array.from({ length: 150 }, (_, i) => rk.policyLoss({ ...o, advantages: values(10 + i) }))  // more than one pool
    const views = results.flatMap(arrays)
    expect(new Set(views.map((v) => v.buffer)).size).toBeGreaterThan(1)
    for (const [i, a] of views.entries()) {
      expect(a.byteOffset % 64, 'aligned').toBe(0)
      for (const b of views.slice(0, i)) {
        if (a.buffer === b.buffer) expect(a.byteOffset >= b.byteOffset + b.byteLength || b.byteOffset >= a.byteOffset + a.byteLength).toBe(true)
      }
    }
    for (const [i, r] of results.entries()) {
      const want = reference({ ...o, advantages: values(10 + i) })
      expect(Array.from(r.perToken)).toEqual(Array.from(want.perToken))
      expect(Array.from(r.gradLogp)).toEqual(Array.from(want.gradLogp))
    }
  })

  it('an input that views the pool past what it handed out (a view of a result\'s whole buffer) is never written', () => {
    const first = rk.policyLoss(o)
    const end = Math.max(...arrays(first).map((a) => a.byteOffset + a.byteLength))
    // spans the end of the last result and the range the next result would get
    const advantages = new Float32Array(first.gradLogp.buffer, end - 128, M)
    advantages.set(values(7))
    const copy = advantages.slice()
    const r = rk.policyLoss({ ...o, advantages })
    expect(Array.from(advantages)).toEqual(Array.from(copy))
    const want = reference({ ...o, advantages: copy })
    expect(r.loss).toBe(want.loss)
    expect(Array.from(r.perToken)).toEqual(Array.from(want.perToken))
    expect(r.perToken.buffer).not.toBe(first.gradLogp.buffer)
  })

  it('is not transferable: a transfer copies it, and the other results keep their memory', async () => {
    const a = rk.policyLoss(o), b = rk.policyLoss(o)
    expect(b.perToken.buffer).toBe(a.perToken.buffer)
    const before = Array.from(b.perToken)
    const moved = structuredClone(a.perToken, { transfer: [a.perToken.buffer as ArrayBuffer] })
    expect(Array.from(moved)).toEqual(Array.from(a.perToken))
    const { port1, port2 } = new MessageChannel()
    const got = new Promise<Float32Array>((resolve) => port2.once('message', resolve))
    port1.postMessage(b.gradLogp, [b.gradLogp.buffer as ArrayBuffer])
    expect(Array.from(await got)).toEqual(Array.from(b.gradLogp))
    port1.close()
    expect(a.perToken.length).toBe(M)
    expect(Array.from(b.perToken)).toEqual(before)
  })

  it('a pool detached meanwhile is replaced, never written (the addon set up without markAsUntransferable)', () => {
    const dist = (f: string) => JSON.stringify(new URL(`../dist/${f}`, import.meta.url).href)
    const script = `Promise.all([import(${dist('ops.js')}), import(${dist('native.js')}), import(${dist('index.js')})]).then(([ops, native]) => {
      const addon = require(${JSON.stringify(addonPath)})
      addon.setup({ errorClass: Error })
      const v = (s) => Float32Array.from({ length: 16 }, (_, i) => Math.sin(s * 2.3 + i * 1.7) - 1.2)
      const args = native.nativeArgs(ops.validatorOf('policyLoss')({ logp: v(1), oldLogp: v(2), advantages: v(3) }))
      const a = addon.policyLoss(args)
      const want = Array.from(a.perToken)
      const moved = structuredClone(a.perToken, { transfer: [a.perToken.buffer] })
      const before = Array.from(new Float32Array(moved.buffer))
      const b = addon.policyLoss(args)
      console.log(JSON.stringify({ detached: a.gradLogp.length === 0, same: JSON.stringify(Array.from(b.perToken)) === JSON.stringify(want),
        untouched: JSON.stringify(Array.from(new Float32Array(moved.buffer))) === JSON.stringify(before), apart: b.perToken.buffer !== moved.buffer }))
    })`
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })
    expect(JSON.parse(out)).toEqual({ detached: true, same: true, untouched: true, apart: true })
  })

  it('arrays over 2 KiB and async results off the calling thread have buffers of their own', async () => {
    const n = 1024  // 4 KiB per output; 12 KiB of inputs: an async call runs inline
    const big = { logp: Float32Array.from({ length: n }, (_, i) => Math.sin(i) - 1.2), oldLogp: new Float32Array(n).fill(-1), advantages: new Float32Array(n).fill(0.5) }
    for (const x of arrays(rk.policyLoss(big))) expect(x.byteLength === x.buffer.byteLength && x.byteOffset === 0).toBe(true)
    const m = 2048  // 24 KiB of inputs: off the calling thread; 8 KiB outputs
    const far = { logp: new Float32Array(m).fill(-1), oldLogp: new Float32Array(m).fill(-1.5), advantages: new Float32Array(m).fill(1) }
    for (const x of arrays(await rk.policyLossAsync(far))) expect(x.byteLength === x.buffer.byteLength).toBe(true)
    for (const x of arrays(await rk.policyLossAsync(o))) expect(x.buffer.byteLength).toBeGreaterThan(x.byteLength)  // inline: pooled like sync
  })
})
