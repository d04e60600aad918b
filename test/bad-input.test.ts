/**
 * Bad input: TypeError for wrong types, RangeError for shapes and values, each message naming the argument
 * with what was expected and what was given. Inputs are never modified.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { HOST_BACKENDS } from './backends.js'
import { rng } from './helpers.js'

const r = rng(21)
const N = 3, V = 5
const logits = () => rk.tensor(r.f32(N * V), [N, V])
const targets = () => Int32Array.of(0, 4, -100)
const tok = () => r.f32(6, 0.3)

type Case = [string, () => unknown, ErrorConstructor, RegExp]

/** Each case: what it does wrong, the call, the error class, what the message must say. */
export const BAD_INPUT: Case[] = [
  ['tensor: Uint16Array without dtype', () => rk.tensor(new Uint16Array(4), [4]), TypeError, /bfloat16.*float16/],
  ['tensor: wrong typed-array class for dtype', () => rk.tensor(new Float32Array(4), [4], { dtype: 'int32' }), TypeError, /Int32Array.*got Float32Array\(4\)/],
  ['tensor: a plain array', () => rk.tensor([1, 2] as never, [2]), TypeError, /typed array.*Array\(2\)/],
  ['tensor: length ≠ product(shape)', () => rk.tensor(new Float32Array(6), [2, 4]), RangeError, /data.length must be the product of shape \[2, 4\] = 8, got 6/],
  ['logits not a Tensor', () => rk.logProbs({ logits: new Float32Array(15) as never, targets: targets() }), TypeError, /logits must be a float Tensor/],
  ['logits an int32 Tensor', () => rk.crossEntropy({ logits: rk.tensor(new Int32Array(15), [3, 5]), targets: targets() }), TypeError, /logits must be a float Tensor.*int32/],
  ['logits rank 1', () => rk.crossEntropy({ logits: rk.tensor(new Float32Array(5)), targets: Int32Array.of(0) }), RangeError, /logits.shape must be rank 2/],
  ['targets as Float32Array', () => rk.crossEntropy({ logits: logits(), targets: new Float32Array(3) as never }), TypeError, /targets must be an Int32Array.*got Float32Array\(3\)/],
  ['targets of the wrong length', () => rk.crossEntropy({ logits: logits(), targets: Int32Array.of(0, 1) }), RangeError, /targets.length must be 3, got 2/],
  ['target ≥ V names its row', () => rk.crossEntropy({ logits: logits(), targets: Int32Array.of(0, 5, 1) }), RangeError, /targets\[1\] must be in \[0, 5\) or equal to ignoreIndex \(-100\), got 5/],
  ['negative target ≠ ignoreIndex', () => rk.logProbs({ logits: logits(), targets: Int32Array.of(0, 1, -1) }), RangeError, /targets\[2\].*got -1/],
  ['action out of range in ppoLoss', () => rk.ppoLoss({ logits: logits(), actions: Int32Array.of(0, 9, 0), oldLogp: new Float32Array(3), advantages: new Float32Array(3) }), RangeError, /actions\[1\] must be in \[0, 5\), got 9/],
  ['temperature 0', () => rk.logProbs({ logits: logits(), targets: targets(), temperature: 0 }), RangeError, /temperature must be a finite number ≥ 0.000001, got 0/],
  ['temperature so small that z/T overflows', () => rk.logProbs({ logits: logits(), targets: targets(), temperature: 1e-30 }), RangeError, /temperature must be a finite number ≥ 0.000001, got 1e-30/],
  ['temperature so small in klDivergence', () => rk.klDivergence({ pLogits: logits(), qLogits: logits(), temperature: 1e-7 }), RangeError, /klDivergence: temperature/],
  ['temperature so small in ppoLoss', () => rk.ppoLoss({ logits: logits(), actions: Int32Array.of(0, 0, 0), oldLogp: new Float32Array(3), advantages: new Float32Array(3), temperature: 1e-9 }), RangeError, /ppoLoss: temperature/],
  ['ignoreIndex outside int32', () => rk.crossEntropy({ logits: logits(), targets: targets(), ignoreIndex: 2 ** 31 }), RangeError, /ignoreIndex must be an integer ≥ -2147483648 ≤ 2147483647, got 2147483648/],
  ['ignoreIndex outside int32 in rewardLoss', () => rk.rewardLoss({ scores: new Float32Array(4), K: 2, chosen: Int32Array.of(0, 1), ignoreIndex: -(2 ** 40) }), RangeError, /rewardLoss: ignoreIndex/],
  ['whiten eps 0 (0/0 on equal values)', () => rk.whiten({ values: tok(), eps: 0 }), RangeError, /whiten: eps must be a finite number > 0, got 0/],
  ['groupAdvantages eps 0', () => rk.groupAdvantages({ scores: tok(), groupSize: 3, eps: 0 }), RangeError, /groupAdvantages: eps must be a finite number > 0, got 0/],
  ['an option infinite in float32', () => rk.crossEntropy({ logits: logits(), targets: targets(), zLoss: 1e39 }), RangeError, /zLoss must be a finite number ≥ 0 as a float32, got 1e\+39/],
  ['an option > 0 that is 0 in float32', () => rk.policyLoss({ logp: tok(), oldLogp: tok(), advantages: tok(), aggregation: 'seq-mean-token-sum-norm', normConst: 1e-50 }), RangeError, /normConst must be a finite number > 0 as a float32, got 1e-50/],
  ['logRatioClamp beyond exp in float32', () => rk.policyLoss({ logp: tok(), oldLogp: tok(), advantages: tok(), logRatioClamp: 100 }), RangeError, /logRatioClamp must be a finite number > 0 ≤ 80, got 100/],
  ['temperature NaN', () => rk.logProbs({ logits: logits(), targets: targets(), temperature: NaN }), RangeError, /temperature .* got NaN/],
  ['temperature a string', () => rk.logProbs({ logits: logits(), targets: targets(), temperature: '1' as never }), TypeError, /temperature must be a number/],
  ['labelSmoothing > 1', () => rk.crossEntropy({ logits: logits(), targets: targets(), labelSmoothing: 1.5 }), RangeError, /labelSmoothing must be a finite number ≥ 0 ≤ 1, got 1.5/],
  ['zLoss Infinity', () => rk.crossEntropy({ logits: logits(), targets: targets(), zLoss: Infinity }), RangeError, /zLoss .* got Infinity/],
  ['unknown reduction', () => rk.crossEntropy({ logits: logits(), targets: targets(), reduction: 'avg' as never }), RangeError, /reduction must be one of 'mean', 'sum', 'none', got "avg"/],
  ['classWeights of the wrong length', () => rk.crossEntropy({ logits: logits(), targets: targets(), classWeights: new Float32Array(4) }), RangeError, /classWeights.length must be 5, got 4/],
  ['offsets decreasing', () => rk.rewardLoss({ scores: new Float32Array(5), offsets: Int32Array.of(0, 3, 2, 5), chosen: Int32Array.of(0, 0, 0) }), RangeError, /offsets\[2\] must be non-decreasing/],
  ['offsets not ending at the score count', () => rk.rewardLoss({ scores: new Float32Array(5), offsets: Int32Array.of(0, 2, 4), chosen: Int32Array.of(0, 0) }), RangeError, /offsets\[2\] must be the score count 5, got 4/],
  ['offsets not starting at 0', () => rk.rewardLoss({ scores: new Float32Array(5), offsets: Int32Array.of(1, 5), chosen: Int32Array.of(0) }), RangeError, /offsets\[0\] must be 0, got 1/],
  ['an empty group (K_n = 0)', () => rk.rewardLoss({ scores: new Float32Array(4), offsets: Int32Array.of(0, 2, 2, 4), chosen: Int32Array.of(0, 0, 0) }), RangeError, /prompt 1 has no candidates/],
  ['chosen outside [0, K_n)', () => rk.rewardLoss({ scores: new Float32Array(5), offsets: Int32Array.of(0, 2, 5), chosen: Int32Array.of(2, 0) }), RangeError, /chosen\[0\] must be in \[0, 2\)/],
  ['soft labels not summing to 1', () => rk.rewardLoss({ scores: new Float32Array(4), K: 2, targetProbs: Float32Array.of(0.5, 0.5, 0.6, 0.5) }), RangeError, /the sum of targetProbs of prompt 1 must be 1 \(± 1e-4\), got 1.1/],
  ['soft labels negative', () => rk.rewardLoss({ scores: new Float32Array(2), K: 2, targetProbs: Float32Array.of(1.5, -0.5) }), RangeError, /targetProbs\[0\] must be in \[0, 1\]/],
  ['both chosen and targetProbs', () => rk.rewardLoss({ scores: new Float32Array(2), K: 2, chosen: Int32Array.of(0), targetProbs: Float32Array.of(1, 0) }), TypeError, /chosen must be given, or targetProbs, but not both/],
  ['K not dividing the scores', () => rk.rewardLoss({ scores: new Float32Array(5), K: 2, chosen: Int32Array.of(0, 0) }), RangeError, /scores.length must be a multiple of K = 2, got 5/],
  ['clipLow < 0', () => rk.policyLoss({ logp: tok(), oldLogp: tok(), advantages: tok(), clipLow: -0.1 }), RangeError, /clipLow must be a finite number ≥ 0, got -0.1/],
  ['clipHigh < 0', () => rk.ppoLoss({ logits: logits(), actions: Int32Array.of(0, 0, 0), oldLogp: new Float32Array(3), advantages: new Float32Array(3), clipHigh: -1 }), RangeError, /clipHigh/],
  ['dualClip ≤ 1', () => rk.policyLoss({ logp: tok(), oldLogp: tok(), advantages: tok(), dualClip: 1 }), RangeError, /dualClip must be a finite number > 1, got 1/],
  ['logp and oldLogp lengths differ', () => rk.policyLoss({ logp: tok(), oldLogp: r.f32(5), advantages: tok() }), RangeError, /oldLogp.length must be 6, got 5/],
  ['seqLengths not summing to the tokens', () => rk.policyLoss({ logp: tok(), oldLogp: tok(), advantages: tok(), seqLengths: Int32Array.of(2, 3) }), RangeError, /the sum of seqLengths must be the logp length 6, got 5/],
  ['unknown aggregation', () => rk.policyLoss({ logp: tok(), oldLogp: tok(), advantages: tok(), aggregation: 'mean' as never }), RangeError, /aggregation must be one of/],
  ['mask of the wrong class', () => rk.policyLoss({ logp: tok(), oldLogp: tok(), advantages: tok(), mask: new Int32Array(6) as never }), TypeError, /mask must be a Uint8Array/],
  ['unknown KL estimator', () => rk.klPenalty({ logp: tok(), refLogp: tok(), estimator: 'k4' as never }), RangeError, /estimator must be one of 'k1', 'abs', 'k2', 'k3', got "k4"/],
  ['KL logits of different shapes', () => rk.klDivergence({ pLogits: logits(), qLogits: rk.tensor(r.f32(12), [3, 4]) }), RangeError, /qLogits.shape must be \[3, 5\]/],
  ['value clip < 0', () => rk.valueLoss({ values: tok(), returns: tok(), oldValues: tok(), clip: -0.5 }), RangeError, /clip must be a finite number ≥ 0, got -0.5/],
  ['value clip without oldValues', () => rk.valueLoss({ values: tok(), returns: tok(), clip: 0.2 }), TypeError, /oldValues must be given when clip is set/],
  ['gamma > 1', () => rk.gae({ rewards: tok(), values: tok(), gamma: 1.01 }), RangeError, /gamma must be a finite number ≥ 0 ≤ 1, got 1.01/],
  ['lambda < 0', () => rk.gae({ rewards: tok(), values: tok(), lambda: -0.1 }), RangeError, /lambda must be a finite number ≥ 0 ≤ 1, got -0.1/],
  ['gamma NaN', () => rk.gae({ rewards: tok(), values: tok(), gamma: NaN }), RangeError, /gamma .* got NaN/],
  ['an empty group in groupAdvantages', () => rk.groupAdvantages({ scores: new Float32Array(3), offsets: Int32Array.of(0, 3, 3) }), RangeError, /group 1 has no candidates/],
  ['whiten eps negative', () => rk.whiten({ values: tok(), eps: -1 }), RangeError, /eps must be a finite number > 0, got -1/],
  ['options missing', () => rk.crossEntropy(undefined as never), TypeError, /crossEntropy: the argument must be an options object/],
]

