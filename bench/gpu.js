// The GPU benchmark (`npm run bench -- --gpu`, DESIGN §3): each op on device tensors, timed by CUDA events
// inside the addon (inputs prepared once; the op's own kernels only), with the bytes it must move, GB/s and
// the % of the device-to-device copy bandwidth measured in the same run, beside the anchors' figures.
// Before it is timed, each op is checked once against the cpu backend on 64 rows of the same data (the
// device generator is counter-based: a [64, V] tensor with the same seed is the first 64 rows). Each row is
// measured on its own: a row that fails says why and the others go on. A row whose bytes fit in the L2
// cache is relaunched on data the cache already holds, so its GB/s can exceed HBM's: such rows say so.
import * as rk from '../dist/index.js'
import { DeviceData, VOCAB_KERNELS, cudaBench, cudaTime, withVocabKernel } from '../dist/internal.js'

const { Tensor } = rk

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 20)
const ES = { float32: 4, bfloat16: 2 }

/** DESIGN §3 (H100, N = 8192, V = 128256 bf16): target, Liger-Kernel, torch.compile, PyTorch eager, ms */
const ANCHORS = {
  logProbs: { target: 0.74, liger: 0.88, compile: 1.86, eager: 15.4 },
  crossEntropy: { target: 1.5, liger: 2.78, compile: 4.42, eager: 6.27 },
  ppoLoss: { target: 1.5, liger: 2.52, compile: 6.48, eager: 32.6 },
  klDivergence: { target: 2.3, liger: null, compile: 10.1, eager: 44.0 },
  rewardLoss: { target: 0.025, liger: null, compile: null, eager: 1.28 },
  gae: { target: 0.05, liger: null, compile: null, eager: 178 },
}

function deviceTensor(shape, dtype, fill) {
  const n = shape.reduce((a, b) => a * b, 1)
  const es = dtype === 'int32' ? 4 : ES[dtype]
  const handle = cudaBench.empty(n * es)
  fill(handle)
  return new Tensor(new DeviceData(handle, n, dtype), shape, dtype)
}
const normal = (shape, dtype, seed, scale = 2) => deviceTensor(shape, dtype, (h) => cudaBench.fillNormal(h, dtype, seed, scale))
const ints = (shape, limit, seed) => deviceTensor(shape, 'int32', (h) => cudaBench.fillInt(h, limit, seed))

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]

/**
 * The cases: each builds its options for n rows (prompts, sequences) from fixed seeds, so `make(64)` is the
 * first rows of `make(N)`: [name, make, bytes it must move at n].
 */
function cases(V, dtype) {
  const es = ES[dtype]
  const logits = (n) => normal([n, V], dtype, 11)
  const targets = (n) => ints([n], V, 12)
  const ppo = (n, extra) => ({ logits: logits(n), actions: targets(n), oldLogp: normal([n], 'float32', 13, 0.5), advantages: normal([n], 'float32', 14, 1), klEstimator: 'k3', beta: 0, ...extra })
  const cases = [
    ['logProbs', (n) => ({ logits: logits(n), targets: targets(n) }), (n) => n * V * es],
    ['crossEntropy', (n) => ({ logits: logits(n), targets: targets(n), grad: true }), (n) => n * V * (es + 4)],
    ['ppoLoss', (n) => ppo(n), (n) => n * V * (es + 4)],
    ['klDivergence', (n) => ({ pLogits: logits(n), qLogits: normal([n, V], dtype, 15), grad: 'q' }), (n) => n * V * (2 * es + 4)],
  ]
  if (es === 2) {  // the gradient in the logits' dtype (gradDtype 'input'): the design's 1R + 1W of bf16
    cases.push(
      ['crossEntropy', (n) => ({ logits: logits(n), targets: targets(n), grad: true, gradDtype: 'input' }), (n) => n * V * 2 * es, 'bf16 grad'],
      ['ppoLoss', (n) => ppo(n, { gradDtype: 'input' }), (n) => n * V * 2 * es, 'bf16 grad'],
      ['klDivergence', (n) => ({ pLogits: logits(n), qLogits: normal([n, V], dtype, 15), grad: 'q', gradDtype: 'input' }), (n) => n * V * 3 * es, 'bf16 grad'],
    )
  }
  return cases
}

const K = 4
const rewardCase = ['rewardLoss', (n) => ({ scores: normal([n * K], 'float32', 21, 1), K, chosen: ints([n], K, 22) }), (n) => n * K * 4 * 3 + n * 4 * 2]
// the DESIGN §3 shapes (2^20 prompts, 512 sequences) fit in a 50-60 MB L2; the larger ones do not
const TOKEN_ROWS = [[rewardCase, 1 << 20, `${1 << 20}×${K}`], [rewardCase, 1 << 23, `${1 << 23}×${K}`]]
const T = 2048
const gaeCase = ['gae', (n) => ({ rewards: normal([n, T], 'float32', 23, 1), values: normal([n, T], 'float32', 24, 1), gamma: 0.99, lambda: 0.95 }),
  (n) => n * T * 4 * 4]
