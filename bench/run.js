// `npm run bench`: the host benchmark suites, a table each. DESIGN §3 has the targets.
// `npm run bench -- --gpu`: also the GPU suite (bench/gpu.js) when the cuda backend is usable; else why not.
// `npm run bench -- --gpu-only`: the GPU suite alone.
import os from 'node:os'
import { crossEntropySuite } from './cross-entropy.js'
import { gpuSuite } from './gpu.js'
import * as rk from '../dist/index.js'

const gpuOnly = process.argv.includes('--gpu-only')
const gpu = gpuOnly || process.argv.includes('--gpu')
console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, backends: ${rk.backends().map((b) => `${b.name}${b.available ? '' : ' (absent)'}`).join(', ')}`)
for (const suite of [...(gpuOnly ? [] : [crossEntropySuite]), ...(gpu ? [gpuSuite] : [])]) {
  const result = await suite()
  if (result.skipped) {
    console.log(`\n${result.skipped}`)
    continue
  }
  console.log(`\n${result.title}`)
  console.table(result.rows)
}
