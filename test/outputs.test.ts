/**
 * Caller-provided outputs (`out`, src/outputs.ts; native/addon/args.h `Outputs`): on every host backend, each
 * op's array results written into the caller's arrays equal, bit for bit, the results the op allocates; the
 * result holds the caller's arrays; bad `out` arrays are refused with a precise TypeError or RangeError,
 * by the TypeScript layer and by the addon itself. Hostile cases (buffers detached or resized while an async
 * call runs) are in test/hostile/out-cases.ts.
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { encodeFloats } from '../src/dtypes.js'
import { validatorOf } from '../src/ops.js'
import { nativeArgs } from '../src/native.js'
import { jsKernels } from '../src/reference/index.js'
import { HOST_BACKENDS, on } from './backends.js'

const N = 5, V = 7, M = 12
const values = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 3.7 + i * 1.9) * 1.5)
const logits = (seed = 1) => rk.tensor(values(N * V, seed), [N, V])
const targets = () => Int32Array.of(0, 6, -100, 3, 1)
const bf16 = (seed: number) => rk.tensor(encodeFloats(values(N * V, seed), 'bfloat16'), [N, V], { dtype: 'bfloat16' })

type Call = (options: any) => any
interface OutCase {
  op: string
  sync: Call
  async: Call
  options: () => Record<string, unknown>
  /** the array outputs this call returns, with their lengths and classes */
  outputs: Record<string, [number, 'f32' | 'u16']>
}

