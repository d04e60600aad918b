/**
 * Vocab-sharded cross-entropy and KL (issue 15): crossEntropyPartial / mergeCrossEntropyPartials /
 * crossEntropyPartialBackward and klDivergencePartial / mergeKlPartials / klDivergencePartialBackward. V split
 * into 2–7 uneven shards on every host backend: the merged values against the unsharded op (js reference)
 * within the parity tolerances, the shards' gradients too (the unsharded gradients are the finite-difference
 * tested ones, test/ops/vocab.test.ts and kl.test.ts); a row's merge bitwise the same in any batch.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { PARITY, gradTolerance, klGradPTolerance, twice } from '../../src/tolerance.js'
import { HOST_BACKENDS, on } from '../backends.js'
import { parityError } from '../compare.js'
import { type Dtype, bounds, columns } from './vocab-shards.js'
import { closeness, expectClose, expectGradient, numericGradient, rng } from '../helpers.js'
import { SEED } from '../parity.js'


/** Shard gradients [N, V_s] put back side by side into [N, V]. */
function concat(parts: Float32Array[], b: number[], N: number, V: number) {
  const out = new Float32Array(N * V)
  parts.forEach((g, i) => {
    const w = b[i + 1] - b[i]
    for (let n = 0; n < N; n++) out.set(g.subarray(n * w, (n + 1) * w), n * V + b[i])
  })
  return out
}

const DTYPES: Dtype[] = ['float32', 'bfloat16']
const SHAPES: [number, number][] = [[1, 37], [5, 1001], [2, 32000]]
const KS = [2, 3, 7]

interface CeVariant {
  label: string; labelSmoothing?: number; zLoss?: number; weights?: boolean; tokenWeights?: boolean; reduction?: rk.Reduction; negInf?: boolean
  /** a number, or 'rows': a T per row in [0.5, 1.5) */
  temperature?: number | 'rows'
}
const CE_VARIANTS: CeVariant[] = [
  { label: 'plain, −inf logits', negInf: true },
  { label: 'ε 0.1, z-loss, class and token weights, T per row', labelSmoothing: 0.1, zLoss: 1e-3, weights: true, tokenWeights: true, temperature: 'rows' },
  { label: 'ε 0.2, sum', labelSmoothing: 0.2, reduction: 'sum' },
  { label: 'z-loss, none, T 0.7', zLoss: 1e-2, reduction: 'none', weights: true, temperature: 0.7 },
  { label: 'ε 0.1, z-loss, −inf logits, mean, T per row', labelSmoothing: 0.1, zLoss: 1e-2, negInf: true, temperature: 'rows' },
]

interface CeOptions {
  classWeights?: Float32Array; labelSmoothing?: number; zLoss?: number; tokenWeights?: Float32Array; reduction?: rk.Reduction; temperature?: number | Float32Array
}

function ceSharded(z: Float32Array, N: number, V: number, b: number[], dtype: Dtype, targets: Int32Array, opts: CeOptions) {
  const { classWeights, labelSmoothing, zLoss, tokenWeights, reduction, temperature } = opts
  const shards = b.slice(0, -1).map((a, i) => ({ logits: columns(z, N, V, a, b[i + 1], dtype), vocabStart: a, vocabSize: V }))
  const partials = shards.map((s) => rk.crossEntropyPartial({ ...s, targets, classWeights, labelSmoothing, temperature }))
  const merged = rk.mergeCrossEntropyPartials({ partials, targets, classWeights, labelSmoothing, zLoss, tokenWeights, reduction })
  const grads = shards.map((s) => rk.crossEntropyPartialBackward({ ...s, targets, lse: merged.lse, gradRows: merged.gradRows, classWeights, labelSmoothing, zLoss, temperature }).gradLogits.toFloat32Array())
  return { merged, grad: concat(grads, b, N, V) }
}

