/**
 * Parity: every op, option and dtype on each native backend against the js reference, on fresh random
 * inputs each run (the seed is printed in the test name, so a failure can be replayed with PARITY_SEED).
 * Shapes include one row, an odd V, a V that is not a multiple of 8 or 16 (the vector lanes), V = 2048 and
 * 32000 (the single-pass CUDA kernels in one CTA and in a cluster), and V = 128256.
 * Backend-agnostic: on cuda the same host inputs are uploaded for each call (test/cuda.test.ts checks that
 * device-tensor inputs give bitwise the same results), and every result is read back to the host.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { NATIVE_BACKENDS, on } from './backends.js'
import { parityError } from './compare.js'
import { type Tolerance, rng } from './helpers.js'
import { halfGradTolerance, klGradPTolerance } from '../src/tolerance.js'

// the cuda backend starts every output as NaN here, so an element a kernel fails to write cannot pass
process.env.RLHF_KERNELS_POISON ??= '1'

const SEED = Number(process.env.PARITY_SEED ?? Date.now() % 1_000_000)


type Dtype = 'float32' | 'bfloat16' | 'float16'
const DTYPES: Dtype[] = ['float32', 'bfloat16', 'float16']
// 2048 and 32000: one CTA and a two-CTA cluster of the single-pass CUDA kernels; the others unaligned or large
const SHAPES: [number, number][] = [[1, 37], [5, 1001], [3, 4099], [6, 2048], [4, 32000], [2, 128256]]

function expectParity(actual: unknown, expected: unknown, what: string, overrides: Record<string, Tolerance> = {}) {
  const error = parityError(actual, expected, overrides)
  if (error !== null) expect.fail(`${what}: ${error}`)
}

/** The op on `backend` vs on js, with the same arguments. */
function compare<O, R>(backend: rk.BackendName, op: (o: O) => R, options: O, what: string, overrides?: (expected: R) => Record<string, Tolerance>) {
  const expected = on('js', () => op(options))
  const actual = on(backend, () => op(options))
  expectParity(actual, expected, what, overrides?.(expected))
}

const klGradP = (r: rk.KlDivergenceResult) => ({ gradP: klGradPTolerance(r.perRow) })
const halfGrad = (dtype: Dtype, ...paths: string[]) => () => Object.fromEntries(paths.map((p) => [p, halfGradTolerance(dtype)]))

function logitsOf(r: ReturnType<typeof rng>, N: number, V: number, dtype: Dtype, scale = 3, withNegInf = false) {
  const z = r.f32(N * V, scale)
  if (withNegInf) for (let i = 0; i < z.length; i += 7) z[i] = -Infinity
  return dtype === 'float32' ? rk.tensor(z, [N, V]) : rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
}

// the cpu row kernels' build in the title: test/isa.test.ts runs this suite on the narrower ones
const ISA = rk.nativeStatus.info?.isa ?? 'no addon'

