/**
 * The CUDA kernels' algorithms, run on the CPU in float64 against the js reference: the math of what runs
 * only on a GPU, checked on every machine. Each function mirrors a kernel step by step:
 * - native/cuda/rowtile.cuh: a row split over a cluster of CTAs of 512 threads × 32 registers, 16-byte
 *   column groups, thread maxima, one exp per element, (max, sums) combined over threads then ranks, and the
 *   per-thread rescale; with it the cross-entropy single-pass kernel (vocab.cu). The KL kernels (kl.cu) are
 *   emulated in float32 in test/ops/kl-cuda-form.test.ts.
 * - gae_scan_kernel (advantages.cu): chunked reverse scans, the nearest counted value and affine maps, in
 *   double as the kernel runs them, and in float32 as it ran before (which the cancelling case shows off).
 * The CUDA code itself is covered by the parity cases of test/ops/<family>.test.ts and test/cuda.test.ts on a GPU.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { on } from './backends.js'
import { closeness, rng } from './helpers.js'
import { PARITY } from '../src/tolerance.js'

const THREADS = 512, R = 32, SPAN = THREADS * R

interface MaxSums { m: number; s: number[]; plain: number }

/** combine() of rowtile.cuh: rescale both sides to the larger max; empty sides add nothing. */
function combine(a: MaxSums, b: MaxSums): MaxSums {
  const plain = a.plain + b.plain
  if (b.m === -Infinity) return { ...a, plain }
  if (a.m === -Infinity) return { ...b, plain }
  const m = Math.max(a.m, b.m)
  const fa = Math.exp(a.m - m), fb = Math.exp(b.m - m)
  return { m, s: a.s.map((x, k) => x * fa + b.s[k] * fb), plain }
}

/** RowTile::col: the columns of thread t of the CTA whose slice starts at `begin` (VEC per 16 bytes). */
function columnsOf(begin: number, t: number, vec: number): number[] {
  const cols: number[] = []
  for (let k = 0; k < R / vec; k++) for (let j = 0; j < vec; j++) cols.push(begin + (k * THREADS + t) * vec + j)
  return cols
}

/** The threads of a row of V columns: rank, columns (in registers), the slice end. */
function* threadsOf(V: number, vec: number) {
  const cluster = Math.ceil(V / SPAN)
  for (let rank = 0; rank < cluster; rank++) {
    const begin = rank * SPAN, end = Math.min(begin + SPAN, V)
    for (let t = 0; t < THREADS; t++) yield { rank, cols: columnsOf(begin, t, vec), end }
  }
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string) {
  const { worst, at } = closeness(actual, expected, { atol: 1e-6, rtol: 1e-6 })
  if (!(worst <= 1)) expect.fail(`${what}[${at}] = ${actual[at]}, reference ${expected[at]}`)
}

describe('the CUDA single-pass row kernels, on the CPU', () => {
  it('the register map covers every column of a row exactly once (V = 2048, 32000, 128256; 4 and 8 per vector)', () => {
    for (const V of [2048, 32000, 128256]) {
      for (const vec of [4, 8]) {
        const seen = new Uint8Array(V)
        for (const { cols, end } of threadsOf(V, vec)) for (const c of cols) if (c < end) seen[c]++
        expect(seen.every((x) => x === 1), `V=${V} vec=${vec}`).toBe(true)
      }
    }
  })

  it('cross-entropy fwd+bwd as cross_entropy_tile_kernel computes it equals the reference', () => {
    const r = rng(71)
    const N = 3, V = 32000, eps = 0.1, z = 1e-3
    const logits = r.f32(N * V, 3)
    const targets = Int32Array.from({ length: N }, () => r.int(V))
    const want = on('js', () => rk.crossEntropy({ logits: rk.tensor(logits, [N, V]), targets, grad: true, labelSmoothing: eps, zLoss: z, reduction: 'none' }))
    const lse = new Float64Array(N), losses = new Float64Array(N), grad = new Float64Array(N * V)
    for (let n = 0; n < N; n++) {
      const x = (c: number) => logits[n * V + c]
      const parts: { m: number; e: Map<number, number>; part: MaxSums }[] = []
      let all: MaxSums = { m: -Infinity, s: [0], plain: 0 }
      for (const { cols, end } of threadsOf(V, 4)) {
        const mine = cols.filter((c) => c < end)
        const m = Math.max(-Infinity, ...mine.map(x))
        const e = new Map(mine.map((c) => [c, m === -Infinity ? 0 : Math.exp(x(c) - m)]))
        const part = { m, s: [[...e.values()].reduce((a, b) => a + b, 0)], plain: mine.reduce((a, c) => a + x(c), 0) }
        parts.push({ m, e, part })
        all = combine(all, part)
      }
      lse[n] = all.m + Math.log(all.s[0])
      const y = targets[n]
      losses[n] = (1 - eps) * (lse[n] - x(y)) + eps / V * (V * lse[n] - all.plain) + z * lse[n] ** 2
      const cp = 1 + 2 * z * lse[n]
      for (const { m, e } of parts) {
        const scale = m === -Infinity ? 0 : Math.exp(m - all.m) / all.s[0]
        for (const [c, ev] of e) grad[n * V + c] = cp * ev * scale - (c === y ? 1 - eps : 0) - eps / V
      }
    }
    expectClose(lse, want.lse, 'lse')
    expectClose(losses, want.losses!, 'losses')
    expectClose(grad, want.gradLogits!.data as Float32Array, 'gradLogits')
  })
})

