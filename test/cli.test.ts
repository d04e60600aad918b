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

describe('parity with presets and options', () => {
  /** A little-endian .npy file of float64 ('<f8') or int32 ('<i4') values. */
  function npy(file: string, values: ArrayLike<number>, shape: number[], int = false) {
    let header = `{'descr': '${int ? '<i4' : '<f8'}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`
    header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n'
    const data = int ? Buffer.from(Int32Array.from(values).buffer) : Buffer.from(Float64Array.from(values).buffer)
    const head = Buffer.alloc(10)
    head.write('\x93NUMPY', 0, 'latin1')
    head.writeUInt8(1, 6)
    head.writeUInt16LE(header.length, 8)
    writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), data]))
  }
  const g = JSON.parse(readFileSync(join(root, 'test', 'fixtures', 'presets.json'), 'utf8'))
  const dir = (name: string, arrays: Record<string, [ArrayLike<number>, number[], boolean?]>, options?: object) => {
    const d = join(tmp, name)
    spawnSync('mkdir', ['-p', d])
    for (const [key, [values, shape, int]] of Object.entries(arrays)) npy(join(d, `${key}.npy`), values, shape, int)
    if (options) writeFileSync(join(d, 'options.json'), JSON.stringify(options))
    return d
  }
  const { B, T, V } = g
  const policyArrays = (expected: string) => ({
    logp: [g.logp, [B, T]], old_logp: [g.oldLogp, [B, T]], advantages: [g.advantages, [B, T]], mask: [g.mask, [B, T]],
    pg_loss: [[g.cases[expected].policyLoss[0]], [1]], grad_logp: [g.cases[expected].policyLoss[1], [B, T]],
  }) as Record<string, [number[], number[]]>

  it("--preset applies a trainer's defaults: TRL's loss_type 'grpo' passes only with trl-grpo-seq", () => {
    const file = join(fixtures, 'trl_grpo_seq')
    const without = cli('parity', file)
    expect(without.code, without.out).toBe(1)
    const r = cli('parity', file, '--preset', 'trl-grpo-seq')
    expect(r.code, r.out + r.err).toBe(0)
    expect(r.out).toMatch(/^preset trl-grpo-seq: applied to policyLoss$/m)
    expect(r.out).toMatch(/all 6 checks passed/)
  })

  it('options.json inside an .npz archive: flat keys go to the ops that have them (policyLoss and klPenalty here)', () => {
    const r = cli('parity', join(fixtures, 'verl_options.npz'))
    expect(r.code, r.out + r.err).toBe(0)
    expect(r.out).toMatch(/klPenalty\s+loss\s+js.*\(kl_loss\)\s+pass/)
    // the same tensors with the options left out fail: the options were read
    const set = readTensorSet(join(fixtures, 'verl_options.npz'))
    expect(set.options).toEqual({ preset: 'verl-grpo', clipHigh: 0.28, aggregation: 'seq-mean-token-mean', globalSeqCount: 6 })
    const d = dir('verl_no_options', Object.fromEntries([...set.arrays].map(([k, a]) => [k, [a.data, a.shape]])))
    expect(cli('parity', d).code).toBe(1)
  })

  it('options.json beside .npy files can express options the recipes never named (countEmptySequences, logRatioClamp)', () => {
    const d = dir('trl_by_options', policyArrays('trl-grpo-seq'), { aggregation: 'seq-mean-token-mean', countEmptySequences: true, logRatioClamp: 80 })
    const r = cli('parity', d)
    expect(r.code, r.out + r.err).toBe(0)
    const perOp = dir('trl_by_op_options', policyArrays('trl-grpo-seq'), { policyLoss: { aggregation: 'seq-mean-token-mean', countEmptySequences: true } })
    expect(cli('parity', perOp).code).toBe(0)
    // the file's options beat the preset: dapo's clipHigh 0.28 undone, its dual clip off
    const over = dir('dapo_over', policyArrays('trl-grpo'), { clipHigh: 0.2, dualClip: null, logRatioClamp: 80 })
    expect(cli('parity', over, '--preset', 'dapo').code).toBe(0)
    expect(cli('parity', dir('dapo_plain', policyArrays('trl-grpo')), '--preset', 'dapo').code).toBe(1)
  })

  it('groupAdvantages and ppoLoss recipes, with a preset', () => {
    const offsets = [0]
    for (const n of g.groupSizes) offsets.push(offsets[offsets.length - 1] + n)
    const groups = dir('groups', { scores: [g.scores, [g.scores.length]], offsets: [offsets, [offsets.length], true], group_advantages: [g.cases['verl-grpo'].groupAdvantages, [g.scores.length]] })
    const r = cli('parity', groups, '--preset', 'verl-grpo')
    expect(r.code, r.out + r.err).toBe(0)
    expect(r.out).toMatch(/groupAdvantages/)
    expect(cli('parity', groups, '--preset', 'trl-grpo').code).toBe(1)
    const want = g.cases['verl-grpo'].ppoLoss
    const ppo = dir('ppo', {
      logits: [g.logits, [B, T, V]], actions: [g.actions, [B, T], true], old_logp: [g.oldLogp, [B, T]], ref_logp: [g.refLogp, [B, T]],
      advantages: [g.advantages, [B, T]], mask: [g.mask, [B, T]], ppo_loss: [[want.loss], [1]], grad_logits: [want.gradLogits, [B, T, V]],
    })
    const p = cli('parity', ppo, '--preset', 'verl-grpo')
    expect(p.code, p.out + p.err).toBe(0)
    expect(p.out).toMatch(/ppoLoss\s+gradLogits\s+js.*\(grad_logits\)\s+pass/)
  })

  it.each([
    [['--preset', 'verl-grop'], /--preset must be one of verl-ppo, verl-grpo/],
    [['--preset', 'trl-grpo', 'GAE'], /--preset trl-grpo sets options of none of this file's ops \(gae\)/],
    [['OPTIONS'], /option "clipHihg" is not an option of policyLoss/],
  ])('bad use %j: exit 2, one line', (args, message) => {
    const bad = dir('bad_options', policyArrays('verl-grpo'), { clipHihg: 0.28 })
    const file = args.includes('GAE') ? join(fixtures, 'gae') : args.includes('OPTIONS') ? bad : join(fixtures, 'trl_grpo_seq')
    const r = cli('parity', file, ...args.filter((a) => a !== 'GAE' && a !== 'OPTIONS'))
    expect(r.code, r.out).toBe(2)
    expect(r.err.trim().split('\n')).toHaveLength(1)
    expect(r.err).toMatch(message)
  })
})

