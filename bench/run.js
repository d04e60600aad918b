// `npm run bench`: the host benchmark suites, a table each. DESIGN §3 has the targets.
// `npm run bench -- --host`: the host table of issue 13 (bench/host.js) instead, one thread.
// `npm run bench -- --gpu`: also the GPU suite (bench/gpu.js) when the cuda backend is usable; else why not.
// `npm run bench -- --gpu-only`: the GPU suite alone.
// `npm run bench -- --async`: async throughput on cpu at 1-32 calls in flight, 1 and 2 threads
// (bench/async-throughput.js) instead.
// `npm run bench -- --scaling`: the cpu rows of the host table at 1 thread and at the cores' count, each count
// in a child process (`--threads-child`; BENCH_THREADS=1,2,4 picks the counts) instead.
import os from 'node:os'

const host = process.argv.includes('--host')
const gpuOnly = process.argv.includes('--gpu-only')
const gpu = gpuOnly || process.argv.includes('--gpu')
const asyncOnly = process.argv.includes('--async')
const scaling = process.argv.includes('--scaling')
const threadsChild = process.argv.includes('--threads-child')
// the thread pool is sized when the addon loads: the variable must be set before the first import of it
if (host) process.env.RLHF_KERNELS_THREADS = '1'
const rk = await import('../dist/index.js')
const { crossEntropySuite } = await import('./cross-entropy.js')
const { gpuSuite } = await import('./gpu.js')
const { hostSuite, scalingSuite } = await import('./host.js')
const { asyncThroughputSuite } = await import('./async-throughput.js')
if (threadsChild) {
  // a child of the scaling table: its rows' times as the last line of JSON
  const { cpuTimes } = await import('./host.js')
  console.log(JSON.stringify(await cpuTimes()))
  process.exit(0)
}

console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, backends: ${rk.backends().map((b) => `${b.name}${b.available ? '' : ' (absent)'}`).join(', ')}`)
const suites = host ? [hostSuite] : scaling ? [scalingSuite] : asyncOnly ? [asyncThroughputSuite] : [...(gpuOnly ? [] : [crossEntropySuite]), ...(gpu ? [gpuSuite] : [])]
for (const suite of suites) {
  const result = await suite()
  if (result.skipped) {
    console.log(`\n${result.skipped}`)
    continue
  }
  console.log(`\n${result.title}`)
  if (result.text) console.log(result.text)
  else console.table(result.rows)
}