describe.each(HOST_BACKENDS)(`vocab-sharded cross-entropy on %s against the unsharded js reference (seed ${SEED})`, (backend) => {
  const cases = DTYPES.flatMap((dtype) => SHAPES.flatMap(([N, V]) => KS.flatMap((k) => CE_VARIANTS.map((v) => [dtype, N, V, k, v.label, v] as const))))
  it.each(cases)('%s [%i, %i] in %i shards: %s', (dtype, N, V, k, _, variant) => {
    const r = rng(SEED + V + k)
    const z = r.f32(N * V, 3)
    if (variant.negInf) for (let i = 4; i < z.length; i += 13) z[i] = -Infinity
    const targets = r.ints(N, V)
    if (N > 2) targets[1] = -100
    const opts: CeOptions = {
      labelSmoothing: variant.labelSmoothing, zLoss: variant.zLoss, reduction: variant.reduction,
      classWeights: variant.weights ? Float32Array.from({ length: V }, () => 0.5 + r.uniform()) : undefined,
      tokenWeights: variant.tokenWeights ? Float32Array.from({ length: N }, () => r.uniform()) : undefined,
    }
    const b = bounds(r, V, k)
    const temperature = variant.temperature === 'rows' ? Float32Array.from({ length: N }, () => 0.5 + r.uniform()) : variant.temperature
    opts.temperature = temperature
    const { merged, grad } = on(backend, () => ceSharded(z, N, V, b, dtype, targets, opts))
    const want = on('js', () => rk.crossEntropy({ logits: columns(z, N, V, 0, V, dtype), targets, ...opts, reduction: 'none', grad: false }))
    const wantReduced = on('js', () => rk.crossEntropy({ logits: columns(z, N, V, 0, V, dtype), targets, ...opts, grad: true }))
    const error = parityError({ losses: merged.losses, lse: merged.lse, loss: [merged.loss], count: [merged.count] }, { losses: want.losses, lse: want.lse, loss: [wantReduced.loss], count: [wantReduced.count] })
    if (error !== null) expect.fail(`merged ${dtype} [${N}, ${V}] shards ${b.join(',')}: ${error}`)
    // the merged lse has passed through three float32 roundings (see the KL cases below): twice the tolerance,
    // which scales with 1/T as the gradient does
    const Tmin = temperature === undefined ? 1 : typeof temperature === 'number' ? temperature : Math.min(...temperature)
    const ge = parityError({ gradLogits: grad }, { gradLogits: wantReduced.gradLogits!.toFloat32Array() }, { gradLogits: twice(gradTolerance(Tmin)) })
    if (ge !== null) expect.fail(`gradient ${dtype} [${N}, ${V}] shards ${b.join(',')}: ${ge}`)
  })
})

function klSharded(zp: Float32Array, zq: Float32Array, N: number, V: number, b: number[], dtype: Dtype, temperature: number | Float32Array, mask: Uint8Array | undefined, reduction: rk.Reduction) {
  const shards = b.slice(0, -1).map((a, i) => ({ pLogits: columns(zp, N, V, a, b[i + 1], dtype), qLogits: columns(zq, N, V, a, b[i + 1], dtype) }))
  const partials = shards.map((s) => rk.klDivergencePartial({ ...s, temperature }))
  const merged = rk.mergeKlPartials({ partials, mask, reduction })
  const grads = shards.map((s) => rk.klDivergencePartialBackward({ ...s, temperature, pLse: merged.pLse, qLse: merged.qLse, perRow: merged.perRow, gradRows: merged.gradRows, grad: 'both' }))
  return { merged, gradQ: concat(grads.map((g) => g.gradQ!.toFloat32Array()), b, N, V), gradP: concat(grads.map((g) => g.gradP!.toFloat32Array()), b, N, V) }
}

