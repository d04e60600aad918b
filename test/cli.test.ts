/**
 * The `rlhf-kernels` command: the demo learns (reward-model accuracy above chance, true reward rising),
 * `parity` passes on the generator's fixture files and refuses corrupted ones, and every kind of bad use
 * gives one line on stderr and exit code 2.
 */
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { runDemo } from '../src/cli/demo.js'
import { readTensorSet } from '../src/cli/tensorfile.js'

const root = new URL('..', import.meta.url).pathname
const bin = join(root, 'dist', 'cli', 'main.js')
const fixtures = join(root, 'test', 'fixtures', 'parity')
const tmp = mkdtempSync(join(tmpdir(), 'rlhf-kernels-cli-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', cwd: tmp, timeout: 120_000 })
  return { code: r.status, out: r.stdout, err: r.stderr }
}

describe('demo', () => {
  it('at a small size: the reward model beats chance on held-out comparisons and PPO raises the true reward', () => {
    const s = runDemo({ seed: 3, steps: 40, rmSteps: 300, contexts: 4, vocab: 16, length: 6, batch: 48, out: null, quiet: true })
    expect(s.rmHeldOutAccuracy).toBeGreaterThan(0.75)
    expect(s.trueRewardAfter).toBeGreaterThan(s.trueRewardBefore + 0.3)
    expect(s.curves.ppo).toHaveLength(40)
    expect(s.finalKl).toBeGreaterThan(0)
    expect(Number.isFinite(s.curves.ppo.at(-1)!.loss)).toBe(true)
  })

  it('soft labels train the reward model too', () => {
    const s = runDemo({ seed: 4, steps: 5, rmSteps: 300, contexts: 4, vocab: 16, length: 6, batch: 16, soft: true, out: null, quiet: true })
    expect(s.rmHeldOutAccuracy).toBeGreaterThan(0.75)
  })

  it('the command prints a summary and writes the curves as JSON and SVG', () => {
    const r = cli('demo', '--steps', '3', '--rm-steps', '20', '--out', 'out', '--quiet', '--seed', '9')
    expect(r.code, r.err).toBe(0)
    expect(r.out).toMatch(/true \(hidden\) reward after PPO/)
    const curves = JSON.parse(readFileSync(join(tmp, 'out', 'curves.json'), 'utf8'))
    expect(curves.curves.ppo).toHaveLength(3)
    expect(readFileSync(join(tmp, 'out', 'curves.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<path d="M[\s\S]*<\/svg>\n$/)
  })
})

describe('parity', () => {
  it.each(['cross_entropy.safetensors', 'cross_entropy_bf16.safetensors', 'kl.safetensors', 'reward.safetensors', 'policy.npz', 'value.npz', 'gae'])(
    '%s: every check passes (exit 0)', (file) => {
      const r = cli('parity', join(fixtures, file))
      expect(r.code, r.out + r.err).toBe(0)
      expect(r.out).toMatch(/all \d+ checks passed/)
      expect(r.out).toMatch(/\bjs\b/)
    })

  it('a wrong expected value fails the check (exit 1)', () => {
    const dir = join(tmp, 'gae-wrong')
    spawnSync('cp', ['-r', join(fixtures, 'gae'), dir])
    const adv = readFileSync(join(dir, 'advantages.npy'))
    adv.writeFloatLE(adv.readFloatLE(adv.length - 4) + 0.01, adv.length - 4) // the last element, off by 0.01
    writeFileSync(join(dir, 'advantages.npy'), adv)
    const r = cli('parity', dir)
    expect(r.code).toBe(1)
    expect(r.out).toMatch(/FAIL/)
  })

  it('reads the same arrays from safetensors, npz and npy as the generator wrote them', () => {
    const set = readTensorSet(join(fixtures, 'cross_entropy_bf16.safetensors'))
    expect(set.arrays.get('logits')!.dtype).toBe('BF16')
    expect(set.arrays.get('logits')!.shape).toEqual([6, 50])
    expect(set.arrays.get('targets')!.data[2]).toBe(-100)
    expect(set.metadata.label_smoothing).toBe('0.1')
    expect(readTensorSet(join(fixtures, 'value.npz')).arrays.get('values')!.shape).toEqual([20])
    expect(readTensorSet(join(fixtures, 'gae')).arrays.get('rewards')!.shape).toEqual([2, 6])
  })
})

describe('bad use: one line on stderr, exit 2, no stack trace', () => {
  const corrupt = join(tmp, 'corrupt.safetensors')
  const buf = readFileSync(join(fixtures, 'kl.safetensors'))
  writeFileSync(corrupt, buf.subarray(0, 40))
  const wrongDtype = join(tmp, 'wrong.safetensors')
  // the cross-entropy file with its int64 targets relabelled as float32 (same bytes, wrong dtype and count)
  const ce = readFileSync(join(fixtures, 'cross_entropy.safetensors'))
  const n = Number(ce.readBigUInt64LE(0))
  const header = JSON.parse(ce.subarray(8, 8 + n).toString())
  header.targets.dtype = 'F32'
  header.targets.shape = [12]
  const text = Buffer.from(JSON.stringify(header))
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(text.length))
  writeFileSync(wrongDtype, Buffer.concat([len, text, ce.subarray(8 + n)]))
  const wrongShape = join(tmp, 'shape.safetensors')
  header.targets.dtype = 'I64'
  header.targets.shape = [6]
  header.logits.shape = [300]
  const text2 = Buffer.from(JSON.stringify(header))
  len.writeBigUInt64LE(BigInt(text2.length))
  writeFileSync(wrongShape, Buffer.concat([len, text2, ce.subarray(8 + n)]))
  copyFileSync(join(fixtures, 'kl.safetensors'), join(tmp, 'kl.bin'))

  it.each([
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['demo', '--stepz', '3'], /unknown option --stepz for 'demo'/],
    [['demo', '--steps', 'many'], /--steps must be an integer ≥ 1, got 'many'/],
    [['demo', '--steps'], /--steps needs a value/],
    [['info', '--backend', 'tpu'], /--backend must be js, cpu or cuda, got 'tpu'/],
    [['parity'], /parity needs exactly one FILE, got 0/],
    [['parity', join(tmp, 'missing.safetensors')], /missing.safetensors: no such file or directory/],
    [['parity', corrupt], /corrupt.safetensors: header length \d+ does not fit in the file/],
    [['parity', join(tmp, 'kl.bin')], /unknown file type/],
    [['parity', wrongDtype], /targets must hold integers, got dtype F32/],
    [['parity', wrongShape], /logits must have rank ≥ 2/],
  ])('%j', (args, message) => {
    const r = cli(...args)
    expect(r.code).toBe(2)
    expect(r.err.trim().split('\n')).toHaveLength(1)
    expect(r.err).toMatch(message)
    expect(r.err).not.toMatch(/\n\s+at /)
  })

  it('--backend cuda without a GPU says why, in one line', () => {
    const r = cli('info', '--backend', 'cuda')
    if (r.code === 0) return // a machine where cuda is available
    expect(r.code).toBe(2)
    expect(r.err).toMatch(/the cuda backend is not available/)
  })
})

describe('info', () => {
  it('lists the backends and the build', () => {
    const r = cli('info')
    expect(r.code).toBe(0)
    expect(r.out).toMatch(/backends \(host data runs on: (cpu|js)\)/)
    expect(r.out).toMatch(/^js\s+yes/m)
    if (existsSync(join(root, 'build', 'Release', 'build-info.json'))) expect(r.out).toMatch(/build: \{/)
  })
})
