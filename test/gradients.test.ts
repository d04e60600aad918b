/**
 * Analytic gradients of every differentiable op, for every option combination, against central finite
 * differences of the float64 reference (relative error ≤ 1e-6).
 */
import { describe, it } from 'vitest'
import { aggregationOptions } from '../src/aggregate.js'
import { type AggregationMode, AGGREGATIONS, type KlEstimator } from '../src/choices.js'
import { tokenLayout } from '../src/tokens.js'
import { klDivergenceKernel, klPenaltyKernel } from '../src/reference/kl.js'
import { policyLossKernel } from '../src/reference/policy.js'
import { ppoLossKernel } from '../src/reference/ppo.js'
import { rewardLossKernel } from '../src/reference/reward.js'
import { valueLossKernel } from '../src/reference/value.js'
import { crossEntropyKernel, logProbsBackwardKernel, logProbsKernel } from '../src/reference/vocab.js'
import { expectGradient, numericGradient, rng } from './helpers.js'

const f64 = (n: number) => new Float64Array(n)
const combos = <T extends Record<string, readonly unknown[]>>(axes: T): { [K in keyof T]: T[K][number] }[] =>
  Object.entries(axes).reduce<Record<string, unknown>[]>(
    (acc, [k, vs]) => acc.flatMap((c) => vs.map((v) => ({ ...c, [k]: v }))), [{}],
  ) as never
const label = (c: object) => Object.entries(c).map(([k, v]) => `${k}=${v}`).join(' ')

