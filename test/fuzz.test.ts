/**
 * Differential fuzz: random ops, shapes, options and dtypes, with the extreme values the README defines
 * (|z|/T up to 1e4, −inf and NaN logits, all −inf and all-NaN rows, ignored rows, masked tokens, empty
 * batches), on every native backend against the js reference, within the README tolerances.
 *
 * Seeded: every case derives from (seed, case number), and a failure prints both. It runs for
 * RLHF_KERNELS_FUZZ_SECONDS (default 20) and RLHF_KERNELS_FUZZ_SEED picks the seed;
 * RLHF_KERNELS_FUZZ_CASE=n with the seed of a failure replays that one case.
 */
import { describe, expect, it } from 'vitest'
import * as rk from '../src/index.js'
import { NATIVE_BACKENDS, on } from './backends.js'
import { parityError } from './compare.js'
import { rng } from './helpers.js'
import { type Tolerance, gradTolerance, klGradPTolerance, twice } from '../src/tolerance.js'

const SECONDS = Number(process.env.RLHF_KERNELS_FUZZ_SECONDS ?? 20)
const SEED = Number(process.env.RLHF_KERNELS_FUZZ_SEED ?? Date.now() % 1_000_000)
const ONLY = process.env.RLHF_KERNELS_FUZZ_CASE === undefined ? null : Number(process.env.RLHF_KERNELS_FUZZ_CASE)

type R = ReturnType<typeof rng>
type FloatDtype = 'float32' | 'bfloat16' | 'float16' | 'float64'

interface Case {
  what: string
  run: () => unknown
  overrides?: (expected: any) => Record<string, Tolerance>
}

const pick = <T>(r: R, xs: readonly T[]): T => xs[r.int(xs.length)]

/**
 * Logits [N, V] in `dtype`, of scale `scale`, with extreme rows and elements: −inf elements (vocabulary
 * masking), all −inf rows, NaN elements, all-NaN rows. float64 data holds float32 values: the native backends
 * round float64 inputs to float32 on load (README, Conventions), so only such values compare exactly.
 */
function logits(r: R, N: number, V: number, dtype: FloatDtype, scale: number, extremes: boolean): rk.Tensor {
  const z = r.f32(N * V, scale)
  if (extremes) {
    const ninf = r.uniform() < 0.5 ? 0.1 : 0
    for (let i = 0; i < z.length; i++) if (r.uniform() < ninf) z[i] = -Infinity
    for (let n = 0; n < N; n++) {
      const u = r.uniform()
      if (u < 0.08) z.fill(-Infinity, n * V, (n + 1) * V)
      else if (u < 0.12) z.fill(NaN, n * V, (n + 1) * V)
      else if (u < 0.2) z[n * V + r.int(V)] = NaN
    }
  }
  if (dtype === 'float32') return rk.tensor(z, [N, V])
  if (dtype === 'float64') return rk.tensor(Float64Array.from(z), [N, V])
  return rk.tensor(rk.encodeFloats(z, dtype), [N, V], { dtype })
}

/** Targets in [0, V), some ignored. */
function targets(r: R, N: number, V: number, ignoreIndex = -100): Int32Array {
  return Int32Array.from({ length: N }, () => (r.uniform() < 0.15 ? ignoreIndex : r.int(V)))
}

/** A scale and a temperature with |z|/T from about 1 to 1e4. */
function scaleAndTemperature(r: R): [number, number] {
  return pick(r, [[3, 1], [2, 0.7], [30, 1], [1e3, 1], [1e4, 1], [1, 1e-4], [3, 3e-4], [100, 0.01], [1, 1.3]] as const) as [number, number]
}

const floats = (r: R, n: number, scale = 1) => r.f32(n, scale)

