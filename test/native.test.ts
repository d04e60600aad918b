/**
 * The native addon as a Node package: what backends() reports on this machine, the addon's own checks
 * (memory safety never depends on the TypeScript layer), worker_threads, and async work off the event loop.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { rng } from './helpers.js'
import { PPO_KL_ESTIMATORS, REDUCTIONS } from '../src/choices.js'

const root = new URL('..', import.meta.url).pathname
const addonPath = `${root}build/Release/rlhf_kernels.node`
const buildInfoPath = `${root}build/Release/build-info.json`
const buildInfo = existsSync(buildInfoPath) ? JSON.parse(readFileSync(buildInfoPath, 'utf8')) : null
const cpu = rk.backends().find((b) => b.name === 'cpu')!
const cuda = rk.backends().find((b) => b.name === 'cuda')!
const nvccHere = (() => {
  try {
    execFileSync('nvcc', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return existsSync('/usr/local/cuda/bin/nvcc')
  }
})()

describe('backends() on this machine', () => {
  it('cpu is available whenever the install built the addon (and always in CI)', () => {
    if (process.env.CI || buildInfo?.ok) {
      expect(cpu.available, cpu.reason).toBe(true)
      expect(rk.currentBackend()).toBe('cpu')
    } else {
      expect(cpu.reason).toMatch(/native/)
    }
  })

  it('cuda is compiled in when nvcc is here, and says why it is unavailable without a GPU', () => {
    if (!cpu.available) return expect(cuda.reason).toMatch(/not loaded/)
    const info = rk.nativeStatus.info!
    if (nvccHere && buildInfo?.builder === 'cmake-js') expect(info.cuda.compiled).toBe(true)
    if (info.cuda.compiled && info.cuda.error !== 0) {
      expect(cuda.available).toBe(false)
      expect(cuda.reason).toContain(info.cuda.errorName)
      expect(cuda.reason).toMatch(/devices: 0/)
      if (info.cuda.error === 35) expect(cuda.reason).toMatch(/no NVIDIA driver/)
    }
    if (!info.cuda.compiled) expect(cuda.reason).toMatch(/without CUDA/)
  })
})

describe.runIf(existsSync(addonPath))("the addon's own checks (called directly, without the TypeScript layer)", () => {
  const addon = createRequire(import.meta.url)(addonPath)
  const MEAN = REDUCTIONS.indexOf('mean')  // enum options cross as ordinals (src/native.ts nativeArgs)
  const logits = { data: new Float32Array(6), dtype: 'float32' }
  const ce = (over: object) => () => addon.crossEntropy({
    logits, N: 2, V: 3, targets: Int32Array.of(0, 1), ignoreIndex: -100, reduction: MEAN, labelSmoothing: 0, zLoss: 0, grad: true, ...over,
  })
  const layout = { tokens: 4, offsets: Int32Array.of(0, 4), width: 4 }
  const f = (n: number) => ({ data: new Float32Array(n), dtype: 'float32' })
  const policy = (over: object) => () => addon.policyLoss({
    layout, logp: f(4), oldLogp: f(4), advantages: f(4), clipLow: 0.2, clipHigh: 0.2, logRatioClamp: 20, ...over,
  })

  it.each([
    ['a target past V (an out-of-bounds read if unchecked)', ce({ targets: Int32Array.of(0, 3) }), RangeError, /targets\[1\] must be in \[0, 3\)/],
    ['a negative target', ce({ targets: Int32Array.of(-5, 0) }), RangeError, /targets\[0\]/],
    ['logits shorter than N·V', ce({ N: 3 }), RangeError, /logits must have 9 elements, got 6/],
    ['targets shorter than N', ce({ targets: Int32Array.of(0) }), RangeError, /targets must have 2 elements/],
    ['data not matching its dtype', ce({ logits: { data: new Uint16Array(6), dtype: 'float32' } }), TypeError, /does not match its dtype/],
    ['targets of the wrong class', ce({ targets: new Float32Array(2) }), TypeError, /targets must be an Int32Array/],
    ['offsets past the tokens', policy({ layout: { ...layout, offsets: Int32Array.of(0, 9) } }), RangeError, /offsets must run from 0 to 4/],
    ['offsets decreasing', policy({ layout: { ...layout, offsets: Int32Array.of(0, 3, 1, 4) } }), RangeError, /non-decreasing/],
    ['a mask value other than 0/1', policy({ mask: Uint8Array.of(1, 2, 0, 1) }), RangeError, /mask must hold 0 or 1/],
    ['per-token inputs of different lengths', policy({ oldLogp: f(3) }), RangeError, /oldLogp must have 4 elements/],
    ['reward offsets past the scores', () => addon.rewardLoss({ scores: f(3), offsets: Int32Array.of(0, 2, 5), chosen: Int32Array.of(0, 0), ignoreIndex: -100, centerCoef: 0, reduction: MEAN }), RangeError, /offsets must run from 0 to 3/],
    ['a chosen index past its prompt', () => addon.rewardLoss({ scores: f(3), offsets: Int32Array.of(0, 2, 3), chosen: Int32Array.of(2, 0), ignoreIndex: -100, centerCoef: 0, reduction: MEAN }), RangeError, /chosen\[0\] must be in \[0, 2\)/],
    ['an action past V', () => addon.ppoLoss({ layout: { tokens: 2, offsets: Int32Array.of(0, 2), width: 2 }, V: 3, logits: f(6), actions: Int32Array.of(0, 3), oldLogp: f(2), advantages: f(2), temperature: 1, clipLow: 0.2, clipHigh: 0.2, logRatioClamp: 20, beta: 0, c1: 0, klEstimator: PPO_KL_ESTIMATORS.indexOf('k3'), half: false }), RangeError, /actions\[1\] must be in \[0, 3\)/],
    ['not an object', () => addon.gae(42), TypeError, /arguments must be an object/],
    ['an enum option by name, not ordinal', ce({ reduction: 'mean' }), TypeError, /reduction must be a number/],
    ['an ordinal past its list', ce({ reduction: 3 }), RangeError, /reduction must be the ordinal of one of 0 mean, 1 sum, 2 none/],
    ['a fractional ordinal', policy({ agg: { mode: 0.5 } }), RangeError, /mode must be the ordinal of one of 0 token-mean/],
    ['NaN for an option that can be off (off is null)', policy({ dualClip: NaN }), RangeError, /dualClip must be a number, or null for off/],
  ] as const)('%s', (_, call, errorClass, message) => {
    expect(call).toThrow(errorClass)
    expect(call).toThrow(message)
  })

  it('async calls reject the same way', async () => {
    await expect(addon.crossEntropyAsync({ logits, N: 2, V: 3, targets: Int32Array.of(0, 7), ignoreIndex: -100, reduction: MEAN, labelSmoothing: 0, zLoss: 0, grad: false })).rejects.toThrow(RangeError)
  })
})

describe.runIf(cpu.available)('threads', () => {
  it('the addon loads and computes in 4 worker_threads at once, each with its own env', async () => {
    const dist = new URL('../dist/index.js', import.meta.url).href
    expect(existsSync(new URL(dist)), 'dist/ is built by `npm install` (prepare)').toBe(true)
    const code = `
      const { parentPort, workerData } = require('node:worker_threads')
      import(${JSON.stringify(dist)}).then((rk) => {
        const { N, V, data, targets } = workerData
        const r = rk.crossEntropy({ logits: rk.tensor(data, [N, V]), targets, grad: true })
        const addon = require(${JSON.stringify(addonPath)})
        parentPort.postMessage({ backend: rk.currentBackend(), loss: r.loss, grad: r.gradLogits.data, env: addon.envId() })
      })`
    const r = rng(51)
    const N = 64, V = 3001
    const data = r.f32(N * V, 2), targets = r.ints(N, V)
    const expected = rk.crossEntropy({ logits: rk.tensor(data, [N, V]), targets, grad: true })
    const results = await Promise.all(Array.from({ length: 4 }, () => new Promise<any>((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { N, V, data, targets } })
      w.once('message', (m) => { resolve(m); w.terminate() })
      w.once('error', reject)
    })))
    for (const m of results) {
      expect(m.backend).toBe('cpu')
      expect(m.loss).toBe(expected.loss)
      expect(Array.from(m.grad as Float32Array)).toEqual(Array.from(expected.gradLogits!.data))
    }
    expect(new Set(results.map((m) => m.env)).size).toBe(4)
  })

  it('concurrent async jobs on the libuv pool each return their own, correct result', async () => {
    const r = rng(53)
    const jobs = Array.from({ length: 8 }, (_, i) => {
      const N = 16 + i, V = 2000 + 97 * i
      return { logits: rk.tensor(r.f32(N * V, 2), [N, V]), targets: r.ints(N, V), grad: true }
    })
    const results = await Promise.all(jobs.map((j) => rk.crossEntropyAsync(j)))
    results.forEach((got, i) => {
      const want = rk.crossEntropy(jobs[i])
      expect(got.loss).toBe(want.loss)
      expect(Array.from(got.gradLogits!.data)).toEqual(Array.from(want.gradLogits!.data))
    })
  })

  it('an async native job does not block the event loop (timers keep running through a ≥ 200 ms job)', async () => {
    const r = rng(52)
    const V = 32000
    const make = (N: number) => ({ logits: rk.tensor(r.f32(N * V, 3), [N, V]), targets: r.ints(N, V), grad: true, labelSmoothing: 0.1 })
    // calibrate on a warm probe: enough rows for ~400 ms on this machine (the check needs ≥ 200 ms)
    const probe = make(64)
    rk.crossEntropy(probe)
    let t = performance.now()
    rk.crossEntropy(probe)
    const perRow = (performance.now() - t) / 64
    const N = Math.min(8192, Math.max(64, Math.ceil(400 / perRow)))
    const job = make(N)
    // a 1 ms timer counts the event loop's turns while the job is in flight: a job that held the loop (ran on
    // the main thread) lets none of them run before it settles. Counted, not timed: on a loaded machine the
    // kernel threads can keep the main thread off the cores for a good part of the job without blocking it.
    let ticks = 0
    const timer = setInterval(() => ticks++, 1)
    t = performance.now()
    const result = await rk.crossEntropyAsync(job)
    const elapsed = performance.now() - t
    const inFlight = ticks
    clearInterval(timer)
    expect(result.count).toBe(N)
    expect(elapsed).toBeGreaterThanOrEqual(200)
    expect(inFlight).toBeGreaterThanOrEqual(10)
  }, 60_000)
})

describe('the loader', () => {
  const dist = new URL('../dist/index.js', import.meta.url).href
  const probe = (env: Record<string, string>) => {
    const script = `import(${JSON.stringify(dist)}).then((rk) => {
      const r = rk.crossEntropy({ logits: rk.tensor(Float32Array.of(1, 2, 3, 4), [2, 2]), targets: Int32Array.of(0, 1) })
      console.log(JSON.stringify({ backends: rk.backends(), current: rk.currentBackend(), loss: r.loss, errors: rk.nativeStatus.errors }))
    }, (e) => { console.log(JSON.stringify({ thrown: e.message, code: e.code })) })`
    const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' })
    return JSON.parse(out.trim().split('\n').pop()!)
  }

  it('RLHF_KERNELS_BACKEND=js: the addon is not loaded, the ops run on js, backends() says why', () => {
    const r = probe({ RLHF_KERNELS_BACKEND: 'js' })
    expect(r.current).toBe('js')
    expect(r.loss).toBeCloseTo((Math.log(1 + Math.E) + Math.log(1 + Math.exp(-1))) / 2, 6)
    expect(r.backends.find((b: rk.BackendStatus) => b.name === 'cpu').reason).toMatch(/RLHF_KERNELS_BACKEND=js/)
  })

  it.runIf(cpu.available)('a bad RLHF_KERNELS_NATIVE_PATH is recorded and the local build is used', () => {
    const r = probe({ RLHF_KERNELS_NATIVE_PATH: '/nonexistent/rlhf_kernels.node' })
    expect(r.current).toBe('cpu')
    expect(r.errors[0]).toMatch(/nonexistent.*does not exist/)
  })

  it('RLHF_KERNELS_REQUIRE=cuda on a machine without a usable GPU throws at import, listing the causes', () => {
    if (cuda.available) return
    const r = probe({ RLHF_KERNELS_REQUIRE: 'cuda' })
    expect(r.code).toBe('ERR_CUDA_UNAVAILABLE')
    expect(r.thrown).toMatch(/RLHF_KERNELS_REQUIRE=cuda/)
  })

  it('RLHF_KERNELS_REQUIRE=cpu with the addon switched off throws ERR_BACKEND_UNAVAILABLE', () => {
    const r = probe({ RLHF_KERNELS_REQUIRE: 'cpu', RLHF_KERNELS_BACKEND: 'js' })
    expect(r.code).toBe('ERR_BACKEND_UNAVAILABLE')
  })
})

describe.runIf(cpu.available)('the kernels pool size', () => {
  const dist = new URL('../dist/index.js', import.meta.url).href
  const script = `import(${JSON.stringify(dist)}).then((rk) => console.log(rk.nativeStatus.info.threads))`
  const threads = (command: string[], env: Record<string, string> = {}) =>
    Number(execFileSync(command[0], [...command.slice(1), process.execPath, '--input-type=module', '-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' }).trim())
  const hasTaskset = (() => {
    try {
      execFileSync('taskset', ['-c', '0', 'true'])
      return true
    } catch {
      return false
    }
  })()

  it('defaults to the cores of the affinity mask (taskset) and RLHF_KERNELS_THREADS overrides it', () => {
    const { RLHF_KERNELS_THREADS: _, ...env } = process.env
    const bare = Number(execFileSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8' }).trim())
    expect(bare).toBe(availableParallelism())
    if (process.platform === 'linux' && hasTaskset) {
      expect(threads(['env', '-u', 'RLHF_KERNELS_THREADS', 'taskset', '-c', '0'])).toBe(1)
      expect(threads(['taskset', '-c', '0'], { RLHF_KERNELS_THREADS: '3' })).toBe(3)
    }
  })

  // a cgroup v1 CPU quota of 0.5 and 1.5 CPUs (an inner group under a limited one): where this process may
  // make cgroups (root, cgroup v1's cpu controller mounted); else nothing to check
  it('is capped by a cgroup CPU quota, its own or an ancestor\'s', () => {
    const base = '/sys/fs/cgroup/cpu'
    const group = `${base}/rlhf-kernels-test-${process.pid}`
    try {
      mkdirSync(`${group}/inner`, { recursive: true })
    } catch {
      return
    }
    const inGroup = (dir: string) => {
      const { RLHF_KERNELS_THREADS: _, ...env } = process.env
      const cmd = `echo $$ > ${dir}/cgroup.procs && exec "${process.execPath}" --input-type=module -e '${script}'`
      return Number(execFileSync('sh', ['-c', cmd], { env, encoding: 'utf8' }).trim())
    }
    try {
      writeFileSync(`${group}/cpu.cfs_period_us`, '100000')
      writeFileSync(`${group}/cpu.cfs_quota_us`, '50000')
      expect(inGroup(group)).toBe(1)
      expect(inGroup(`${group}/inner`)).toBe(1)
      writeFileSync(`${group}/cpu.cfs_quota_us`, '150000')
      expect(inGroup(`${group}/inner`)).toBe(Math.min(2, availableParallelism()))
    } finally {
      rmdirSync(`${group}/inner`)
      rmdirSync(group)
    }
  })
})

describe.runIf(cpu.available)('determinism of the cpu backend', () => {
  it('gives bitwise identical results with 1, 2 and 3 threads', () => {
    const dist = new URL('../dist/index.js', import.meta.url).href
    const script = `import(${JSON.stringify(dist)}).then((rk) => {
      let a = 12345
      const u = () => ((a = (Math.imul(a, 1103515245) + 12345) >>> 0) / 4294967296) * 6 - 3
      const N = 96, V = 4099
      const logits = rk.tensor(Float32Array.from({ length: N * V }, u), [N, V])
      const other = rk.tensor(Float32Array.from({ length: N * V }, u), [N, V])
      const targets = Int32Array.from({ length: N }, (_, i) => (i * 37) % V)
      const ce = rk.crossEntropy({ logits, targets, grad: true, labelSmoothing: 0.1 })
      const kl = rk.klDivergence({ pLogits: other, qLogits: logits, grad: 'both' })
      const ppo = rk.ppoLoss({ logits, actions: targets, oldLogits: other, advantages: Float32Array.from({ length: N }, u), beta: 0.1 })
      // groups one per lane or one at a time by the blocks (uniform sizes that are not a multiple of the lanes,
      // ragged sizes 1 to 12): many blocks, so that the threads split them
      const sizes = Int32Array.from({ length: 9000 }, (_, i) => 1 + ((i * 7 + (i >> 3)) % 12))
      const offsets = new Int32Array(sizes.length + 1)
      for (let i = 0; i < sizes.length; i++) offsets[i + 1] = offsets[i] + sizes[i]
      const ragged = rk.groupAdvantages({ scores: Float32Array.from({ length: offsets[sizes.length] }, u), offsets })
      const uniform = rk.groupAdvantages({ scores: Float32Array.from({ length: 5 * 12000 }, u), groupSize: 5 })
      const h = require('node:crypto').createHash('sha256')
      for (const x of [ce.gradLogits.data, ce.lse, kl.gradQ.data, kl.gradP.data, ppo.gradLogits.data, ragged, uniform, Float64Array.of(ce.loss, kl.loss, ppo.loss)]) h.update(new Uint8Array(x.buffer, x.byteOffset, x.byteLength))
      console.log(rk.currentBackend(), h.digest('hex'))
    })`
    const run = (threads: string) => execFileSync(process.execPath, ['-e', script], { env: { ...process.env, RLHF_KERNELS_THREADS: threads }, encoding: 'utf8' }).trim()
    const one = run('1')
    expect(one).toMatch(/^cpu [0-9a-f]{64}$/)
    expect(run('2')).toBe(one)
    expect(run('3')).toBe(one)
  })
})
