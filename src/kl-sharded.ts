/**
 * Vocab-sharded KL(p‖q) (issue 15): each rank holds the same columns [vocabStart, vocabStart + V_s) of both
 * logits. klDivergencePartial gives a shard's per-row partials, mergeKlPartials combines any number of shards
 * in the order given (each row alone, in float64: a row's result does not depend on its batch), and
 * klDivergencePartialBackward gives a shard's gradients from the merged statistics. The partials are computed
 * by logProbs and klDivergence on the shard, so every backend runs them.
 *
 * The cross term. With s = z/T, a shard's own log-softmax a_v = s^p_v − L^p_s and b_v = s^q_v − L^q_s (L_s: the
 * shard's lse, max_s + log sumExp_s), the shard's own softmax p^s = exp(a), and L^p, L^q the full rows' lse:
 *   log p_v = a_v + (L^p_s − L^p),   log q_v = b_v + (L^q_s − L^q),   p_v = w_s p^s_v with w_s = exp(L^p_s − L^p)
 * so, as Σ_{v∈s} p^s_v = 1,
 *   KL = Σ_s Σ_{v∈s} p_v (log p_v − log q_v) = Σ_s w_s [ C_s + (L^p_s − L^p) − (L^q_s − L^q) ]
 * where C_s = Σ_{v∈s} p^s_v (a_v − b_v) = KL(p^s‖q^s), the shard's own KL: the per-shard cross term, relative
 * to each shard's maxima (through L_s), which klDivergence computes on the shard. A shard without p mass
 * (w_s = 0) adds nothing; one with p mass where q has none has C_s = +inf, and then KL = +inf however small
 * w_s is (an underflowed p must not hide an infinite KL, as klDivergence). The gradients are the unsharded
 * ones, on the shard's columns: d/dz^q_v = g (q_v − p_v)/T, d/dz^p_v = g p_v (log p_v − log q_v − KL)/T.
 */
import { REDUCTIONS, type Reduction, KL_GRADS, type KlGrad } from './choices.js'
import { rangeError } from './errors.js'
import { klDivergence } from './kl.js'
import { type Temperature, invTemperature, temperatureOption } from './options.js'
import { bf16ToFloat, f16ToFloat } from './dtypes.js'
import { type HostArray, Tensor } from './tensor.js'
import { choiceOption, floatMatrix, floatVector, hostOnly, maskVector, optionsObject } from './validate.js'
import { logProbs, logProbsBackward, shardPartials } from './vocab.js'

export interface KlDivergencePartialOptions {
  /** one shard of p's logits: [N, V_s] (or [..., V_s]) */
  pLogits: Tensor
  /** the same columns of q's logits */
  qLogits: Tensor
  /** as klDivergence's: a number, or a Float32Array of N */
  temperature?: number | Float32Array
}

/** A shard's KL partials, per row. */
export interface KlPartials {
  /** max_v s^p_v and Σ_v exp(s^p_v − max) over the shard */
  pMax: Float32Array
  pSumExp: Float32Array
  /** the same for q */
  qMax: Float32Array
  qSumExp: Float32Array
  /** C_s = KL(p^s‖q^s) of the shard's own softmaxes */
  kl: Float32Array
}

export interface MergeKlPartialsOptions {
  partials: KlPartials[]
  /** N rows; nonzero = the row counts */
  mask?: Uint8Array | Int32Array | Float32Array
  /** 'mean' over counted rows (default), 'sum' or 'none' */
  reduction?: Reduction
}

export interface MergedKl {
  /** the reduced KL; Σ perRow for 'none' */
  loss: number
  perRow: Float32Array
  count: number
  /** the full rows' lse of p and q (0 on rows not counted) */
  pLse: Float32Array
  qLse: Float32Array
  /** d loss/d perRow[n]: the reduction's scale on counted rows, 0 elsewhere */
  gradRows: Float32Array
}

export interface KlDivergencePartialBackwardOptions {
  pLogits: Tensor
  qLogits: Tensor
  /** from mergeKlPartials */
  pLse: Float32Array
  qLse: Float32Array
  /** the merged KL of each row (for the p gradient) */
  perRow: Float32Array
  /** the merge's gradRows (times an upstream gradient of the loss, if any) */
  gradRows: Float32Array
  /** 'q' (default), 'p' or 'both' */
  grad?: KlGrad
  temperature?: number | Float32Array
}

export interface KlPartialGrads {
  gradQ?: Tensor
  gradP?: Tensor
}

const hostFloats = (x: Float32Array | Tensor | undefined): Float32Array => (x === undefined ? new Float32Array(0) : x instanceof Float32Array ? x : x.toFloat32Array())

