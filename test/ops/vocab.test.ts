/**
 * The vocabulary family (src/vocab.ts: logProbs, logProbsBackward, crossEntropy): parity of each native
 * backend with the js reference (test/parity.ts), finite-difference gradients of the float64 reference,
 * PyTorch golden values, edge cases and precision on each host backend.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../../src/index.js'
import { crossEntropyKernel, logProbsBackwardKernel, logProbsKernel } from '../../src/reference/vocab.js'
import { PARITY } from '../../src/tolerance.js'
import { HOST_BACKENDS, on, useBackend } from '../backends.js'
import { F32, combos, expectClose, expectGradient, f64, floats, golden, label, numericGradient, rng } from '../helpers.js'
import { compare, type Dtype, halfGrad, logitsOf, describeParity, SEED, shared, titled, vocabCases } from '../parity.js'

const allFinite = (x: ArrayLike<number>) => Array.prototype.every.call(x, (v: number) => Number.isFinite(v))
const mat = (x: number[], N: number, V: number) => rk.tensor(floats(x), [N, V])

describeParity('vocab', () => {
  const forward = combos({ temperature: [1, 0.7], negInf: [false, true] }).map((c) => ({ ...c, label: `T=${c.temperature} −inf=${c.negInf}` }))

  const forwardInputs = shared((dtype: Dtype, N: number, V: number, negInf: boolean) => {
    const r = rng(SEED + V + (negInf ? 1 : 0))
    const logits = logitsOf(r, N, V, dtype, 3, negInf)
    const targets = r.ints(N, V)
    if (N > 2) targets[1] = -100
    return { logits, targets }
  })

  it.each(titled('logProbs, $dtype [$N, $V] $label on $backend', vocabCases(1, forward)))('%s', (_, { backend, dtype, N, V, variant }) => {
    const { logits, targets } = forwardInputs(dtype, N, V, variant.negInf)
    compare(backend, rk.logProbs, { logits, targets, temperature: variant.temperature, entropy: true }, 'logProbs')
  })

  it.each(titled('logProbsBackward, $dtype [$N, $V] $label on $backend', vocabCases(2, forward)))('%s', (_, { backend, dtype, N, V, variant, seed }) => {
    const r = rng(seed)
    const { logits, targets } = forwardInputs(dtype, N, V, variant.negInf)
    const temperature = variant.temperature
    const fwd = on('js', () => rk.logProbs({ logits, targets, temperature, entropy: true }))
    compare(backend, rk.logProbsBackward, { logits, targets, temperature, lse: fwd.lse, gradLogp: r.f32(N), gradEntropy: r.f32(N) }, 'logProbsBackward')
  })

  type CrossEntropyVariant = { label: string; half?: boolean; options: (r: ReturnType<typeof rng>, N: number, V: number) => object }
  const crossEntropyVariants: CrossEntropyVariant[] = [
    { label: 'mean', options: () => ({}) },
    { label: 'sum', options: () => ({ reduction: 'sum' }) },
    { label: 'none', options: () => ({ reduction: 'none' }) },
    { label: 'labelSmoothing', options: () => ({ labelSmoothing: 0.1 }) },
    { label: 'zLoss', options: () => ({ zLoss: 1e-3 }) },
    { label: 'classWeights labelSmoothing', options: (r, _, V) => ({ classWeights: Float32Array.from({ length: V }, () => 0.5 + r.uniform()), labelSmoothing: 0.05 }) },
    { label: 'tokenWeights sum', options: (r, N) => ({ tokenWeights: Float32Array.from({ length: N }, () => r.uniform()), reduction: 'sum' }) },
    { label: 'gradDtype input', half: true, options: () => ({ gradDtype: 'input' }) },
  ]

  const crossEntropyInputs = shared((dtype: Dtype, N: number, V: number) => {
    const r = rng(SEED + 1 + V)
    const logits = logitsOf(r, N, V, dtype)
    const targets = r.ints(N, V)
    if (N > 2) targets[0] = -100
    return { logits, targets }
  })

  it.each(titled('crossEntropy, $dtype [$N, $V] $label on $backend', vocabCases(3, crossEntropyVariants)))('%s', (_, { backend, dtype, N, V, variant, seed }) => {
    const r = rng(seed)
    const { logits, targets } = crossEntropyInputs(dtype, N, V)
    const options = { logits, targets, grad: true, ...variant.options(r, N, V) } as rk.CrossEntropyOptions
    compare(backend, rk.crossEntropy, options, 'crossEntropy', variant.half ? halfGrad(dtype, 'gradLogits') : undefined)
  })
})

describe('vocab finite-difference gradients (float64 reference)', () => {
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
})

describe('vocab golden values from PyTorch (js reference)', () => {
  useBackend('js')

  it.each(golden('crossEntropy').map((c, i) => [i, c] as const))('crossEntropy case %i matches F.cross_entropy', (_, c) => {
    const r = rk.crossEntropy({
      logits: mat(c.logits, c.N, c.V), targets: Int32Array.from(c.targets), labelSmoothing: c.labelSmoothing,
      zLoss: c.zLoss, reduction: c.reduction, classWeights: c.classWeights ? floats(c.classWeights) : undefined, grad: true,
    })
    expectClose(r.loss, c.expected.loss, F32, 'loss')
    // PyTorch's logsumexp covers every row; here an ignored row's lse is 0, as its other per-row results
    const ignoreIndex = c.ignoreIndex ?? -100
    expectClose(r.lse, c.expected.lse.map((l: number, n: number) => (c.targets[n] === ignoreIndex ? 0 : l)), F32, 'lse')
    expectClose(r.count, c.expected.count, { atol: 0, rtol: 0 }, 'count')
    if (c.reduction === 'none') expectClose(r.losses!, c.expected.losses, F32, 'losses')
    expectClose(r.gradLogits!.data, c.expected.gradLogits, F32, 'gradLogits')
  })

  it.each(golden('logProbs').map((c, i) => [i, c] as const))('logProbs case %i matches log_softmax, Categorical.entropy and autograd', (_, c) => {
    const logits = mat(c.logits, c.N, c.V)
    const targets = Int32Array.from(c.targets)
    const r = rk.logProbs({ logits, targets, temperature: c.temperature, entropy: true })
    expectClose(r.logp, c.expected.logp, F32, 'logp')
    expectClose(r.lse, c.expected.lse, F32, 'lse')
    expectClose(r.entropy!, c.expected.entropy, F32, 'entropy')
    const g = rk.logProbsBackward({
      logits, targets, lse: r.lse, entropy: r.entropy, temperature: c.temperature,
      gradLogp: floats(c.gradLogp), gradEntropy: floats(c.gradEntropy),
    })
    expectClose(g.gradLogits.data, c.expected.gradLogits, { atol: 1e-5, rtol: 1e-5 }, 'gradLogits')
  })
})

describe.each(HOST_BACKENDS)('vocab edge cases on %s', (backend) => {
  useBackend(backend)

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

describe.each(HOST_BACKENDS)('vocab precision on %s (README tolerances against float64 formulas)', (backend) => {
  useBackend(backend)
  const VALUES = PARITY.value
  const GRADS = PARITY.grad

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