describe('the v3 row combination (warp-parallel trees, clusters of up to 16 CTAs), on the CPU', () => {
  const NONE: MaxSums = { m: -Infinity, s: [0], plain: 0 }

  /** warp_combine: the butterfly over 32 lanes (lane ^ 16, 8, 4, 2, 1); the result used is lane 0's. */
  function butterfly(values: MaxSums[]): MaxSums {
    let lanes = Array.from({ length: 32 }, (_, l) => values[l] ?? NONE)
    for (let o = 16; o > 0; o >>= 1) lanes = lanes.map((v, l) => combine(v, lanes[l ^ o]))
    return lanes[0]
  }

  /** row_combine<3>: each warp's butterfly, warp 0's butterfly over the 16 warp results, then over the ranks. */
  function rowCombineV3(V: number, x: (c: number) => number) {
    const ranks: MaxSums[] = []
    const cluster = Math.ceil(V / SPAN)
    for (let rank = 0; rank < cluster; rank++) {
      const begin = rank * SPAN, end = Math.min(begin + SPAN, V)
      const warps: MaxSums[] = []
      for (let w = 0; w < THREADS / 32; w++) {
        const lanes: MaxSums[] = []
        for (let lane = 0; lane < 32; lane++) {
          const mine = columnsOf(begin, w * 32 + lane, 8).filter((c) => c < end)
          const m = Math.max(-Infinity, ...mine.map(x))
          lanes.push({ m, s: [m === -Infinity ? 0 : mine.reduce((a, c) => a + Math.exp(x(c) - m), 0)], plain: mine.reduce((a, c) => a + x(c), 0) })
        }
        warps.push(butterfly(lanes))
      }
      ranks.push(butterfly(warps))
    }
    return { cluster, total: butterfly(ranks) }
  }

  it('at V = 152064 and 262144 (clusters of 10 and 16, bf16 rows) the tree gives the reference lse, and the sum of all logits', () => {
    const r = rng(74)
    for (const [V, C] of [[152064, 10], [262144, 16]]) {
      const z = r.f32(V, 3)
      let plain = 0
      for (let i = 0; i < V; i++) plain += z[i]
      expectClose([rowCombineV3(V, (c) => z[c]).total.plain], [plain], `Σ z V=${V}`)
      for (let i = 0; i < V; i += 997) z[i] = -Infinity  // −inf columns add nothing, whatever their position
      const { cluster, total } = rowCombineV3(V, (c) => z[c])
      expect(cluster).toBe(C)
      const want = on('js', () => rk.logProbs({ logits: rk.tensor(z, [1, V]), targets: Int32Array.of(1) }))
      expectClose([total.m + Math.log(total.s[0])], want.lse, `lse V=${V}`)
    }
  })

  it('padding lanes with no values changes nothing: a cluster of 3 equals the sequential combination of its ranks', () => {
    const r = rng(75)
    const V = 40000
    const z = r.f32(V, 5)
    const { total } = rowCombineV3(V, (c) => z[c])
    let seq: MaxSums = NONE
    for (let c = 0; c < V; c++) seq = combine(seq, { m: z[c], s: [1], plain: z[c] })
    expectClose([total.m, total.s[0] * Math.exp(total.m - seq.m)], [seq.m, seq.s[0]], 'max and Σ exp')
    // an all −inf row stays empty: lse −inf, no NaN
    const empty = rowCombineV3(V, () => -Infinity).total
    expect(empty.m).toBe(-Infinity)
    expect(empty.s[0]).toBe(0)
  })
})

