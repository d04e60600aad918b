/**
 * The GPU proof in one command (`npm run check:gpu`, `rlhf-kernels check --gpu`): independent sections,
 * each ending in one verdict line and none stopping the others, then a summary table; every case goes to
 * the log file. Built to finish in a few minutes on one GPU, so results are compared in bulk (typed-array
 * loops and hashes), never element by element through a test framework.
 *
 * 1. parity: every op × dtype × gradient dtype on the target backend against the cpu backend, fresh random
 *    data, outputs poisoned (NaN) first, on shapes that reach every kernel path (single-pass clusters of
 *    1..8 CTAs, the two-pass kernels above 131072 columns and for unaligned rows), and the numerical contract
 *    of the CUDA forms (rows of |z|/T ≈ 1e4, confident rows, the KL +inf rule, large reward scores, GAE with
 *    γ = λ = 1, the vocab-sharded cross-entropy and KL on device tensors);
 * 2. determinism (5 runs, byte-identical) and batch invariance (a row alone, in a batch of 7, at row 5000
 *    of 8192: bitwise the same log-prob, lse, entropy and gradient);
 * 3. bad device indices: a RangeError naming the row, then the next op on the same tensors is right;
 * 4. async twins, 4 workers on the GPU, a worker terminated with GPU work queued, memory() back to its
 *    start, an out-of-memory request and the op after it;
 * 5. the GPU benchmark (bench/gpu.js), each row on its own.
 */
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createWriteStream, existsSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import * as rk from '../index.js'
import {
  DeviceData, PARITY, type Tolerance, closeness, cudaBench, gradTolerance, halfGradTolerance, isGradient, klGradPTolerance, rng, twice, VOCAB_KERNELS, withVocabKernel,
} from '../internal.js'
import { formatTable } from './table.js'

type Dtype = 'float32' | 'bfloat16' | 'float16'
const DTYPES: Dtype[] = ['float32', 'bfloat16', 'float16']
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const indexUrl = new URL('../index.js', import.meta.url).href

export interface Verdict {
  section: string
  pass: boolean
  summary: string
  seconds: number
}

interface Section {
  log: (line: string) => void
  /** records a failure and goes on */
  fail: (what: string) => void
}

function on<T>(backend: rk.BackendName, fn: () => T): T {
  rk.setBackend(backend)
  try {
    return fn()
  } finally {
    rk.setBackend('auto')
  }
}

/** Everything numeric in a result, flattened: [path, values]. Device tensors are read back once. */
function leaves(x: unknown, path = ''): [string, ArrayLike<number>][] {
  if (typeof x === 'number') return [[path, [x]]]
  if (x instanceof rk.Tensor) return [[path, x.toFloat32Array()]]
  if (ArrayBuffer.isView(x)) return [[path, x as unknown as ArrayLike<number>]]
  if (x && typeof x === 'object') return Object.entries(x).flatMap(([k, v]) => leaves(v, path ? `${path}.${k}` : k))
  return []
}

/** The bytes of every result field, hashed in a fixed order (device tensors read back). */
export function digest(result: unknown): string {
  const h = createHash('sha256')
  for (const [path, v] of leaves(result)) {
    h.update(path)
    const a = ArrayBuffer.isView(v) ? v : Float64Array.from(v as number[])
    h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
  }
  return h.digest('hex').slice(0, 16)
}

function disposeAll(...xs: unknown[]) {
  for (const x of xs) {
    if (x instanceof rk.Tensor) x.dispose()
    else if (x && typeof x === 'object' && !ArrayBuffer.isView(x)) disposeAll(...Object.values(x))
  }
}

// ---- 1. parity ----

/** Which CUDA kernel a row of V columns of `dtype` reaches when the op can take the single-pass kernel. */
export function tilePath(V: number, dtype: Dtype): string {
  const es = dtype === 'float32' ? 4 : 2
  if ((V * es) % 16 !== 0 || (V * 4) % 16 !== 0) return 'two-pass (unaligned row)'
  const c = Math.ceil(V / 16384)
  return c > 8 ? 'two-pass (V > 131072)' : `single-pass ×${c}`
}

export interface ParityCase {
  name: string
  /** the kernel path the case is meant to reach (coverage report) */
  path: string
  run: () => unknown
  /** tolerance overrides per result path, given the reference result */
  tolerances?: (reference: unknown) => Record<string, Tolerance>
}

function logitsOf(r: ReturnType<typeof rng>, N: number, V: number, dtype: Dtype, scale = 3, negInf = false) {
  const z = r.f32(N * V, scale)
  if (negInf) {
    for (let i = 0; i < z.length; i += 7) z[i] = -Infinity
    if (N > 4) z.fill(-Infinity, 4 * V, 5 * V)  // a whole row of −inf (its target is ignored)
  }
  return dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
}

/**
 * V: one unaligned odd row; 2048 and 16000 in one CTA; clusters of 2..8 CTAs; Qwen's 152064 and Gemma's
 * 262144 (two-pass today); an unaligned large row. `quick`: a subset (the rehearsal on a host backend).
 */
export function vocabSizes(quick: boolean): number[] {
  return quick ? [37, 2048, 32000] : [37, 2048, 16000, 32000, 48000, 64000, 80000, 96000, 112000, 128256, 152064, 262144, 32001]
}

