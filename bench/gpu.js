// The GPU benchmark (`npm run bench -- --gpu`, DESIGN §3): each op on device tensors, timed by CUDA events
// inside the addon (inputs prepared once; the op's own kernels only), with the bytes it must move, GB/s and
// the % of the device-to-device copy bandwidth measured in the same run, beside the anchors' figures.
// Before it is timed, each op is checked once against the cpu backend on 64 rows of the same data (the
// device generator is counter-based: a [64, V] tensor with the same seed is the first 64 rows). Each row is
// measured on its own: a row that fails says why and the others go on. A row whose bytes fit in the L2
// cache is relaunched on data the cache already holds, so its GB/s can exceed HBM's: such rows say so.
// The vocab-sharded forms (issue 15) are host compositions of these ops, not single ops: their rows are wall
// time of the whole sequence (see shardedForms). BENCH_GPU_OPS=logProbs,keptLogProbs,sharded picks rows by
// op name ('sharded': the sharded forms); BENCH_N (8192) and BENCH_SHARDED_N (2048) the rows.
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
const ONLY = process.env.BENCH_GPU_OPS?.split(',')
const wanted = (name) => !ONLY || ONLY.includes(name)

/**
 * A kept set as CSR for keptLogProbs (host data): 1000 tokens a row, every stride-th token (stride = ⌊V/1000⌋)
 * in the residue class of the row's target y, so y is kept: base + j·stride for j < 1000, or, when y lies past
 * the 1000th (the last partial stride), the 1000 ending at y.
 */
export const KEPT = 1000
export function keptSet(y, V) {
  const stride = Math.floor(V / KEPT)
  const keepOffsets = Int32Array.from({ length: y.length + 1 }, (_, n) => n * KEPT)
  const keepTokens = new Int32Array(y.length * KEPT)
  for (let n = 0; n < y.length; n++) {
    const first = Math.floor(y[n] / stride) < KEPT ? y[n] % stride : y[n] - (KEPT - 1) * stride
    for (let j = 0; j < KEPT; j++) keepTokens[n * KEPT + j] = first + j * stride
  }
  return { keepOffsets, keepTokens }
}

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
  // issue 15: a temperature per row (row n's T read by the kernels), the one-pass row statistics (entropy, Σp²,
  // max p), and kept-set log-probs with the set given (keptSet: 1000 tokens a row, gathered; with gradLogp the
  // gradient row is cleared and written whole). make(n) stays the first n rows of make(N): T and the kept set are
  // functions of the row index and its target.
  const rowT = (n) => Float32Array.from({ length: n }, (_, i) => 0.5 + ((i * 0.6180339887) % 1))
  const kept = (n, grad) => {
    const y = targets(n)
    const set = keptSet(y.toHost().data, V)
    return { logits: logits(n), targets: y, ...set, ...(grad ? { gradLogp: normal([n], 'float32', 16, 1) } : {}) }
  }
  cases.push(
    ['logProbs', (n) => ({ logits: logits(n), targets: targets(n), temperature: rowT(n) }), (n) => n * V * es, 'per-row T'],
    ['logProbs', (n) => ({ logits: logits(n), targets: targets(n), entropy: true, sumProbSq: true, maxProb: true }), (n) => n * V * es, 'entropy, Σp², max p'],
    ['logProbs', (n) => ({ logits: logits(n), targets: targets(n), temperature: rowT(n), entropy: true, sumProbSq: true, maxProb: true }), (n) => n * V * es, 'per-row T, entropy, Σp², max p'],
    ['keptLogProbs', (n) => kept(n, false), (n) => n * KEPT * (es + 4), `given set, ${KEPT} a row`],
    ['keptLogProbs', (n) => kept(n, true), (n) => n * KEPT * (es + 4) + n * V * 4, `given set, ${KEPT} a row, +grad`],
  )
  if (es === 2) {  // the gradient in the logits' dtype (gradDtype 'input'): the design's 1R + 1W of bf16
    cases.push(
      ['crossEntropy', (n) => ({ logits: logits(n), targets: targets(n), grad: true, gradDtype: 'input' }), (n) => n * V * 2 * es, 'bf16 grad'],
      ['ppoLoss', (n) => ppo(n, { gradDtype: 'input' }), (n) => n * V * 2 * es, 'bf16 grad'],
      ['klDivergence', (n) => ({ pLogits: logits(n), qLogits: normal([n, V], dtype, 15), grad: 'q', gradDtype: 'input' }), (n) => n * V * 3 * es, 'bf16 grad'],
    )
  }
  return cases
}

/**
 * issue 15, the vocab-sharded forms on SHARDS device shards of V/SHARDS columns each: what tensor-parallel ranks
 * run (each shard's partials, the merge of every shard's per-row partials on the host, each shard's backward),
 * here one shard after another on this one GPU. They are host compositions of the ops above, so CUDA events
 * inside the addon cannot time them: a row is the wall time of the whole sequence, with the device → host copies
 * of the per-row partials, the host merge, and the copies of the shards' gradients, which the sharded backwards
 * return as host tensors (they finish the stand-in and smoothing columns on the host). Its bytes are what the
 * form's kernels must move on the device (two passes where there is a backward: the merge comes between).
 * Each form: make(n, gen) → inputs, run(inputs) → results, bytes(n). gen makes the data: the device generator
 * here (gen.normal(shape, dtype, seed), gen.ints(n, limit, seed) → host Int32Array).
 */
