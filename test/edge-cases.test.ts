/** Edge cases: ignored and masked data, −inf logits, empty batches, V = 1 (DESIGN §1, §2 Errors). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { HOST_BACKENDS, on } from './backends.js'
import { F32, expectClose, rng } from './helpers.js'
import { PARITY } from '../src/tolerance.js'

const allFinite = (x: ArrayLike<number>) => Array.prototype.every.call(x, (v: number) => Number.isFinite(v))

describe.each(HOST_BACKENDS)('edge cases on %s', (backend) => {
  beforeAll(() => rk.setBackend(backend))
  afterAll(() => rk.setBackend('auto'))

  it('all rows ignored: loss 0, count 0, zero gradient', () => {
    const logits = rk.tensor(rng(1).f32(3 * 5), [3, 5])
    const targets = Int32Array.of(-100, -100, -100)
    for (const reduction of ['mean', 'sum', 'none'] as const) {
      const r = rk.crossEntropy({ logits, targets, reduction, grad: true })
      expect(r.loss).toBe(0)
      expect(r.count).toBe(0)
      expect(r.gradLogits!.data.every((g) => g === 0)).toBe(true)
    }
    expect(Array.from(rk.logProbs({ logits, targets }).logp)).toEqual([0, 0, 0])
  })

  it('a custom ignoreIndex skips its rows', () => {
    const logits = rk.tensor(rng(2).f32(2 * 4), [2, 4])
    const a = rk.crossEntropy({ logits, targets: Int32Array.of(1, 7), ignoreIndex: 7 })
    const b = rk.crossEntropy({ logits, targets: Int32Array.of(1, -100) })
    expect(a.loss).toBe(b.loss)
    expect(a.count).toBe(1)
  })

  it('a one-candidate prompt is excluded like an ignored one', () => {
    const scores = Float64Array.of(1, 2, 0.5, 3, 1, 4)
    const withSingle = rk.rewardLoss({ scores, offsets: Int32Array.of(0, 2, 3, 6), chosen: Int32Array.of(0, 0, 2) })
    const withIgnored = rk.rewardLoss({ scores, offsets: Int32Array.of(0, 2, 3, 6), chosen: Int32Array.of(0, -100, 2) })
    const without = rk.rewardLoss({ scores: Float64Array.of(1, 2, 3, 1, 4), offsets: Int32Array.of(0, 2, 5), chosen: Int32Array.of(0, 2) })
    expect(withSingle.count).toBe(2)
    expect(withSingle.loss).toBe(without.loss)
    expect(withIgnored.loss).toBe(without.loss)
    expect(withSingle.gradScores[2]).toBe(0)
    expect(withSingle.accuracy).toBe(without.accuracy)
    expect(withSingle.probs[2]).toBe(1)
  })

  it('fully masked sequences are excluded from sequence means', () => {
    const r = rng(3)
    const T = 4
    const logp = r.f64(3 * T, 0.3), oldLogp = r.f64(3 * T, 0.3), advantages = r.f64(3 * T)
    const mask = Uint8Array.of(1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0)
    const keep = [0, 1, 2, 3, 8, 9, 10, 11]
    const pick = (x: Float64Array | Uint8Array) => keep.map((i) => x[i])
    for (const aggregation of ['seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'] as const) {
      const full = rk.policyLoss({ logp: rk.tensor(logp, [3, T]), oldLogp, advantages, mask, aggregation })
      const two = rk.policyLoss({
        logp: rk.tensor(Float64Array.from(pick(logp)), [2, T]), oldLogp: Float64Array.from(pick(oldLogp)),
        advantages: Float64Array.from(pick(advantages)), mask: Uint8Array.from(pick(mask)), aggregation,
      })
      expectClose(full.loss, two.loss, F32, aggregation)
    }
  })

  it('−inf logits: entropy finite, lse right, no NaN anywhere', () => {
    const z = Float32Array.of(-Infinity, 1, 2, -Infinity, 0.5, -Infinity)
    const logits = rk.tensor(z, [1, 6])
    const r = rk.logProbs({ logits, targets: Int32Array.of(2), entropy: true })
    const lse = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(0.5))
    expectClose(r.lse, [lse], F32, 'lse')
    expectClose(r.logp, [2 - lse], F32, 'logp')
    const p = [1, 2, 0.5].map((x) => Math.exp(x - lse))
    expectClose(r.entropy!, [-p.reduce((s, q) => s + q * Math.log(q), 0)], F32, 'entropy')
    const ce = rk.crossEntropy({ logits, targets: Int32Array.of(2), grad: true })
    expect(allFinite(ce.gradLogits!.data)).toBe(true)
    expect(ce.gradLogits!.data[0]).toBe(0)
    const g = rk.logProbsBackward({ logits, targets: Int32Array.of(2), lse: r.lse, gradLogp: Float32Array.of(1), gradEntropy: Float32Array.of(1) })
    expect(allFinite(g.gradLogits.data)).toBe(true)
    const kl = rk.klDivergence({ pLogits: logits, qLogits: rk.tensor(Float32Array.of(0, 1, 2, 3, 0.5, 1), [1, 6]), grad: 'both' })
    expect(allFinite(kl.perRow) && allFinite(kl.gradQ!.data) && allFinite(kl.gradP!.data)).toBe(true)
  })

  it('a −inf target logit gives loss +inf, not NaN, with a finite gradient', () => {
    const logits = rk.tensor(Float32Array.of(1, -Infinity, 0), [1, 3])
    const ce = rk.crossEntropy({ logits, targets: Int32Array.of(1), grad: true })
    expect(ce.loss).toBe(Infinity)
    expect(allFinite(ce.gradLogits!.data)).toBe(true)
    expect(rk.logProbs({ logits, targets: Int32Array.of(1) }).logp[0]).toBe(-Infinity)
  })

  it('an all −inf row: lse −inf, logp −inf, entropy 0, zero gradient', () => {
    const logits = rk.tensor(Float32Array.of(-Infinity, -Infinity, 1, 2), [2, 2])
    const r = rk.logProbs({ logits, targets: Int32Array.of(0, 1), entropy: true })
    expect(r.lse[0]).toBe(-Infinity)
    expect(r.logp[0]).toBe(-Infinity)
    expect(r.entropy![0]).toBe(0)
    const ce = rk.crossEntropy({ logits, targets: Int32Array.of(0, 1), grad: true, reduction: 'none' })
    expect(ce.losses![0]).toBe(Infinity)
    expect(Array.from(ce.gradLogits!.data.slice(0, 2))).toEqual([0, 0])
  })

  it('ignored rows: lse, logp and entropy 0, and zero gradient even with gradEntropy', () => {
    const N = 3, V = 5
    const logits = rk.tensor(rng(6).f32(N * V, 2), [N, V])
    const targets = Int32Array.of(2, -100, 4)
    const r = rk.logProbs({ logits, targets, entropy: true, temperature: 0.7 })
    expect([r.lse[1], r.logp[1], r.entropy![1]]).toEqual([0, 0, 0])
    expect(r.lse[0] !== 0 && r.entropy![0] > 0).toBe(true)
    const ones = Float32Array.of(1, 1, 1)
    const g = rk.logProbsBackward({ logits, targets, lse: r.lse, gradLogp: ones, gradEntropy: ones, temperature: 0.7 })
    expect(Array.from(g.gradLogits.data.slice(V, 2 * V))).toEqual([0, 0, 0, 0, 0])
    expect(g.gradLogits.data.slice(0, V).some((x) => x !== 0)).toBe(true)
    const onlyEntropy = rk.logProbsBackward({ logits, targets, lse: r.lse, entropy: r.entropy, gradEntropy: ones, temperature: 0.7 })
    expect(Array.from(onlyEntropy.gradLogits.data.slice(V, 2 * V))).toEqual([0, 0, 0, 0, 0])
    const ce = rk.crossEntropy({ logits, targets, reduction: 'none', grad: true })
    expect([ce.lse[1], ce.losses![1]]).toEqual([0, 0])
  })

  it('NaN logits propagate as in PyTorch: the row is NaN (an all-NaN row too), other rows are untouched', () => {
    const V = 4
    const z = Float32Array.of(1, NaN, 2, 0, NaN, NaN, NaN, NaN, 0.5, -1, 2, 1)
    const logits = rk.tensor(z, [3, V])
    const targets = Int32Array.of(0, 1, 2)
    const r = rk.logProbs({ logits, targets, entropy: true })
    for (const n of [0, 1]) expect([r.lse[n], r.logp[n], r.entropy![n]].every(Number.isNaN), `row ${n}`).toBe(true)
    expect(Number.isFinite(r.lse[2]) && Number.isFinite(r.entropy![2])).toBe(true)
    const ce = rk.crossEntropy({ logits, targets, reduction: 'none', grad: true })
    expect(Number.isNaN(ce.losses![0]) && Number.isNaN(ce.losses![1]) && Number.isFinite(ce.losses![2])).toBe(true)
    expect(ce.gradLogits!.data.slice(0, 2 * V).every(Number.isNaN)).toBe(true)
    expect(allFinite(ce.gradLogits!.data.slice(2 * V))).toBe(true)
    const g = rk.logProbsBackward({ logits, targets, lse: r.lse, gradEntropy: Float32Array.of(1, 1, 1) })
    expect(g.gradLogits.data.slice(0, 2 * V).every(Number.isNaN)).toBe(true)
    // ignored, a NaN row is 0 like any other ignored row
    const ignored = rk.crossEntropy({ logits, targets: Int32Array.of(-100, -100, 2), grad: true })
    expect(Number.isFinite(ignored.loss) && allFinite(ignored.gradLogits!.data)).toBe(true)
  })

  it('klDivergence: a p without mass is KL 0 with zero gradients, a q without mass +inf with zero gradients, NaN is NaN', () => {
    const V = 3
    const ninf = -Infinity
    const p = rk.tensor(Float32Array.of(ninf, ninf, ninf, ninf, ninf, ninf, 0, 1, 2, 0, 1, NaN, 0, 1, 2), [5, V])
    const q = rk.tensor(Float32Array.of(ninf, ninf, ninf, 0, 1, 2, ninf, ninf, ninf, 1, 1, 1, 0, ninf, 2), [5, V])
    const r = rk.klDivergence({ pLogits: p, qLogits: q, grad: 'both', reduction: 'none' })
    expect(Array.from(r.perRow.slice(0, 3))).toEqual([0, 0, Infinity])
    expect(Number.isNaN(r.perRow[3])).toBe(true)
    expect(r.perRow[4]).toBe(Infinity)  // p > 0 where q = 0
    expect(Array.from(r.gradQ!.data.slice(0, 3 * V))).toEqual(new Array(3 * V).fill(0))
    expect(Array.from(r.gradP!.data.slice(0, 3 * V))).toEqual(new Array(3 * V).fill(0))
    expect(r.gradQ!.data.slice(3 * V, 4 * V).every(Number.isNaN) && r.gradP!.data.slice(3 * V, 4 * V).every(Number.isNaN)).toBe(true)
    expect(Array.from(r.gradP!.data.slice(4 * V))).toEqual([0, 0, 0])  // no finite gradient of an infinite KL wrt p
    expect(allFinite(r.gradQ!.data.slice(4 * V))).toBe(true)  // softmax(q) − softmax(p), as cross-entropy's
  })

  it('NaN in a masked slot does not leak', () => {
    const r = rng(4)
    const M = 6
    const mask = Uint8Array.of(1, 0, 1, 1, 0, 1)
    const poison = (x: Float64Array) => { x[1] = NaN; x[4] = NaN; return x }
    const logp = poison(r.f64(M, 0.3)), oldLogp = poison(r.f64(M, 0.3)), advantages = poison(r.f64(M))
    for (const aggregation of rk.AGGREGATIONS) {
      const p = rk.policyLoss({ logp, oldLogp, advantages, mask, aggregation })
      expect(Number.isFinite(p.loss) && allFinite(p.gradLogp) && allFinite(p.perToken), aggregation).toBe(true)
      expect(Number.isFinite(p.approxKl) && Number.isFinite(p.ratioMean)).toBe(true)
      const k = rk.klPenalty({ logp, refLogp: oldLogp, mask, aggregation })
      expect(Number.isFinite(k.loss) && allFinite(k.gradLogp)).toBe(true)
      const v = rk.valueLoss({ values: logp, returns: advantages, oldValues: oldLogp, clip: 0.2, mask, aggregation })
      expect(Number.isFinite(v.loss) && allFinite(v.gradValues)).toBe(true)
    }
    const g = rk.gae({ rewards: advantages, values: logp, mask })
    expect(allFinite(g.advantages) && allFinite(g.returns)).toBe(true)
    expect(allFinite(rk.whiten({ values: logp, mask }))).toBe(true)
    const V = 3
    const logits = rk.tensor(Float64Array.from({ length: M * V }, (_, i) => (i >= V && i < 2 * V ? NaN : r.normal())), [M, V])
    const ppo = rk.ppoLoss({ logits, actions: new Int32Array(M), oldLogp, advantages, values: logp, returns: advantages, mask })
    expect(Number.isFinite(ppo.loss) && allFinite(ppo.gradLogits.data) && allFinite(ppo.gradValues!)).toBe(true)
    const kl = rk.klDivergence({ pLogits: logits, qLogits: logits, mask, grad: true })
    expect(Number.isFinite(kl.loss) && allFinite(kl.gradQ!.data)).toBe(true)
  })

  it('empty batches give empty results and a zero loss', () => {
    const logits = rk.tensor(new Float32Array(0), [0, 7])
    const targets = new Int32Array(0)
    const ce = rk.crossEntropy({ logits, targets, grad: true })
    expect([ce.loss, ce.count, ce.lse.length, ce.gradLogits!.data.length]).toEqual([0, 0, 0, 0])
    expect(rk.logProbs({ logits, targets, entropy: true }).logp.length).toBe(0)
    const rw = rk.rewardLoss({ scores: new Float32Array(0), offsets: Int32Array.of(0), chosen: new Int32Array(0) })
    expect([rw.loss, rw.count, rw.accuracy]).toEqual([0, 0, 0])
    const e = new Float32Array(0)
    expect(rk.policyLoss({ logp: e, oldLogp: e, advantages: e }).loss).toBe(0)
    expect(rk.gae({ rewards: rk.tensor(e, [0, 5]), values: e }).advantages.length).toBe(0)
    expect(rk.whiten({ values: e }).length).toBe(0)
    expect(rk.groupAdvantages({ scores: e, groupSize: 4 }).length).toBe(0)
    expect(rk.klDivergence({ pLogits: logits, qLogits: logits }).loss).toBe(0)
  })

  it('every op on an empty batch returns what js returns (zero tokens, empty values, every optional input given)', () => {
    const e = new Float32Array(0), ei = new Int32Array(0)
    const L = rk.tensor(e, [0, 7]), T0 = rk.tensor(e, [2, 0])
    const calls: Record<string, () => unknown> = {
      crossEntropy: () => rk.crossEntropy({ logits: L, targets: ei, grad: true, reduction: 'none', labelSmoothing: 0.1, classWeights: new Float32Array(7), tokenWeights: e }),
      logProbs: () => rk.logProbs({ logits: L, targets: ei, entropy: true }),
      logProbsBackward: () => rk.logProbsBackward({ logits: L, targets: ei, lse: e, gradLogp: e, gradEntropy: e, entropy: e }),
      klDivergence: () => rk.klDivergence({ pLogits: L, qLogits: L, grad: 'both', mask: new Uint8Array(0) }),
      klPenalty: () => rk.klPenalty({ logp: T0, refLogp: e, aggregation: 'seq-mean-token-mean', mask: new Uint8Array(0) }),
      policyLoss: () => rk.policyLoss({ logp: e, oldLogp: e, advantages: e, seqLengths: Int32Array.of(0, 0), aggregation: 'seq-mean-token-sum-norm' }),
      valueLoss: () => rk.valueLoss({ values: e, returns: e, oldValues: e, clip: 0.2 }),
      gae: () => rk.gae({ rewards: T0, values: e, lastValues: new Float32Array(2) }),
      whiten: () => rk.whiten({ values: e, mask: new Uint8Array(0) }),
      groupAdvantages: () => rk.groupAdvantages({ scores: e, offsets: Int32Array.of(0) }),
      rewardLoss: () => rk.rewardLoss({ scores: e, offsets: Int32Array.of(0), chosen: ei, margins: e, reduction: 'none' }),
      softRewardLoss: () => rk.rewardLoss({ scores: e, K: 2, targetProbs: e }),
      ppoLoss: () => rk.ppoLoss({ logits: L, actions: ei, oldLogp: e, advantages: e, values: e, returns: e, oldValues: e, valueClip: 0.2, refLogp: e, beta: 0.1, klEstimator: 'k3' }),
      ppoLossAnchor: () => rk.ppoLoss({ logits: rk.tensor(e, [2, 0, 5]), actions: ei, oldLogits: rk.tensor(e, [2, 0, 5]), advantages: e, beta: 0.1 }),
    }
    const plain = (x: unknown): unknown =>
      x instanceof rk.Tensor ? { shape: x.shape, dtype: x.dtype, data: Array.from(x.data) }
        : ArrayBuffer.isView(x) ? { [x.constructor.name]: Array.from(x as Float32Array) }
          : x !== null && typeof x === 'object' ? Object.fromEntries(Object.entries(x).sort().map(([k, v]) => [k, plain(v)])) : x
    for (const [name, call] of Object.entries(calls)) {
      const expected = plain(on('js', call))
      expect(plain(on(backend, call)), name).toEqual(expected)
    }
    rk.setBackend(backend)  // on() went back to 'auto'
  })

  it('V = 1: logp 0, loss 0, entropy 0, gradient 0', () => {
    const logits = rk.tensor(Float32Array.of(3, -2), [2, 1])
    const targets = Int32Array.of(0, 0)
    const r = rk.logProbs({ logits, targets, entropy: true })
    expect(Array.from(r.logp)).toEqual([0, 0])
    expect(Array.from(r.entropy!)).toEqual([0, 0])
    expect(Array.from(r.lse)).toEqual([3, -2])
    const ce = rk.crossEntropy({ logits, targets, grad: true })
    expect(ce.loss).toBe(0)
    expect(Array.from(ce.gradLogits!.data)).toEqual([0, 0])
  })

  it('outputs are float32 and matrices keep the logits shape', () => {
    const logits = rk.tensor(rng(5).f64(2 * 3 * 4), [2, 3, 4])
    const r = rk.crossEntropy({ logits, targets: Int32Array.of(0, 1, 2, 3, 0, 1), grad: true })
    expect(r.lse).toBeInstanceOf(Float32Array)
    expect(r.gradLogits!.dtype).toBe('float32')
    expect(r.gradLogits!.shape).toEqual([2, 3, 4])
  })
})

describe.each(HOST_BACKENDS)('precision on %s (README tolerances against float64 formulas)', (backend) => {
  beforeAll(() => rk.setBackend(backend))
  afterAll(() => rk.setBackend('auto'))
  const VALUES = PARITY.value
  const GRADS = PARITY.grad

  it('whiten and groupAdvantages of rewards far from 0 (5 ± 0.005, 1000 ± 0.01)', () => {
    for (const [centre, spread] of [[5, 0.005], [1000, 0.01]]) {
      const r = rng(7)
      const x = Float32Array.from({ length: 64 }, () => centre + spread * r.normal())
      const mean = x.reduce((a, b) => a + b, 0) / x.length
      const ss = x.reduce((a, b) => a + (b - mean) ** 2, 0)
      const whitened = Array.from(x, (v) => (v - mean) / Math.sqrt(ss / (x.length - 1) + 1e-8))
      expectClose(rk.whiten({ values: x }), whitened, VALUES, `whiten ${centre}`)
      const grpo = Array.from(x, (v) => (v - mean) / (Math.sqrt(ss / (x.length - 1)) + 1e-6))
      expectClose(rk.groupAdvantages({ scores: x, groupSize: x.length }), grpo, VALUES, `groupAdvantages ${centre}`)
    }
  })

  it('log-probs, entropy and gradients at |z|/T up to 1e4', () => {
    const V = 50
    for (const [scale, T] of [[1e4, 1], [1, 1e-4], [100, 0.01]]) {
      const r = rng(8)
      const z = r.f32(V * 2, scale)
      const targets = Int32Array.of(r.int(V), r.int(V))
      const logp: number[] = [], lse: number[] = [], entropy: number[] = []
      const rows = [0, 1].map((n) => Array.from(z.subarray(n * V, (n + 1) * V), (x) => x / T))
      for (const [n, s] of rows.entries()) {
        const m = Math.max(...s)
        const l = m + Math.log(s.reduce((a, x) => a + Math.exp(x - m), 0))
        const lp = s.map((x) => x - l)
        lse.push(l)
        logp.push(lp[targets[n]])
        entropy.push(-lp.reduce((a, x) => a + Math.exp(x) * x, 0))
      }
      const logits = rk.tensor(z, [2, V])
      const out = rk.logProbs({ logits, targets, temperature: T, entropy: true })
      expectClose(out.logp, logp, VALUES, `logp ${scale}/${T}`)
      expectClose(out.lse, lse, VALUES, `lse ${scale}/${T}`)
      expectClose(out.entropy!, entropy, VALUES, `entropy ${scale}/${T}`)
      // the gradient of logp given the lse passed in (float32, as logProbs returns it)
      const grad = rows.flatMap((s, n) => s.map((x, v) => ((v === targets[n] ? 1 : 0) - Math.exp(x - out.lse[n])) / T))
      const g = rk.logProbsBackward({ logits, targets, lse: out.lse, gradLogp: Float32Array.of(1, 1), temperature: T })
      expectClose(g.gradLogits.data, grad, GRADS, `gradLogits ${scale}/${T}`)
    }
  })
})

describe.each(HOST_BACKENDS)('gradDtype on %s', (backend) => {
  beforeAll(() => rk.setBackend(backend))
  afterAll(() => rk.setBackend('auto'))

  it("'input' gives bf16/f16 logits a gradient in their dtype, rounded once from the float32 one; float32 logits keep float32", () => {
    const r = rng(91)
    const N = 4, V = 300
    const z = r.f32(N * V, 3)
    const targets = r.ints(N, V)
    for (const dtype of ['bfloat16', 'float16'] as const) {
      const logits = rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
      const f32 = rk.crossEntropy({ logits, targets, grad: true })
      const half = rk.crossEntropy({ logits, targets, grad: true, gradDtype: 'input' })
      expect(half.gradLogits!.dtype).toBe(dtype)
      expect(half.gradLogits!.shape).toEqual([N, V])
      expect(Array.from(half.gradLogits!.data)).toEqual(Array.from(rk.encodeFloats(f32.gradLogits!.data as Float32Array, dtype)))
      expect(half.loss).toBe(f32.loss)
      const kl = rk.klDivergence({ pLogits: logits, qLogits: logits, grad: 'both', gradDtype: 'input' })
      expect([kl.gradQ!.dtype, kl.gradP!.dtype]).toEqual([dtype, dtype])
      const ppo = rk.ppoLoss({ logits, actions: targets, oldLogp: new Float32Array(N), advantages: r.f32(N), gradDtype: 'input' })
      expect(ppo.gradLogits.dtype).toBe(dtype)
    }
    const logits = rk.tensor(z, [N, V])
    const same = rk.crossEntropy({ logits, targets, grad: true, gradDtype: 'input' })
    expect(same.gradLogits!.dtype).toBe('float32')
    expect(Array.from(same.gradLogits!.data)).toEqual(Array.from(rk.crossEntropy({ logits, targets, grad: true }).gradLogits!.data))
  })

  it('an unknown gradDtype is refused', () => {
    const logits = rk.tensor(new Float32Array(6), [2, 3])
    const targets = Int32Array.of(0, 1)
    expect(() => rk.crossEntropy({ logits, targets, grad: true, gradDtype: 'bf16' as 'input' })).toThrow(RangeError)
    expect(() => rk.crossEntropy({ logits, targets, grad: true, gradDtype: 16 as unknown as 'input' })).toThrow(TypeError)
  })
})
