/**
 * Unknown options: a misspelled key is a TypeError naming the op and the nearest valid name, on every backend,
 * and (the `@ts-expect-error` lines, checked by `tsc -p tsconfig.json --noEmit` in `npm test`) a compile error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { HOST_BACKENDS } from './backends.js'

const logits = rk.tensor(new Float32Array(6), [2, 3])
const targets = Int32Array.of(0, 1)
const v = new Float32Array(4)

describe.each(HOST_BACKENDS)('unknown options on %s', (backend) => {
  beforeAll(() => rk.setBackend(backend))
  afterAll(() => rk.setBackend('auto'))

  it('a misspelled option is a TypeError naming the op and suggesting the nearest name', () => {
    const cases: [() => unknown, RegExp][] = [
      // @ts-expect-error labelSmooting is not an option
      [() => rk.crossEntropy({ logits, targets, labelSmooting: 0.1 }), /^crossEntropy: unknown option "labelSmooting" \(did you mean 'labelSmoothing'\?\)/],
      // @ts-expect-error ignore_index is not an option
      [() => rk.logProbs({ logits, targets, ignore_index: 1 }), /^logProbs: unknown option "ignore_index" \(did you mean 'ignoreIndex'\?\)/],
      // @ts-expect-error bta is not an option
      [() => rk.ppoLoss({ logits, actions: targets, oldLogp: v.subarray(0, 2), advantages: v.subarray(0, 2), bta: 0.1 }), /^ppoLoss: unknown option "bta" \(did you mean 'beta'\?\)/],
      // @ts-expect-error clip_ratio is not an option
      [() => rk.policyLoss({ logp: v, oldLogp: v, advantages: v, clip_ratio: 0.2 }), /^policyLoss: unknown option "clip_ratio"; the options are /],
      // @ts-expect-error epsilon is not an option
      [() => rk.whiten({ values: v, epsilon: 1e-5 }), /^whiten: unknown option "epsilon"/],
      // @ts-expect-error aggregate is not an option
      [() => rk.klPenalty({ logp: v, refLogp: v, aggregate: 'token-mean' }), /^klPenalty: unknown option "aggregate" \(did you mean 'aggregation'\?\)/],
      // @ts-expect-error gama is not an option
      [() => rk.gae({ rewards: v, values: v, gama: 0.9 }), /^gae: unknown option "gama" \(did you mean 'gamma'\?\)/],
    ]
    for (const [call, message] of cases) expect(call).toThrow(message)
    for (const [call] of cases) expect(call).toThrow(TypeError)
  })

  it('the async twin rejects the same way', async () => {
    // @ts-expect-error groupsize is not an option
    await expect(rk.groupAdvantagesAsync({ scores: v, groupsize: 2 })).rejects.toThrow(/groupAdvantages: unknown option "groupsize" \(did you mean 'groupSize'\?\)/)
  })

  it('every declared option is accepted, undefined ones too', () => {
    expect(() => rk.crossEntropy({
      logits, targets, ignoreIndex: -100, reduction: 'sum', labelSmoothing: 0, zLoss: 0, classWeights: undefined, tokenWeights: undefined,
      grad: false, gradDtype: 'float32',
    })).not.toThrow()
    expect(() => rk.valueLoss({ values: v, returns: v, aggregation: 'token-mean', seqLengths: undefined, normConst: 2, half: true })).not.toThrow()
  })
})

// Type-level: the result of an op on host tensors stays a host type, and excess keys on a variable are caught too.
const options = { logits, targets, grad: true }
const hostResult: rk.CrossEntropyResult = rk.crossEntropy(options)
void hostResult
const misspelled = { logits, targets, zloss: 1e-4 }
// @ts-expect-error zloss is not an option (a variable, not a literal: the generic signature still refuses it)
void (() => rk.crossEntropy(misspelled))

// Type-level: device inputs still give device results (never run: there may be no GPU).
export function deviceTyping(deviceLogits: rk.DeviceTensor) {
  const r = rk.crossEntropy({ logits: deviceLogits, targets, grad: true })
  const lse: rk.DeviceTensor = r.lse
  const device: 'cuda' = r.gradLogits!.device
  // @ts-expect-error a device result is not a host Float32Array
  const host: Float32Array = r.lse
  return [lse, device, host]
}