const tokens = { seqLengths: Int32Array.of(5, 7), mask: Uint8Array.from({ length: M }, (_, i) => (i % 5 === 2 ? 0 : 1)) }
const CASES: OutCase[] = [
  { op: 'logProbs', sync: rk.logProbs, async: rk.logProbsAsync, options: () => ({ logits: logits(), targets: targets(), entropy: true, temperature: 0.8 }), outputs: { logp: [N, 'f32'], lse: [N, 'f32'], entropy: [N, 'f32'] } },
  { op: 'logProbs', sync: rk.logProbs, async: rk.logProbsAsync, options: () => ({ logits: logits(), targets: targets(), sumProbSq: true, maxProb: true, temperature: Float32Array.of(0.7, 1, 1.3, 0.9, 1.1) }), outputs: { logp: [N, 'f32'], lse: [N, 'f32'], sumProbSq: [N, 'f32'], maxProb: [N, 'f32'] } },
  { op: 'keptLogProbs', sync: rk.keptLogProbs, async: rk.keptLogProbsAsync, options: () => ({ logits: logits(), targets: targets(), topK: 4, gradLogp: values(N, 2) }), outputs: { logp: [N, 'f32'], lse: [N, 'f32'], gradLogits: [N * V, 'f32'] } },
  { op: 'sequenceLogProbs', sync: rk.sequenceLogProbs, async: rk.sequenceLogProbsAsync, options: () => ({ logp: values(M, 1), seqLengths: Int32Array.of(5, 0, 7), reduction: 'mean', gradSeq: values(3, 2) }), outputs: { seqLogp: [3, 'f32'], lengths: [3, 'f32'], gradLogp: [M, 'f32'] } },
  { op: 'preferenceLoss', sync: rk.preferenceLoss, async: rk.preferenceLossAsync, options: () => ({ logp: values(9, 1), refLogp: values(9, 2), offsets: Int32Array.of(0, 2, 6, 9), ranking: Int32Array.of(1, 0, 3, 0, 2, 1, 2, 0, 1), type: 'plackett-luce', reduction: 'none', refGrad: true }), outputs: { rewards: [9, 'f32'], gradLogp: [9, 'f32'], gradRefLogp: [9, 'f32'], losses: [3, 'f32'] } },
  { op: 'logProbsBackward', sync: rk.logProbsBackward, async: rk.logProbsBackwardAsync, options: () => ({ logits: logits(), targets: targets(), lse: rk.logProbs({ logits: logits(), targets: targets() }).lse, gradLogp: values(N, 2) }), outputs: { gradLogits: [N * V, 'f32'] } },
  { op: 'crossEntropy', sync: rk.crossEntropy, async: rk.crossEntropyAsync, options: () => ({ logits: logits(), targets: targets(), grad: true, reduction: 'none', labelSmoothing: 0.1 }), outputs: { losses: [N, 'f32'], lse: [N, 'f32'], gradLogits: [N * V, 'f32'] } },
  { op: 'crossEntropy', sync: rk.crossEntropy, async: rk.crossEntropyAsync, options: () => ({ logits: bf16(1), targets: targets(), grad: true, gradDtype: 'input' }), outputs: { lse: [N, 'f32'], gradLogits: [N * V, 'u16'] } },
  { op: 'rewardLoss', sync: rk.rewardLoss, async: rk.rewardLossAsync, options: () => ({ scores: values(9, 3), offsets: Int32Array.of(0, 2, 6, 9), chosen: Int32Array.of(1, 0, 2), reduction: 'none' }), outputs: { probs: [9, 'f32'], gradScores: [9, 'f32'], losses: [3, 'f32'] } },
  { op: 'policyLoss', sync: rk.policyLoss, async: rk.policyLossAsync, options: () => ({ logp: values(M, 1), oldLogp: values(M, 2), advantages: values(M, 3), ...tokens }), outputs: { perToken: [M, 'f32'], gradLogp: [M, 'f32'] } },
  { op: 'klDivergence', sync: rk.klDivergence, async: rk.klDivergenceAsync, options: () => ({ pLogits: logits(1), qLogits: logits(2), grad: 'both' }), outputs: { perRow: [N, 'f32'], gradQ: [N * V, 'f32'], gradP: [N * V, 'f32'] } },
  { op: 'klDivergence', sync: rk.klDivergence, async: rk.klDivergenceAsync, options: () => ({ pLogits: bf16(1), qLogits: bf16(2), grad: 'q', gradDtype: 'input' }), outputs: { perRow: [N, 'f32'], gradQ: [N * V, 'u16'] } },
  { op: 'klPenalty', sync: rk.klPenalty, async: rk.klPenaltyAsync, options: () => ({ logp: values(M, 1), refLogp: values(M, 2), estimator: 'k3', ...tokens }), outputs: { perToken: [M, 'f32'], gradLogp: [M, 'f32'] } },
  { op: 'valueLoss', sync: rk.valueLoss, async: rk.valueLossAsync, options: () => ({ values: values(M, 1), returns: values(M, 2), oldValues: values(M, 3), clip: 0.2, ...tokens }), outputs: { perToken: [M, 'f32'], gradValues: [M, 'f32'] } },
  { op: 'gae', sync: rk.gae, async: rk.gaeAsync, options: () => ({ rewards: values(M, 1), values: values(M, 2), ...tokens }), outputs: { advantages: [M, 'f32'], returns: [M, 'f32'] } },
  { op: 'whiten', sync: rk.whiten, async: rk.whitenAsync, options: () => ({ values: values(M, 4), mask: tokens.mask }), outputs: { out: [M, 'f32'] } },
  { op: 'groupAdvantages', sync: rk.groupAdvantages, async: rk.groupAdvantagesAsync, options: () => ({ scores: values(M, 5), groupSize: 4 }), outputs: { out: [M, 'f32'] } },
  { op: 'ppoLoss', sync: rk.ppoLoss, async: rk.ppoLossAsync, options: () => ({ logits: logits(), actions: Int32Array.of(0, 6, 2, 3, 1), oldLogits: logits(3), advantages: values(N, 2), values: values(N, 3), returns: values(N, 4), beta: 0.05 }), outputs: { logp: [N, 'f32'], gradLogits: [N * V, 'f32'], gradValues: [N, 'f32'] } },
  { op: 'ppoLoss', sync: rk.ppoLoss, async: rk.ppoLossAsync, options: () => ({ logits: bf16(1), actions: Int32Array.of(0, 6, 2, 3, 1), oldLogp: values(N, 1), advantages: values(N, 2), gradDtype: 'input' }), outputs: { logp: [N, 'f32'], gradLogits: [N * V, 'u16'] } },
]

