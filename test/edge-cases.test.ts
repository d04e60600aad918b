/** Edge cases across op families: −inf logits through the vocabulary and KL ops, NaN in masked slots, empty batches, gradDtype (DESIGN §1, §2 Errors); those of one family are in test/ops/<family>.test.ts. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { HOST_BACKENDS, on } from './backends.js'
import { F32, expectClose, rng } from './helpers.js'

const allFinite = (x: ArrayLike<number>) => Array.prototype.every.call(x, (v: number) => Number.isFinite(v))

describe.each(HOST_BACKENDS)('edge cases on %s', (backend) => {
  beforeAll(() => rk.setBackend(backend))
  afterAll(() => rk.setBackend('auto'))

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