describe('finite-difference gradients (float64 reference)', () => {
  it.each(combos({ temperature: [1, 0.7], entropy: [false, true], ignored: [false, true] }).map((c) => [label(c), c] as const))(
    'logProbsBackward %s', (_, c) => {
      const r = rng(1)
      const N = 4, V = 7
      const z = r.f64(N * V, 2)
      const targets = r.ints(N, V)
      if (c.ignored) targets[2] = -100
      const gl = r.f64(N), gh = c.entropy ? r.f64(N) : null
      const o = { temperature: c.temperature, ignoreIndex: -100 }
      const f = () => {
        const logp = f64(N), lse = f64(N), H = f64(N)
        logProbsKernel(z, N, V, targets, o, logp, lse, H)
        let s = 0
        for (let n = 0; n < N; n++) s += gl[n] * logp[n] + (gh ? gh[n] * H[n] : 0)
        return s
      }
      const lse = f64(N), logp = f64(N)
      logProbsKernel(z, N, V, targets, o, logp, lse, null)
      const grad = f64(N * V)
      logProbsBackwardKernel(z, N, V, targets, lse, gl, gh, null, o, grad)
      expectGradient(grad, numericGradient(f, z), 'dlogits')
    })

  it.each(combos({
    reduction: ['mean', 'sum', 'none'] as const, labelSmoothing: [0, 0.1], zLoss: [0, 0.01], classWeights: [false, true], tokenWeights: [false, true],
  }).map((c) => [label(c), c] as const))('crossEntropy %s', (_, c) => {
    const r = rng(2)
    const N = 5, V = 6
    const z = r.f64(N * V, 2)
    const targets = r.ints(N, V)
    targets[1] = -100
    const o = {
      ignoreIndex: -100, reduction: c.reduction, labelSmoothing: c.labelSmoothing, zLoss: c.zLoss,
      classWeights: c.classWeights ? Float64Array.from({ length: V }, () => 0.5 + r.uniform()) : null,
      tokenWeights: c.tokenWeights ? Float64Array.from({ length: N }, () => 0.5 + r.uniform()) : null,
    }
    const f = () => crossEntropyKernel(z, N, V, targets, o, f64(N), f64(N), null).loss
    const grad = f64(N * V)
    crossEntropyKernel(z, N, V, targets, o, f64(N), f64(N), grad)
    expectGradient(grad, numericGradient(f, z), 'dlogits')
  })

  it.each(combos({ label: ['hard', 'soft'] as const, margins: [false, true], centerCoef: [0, 0.05], reduction: ['mean', 'sum'] as const })
    .map((c) => [label(c), c] as const))('rewardLoss %s', (_, c) => {
    const r = rng(3)
    const offsets = Int32Array.of(0, 3, 5, 6, 10, 12) // K = 3, 2, 1 (excluded), 4, 2
    const total = 12, N = 5
    const R = r.f64(total, 1.5)
    const chosen = Int32Array.of(2, 0, 0, 3, -100)
    let Y: Float64Array | null = null
    if (c.label === 'soft') {
      Y = f64(total)
      for (let n = 0; n < N; n++) {
        let s = 0
        for (let i = offsets[n]; i < offsets[n + 1]; i++) s += (Y[i] = r.uniform())
        for (let i = offsets[n]; i < offsets[n + 1]; i++) Y[i] /= s
      }
    }
    const o = {
      chosen: c.label === 'hard' ? chosen : null, targetProbs: Y, margins: c.margins ? r.f64(total, 0.5) : null,
      centerCoef: c.centerCoef, reduction: c.reduction, ignoreIndex: -100,
    }
    const f = () => rewardLossKernel(R, offsets, o, f64(total), f64(total), f64(N)).loss
    const grad = f64(total)
    rewardLossKernel(R, offsets, o, f64(total), grad, f64(N))
    expectGradient(grad, numericGradient(f, R), 'dscores')
  })

  const B = 3, T = 5, M = B * T
  const layout = tokenLayout('t', 'x', [B, T], undefined)
  const mask = Uint8Array.of(1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1) // sequence 1 fully masked
  const aggs = (mode: AggregationMode, extra = {}) => aggregationOptions('t', { aggregation: mode, ...extra })

  it.each(combos({
    clipHigh: [0.2, 0.28], dualClip: [null, 3], aggregation: AGGREGATIONS, masked: [false, true],
  }).map((c) => [label(c), c] as const))('policyLoss %s', (_, c) => {
    const r = rng(4)
    const logp = r.f64(M, 0.5)
    const old = Float64Array.from(logp, (x) => x + r.normal() * 0.4)
    const A = r.f64(M, 1)
    const agg = aggs(c.aggregation)
    const o = { clipLow: 0.2, clipHigh: c.clipHigh, dualClip: c.dualClip, logRatioClamp: 20 }
    const valid = c.masked ? mask : null
    const f = () => policyLossKernel(logp, old, A, valid, layout, agg, o, f64(M), f64(M)).loss
    const grad = f64(M)
    policyLossKernel(logp, old, A, valid, layout, agg, o, f64(M), grad)
    expectGradient(grad, numericGradient(f, logp), 'dlogp')
  })

  it.each([
    ['globalTokenCount', aggs('token-mean', { globalTokenCount: 40 })],
    ['globalSeqCount', aggs('seq-mean-token-mean', { globalSeqCount: 7 })],
    ['normConst', aggs('seq-mean-token-sum-norm', { normConst: 16 })],
  ] as const)('policyLoss with %s', (_, agg) => {
    const r = rng(5)
    const logp = r.f64(M, 0.5)
    const old = Float64Array.from(logp, (x) => x + r.normal() * 0.4)
    const A = r.f64(M, 1)
    const o = { clipLow: 0.2, clipHigh: 0.2, dualClip: null, logRatioClamp: 20 }
    const f = () => policyLossKernel(logp, old, A, mask, layout, agg, o, f64(M), f64(M)).loss
    const grad = f64(M)
    policyLossKernel(logp, old, A, mask, layout, agg, o, f64(M), grad)
    expectGradient(grad, numericGradient(f, logp), 'dlogp')
  })

  it.each(combos({ reduction: ['mean', 'sum', 'none'] as const, temperature: [1, 1.3], masked: [false, true] }).map((c) => [label(c), c] as const))(
    'klDivergence %s (wrt q and p)', (_, c) => {
      const r = rng(6)
      const N = 4, V = 6
      const zp = r.f64(N * V, 2), zq = r.f64(N * V, 2)
      const valid = c.masked ? Uint8Array.of(1, 0, 1, 1) : null
      const f = () => klDivergenceKernel(zp, zq, N, V, valid, c.reduction, c.temperature, f64(N), null, null).loss
      const gq = f64(N * V), gp = f64(N * V)
      klDivergenceKernel(zp, zq, N, V, valid, c.reduction, c.temperature, f64(N), gq, gp)
      expectGradient(gq, numericGradient(f, zq), 'dq')
      expectGradient(gp, numericGradient(f, zp), 'dp')
    })

  it.each(combos({ estimator: ['k1', 'abs', 'k2', 'k3'] as KlEstimator[], outputClamp: [null, 0.5], aggregation: ['token-mean', 'seq-mean-token-mean'] as const })
    .map((c) => [label(c), c] as const))('klPenalty %s', (_, c) => {
    const r = rng(7)
    const logp = r.f64(M, 1), ref = r.f64(M, 1)
    const agg = aggs(c.aggregation)
    const o = { estimator: c.estimator, logRatioClamp: 20, outputClamp: c.outputClamp }
    const f = () => klPenaltyKernel(logp, ref, mask, layout, agg, o, f64(M), f64(M))
    const grad = f64(M)
    klPenaltyKernel(logp, ref, mask, layout, agg, o, f64(M), grad)
    expectGradient(grad, numericGradient(f, logp), 'dlogp')
  })

  it.each(combos({ clip: [null, 0.2], half: [false, true], aggregation: ['token-mean', 'seq-mean-token-sum'] as const })
    .map((c) => [label(c), c] as const))('valueLoss %s', (_, c) => {
    const r = rng(8)
    const V = r.f64(M), R = r.f64(M), Vold = Float64Array.from(V, (x) => x + r.normal() * 0.4)
    const agg = aggs(c.aggregation)
    const o = { clip: c.clip, half: c.half }
    const f = () => valueLossKernel(V, R, Vold, mask, layout, agg, o, f64(M), f64(M)).loss
    const grad = f64(M)
    valueLossKernel(V, R, Vold, mask, layout, agg, o, f64(M), grad)
    expectGradient(grad, numericGradient(f, V), 'dvalues')
  })

  it.each(combos({
    kl: ['full', 'k1', 'k3'] as const, temperature: [1, 0.8], dualClip: [null, 2], valueClip: [null, 0.3], aggregation: ['token-mean', 'seq-mean-token-mean'] as const,
  }).map((c) => [label(c), c] as const))('ppoLoss %s (wrt logits and values)', (_, c) => {
    const r = rng(9)
    const Vv = 5
    const z = r.f64(M * Vv, 1.5)
    const anchor = Float64Array.from(z, (x) => x + r.normal() * 0.3)
    const actions = r.ints(M, Vv)
    const oldLogp = f64(M)
    logProbsKernel(anchor, M, Vv, actions, { temperature: c.temperature, ignoreIndex: -100 }, oldLogp, f64(M), null)
    const values = r.f64(M), returns = r.f64(M), oldValues = Float64Array.from(values, (x) => x + r.normal() * 0.4)
    const x = {
      logits: z, V: Vv, actions, oldLogp, anchorLogits: anchor, refLogp: null, advantages: r.f64(M),
      values, returns, oldValues, valid: mask, layout, agg: aggs(c.aggregation),
    }
    const o = {
      temperature: c.temperature, beta: 0.3, c1: 0.7, klEstimator: c.kl, klOutputClamp: null,
      policy: { clipLow: 0.2, clipHigh: 0.2, dualClip: c.dualClip, logRatioClamp: 20 }, value: { clip: c.valueClip, half: false },
    }
    const f = () => ppoLossKernel(x, o, f64(M * Vv), f64(M), f64(M)).loss
    const gz = f64(M * Vv), gv = f64(M)
    ppoLossKernel(x, o, gz, gv, f64(M))
    expectGradient(gz, numericGradient(f, z), 'dlogits')
    expectGradient(gv, numericGradient(f, values), 'dvalues')
  })
})
