/**
 * The GPU check (`npm run check:gpu`) on a machine without a GPU: it refuses at once and says why (never a
 * green "skipped"), its cases reach every kernel path by the launchers' own rule, and its parity section,
 * run with js as the target, is a real comparison that passes on correct results and fails on wrong ones.
 */
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { compareCase, cudaUnusable, parity, parityCases, tilePath, vocabSizes } from '../src/cli/check-gpu.js'

const root = new URL('..', import.meta.url).pathname
const native = rk.backends().find((b) => b.name === 'cpu')!.available

describe('check --gpu without a usable GPU', () => {
  it.runIf(cudaUnusable() !== null)('exits 1 within seconds and names the reason', () => {
    const t0 = performance.now()
    const r = spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), 'check', '--gpu'], { encoding: 'utf8', timeout: 60_000 })
    expect(r.status).toBe(1)
    expect(r.stdout).toContain(`the cuda backend is not usable here: ${cudaUnusable()}`)
    expect(performance.now() - t0).toBeLessThan(20_000)
  })

  it('check without --gpu is a usage error', () => {
    const r = spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), 'check'], { encoding: 'utf8', timeout: 60_000 })
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/check needs --gpu/)
  })
})

describe('the kernel paths the check reaches', () => {
  it('mirrors tile_cluster_size: 16-byte rows up to 8 CTAs of 16384 columns are single-pass', () => {
    expect(tilePath(37, 'float32')).toBe('two-pass (unaligned row)')
    expect(tilePath(32001, 'bfloat16')).toBe('two-pass (unaligned row)')
    expect(tilePath(16384, 'float32')).toBe('single-pass ×1')
    expect(tilePath(16385 + 7, 'bfloat16')).toBe('single-pass ×2')
    expect(tilePath(131072, 'float16')).toBe('single-pass ×8')
    expect(tilePath(152064, 'bfloat16')).toBe('two-pass (V > 131072)')
  })

  it('the full set of vocabulary sizes reaches every cluster size and every two-pass reason, in every dtype', () => {
    for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
      const paths = new Set(vocabSizes(false).map((V) => tilePath(V, dtype)))
      for (let c = 1; c <= 8; c++) expect(paths, `${dtype} cluster ${c}`).toContain(`single-pass ×${c}`)
      expect(paths).toContain('two-pass (unaligned row)')
      expect(paths).toContain('two-pass (V > 131072)')
    }
  })
})

describe.runIf(native)('the parity section, rehearsed with js as the target', () => {
  it('every quick case agrees with cpu within twice the parity tolerance', () => {
    const failures: string[] = []
    const log: string[] = []
    const summary = parity({ log: (l) => log.push(l), fail: (f) => failures.push(f) }, 'js', 11, true)
    expect(failures).toEqual([])
    expect(summary).toMatch(/^(\d+)\/\1 runs/)
    // every op of the package is exercised
    const ops = new Set(parityCases(11, true).map((c) => c.name.split(' ')[0]))
    for (const op of ['logProbs', 'logProbsBackward', 'crossEntropy', 'klDivergence', 'ppoLoss', 'policyLoss', 'klPenalty', 'valueLoss', 'gae', 'whiten', 'rewardLoss', 'groupAdvantages']) {
      expect(ops, op).toContain(op)
    }
    expect(log.some((l) => l.startsWith('paths reached by crossEntropy:'))).toBe(true)
  }, 120_000)

  it('a result that differs by more than the tolerance, or in its fields, is reported', () => {
    const x = rk.tensor(Float32Array.of(0.5, 1, -2, 3), [2, 2])
    const shifted = {
      name: 'logProbs shifted on js', path: 'forward',
      run: () => {
        const r = rk.logProbs({ logits: x, targets: Int32Array.of(0, 1) })
        if (rk.currentBackend() === 'js') r.logp[1] += 1e-4
        return r
      },
    }
    expect(compareCase(shifted, 'js', 'cpu')).toMatch(/^logp\[1\]/)
    const extraField = { name: 'extra', path: 'forward', run: () => (rk.currentBackend() === 'js' ? { a: 1, b: 2 } : { a: 1 }) }
    expect(compareCase(extraField, 'js', 'cpu')).toMatch(/fields differ/)
    const nan = { name: 'nan', path: 'forward', run: () => ({ a: rk.currentBackend() === 'js' ? Float32Array.of(NaN) : Float32Array.of(0) }) }
    expect(compareCase(nan, 'js', 'cpu')).toMatch(/^a\[0\] = NaN/)
  })
})
