// Cross-entropy forward, 1024 × 32000 float32 (DESIGN §3): every available host backend of rlhf-kernels and
// tfjs's wasm backend on the same data, in one run. Each result is checked against the float64 reference
// once before it is timed. Run with `npm run bench` (builds first) or `node bench/cross-entropy.js`.
import Benchmark from 'benchmark'
import * as rk from '../dist/index.js'
import { mulberry32 } from '../dist/internal.js'

const N = Number(process.env.BENCH_N ?? 1024)
const V = Number(process.env.BENCH_V ?? 32000)
const bytes = N * V * 4 + N * 4 // logits read once + targets

function data(seed) {
  const u = mulberry32(seed).uniform
  const logits = new Float32Array(N * V)
  for (let i = 0; i < logits.length; i++) logits[i] = (u() - 0.5) * 8
  const targets = Int32Array.from({ length: N }, () => Math.floor(u() * V))
  return { logits, targets }
}

/** float64 mean cross-entropy, the value every contender must reproduce */
function referenceLoss(logits, targets) {
  let total = 0
  for (let n = 0; n < N; n++) {
    let m = -Infinity
    for (let v = 0; v < V; v++) m = Math.max(m, logits[n * V + v])
    let s = 0
    for (let v = 0; v < V; v++) s += Math.exp(logits[n * V + v] - m)
    total += m + Math.log(s) - logits[n * V + targets[n]]
  }
  return total / N
}

async function tfjsWasm(logits, targets) {
  try {
    const tf = await import('@tensorflow/tfjs-core')
    await import('@tensorflow/tfjs-backend-wasm')
    await tf.setBackend('wasm')
    await tf.ready()
    const x = tf.tensor2d(logits, [N, V])
    const flat = tf.tensor1d(Int32Array.from(targets, (y, n) => n * V + y), 'int32')
    // the cheapest route in tfjs: logSumExp per row minus the gathered target logit
    const run = () => tf.tidy(() => tf.mean(tf.sub(tf.logSumExp(x, 1), tf.gather(tf.reshape(x, [-1]), flat))).dataSync()[0])
    return { name: `tfjs-wasm ${tf.version_core}`, run }
  } catch (error) {
    return { name: 'tfjs-wasm', skip: `not available: ${error.message}` }
  }
}

export async function crossEntropySuite() {
  const { logits, targets } = data(7)
  const expected = referenceLoss(logits, targets)
  const t = rk.tensor(logits, [N, V])
  const contenders = []
  for (const b of rk.backends()) {
    if (!b.available || b.name === 'cuda') continue
    contenders.push({
      name: `rlhf-kernels ${b.name}`,
      run: () => { rk.setBackend(b.name); const r = rk.crossEntropy({ logits: t, targets }).loss; rk.setBackend('auto'); return r },
    })
  }
  contenders.push(await tfjsWasm(logits, targets))

  const rows = []
  const suite = new Benchmark.Suite()
  for (const c of contenders) {
    if (c.skip) { rows.push({ name: c.name, note: c.skip }); continue }
    const got = c.run()
    const err = Math.abs(got - expected) / Math.abs(expected)
    if (!(err < 1e-4)) throw new Error(`${c.name}: loss ${got}, expected ${expected} (relative error ${err})`)
    suite.add(c.name, c.run, { minSamples: 5, maxTime: 4 })
    rows.push({ name: c.name, check: `loss ${got.toFixed(6)} (rel err ${err.toExponential(1)})` })
  }
  await new Promise((resolve) => suite.on('complete', resolve).run())
  suite.forEach((b) => {
    const row = rows.find((r) => r.name === b.name)
    const ms = b.stats.mean * 1e3
    Object.assign(row, { ms: ms.toFixed(1), '±%': b.stats.rme.toFixed(1), samples: b.stats.sample.length, 'GB/s': (bytes / (ms / 1e3) / 1e9).toFixed(2) })
  })
  return { title: `cross-entropy forward, ${N} × ${V} float32 (${(bytes / 1e6).toFixed(1)} MB read)`, rows }
}