export function parityCases(seed: number, quick = false): ParityCase[] {
  const cases: ParityCase[] = []
  const N = 9
  for (const dtype of DTYPES) {
    for (const V of vocabSizes(quick)) {
      const r = rng(seed + V * 3 + DTYPES.indexOf(dtype))
      const tile = tilePath(V, dtype)
      const full = !tile.startsWith('single-pass ×') || ['×1', '×2', '×8'].some((c) => tile.endsWith(c))
      const at = `${dtype} [${N}, ${V}]`
      const half = dtype !== 'float32'
      const halfTol = () => ({ gradLogits: halfGradTolerance(dtype as Exclude<Dtype, 'float32'>) })
      const logits = logitsOf(r, N, V, dtype, 3, true)
      const targets = r.ints(N, V)
      targets[1] = -100
      targets[4] = -100
      for (const temperature of full ? [1, 0.7] : [1]) {
        cases.push({ name: `logProbs ${at} T=${temperature}`, path: 'forward', run: () => rk.logProbs({ logits, targets, temperature, entropy: true }) })
        const lse = on('cpu', () => rk.logProbs({ logits, targets, temperature }).lse)
        const gradLogp = r.f32(N), gradEntropy = r.f32(N)
        cases.push({ name: `logProbsBackward ${at} T=${temperature}`, path: 'backward', run: () => rk.logProbsBackward({ logits, targets, temperature, lse, gradLogp, gradEntropy }) })
      }
      // the single-pass cross-entropy, with the 16-bit gradient too; then what only the two-pass kernels do
      const ceLogits = logitsOf(r, N, V, dtype, 3, false)
      cases.push({ name: `crossEntropy ${at} grad`, path: tile, run: () => rk.crossEntropy({ logits: ceLogits, targets, grad: true }) })
      if (half) cases.push({ name: `crossEntropy ${at} gradDtype input`, path: tile, run: () => rk.crossEntropy({ logits: ceLogits, targets, grad: true, gradDtype: 'input' }), tolerances: halfTol })
      if (full) {
        cases.push({ name: `crossEntropy ${at} labelSmoothing zLoss none`, path: tile, run: () => rk.crossEntropy({ logits: ceLogits, targets, grad: true, labelSmoothing: 0.1, zLoss: 1e-3, reduction: 'none' }) })
        const classWeights = Float32Array.from({ length: V }, () => 0.5 + r.uniform())
        cases.push({ name: `crossEntropy ${at} classWeights sum`, path: 'two-pass (class weights)', run: () => rk.crossEntropy({ logits: ceLogits, targets, grad: true, classWeights, reduction: 'sum' }) })
        cases.push({ name: `crossEntropy ${at} forward`, path: 'forward', run: () => rk.crossEntropy({ logits: ceLogits, targets }) })
        // a temperature other than 1 takes the two-pass kernels (rows, then gradient), scalar and per row
        const ceT = Float32Array.from({ length: N }, () => 0.5 + r.uniform())
        cases.push({ name: `crossEntropy ${at} T=0.7 labelSmoothing`, path: 'two-pass (temperature)', run: () => rk.crossEntropy({ logits: ceLogits, targets, grad: true, temperature: 0.7, labelSmoothing: 0.1 }), tolerances: () => ({ gradLogits: gradTolerance(0.7) }) })
        cases.push({ name: `crossEntropy ${at} per-row T`, path: 'two-pass (temperature)', run: () => rk.crossEntropy({ logits: ceLogits, targets, grad: true, temperature: ceT, reduction: 'none' }), tolerances: () => ({ gradLogits: gradTolerance(0.5) }) })
      }
      // KL wrt q alone is single-pass; wrt p (or both) two-pass
      const qLogits = logitsOf(r, N, V, dtype)
      const mask = Uint8Array.from({ length: N }, (_, i) => (i === 2 ? 0 : 1))
      const klTol = (e: unknown) => ({ gradP: twice(klGradPTolerance((e as rk.KlDivergenceResult).perRow)) })
      cases.push({ name: `klDivergence ${at} grad q`, path: tile, run: () => rk.klDivergence({ pLogits: ceLogits, qLogits, mask, grad: 'q' }) })
      if (half) cases.push({ name: `klDivergence ${at} grad q gradDtype input`, path: tile, run: () => rk.klDivergence({ pLogits: ceLogits, qLogits, mask, grad: 'q', gradDtype: 'input' }), tolerances: () => ({ gradQ: halfGradTolerance(dtype as Exclude<Dtype, 'float32'>) }) })
      if (full) cases.push({ name: `klDivergence ${at} grad both T=1.3`, path: 'two-pass (gradient wrt p)', run: () => rk.klDivergence({ pLogits: ceLogits, qLogits, mask, grad: 'both', temperature: 1.3, reduction: 'sum' }), tolerances: klTol })
      // PPO: sampled-token KL (single-pass), then anchor logits (two-pass, full-vocabulary KL)
      const actions = r.ints(N, V)
      const oldLogp = Float32Array.from(on('cpu', () => rk.logProbs({ logits: ceLogits, targets: actions }).logp), (x) => x + r.normal() * 0.2)
      const ppo = { logits: ceLogits, actions, oldLogp, advantages: r.f32(N), values: r.f32(N), returns: r.f32(N), mask, beta: 0.1, c1: 0.5, klEstimator: 'k3' as const }
      cases.push({ name: `ppoLoss ${at} k3`, path: tile, run: () => rk.ppoLoss(ppo) })
      if (half) cases.push({ name: `ppoLoss ${at} k3 gradDtype input`, path: tile, run: () => rk.ppoLoss({ ...ppo, gradDtype: 'input' }), tolerances: halfTol })
      if (full) cases.push({ name: `ppoLoss ${at} full KL`, path: 'two-pass (anchor logits)', run: () => rk.ppoLoss({ ...ppo, refLogits: qLogits, klEstimator: 'full' }) })
      if (full) {  // per-row temperature: each kernel that divides by T reads row n's own
        const T = Float32Array.from({ length: N }, () => 0.5 + 1.5 * r.uniform())
        const gradT = { gradLogits: gradTolerance(0.5) }
        cases.push({ name: `logProbs ${at} per-row T`, path: 'forward', run: () => rk.logProbs({ logits, targets, temperature: T, entropy: true }) })
        const lseT = on('cpu', () => rk.logProbs({ logits, targets, temperature: T }).lse)
        const gl = r.f32(N), gh = r.f32(N)
        cases.push({ name: `logProbsBackward ${at} per-row T`, path: 'backward', run: () => rk.logProbsBackward({ logits, targets, temperature: T, lse: lseT, gradLogp: gl, gradEntropy: gh }), tolerances: () => gradT })
        cases.push({ name: `klDivergence ${at} grad q per-row T`, path: tile, run: () => rk.klDivergence({ pLogits: ceLogits, qLogits, mask, grad: 'q', temperature: T }), tolerances: () => ({ gradQ: gradTolerance(0.5) }) })
        cases.push({ name: `klDivergence ${at} grad both per-row T`, path: 'two-pass (gradient wrt p)', run: () => rk.klDivergence({ pLogits: ceLogits, qLogits, mask, grad: 'both', temperature: T, reduction: 'sum' }), tolerances: (e) => ({ gradQ: gradTolerance(0.5), gradP: twice(klGradPTolerance((e as rk.KlDivergenceResult).perRow, 0.5)) }) })
        cases.push({ name: `ppoLoss ${at} k3 per-row T`, path: tile, run: () => rk.ppoLoss({ ...ppo, temperature: T }), tolerances: () => gradT })
        cases.push({ name: `ppoLoss ${at} full KL per-row T`, path: 'two-pass (anchor logits)', run: () => rk.ppoLoss({ ...ppo, refLogits: qLogits, klEstimator: 'full', temperature: T }), tolerances: () => gradT })
        // the DPPO trust region by the full-vocabulary TV / KL to π_old (ppo_logp_kernel's divergence pass)
        const near = Float32Array.from(ceLogits.toFloat32Array(), (x) => x + 0.3 * r.normal())
        const oldLogits = dtype === 'float32' ? rk.tensor(near, [N, V]) : rk.tensor(rk.encodeFloats(near, dtype), [N, V], { dtype })
        for (const variant of ['dppo-tv', 'dppo-kl'] as const) {
          const dppo = { ...ppo, oldLogp: undefined, oldLogits, variant, trustRegion: 'full' as const, clipLow: 0.05, clipHigh: 0.05, temperature: T }
          cases.push({ name: `ppoLoss ${at} ${variant} trustRegion full per-row T`, path: 'two-pass (anchor logits)', run: () => rk.ppoLoss(dppo), tolerances: () => gradT })
        }
        // the row statistics in the forward's pass; Σ p²'s gradient; kept-set log-probs with the set given
        cases.push({ name: `logProbs ${at} sumProbSq maxProb`, path: 'forward', run: () => rk.logProbs({ logits, targets, temperature: T, entropy: true, sumProbSq: true, maxProb: true }) })
        const gq = r.f32(N)
        cases.push({ name: `logProbsBackward ${at} gradSumProbSq`, path: 'backward', run: () => rk.logProbsBackward({ logits, targets, temperature: T, lse: lseT, gradLogp: gl, gradSumProbSq: gq }), tolerances: () => gradT })
        const offsets = [0], tokens: number[] = []
        for (let n = 0; n < N; n++) {
          const set = new Set<number>(targets[n] >= 0 && n !== 3 ? [targets[n]] : [])
          while (set.size < Math.min(V, 1 + r.int(600))) set.add(r.int(V))
          tokens.push(...[...set].sort((a, b) => a - b))
          offsets.push(tokens.length)
        }
        const keep = { keepOffsets: Int32Array.from(offsets), keepTokens: Int32Array.from(tokens) }
        cases.push({ name: `keptLogProbs ${at} given set`, path: 'kept set', run: () => rk.keptLogProbs({ logits, targets, temperature: T, ...keep, gradLogp: gl }), tolerances: () => gradT })
        // the kept set drawn by topK / topP / minP (native/cuda/kept.cu's cut; bfloat16 rows hold many ties): one
        // value for every row, then per-row arrays with k ≥ V, p near 0 and min-p 1; the even rows' targets on
        // their last largest logit, which every rule keeps
        const zs = logits.toFloat32Array()
        const drawnTargets = Int32Array.from(targets, (y, n) => (y < 0 || n % 2 ? y : zs.subarray(n * V, (n + 1) * V).reduce((b, x, v, a) => (x >= a[b] ? v : b), 0)))
        const drawn = (sampling: object) => () => rk.keptLogProbs({ logits, targets: drawnTargets, temperature: T, ...sampling, gradLogp: gl })
        cases.push({ name: `keptLogProbs ${at} topK topP minP`, path: 'kept set (drawn)', run: drawn({ topK: 40, topP: 0.8, minP: 0.02 }), tolerances: () => gradT })
        const perRow = {
          topK: Int32Array.from({ length: N }, (_, n) => [0, 1, 50, 0, 7, V, 1000, 0, 3][n % 9]),
          topP: Float32Array.from({ length: N }, (_, n) => [0.9, 1, 0.5, 0.95, 1, 0.3, 0.99, 1e-3, 1][n % 9]),
          minP: Float32Array.from({ length: N }, (_, n) => [0, 0, 0.05, 0, 0.5, 0, 0, 0, 1][n % 9]),
        }
        cases.push({ name: `keptLogProbs ${at} per-row topK topP minP`, path: 'kept set (drawn)', run: drawn(perRow), tolerances: () => gradT })
      }
    }
  }
  cases.push(...tokenCases(seed, quick))
  cases.push(...contractCases(seed))
  return cases
}

