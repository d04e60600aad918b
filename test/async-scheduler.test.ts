/**
 * Async cpu calls on the kernels' own pool (native/addon/scheduler.h): results identical to sync at any number
 * in flight, the bound on the bytes of copied inputs in flight (calls beyond it wait, unread), what a call
 * that waited reads, a one-thread pool, and workers terminated with calls queued. Cases that can crash or that
 * need another pool size run in a child process.
 */
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { rng } from './helpers.js'

const addonPath = rk.nativeStatus.loaded ? rk.nativeStatus.path! : null
const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url))

interface SchedulerState { limit: number; jobs: number; bytes: number; peakBytes: number; waiting: number; threads: number }
const scheduler = (limit?: number): SchedulerState => createRequire(import.meta.url)(addonPath!)._asyncScheduler(limit)

function ceArgs(seed: number, N = 16, V = 4000) {
  const r = rng(seed)
  return { logits: rk.tensor(r.f32(N * V, 3), [N, V]), targets: r.ints(N, V), grad: true }
}
const same = (got: rk.CrossEntropyResult, want: rk.CrossEntropyResult) => {
  expect(got.loss).toBe(want.loss)
  expect(Array.from(got.gradLogits!.data)).toEqual(Array.from(want.gradLogits!.data))
}

function child(code: string, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } })
  return { status: r.status, signal: r.signal, out: r.stdout.trim(), err: r.stderr.trim() }
}

