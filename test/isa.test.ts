/**
 * The narrower builds of the CPU row kernels (rowmath.h's RK_ISA_KERNEL: x86-64-v4 with 16 lanes, x86-64-v3
 * with 8, the baseline with 4) on a CPU that runs a wider one: RLHF_KERNELS_ISA caps the choice, so the
 * vocabulary-sized parity cases (test/ops/vocab, kl and ppo) run again in a child vitest for each build below
 * this CPU's, and the rewardLoss (uniform K) and policyLoss cases (lane paths built apart for v4: native/cpu/*_lanes.h)
 * and groupAdvantages in uniform groups (its lane count decides which sizes run one group per lane).
 */
import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'

const BUILDS = ['baseline', 'x86-64-v3', 'x86-64-v4']
const FILES = ['test/ops/vocab.test.ts', 'test/ops/kl.test.ts', 'test/ops/ppo.test.ts', 'test/ops/reward-uniform.test.ts', 'test/ops/policy.test.ts', 'test/ops/group-advantages.test.ts']
const host = rk.nativeStatus.info?.isa
const narrower = host && BUILDS.includes(host) ? BUILDS.slice(0, BUILDS.indexOf(host)) : []

describe.skipIf(narrower.length === 0)(`narrower row-kernel builds than this CPU's (${host ?? 'no addon'})`, () => {
  it.each(narrower)('%s passes the vocabulary parity cases', (isa) => {
    const r = spawnSync('npx', ['vitest', 'run', ...FILES, '--reporter=verbose', '-t', '(logProbs|crossEntropy|klDivergence|ppoLoss), (float32|bfloat16)|rewardLoss|policyLoss|groupAdvantages in uniform groups'], {
      encoding: 'utf8', env: { ...process.env, RLHF_KERNELS_ISA: isa, NO_COLOR: '1', FORCE_COLOR: '0' }, timeout: 600_000,
    })
    const out = `${r.stdout}${r.stderr}`
    expect(out, 'the child ran the build it was asked for').toContain(`cpu row kernels ${isa})`)
    expect(r.status, out.slice(-3000)).toBe(0)
    expect(out).toMatch(/Tests\s.*\d+ passed/)
  }, 600_000)
})
