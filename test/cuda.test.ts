/**
 * The CUDA suite: what the cuda backend promises beyond parity (test/ops/<family>.test.ts runs every op, option and
 * dtype on cuda against the js reference, with poisoned outputs). Device tensors in and out, bitwise
 * determinism over 20 runs, the async twins, bad indices found on the GPU, memory accounting. Without a
 * usable GPU it skips and prints why.
 */
import { spawnSync } from 'node:child_process'
import { Worker } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { DeviceData } from '../src/tensor.js'
import { rng } from './helpers.js'
import { digest } from '../src/cli/check-gpu.js'

const cuda = rk.backends().find((b) => b.name === 'cuda')!
if (!cuda.available) console.log(`CUDA suite skipped: ${cuda.reason}`)

/** The bits of a float32 result as one hex digest: big arrays compare in bulk, not element by element. */
const bits = (t: rk.Tensor | Float32Array) => digest(t instanceof rk.Tensor ? t.toFloat32Array() : t)

function logits(seed: number, N: number, V: number, dtype: 'float32' | 'bfloat16' = 'bfloat16') {
  const z = rng(seed).f32(N * V, 3)
  return dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
}

describe.runIf(cuda.available)('cuda backend on the GPU', () => {
  it('device tensors round-trip every dtype, bit for bit', async () => {
    const r = rng(1)
    const host = [
      rk.tensor(r.f32(1001), [7, 143]),
      rk.tensor(Float64Array.from(r.f32(33)), [33]),
      rk.tensor(rk.encodeFloats(r.f32(4099), 'bfloat16'), [4099], { dtype: 'bfloat16' }),
      rk.tensor(r.ints(17, 1000), [17]),
      rk.tensor(r.mask(64), [64]),
      rk.tensor(new Float32Array(0), [0, 5]),
    ]
    for (const h of host) {
      const d = h.to('cuda')
      expect(d.device).toBe('cuda')
      expect(d.shape).toEqual(h.shape)
      expect(() => d.data).toThrow(/on the GPU/)
      expect(Array.from(d.toHost().data)).toEqual(Array.from(h.data))
      expect(Array.from((await d.toHostAsync()).data)).toEqual(Array.from(h.data))
      d.dispose()
      d.dispose()
      expect(d.isDisposed).toBe(true)
      expect(() => d.toHost()).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }))
    }
  })

  it('ops on device tensors keep array results on the GPU and equal the host-input cuda run bitwise', () => {
    const N = 64, V = 32000
    const x = logits(2, N, V)
    const targets = rng(3).ints(N, V)
    const onHost = (() => { rk.setBackend('cuda'); try { return rk.crossEntropy({ logits: x, targets, grad: true, reduction: 'none' }) } finally { rk.setBackend('auto') } })()
    const dx = x.to('cuda'), dt = rk.tensor(targets).to('cuda')
    const onDevice = rk.crossEntropy({ logits: dx, targets: dt, grad: true, reduction: 'none' })
    expect(onDevice.gradLogits!.device).toBe('cuda')
    expect(onDevice.gradLogits!.shape).toEqual([N, V])
    expect(onDevice.lse.device).toBe('cuda')
    expect(onDevice.loss).toBe(onHost.loss)
    expect(bits(onDevice.losses!)).toEqual(bits(onHost.losses!))
    expect(bits(onDevice.gradLogits!)).toEqual(bits(onHost.gradLogits!))
    const lp = rk.logProbs({ logits: dx, targets: dt, entropy: true })
    expect(lp.logp.device).toBe('cuda')
    const back = rk.logProbsBackward({ logits: dx, targets: dt, lse: lp.lse, gradLogp: rk.tensor(rng(4).f32(N)).to('cuda') })
    expect(back.gradLogits.device).toBe('cuda')
    for (const t of [dx, dt, onDevice.gradLogits!, onDevice.lse, onDevice.losses!, lp.logp, lp.lse, lp.entropy!, back.gradLogits]) t.dispose()
  })

  it('identical inputs give bitwise identical outputs over 5 runs (cross-entropy, ppoLoss, klDivergence, rewardLoss)', () => {
    const N = 96, V = 128256
    const x = logits(5, N, V).to('cuda'), ref = logits(6, N, V).to('cuda')
    const targets = rk.tensor(rng(7).ints(N, V)).to('cuda')
    const r = rng(8)
    const runs = {
      crossEntropy: () => rk.crossEntropy({ logits: x, targets, grad: true, labelSmoothing: 0.1 }),
      ppoLoss: () => rk.ppoLoss({ logits: x, actions: targets, oldLogp: r0.oldLogp, refLogits: ref, advantages: r0.adv, klEstimator: 'full', beta: 0.05 }),
      klDivergence: () => rk.klDivergence({ pLogits: ref, qLogits: x, grad: 'q' }),
      rewardLoss: () => rk.rewardLoss({ scores: r0.scores, K: 4, chosen: r0.chosen }),
    }
    const r0 = { oldLogp: rk.tensor(r.f32(N, 0.5).map((v) => v - 12)).to('cuda'), adv: rk.tensor(r.f32(N)).to('cuda'), scores: rk.tensor(r.f32(4 << 16)).to('cuda'), chosen: r.ints(1 << 16, 4) }
    for (const [name, run] of Object.entries(runs)) {
      const want = digest(run())
      for (let i = 1; i < 5; i++) expect(digest(run()), `${name} run ${i}`).toBe(want)
    }
  }, 300_000)

  it('async twins resolve on stream completion with the sync results', async () => {
    const N = 32, V = 4099
    const x = logits(9, N, V, 'float32').to('cuda')
    const targets = rk.tensor(rng(10).ints(N, V)).to('cuda')
    const sync = rk.crossEntropy({ logits: x, targets, grad: true })
    const all = await Promise.all(Array.from({ length: 8 }, () => rk.crossEntropyAsync({ logits: x, targets, grad: true })))
    for (const a of all) {
      expect(a.loss).toBe(sync.loss)
      expect(bits(a.gradLogits!)).toEqual(bits(sync.gradLogits!))
    }
  })

  it('a bad device target raises a RangeError naming the row, and the next op on the same tensors works', async () => {
    const N = 16, V = 1000
    const x = logits(11, N, V).to('cuda')
    const t = rng(12).ints(N, V)
    t[9] = V + 5
    const bad = rk.tensor(t).to('cuda')
    expect(() => rk.crossEntropy({ logits: x, targets: bad })).toThrow(/targets\[9\] must be in \[0, 1000\)/)
    await expect(rk.logProbsAsync({ logits: x, targets: bad })).rejects.toThrow(RangeError)
    expect(() => rk.ppoLoss({ logits: x, actions: bad, oldLogp: new Float32Array(N), advantages: new Float32Array(N) })).toThrow(/actions\[9\]/)
    t[9] = 3
    const good = rk.tensor(t).to('cuda')
    const r = rk.crossEntropy({ logits: x, targets: good })
    expect(Number.isFinite(r.loss)).toBe(true)
  })

  it('memory(): tensors and bytes are counted (and reported to V8), dispose() returns them, repeated calls reuse the cache', () => {
    const before = rk.memory()
    const external = process.memoryUsage().external
    const x = logits(13, 8, 32000).to('cuda')
    const afterUpload = rk.memory()
    expect(afterUpload.tensors).toBe(before.tensors + 1)
    expect(afterUpload.tensorBytes).toBe(before.tensorBytes + 8 * 32000 * 2)
    expect(process.memoryUsage().external - external).toBeGreaterThanOrEqual(8 * 32000 * 2)
    const targets = rng(14).ints(8, 32000)
    const first = rk.crossEntropy({ logits: x, targets, grad: true })
    first.gradLogits!.dispose(); first.lse.dispose()
    const cached = rk.memory().cachedBytes
    for (let i = 0; i < 5; i++) {
      const r = rk.crossEntropy({ logits: x, targets, grad: true })
      r.gradLogits!.dispose(); r.lse.dispose()
    }
    expect(rk.memory().cachedBytes).toBe(cached)
    x.dispose()
    expect(rk.memory().tensors).toBe(before.tensors)
    rk.releaseCachedMemory()
    expect(rk.memory().cachedBytes).toBe(0)
  })
})