describe('demo with a preset', () => {
  const small = { seed: 3, steps: 25, rmSteps: 300, contexts: 4, vocab: 16, length: 6, batch: 48, out: null, quiet: true }
  it.each(['verl-grpo', 'verl-ppo'] as const)('%s: PPO raises the true reward', (preset) => {
    const s = runDemo({ ...small, preset })
    expect(s.trueRewardAfter).toBeGreaterThan(s.trueRewardBefore + 0.3)
  })

  it('--preset on the command line; an unknown one is bad use', () => {
    const r = cli('demo', '--steps', '2', '--rm-steps', '10', '--out', 'out-preset', '--quiet', '--preset', 'verl-grpo')
    expect(r.code, r.err).toBe(0)
    expect(r.out).toMatch(/with preset verl-grpo/)
    expect(JSON.parse(readFileSync(join(tmp, 'out-preset', 'curves.json'), 'utf8')).options.preset).toBe('verl-grpo')
    const bad = cli('demo', '--preset', 'nope')
    expect(bad.code).toBe(2)
    expect(bad.err).toMatch(/--preset must be one of/)
  })
})

describe('parity recipes of the policy variants (verl loss_mode) and of preferenceLoss (TRL dpo_loss)', () => {
  /** The archive's members as a directory of .npy files, with `options` as its options.json (none: no file). */
  function unpacked(file: string, name: string, options?: object) {
    const d = join(tmp, name)
    const r = spawnSync('/usr/bin/python3', ['-c', 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])', join(fixtures, file), d])
    expect(r.status, String(r.stderr)).toBe(0)
    rmSync(join(d, 'options.json'))
    if (options) writeFileSync(join(d, 'options.json'), JSON.stringify(options))
    return d
  }

  it.each([
    ['verl_gspo.npz', 'policyLoss', 6], ['verl_cispo.npz', 'policyLoss', 6], ['trl_dpo.npz', 'preferenceLoss', 10],
  ] as const)('%s: every check passes (exit 0)', (file, op, checks) => {
    const r = cli('parity', join(fixtures, file))
    expect(r.code, r.out + r.err).toBe(0)
    expect(r.out).toMatch(new RegExp(`^${op}\\s`, 'm'))
    expect(r.out).toMatch(new RegExp(`all ${checks} checks passed`))
  })

  it("the trainer's mode is read: without verl's loss_mode, or with another TRL loss_type, the same tensors fail", () => {
    expect(cli('parity', unpacked('verl_gspo.npz', 'gspo_plain', {})).code).toBe(1)
    expect(cli('parity', unpacked('verl_gspo.npz', 'gspo_again', { loss_mode: 'gspo' })).code).toBe(0)
    expect(cli('parity', unpacked('verl_cispo.npz', 'cispo_plain', { clipHigh: 0.28 })).code).toBe(1)
    const dpo = cli('parity', unpacked('trl_dpo.npz', 'dpo_ipo', { loss_type: 'ipo', beta: 0.1 }))
    expect(dpo.code).toBe(1)
    expect(dpo.out).toMatch(/preferenceLoss\s+losses\s+js.*FAIL/)
    // TRL's rewards need no loss type: the implicit rewards pass whatever the loss
    expect(dpo.out).toMatch(/preferenceLoss\s+chosenRewards\s+js.*\(chosen_rewards\)\s+pass/)
  })

  it('an unknown loss_mode is bad use: exit 2, one line', () => {
    const r = cli('parity', unpacked('verl_cispo.npz', 'cispo_bad', { loss_mode: 'cipso' }))
    expect(r.code, r.out).toBe(2)
    expect(r.err.trim().split('\n')).toHaveLength(1)
    expect(r.err).toMatch(/loss_mode must be one of vanilla, gspo, cispo, dppo_tv, dppo_kl, got "cipso"/)
  })
})