function shardPair(op: string, pLogits: unknown, qLogits: unknown, temperature: unknown) {
  const p = floatMatrix(op, 'pLogits', pLogits)
  const q = floatMatrix(op, 'qLogits', qLogits)
  if (p.shape.length !== q.shape.length || p.shape.some((d, i) => d !== q.shape[i])) {
    throw rangeError(op, 'qLogits.shape', `[${p.shape.join(', ')}] (the shape of pLogits)`, `[${q.shape.join(', ')}]`)
  }
  return { N: p.rows, Vs: p.cols, temperature: temperatureOption(op, temperature, p.rows) }
}

/** max and Σ exp(s − max) of each row from logProbs' lse and largest probability: max = lse + log p_max. */
function rowMaxSum(logits: Tensor, N: number, temperature: Temperature) {
  const r = logProbs({ logits, targets: new Int32Array(N), temperature, maxProb: true })
  const lse = hostFloats(r.lse), P = hostFloats(r.maxProb)
  const max = new Float32Array(N), sumExp = new Float32Array(N)
  for (let n = 0; n < N; n++) {
    const none = lse[n] === -Infinity
    max[n] = none ? -Infinity : lse[n] + Math.log(P[n])
    sumExp[n] = none ? 0 : 1 / P[n]
  }
  return { max, sumExp }
}

/** The KL partials of one shard. */
export function klDivergencePartial(options: KlDivergencePartialOptions): KlPartials {
  const op = 'klDivergencePartial'
  const o = optionsObject(op, options)
  const { N, temperature } = shardPair(op, o.pLogits, o.qLogits, o.temperature)
  const p = rowMaxSum(o.pLogits, N, temperature), q = rowMaxSum(o.qLogits, N, temperature)
  const kl = hostFloats(klDivergence({ pLogits: o.pLogits, qLogits: o.qLogits, temperature, reduction: 'none' }).perRow)
  return { pMax: p.max, pSumExp: p.sumExp, qMax: q.max, qSumExp: q.sumExp, kl: Float32Array.from(kl) }
}

/** lse of a row from the shards' (max, sumExp), shard by shard, and each shard's own lse L_s. */
function mergedLse(maxes: number[], sums: number[]): number {
  let M = -Infinity
  for (const m of maxes) M = Math.max(M, m)
  if (M !== M || M === -Infinity || M === Infinity) return M
  let S = 0
  maxes.forEach((m, i) => { if (m !== -Infinity) S += sums[i] * Math.exp(m - M) })
  return M + Math.log(S)
}

/** The merged KL of the shards' partials, combined in the order given (float64); see the derivation above. */
export function mergeKlPartials(options: MergeKlPartialsOptions): MergedKl {
  const op = 'mergeKlPartials'
  const o = optionsObject(op, options)
  const { parts, N } = shardPartials<KlPartials>(op, o.partials, ['kl', 'pMax', 'pSumExp', 'qMax', 'qSumExp'])
  const mask = maskVector(op, 'mask', o.mask, N)
  const reduction = choiceOption(op, 'reduction', o.reduction, REDUCTIONS, 'mean')
  const out = { perRow: new Float32Array(N), pLse: new Float32Array(N), qLse: new Float32Array(N), gradRows: new Float32Array(N) }
  let total = 0, count = 0
  for (let n = 0; n < N; n++) {
    if (mask !== null && !mask[n]) continue
    count++
    const Lp = mergedLse(parts.map((p) => p.pMax[n]), parts.map((p) => p.pSumExp[n]))
    const Lq = mergedLse(parts.map((p) => p.qMax[n]), parts.map((p) => p.qSumExp[n]))
    out.pLse[n] = Lp
    out.qLse[n] = Lq
    let kl: number
    if (Lp !== Lp || Lq !== Lq) kl = NaN
    else if (Lp === -Infinity) kl = 0
    else if (Lq === -Infinity) kl = Infinity
    else {
      kl = 0
      for (const p of parts) {
        if (p.pMax[n] === -Infinity) continue  // no p mass in this shard
        if (p.kl[n] === Infinity || p.kl[n] !== p.kl[n]) { kl = p.kl[n]; break }
        const Lps = p.pMax[n] + Math.log(p.pSumExp[n]), Lqs = p.qMax[n] + Math.log(p.qSumExp[n])
        kl += Math.exp(Lps - Lp) * (p.kl[n] + (Lps - Lp) - (Lqs - Lq))
      }
    }
    out.perRow[n] = kl
    total += kl
  }
  const scale = reduction === 'mean' ? (count > 0 ? 1 / count : 0) : 1
  for (let n = 0; n < N; n++) if (mask === null || mask[n]) out.gradRows[n] = scale
  return { ...out, loss: Math.fround(total * scale), count }
}