/** A host [N, V] float32 matrix as a tensor of `dtype`. */
function asTensor(z: Float32Array, N: number, V: number, dtype: Dtype) {
  return dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
}

/**
 * Rows of |z|/T near 1e4 at T = 0.7: z = ±7000 + 2·normal, the sign alternating by row, where a float32
 * z·invT or lse carries ~5e-4 (bf16 rounds them to a grid of 32: rows of near-ties, still at lse ≈ ±7000).
 */
function farLogits(r: ReturnType<typeof rng>, N: number, V: number): Float32Array {
  const z = r.f32(N * V, 2)
  for (let n = 0; n < N; n++) for (let v = n * V; v < (n + 1) * V; v++) z[v] += n % 2 ? -7000 : 7000
  return z
}

/**
 * Row n of z made confident at temperature T: z_y = base, one other class at base − gap·T and the rest at
 * base − 44·ln2·T. For the kernels that sum S themselves (crossEntropy, ppoLoss): base 100, gap 20·ln2, so
 * p_y = 1 − 9.5e-7 and the float32 S = Σ exp((z − z_y)/T) is 1 + 2⁻²⁰ exactly in any order of additions (a float32
 * S rounded at 2⁻²⁴ moves 1 − p_y by up to 6%, the precision the CUDA kernels keep at other confident rows:
 * bench/NOTES.md), while fl(z·invT) − lse, on a grid of 1.5e-5 at z/T ≈ 143, cannot hold −9.5e-7. For
 * logProbsBackward, given the lse: base 0, gap 14.03, p_y = 1 − 8.07e-7, half-way between float32 neighbours (at
 * |lse| ≥ ½, z_y − lse is a multiple of ulp(lse) and 1 − fl(p_y) exact), where 1 − fl(p_y) is off by 3%. dℓ/dz_y
 * is under the gradient atol, so the cases weight the row by 1000 (a token weight, gradLogp, an advantage): the
 * earlier forms then miss the tolerance; expm1 of the shifted log p_y does not. On the single-pass tile (T = 1)
 * both forms are exact in this row (test/ops/vocab-cuda-form.test.ts): there the case guards the weighted true
 * class only.
 */
function makeConfident(z: Float32Array, n: number, V: number, y: number, T: number, base = 100, gap = 20 * Math.LN2) {
  z.fill(Math.fround(base - 44 * Math.LN2 * T), n * V, (n + 1) * V)
  z[n * V + y] = base
  z[n * V + ((y + 1) % V)] = Math.fround(base - gap * T)
}

/** Row n's weight W, 1 elsewhere. */
const weightRow = (N: number, n: number, W: number) => Float32Array.from({ length: N }, (_, i) => (i === n ? W : 1))

/**
 * The numerical contract of the CUDA vocabulary, reward and GAE kernels (bench/NOTES.md "The numerical contract
 * on CUDA (issue 10)"), each form that was verified only by a float32 emulation: rows of |z|/T ≈ 1e4, confident
 * rows, the KL +inf rule, a chosen reward candidate of p = 1 − 2e-6, GAE with γ = λ = 1 over 4099 tokens of
 * rewards ~10, and the sharded cross-entropy and KL on device tensors against the unsharded cpu op. V = 2048:
 * single-pass (×1) in float32 and bf16 at T = 1 without class weights, the two-pass kernels at T = 0.7 or with
 * class weights; 2047 for the two-pass KL of an unaligned row.
 */