describe.runIf(addonPath)('async cpu calls on the kernels pool', () => {
  let before: number
  afterEach(() => {
    if (before !== undefined) scheduler(before)
  })

  it('give the sync results, 1 to 32 in flight, with and without waiting for the bound', async () => {
    rk.setBackend('cpu')
    before = scheduler().limit
    const jobs = Array.from({ length: 32 }, (_, i) => ceArgs(100 + i, 4 + (i % 8), 2000 + 37 * i))
    const want = jobs.map((j) => rk.crossEntropy(j))
    const r = rng(7)
    const T = 1 << 13
    const policy = { logp: r.f32(T, 1), oldLogp: r.f32(T, 1), advantages: r.f32(T, 1), mask: Uint8Array.from(r.ints(T, 2)) }
    const policyWant = rk.policyLoss(policy)
    for (const limit of [before, 1 << 20, 0]) {
      scheduler(limit)
      for (const k of [1, 2, 8, 32]) {
        const got = await Promise.all(jobs.slice(0, k).map((j) => rk.crossEntropyAsync(j)))
        got.forEach((g, i) => same(g, want[i]))
        const p = await Promise.all(Array.from({ length: k }, () => rk.policyLossAsync(policy)))
        for (const g of p) {
          expect(g.loss).toBe(policyWant.loss)
          expect(Array.from(g.gradLogp!)).toEqual(Array.from(policyWant.gradLogp!))
        }
      }
    }
    rk.setBackend('auto')
  }, 180_000)

  it('hold at most the limit plus one call of copied inputs and outputs in flight; the rest wait', async () => {
    rk.setBackend('cpu')
    before = scheduler().limit
    const jobs = Array.from({ length: 20 }, (_, i) => ceArgs(200 + i))
    const want = jobs.map((j) => rk.crossEntropy(j))
    // one call's bytes: with limit 0 a call starts only when none is in flight
    scheduler(0)
    await Promise.all([rk.crossEntropyAsync(jobs[0]), rk.crossEntropyAsync(jobs[1])])
    const one = scheduler().peakBytes
    // the logits' copy, the targets', the gradient and the per-row losses and lse
    expect(one).toBe(2 * 16 * 4000 * 4 + 3 * 16 * 4)
    for (const limit of [0, one, 2.5 * one, 3 * one]) {
      scheduler(limit)
      const pending = jobs.map((j) => rk.crossEntropyAsync(j))
      const queued = scheduler()
      const got = await Promise.all(pending)
      got.forEach((g, i) => same(g, want[i]))
      const after = scheduler()
      // calls start while fewer than `limit` bytes are in flight (one always starts when none is)
      const most = Math.max(1, Math.ceil(limit / one)) * one
      expect(after.peakBytes).toBe(most)
      expect(after.peakBytes).toBeLessThanOrEqual(Math.max(limit, 1) + one)
      expect(queued.jobs * one).toBe(most)
      expect(queued.waiting).toBe(20 - queued.jobs)
      expect(after).toMatchObject({ jobs: 0, bytes: 0, waiting: 0 })
    }
    rk.setBackend('auto')
  }, 120_000)

  it('a call that waited reads its arguments when it starts: changed inputs count, a detached one rejects', async () => {
    rk.setBackend('cpu')
    before = scheduler().limit
    scheduler(0)
    const first = ceArgs(300, 64, 4000)
    const changed = ceArgs(301)
    const detached = ceArgs(302)
    const last = ceArgs(303)
    const p1 = rk.crossEntropyAsync(first)
    const p2 = rk.crossEntropyAsync(changed)
    const p3 = rk.crossEntropyAsync(detached)
    const p4 = rk.crossEntropyAsync(last)
    expect(scheduler().waiting).toBe(3)
    changed.logits.data.fill(0.5)
    structuredClone(detached.logits.data.buffer, { transfer: [detached.logits.data.buffer as ArrayBuffer] })
    const wantChanged = rk.crossEntropy(changed)
    same(await p1, rk.crossEntropy(first))
    same(await p2, wantChanged)
    expect(wantChanged.loss).toBeCloseTo(Math.log(4000), 4)  // all logits equal: the mutation was read
    await expect(p3).rejects.toThrow(/logits/)
    same(await p4, rk.crossEntropy(last))
    expect(scheduler()).toMatchObject({ jobs: 0, bytes: 0, waiting: 0 })
    rk.setBackend('auto')
  }, 60_000)

  it('read inputs and write outputs over a SharedArrayBuffer in place: only index arrays are copied', async () => {
    rk.setBackend('cpu')
    before = scheduler().limit
    const N = 24, V = 3000
    const overShared = <T extends Float32Array | Int32Array | Uint8Array>(a: T): T => {
      const c = new (a.constructor as new (b: SharedArrayBuffer) => T)(new SharedArrayBuffer(a.byteLength))
      c.set(a as never)
      return c
    }
    const plain = ceArgs(400, N, V)
    const want = rk.crossEntropy(plain)
    const peakOf = async (args: Parameters<typeof rk.crossEntropyAsync>[0]) => {
      scheduler(1 << 30)
      const got = await rk.crossEntropyAsync(args)
      same(got, want)
      return scheduler().peakBytes
    }
    const logits = rk.tensor(overShared(plain.logits.data as Float32Array), [N, V])
    const targets = overShared(plain.targets)
    // a job holds its copies and its fresh outputs (the per-row losses and lse, the gradient unless given)
    // until it settles: copied, logits, targets and a block for out.gradLogits; over shared memory, only the
    // targets, and a shared out.gradLogits is written in place
    const rows = N * 4 + 2 * N * 4, grad = N * V * 4
    expect(await peakOf({ ...plain, out: { gradLogits: new Float32Array(N * V) } })).toBe(grad + rows + grad)
    expect(await peakOf({ ...plain, logits, targets })).toBe(rows + grad)
    const gradLogits = overShared(new Float32Array(N * V))
    expect(await peakOf({ ...plain, logits, out: { gradLogits } })).toBe(rows)
    const direct = await rk.crossEntropyAsync({ ...plain, logits, out: { gradLogits } })
    expect(direct.gradLogits!.data).toBe(gradLogits)
    // the per-token ops: a mask and the float inputs in place, the layout's offsets copied
    const r = rng(401)
    const T = 5000
    const policy = { logp: r.f32(T, 1), oldLogp: r.f32(T, 1), advantages: r.f32(T, 1), mask: Uint8Array.from(r.ints(T, 2)), seqLengths: Int32Array.of(1000, 3000, 1000) }
    const policyWant = rk.policyLoss(policy)
    scheduler(1 << 30)
    const got = await rk.policyLossAsync({ ...policy, logp: overShared(policy.logp), oldLogp: overShared(policy.oldLogp), advantages: overShared(policy.advantages), mask: overShared(policy.mask) })
    expect(scheduler().peakBytes).toBe(4 * 4 + 2 * T * 4)  // the layout's 4 offsets; perToken and gradLogp
    expect(got.loss).toBe(policyWant.loss)
    expect(Array.from(got.gradLogp!)).toEqual(Array.from(policyWant.gradLogp!))
    rk.setBackend('auto')
  }, 60_000)

  it('SharedArrayBuffer inputs rewritten by another thread while async calls read them: results or RangeErrors, never a crash', () => {
    const r = child(`import * as rk from ${JSON.stringify(dist)}
      import { Worker } from 'node:worker_threads'
      rk.setBackend('cpu')
      const N = 16, V = 2048, T = 20000  // V a multiple of every build's 4 vectors: maxProb's scan ends at V
      const shared = new SharedArrayBuffer(4 * (N * V + 3 * T) + T + 4)
      const logits = new Float32Array(shared, 0, N * V), logp = new Float32Array(shared, 4 * N * V, T)
      const old = new Float32Array(shared, 4 * (N * V + T), T), adv = new Float32Array(shared, 4 * (N * V + 2 * T), T)
      const mask = new Uint8Array(shared, 4 * (N * V + 3 * T), T).fill(1), stop = new Int32Array(shared, shared.byteLength - 4, 1)
      const floats = new Float32Array(shared, 0, N * V + 3 * T)
      const code = 'const { parentPort, workerData: s } = require("node:worker_threads");'
        + 'const f = new Float32Array(s, 0, ' + (N * V + 3 * T) + '), m = new Uint8Array(s, ' + 4 * (N * V + 3 * T) + ', ' + T + '), stop = new Int32Array(s, s.byteLength - 4, 1);'
        + 'const bad = [NaN, Infinity, -Infinity, 1e38, -3, 0]; let x = 1; parentPort.postMessage(0);'
        + 'for (let k = 0; Atomics.load(stop, 0) === 0; k++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0;'
        + 'f[x % f.length] = k % 3 ? -Math.random() : bad[k % 6]; m[x % m.length] = x % 3 }'
      const worker = new Worker(code, { eval: true, execArgv: [], workerData: shared })
      await new Promise((r) => worker.once('message', r))
      const targets = Int32Array.from({ length: N }, (_, i) => (i * 131) % V)
      let results = 0, refused = 0, other = []
      // the kernels that read a shared input more than once: GSPO's mask (the gradient written in a later
      // pass), maxProb's row (its argmax a second scan), the sampled kept set (the row's max and its copy)
      const seqLengths = Int32Array.of(T / 4, T / 4, T / 2)
      const calls = [
        () => rk.crossEntropyAsync({ logits: rk.tensor(logits, [N, V]), targets, grad: true }),
        () => rk.policyLossAsync({ logp, oldLogp: old, advantages: adv, mask }),
        () => rk.policyLossAsync({ logp, oldLogp: old, advantages: adv, mask, seqLengths, isLevel: 'sequence' }),
        () => rk.logProbsAsync({ logits: rk.tensor(logits, [N, V]), targets, maxProb: true, entropy: true }).then((r) => {
          if (!r.maxToken.every((a) => a >= -1 && a < V)) throw new Error('maxToken out of the row: ' + r.maxToken)
          return r
        }),
        () => rk.keptLogProbsAsync({ logits: rk.tensor(logits, [N, V]), targets, topK: 50, topP: 0.9, minP: 0.01, gradLogp: new Float32Array(N).fill(1) }),
      ]
      const call = (k) => calls[k % calls.length]()
        .then((r) => { results += typeof r === 'object' && Object.values(r).every((v) => typeof v === 'number' || ArrayBuffer.isView(v) || ArrayBuffer.isView(v?.data)) ? 1 : 0 }, (e) => { if (e instanceof RangeError && /mask must hold 0 or 1/.test(e.message)) refused++; else other.push(String(e)) })
      for (let k = 0; k < 400; k += 8) await Promise.all(Array.from({ length: 8 }, (_, i) => call(k + i)))
      Atomics.store(stop, 0, 1)
      await worker.terminate()
      console.log(JSON.stringify({ calls: results + refused, other }))`)
    expect(r.signal).toBeNull()
    expect(r.err).toBe('')
    expect(JSON.parse(r.out)).toEqual({ calls: 400, other: [] })
  }, 120_000)

  it('run on a one-thread pool (RLHF_KERNELS_THREADS=1): the async job has a pool thread of its own; RLHF_KERNELS_ASYNC_MB sets the bound', () => {
    const r = child(`import * as rk from ${JSON.stringify(dist)}
      import { createRequire } from 'node:module'
      const addon = createRequire(import.meta.url)(rk.nativeStatus.path)
      rk.setBackend('cpu')
      const N = 32, V = 4000
      const args = Array.from({ length: 8 }, (_, k) => ({ logits: rk.tensor(Float32Array.from({ length: N * V }, (_, i) => Math.sin(i * (k + 1))), [N, V]), targets: Int32Array.from({ length: N }, (_, i) => (i * 7 + k) % V), grad: true }))
      const got = await Promise.all(args.map((a) => rk.crossEntropyAsync(a)))
      const ok = got.every((g, k) => { const w = rk.crossEntropy(args[k]); return g.loss === w.loss && g.gradLogits.data.every((x, i) => x === w.gradLogits.data[i]) })
      const { threads, limit } = addon._asyncScheduler()
      console.log(JSON.stringify({ ok, threads, limit }))`, { RLHF_KERNELS_THREADS: '1', RLHF_KERNELS_ASYNC_MB: '3' })
    expect(r.err).toBe('')
    expect(JSON.parse(r.out)).toEqual({ ok: true, threads: 1, limit: 3 * 2 ** 20 })
  }, 120_000)

  it('workers terminated with calls queued, running or waiting take nothing down', () => {
    const r = child(`import * as rk from ${JSON.stringify(dist)}
      import { Worker } from 'node:worker_threads'
      const code = 'const { parentPort, workerData } = require("node:worker_threads");'
        + 'import(' + JSON.stringify(${JSON.stringify(dist)}) + ').then((rk) => { rk.setBackend("cpu");'
        + 'const a = require(rk.nativeStatus.path); a._asyncScheduler(workerData.limit);'
        + 'const N = 64, V = 4000, logits = rk.tensor(new Float32Array(N * V).fill(0.25), [N, V]), targets = new Int32Array(N);'
        + 'for (let i = 0; i < 12; i++) rk.crossEntropyAsync({ logits, targets, grad: true }).catch(() => {});'
        + 'parentPort.postMessage("started") })'
      for (let i = 0; i < 16; i++) {
        const w = new Worker(code, { eval: true, execArgv: [], workerData: { limit: [0, 1 << 20, 1 << 30][i % 3] } })
        await new Promise((r) => w.once('message', r))
        await new Promise((r) => setTimeout(r, i % 5))
        await w.terminate()
      }
      rk.setBackend('cpu')
      const N = 8, V = 4000
      const args = { logits: rk.tensor(new Float32Array(N * V).fill(1), [N, V]), targets: new Int32Array(N), grad: true }
      const got = await Promise.all(Array.from({ length: 4 }, () => rk.crossEntropyAsync(args)))
      console.log('after 16 terminated workers: ' + got.map((g) => g.loss.toFixed(4)).join(','))`)
    expect(r.signal).toBeNull()
    expect(r.err).toBe('')
    const l = Math.log(4000).toFixed(4)
    expect(r.out).toBe(`after 16 terminated workers: ${[l, l, l, l].join(',')}`)
  }, 120_000)
})
