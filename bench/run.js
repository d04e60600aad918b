// `npm run bench`: the host benchmark suites, a table each. DESIGN §3 has the targets.
// `npm run bench -- --gpu`: also build and run the standalone CUDA checks and timings (bench/cuda/*.cu)
// when a GPU is visible; without one, say why.
import { spawnSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { crossEntropySuite } from './cross-entropy.js'
import * as rk from '../dist/index.js'

console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, backends: ${rk.backends().map((b) => `${b.name}${b.available ? '' : ' (absent)'}`).join(', ')}`)
for (const suite of [crossEntropySuite]) {
  const { title, rows } = await suite()
  console.log(`\n${title}`)
  console.table(rows)
}

if (process.argv.includes('--gpu')) {
  const info = rk.nativeStatus.info
  if (!info || info.cuda.deviceCount === 0) {
    console.log(`\nGPU benchmark skipped: ${rk.backends().find((b) => b.name === 'cuda').reason}`)
  } else {
    const root = new URL('..', import.meta.url).pathname
    const cpu = ['vocab', 'kl', 'policy', 'value', 'reward', 'advantages', 'ppo', 'aggregate', 'parallel'].map((f) => `native/cpu/${f}.cc`)
    const cu = ['vocab', 'kl', 'policy', 'value', 'reward', 'advantages', 'ppo', 'device'].map((f) => `native/cuda/${f}.cu`)
    const dir = mkdtempSync(join(os.tmpdir(), 'rlhf-gpu-bench-'))
    for (const [name, sources] of [['vocab_check', ['bench/cuda/vocab_check.cu', 'native/cuda/vocab.cu', 'native/cpu/vocab.cc', 'native/cpu/parallel.cc']], ['ops_check', ['bench/cuda/ops_check.cu', ...cu, ...cpu]]]) {
      const exe = join(dir, name)
      const build = spawnSync('nvcc', ['-std=c++20', '-O3', `-arch=sm_${(info.cuda.devices[0]?.computeCapability ?? '9.0').replace('.', '')}`, '-Inative/include', '-Xcompiler', '-Wno-psabi', '-o', exe, ...sources], { cwd: root, stdio: 'inherit' })
      if (build.status !== 0) { process.exitCode = 1; continue }
      const run = spawnSync(exe, [], { stdio: 'inherit' })
      if (run.status !== 0) process.exitCode = 1
    }
  }
}