/** Actions sampled from softmax(z/T) row by row, as a policy samples them (uniform in a row without mass). */
function sample(r: R, z: rk.Tensor, temperature: number): Int32Array {
  const [N, V] = [z.shape[0], z.shape[1]]
  const x = z.toFloat32Array()
  return Int32Array.from({ length: N }, (_, n) => {
    const row = Array.from(x.subarray(n * V, (n + 1) * V), (v) => v / temperature)
    const m = Math.max(...row)
    const w = row.map((v) => Math.exp(v - m))
    const total = w.reduce((a, b) => a + b, 0)
    if (!(total > 0 && total < Infinity)) return r.int(V)
    let u = r.uniform() * total
    for (let v = 0; v < V; v++) if ((u -= w[v]) <= 0) return v
    return V - 1
  })
}

/** One random case; every choice comes from r. */
function makeCase(r: R): Case {
  const empty = r.uniform() < 0.06
  const N = empty ? 0 : pick(r, [1, 2, 3, 5, 8])
  const V = pick(r, [1, 2, 7, 8, 9, 17, 100, 301, 1000])
  const dtype = pick(r, ['float32', 'float32', 'bfloat16', 'float16', 'float64'] as const)
  const extremes = r.uniform() < 0.5
  const [scale0, temperature] = scaleAndTemperature(r)
  // float16 holds up to 65504: keep its logits inside
  const scale = dtype === 'float16' ? Math.min(scale0, 1e4) : scale0
  const op = pick(r, [
    'logProbs', 'logProbsBackward', 'crossEntropy', 'klDivergence', 'ppoLoss', 'rewardLoss', 'policyLoss', 'klPenalty', 'valueLoss', 'gae', 'whiten', 'groupAdvantages',
    'sequenceLogProbs', 'preferenceLoss', 'keptLogProbs', 'vocabSharded',
  ] as const)
  const shape = `[${N}, ${V}] ${dtype} scale ${scale}${extremes ? ' extremes' : ''}`
  switch (op) {
    case 'logProbs': {
      const o = { logits: logits(r, N, V, dtype, scale, extremes), targets: targets(r, N, V), temperature, entropy: r.uniform() < 0.7 }
      return { what: `logProbs ${shape} T=${temperature}`, run: () => rk.logProbs(o) }
    }
    case 'logProbsBackward': {
      const z = logits(r, N, V, dtype, scale, extremes)
      const y = targets(r, N, V)
      const fwd = on('js', () => rk.logProbs({ logits: z, targets: y, temperature, entropy: true }))
      const gradLogp = r.uniform() < 0.8 ? floats(r, N) : undefined
      const gradEntropy = gradLogp === undefined || r.uniform() < 0.5 ? floats(r, N) : undefined
      const o = { logits: z, targets: y, temperature, lse: fwd.lse, gradLogp, gradEntropy, entropy: r.uniform() < 0.5 ? fwd.entropy : undefined }
      return { what: `logProbsBackward ${shape} T=${temperature} gradEntropy=${gradEntropy !== undefined}`, run: () => rk.logProbsBackward(o), overrides: () => ({ gradLogits: gradTolerance(temperature) }) }
    }
    case 'crossEntropy': {
      const ignoreIndex = r.uniform() < 0.2 ? V - 1 : -100
      const o = {
        logits: logits(r, N, V, dtype, Math.min(scale, 1e4), extremes), targets: targets(r, N, V, ignoreIndex), ignoreIndex, grad: r.uniform() < 0.8,
        reduction: pick(r, ['mean', 'sum', 'none'] as const), labelSmoothing: r.uniform() < 0.3 ? 0.1 : 0, zLoss: r.uniform() < 0.3 ? 1e-4 : 0,
        classWeights: r.uniform() < 0.2 ? Float32Array.from({ length: V }, () => 0.5 + r.uniform()) : undefined,
        tokenWeights: r.uniform() < 0.2 ? Float32Array.from({ length: N }, () => r.uniform()) : undefined,
      }
      return { what: `crossEntropy ${shape} ${JSON.stringify({ ...o, logits: undefined, targets: undefined, classWeights: !!o.classWeights, tokenWeights: !!o.tokenWeights })}`, run: () => rk.crossEntropy(o) }
    }
    case 'klDivergence': {
      const p = logits(r, N, V, dtype, scale, extremes)
      const near = r.uniform() < 0.5
      const q = near ? rk.tensor(Float32Array.from(p.toFloat32Array(), (x) => x + 0.3 * scale * r.normal()), [N, V]) : logits(r, N, V, dtype, scale, extremes)
      const qLogits = near && dtype !== 'float32' ? (dtype === 'float64' ? rk.tensor(Float64Array.from(q.data), [N, V]) : rk.tensor(rk.encodeFloats(q.data as Float32Array, dtype), [N, V], { dtype })) : q
      const o = {
        pLogits: p, qLogits, temperature, grad: pick(r, [false, 'q', 'p', 'both'] as const), reduction: pick(r, ['mean', 'sum', 'none'] as const),
        mask: r.uniform() < 0.3 ? r.mask(N) : undefined,
      }
      return {
        what: `klDivergence ${shape} T=${temperature} near=${near} grad=${o.grad} ${o.reduction}`, run: () => rk.klDivergence(o),
        overrides: (e) => ({ gradQ: gradTolerance(temperature), gradP: klGradPTolerance(e.perRow, temperature) }),
      }
    }
    case 'ppoLoss': {
      const z = logits(r, N, V, dtype, scale, extremes)
      const actions = sample(r, z, temperature)
      const anchor = r.uniform() < 0.5 ? logits(r, N, V, dtype, scale, extremes) : undefined
      // the log-probs of the sampling policy: a step away from the current ones
      const logp = on('js', () => rk.logProbs({ logits: z, targets: actions, temperature }).logp)
      const o = {
        logits: z, actions, temperature, oldLogits: anchor,
        oldLogp: anchor && r.uniform() < 0.5 ? undefined : awayFromClipEdges(logp, logp.map((x) => x + 0.2 * r.normal()), 1e-4),
        refLogp: r.uniform() < 0.3 ? floats(r, N) : undefined, advantages: floats(r, N), values: floats(r, N), returns: floats(r, N),
        oldValues: floats(r, N), valueClip: r.uniform() < 0.5 ? 0.2 : undefined, mask: r.uniform() < 0.5 ? r.mask(N) : undefined,
        beta: pick(r, [0, 0.05]), c1: 0.1, klEstimator: anchor && r.uniform() < 0.7 ? 'full' as const : pick(r, ['k1', 'k3'] as const),
        dualClip: r.uniform() < 0.3 ? 3 : undefined, aggregation: pick(r, rk.AGGREGATIONS),
      }
      return { what: `ppoLoss ${shape} T=${temperature} anchor=${!!anchor} ${o.klEstimator} ${o.aggregation}`, run: () => rk.ppoLoss(o), overrides: () => ({ gradLogits: gradTolerance(temperature) }) }
    }
    case 'keptLogProbs': {
      const z = logits(r, N, V, dtype, scale, extremes)
      const y = targets(r, N, V)
      const csr = r.uniform() < 0.5
      let kept: object
      if (csr) {
        const rows = Array.from({ length: N }, () => Array.from({ length: V }, (_, v) => v).filter(() => r.uniform() < 0.6))
        kept = { keepOffsets: Int32Array.from([0, ...rows.map((_, i) => rows.slice(0, i + 1).reduce((a, b) => a + b.length, 0))]), keepTokens: Int32Array.from(rows.flat()) }
      } else {
        kept = { topK: pick(r, [0, 1, 3, 50]), topP: pick(r, [1, 0.9, 0.5]), minP: pick(r, [0, 0.05]) }
      }
      const o = { logits: z, targets: y, temperature, ...kept, gradLogp: r.uniform() < 0.7 ? floats(r, N) : undefined }
      return {
        what: `keptLogProbs ${shape} T=${temperature} ${csr ? 'CSR' : JSON.stringify(kept)}`, run: () => rk.keptLogProbs(o),
        overrides: () => ({ gradLogits: gradTolerance(temperature) }),
      }
    }
    case 'vocabSharded': {
      // the partial/merge/backward forms over 1–4 uneven shards, ordinary rows (the merge sums float32 partials)
      const Vs = Math.max(V, 8)
      const full = logits(r, N, Vs, dtype === 'float64' ? 'float32' : dtype, 3, false).toFloat32Array()
      const cuts = [...new Set(Array.from({ length: r.int(4) }, () => 1 + r.int(Vs - 1)))].sort((a, b) => a - b)
      const b = [0, ...cuts, Vs]
      const shard = (x: Float32Array, i: number) => {
        const w = b[i + 1] - b[i], out = new Float32Array(N * w)
        for (let n = 0; n < N; n++) out.set(x.subarray(n * Vs + b[i], n * Vs + b[i + 1]), n * w)
        return rk.tensor(out, [N, w])
      }
      const shards = b.slice(0, -1).map((_, i) => i)
      const y = targets(r, N, Vs)
      const T = pick(r, [1, 0.7])
      const form = pick(r, ['logProbs', 'crossEntropy', 'kl'] as const)
      const tol = twice(twice({ atol: 5e-6, rtol: 5e-6 }))
      // the shards' gradients come from each backend's own merged lse: widened as the values
      const grads = (e: any, name: string, t: Tolerance) => Object.fromEntries(shards.map((i) => [`grads.${i}.${name}`, t]))
      if (form === 'logProbs') {
        const g = floats(r, N)
        const run = () => {
          const partials = shards.map((i) => rk.logProbsPartial({ logits: shard(full, i), targets: y, vocabStart: b[i], temperature: T }))
          const merged = rk.mergeVocabPartials({ partials, targets: y })
          const grads = shards.map((i) => rk.logProbsPartialBackward({ logits: shard(full, i), targets: y, vocabStart: b[i], temperature: T, lse: merged.lse, gradLogp: g }).gradLogits)
          return { merged, grads }
        }
        return { what: `logProbsPartial ${N} rows in shards ${b.join(',')} T=${T}`, run, overrides: (e) => ({ 'merged.logp': tol, 'merged.lse': tol, 'merged.entropy': tol, 'merged.loss': tol, ...grads(e, 'gradLogits', twice(twice(gradTolerance(T)))) }) }
      }
      if (form === 'crossEntropy') {
        const labelSmoothing = pick(r, [0, 0.1]), zLoss = pick(r, [0, 1e-3])
        // T, or a T per row in [0.5, 1.5)
        const temperature = r.uniform() < 0.5 ? T : Float32Array.from({ length: N }, () => 0.5 + r.uniform())
        const Tmin = typeof temperature === 'number' ? temperature : Math.min(...temperature)
        const run = () => {
          const partials = shards.map((i) => rk.crossEntropyPartial({ logits: shard(full, i), targets: y, vocabStart: b[i], vocabSize: Vs, labelSmoothing, temperature }))
          const merged = rk.mergeCrossEntropyPartials({ partials, targets: y, labelSmoothing, zLoss })
          const grads = shards.map((i) => rk.crossEntropyPartialBackward({ logits: shard(full, i), targets: y, vocabStart: b[i], vocabSize: Vs, lse: merged.lse, gradRows: merged.gradRows, labelSmoothing, zLoss, temperature }).gradLogits)
          return { merged, grads }
        }
        const Tlabel = typeof temperature === 'number' ? T : 'per row'
        return { what: `crossEntropyPartial ${N} rows in shards ${b.join(',')} ε=${labelSmoothing} z=${zLoss} T=${Tlabel}`, run, overrides: (e) => ({ 'merged.losses': tol, 'merged.lse': tol, 'merged.loss': tol, ...grads(e, 'gradLogits', twice(twice(gradTolerance(Tmin)))) }) }
      }
      const fullQ = Float32Array.from(full, (x) => x + 0.5 * r.normal())
      const run = () => {
        const partials = shards.map((i) => rk.klDivergencePartial({ pLogits: shard(full, i), qLogits: shard(fullQ, i), temperature: T }))
        const merged = rk.mergeKlPartials({ partials })
        const grads = shards.map((i) => rk.klDivergencePartialBackward({ pLogits: shard(full, i), qLogits: shard(fullQ, i), temperature: T, pLse: merged.pLse, qLse: merged.qLse, perRow: merged.perRow, gradRows: merged.gradRows, grad: 'both' }))
        return { merged, grads }
      }
      return { what: `klDivergencePartial ${N} rows in shards ${b.join(',')} T=${T}`, run, overrides: (e) => ({
        'merged.perRow': tol, 'merged.pLse': tol, 'merged.qLse': tol, 'merged.loss': tol,
        ...grads(e, 'gradQ', twice(twice(gradTolerance(T)))), ...grads(e, 'gradP', twice(twice(klGradPTolerance(e.merged.perRow, T)))),
      }) }
    }
    case 'rewardLoss': {
      const sizes = Array.from({ length: N }, () => 1 + r.int(5))
      const offsets = Int32Array.from([0, ...sizes.map((_, i) => sizes.slice(0, i + 1).reduce((a, b) => a + b, 0))])
      const total = offsets[N]
      const scores = floats(r, total, Math.min(scale, 1e3))
      if (extremes && total > 0) scores[r.int(total)] = pick(r, [-Infinity, NaN])
      const chosen = Int32Array.from(sizes, (k) => (r.uniform() < 0.15 ? -100 : r.int(k)))
      const o = { scores, offsets, chosen, margins: r.uniform() < 0.3 ? floats(r, total, 0.5) : undefined, centerCoef: r.uniform() < 0.3 ? 0.01 : 0, reduction: pick(r, ['mean', 'sum', 'none'] as const) }
      return { what: `rewardLoss ${N} prompts ${total} scores${extremes ? ' extremes' : ''}`, run: () => rk.rewardLoss(o) }
    }
    case 'sequenceLogProbs': {
      // N sequences of up to min(V, 64) tokens, [B, T] with a mask (masked NaN slots) or packed by seqLengths (some 0)
      const T = Math.min(V, 64), packed = r.uniform() < 0.5
      const seqLengths = Int32Array.from({ length: N }, () => (r.uniform() < 0.15 ? 0 : r.int(T + 1)))
      const M = packed ? seqLengths.reduce((a, b) => a + b, 0) : N * T
      const logp = Float32Array.from({ length: M }, () => -Math.abs(r.normal()) * Math.min(scale, 1e3))
      const mask = !packed && r.uniform() < 0.7 ? r.mask(M) : undefined
      if (mask) for (let i = 0; i < M; i++) if (!mask[i] && r.uniform() < 0.3) logp[i] = NaN
      if (extremes && M > 0 && (mask === undefined || mask.some((m) => m))) {
        const i = mask ? mask.indexOf(1) : r.int(M)
        logp[i] = -Infinity
      }
      const o = {
        logp: packed ? logp : rk.tensor(logp, [N, T]), ...(packed ? { seqLengths } : { mask }),
        reduction: pick(r, rk.SEQUENCE_REDUCTIONS), gradSeq: r.uniform() < 0.7 ? floats(r, N) : undefined,
      }
      return { what: `sequenceLogProbs ${packed ? 'packed' : `[${N}, ${T}]`} ${o.reduction} grad=${!!o.gradSeq}${extremes ? ' extremes' : ''}`, run: () => rk.sequenceLogProbs(o) }
    }
    case 'preferenceLoss': {
      // N prompts of K_n candidates (ragged), sequence log-probs of sequence scale, a chosen index or a ranking
      const sizes = Array.from({ length: N }, () => 1 + r.int(5))
      const offsets = Int32Array.from([0, ...sizes.map((_, i) => sizes.slice(0, i + 1).reduce((a, b) => a + b, 0))])
      const total = offsets[N]
      const type = pick(r, rk.PREFERENCE_TYPES)
      const logp = Float32Array.from({ length: total }, () => -(5 + 40 * r.uniform()))
      const refLogp = Float32Array.from(logp, (x) => x + 3 * r.normal())
      const ranked = type === 'plackett-luce' && r.uniform() < 0.5
      const ranking = Int32Array.from(sizes.flatMap((k) => {
        const p = Array.from({ length: k }, (_, i) => i)
        for (let i = k - 1; i > 0; i--) { const j = r.int(i + 1); [p[i], p[j]] = [p[j], p[i]] }
        return p
      }))
      const chosen = Int32Array.from(sizes, (k) => (r.uniform() < 0.15 ? -100 : r.int(k)))
      const smoothing = type === 'dpo' || type === 'simpo' ? pick(r, [0, 0.1]) : type === 'robust' ? 0.1 : undefined
      const o = {
        logp, refLogp: type === 'simpo' ? undefined : refLogp, offsets, ...(ranked ? { ranking } : { chosen }), type,
        beta: pick(r, [0.1, 0.5, 2]), labelSmoothing: smoothing, gamma: type === 'simpo' ? 0.3 : undefined,
        lengths: type === 'simpo' || r.uniform() < 0.2 ? Float32Array.from({ length: total }, () => r.int(40)) : undefined,
        reduction: pick(r, ['mean', 'sum', 'none'] as const), refGrad: type !== 'simpo' && r.uniform() < 0.3,
      }
      return { what: `preferenceLoss ${N} prompts ${total} candidates ${type} ${ranked ? 'ranking' : 'chosen'} ${o.reduction}`, run: () => rk.preferenceLoss(o) }
    }
    default: {
      // token ops: M = N·V tokens as [N, V], with masked NaN slots
      const M = N * Math.min(V, 64)
      const B = N, T = Math.min(V, 64)
      const mask = r.uniform() < 0.6 ? r.mask(M) : undefined
      const token = (s = 1) => {
        const x = floats(r, M, s)
        if (mask) for (let i = 0; i < M; i++) if (!mask[i] && r.uniform() < 0.3) x[i] = NaN
        return x
      }
      const agg = { aggregation: pick(r, rk.AGGREGATIONS), mask }
      const layout = (x: Float32Array) => rk.tensor(x, [B, T])
      if (op === 'policyLoss') {
        const logp = token(0.5), oldLogp = awayFromClipEdges(logp, token(0.5), 1e-5)
        // the variants whose value and gradient are continuous in the inputs (CISPO's detached clipped weight,
        // truncated rollout weights), so that float32 and float64 agree at any input
        const variant = r.uniform() < 0.4 ? {
          variant: 'cispo' as const, isLevel: pick(r, rk.IS_LEVELS), behaviorLogp: token(0.5),
          rolloutCorrection: pick(r, [null, 'token-truncate', 'sequence-truncate'] as const), rolloutIsHigh: 1.2,
        } : {}
        const o = { logp: layout(logp), oldLogp, advantages: token(), dualClip: r.uniform() < 0.3 && !('variant' in variant) ? 3 : undefined, ...variant, ...agg }
        return { what: `policyLoss [${B}, ${T}] ${agg.aggregation} ${JSON.stringify({ ...variant, behaviorLogp: undefined })}`, run: () => rk.policyLoss(o) }
      }
      if (op === 'klPenalty') {
        const o = { logp: layout(token(0.5)), refLogp: token(0.5), estimator: pick(r, rk.KL_ESTIMATORS), outputClamp: r.uniform() < 0.3 ? 0.05 : undefined, ...agg }
        return { what: `klPenalty [${B}, ${T}] ${o.estimator} ${agg.aggregation}`, run: () => rk.klPenalty(o) }
      }
      if (op === 'valueLoss') {
        const o = { values: layout(token()), returns: token(), oldValues: token(), clip: r.uniform() < 0.5 ? 0.2 : null, half: r.uniform() < 0.5, ...agg }
        return { what: `valueLoss [${B}, ${T}] ${agg.aggregation}`, run: () => rk.valueLoss(o) }
      }
      if (op === 'gae') {
        const o = { rewards: layout(token()), values: token(), mask, gamma: pick(r, [1, 0.99]), lambda: pick(r, [0.95, 1, 0]), lastValues: r.uniform() < 0.5 ? floats(r, B) : undefined }
        return { what: `gae [${B}, ${T}] γ=${o.gamma} λ=${o.lambda}`, run: () => rk.gae(o) }
      }
      // rewards far from 0: the mean must be subtracted in double
      const centre = pick(r, [0, 5, 1000])
      const spread = centre === 0 ? 1 : centre * 1e-3
      const values = Float32Array.from(token(), (x) => centre + spread * x)
      if (op === 'whiten') {
        const o = { values, mask, shiftMean: r.uniform() < 0.7, unbiased: r.uniform() < 0.7 }
        return { what: `whiten ${M} values around ${centre}`, run: () => rk.whiten(o) }
      }
      const groupSize = 1 + r.int(8)
      const n = M - (M % groupSize)
      const o = { scores: Float32Array.from(values.subarray(0, n), (x) => (Number.isNaN(x) ? centre : x)), groupSize, method: pick(r, rk.GROUP_METHODS) }
      return { what: `groupAdvantages ${n} scores around ${centre} groups of ${groupSize} ${o.method}`, run: () => rk.groupAdvantages(o) }
    }
  }
}