export const SHARDS = 4
export function shardedForms(V, dtype) {
  const es = ES[dtype], w = V / SHARDS
  const shards = (gen, n, seed) => Array.from({ length: SHARDS }, (_, i) => gen.normal([n, w], dtype, seed + i))
  return [
    {
      name: 'logProbsPartial', op: `logProbsPartial ×${SHARDS} + merge`,
      make: (n, gen) => ({ xs: shards(gen, n, 31), y: gen.ints(n, V, 12) }),
      run: ({ xs, y }) => {
        const m = rk.mergeVocabPartials({ partials: xs.map((x, i) => rk.logProbsPartial({ logits: x, targets: y, vocabStart: i * w })), targets: y })
        return { logp: m.logp, lse: m.lse, entropy: m.entropy, sumProbSq: m.sumProbSq }
      },
      bytes: (n) => n * V * es,
    },
    {
      // with label smoothing (each shard's smoothing piece: a second pass over it) and z-loss
      name: 'crossEntropyPartial', op: `crossEntropyPartial ×${SHARDS} + merge + backward ×${SHARDS}, per-row T, ε 0.1, z-loss`,
      make: (n, gen) => ({ xs: shards(gen, n, 31), y: gen.ints(n, V, 12), T: Float32Array.from({ length: n }, (_, i) => 0.5 + ((i * 0.6180339887) % 1)) }),
      run: ({ xs, y, T }) => {
        const s = xs.map((x, i) => ({ logits: x, targets: y, vocabStart: i * w, vocabSize: V, temperature: T, labelSmoothing: 0.1 }))
        const m = rk.mergeCrossEntropyPartials({ partials: s.map((o) => rk.crossEntropyPartial(o)), targets: y, labelSmoothing: 0.1, zLoss: 1e-4 })
        const grads = s.map((o) => rk.crossEntropyPartialBackward({ ...o, lse: m.lse, gradRows: m.gradRows, zLoss: 1e-4 }).gradLogits)
        return { loss: m.loss, lse: m.lse, ...Object.fromEntries(grads.map((g, i) => [`grad${i}`, g])) }
      },
      bytes: (n) => n * V * (2 * es + 4),
    },
    {
      name: 'klDivergencePartial', op: `klDivergencePartial ×${SHARDS} + merge + backward ×${SHARDS}, grad q`,
      make: (n, gen) => ({ ps: shards(gen, n, 41), qs: shards(gen, n, 51) }),
      run: ({ ps, qs }) => {
        const s = ps.map((p, i) => ({ pLogits: p, qLogits: qs[i] }))
        const m = rk.mergeKlPartials({ partials: s.map((o) => rk.klDivergencePartial(o)) })
        const grads = s.map((o) => rk.klDivergencePartialBackward({ ...o, pLse: m.pLse, qLse: m.qLse, perRow: m.perRow, gradRows: m.gradRows, grad: 'q' }).gradQ)
        return { loss: m.loss, perRow: m.perRow, ...Object.fromEntries(grads.map((g, i) => [`grad${i}`, g])) }
      },
      bytes: (n) => n * V * (4 * es + 4),
    },
  ]
}

const deviceGen = {
  normal: (shape, dtype, seed) => normal(shape, dtype, seed),
  ints: (n, limit, seed) => { const t = ints([n], limit, seed); try { return t.toHost().data } finally { t.dispose() } },
}

/** A sharded form: checked on 64 rows against the cpu backend on host copies, then its wall time at n rows. */
function shardedRow(form, n, shape, dtype, copyGBs) {
  const op = `${form.op} (wall)`
  let inputs
  try {
    const small = form.make(64, deviceGen)
    const gpu = form.run(small)
    rk.setBackend('cpu')
    let cpu
    try { cpu = form.run(Object.fromEntries(Object.entries(small).map(([k, v]) => [k, hostCopy(v)]))) } finally { rk.setBackend('auto') }
    const worst = worstError(gpu, cpu)
    dispose(small)
    if (!(worst <= 1)) throw new Error(`${form.name}: the cuda result differs from the cpu backend (${worst.toExponential(2)}× tolerance)`)
    inputs = form.make(n, deviceGen)
    form.run(inputs)  // warm-up
    const ms = []
    for (let i = 0; i < ITERATIONS; i++) {
      const t0 = performance.now()
      form.run(inputs)  // synchronous: every result it returns is host data
      ms.push(performance.now() - t0)
    }
    const t = median(ms), bytes = form.bytes(n), gbs = bytes / (t * 1e-3) / 1e9
    return {
      op, shape, dtype, 'ms (median)': +t.toFixed(3), MB: +(bytes / 1e6).toFixed(1), 'GB/s': +gbs.toFixed(0),
      '% copy': +(100 * gbs / copyGBs).toFixed(1), 'floor ms': +(bytes / (copyGBs * 1e9) * 1e3).toFixed(4), L2: '', target: '—', Liger: '—', 'torch.compile': '—', eager: '—',
    }
  } catch (e) {
    return { op, shape, dtype, error: String(e?.message ?? e).split('\n')[0] }
  } finally {
    if (inputs) dispose(inputs)
    try { rk.releaseCachedMemory() } catch {}
  }
}