describe.each(HOST_BACKENDS)(`vocab-sharded KL on %s against the unsharded js reference (seed ${SEED})`, (backend) => {
  const variants = [
    { q: 'independent', reduction: 'mean', temperature: 1 },
    { q: 'near', reduction: 'sum', temperature: 'rows' },
    { q: 'edges', reduction: 'none', temperature: 1.3 },
  ] as const
  const cases = DTYPES.flatMap((dtype) => SHAPES.flatMap(([N, V]) => KS.flatMap((k) => variants.map((v) => [dtype, N, V, k, `q ${v.q}, ${v.reduction}, T ${v.temperature}`, v] as const))))
  it.each(cases)('%s [%i, %i] in %i shards: %s', (dtype, N, V, k, _, variant) => {
    const r = rng(SEED + 3 * V + k)
    const zp = r.f32(N * V, 2)
    const zq = variant.q === 'near' ? zp.map((x) => x + 0.3 * r.normal()) : r.f32(N * V, 2)
    if (variant.q === 'edges') {
      // −inf in both (0·log 0 terms), −inf in q alone in row 0 (KL +inf), a shard of p without mass in the last row
      for (let i = 3; i < zp.length; i += 11) zp[i] = zq[i] = -Infinity
      if (N > 1) zq[5] = -Infinity
      if (N > 2) zp.fill(-Infinity, (N - 1) * V, (N - 1) * V + Math.floor(V / 2))
    }
    const temperature = variant.temperature === 'rows' ? Float32Array.from({ length: N }, () => 0.5 + r.uniform()) : variant.temperature
    const mask = N > 2 ? Uint8Array.from({ length: N }, (_, i) => (i === 1 ? 0 : 1)) : undefined
    const b = bounds(r, V, k)
    const got = on(backend, () => klSharded(zp, zq, N, V, b, dtype, temperature, mask, variant.reduction))
    const want = on('js', () => rk.klDivergence({ pLogits: columns(zp, N, V, 0, V, dtype), qLogits: columns(zq, N, V, 0, V, dtype), temperature, mask, reduction: variant.reduction, grad: 'both' }))
    // the merged KL and lse come from float32 partials: each shard's lse passes through three float32 roundings
    // (logProbs' lse, the partial's max, the merged lse), each moving log p and log q by up to ½ ulp(lse), and the
    // merged KL carries those into perRow; the gradients move by (p + q)/T times them: four times the tolerances
    const error = parityError({ perRow: got.merged.perRow, loss: [got.merged.loss], count: [got.merged.count] }, { perRow: want.perRow, loss: [want.loss], count: [want.count] },
      { perRow: twice(twice({ atol: 5e-6, rtol: 5e-6 })), loss: twice(twice({ atol: 5e-6, rtol: 5e-6 })) })
    if (error !== null) expect.fail(`merged ${dtype} [${N}, ${V}] shards ${b.join(',')}: ${error}`)
    const Tmin = typeof temperature === 'number' ? temperature : Math.min(...temperature)
    const ge = parityError({ gradQ: got.gradQ, gradP: got.gradP }, { gradQ: want.gradQ!.toFloat32Array(), gradP: want.gradP!.toFloat32Array() },
      { gradQ: twice(twice(gradTolerance(Tmin))), gradP: twice(twice(klGradPTolerance(want.perRow, Tmin))) })
    if (ge !== null) expect.fail(`gradient ${dtype} [${N}, ${V}] shards ${b.join(',')}: ${ge}`)
  })
})

describe.each(HOST_BACKENDS)('vocab-sharded CE and KL merges are batch-invariant on %s', (backend) => {
  it('a row merges to bitwise the same result in any batch (the same shard order)', () => on(backend, () => {
    const r = rng(43)
    const N = 6, V = 3001
    const z = r.f32(N * V, 3), zq = r.f32(N * V, 3), targets = r.ints(N, V)
    const b = [0, 1000, 1001, 2500, V]
    const T = Float32Array.from({ length: N }, () => 0.5 + r.uniform())
    const opts = { labelSmoothing: 0.1, zLoss: 1e-3, reduction: 'none' as const }
    const ce = ceSharded(z, N, V, b, 'float32', targets, { ...opts, temperature: T }).merged
    const kl = klSharded(z, zq, N, V, b, 'float32', 0.9, undefined, 'none').merged
    for (const rows of [[2, 3], [5]]) {
      const pick = (x: Float32Array) => Float32Array.from(rows.flatMap((n) => Array.from(x.subarray(n * V, (n + 1) * V))))
      const ty = Int32Array.from(rows, (n) => targets[n])
      const ce2 = ceSharded(pick(z), rows.length, V, b, 'float32', ty, { ...opts, temperature: Float32Array.from(rows, (n) => T[n]) }).merged
      const kl2 = klSharded(pick(z), pick(zq), rows.length, V, b, 'float32', 0.9, undefined, 'none').merged
      rows.forEach((n, i) => {
        expect([ce2.losses[i], ce2.lse[i]]).toEqual([ce.losses[n], ce.lse[n]])
        expect([kl2.perRow[i], kl2.pLse[i], kl2.qLse[i]]).toEqual([kl.perRow[n], kl.pLse[n], kl.qLse[n]])
      })
    }
  }))
})