/** Output arrays filled with NaN (a kernel that writes nothing leaves them so), by name. */
function outArrays(c: OutCase): Record<string, Float32Array | Uint16Array> {
  return Object.fromEntries(Object.entries(c.outputs).map(([k, [n, cls]]) => [k, cls === 'f32' ? new Float32Array(n).fill(NaN) : new Uint16Array(n).fill(0x7fc1)]))
}
const outOption = (c: OutCase, arrays: Record<string, Float32Array | Uint16Array>) => (Object.hasOwn(arrays, 'out') ? arrays.out : arrays)
const dataOf = (x: unknown) => (x instanceof rk.Tensor ? x.data : x)
const resultArray = (c: OutCase, result: any, name: string) => dataOf(name === 'out' && c.outputs.out ? result : result[name])

/** Typed arrays, numbers and nested objects equal bit for bit (NaNs by Object.is). */
function expectSame(actual: unknown, expected: unknown, path: string) {
  if (expected instanceof rk.Tensor) {
    expect(actual, path).toBeInstanceOf(rk.Tensor)
    expect((actual as rk.Tensor).shape, `${path}.shape`).toEqual(expected.shape)
    expect((actual as rk.Tensor).dtype, `${path}.dtype`).toBe(expected.dtype)
    return expectSame((actual as rk.Tensor).data, expected.data, `${path}.data`)
  }
  if (ArrayBuffer.isView(expected)) {
    expect(Array.from(actual as Float32Array), path).toEqual(Array.from(expected as Float32Array))
    return
  }
  if (expected !== null && typeof expected === 'object') {
    expect(Object.keys(actual as object).sort(), path).toEqual(Object.keys(expected).sort())
    for (const k of Object.keys(expected)) expectSame((actual as any)[k], (expected as any)[k], `${path}.${k}`)
    return
  }
  expect(Object.is(actual, expected), `${path}: ${String(actual)} vs ${String(expected)}`).toBe(true)
}