describe.runIf(cuda.available)('the finaliser safety net', () => {
  it('device tensors dropped without dispose() are freed after a GC, at the next GPU call', () => {
    const dist = new URL('../dist/index.js', import.meta.url).href
    const code = `import(${JSON.stringify(dist)}).then((rk) => {
      const base = rk.memory().tensors
      for (let i = 0; i < 50; i++) rk.tensor(new Float32Array(1 << 20)).to('cuda')
      const held = rk.memory().tensors - base
      globalThis.gc()
      return new Promise((r) => setImmediate(r)).then(() => {
        globalThis.gc()
        const left = rk.memory().tensors - base
        console.log(JSON.stringify({ held, left }))
      })
    })`
    const run = spawnSync(process.execPath, ['--expose-gc', '-e', code], { encoding: 'utf8', timeout: 120_000 })
    expect(run.status, run.stderr).toBe(0)
    const { held, left } = JSON.parse(run.stdout.trim().split('\n').pop()!)
    expect(held).toBe(50)
    expect(left).toBeLessThan(50)
  }, 120_000)
})

describe.runIf(cuda.available)('cuda backend in worker_threads', () => {
  const dist = new URL('../dist/index.js', import.meta.url).href
  const run = (code: string, workerData: unknown) => new Promise<any>((resolve, reject) => {
    const w = new Worker(`const { parentPort, workerData } = require('node:worker_threads')\nimport(${JSON.stringify(dist)}).then(async (rk) => { ${code} })`,
      { eval: true, workerData })
    w.once('message', (m) => { resolve(m); w.terminate() })
    w.once('error', reject)
  })

  it('4 workers, each with its own stream and pool, compute the main thread\'s result bitwise and free their memory', async () => {
    const N = 32, V = 32000
    const z = rng(21).f32(N * V, 3), targets = rng(22).ints(N, V)
    const want = rk.crossEntropy({ logits: rk.tensor(z, [N, V]).to('cuda'), targets, grad: true })
    const results = await Promise.all(Array.from({ length: 4 }, () => run(`
      const { N, V, z, targets } = workerData
      const logits = rk.tensor(z, [N, V]).to('cuda')
      const r = await rk.crossEntropyAsync({ logits, targets, grad: true })
      const grad = r.gradLogits.toFloat32Array()
      logits.dispose(); r.gradLogits.dispose(); r.lse.dispose()
      parentPort.postMessage({ loss: r.loss, grad, memory: rk.memory() })`, { N, V, z, targets })))
    for (const m of results) {
      expect(m.loss).toBe(want.loss)
      expect(new Uint32Array((m.grad as Float32Array).buffer)).toEqual(new Uint32Array(want.gradLogits!.toFloat32Array().buffer))
      expect(m.memory.tensors).toBe(0)
    }
  }, 120_000)

  it('a worker terminated with GPU work in flight does not disturb the main thread', async () => {
    const w = new Worker(`const { parentPort } = require('node:worker_threads')
      import(${JSON.stringify(dist)}).then((rk) => {
        const logits = rk.tensor(new Float32Array(2048 * 32000), [2048, 32000]).to('cuda')
        for (let i = 0; i < 8; i++) rk.crossEntropyAsync({ logits, targets: new Int32Array(2048), grad: true })
        parentPort.postMessage('queued')
      })`, { eval: true })
    await new Promise((resolve) => w.once('message', resolve))
    await w.terminate()
    const x = logits(23, 8, 4096, 'float32').to('cuda')
    const r = rk.crossEntropy({ logits: x, targets: rng(24).ints(8, 4096) })
    expect(Number.isFinite(r.loss)).toBe(true)
    x.dispose()
  }, 120_000)
})

