/**
 * The async completion channel of the cuda backend (native/addon/completions.{h,cc}) on any machine: its
 * `_probeCompletions` export settles promises from a plain thread through the same code a CUDA stream
 * callback uses. Each case runs in a child process, so a crash at a worker's teardown is a failed test.
 */
import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'

const addon = rk.nativeStatus.loaded ? rk.nativeStatus.path! : null

function run(code: string) {
  const r = spawnSync(process.execPath, ['-e', `const addon = require(${JSON.stringify(addon)});\n${code}`], { encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, signal: r.signal, out: r.stdout.trim(), err: r.stderr.trim() }
}

describe.runIf(addon)('completions settled from another thread', () => {
  it('resolve on the JS thread, in order, after the work is done', () => {
    const r = run(`const t0 = Date.now()
      Promise.all(addon._probeCompletions(100, 50)).then((v) => console.log(JSON.stringify({ ok: v.every((x, i) => x === i), n: v.length, late: Date.now() - t0 >= 50 })))`)
    expect(r.err).toBe('')
    expect(JSON.parse(r.out)).toEqual({ ok: true, n: 100, late: true })
  })

  it('keep the process alive while pending, and only then', () => {
    const pending = run(`addon._probeCompletions(3, 200)[2].then((v) => console.log('settled ' + v))`)
    expect(pending.out).toBe('settled 2')
    const t0 = performance.now()
    const none = run(`addon._probeCompletions(0, 0); addon._probeCompletions(2, 0); console.log('done')`)
    expect(none.status).toBe(0)
    expect(performance.now() - t0).toBeLessThan(10_000)
  })

  it('a worker terminated with completions in flight, or being posted, takes nothing down', () => {
    const r = run(`const { Worker } = require('node:worker_threads')
      const code = 'const { parentPort, workerData } = require("node:worker_threads"); const a = require(' + JSON.stringify(${JSON.stringify(addon)}) + ');'
        + 'a._probeCompletions(2000, workerData.delay); parentPort.postMessage("started")'
      ;(async () => {
        for (let i = 0; i < 24; i++) {
          const w = new Worker(code, { eval: true, workerData: { delay: [0, 5, 30, 200][i % 4] } })
          await new Promise((r) => w.once('message', r))
          await new Promise((r) => setTimeout(r, i % 7))
          await w.terminate()
        }
        const v = await Promise.all(addon._probeCompletions(10, 1))
        console.log('after 24 terminated workers: ' + v.join(','))
      })()`)
    expect(r.signal).toBeNull()
    expect(r.err).toBe('')
    expect(r.out).toBe('after 24 terminated workers: 0,1,2,3,4,5,6,7,8,9')
  })
})
