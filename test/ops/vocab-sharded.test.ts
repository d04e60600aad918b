/**
 * Vocab-sharded logits (issue 15): logProbsPartial per shard, mergeVocabPartials, logProbsPartialBackward.
 * V split into 2–7 uneven shards: the merged statistics against the unsharded op (js reference) within the
 * parity tolerances, the shards' gradients too; a row's merged result bitwise the same whatever its batch;
 * golden values of Megatron's vocab-parallel cross-entropy from PyTorch.
 */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { gradTolerance, twice } from '../../src/tolerance.js'
import { HOST_BACKENDS, on } from '../backends.js'
import { parityError } from '../compare.js'
import { type Dtype, bounds, columns } from './vocab-shards.js'
import { F32, expectClose, rng } from '../helpers.js'
import { SEED } from '../parity.js'


/** Every shard's partials, merged; and the gradient of Σ g·logp + gH·H + gQ·Q, shard by shard, concatenated. */
function sharded(z: Float32Array, N: number, V: number, b: number[], dtype: Dtype, targets: Int32Array, temperature: number | Float32Array, g: Float32Array[]) {
  const shards = b.slice(0, -1).map((a, i) => ({ logits: columns(z, N, V, a, b[i + 1], dtype), vocabStart: a }))
  const partials = shards.map((s) => rk.logProbsPartial({ ...s, targets, temperature }))
  const merged = rk.mergeVocabPartials({ partials, targets })
  const grad = new Float32Array(N * V)
  shards.forEach((s, i) => {
    const gs = rk.logProbsPartialBackward({
      ...s, targets, temperature, lse: merged.lse, gradLogp: g[0], gradEntropy: g[1], entropy: merged.entropy, gradSumProbSq: g[2], sumProbSq: merged.sumProbSq,
    }).gradLogits.toFloat32Array()
    const w = b[i + 1] - b[i]
    for (let n = 0; n < N; n++) grad.set(gs.subarray(n * w, (n + 1) * w), n * V + b[i])
  })
  return { merged, grad }
}

const DTYPES: Dtype[] = ['float32', 'bfloat16', 'float16']
const SHAPES: [number, number][] = [[1, 37], [5, 1001], [3, 4099], [2, 32000]]

describe.each(HOST_BACKENDS)(`vocab-sharded logits on %s against the unsharded js reference (seed ${SEED})`, (backend) => {
  const cases = DTYPES.flatMap((dtype) => SHAPES.flatMap(([N, V]) => [2, 3, 7].map((k) => [dtype, N, V, k] as const)))
  it.each(cases)('%s [%i, %i] in %i shards', (dtype, N, V, k) => {
    const r = rng(SEED + V + k)
    const z = r.f32(N * V, 3)
    for (let i = 4; i < z.length; i += 13) z[i] = -Infinity
    const targets = r.ints(N, V)
    if (N > 2) targets[1] = -100
    const temperature = N > 1 ? Float32Array.from({ length: N }, () => 0.5 + r.uniform()) : 0.8
    const g = [r.f32(N), r.f32(N), r.f32(N)]
    const b = bounds(r, V, k)
    const { merged, grad } = on(backend, () => sharded(z, N, V, b, dtype, targets, temperature, g))
    const full = columns(z, N, V, 0, V, dtype)
    const want = on('js', () => rk.logProbs({ logits: full, targets, temperature, entropy: true, sumProbSq: true }))
    const error = parityError({ logp: merged.logp, lse: merged.lse, entropy: merged.entropy, sumProbSq: merged.sumProbSq }, want)
    if (error !== null) expect.fail(`merged ${dtype} [${N}, ${V}] shards ${b.join(',')}: ${error}`)
    const wantGrad = on('js', () => rk.logProbsBackward({
      logits: full, targets, temperature, lse: want.lse, gradLogp: g[0], gradEntropy: g[1], entropy: want.entropy, gradSumProbSq: g[2], sumProbSq: want.sumProbSq,
    })).gradLogits.toFloat32Array()
    // the shard backward reads the merged float32 statistics (lse, entropy, Σ p²), each rounded once more than
    // the unsharded backward's: twice the tolerance (a random seed found 1.03× with one)
    const ge = parityError({ gradLogits: grad }, { gradLogits: wantGrad }, { gradLogits: twice(gradTolerance(0.5)) })
    if (ge !== null) expect.fail(`gradient ${dtype} [${N}, ${V}] shards ${b.join(',')}: ${ge}`)
  })

  it('a row merges to bitwise the same result in any batch (the same shard order)', () => on(backend, () => {
    const r = rng(41)
    const N = 6, V = 3001
    const z = r.f32(N * V, 3), targets = r.ints(N, V)
    const b = [0, 1000, 1001, 2500, V]
    const all = sharded(z, N, V, b, 'float32', targets, 0.9, [r.f32(N), r.f32(N), r.f32(N)]).merged
    for (const rows of [[2, 3], [5]]) {
      const sub = Float32Array.from(rows.flatMap((n) => Array.from(z.subarray(n * V, (n + 1) * V))))
      const ty = Int32Array.from(rows, (n) => targets[n])
      const part = sharded(sub, rows.length, V, b, 'float32', ty, 0.9, [new Float32Array(rows.length), new Float32Array(rows.length), new Float32Array(rows.length)]).merged
      rows.forEach((n, i) => {
        expect([part.logp[i], part.lse[i], part.entropy[i], part.sumProbSq[i]]).toEqual([all.logp[n], all.lse[n], all.entropy[n], all.sumProbSq[n]])
      })
    }
  }))
})

