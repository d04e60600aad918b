/**
 * The CUDA suite. On a machine with a usable GPU it builds and runs the standalone kernel check
 * (bench/cuda/vocab_check.cu: fresh random inputs, poisoned outputs, CPU and float64 comparison, bitwise
 * determinism over two runs, a flagged bad target) and requires every line to pass. Elsewhere it skips and
 * prints why.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'

const root = new URL('..', import.meta.url).pathname
const gpus = rk.nativeStatus.info?.cuda.deviceCount ?? 0
const reason = gpus > 0 ? '' : rk.backends().find((b) => b.name === 'cuda')!.reason
if (gpus === 0) console.log(`CUDA suite skipped: ${reason}`)

const CPU_KERNELS = ['vocab', 'kl', 'policy', 'value', 'reward', 'advantages', 'ppo', 'aggregate', 'parallel'].map((f) => `native/cpu/${f}.cc`)

function buildAndRun(name: string, sources: string[], args: string[] = []) {
  const exe = join(mkdtempSync(join(tmpdir(), 'rlhf-cuda-')), name)
  const build = spawnSync('nvcc', ['-std=c++20', '-O3', '-arch=sm_90', '-Inative/include', '-Xcompiler', '-Wno-psabi', '-o', exe, ...sources],
    { cwd: root, encoding: 'utf8' })
  expect(build.status, build.stderr).toBe(0)
  const run = spawnSync(exe, args, { encoding: 'utf8', timeout: 600_000 })
  console.log(run.stdout)
  expect(run.status, run.stderr).toBe(0)
  expect(run.stdout).not.toMatch(/FAIL/)
  return run.stdout
}

describe.runIf(gpus > 0)('CUDA kernels on the GPU', () => {
  it('vocab_check: cross-entropy fwd/bwd in f32 and bf16 match the CPU kernel, write every output, are deterministic, flag bad targets', () => {
    expect(buildAndRun('vocab_check', ['bench/cuda/vocab_check.cu', 'native/cuda/vocab.cu', 'native/cpu/vocab.cc', 'native/cpu/parallel.cc'], ['--quick'])).toMatch(/-> ok/)
  }, 900_000)

  it('ops_check: every other op matches its CPU kernel on fresh random inputs', () => {
    const cu = ['vocab', 'kl', 'policy', 'value', 'reward', 'advantages', 'ppo', 'device'].map((f) => `native/cuda/${f}.cu`)
    expect(buildAndRun('ops_check', ['bench/cuda/ops_check.cu', ...cu, ...CPU_KERNELS])).toMatch(/ok: 0 failed checks/)
  }, 900_000)
})

describe.runIf(gpus === 0)('CUDA suite without a GPU', () => {
  it('reports why the cuda backend is unavailable', () => {
    expect(reason).toMatch(/\w/)
  })
})