export function contractCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = []
  const N = 6, V = 2048, W = 1000
  const confident = 4  // the confident row (float32)
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const r = rng(seed + 101 + DTYPES.indexOf(dtype))
    const at = `${dtype} [${N}, ${V}]`
    const targets = r.ints(N, V)
    // rows 0..4 of |z|/T ≈ 1e4, row 5 moderate; the confident row (float32) made for each temperature in a
    // copy, in these logits (ppoLoss) or among moderate rows, where only it can miss (crossEntropy, logProbsBackward)
    const far = farLogits(r, N, V)
    for (let v = 5 * V; v < 6 * V; v++) far[v] = 3 * r.normal()
    const moderate = r.f32(N * V, 3)
    const withConfident = (T: number, zBase: Float32Array, base?: number, gap?: number) => {
      const z = Float32Array.from(zBase)
      if (dtype === 'float32') makeConfident(z, confident, V, targets[confident], T, base, gap)
      return asTensor(z, N, V, dtype)
    }
    const classWeights = Float32Array.from({ length: V }, () => 0.5 + r.uniform())
    for (const [form, T, path, extra] of [
      ['T=0.7', 0.7, 'two-pass (temperature)', {}],
      ['T=1', 1, tilePath(V, dtype), {}],
      ['T=1 classWeights', 1, 'two-pass (class weights)', { classWeights }],
    ] as [string, number, string, { classWeights?: Float32Array }][]) {
      const logits = asTensor(far, N, V, dtype)
      const gradT = () => ({ gradLogits: twice(gradTolerance(T)) })
      // ε and z-loss on; then ε alone, where the z-loss (1e-3·lse² ≈ 1e5) does not hide each row's loss
      cases.push({ name: `crossEntropy ${at} |z|/T≈1e4 ${form} labelSmoothing zLoss grad`, path, run: () => rk.crossEntropy({ logits, targets, temperature: T, labelSmoothing: 0.1, zLoss: 1e-3, grad: true, ...extra }), tolerances: gradT })
      cases.push({ name: `crossEntropy ${at} |z|/T≈1e4 ${form} labelSmoothing none`, path, run: () => rk.crossEntropy({ logits, targets, temperature: T, labelSmoothing: 0.1, reduction: 'none', grad: true, ...extra }), tolerances: gradT })
      if (dtype === 'float32' && !extra.classWeights) {
        // the confident row weighted by W: its true-class gradient −W·9.5e-7 against atol 2e-6/T
        const sure = withConfident(T, moderate)
        const tokenWeights = weightRow(N, confident, W)
        cases.push({ name: `crossEntropy ${at} confident row ${form} grad`, path, run: () => rk.crossEntropy({ logits: sure, targets, temperature: T, tokenWeights, reduction: 'sum', grad: true }), tolerances: gradT })
        const nearSure = withConfident(T, moderate, 0, 14.03)
        const lse = on('cpu', () => rk.logProbs({ logits: nearSure, targets, temperature: T }).lse)
        const gradLogp = Float32Array.from(weightRow(N, confident, W), (w) => w * (0.5 + r.uniform()))
        cases.push({ name: `logProbsBackward ${at} confident row ${form}`, path: 'backward', run: () => rk.logProbsBackward({ logits: nearSure, targets, temperature: T, lse, gradLogp }), tolerances: gradT })
      }
    }
    // ppoLoss at T = 0.7: the sampled-token k3 KL (ppo_tile_kernel), then the DPPO trust region by the full TV / KL
    // to π_old (ppo_logp_kernel's divergence pass); the confident row's advantage W, its ratio 1
    {
      const T = 0.7
      const logits = withConfident(T, far)
      const oldLogp = Float32Array.from(on('cpu', () => rk.logProbs({ logits, targets, temperature: T }).logp), (x, n) => (n === confident ? x : x + 0.2 * r.normal()))
      const advantages = Float32Array.from(r.f32(N), (a, n) => (n === confident ? W : a))
      const mask = Uint8Array.from({ length: N }, (_, n) => (n === 2 ? 0 : 1))
      const ppo = { logits, actions: targets, oldLogp, advantages, values: r.f32(N), returns: r.f32(N), mask, beta: 0.1, c1: 0.5, temperature: T }
      const gradT = () => ({ gradLogits: twice(gradTolerance(T)) })
      cases.push({ name: `ppoLoss ${at} |z|/T≈1e4 k3 T=0.7`, path: tilePath(V, dtype), run: () => rk.ppoLoss({ ...ppo, klEstimator: 'k3' }), tolerances: gradT })
      const zOld = withConfident(T, Float32Array.from(far, (x) => x + 0.3 * r.normal()))
      for (const variant of ['dppo-tv', 'dppo-kl'] as const) {
        const dppo = { ...ppo, oldLogp: undefined, oldLogits: zOld, variant, trustRegion: 'full' as const, clipLow: 0.05, clipHigh: 0.05, klEstimator: 'k3' as const }
        cases.push({ name: `ppoLoss ${at} |z|/T≈1e4 ${variant} trustRegion full T=0.7`, path: 'two-pass (anchor logits)', run: () => rk.ppoLoss(dppo), tolerances: gradT })
      }
    }
    // klDivergence at T = 0.7 on rows of |z|/T ≈ 1e4, q near p; row 4: q −inf at a class where p is finite
    // but tiny (e^((−200 − max)/T): 0 in float32), so KL = +inf and d/dz_p = 0 on that row
    for (const width of [V, V - 1]) {
      const T = 0.7
      const zp = farLogits(r, N, width)
      for (let v = 4 * width; v < 5 * width; v++) zp[v] = 3 * r.normal()
      const zq = Float32Array.from(zp, (x) => x + 0.3 * r.normal())
      zp[4 * width + 7] = -200
      zq[4 * width + 7] = -Infinity
      const pLogits = asTensor(zp, N, width, dtype), qLogits = asTensor(zq, N, width, dtype)
      const w = `${dtype} [${N}, ${width}] |z|/T≈1e4 +inf row T=0.7`
      const klTol = (e: unknown) => ({ gradQ: twice(gradTolerance(T)), gradP: twice(klGradPTolerance((e as rk.KlDivergenceResult).perRow, T)) })
      if (width === V) cases.push({ name: `klDivergence ${w} grad q`, path: tilePath(width, dtype), run: () => rk.klDivergence({ pLogits, qLogits, temperature: T, grad: 'q', reduction: 'sum' }), tolerances: klTol })
      cases.push({ name: `klDivergence ${w} grad both`, path: width === V ? 'two-pass (gradient wrt p)' : tilePath(width, dtype), run: () => rk.klDivergence({ pLogits, qLogits, temperature: T, grad: 'both', reduction: 'none' }), tolerances: klTol })
    }
    cases.push(...shardedCases(r, dtype))
  }
  // rewardLoss: prompts of scores near ±9000 (a float32 lse − s_b loses the loss there), and a chosen
  // candidate of p = 1 − 2.3e-6 (scores 14, 0, 0.5, −1)
  {
    const r = rng(seed + 107)
    const K = 4, prompts = 16
    const scores = Float32Array.from({ length: prompts * K }, (_, i) => (Math.floor(i / K) % 2 ? -9000 : 9000) + 2 * r.normal())
    scores.set([14, 0, 0.5, -1], 3 * K)
    const chosen = r.ints(prompts, K)
    chosen[3] = 0
    cases.push({ name: `rewardLoss ${prompts}×${K} scores ±9000, chosen p = 1 − 2.3e-6`, path: 'reward grid', run: () => rk.rewardLoss({ scores, K, chosen, reduction: 'none' }) })
  }
  // GAE with γ = λ = 1: sums of rewards ~10 over 4099 tokens that cross zero; float32 maps miss here
  {
    const r = rng(seed + 109)
    const B = 2, T = 4099
    const rewards = rk.tensor(r.f32(B * T, 10), [B, T]), values = r.f32(B * T, 3), lastValues = r.f32(B)
    cases.push({ name: `gae [${B}, ${T}] γ=λ=1 rewards ~10`, path: 'gae scan', run: () => rk.gae({ rewards, values, gamma: 1, lambda: 1, lastValues }) })
  }
  return cases
}

/**
 * The vocab-sharded forms on the target with device tensors (on cuda: crossEntropyPartial's maxToken comes back
 * as a device tensor when ε > 0; klDivergencePartialBackward reads column 0 of a device tensor), merged and
 * compared with the unsharded op on the cpu backend. The sharded forms' own contract (test/ops/vocab-sharded-ce-kl
 * .test.ts: merged lse through three float32 roundings) is twice the unsharded tolerances on the gradients and
 * the merged KL; against the cpu, twice that again.
 */