describe('vocab-sharded CE and KL: options', () => {
  const logits = rk.tensor(new Float32Array(6), [2, 3])
  it('checks its inputs', () => {
    expect(() => rk.crossEntropyPartial({ logits, targets: Int32Array.of(0, 1), vocabStart: 2, vocabSize: 4 })).toThrow(/vocabStart must be ≤ vocabSize − the shard's width \(1\)/)
    expect(() => rk.crossEntropyPartial({ logits, targets: Int32Array.of(0, 4), vocabStart: 0, vocabSize: 4 })).toThrow(/targets\[1\] must be < vocabSize \(4\)/)
    expect(() => rk.crossEntropyPartial({ logits, targets: Int32Array.of(0, 1), vocabStart: 0, vocabSize: 4, classWeights: new Float32Array(3) })).toThrow(/classWeights/)
    expect(() => rk.crossEntropyPartial({ logits, targets: Int32Array.of(0, 1), vocabStart: 0, vocabSize: 3, temperature: new Float32Array(3) })).toThrow(/crossEntropyPartial: temperature.length must be 2, got 3/)
    expect(() => rk.crossEntropyPartial({ logits, targets: Int32Array.of(0, 1), vocabStart: 0, vocabSize: 3, temperature: 0 })).toThrow(/crossEntropyPartial: temperature must be a finite number ≥ 0.000001, got 0/)
    expect(() => rk.crossEntropyPartialBackward({ logits, targets: Int32Array.of(0, 1), vocabStart: 0, vocabSize: 3, lse: new Float32Array(2), gradRows: new Float32Array(2), temperature: Float32Array.of(1, NaN) }))
      .toThrow(/crossEntropyPartialBackward: temperature\[1\] must be a finite number ≥ 1e-6 as a float32, got NaN/)
    expect(() => rk.mergeCrossEntropyPartials({ partials: [], targets: Int32Array.of(0, 1) })).toThrow(/partials must be an array of one or more/)
    const p = rk.crossEntropyPartial({ logits, targets: Int32Array.of(0, 1), vocabStart: 0, vocabSize: 3 })
    expect(() => rk.mergeCrossEntropyPartials({ partials: [p, { ...p, smooth: new Float32Array(1) }], targets: Int32Array.of(0, 1) })).toThrow(/partials\[1\].smooth must be a Float32Array of 2/)
    expect(() => rk.mergeCrossEntropyPartials({ partials: [p], targets: Int32Array.of(0, 3) })).toThrow(/targets\[1\] must be in \[0, 3\)/)
    expect(() => rk.klDivergencePartial({ pLogits: logits, qLogits: rk.tensor(new Float32Array(4), [2, 2]) })).toThrow(/qLogits.shape/)
    const k = rk.klDivergencePartial({ pLogits: logits, qLogits: logits })
    expect(() => rk.mergeKlPartials({ partials: [k, { ...k, kl: new Float32Array(3) }] })).toThrow(/partials\[1\].kl must be a Float32Array of 2/)
    const m = rk.mergeKlPartials({ partials: [k] })
    expect(() => rk.klDivergencePartialBackward({ pLogits: logits, qLogits: logits, ...m, grad: 'x' as any })).toThrow(/grad must be one of/)
  })
  it.each(HOST_BACKENDS)('an infinite shard KL stays infinite when its p mass underflows in the merge (%s)', (backend) => on(backend, () => {
    // row: shard 0 holds p's mass; shard 1's p is exp(−800) of it (0 in float64) with q = 0 at a column there
    const zp = Float32Array.of(0, 1, -800, -801), zq = Float32Array.of(0, 1, 0, -Infinity)
    const want = rk.klDivergence({ pLogits: rk.tensor(zp, [1, 4]), qLogits: rk.tensor(zq, [1, 4]) }).perRow[0]
    expect(want).toBe(Infinity)
    const parts = [[0, 2], [2, 4]].map(([a, b]) => rk.klDivergencePartial({ pLogits: rk.tensor(zp.slice(a, b), [1, 2]), qLogits: rk.tensor(zq.slice(a, b), [1, 2]) }))
    expect(rk.mergeKlPartials({ partials: parts }).perRow[0]).toBe(Infinity)
  }))
  it.each(HOST_BACKENDS)('the q gradient of q near p keeps its accuracy at each shard\'s column 0 (%s)', (backend) => on(backend, () => {
    // g (q − p)/T of at most 3.5e-6 per element: computed as g (q_0 − 1)/T + g (1 − p_0)/T in float32, column 0
    // is off by up to g·2^-24/T ≈ 7e-8 (measured: 2.4e-2 to 3.1e-2 of the largest element); from q_0 − p_0 in
    // float64, by at most 1e-3 of it, and the other columns (float32 partials and lse) by at most 3e-3
    const r = rng(SEED + 7)
    const N = 3, V = 1000, b = [0, 400, 700, V], T = 0.8
    const zp = r.f32(N * V, 1), zq = Float32Array.from(zp, (x) => x + 1e-4 * r.normal())
    const got = klSharded(zp, zq, N, V, b, 'float32', T, undefined, 'sum').gradQ
    const want = on('js', () => rk.klDivergence({ pLogits: rk.tensor(zp, [N, V]), qLogits: rk.tensor(zq, [N, V]), temperature: T, reduction: 'sum', grad: 'q' })).gradQ!.toFloat32Array()
    let scale = 0
    for (const x of want) scale = Math.max(scale, Math.abs(x))
    expectClose(got, want, { atol: 1e-2 * scale, rtol: 0 }, 'gradQ')
  }))
  it('targets as an int32 Tensor give the same results as an Int32Array (class weights read at each row\'s target)', () => {
    const r = rng(SEED + 9)
    const N = 3, V = 10, z = r.f32(N * V, 2), y = Int32Array.of(7, 2, 5)
    const classWeights = Float32Array.from({ length: V }, () => 0.5 + r.uniform())
    const run = (targets: Int32Array) => {
      const shards = [[0, 4], [4, V]].map(([a, e]) => ({ logits: columns(z, N, V, a, e, 'float32'), vocabStart: a, vocabSize: V, targets, classWeights, labelSmoothing: 0.1 }))
      const m = rk.mergeCrossEntropyPartials({ partials: shards.map((s) => rk.crossEntropyPartial(s)), targets: y, classWeights, labelSmoothing: 0.1 })
      return [m.losses, ...shards.map((s) => rk.crossEntropyPartialBackward({ ...s, lse: m.lse, gradRows: m.gradRows }).gradLogits.toFloat32Array())]
    }
    // the types say Int32Array; the validation takes a host int32 Tensor, as every targets argument
    const [want, got] = [run(y), run(rk.tensor(Int32Array.from(y), [N], { dtype: 'int32' }) as unknown as Int32Array)]
    for (const x of want) expect(Array.from(x).every(Number.isFinite)).toBe(true)
    expect(got).toEqual(want)
  })
  it('a single shard is the unsharded op (KL 0 of a row with itself, CE log V of uniform logits)', () => {
    const k = rk.klDivergencePartial({ pLogits: logits, qLogits: logits })
    expect(Array.from(rk.mergeKlPartials({ partials: [k] }).perRow)).toEqual([0, 0])
    const p = rk.crossEntropyPartial({ logits, targets: Int32Array.of(0, 1), vocabStart: 0, vocabSize: 3 })
    expect(rk.mergeCrossEntropyPartials({ partials: [p], targets: Int32Array.of(0, 1) }).loss).toBeCloseTo(Math.log(3), 6)
  })
})

describe.each(HOST_BACKENDS)('vocab-sharded cross-entropy at T ≠ 1 on %s', (backend) => {
  // 4 rows (row 3 ignored) of V = 13 in shards [0, 4), [4, 5), [5, 13); targets in each shard; T per row
  const N = 4, V = 13, b = [0, 4, 5, V]
  const targets = Int32Array.of(2, 4, 11, -100)
  const temperature = Float32Array.of(0.6, 1.7, 0.9, 1.2)
  const r = rng(SEED + 15)
  const z = r.f64(N * V, 1.5)
  const opts: CeOptions = {
    labelSmoothing: 0.1, zLoss: 0.01, reduction: 'mean',
    classWeights: Float32Array.from({ length: V }, () => 0.5 + r.uniform()), tokenWeights: Float32Array.from({ length: N }, () => 0.5 + r.uniform()),
  }
  /** the sharded loss and gradient of float64 logits (columns cut without rounding) */
  const run = (x: Float64Array, T: number | Float32Array) => on(backend, () => {
    const cut = (a: number, e: number) => rk.tensor(Float64Array.from({ length: N * (e - a) }, (_, i) => x[Math.floor(i / (e - a)) * V + a + (i % (e - a))]), [N, e - a])
    const { classWeights, labelSmoothing, zLoss, tokenWeights, reduction } = opts
    const shards = b.slice(0, -1).map((a, i) => ({ logits: cut(a, b[i + 1]), vocabStart: a, vocabSize: V }))
    const partials = shards.map((s) => rk.crossEntropyPartial({ ...s, targets, classWeights, labelSmoothing, temperature: T }))
    const merged = rk.mergeCrossEntropyPartials({ partials, targets, classWeights, labelSmoothing, zLoss, tokenWeights, reduction })
    const grads = shards.map((s) => rk.crossEntropyPartialBackward({ ...s, targets, lse: merged.lse, gradRows: merged.gradRows, classWeights, labelSmoothing, zLoss, temperature: T }).gradLogits.toFloat32Array())
    return { loss: merged.loss, grad: concat(grads, b, N, V) }
  })

  it('the gradient wrt the logits matches central differences of the merged loss (T per row, ε, z-loss, weights)', () => {
    const { grad } = run(z, temperature)
    // the loss is float32 (float32 partials): a difference of two of them over a step of 2e-2 carries its
    // rounding (about 1e-7 of a loss near 2, so ~1e-5 absolute) against gradients down to 2e-4 here, and the
    // worst element is about 1.2e-3 relative (with the floor of expectGradient); checked to 1e-2, still far
    // tighter than a missing 1/T (a factor 0.6 to 1.7) or a T missing from the partials
    const numeric = numericGradient(() => run(z, temperature).loss, z, 1e-2)
    expectGradient(grad, numeric, 'd loss/d logits', 1e-2)
  })

  it('T is applied: the merged loss and gradient at T equal crossEntropy at T, and differ from those at T = 1', () => {
    const got = run(z, temperature)
    const want = on('js', () => rk.crossEntropy({ logits: rk.tensor(z, [N, V]), targets, ...opts, temperature, grad: true }))
    const plain = on('js', () => rk.crossEntropy({ logits: rk.tensor(z, [N, V]), targets, ...opts, grad: true }))
    expectClose(got.loss, want.loss, PARITY.value, 'loss')
    expectClose(got.grad, want.gradLogits!.toFloat32Array(), twice(gradTolerance(0.6)), 'gradLogits')
    // the same checks against T = 1 fail: T changes both by far more than the tolerances
    expect(closeness([got.loss], [plain.loss], PARITY.value).worst).toBeGreaterThan(100)
    expect(closeness(got.grad, plain.gradLogits!.toFloat32Array(), twice(gradTolerance(0.6))).worst).toBeGreaterThan(100)
  })
})
