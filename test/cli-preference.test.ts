/**
 * `rlhf-kernels demo --preference` (src/cli/demo-preference.ts): preferenceLoss trains the policy on the
 * demo's comparisons without a reward model. Its numbers are real: the loss falls, the accuracy of the
 * implicit rewards rises, the hidden true reward rises; the command writes both methods' curves.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { runPreferenceDemo } from '../src/cli/demo-preference.js'

const root = new URL('..', import.meta.url).pathname
const tmp = mkdtempSync(join(tmpdir(), 'rlhf-kernels-pref-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))
const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length

describe('demo --preference', () => {
  it.each(['plackett-luce', 'dpo'] as const)('%s at a small size: the loss falls, accuracy and the true reward rise', (type) => {
    const s = runPreferenceDemo({ seed: 3, steps: 40, rmSteps: 50, contexts: 4, vocab: 16, length: 6, batch: 16, out: null, quiet: true, type })
    const c = s.curves.preference
    expect(c).toHaveLength(40)
    expect(mean(c.slice(-10).map((p) => p.loss))).toBeLessThan(0.8 * mean(c.slice(0, 5).map((p) => p.loss)))
    expect(mean(c.slice(-10).map((p) => p.accuracy))).toBeGreaterThan(0.55)
    expect(mean(c.slice(-10).map((p) => p.margin))).toBeGreaterThan(0.3)
    expect(s.trueRewardAfter).toBeGreaterThan(s.trueRewardBefore + 0.3)
    expect(s.curves.ppo).toHaveLength(40)
  })

  it('the command prints the summary and writes both curves', () => {
    const r = spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), 'demo', '--preference', '--steps', '5', '--rm-steps', '10', '--quiet', '--out', 'out'],
      { encoding: 'utf8', cwd: tmp, timeout: 120_000 })
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/true \(hidden\) reward after preferenceLoss/)
    const curves = JSON.parse(readFileSync(join(tmp, 'out', 'curves.json'), 'utf8'))
    expect(curves.curves.preference).toHaveLength(5)
    expect(curves.curves.ppo).toHaveLength(5)
    const svg = readFileSync(join(tmp, 'out', 'curves.svg'), 'utf8')
    expect(svg).toMatch(/preferenceLoss<\/text>[\s\S]*RM \+ PPO<\/text>/)
  })
})