/** Column 0 of each row of a [N, V_s] tensor, as numbers (a device tensor is read back whole). */
function firstColumn(op: string, t: Tensor, N: number, Vs: number): Float64Array {
  const data = t.device === 'cpu' ? t.storage(op) as HostArray : t.toFloat32Array()
  const out = new Float64Array(N)
  for (let n = 0; n < N; n++) {
    const x = data[n * Vs]
    out[n] = data instanceof Uint16Array ? (t.dtype === 'bfloat16' ? bf16ToFloat(x) : f16ToFloat(x)) : x
  }
  return out
}

/**
 * A shard's gradients given the merged statistics. q: logProbsBackward of q (lse L^q, gradLogp −g) plus that of
 * p (lse L^p, gradLogp g), both at column 0, whose onehots cancel: g (q − e_0)/T + g (e_0 − p)/T. At column 0
 * that sum is g ((q_0 − 1) + (1 − p_0))/T, off by g·2^-24/T in float32 however small q_0 − p_0 is: that column
 * is recomputed on the host in float64 as g (q_0 − p_0)/T. p: on the host,
 * g p_v (log p_v − log q_v − KL)/T in float64 from the shard's values (0 where p_v = 0 or KL = +inf).
 * Rows whose p has no mass, or q none, have zero gradients; NaN rows NaN.
 */
export function klDivergencePartialBackward(options: KlDivergencePartialBackwardOptions): KlPartialGrads {
  const op = 'klDivergencePartialBackward'
  const o = optionsObject(op, options)
  const { N, Vs, temperature } = shardPair(op, o.pLogits, o.qLogits, o.temperature)
  const vec = (name: string, v: unknown) => hostOnly(op, name, floatVector(op, name, v, N).data as Float32Array | Float64Array)
  const Lp = vec('pLse', o.pLse), Lq = vec('qLse', o.qLse), g = vec('gradRows', o.gradRows)
  const which = choiceOption(op, 'grad', o.grad, KL_GRADS, 'q')
  const shape = (o.pLogits as Tensor).shape
  const special = (n: number) => (Lp[n] !== Lp[n] || Lq[n] !== Lq[n] ? NaN : Lp[n] === -Infinity || Lq[n] === -Infinity ? 0 : null)
  const out: KlPartialGrads = {}
  if (which !== 'p') {
    const half = (logits: Tensor, lse: Float32Array | Float64Array, sign: number) => logProbsBackward({
      logits, targets: new Int32Array(N), temperature, lse: Float32Array.from(lse, (l) => (l === l ? l : -Infinity)), gradLogp: Float32Array.from(g, (x) => sign * x),
    }).gradLogits.toFloat32Array()
    const gq = half(o.qLogits, Lq, -1), gp = half(o.pLogits, Lp, 1)
    const zq0 = firstColumn(op, o.qLogits, N, Vs), zp0 = firstColumn(op, o.pLogits, N, Vs)
    for (let n = 0; n < N; n++) {
      const fixed = special(n)
      for (let v = n * Vs; v < (n + 1) * Vs; v++) gq[v] = fixed !== null ? fixed : gq[v] + gp[v]
      if (fixed !== null || Vs === 0) continue
      const invT = invTemperature(temperature, n)
      gq[n * Vs] = g[n] * invT * (Math.exp(zq0[n] * invT - Lq[n]) - Math.exp(zp0[n] * invT - Lp[n]))
    }
    out.gradQ = new Tensor(gq, shape, 'float32')
  }
  if (which !== 'q') {
    const kl = vec('perRow', o.perRow)
    const zp = (o.pLogits as Tensor).toFloat32Array(), zq = (o.qLogits as Tensor).toFloat32Array()
    const gp = new Float32Array(N * Vs)
    for (let n = 0; n < N; n++) {
      const fixed = special(n)
      if (fixed !== null || g[n] === 0 || kl[n] === Infinity) { gp.fill(fixed ?? 0, n * Vs, (n + 1) * Vs); continue }
      const invT = invTemperature(temperature, n)
      for (let v = n * Vs; v < (n + 1) * Vs; v++) {
        const lp = zp[v] * invT - Lp[n]
        const p = Math.exp(lp)
        gp[v] = p !== 0 ? g[n] * invT * p * (lp - (zq[v] * invT - Lq[n]) - kl[n]) : 0
      }
    }
    out.gradP = new Tensor(gp, shape, 'float32')
  }
  return out
}