function shardedCases(r: ReturnType<typeof rng>, dtype: Dtype): ParityCase[] {
  const N = 5, V = 2048, bounds = [0, 640, 1344, V]
  const at = `${dtype} [${N}, ${V}] in ${bounds.length - 1} shards`
  const shards = (z: Float32Array) => bounds.slice(0, -1).map((a, i) => {
    const w = bounds[i + 1] - a, out = new Float32Array(N * w)
    for (let n = 0; n < N; n++) out.set(z.subarray(n * V + a, n * V + a + w), n * w)
    return { data: out, start: a, width: w }
  })
  /** on the target: each shard uploaded (cuda) or kept (host); gradients put back into [N, V] on the host */
  const sharded = <R>(parts: { data: Float32Array; start: number; width: number }[][], fn: (tensors: rk.Tensor[], i: number) => R) => {
    const tensors = parts.map((group) => group.map((s) => {
      const t = asTensor(s.data, N, s.width, dtype)
      return rk.currentBackend() === 'cuda' ? t.to('cuda') : t
    }))
    try {
      return tensors.map((t, i) => fn(t, i))
    } finally {
      tensors.flat().forEach((t) => { if (t.device === 'cuda') t.dispose() })
    }
  }
  const concat = (grads: Float32Array[]) => {
    const out = new Float32Array(N * V)
    grads.forEach((g, i) => {
      const a = bounds[i], w = bounds[i + 1] - a
      for (let n = 0; n < N; n++) out.set(g.subarray(n * w, (n + 1) * w), n * V + a)
    })
    return out
  }
  const hostGrad = (t: rk.Tensor) => {
    const a = t.toFloat32Array()
    if (t.device === 'cuda') t.dispose()
    return a
  }
  const cases: ParityCase[] = []
  {
    const z = r.f32(N * V, 3), targets = r.ints(N, V)
    targets[1] = -100
    const T = 0.7, opts = { labelSmoothing: 0.1, zLoss: 1e-3, temperature: T }
    const full = asTensor(z, N, V, dtype), parts = shards(z)
    const run = () => {
      if (rk.currentBackend() === 'cpu') {
        const none = rk.crossEntropy({ logits: full, targets, ...opts, reduction: 'none' })
        const mean = rk.crossEntropy({ logits: full, targets, ...opts, grad: true })
        return { losses: none.losses, lse: none.lse, loss: mean.loss, gradLogits: mean.gradLogits!.toFloat32Array() }
      }
      // the merge needs every shard's partials before any backward: two passes over the shards
      const partials = sharded(parts.map((s) => [s]), ([logits], i) => rk.crossEntropyPartial({ logits, targets, vocabStart: bounds[i], vocabSize: V, ...opts }))
      const merged = rk.mergeCrossEntropyPartials({ partials, targets, ...opts })
      const grads = sharded(parts.map((s) => [s]), ([logits], i) => hostGrad(rk.crossEntropyPartialBackward({ logits, targets, vocabStart: bounds[i], vocabSize: V, lse: merged.lse, gradRows: merged.gradRows, ...opts }).gradLogits))
      return { losses: merged.losses, lse: merged.lse, loss: merged.loss, gradLogits: concat(grads) }
    }
    cases.push({ name: `crossEntropyPartial ${at} labelSmoothing zLoss T=0.7 merged`, path: 'sharded (maxToken on the device)', run, tolerances: () => ({ gradLogits: twice(twice(gradTolerance(T))) }) })
  }
  {
    const zp = r.f32(N * V, 3), zq = Float32Array.from(zp, (x) => x + 0.05 * r.normal())
    const mask = Uint8Array.from({ length: N }, (_, n) => (n === 3 ? 0 : 1))
    const pFull = asTensor(zp, N, V, dtype), qFull = asTensor(zq, N, V, dtype)
    const pParts = shards(zp), qParts = shards(zq)
    const run = () => {
      if (rk.currentBackend() === 'cpu') {
        const kl = rk.klDivergence({ pLogits: pFull, qLogits: qFull, mask, reduction: 'sum', grad: 'both' })
        return { perRow: kl.perRow, loss: kl.loss, gradQ: kl.gradQ!.toFloat32Array(), gradP: kl.gradP!.toFloat32Array() }
      }
      const groups = pParts.map((p, i) => [p, qParts[i]])
      const partials = sharded(groups, ([pLogits, qLogits]) => rk.klDivergencePartial({ pLogits, qLogits }))
      const merged = rk.mergeKlPartials({ partials, mask, reduction: 'sum' })
      const grads = sharded(groups, ([pLogits, qLogits]) => {
        const g = rk.klDivergencePartialBackward({ pLogits, qLogits, pLse: merged.pLse, qLse: merged.qLse, perRow: merged.perRow, gradRows: merged.gradRows, grad: 'both' })
        return { q: hostGrad(g.gradQ!), p: hostGrad(g.gradP!) }
      })
      return { perRow: merged.perRow, loss: merged.loss, gradQ: concat(grads.map((g) => g.q)), gradP: concat(grads.map((g) => g.p)) }
    }
    cases.push({
      name: `klDivergencePartial ${at} q≈p merged`, path: 'sharded (column 0 of a device tensor)', run,
      tolerances: (e) => ({ perRow: twice(twice(PARITY.value)), loss: twice(twice(PARITY.value)), gradQ: twice(twice(gradTolerance())), gradP: twice(twice(klGradPTolerance((e as { perRow: Float32Array }).perRow))) }),
    })
  }
  return cases
}

/** The token ops, past one block and one grid-stride where the kernels change strategy. */
function tokenCases(seed: number, quick: boolean): ParityCase[] {
  const r = rng(seed + 7)
  const cases: ParityCase[] = []
  for (const [B, T] of quick ? [[4, 33]] : [[4, 33], [64, 4099]]) {
    const M = B * T
    const mask = r.mask(M)
    mask.fill(0, T, 2 * T)
    const logp = rk.tensor(r.f32(M, 0.5), [B, T])
    const oldLogp = r.f32(M, 0.5), adv = r.f32(M)
    for (const aggregation of rk.AGGREGATIONS) {
      cases.push({ name: `policyLoss [${B}, ${T}] ${aggregation}`, path: 'tokens', run: () => rk.policyLoss({ logp, oldLogp, advantages: adv, mask, aggregation, dualClip: 3 }) })
      cases.push({ name: `klPenalty [${B}, ${T}] ${aggregation}`, path: 'tokens', run: () => rk.klPenalty({ logp, refLogp: oldLogp, estimator: 'k3', mask, aggregation }) })
      cases.push({ name: `valueLoss [${B}, ${T}] ${aggregation}`, path: 'tokens', run: () => rk.valueLoss({ values: logp, returns: adv, oldValues: oldLogp, clip: 0.2, mask, aggregation }) })
    }
    const rewards = rk.tensor(r.f32(M), [B, T]), values = r.f32(M), lastValues = r.f32(B)
    cases.push({ name: `gae [${B}, ${T}]`, path: 'gae scan', run: () => rk.gae({ rewards, values, mask, gamma: 0.99, lambda: 0.95, lastValues }) })
    cases.push({ name: `whiten ${M}`, path: 'whiten', run: () => rk.whiten({ values, mask }) })
  }
  for (const prompts of quick ? [7] : [7, 100_000]) {
    const K = 4
    const scores = r.f32(prompts * K, 2), chosen = r.ints(prompts, K), margins = r.f32(prompts * K, 0.5)
    chosen[0] = -100
    cases.push({ name: `rewardLoss ${prompts}×${K}`, path: 'reward grid', run: () => rk.rewardLoss({ scores, K, chosen, margins }) })
    // ragged groups of 1 to 8 scores (a singleton group gives 0)
    const sizes: number[] = []
    for (let left = prompts * K; left > 0; left -= sizes[sizes.length - 1]) sizes.push(Math.min(left, 1 + r.int(8)))
    const offsets = Int32Array.from([0, ...sizes.map((_, i) => sizes.slice(0, i + 1).reduce((x, y) => x + y, 0))])
    for (const method of rk.GROUP_METHODS) cases.push({ name: `groupAdvantages ${prompts * K} ${method}`, path: 'groups', run: () => rk.groupAdvantages({ scores, offsets, method }) })
    // preference losses over the same ragged groups (a singleton prompt is not counted)
    const logp = Float32Array.from(r.f32(prompts * K, 3), (x) => x - 20), refLogp = Float32Array.from(logp, (x) => x + r.normal())
    const lengths = Float32Array.from(logp, () => r.int(30))
    const first = Int32Array.from(sizes, (k) => r.int(k))
    const ranking = Int32Array.from(sizes.flatMap((k) => Array.from({ length: k }, (_, i) => i).sort(() => r.uniform() - 0.5)))
    for (const type of rk.PREFERENCE_TYPES) {
      const ref = type === 'simpo' ? { lengths } : { refLogp, refGrad: true }
      cases.push({ name: `preferenceLoss ${sizes.length} ragged ${type} chosen`, path: 'preference grid', run: () => rk.preferenceLoss({ logp, ...ref, offsets, chosen: first, type }) })
      cases.push({ name: `preferenceLoss ${sizes.length} ragged ${type} ranking`, path: 'preference grid', run: () => rk.preferenceLoss({ logp, ...ref, offsets, ranking, type, reduction: 'none' }) })
    }
  }
  for (const [B, T] of quick ? [[5, 37]] : [[5, 37], [64, 4099]]) {
    const logp = rk.tensor(Float32Array.from(r.f32(B * T), (x) => -Math.abs(x)), [B, T]), mask = r.mask(B * T), gradSeq = r.f32(B)
    for (const reduction of rk.SEQUENCE_REDUCTIONS) {
      cases.push({ name: `sequenceLogProbs [${B}, ${T}] ${reduction}`, path: 'sequence blocks', run: () => rk.sequenceLogProbs({ logp, mask, reduction, gradSeq }) })
    }
  }
  return cases
}