describe('the CUDA GAE scan, on the CPU', () => {
  /**
   * gae_scan_kernel: per sequence, chunks of THREADS from the end; thread i takes token hi − 1 − i. The maps,
   * their composition and the carried A in double, rounded to float32 once at the output (as the kernel, and
   * the cpu's recursion); with `float32`, every map and composition rounded to float32 (the earlier kernel).
   * The scan is emulated in sequential order, the kernel's cub warp scans combine in a tree.
   */
  function gaeScan(rewards: Float32Array, values: Float32Array, mask: Uint8Array, B: number, T: number, gamma: number, lambda: number,
    lastValues: Float32Array, threads: number, float32 = false) {
    const adv = new Float64Array(B * T), ret = new Float64Array(B * T)
    const r32 = float32 ? Math.fround : (x: number) => x
    const c = r32(gamma * lambda)
    type Affine = { mul: number; add: number }
    for (let s = 0; s < B; s++) {
      const first = s * T, last = first + T
      let carryA = 0, carryNext = lastValues[s]
      for (let hi = last; hi > first; hi -= threads) {
        const tokens = Array.from({ length: threads }, (_, i) => hi - 1 - i)
        const counted = tokens.map((t) => t >= first && mask[t] !== 0)
        // exclusive scan, later in scan order (nearer to t) wins; the aggregate is the chunk's first counted value
        const next: number[] = []
        let acc = { has: true, value: carryNext }, seen = { has: false, value: 0 }
        tokens.forEach((t, i) => {
          next.push(acc.value)
          if (counted[i]) acc = seen = { has: true, value: values[t] }
        })
        // inclusive scan of maps with op(a, b) = b ∘ a
        let F: Affine = { mul: 1, add: 0 }
        tokens.forEach((t, i) => {
          const f: Affine = counted[i] ? { mul: c, add: r32(rewards[t] + gamma * next[i] - values[t]) } : { mul: 1, add: 0 }
          F = { mul: r32(f.mul * F.mul), add: r32(r32(f.mul * F.add) + f.add) }
          if (t >= first) {
            const a = r32(r32(F.mul * carryA) + F.add)
            adv[t] = counted[i] ? Math.fround(a) : 0
            ret[t] = counted[i] ? Math.fround(a + values[t]) : 0
          }
        })
        carryA = r32(r32(F.mul * carryA) + F.add)
        if (seen.has) carryNext = seen.value
      }
    }
    return { adv, ret }
  }

  it('matches the reference GAE with masks, lastValues and several chunks per sequence', () => {
    const r = rng(73)
    const B = 4, T = 1100
    const rewards = r.f32(B * T), values = r.f32(B * T), mask = r.mask(B * T, 0.7), lastValues = r.f32(B)
    mask.fill(0, T - 40, T + 600)  // a masked run across a chunk boundary and a sequence boundary
    for (const [gamma, lambda] of [[0.99, 0.95], [1, 1], [0.9, 0]]) {
      const want = on('js', () => rk.gae({ rewards: rk.tensor(rewards, [B, T]), values, mask, gamma, lambda, lastValues }))
      const got = gaeScan(rewards, values, mask, B, T, gamma, lambda, lastValues, 512)
      const { worst: wa } = closeness(got.adv, want.advantages, { atol: 1e-5, rtol: 1e-5 })
      const { worst: wr } = closeness(got.ret, want.returns, { atol: 1e-5, rtol: 1e-5 })
      expect(wa, `advantages γ=${gamma} λ=${lambda}`).toBeLessThanOrEqual(1)
      expect(wr, `returns γ=${gamma} λ=${lambda}`).toBeLessThanOrEqual(1)
    }
  })

  // γ = λ = 1: A_t = Σ_{k≥t} r_k + lastValue − v_t, a random walk of steps ~10 that passes near 0 many times; the
  // partial compositions are of size ~100, whose float32 rounding (~1e-5 each) the small A_t near its zero
  // crossings cannot absorb within the parity tolerance
  it('a cancelling sum (γ = λ = 1, rewards of size 10): double within the parity tolerance, float32 maps are not', () => {
    const r = rng(76)
    const B = 2, T = 1100
    const rewards = r.f32(B * T, 10), values = r.f32(B * T, 3), mask = new Uint8Array(B * T).fill(1), lastValues = r.f32(B)
    const want = on('js', () => rk.gae({ rewards: rk.tensor(rewards, [B, T]), values, mask, gamma: 1, lambda: 1, lastValues }))
    const worst = (got: ReturnType<typeof gaeScan>) => Math.max(
      closeness(got.adv, want.advantages, PARITY.value).worst, closeness(got.ret, want.returns, PARITY.value).worst)
    expect(worst(gaeScan(rewards, values, mask, B, T, 1, 1, lastValues, 512))).toBeLessThanOrEqual(1)
    expect(worst(gaeScan(rewards, values, mask, B, T, 1, 1, lastValues, 512, true))).toBeGreaterThan(1)
  })
})