describe.each(NATIVE_BACKENDS)(`parity with the js reference on %s (seed ${SEED}, cpu row kernels ${ISA})`, (backend) => {
  const cases = DTYPES.flatMap((dtype) => SHAPES.map(([N, V]) => [dtype, N, V] as const))

  it.each(cases)('logProbs + logProbsBackward, %s [%i, %i]', (dtype, N, V) => {
    const r = rng(SEED + V)
    for (const temperature of [1, 0.7]) {
      for (const negInf of [false, true]) {
        const logits = logitsOf(r, N, V, dtype, 3, negInf)
        const targets = r.ints(N, V)
        if (N > 2) targets[1] = -100
        const what = `T=${temperature} −inf=${negInf}`
        compare(backend, rk.logProbs, { logits, targets, temperature, entropy: true }, `logProbs ${what}`)
        const fwd = on('js', () => rk.logProbs({ logits, targets, temperature, entropy: true }))
        compare(backend, rk.logProbsBackward, {
          logits, targets, temperature, lse: fwd.lse, gradLogp: r.f32(N), gradEntropy: r.f32(N),
        }, `logProbsBackward ${what}`)
      }
    }
  })

  it.each(cases)('crossEntropy, %s [%i, %i]', (dtype, N, V) => {
    const r = rng(SEED + 1 + V)
    const logits = logitsOf(r, N, V, dtype)
    const targets = r.ints(N, V)
    if (N > 2) targets[0] = -100
    const variants = [
      {}, { reduction: 'sum' as const }, { reduction: 'none' as const }, { labelSmoothing: 0.1 }, { zLoss: 1e-3 },
      { classWeights: Float32Array.from({ length: V }, () => 0.5 + r.uniform()), labelSmoothing: 0.05 },
      { tokenWeights: Float32Array.from({ length: N }, () => r.uniform()), reduction: 'sum' as const },
    ]
    for (const v of variants) compare(backend, rk.crossEntropy, { logits, targets, grad: true, ...v }, `crossEntropy ${JSON.stringify(Object.keys(v))}`)
    if (dtype !== 'float32') {
      compare(backend, rk.crossEntropy, { logits, targets, grad: true, gradDtype: 'input' as const }, 'crossEntropy gradDtype input', halfGrad(dtype, 'gradLogits'))
    }
  })

  it.each(cases)('klDivergence, %s [%i, %i]', (dtype, N, V) => {
    const r = rng(SEED + 2 + V)
    const pLogits = logitsOf(r, N, V, dtype)
    const mask = N > 2 ? Uint8Array.from({ length: N }, (_, i) => (i === 1 ? 0 : 1)) : undefined
    // q independent of p (KL ≈ 9 nats), and q a small step from p (KL ≈ 0.05, as between PPO iterations)
    const near = pLogits.toFloat32Array().map((x) => x + r.normal() * 0.3)
    const qNear = dtype === 'float32' ? rk.tensor(near, [N, V]) : rk.tensor(rk.encodeFloats(near, dtype), [N, V], { dtype })
    for (const [label, qLogits] of [['independent', logitsOf(r, N, V, dtype)], ['near', qNear]] as const) {
      for (const reduction of ['mean', 'sum', 'none'] as const) {
        for (const temperature of [1, 1.3]) {
          compare(backend, rk.klDivergence, { pLogits, qLogits, mask, reduction, temperature, grad: 'both' as const },
            `klDivergence ${label} ${reduction} T=${temperature}`, klGradP)
          if (dtype !== 'float32' && reduction === 'mean') {
            for (const grad of ['q', 'both'] as const) {
              compare(backend, rk.klDivergence, { pLogits, qLogits, mask, reduction, temperature, grad, gradDtype: 'input' as const },
                `klDivergence ${label} grad ${grad} gradDtype input`, (e) => ({ ...klGradP(e), ...halfGrad(dtype, 'gradQ', 'gradP')() }))
            }
          }
        }
      }
    }
  })

  it.each(cases)('ppoLoss, %s [%i, %i]', (dtype, N, V) => {
    const r = rng(SEED + 3 + V)
    const logits = logitsOf(r, N, V, dtype, 2)
    const refLogits = logitsOf(r, N, V, dtype, 2)
    const actions = r.ints(N, V)
    const oldLogp = Float32Array.from(on('js', () => rk.logProbs({ logits, targets: actions }).logp), (x) => x + r.normal() * 0.2)
    const base = {
      logits, actions, oldLogp, refLogits, advantages: r.f32(N), values: r.f32(N), returns: r.f32(N), oldValues: r.f32(N),
      mask: N > 2 ? Uint8Array.from({ length: N }, (_, i) => (i === 2 ? 0 : 1)) : undefined, beta: 0.1, c1: 0.5,
    }
    const variants = [
      {}, { klEstimator: 'k3' as const, temperature: 0.8 }, { klEstimator: 'k1' as const, dualClip: 2, valueClip: 0.2 },
      { aggregation: 'seq-mean-token-sum' as const, half: true, clipHigh: 0.28 },
    ]
    for (const v of variants) compare(backend, rk.ppoLoss, { ...base, ...v }, `ppoLoss ${JSON.stringify(v)}`)
    if (dtype !== 'float32') {
      const { refLogits: _, ...sampled } = base
      compare(backend, rk.ppoLoss, { ...sampled, klEstimator: 'k3' as const, gradDtype: 'input' as const }, 'ppoLoss gradDtype input', halfGrad(dtype, 'gradLogits'))
      compare(backend, rk.ppoLoss, { ...base, gradDtype: 'input' as const }, 'ppoLoss full KL gradDtype input', halfGrad(dtype, 'gradLogits'))
    }
  })

  it('rewardLoss: hard and soft labels, margins, centering, reductions', () => {
    const r = rng(SEED + 4)
    const sizes = [3, 1, 5, 2, 4, 2, 7]
    const offsets = Int32Array.from([0, ...sizes.map((_, i) => sizes.slice(0, i + 1).reduce((a, b) => a + b, 0))])
    const total = offsets[sizes.length]
    const scores = r.f32(total, 2)
    const chosen = Int32Array.from(sizes, (k) => r.int(k))
    chosen[4] = -100
    const targetProbs = new Float32Array(total)
    for (let n = 0; n < sizes.length; n++) {
      let s = 0
      for (let i = offsets[n]; i < offsets[n + 1]; i++) s += (targetProbs[i] = r.uniform())
      for (let i = offsets[n]; i < offsets[n + 1]; i++) targetProbs[i] /= s
    }
    for (const label of [{ chosen }, { targetProbs }]) {
      for (const extra of [{}, { margins: r.f32(total, 0.5) }, { centerCoef: 0.01, reduction: 'sum' as const }, { reduction: 'none' as const }]) {
        compare(backend, rk.rewardLoss, { scores, offsets, ...label, ...extra }, `rewardLoss ${Object.keys(label)} ${Object.keys(extra)}`)
      }
    }
    compare(backend, rk.rewardLoss, { scores: rk.tensor(rk.encodeFloats(scores, 'bfloat16'), [total], { dtype: 'bfloat16' }), offsets, chosen }, 'rewardLoss bf16')
  })

  it('policyLoss, klPenalty, valueLoss: every aggregation, mask, packed sequences, bf16 inputs', () => {
    const r = rng(SEED + 5)
    const B = 4, T = 33, M = B * T
    const mask = r.mask(M)
    mask.fill(0, T, 2 * T) // a fully masked sequence
    const logp = r.f32(M, 0.5), oldLogp = Float32Array.from(logp, (x) => x + r.normal() * 0.3), adv = r.f32(M)
    for (const aggregation of rk.AGGREGATIONS) {
      for (const layout of [{ logp: rk.tensor(logp, [B, T]) }, { logp, seqLengths: Int32Array.of(10, 50, 40, 32) }]) {
        const common = { mask, aggregation, seqLengths: 'seqLengths' in layout ? layout.seqLengths : undefined }
        compare(backend, rk.policyLoss, { ...layout, oldLogp, advantages: adv, ...common }, `policyLoss ${aggregation}`)
        compare(backend, rk.policyLoss, { ...layout, oldLogp, advantages: adv, dualClip: 3, clipHigh: 0.28, ...common }, `policyLoss dual ${aggregation}`)
        for (const estimator of rk.KL_ESTIMATORS) {
          compare(backend, rk.klPenalty, { logp: layout.logp, refLogp: oldLogp, estimator, ...common }, `klPenalty ${estimator} ${aggregation}`)
        }
        compare(backend, rk.klPenalty, { logp: layout.logp, refLogp: oldLogp, outputClamp: 0.05, ...common }, 'klPenalty clamp')
        for (const clip of [null, 0.2]) {
          for (const half of [false, true]) {
            compare(backend, rk.valueLoss, { values: layout.logp, returns: adv, oldValues: oldLogp, clip, half, ...common }, `valueLoss clip=${clip} half=${half}`)
          }
        }
      }
    }
    compare(backend, rk.policyLoss, { logp, oldLogp, advantages: adv, mask, globalTokenCount: 1000 }, 'policyLoss global count')
    const bf = (x: Float32Array) => rk.tensor(rk.encodeFloats(x, 'bfloat16'), [B, T], { dtype: 'bfloat16' })
    compare(backend, rk.policyLoss, { logp: bf(logp), oldLogp: bf(oldLogp), advantages: bf(adv), mask }, 'policyLoss bf16')
  })

  it('gae, whiten, groupAdvantages', () => {
    const r = rng(SEED + 6)
    const B = 5, T = 41, M = B * T
    const mask = r.mask(M, 0.8)
    const rewards = rk.tensor(r.f32(M), [B, T]), values = r.f32(M)
    for (const [gamma, lambda] of [[1, 0.95], [0.99, 1], [0.9, 0]]) {
      compare(backend, rk.gae, { rewards, values, mask, gamma, lambda, lastValues: r.f32(B) }, `gae γ=${gamma} λ=${lambda}`)
    }
    for (const shiftMean of [true, false]) {
      for (const unbiased of [true, false]) compare(backend, rk.whiten, { values, mask, shiftMean, unbiased }, `whiten ${shiftMean} ${unbiased}`)
    }
    const offsets = Int32Array.of(0, 4, 5, 12, 20, 28)
    for (const method of rk.GROUP_METHODS) {
      compare(backend, rk.groupAdvantages, { scores: r.f32(28), offsets, method }, `groupAdvantages ${method}`)
    }
  })
})

describe.skipIf(NATIVE_BACKENDS.length > 0)('parity', () => {
  it('has no native backend to compare here', () => {
    console.log(`parity suite skipped: ${rk.backends().filter((b) => b.name !== 'js').map((b) => `${b.name}: ${b.reason}`).join('; ')}`)
  })
})