/**
 * A ratio r = exp(logp − oldLogp) within float32 rounding of a clip edge (1 − ε, 1 + ε at the default 0.2,
 * or the dual clip 3) may fall on either side of it in float32 and in the float64 reference, and then the
 * token's gradient is 0 on one side and −r·A on the other (README: Conventions). The fuzz keeps its inputs
 * a relative `margin` away from the edges, so the rest of the comparison stays exact.
 */
function awayFromClipEdges(logp: ArrayLike<number>, oldLogp: Float32Array, margin: number): Float32Array {
  for (let i = 0; i < oldLogp.length; i++) {
    const ratio = Math.exp(logp[i] - oldLogp[i])
    if ([0.8, 1.2, 3].some((edge) => Math.abs(ratio - edge) < margin * edge)) oldLogp[i] = Math.fround(oldLogp[i] - 50 * margin)
  }
  return oldLogp
}

/** A result as JSON, every array in full (FUZZ_DEBUG=1 prints both sides of a failing case). */
function dump(result: unknown): string {
  return JSON.stringify(result, (_, v) =>
    v instanceof rk.Tensor ? { shape: v.shape, data: Array.from(v.toFloat32Array()) } : ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v)
}

describe.each(NATIVE_BACKENDS)(`differential fuzz against js on %s (seed ${SEED})`, (backend) => {
  it(`random cases for ${SECONDS} s`, () => {
    const end = Date.now() + SECONDS * 1000
    let cases = 0
    for (let i = ONLY ?? 0; ONLY === null ? Date.now() < end : i === ONLY; i++) {
      const c = makeCase(rng(SEED * 1_000_003 + i))
      const expected = on('js', c.run)
      const actual = on(backend, c.run)
      const error = parityError(actual, expected, c.overrides?.(expected))
      if (error !== null) {
        if (process.env.FUZZ_DEBUG) {
          console.log('EXPECTED', dump(expected))
          console.log('ACTUAL', dump(actual))
        }
        expect.fail(`case ${i}: ${c.what}: ${error}\nreplay: RLHF_KERNELS_FUZZ_SEED=${SEED} RLHF_KERNELS_FUZZ_CASE=${i} npx vitest run test/fuzz.test.ts`)
      }
      cases++
    }
    console.log(`fuzz on ${backend}: ${cases} cases in ${SECONDS} s, seed ${SEED}`)
  }, (SECONDS + 60) * 1000)
})

describe.skipIf(NATIVE_BACKENDS.length > 0)('differential fuzz', () => {
  it('has no native backend to compare here', () => {
    console.log('fuzz skipped: no native backend')
  })
})