/** Compares `target` against `reference` on one case: the worst field, or null when all are within twice the parity tolerance. */
export function compareCase(c: ParityCase, target: rk.BackendName, reference: rk.BackendName): string | null {
  return compareResults(c, on(target, c.run), on(reference, c.run), reference)
}

function compareResults(c: ParityCase, got: unknown, want: unknown, reference: string): string | null {
  const overrides = c.tolerances?.(want) ?? {}
  const a = new Map(leaves(got))
  const e = leaves(want)
  const fields = [...a.keys()].sort().join(',')
  if (fields !== e.map(([k]) => k).sort().join(',')) return `fields differ: ${fields} vs ${e.map(([k]) => k).sort().join(',')}`
  for (const [path, w] of e) {
    const g = a.get(path)!
    if (g.length !== w.length) return `${path}: length ${g.length}, ${reference} ${w.length}`
    const tol = overrides[path] ?? twice(isGradient(path) ? PARITY.grad : PARITY.value)
    const { worst, at } = closeness(g, w, tol)
    if (!(worst <= 1)) return `${path}[${at}] = ${g[at]}, ${reference} ${w[at]} (${worst.toExponential(2)}× tolerance)`
  }
  disposeAll(got)
  return null
}

/**
 * Every case on `target` against the cpu backend; the vocabulary cases once per kernel version (on cuda),
 * against one reference result.
 */
export function parity(s: Section, target: rk.BackendName, seed: number, quick = false): string {
  const cases = parityCases(seed, quick)
  const reached = new Map<string, Set<string>>()
  let failed = 0, runs = 0
  for (const c of cases) {
    const versions = target === 'cuda' && c.path !== 'forward' && c.path !== 'backward' && /^(crossEntropy|klDivergence|ppoLoss)/.test(c.name) ? VOCAB_KERNELS : ['']
    let want: unknown
    try {
      want = on('cpu', c.run)
    } catch (e) {
      failed++
      s.fail(`${c.name}: the cpu reference threw ${(e as Error).message.split('\n')[0]}`)
      continue
    }
    for (const version of versions) {
      runs++
      const name = version ? `${c.name} [${version}]` : c.name
      let problem: string | null
      try {
        problem = compareResults(c, version ? withVocabKernel(version, () => on(target, c.run)) : on(target, c.run), want, 'cpu')
      } catch (e) {
        problem = `threw ${(e as Error).message.split('\n')[0]}`
      }
      if (problem) {
        failed++
        s.fail(`${name}: ${problem}`)
      } else s.log(`ok ${name}`)
    }
    const op = c.name.split(' ')[0]
    if (!reached.has(op)) reached.set(op, new Set())
    reached.get(op)!.add(c.path)
  }
  for (const [op, paths] of reached) s.log(`paths reached by ${op}: ${[...paths].sort().join('; ')}`)
  return `${runs - failed}/${runs} runs of ${cases.length} cases within twice the parity tolerance of cpu (seed ${seed})`
}

// ---- 2. determinism and batch invariance ----

function deviceNormal(shape: number[], dtype: Dtype, seed: number): rk.Tensor {
  const n = shape.reduce((a, b) => a * b, 1)
  const handle = cudaBench!.empty(n * (dtype === 'float32' ? 4 : 2))
  cudaBench!.fillNormal(handle, dtype, seed, 2)
  return deviceTensorOf(handle, n, shape, dtype)
}

function deviceTensorOf(handle: unknown, n: number, shape: number[], dtype: Dtype | 'int32'): rk.Tensor {
  return new rk.Tensor(new DeviceData(handle, n, dtype), shape, dtype)
}

function deviceInts(n: number, limit: number, seed: number): rk.Tensor {
  const handle = cudaBench!.empty(n * 4)
  cudaBench!.fillInt(handle, limit, seed)
  return deviceTensorOf(handle, n, [n], 'int32')
}

function determinism(s: Section): string {
  const N = 512, V = 128256
  const x = deviceNormal([N, V], 'bfloat16', 31), ref = deviceNormal([N, V], 'bfloat16', 32)
  const targets = deviceInts(N, V, 33)
  const r = rng(34)
  const oldLogp = rk.tensor(r.f32(N, 0.5).map((v) => v - 12)).to('cuda'), adv = rk.tensor(r.f32(N)).to('cuda')
  const scores = deviceNormal([1 << 22], 'float32', 35), chosen = deviceInts(1 << 20, 4, 36)
  const runs: Record<string, () => unknown> = {
    'crossEntropy fwd+bwd': () => rk.crossEntropy({ logits: x, targets, grad: true, labelSmoothing: 0.1 }),
    'crossEntropy bf16 grad': () => rk.crossEntropy({ logits: x, targets, grad: true, gradDtype: 'input' }),
    'ppoLoss full KL': () => rk.ppoLoss({ logits: x, actions: targets, oldLogp, refLogits: ref, advantages: adv, klEstimator: 'full', beta: 0.05 }),
    'ppoLoss k3': () => rk.ppoLoss({ logits: x, actions: targets, oldLogp, advantages: adv, klEstimator: 'k3', beta: 0.05 }),
    'klDivergence wrt q': () => rk.klDivergence({ pLogits: ref, qLogits: x, grad: 'q' }),
    'klDivergence both': () => rk.klDivergence({ pLogits: ref, qLogits: x, grad: 'both' }),
    'logProbs + entropy': () => rk.logProbs({ logits: x, targets, entropy: true }),
    'rewardLoss 2^20×4': () => rk.rewardLoss({ scores, K: 4, chosen }),
  }
  let same = 0, total = 0
  for (const version of VOCAB_KERNELS) {
    for (const [name, run] of Object.entries(runs)) {
      total++
      const hashes: string[] = []
      for (let i = 0; i < 5; i++) {
        const result = withVocabKernel(version, run)
        hashes.push(digest(result))
        disposeAll(result)
      }
      if (hashes.every((h) => h === hashes[0])) {
        same++
        s.log(`ok ${name} [${version}]: 5 runs ${hashes[0]}`)
      } else s.fail(`${name} [${version}]: runs differ: ${hashes.join(' ')}`)
    }
  }
  disposeAll(x, ref, targets, oldLogp, adv, scores, chosen)
  rk.releaseCachedMemory()
  const invariance = VOCAB_KERNELS.map((v) => `${v}: ${withVocabKernel(v, () => batchInvariance(s, v))}`).join('; ')
  return `${same}/${total} op × kernel runs byte-identical over 5 runs; batch invariance ${invariance}`
}