describe.each(HOST_BACKENDS)('bad input on %s', (backend) => {
  beforeAll(() => rk.setBackend(backend))
  afterAll(() => rk.setBackend('auto'))

  it.each(BAD_INPUT)('%s', (_, call, errorClass, message) => {
    let caught: unknown
    try {
      call()
    } catch (error) {
      caught = error
    }
    expect(caught).toBeInstanceOf(errorClass)
    expect((caught as Error).message).toMatch(message)
  })

  it('the async twins reject with the same errors', async () => {
    await expect(rk.crossEntropyAsync({ logits: logits(), targets: Int32Array.of(0, 5, 1) })).rejects.toThrow(RangeError)
    await expect(rk.gaeAsync({ rewards: tok(), values: tok(), gamma: 2 })).rejects.toThrow(/gamma/)
  })
})

describe.each(HOST_BACKENDS)('inputs are never modified on %s', (backend) => {
  beforeAll(() => rk.setBackend(backend))
  afterAll(() => rk.setBackend('auto'))

  const snapshot = (xs: ArrayBufferView[]) => xs.map((x) => Buffer.from(new Uint8Array(x.buffer, x.byteOffset, x.byteLength)).toString('hex'))
  it('by any op, with gradients requested', () => {
    const z = r.f32(N * V), zr = r.f32(N * V), y = targets(), acts = Int32Array.of(1, 2, 3)
    const a = tok(), b = tok(), c = tok(), m = Uint8Array.of(1, 1, 0, 1, 1, 1), s = r.f32(6), off = Int32Array.of(0, 2, 6)
    const v3 = r.f32(3), w3 = r.f32(3), bf = rk.encodeFloats(z, 'bfloat16')
    const all = [z, zr, y, acts, a, b, c, m, s, off, v3, w3, bf]
    const before = snapshot(all)
    const L = rk.tensor(z, [N, V]), R = rk.tensor(zr, [N, V])
    rk.crossEntropy({ logits: L, targets: y, grad: true, labelSmoothing: 0.1 })
    rk.crossEntropy({ logits: rk.tensor(bf, [N, V], { dtype: 'bfloat16' }), targets: y, grad: true })
    const lp = rk.logProbs({ logits: L, targets: y, entropy: true, temperature: 0.7 })
    rk.logProbsBackward({ logits: L, targets: y, lse: lp.lse, gradLogp: v3, gradEntropy: w3, temperature: 0.7 })
    rk.klDivergence({ pLogits: L, qLogits: R, grad: 'both' })
    rk.rewardLoss({ scores: s, offsets: off, chosen: Int32Array.of(0, 3) })
    rk.policyLoss({ logp: a, oldLogp: b, advantages: c, mask: m })
    rk.klPenalty({ logp: a, refLogp: b, mask: m })
    rk.valueLoss({ values: a, returns: b, oldValues: c, clip: 0.1, mask: m })
    rk.gae({ rewards: a, values: b, mask: m })
    rk.whiten({ values: a, mask: m })
    rk.groupAdvantages({ scores: s, offsets: off })
    rk.ppoLoss({ logits: L, actions: acts, oldLogits: R, advantages: v3, values: w3, returns: v3, beta: 0.1 })
    expect(snapshot(all)).toEqual(before)
  })
})
