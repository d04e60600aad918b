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

describe.runIf(gpus > 0)('CUDA kernels on the GPU', () => {
  it('vocab_check: cross-entropy fwd/bwd in f32 and bf16 match the CPU kernel, write every output, are deterministic, flag bad targets', () => {
    const exe = join(mkdtempSync(join(tmpdir(), 'rlhf-cuda-')), 'vocab_check')
    const build = spawnSync('nvcc', ['-std=c++20', '-O3', '-arch=sm_90', '-Inative/include', '-Xcompiler', '-Wno-psabi', '-o', exe,
      'bench/cuda/vocab_check.cu', 'native/cuda/vocab.cu', 'native/cpu/vocab.cc', 'native/cpu/parallel.cc'], { cwd: root, encoding: 'utf8' })
    expect(build.status, build.stderr).toBe(0)
    const run = spawnSync(exe, ['--quick'], { encoding: 'utf8', timeout: 600_000 })
    console.log(run.stdout)
    expect(run.status, run.stderr).toBe(0)
    expect(run.stdout).toMatch(/-> ok/)
    expect(run.stdout).not.toMatch(/FAIL/)
  }, 900_000)
})

describe.runIf(gpus === 0)('CUDA suite without a GPU', () => {
  it('reports why the cuda backend is unavailable', () => {
    expect(reason).toMatch(/\w/)
  })
})