/** Row `row` of a host [N, V] batch; the batch holds `at` at position `pos`. */
function batchInvariance(s: Section, version: string): string {
  let ok = 0, total = 0
  for (const [V, dtype] of [[128256, 'bfloat16'], [32000, 'float32'], [262144, 'bfloat16']] as [number, Dtype][]) {
    const big = 8192, pos = 5000
    // the 8192-row batch is made on the GPU; its row 5000 is read back and placed alone and in a batch of 7
    const batch = deviceNormal([big, V], dtype, 41 + V)
    const host = batch.toHost()
    const rowData = (host.data as Float32Array | Uint16Array).slice(pos * V, (pos + 1) * V)
    const seven = (host.data as Float32Array | Uint16Array).slice(0, 7 * V)
    seven.set(rowData, 3 * V)
    const make = (data: Float32Array | Uint16Array, n: number) => rk.tensor(data, [n, V], dtype === 'float32' ? {} : { dtype }).to('cuda')
    const variants: [string, rk.Tensor, number][] = [['alone', make(rowData, 1), 0], ['row 3 of 7', make(seven, 7), 3], [`row ${pos} of ${big}`, batch, pos]]
    const target = 12345 % V
    const per = variants.map(([label, logits, at]) => {
      const n = logits.shape[0]
      const targets = Int32Array.from({ length: n }, (_, i) => (i === at ? target : (i * 7919) % V))
      const lp = rk.logProbs({ logits, targets, entropy: true })
      // reduction 'sum': the row's gradient does not depend on how many rows share the batch
      const ce = rk.crossEntropy({ logits, targets, grad: true, reduction: 'sum', ...(dtype === 'float32' ? {} : { gradDtype: 'input' as const }) })
      const row = (t: rk.Tensor | Float32Array, width: number) => {
        const a = t instanceof rk.Tensor ? t.toHost().data : t
        return digest((a as Float32Array).slice(at * width, (at + 1) * width))
      }
      const out = { label, logp: row(lp.logp, 1), lse: row(lp.lse, 1), entropy: row(lp.entropy!, 1), grad: row(ce.gradLogits!, V) }
      disposeAll(lp, ce)
      if (logits !== batch) logits.dispose()
      return out
    })
    batch.dispose()
    for (const field of ['logp', 'lse', 'entropy', 'grad'] as const) {
      total++
      const values = per.map((p) => p[field])
      if (values.every((v) => v === values[0])) ok++
      else s.fail(`batch invariance [${version}] ${dtype} V=${V} ${field}: ${per.map((p) => `${p.label} ${p[field]}`).join(', ')}`)
    }
    rk.releaseCachedMemory()
  }
  return `${ok}/${total} row results bitwise the same alone, in 7 rows and at row 5000 of 8192`
}

// ---- 3. bad device indices ----

function badIndices(s: Section): string {
  const N = 16, V = 32000
  const r = rng(51)
  const host = rk.tensor(rk.encodeFloats(r.f32(N * V, 3), 'bfloat16'), [N, V], { dtype: 'bfloat16' })
  const x = host.to('cuda')
  const t = r.ints(N, V)
  t[9] = V + 5
  const bad = rk.tensor(t).to('cuda')
  const expectRange = (what: string, fn: () => unknown, pattern: RegExp) => {
    try {
      fn()
      s.fail(`${what}: no error`)
    } catch (e) {
      if (!(e instanceof RangeError) || !pattern.test((e as Error).message)) s.fail(`${what}: ${(e as Error).name}: ${(e as Error).message}`)
      else s.log(`ok ${what}: ${(e as Error).message}`)
    }
  }
  expectRange('crossEntropy bad target', () => rk.crossEntropy({ logits: x, targets: bad, grad: true }), /targets\[9\]/)
  expectRange('logProbs bad target', () => rk.logProbs({ logits: x, targets: bad }), /targets\[9\]/)
  expectRange('ppoLoss bad action', () => rk.ppoLoss({ logits: x, actions: bad, oldLogp: new Float32Array(N), advantages: new Float32Array(N) }), /actions\[9\]/)
  const scores = rk.tensor(r.f32(N * 4)).to('cuda')
  const chosen = Int32Array.from({ length: N }, (_, i) => i % 4)
  chosen[9] = 4
  expectRange('rewardLoss bad chosen', () => rk.rewardLoss({ scores, K: 4, chosen: rk.tensor(chosen).to('cuda') }), /chosen\[9\]/)
  // the next op on the same tensors: right, against the cpu backend
  t[9] = 3
  const good = rk.tensor(t).to('cuda')
  const got = rk.crossEntropy({ logits: x, targets: good, grad: true })
  const want = on('cpu', () => rk.crossEntropy({ logits: host, targets: t, grad: true }))
  const { worst } = closeness(got.gradLogits!.toFloat32Array(), want.gradLogits!.toFloat32Array(), twice(PARITY.grad))
  if (!(Math.abs(got.loss - want.loss) <= 2 * (PARITY.value.atol + PARITY.value.rtol * Math.abs(want.loss)) && worst <= 1)) {
    s.fail(`the op after the bad indices: loss ${got.loss} vs cpu ${want.loss}, gradient ${worst.toExponential(2)}× tolerance`)
  }
  disposeAll(x, bad, good, got, scores)
  return 'RangeErrors name the row; the next op is right'
}

// ---- 4. async, workers, teardown, memory, out of memory ----

async function runtime(s: Section): Promise<string> {
  const start = rk.memory()
  const N = 64, V = 32000
  const r = rng(61)
  const x = rk.tensor(r.f32(N * V, 3), [N, V]).to('cuda')
  const targets = rk.tensor(r.ints(N, V)).to('cuda')
  const ref = rk.tensor(r.f32(N * V, 3), [N, V]).to('cuda')
  const oldLogp = rk.tensor(r.f32(N)).to('cuda'), adv = rk.tensor(r.f32(N)).to('cuda')
  const twins: [string, () => unknown, () => Promise<unknown>][] = [
    ['crossEntropy', () => rk.crossEntropy({ logits: x, targets, grad: true }), () => rk.crossEntropyAsync({ logits: x, targets, grad: true })],
    ['logProbs', () => rk.logProbs({ logits: x, targets, entropy: true }), () => rk.logProbsAsync({ logits: x, targets, entropy: true })],
    ['klDivergence', () => rk.klDivergence({ pLogits: ref, qLogits: x, grad: 'q' }), () => rk.klDivergenceAsync({ pLogits: ref, qLogits: x, grad: 'q' })],
    ['ppoLoss', () => rk.ppoLoss({ logits: x, actions: targets, oldLogp, advantages: adv }), () => rk.ppoLossAsync({ logits: x, actions: targets, oldLogp, advantages: adv })],
  ]
  for (const [name, sync, async] of twins) {
    const want = sync()
    const got = await Promise.all(Array.from({ length: 8 }, async () => {
      const res = await async()
      const d = digest(res)
      disposeAll(res)
      return d
    }))
    const w = digest(want)
    disposeAll(want)
    if (got.every((g) => g === w)) s.log(`ok ${name}Async ×8 = sync ${w}`)
    else s.fail(`${name}Async differs from ${name}: ${w} vs ${got.join(' ')}`)
  }
  // four workers, each its own env, stream and pools: the same results as this thread, memory back to zero
  const want = rk.crossEntropy({ logits: x, targets, grad: true })
  const wantDigest = digest(want)
  disposeAll(want)
  const hostX = x.toHost(), hostT = targets.toHost()
  const workerCode = `
    const { parentPort, workerData } = require('node:worker_threads')
    Promise.all([import(workerData.index), import(workerData.check)]).then(async ([rk, check]) => {
      const x = rk.tensor(workerData.x, workerData.shape).to('cuda'), t = rk.tensor(workerData.t).to('cuda')
      const digests = []
      for (let i = 0; i < 5; i++) {
        const r = await rk.crossEntropyAsync({ logits: x, targets: t, grad: true })
        digests.push(check.digest(r))
        r.gradLogits.dispose(); r.lse.dispose()
      }
      x.dispose(); t.dispose()
      rk.releaseCachedMemory()
      parentPort.postMessage({ digests, memory: rk.memory() })
    }).catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }))`
  const workerData = { index: indexUrl, check: import.meta.url, x: hostX.data, shape: hostX.shape, t: hostT.data }
  const workers = await Promise.all(Array.from({ length: 4 }, () => new Promise<{ digests?: string[]; memory?: rk.MemoryInfo; error?: string }>((resolve) => {
    const w = new Worker(workerCode, { eval: true, workerData })
    w.once('message', (m) => { resolve(m); void w.terminate() })
    w.once('error', (e) => resolve({ error: String(e) }))
  })))
  workers.forEach((w, i) => {
    if (w.error) s.fail(`worker ${i}: ${w.error}`)
    else if (!w.digests!.every((d) => d === wantDigest)) s.fail(`worker ${i}: results ${w.digests!.join(' ')} vs main thread ${wantDigest}`)
    else if (w.memory!.tensors !== 0 || w.memory!.deviceBytes !== 0) s.fail(`worker ${i}: memory after dispose ${JSON.stringify(w.memory)}`)
    else s.log(`ok worker ${i}: 5 async runs = main thread ${wantDigest}, memory back to zero`)
  })
  // a worker terminated with GPU work queued, in a child process so that a crash is a verdict, not the end
  const child = spawnSync(process.execPath, ['-e', `
    const { Worker } = require('node:worker_threads')
    const w = new Worker(\`
      const { parentPort } = require('node:worker_threads')
      import(${JSON.stringify(indexUrl)}).then((rk) => {
        const x = rk.tensor(new Float32Array(1024 * 32000).fill(1), [1024, 32000]).to('cuda')
        const t = rk.tensor(new Int32Array(1024)).to('cuda')
        for (let i = 0; i < 50; i++) rk.crossEntropyAsync({ logits: x, targets: t, grad: true })
        parentPort.postMessage('queued')
      })\`, { eval: true })
    w.on('message', () => w.terminate().then(() => import(${JSON.stringify(indexUrl)})).then((rk) => {
      const r = rk.crossEntropy({ logits: rk.tensor(new Float32Array(64).fill(0), [2, 32]).to('cuda'), targets: rk.tensor(Int32Array.of(1, 2)).to('cuda') })
      console.log('after terminate: loss ' + r.loss)
    }))`], { encoding: 'utf8', timeout: 120_000 })
  const expected = `after terminate: loss ${Math.log(32)}`
  if (child.status === 0 && child.stdout.includes('after terminate: loss')) {
    const line = child.stdout.trim().split('\n').pop()!
    if (Math.abs(Number(line.split(' ').pop()) - Math.log(32)) > 1e-5) s.fail(`after the terminated worker: ${line}, expected ${expected}`)
    else s.log('ok a worker terminated with 50 async ops queued: no crash, the next op is right')
  } else s.fail(`worker terminated with GPU work queued: exit ${child.status} signal ${child.signal}: ${(child.stderr || child.stdout).trim().split('\n').slice(-3).join(' | ')}`)
  // out of memory: the error, then the next op
  try {
    cudaBench!.empty(2 ** 44)
    s.fail('a 16 TiB request did not fail')
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_CUDA_OOM') s.fail(`a 16 TiB request: ${(e as Error).message} (code ${(e as { code?: string }).code}), expected ERR_CUDA_OOM`)
    else s.log(`ok out of memory: ${(e as Error).message}`)
  }
  const after = rk.crossEntropy({ logits: x, targets, grad: true })
  if (digest(after) !== wantDigest) s.fail('the op after the out-of-memory error differs from before it')
  disposeAll(after, x, targets, ref, oldLogp, adv)
  rk.releaseCachedMemory()
  const end = rk.memory()
  for (const k of ['tensors', 'tensorBytes', 'deviceBytes'] as const) {
    if (end[k] !== start[k]) s.fail(`memory().${k}: ${start[k]} at the start, ${end[k]} after every tensor was disposed`)
  }
  return 'async twins, 4 workers, a terminated worker, memory() and out of memory'
}