describe.runIf(!cuda.available)('CUDA suite without a GPU', () => {
  it('says why the cuda backend is unavailable, and device tensors say so too', () => {
    expect(cuda.reason).toMatch(/\w/)
    expect(() => rk.tensor(new Float32Array(4)).to('cuda')).toThrow(expect.objectContaining({ code: 'ERR_CUDA_UNAVAILABLE' }))
    expect(rk.memory()).toEqual({ tensors: 0, tensorBytes: 0, deviceBytes: 0, cachedBytes: 0, pinnedBytes: 0 })
  })
})

describe('device tensors in the op layer (any machine)', () => {
  // a device tensor's storage as the op layer sees it; these calls all stop before any native code runs
  const onGpu = (n: number, dtype: rk.DType = 'float32') => new rk.Tensor(new DeviceData({}, n, dtype), [n], dtype)

  it('routes to the cuda backend, or says why it cannot', () => {
    const call = () => rk.policyLoss({ logp: onGpu(8), oldLogp: new Float32Array(8), advantages: new Float32Array(8) })
    if (!cuda.available) expect(call).toThrow(expect.objectContaining({ code: 'ERR_CUDA_UNAVAILABLE' }))
    rk.setBackend('js')
    try {
      expect(call).toThrow(expect.objectContaining({ code: 'ERR_DEVICE_TENSOR' }))
    } finally {
      rk.setBackend('auto')
    }
  })

  it('refuses device data where values are checked on the host, and device masks that are not bytes', () => {
    const logp = new Float32Array(8)
    expect(() => rk.policyLoss({ logp, oldLogp: logp, advantages: logp, seqLengths: onGpu(2, 'int32') })).toThrow(/seqLengths must be host data/)
    expect(() => rk.rewardLoss({ scores: new Float32Array(4), offsets: onGpu(3, 'int32'), chosen: Int32Array.of(0, 0) })).toThrow(/offsets must be host data/)
    expect(() => rk.rewardLoss({ scores: new Float32Array(4), K: 2, targetProbs: onGpu(4) })).toThrow(/targetProbs must be host data/)
    expect(() => rk.policyLoss({ logp, oldLogp: logp, advantages: logp, mask: onGpu(8) })).toThrow(/a uint8 Tensor/)
    expect(() => onGpu(4).data).toThrow(/on the GPU/)
  })
})