TOKEN_ROWS.push([gaeCase, 512, `512×${T}`], [gaeCase, 8192, `8192×${T}`])

const dispose = (options) => { for (const v of Object.values(options)) if (v instanceof Tensor) v.dispose() }

/** The op on 64 rows: cuda against the cpu backend on host copies of the same generated data. */
function check(name, make) {
  const small = make(64)
  const gpu = rk[name](small)
  const host = Object.fromEntries(Object.entries(small).map(([k, v]) => [k, v instanceof Tensor ? v.toHost() : v]))
  rk.setBackend('cpu')
  let cpu
  try { cpu = rk[name](host) } finally { rk.setBackend('auto') }
  let worst = 0
  for (const [k, want] of Object.entries(cpu)) {
    const got = gpu[k]
    const a = typeof got === 'number' ? [got] : got instanceof Tensor ? got.toFloat32Array() : null
    const b = typeof want === 'number' ? [want] : want instanceof Tensor ? want.toFloat32Array() : ArrayBuffer.isView(want) ? want : null
    // float32 results to 1e-4; 16-bit gradients to one unit in their last place
    const rtol = got instanceof Tensor && got.dtype !== 'float32' ? 2 ** -7 : 1e-4
    if (a && b) for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1e-5 + rtol * Math.abs(b[i])))
    if (got instanceof Tensor) got.dispose()
  }
  dispose(small)
  if (!(worst <= 1)) throw new Error(`${name}: the cuda result differs from the cpu backend (${worst.toExponential(2)}× tolerance)`)
}

/** The single-pass kernel versions timed side by side (native/cuda/rowtile.cuh), or the one the environment names. */
const KERNELS = process.env.RLHF_KERNELS_VOCAB_KERNEL ? [process.env.RLHF_KERNELS_VOCAB_KERNEL] : VOCAB_KERNELS

function row([name, make, bytesAt, note], n, shape, dtype, copyGBs, l2Bytes, kernel) {
  if (kernel) return withVocabKernel(kernel, () => ({ kernel, ...row([name, make, bytesAt, note], n, shape, dtype, copyGBs, l2Bytes) }))
  const op = note ? `${name} (${note})` : name
  let options
  try {
    check(name, make)
    options = make(n)
    const ms = median(cudaTime(name, options, ITERATIONS))
    const bytes = bytesAt(n)
    const gbs = bytes / (ms * 1e-3) / 1e9
    const a = ANCHORS[name] ?? {}
    const fmt = (x) => (x == null ? '—' : x)
    return {
      op, shape, dtype, 'ms (median)': +ms.toFixed(4), MB: +(bytes / 1e6).toFixed(1), 'GB/s': +gbs.toFixed(0),
      '% copy': +(100 * gbs / copyGBs).toFixed(1), 'floor ms': +(bytes / (copyGBs * 1e9) * 1e3).toFixed(4),
      L2: bytes <= l2Bytes ? 'resident' : '', target: fmt(a.target), Liger: fmt(a.liger), 'torch.compile': fmt(a.compile), eager: fmt(a.eager),
    }
  } catch (e) {
    return { op, shape, dtype, error: String(e?.message ?? e).split('\n')[0] }
  } finally {
    if (options) dispose(options)
    try { rk.releaseCachedMemory() } catch {}
  }
}

export async function gpuSuite() {
  const status = rk.backends().find((b) => b.name === 'cuda')
  if (!status.available) return { skipped: `GPU benchmark skipped: ${status.reason}` }
  const info = rk.nativeStatus.info.cuda.devices[0]
  const copyGBs = cudaBench.copyBandwidth(1 << 30, 20)
  const rows = []
  const N = Number(process.env.BENCH_N ?? 8192)
  // DESIGN §3: every vocabulary op at V ∈ {32000, 128256, 152064, 262144}
  for (const V of [32000, 128256, 152064, 262144]) {
    for (const dtype of ['bfloat16', 'float32']) {
      for (const c of cases(V, dtype)) {
        // logProbs has one kernel; the fused ops are timed in each version
        for (const kernel of c[0] === 'logProbs' ? [''] : KERNELS) rows.push(row(c, N, `${N}×${V}`, dtype, copyGBs, info.l2CacheBytes, kernel))
      }
    }
  }
  for (const [c, n, shape] of TOKEN_ROWS) rows.push(row(c, n, shape, 'float32', copyGBs, info.l2CacheBytes))
  return {
    title: `GPU: ${info.name} (compute ${info.computeCapability}, L2 ${(info.l2CacheBytes / 2 ** 20).toFixed(0)} MiB), device-to-device copy ${copyGBs.toFixed(0)} GB/s (read + write) measured in this run; ${ITERATIONS} launches per op, CUDA events`,
    rows,
  }
}