describe('caller-provided outputs', () => {
  it('every op has a case here', () => {
    expect([...new Set(CASES.map((c) => c.op))].sort()).toEqual(Object.keys(jsKernels).sort())
  })

  for (const backend of HOST_BACKENDS) {
    describe(backend, () => {
      for (const c of CASES) {
        const label = `${c.op} (${Object.entries(c.outputs).map(([k, [, t]]) => `${k}${t === 'u16' ? ':u16' : ''}`).join(', ')})`
        it(`${label}: sync and async write the caller's arrays, the same bits as allocated outputs`, async () => {
          const expected = on(backend, () => c.sync(c.options()))
          for (const mode of ['sync', 'async'] as const) {
            const arrays = outArrays(c)
            rk.setBackend(backend)
            let result: any
            try {
              result = mode === 'sync' ? c.sync({ ...c.options(), out: outOption(c, arrays) }) : await c.async({ ...c.options(), out: outOption(c, arrays) })
            } finally {
              rk.setBackend('auto')
            }
            expectSame(result, expected, `${mode} result`)
            for (const [name, array] of Object.entries(arrays)) {
              expect(resultArray(c, result, name), `${mode} ${name} is the caller's array`).toBe(array)
              expectSame(array, resultArray(c, expected, name), `${mode} out.${name}`)
            }
          }
        })
        it(`${label}: one output given, the others allocated`, () => {
          const [name, [n, cls]] = Object.entries(c.outputs).at(-1)!
          const array = cls === 'f32' ? new Float32Array(n).fill(NaN) : new Uint16Array(n)
          const result = on(backend, () => c.sync({ ...c.options(), out: name === 'out' ? array : { [name]: array } }))
          expect(resultArray(c, result, name)).toBe(array)
          expectSame(result, on(backend, () => c.sync(c.options())), 'result')
        })
      }

      const policy = CASES.find((c) => c.op === 'policyLoss')!
      const call = (out: unknown, options = policy.options()) => on(backend, () => rk.policyLoss({ ...options, out } as never))
      it('refuses a bad out with a TypeError or RangeError naming the output', () => {
        expect(() => call(new Float32Array(M))).toThrow(new TypeError('policyLoss: out must be output arrays by result name (e.g. { gradLogits: Float32Array }), got Float32Array(12)'))
        expect(() => call({ gradLogP: new Float32Array(M) })).toThrow(/^policyLoss: out has no output "gradLogP" \(did you mean 'gradLogp'\?\); the outputs are perToken, gradLogp$/)
        expect(() => call({ perToken: new Float64Array(M) })).toThrow(new TypeError('policyLoss: out.perToken must be a Float32Array, got Float64Array(12)'))
        expect(() => call({ perToken: new Proxy(new Float32Array(M), {}) })).toThrow(new TypeError('policyLoss: out.perToken must be a Float32Array, got Proxy'))
        expect(() => call({ perToken: new Float32Array(M - 1) })).toThrow(new RangeError('policyLoss: out.perToken.length must be 12, got 11'))
        expect(() => on(backend, () => rk.whiten({ values: values(M, 1), out: new Float32Array(3) }))).toThrow(new RangeError('whiten: out.length must be 12, got 3'))
        expect(() => on(backend, () => rk.crossEntropy({ logits: logits(), targets: targets(), out: { gradLogits: new Float32Array(N * V) } }))).toThrow(new TypeError('crossEntropy: out.gradLogits must be absent: this call returns no gradLogits, got Float32Array(35)'))
        expect(() => on(backend, () => rk.crossEntropy({ logits: logits(), targets: targets(), out: { losses: new Float32Array(N) } }))).toThrow(/out.losses must be absent/)
        expect(() => on(backend, () => rk.crossEntropy({ logits: bf16(1), targets: targets(), grad: true, gradDtype: 'input', out: { gradLogits: new Float32Array(N * V) } }))).toThrow(/out.gradLogits must be a Uint16Array \(the bfloat16 bit patterns of gradDtype 'input'\), got Float32Array\(35\)/)
      })
      it('refuses an out sharing memory with an input or another output, and writes nothing', () => {
        const o = policy.options() as { logp: Float32Array; advantages: Float32Array }
        const before = Float32Array.from(o.logp)
        expect(() => call({ gradLogp: o.logp }, o)).toThrow(new RangeError('policyLoss: out.gradLogp must be memory apart from every input, got an array sharing memory with logp'))
        expect(Array.from(o.logp)).toEqual(Array.from(before))
        const buffer = new Float32Array(3 * M)
        const shifted = { ...o, advantages: new Float32Array(buffer.buffer, 0, M) }
        shifted.advantages.set(o.advantages)
        expect(() => call({ perToken: new Float32Array(buffer.buffer, 4 * (M - 1), M) }, shifted)).toThrow(/out.perToken must be memory apart from every input, got an array sharing memory with advantages/)
        expect(() => call({ perToken: new Float32Array(buffer.buffer, 4 * M, M), gradLogp: new Float32Array(buffer.buffer, 4 * (M + 5), M) })).toThrow(new RangeError('policyLoss: out.gradLogp must be memory apart from every other output, got an array sharing memory with out.perToken'))
        // mask and offsets are inputs too
        const masked = { ...o, mask: new Uint8Array(new ArrayBuffer(4 * M), 3 * M, M).fill(1) }
        expect(() => call({ perToken: new Float32Array(masked.mask.buffer) }, masked)).toThrow(/sharing memory with mask/)
        // neighbours in one buffer are fine
        const r = call({ perToken: new Float32Array(buffer.buffer, 4 * M, M), gradLogp: new Float32Array(buffer.buffer, 8 * M, M) }, shifted) as rk.PolicyLossResult
        expectSame(r, call(undefined), 'adjacent outputs')
      })
      it('null or undefined outputs are not given', () => {
        const arrays = { perToken: new Float32Array(M), gradLogp: undefined }
        const r = call(arrays) as rk.PolicyLossResult
        expect(r.perToken).toBe(arrays.perToken)
        expect(r.gradLogp).toBeInstanceOf(Float32Array)
        expectSame(call(null), call(undefined), 'out: null')
      })
      it('an async call rejects a bad out (it does not throw)', async () => {
        await expect(on(backend, () => rk.policyLossAsync({ ...policy.options(), out: { perToken: new Float32Array(1) } } as never))).rejects.toThrow(RangeError)
      })
    })
  }
})