const K = 4
const rewardCase = ['rewardLoss', (n) => ({ scores: normal([n * K], 'float32', 21, 1), K, chosen: ints([n], K, 22) }), (n) => n * K * 4 * 3 + n * 4 * 2]
// the DESIGN §3 shapes (2^20 prompts, 512 sequences) fit in a 50-60 MB L2; the larger ones do not
const TOKEN_ROWS = [[rewardCase, 1 << 20, `${1 << 20}×${K}`], [rewardCase, 1 << 23, `${1 << 23}×${K}`]]
const T = 2048
const gaeCase = ['gae', (n) => ({ rewards: normal([n, T], 'float32', 23, 1), values: normal([n, T], 'float32', 24, 1), gamma: 0.99, lambda: 0.95 }),
  (n) => n * T * 4 * 4]
TOKEN_ROWS.push([gaeCase, 512, `512×${T}`], [gaeCase, 8192, `8192×${T}`])

const dispose = (options) => {
  for (const v of Object.values(options)) for (const t of Array.isArray(v) ? v : [v]) if (t instanceof Tensor) t.dispose()
}

/**
 * The largest error of a cuda result against the cpu backend's, in tolerances: float32 results to 1e-4, 16-bit
 * gradients to one unit in their last place (host arrays and host or device tensors; device ones disposed).
 */
export function worstError(gpu, cpu) {
  let worst = 0
  for (const [k, want] of Object.entries(cpu)) {
    const got = gpu[k]
    const a = typeof got === 'number' ? [got] : got instanceof Tensor ? got.toFloat32Array() : ArrayBuffer.isView(got) ? got : null
    const b = typeof want === 'number' ? [want] : want instanceof Tensor ? want.toFloat32Array() : ArrayBuffer.isView(want) ? want : null
    const rtol = got instanceof Tensor && got.dtype !== 'float32' ? 2 ** -7 : 1e-4
    if (a && b) {
      if (a.length !== b.length) return Infinity
      // the same non-finite value (−inf logp of a token outside the kept set) agrees
      for (let i = 0; i < b.length; i++) if (!Object.is(a[i], b[i])) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1e-5 + rtol * Math.abs(b[i])))
    }
    if (got instanceof Tensor && got.device === 'cuda') got.dispose()
  }
  return worst
}

const hostCopy = (x) => (x instanceof Tensor ? x.toHost() : Array.isArray(x) ? x.map(hostCopy) : x)

/** The op on 64 rows: cuda against the cpu backend on host copies of the same generated data. */
function check(name, make) {
  const small = make(64)
  const gpu = rk[name](small)
  const host = Object.fromEntries(Object.entries(small).map(([k, v]) => [k, hostCopy(v)]))
  rk.setBackend('cpu')
  let cpu
  try { cpu = rk[name](host) } finally { rk.setBackend('auto') }
  const worst = worstError(gpu, cpu)
  dispose(small)
  if (!(worst <= 1)) throw new Error(`${name}: the cuda result differs from the cpu backend (${worst.toExponential(2)}× tolerance)`)
}

/** The ops with one kernel (no versions to time side by side) */
const ONE_KERNEL = new Set(['logProbs', 'keptLogProbs'])

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
        if (!wanted(c[0])) continue
        // logProbs and keptLogProbs have one kernel each; the fused ops are timed in each version
        for (const kernel of ONE_KERNEL.has(c[0]) ? [''] : KERNELS) rows.push(row(c, N, `${N}×${V}`, dtype, copyGBs, info.l2CacheBytes, kernel))
      }
    }
  }
  for (const [c, n, shape] of TOKEN_ROWS) if (wanted(c[0])) rows.push(row(c, n, shape, 'float32', copyGBs, info.l2CacheBytes))
  // the sharded forms at fewer rows (their gradients come back to the host) and two vocabularies
  const NS = Number(process.env.BENCH_SHARDED_N ?? 2048)
  if (wanted('sharded')) {
    for (const V of [32000, 128256]) {
      for (const dtype of ['bfloat16', 'float32']) for (const f of shardedForms(V, dtype)) rows.push(shardedRow(f, NS, `${SHARDS}×${NS}×${V / SHARDS}`, dtype, copyGBs))
    }
  }
  return {
    title: `GPU: ${info.name} (compute ${info.computeCapability}, L2 ${(info.l2CacheBytes / 2 ** 20).toFixed(0)} MiB), device-to-device copy ${copyGBs.toFixed(0)} GB/s (read + write) measured in this run; ${ITERATIONS} launches per op, CUDA events`,
    rows,
  }
}
