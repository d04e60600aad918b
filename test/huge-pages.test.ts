/**
 * Fresh output arrays of 4 MiB and more are advised for transparent huge pages before the kernel writes them
 * (native/addon/pages.h): where the kernel's THP mode is `madvise`, the process's AnonHugePages grows by the
 * gradient's huge pages, and stays put with RLHF_KERNELS_HUGEPAGES=0. Each case runs in its own process (the
 * counter is process-wide). Skipped off Linux, without THP, or without the addon.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'

const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url))
const THP = '/sys/kernel/mm/transparent_hugepage/enabled'
/** the active THP mode ('always', 'madvise', 'never'), or null where there is none */
const mode = existsSync(THP) ? (/\[(\w+)\]/.exec(readFileSync(THP, 'utf8'))?.[1] ?? null) : null
const cpu = rk.backends().some((b) => b.name === 'cpu' && b.available)

/** AnonHugePages (KiB) before and after a crossEntropy call whose fresh gradient is 64 MiB, in a child process */
function run(env: Record<string, string>): { before: number; after: number; ok: boolean } {
  const code = `
    import { readFileSync } from 'node:fs'
    const rk = await import(${JSON.stringify(dist)})
    rk.setBackend('cpu')
    const huge = () => Number(/AnonHugePages:\\s*(\\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))[1])
    const N = 512, V = 32768
    const logits = new Float32Array(N * V)
    for (let i = 0; i < logits.length; i++) logits[i] = ((i * 2654435761) % 1024) / 128 - 4
    const targets = Int32Array.from({ length: N }, (_, n) => (n * 7919) % V)
    const before = huge()
    const r = rk.crossEntropy({ logits: rk.tensor(logits, [N, V]), targets, grad: true })
    const after = huge()
    // the gradient is right: each row sums to 0 (p − onehot), its true class negative
    let ok = true
    for (let n = 0; n < N; n += 97) {
      let s = 0
      for (let v = 0; v < V; v++) s += r.gradLogits.data[n * V + v]
      ok = ok && Math.abs(s) < 1e-6 && r.gradLogits.data[n * V + targets[n]] < 0
    }
    console.log(JSON.stringify({ before, after, ok }))
  `
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, RLHF_KERNELS_THREADS: '1', ...env } })
  if (r.status !== 0) throw new Error(`child: ${r.stderr}`)
  return JSON.parse(r.stdout.trim().split('\n').pop()!)
}

describe.runIf(process.platform === 'linux' && existsSync('/proc/self/smaps_rollup') && cpu && (mode === 'madvise' || mode === 'always'))('huge pages for fresh outputs', () => {
  it('a 64 MiB gradient lands on huge pages', () => {
    const r = run({})
    expect(r.ok).toBe(true)
    // at least half of the 64 MiB (the kernel may find no free huge page for some of them)
    expect(r.after - r.before).toBeGreaterThanOrEqual(32 * 1024)
  })
  it.runIf(mode === 'madvise')('RLHF_KERNELS_HUGEPAGES=0 leaves them on small pages', () => {
    const r = run({ RLHF_KERNELS_HUGEPAGES: '0' })
    expect(r.ok).toBe(true)
    expect(r.after - r.before).toBeLessThan(2 * 1024)
  })
})