interface Case { op: string; expected: Record<string, any>; [k: string]: any }
const golden: { cases: Case[] } = JSON.parse(readFileSync(new URL('../fixtures/golden.json', import.meta.url), 'utf8'))

describe.each(HOST_BACKENDS)("golden values: Megatron's vocab-parallel cross-entropy on %s", (backend) => {
  const cases = golden.cases.filter((c) => c.op === 'vocabParallelCrossEntropy')
  it('there are two cases', () => expect(cases.length).toBe(2))
  it.each(cases.map((c, i) => [i, c] as const))('case %i', (_, c) => on(backend, () => {
    const z = Float32Array.from(c.logits)
    const targets = Int32Array.from(c.targets)
    const N = c.N
    const g = [Float32Array.from({ length: N }, () => -1 / N), undefined, undefined] as Float32Array[]
    const shards = (c.bounds as number[]).slice(0, -1).map((a, i) => ({ logits: columns(z, N, c.V, a, c.bounds[i + 1], 'float32'), vocabStart: a }))
    const merged = rk.mergeVocabPartials({ partials: shards.map((s) => rk.logProbsPartial({ ...s, targets })), targets })
    expectClose(merged.loss, c.expected.loss, F32, 'loss')
    expectClose(Array.from(merged.logp, (x) => -x), c.expected.losses, F32, 'losses')
    const grad = new Float32Array(N * c.V)
    shards.forEach((s, i) => {
      const gs = rk.logProbsPartialBackward({ ...s, targets, lse: merged.lse, gradLogp: g[0] }).gradLogits.toFloat32Array()
      const w = c.bounds[i + 1] - c.bounds[i]
      for (let n = 0; n < N; n++) grad.set(gs.subarray(n * w, (n + 1) * w), n * c.V + c.bounds[i])
    })
    expectClose(grad, c.expected.gradLogits, F32, 'gradLogits')
  }))
})

describe('vocab-sharded: options', () => {
  const logits = rk.tensor(new Float32Array(6), [2, 3])
  it('checks its inputs', () => {
    expect(() => rk.logProbsPartial({ logits, targets: Int32Array.of(0, -5), vocabStart: 0 })).toThrow(/targets\[1\] must be ≥ 0 or equal to ignoreIndex/)
    expect(() => rk.logProbsPartial({ logits, targets: Int32Array.of(0, 1), vocabStart: -1 })).toThrow(/vocabStart/)
    expect(() => rk.mergeVocabPartials({ partials: [], targets: Int32Array.of(0, 1) })).toThrow(/partials must be an array of one or more/)
    const p = rk.logProbsPartial({ logits, targets: Int32Array.of(0, 1), vocabStart: 0 })
    expect(() => rk.mergeVocabPartials({ partials: [p, { ...p, sumP2: new Float32Array(1) }], targets: Int32Array.of(0, 1) })).toThrow(/partials\[1\].sumP2 must be a Float32Array of 2/)
    expect(() => rk.logProbsPartialBackward({ logits, targets: Int32Array.of(0, 1), vocabStart: 0, lse: new Float32Array(2), gradEntropy: new Float32Array(2) })).toThrow(/entropy must be given with gradEntropy/)
  })
})