// ---- 5. the benchmark ----

async function benchmark(s: Section): Promise<string> {
  const { gpuSuite } = await import(pathToFileURL(join(root, 'bench', 'gpu.js')).href)
  const result = await gpuSuite()
  if (result.skipped) {
    s.fail(result.skipped)
    return 'not run'
  }
  s.log(result.title)
  const columns = [...new Set(result.rows.flatMap((r: Record<string, unknown>) => Object.keys(r)))] as string[]
  benchTable = { title: result.title, columns, rows: result.rows }
  let failed = 0
  for (const row of result.rows as Record<string, unknown>[]) {
    if (row.error) {
      failed++
      s.fail(`bench ${row.op} ${row.shape} ${row.dtype}: ${row.error}`)
    } else s.log(columns.map((c) => `${c}=${row[c]}`).join(' '))
  }
  return `${result.rows.length - failed}/${result.rows.length} rows checked against cpu and timed`
}

let benchTable: { title: string; columns: string[]; rows: Record<string, unknown>[] } | null = null

// ---- the command ----

/** Why the cuda backend cannot run here, or null. */
export function cudaUnusable(): string | null {
  const cuda = rk.backends().find((b) => b.name === 'cuda')!
  return cuda.available ? null : cuda.reason ?? 'the cuda backend is not available'
}

export interface CheckOptions {
  log?: string
  seed?: number
  write?: (line: string) => void
}

/** Runs every section; returns the verdicts (and prints them, the benchmark table and the summary). */
export async function checkGpu(options: CheckOptions = {}): Promise<{ ok: boolean; verdicts: Verdict[]; logPath: string | null }> {
  const write = options.write ?? ((line: string) => console.log(line))
  const why = cudaUnusable()
  if (why) {
    write(`check --gpu: the cuda backend is not usable here: ${why}`)
    return { ok: false, verdicts: [], logPath: null }
  }
  // outputs start as NaN in every cuda op from here on: an element a kernel does not write cannot pass
  process.env.RLHF_KERNELS_POISON = '1'
  const logPath = options.log ?? join(process.env.OUT && existsSync(process.env.OUT) ? process.env.OUT : tmpdir(), 'check-gpu.log')
  mkdirSync(dirname(logPath), { recursive: true })
  const file = createWriteStream(logPath)
  const seed = options.seed ?? Date.now() % 1_000_000
  const dev = rk.nativeStatus.info!.cuda.devices[0]
  write(`check --gpu: ${dev.name} (sm ${dev.computeCapability}), seed ${seed}; full log: ${logPath}`)
  const verdicts: Verdict[] = []
  const sections: [string, (s: Section) => string | Promise<string>][] = [
    ['1 parity vs cpu', (s) => parity(s, 'cuda', seed)],
    ['2 determinism, batch invariance', determinism],
    ['3 bad device indices', badIndices],
    ['4 async, workers, memory, OOM', runtime],
    ['5 benchmark', benchmark],
  ]
  for (const [name, fn] of sections) {
    const t0 = performance.now()
    let failures = 0
    const s: Section = {
      log: (line) => file.write(`[${name}] ${line}\n`),
      fail: (what) => {
        failures++
        file.write(`[${name}] FAIL ${what}\n`)
        if (failures <= 5) write(`  FAIL ${what}`)
      },
    }
    let summary: string
    try {
      summary = await fn(s)
    } catch (e) {
      s.fail(`the section stopped: ${(e as Error).stack ?? e}`)
      summary = 'stopped'
    }
    try { rk.releaseCachedMemory() } catch (e) { s.fail(`releaseCachedMemory: ${(e as Error).message}`) }
    const v = { section: name, pass: failures === 0, summary: failures ? `${summary}; ${failures} failure(s)` : summary, seconds: (performance.now() - t0) / 1000 }
    verdicts.push(v)
    const line = `${v.pass ? 'PASS' : 'FAIL'} ${name}: ${v.summary} (${v.seconds.toFixed(1)} s)`
    write(line)
    file.write(`${line}\n`)
  }
  if (benchTable) {
    write(`\n${benchTable.title}`)
    write(formatTable(benchTable.columns, benchTable.rows.map((r) => benchTable!.columns.map((c) => String(r[c] ?? '')))))
  }
  write('\nsummary')
  write(formatTable(['section', 'verdict', 's', 'what'], verdicts.map((v) => [v.section, v.pass ? 'PASS' : 'FAIL', v.seconds.toFixed(1), v.summary])))
  await new Promise((resolve) => file.end(resolve))
  return { ok: verdicts.every((v) => v.pass), verdicts, logPath }
}