const addonPath = new URL('../build/Release/rlhf_kernels.node', import.meta.url).pathname
const addon = existsSync(addonPath) ? (createRequire(import.meta.url)(addonPath) as Record<string, (a: object) => any>) : null

describe.skipIf(addon === null)('caller-provided outputs, the raw addon (its own checks)', () => {
  const args = () => nativeArgs(validatorOf('policyLoss')!(CASES.find((c) => c.op === 'policyLoss')!.options())) as { logp: { data: Float32Array } } & object
  it('writes the given arrays and returns them', async () => {
    const expected = addon!.policyLoss(args())
    for (const fn of [addon!.policyLoss, addon!.policyLossAsync]) {
      const out = { perToken: new Float32Array(M).fill(NaN), gradLogp: new Float32Array(M).fill(NaN) }
      const r = await fn({ ...args(), out })
      expect(r.perToken).toBe(out.perToken)
      expect(r.gradLogp).toBe(out.gradLogp)
      expect(Array.from(out.gradLogp)).toEqual(Array.from(expected.gradLogp))
      expect(Array.from(out.perToken)).toEqual(Array.from(expected.perToken))
    }
  })
  it('refuses what the TypeScript layer refuses', () => {
    const a = args()
    expect(() => addon!.policyLoss({ ...a, out: new Float32Array(M) })).toThrow(new TypeError('policyLoss: out must be an object of output arrays'))
    expect(() => addon!.policyLoss({ ...a, out: { perToken: new Float64Array(M) } })).toThrow(new TypeError('policyLoss: out.perToken must be a Float32Array'))
    expect(() => addon!.policyLoss({ ...a, out: { perToken: new Float32Array(5) } })).toThrow(new RangeError('policyLoss: out.perToken must have 12 elements, got 5'))
    expect(() => addon!.policyLoss({ ...a, out: { probs: new Float32Array(M) } })).toThrow(new TypeError('policyLoss: out.probs must be absent: this call makes no probs'))
    expect(() => addon!.policyLoss({ ...a, out: { gradLogp: a.logp.data } })).toThrow(new RangeError('policyLoss: out.gradLogp must not share memory with the input logp'))
    const shared = new Float32Array(2 * M)
    expect(() => addon!.policyLoss({ ...a, out: { perToken: shared.subarray(0, M), gradLogp: shared.subarray(M - 1, 2 * M - 1) } })).toThrow(new RangeError('policyLoss: out.gradLogp must not share memory with out.perToken'))
    expect(() => addon!.crossEntropy({ ...(nativeArgs(validatorOf('crossEntropy')!({ logits: logits(), targets: targets(), grad: true }))), out: { gradLogits: new Uint16Array(N * V) } })).toThrow(new TypeError('crossEntropy: out.gradLogits must be a Float32Array'))
  })
})
