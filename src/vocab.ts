/**
 * Vocabulary ops (DESIGN §1.1, §1.2): log-probabilities of the taken tokens (with entropy), their backward,
 * and cross-entropy. Logits are a [N, V] (or [..., V]) float Tensor; targets an Int32Array of N.
 */
import { type GradDTypeChoice, REDUCTIONS, type Reduction } from './choices.js'
import { rangeError, typeError } from './errors.js'
import { plainView } from './arrays.js'
import { defineOp } from './ops.js'
import { type Temperature, checkTargets, invTemperature, temperatureOption } from './options.js'
import { Tensor } from './tensor.js'
import {
  type FloatData, type GradDType, type OptionNames, INT32, booleanOption, hostOnly, gradDTypeOption, choiceOption, floatMatrix, floatVector,
  intVector, numberOption, optionsObject,
} from './validate.js'

export interface LogProbsOptions {
  logits: Tensor
  targets: Int32Array | Tensor
  /** logits are divided by T (> 0): one number, or a Float32Array of N (row n's T); default 1 */
  temperature?: number | Float32Array
  /** also return the entropy of each row; default false */
  entropy?: boolean
  /** also return Σ_v p_v² of each row (verl's optimal-token baseline), in the same pass; default false */
  sumProbSq?: boolean
  /** also return the largest probability of each row and its token, in the same pass; default false */
  maxProb?: boolean
  /** rows whose target equals this are skipped (logp 0, zero gradient); default −100 */
  ignoreIndex?: number
}

export interface LogProbsResult {
  logp: Float32Array
  lse: Float32Array
  entropy?: Float32Array
  /** Σ_v p_v² (sumProbSq: true); 0 on ignored rows */
  sumProbSq?: Float32Array
  /** max_v p_v (maxProb: true); 0 on ignored rows */
  maxProb?: Float32Array
  /** the first token of the largest logit (maxProb: true); −1 on ignored rows and rows holding NaN */
  maxToken?: Int32Array
}

export interface LogProbsBackwardOptions {
  logits: Tensor
  targets: Int32Array | Tensor
  /** lse from logProbs (of logits / T) */
  lse: Float32Array | Float64Array | Tensor
  gradLogp?: Float32Array | Float64Array | Tensor
  gradEntropy?: Float32Array | Float64Array | Tensor
  /** entropy from logProbs; recomputed when absent and gradEntropy is given */
  entropy?: Float32Array | Float64Array | Tensor
  /** d/d(Σ p²) of each row */
  gradSumProbSq?: Float32Array | Float64Array | Tensor
  /** Σ p² from logProbs; recomputed when absent and gradSumProbSq is given */
  sumProbSq?: Float32Array | Float64Array | Tensor
  /** as logProbs': a number, or a Float32Array of N */
  temperature?: number | Float32Array
  ignoreIndex?: number
}

export interface GradLogitsResult {
  /** float32, shaped like the logits */
  gradLogits: Tensor
}

export interface CrossEntropyOptions {
  logits: Tensor
  targets: Int32Array | Tensor
  ignoreIndex?: number
  /** the loss of logits / T (> 0): one number, or a Float32Array of N (row n's T); the gradient is wrt the logits; default 1 */
  temperature?: number | Float32Array
  /** 'mean' (default: over non-ignored rows, or Σ classWeights[y] as PyTorch), 'sum', or 'none' */
  reduction?: Reduction
  /** ε in [0, 1]: (1 − ε) CE + ε mean_v(−log p_v); default 0 */
  labelSmoothing?: number
  /** s ≥ 0: + s · lse² per row (PaLM z-loss); default 0 */
  zLoss?: number
  /** V weights, as PyTorch's `weight` */
  classWeights?: Float32Array | Float64Array | Tensor
  /** N weights that scale each row's loss (the mean's denominator is unchanged) */
  tokenWeights?: Float32Array | Float64Array | Tensor
  /** also return dloss/dlogits; default false */
  grad?: boolean
  /** 'float32' (default) or 'input': the gradient in the logits' dtype when it is bfloat16/float16 */
  gradDtype?: GradDTypeChoice
}

export interface CrossEntropyResult {
  /** the reduced loss; for reduction 'none', Σ losses */
  loss: number
  /** per-row losses (reduction 'none') */
  losses?: Float32Array
  lse: Float32Array
  /** non-ignored rows */
  count: number
  gradLogits?: Tensor
}

export interface VocabRows {
  logits: FloatData
  shape: readonly number[]
  N: number
  V: number
  targets: Int32Array
  ignoreIndex: number
}

/** Logits, targets and ignoreIndex, with every target in [0, V) or equal to ignoreIndex (the row named). */
export function vocabRows(op: string, logits: unknown, targets: unknown, ignoreIndexOption: unknown): VocabRows {
  const m = floatMatrix(op, 'logits', logits)
  const ignoreIndex = numberOption(op, 'ignoreIndex', ignoreIndexOption, -100, INT32)
  const t = intVector(op, 'targets', targets, m.rows)
  checkTargets(op, 'targets', t, m.cols, ignoreIndex)
  return { logits: m, shape: m.shape, N: m.rows, V: m.cols, targets: t, ignoreIndex }
}

export interface LogProbsArgs extends VocabRows {
  temperature: Temperature
  entropy: boolean
  sumProbSq: boolean
  maxProb: boolean
}

export interface LogProbsBackwardArgs extends VocabRows {
  temperature: Temperature
  lse: FloatData
  gradLogp: FloatData | null
  gradEntropy: FloatData | null
  entropy: FloatData | null
  gradSumProbSq: FloatData | null
  sumProbSq: FloatData | null
}

export interface CrossEntropyArgs extends VocabRows {
  temperature: Temperature
  reduction: Reduction
  labelSmoothing: number
  zLoss: number
  classWeights: FloatData | null
  tokenWeights: FloatData | null
  grad: boolean
  gradDtype: GradDType
}

const LOG_PROBS_OPTIONS: OptionNames<LogProbsOptions> = {
  logits: true, targets: true, temperature: true, entropy: true, sumProbSq: true, maxProb: true, ignoreIndex: true,
}
const LOG_PROBS_BACKWARD_OPTIONS: OptionNames<LogProbsBackwardOptions> = {
  logits: true, targets: true, lse: true, gradLogp: true, gradEntropy: true, entropy: true, gradSumProbSq: true, sumProbSq: true,
  temperature: true, ignoreIndex: true,
}
const CROSS_ENTROPY_OPTIONS: OptionNames<CrossEntropyOptions> = {
  logits: true, targets: true, ignoreIndex: true, reduction: true, labelSmoothing: true, zLoss: true, classWeights: true,
  tokenWeights: true, grad: true, gradDtype: true, temperature: true,
}

function validateLogProbs(options: LogProbsOptions): LogProbsArgs {
  const op = 'logProbs'
  const o = optionsObject(op, options, LOG_PROBS_OPTIONS)
  const rows = vocabRows(op, o.logits, o.targets, o.ignoreIndex)
  // Object.assign onto the fresh rows, not `{ ...rows, b }`: V8 builds properties after a spread through a slow
  // path (a new map per call; bench/NOTES.md "Version 5"). The same in the validators below.
  return Object.assign(rows, {
    temperature: temperatureOption(op, o.temperature, rows.N),
    entropy: booleanOption(op, 'entropy', o.entropy, false),
    sumProbSq: booleanOption(op, 'sumProbSq', o.sumProbSq, false),
    maxProb: booleanOption(op, 'maxProb', o.maxProb, false),
  })
}

function validateLogProbsBackward(options: LogProbsBackwardOptions): LogProbsBackwardArgs {
  const op = 'logProbsBackward'
  const o = optionsObject(op, options, LOG_PROBS_BACKWARD_OPTIONS)
  const rows = vocabRows(op, o.logits, o.targets, o.ignoreIndex)
  const vec = (name: string, v: unknown) => (v === undefined ? null : floatVector(op, name, v, rows.N))
  const gradLogp = vec('gradLogp', o.gradLogp)
  const gradEntropy = vec('gradEntropy', o.gradEntropy)
  const gradSumProbSq = vec('gradSumProbSq', o.gradSumProbSq)
  if (gradLogp === null && gradEntropy === null && gradSumProbSq === null) throw typeError(op, 'gradLogp', 'given (or gradEntropy, or gradSumProbSq)', undefined)
  return Object.assign(rows, {
    temperature: temperatureOption(op, o.temperature, rows.N),
    lse: floatVector(op, 'lse', o.lse, rows.N),
    gradLogp, gradEntropy,
    entropy: vec('entropy', o.entropy),
    gradSumProbSq, sumProbSq: vec('sumProbSq', o.sumProbSq),
  })
}

function validateCrossEntropy(options: CrossEntropyOptions): CrossEntropyArgs {
  const op = 'crossEntropy'
  const o = optionsObject(op, options, CROSS_ENTROPY_OPTIONS)
  const rows = vocabRows(op, o.logits, o.targets, o.ignoreIndex)
  return Object.assign(rows, {
    temperature: temperatureOption(op, o.temperature, rows.N),
    reduction: choiceOption(op, 'reduction', o.reduction, REDUCTIONS, 'mean'),
    labelSmoothing: numberOption(op, 'labelSmoothing', o.labelSmoothing, 0, { min: 0, max: 1 }),
    zLoss: numberOption(op, 'zLoss', o.zLoss, 0, { min: 0 }),
    classWeights: o.classWeights === undefined ? null : floatVector(op, 'classWeights', o.classWeights, rows.V),
    tokenWeights: o.tokenWeights === undefined ? null : floatVector(op, 'tokenWeights', o.tokenWeights, rows.N),
    grad: booleanOption(op, 'grad', o.grad, false),
    gradDtype: gradDTypeOption(op, o.gradDtype, rows.logits.dtype),
  })
}

export const [logProbs, logProbsAsync] = defineOp('logProbs', validateLogProbs, LOG_PROBS_OPTIONS)
export const [logProbsBackward, logProbsBackwardAsync] = defineOp('logProbsBackward', validateLogProbsBackward, LOG_PROBS_BACKWARD_OPTIONS)
export const [crossEntropy, crossEntropyAsync] = defineOp('crossEntropy', validateCrossEntropy, CROSS_ENTROPY_OPTIONS)

export interface KeptLogProbsOptions {
  logits: Tensor
  targets: Int32Array | Tensor
  /** as logProbs': a number, or a Float32Array of N */
  temperature?: number | Float32Array
  ignoreIndex?: number
  /** the kept set as CSR: N + 1 offsets into keepTokens (host data) */
  keepOffsets?: Int32Array
  /** each row's kept tokens, strictly increasing, in [0, V) (host data) */
  keepTokens?: Int32Array
  /** top-k, 0 = off: one number, or an Int32Array of N (vLLM's `top_k`, with −1 as 0) */
  topK?: number | Int32Array
  /** top-p in (0, 1], 1 = off: one number, or a Float32Array of N */
  topP?: number | Float32Array
  /** min-p in [0, 1], 0 = off: one number, or a Float32Array of N */
  minP?: number | Float32Array
  /** also return d(Σ g·logp)/dlogits for this g of N */
  gradLogp?: Float32Array | Float64Array | Tensor
}

export interface KeptLogProbsResult {
  /** z_y/T − lse over the kept set; −inf where y is not kept; 0 on ignored rows */
  logp: Float32Array
  /** log Σ_{v∈K} exp(z_v/T); 0 on ignored rows */
  lse: Float32Array
  /** float32, shaped like the logits, zero outside each row's kept set (gradLogp given) */
  gradLogits?: Tensor
}

export interface KeptLogProbsArgs extends VocabRows {
  temperature: Temperature
  keepOffsets: Int32Array | null
  keepTokens: Int32Array | null
  /** the sampling parameters per row (null with keepOffsets) */
  topK: Int32Array | null
  topP: Float32Array | null
  minP: Float32Array | null
  gradLogp: FloatData | null
}

const KEPT_LOG_PROBS_OPTIONS: OptionNames<KeptLogProbsOptions> = {
  logits: true, targets: true, temperature: true, ignoreIndex: true, keepOffsets: true, keepTokens: true, topK: true, topP: true, minP: true,
  gradLogp: true,
}

/** A per-row sampling parameter: a number or an array of N (copied, each value checked), as an array of N. */
function perRow<A extends Int32Array | Float32Array>(
  op: string, name: string, value: unknown, N: number, make: (n: number) => A, rule: { min: number; max: number; above?: number; integer?: boolean },
): A {
  const out = make(N)
  if (typeof value === 'number') {
    out.fill(numberOption(op, name, value, 0, rule))
  } else {
    const want = out instanceof Int32Array ? 'Int32Array' : 'Float32Array'
    const view = plainView(value, want)
    if (view === undefined) throw typeError(op, name, `a number, or a ${want} of one value per row`, value)
    if (view.length !== N) throw rangeError(op, `${name}.length`, String(N), view.length)
    out.set(view)
  }
  for (let n = 0; n < N; n++) {
    const x = out[n]
    const ok = x >= rule.min && x <= rule.max && (rule.above === undefined || x > rule.above)
    if (!ok) throw rangeError(op, `${name}[${n}]`, `in ${rule.above !== undefined ? '(' : '['}${rule.above ?? rule.min}, ${rule.max}]`, x)
  }
  return out
}

function validateKeptLogProbs(options: KeptLogProbsOptions): KeptLogProbsArgs {
  const op = 'keptLogProbs'
  const o = optionsObject(op, options, KEPT_LOG_PROBS_OPTIONS)
  const rows = vocabRows(op, o.logits, o.targets, o.ignoreIndex)
  const { N, V } = rows
  const csr = o.keepOffsets !== undefined || o.keepTokens !== undefined
  const sampling = o.topK !== undefined || o.topP !== undefined || o.minP !== undefined
  if (csr && sampling) throw typeError(op, 'keepOffsets', 'absent when topK, topP or minP is given (one way to give the kept set)', 'given')
  if (!csr && !sampling) throw typeError(op, 'keepOffsets', 'given (with keepTokens), or topK, topP or minP', undefined)
  let keepOffsets: Int32Array | null = null, keepTokens: Int32Array | null = null
  if (csr) {
    if (o.keepOffsets === undefined) throw typeError(op, 'keepOffsets', 'given with keepTokens', undefined)
    if (o.keepTokens === undefined) throw typeError(op, 'keepTokens', 'given with keepOffsets', undefined)
    // copied, then checked: a later write to the caller's arrays cannot move an index out of range
    keepOffsets = Int32Array.from(hostOnly(op, 'keepOffsets', intVector(op, 'keepOffsets', o.keepOffsets, N + 1)))
    keepTokens = Int32Array.from(hostOnly(op, 'keepTokens', intVector(op, 'keepTokens', o.keepTokens)))
    if (keepOffsets[0] !== 0) throw rangeError(op, 'keepOffsets[0]', '0', keepOffsets[0])
    if (keepOffsets[N] !== keepTokens.length) throw rangeError(op, `keepOffsets[${N}]`, `keepTokens.length (${keepTokens.length})`, keepOffsets[N])
    for (let n = 0; n < N; n++) {
      if (keepOffsets[n + 1] < keepOffsets[n]) throw rangeError(op, `keepOffsets[${n + 1}]`, `≥ keepOffsets[${n}] (${keepOffsets[n]})`, keepOffsets[n + 1])
      for (let i = keepOffsets[n]; i < keepOffsets[n + 1]; i++) {
        const t = keepTokens[i]
        if (!(t >= 0 && t < V)) throw rangeError(op, `keepTokens[${i}]`, `in [0, ${V})`, t)
        if (i > keepOffsets[n] && t <= keepTokens[i - 1]) throw rangeError(op, `keepTokens[${i}]`, `> keepTokens[${i - 1}] (${keepTokens[i - 1]}): each row's tokens strictly increasing`, t)
      }
    }
  }
  return Object.assign(rows, {
    temperature: temperatureOption(op, o.temperature, N),
    keepOffsets, keepTokens,
    topK: sampling ? perRow(op, 'topK', o.topK ?? 0, N, (n) => new Int32Array(n), { min: 0, max: 2 ** 31 - 1, integer: true }) : null,
    topP: sampling ? perRow(op, 'topP', o.topP ?? 1, N, (n) => new Float32Array(n), { min: 0, max: 1, above: 0 }) : null,
    minP: sampling ? perRow(op, 'minP', o.minP ?? 0, N, (n) => new Float32Array(n), { min: 0, max: 1 }) : null,
    gradLogp: o.gradLogp === undefined ? null : floatVector(op, 'gradLogp', o.gradLogp, N),
  })
}

export const [keptLogProbs, keptLogProbsAsync] = defineOp('keptLogProbs', validateKeptLogProbs, KEPT_LOG_PROBS_OPTIONS)

// ---- vocab-sharded logits (tensor-parallel models; Megatron's tensor_parallel/cross_entropy.py) ----------
// Each rank holds a shard [N, V_s] of the logits, columns [vocabStart, vocabStart + V_s). logProbsPartial gives
// per-row partials of its shard; any all-gather (or all-reduce of the fields) brings every shard's partials
// together; mergeVocabPartials combines them, shard by shard in the order given (each row alone, so a row's
// result does not depend on the batch it is in); logProbsPartialBackward gives a shard's gradient from the
// merged statistics. The partials are computed by logProbs (entropy and Σ p² on), so every backend runs them.

export interface LogProbsPartialOptions {
  /** one shard of the logits: [N, V_s] (or [..., V_s]) */
  logits: Tensor
  /** global token ids (in [0, V)) or ignoreIndex; host data */
  targets: Int32Array
  /** the shard's first column in the full vocabulary */
  vocabStart: number
  temperature?: number | Float32Array
  ignoreIndex?: number
}

/** A shard's per-row partials (s = z/T over the shard's columns; p^s the shard's own softmax). */
export interface VocabPartials {
  /** max_v s_v */
  max: Float32Array
  /** Σ_v exp(s_v − max) */
  sumExp: Float32Array
  /** s_y where the target lies in this shard, else 0 (so a sum over shards gives s_y) */
  targetLogit: Float32Array
  /** Σ_v p^s_v s_v */
  sumPZ: Float32Array
  /** Σ_v (p^s_v)² */
  sumP2: Float32Array
}

export interface MergedVocabStats {
  /** s_y − lse (0 on ignored rows) */
  logp: Float32Array
  lse: Float32Array
  entropy: Float32Array
  sumProbSq: Float32Array
  /** mean −logp over the non-ignored rows: the vocab-parallel cross-entropy (Megatron's loss, averaged) */
  loss: number
  count: number
}

/** Local targets of a shard: y − start inside it, 0 (a placeholder) outside, −1 on ignored rows. */
function shardTargets(op: string, targets: unknown, N: number, vocabStart: number, Vs: number, ignoreIndex: number) {
  const y = hostOnly(op, 'targets', intVector(op, 'targets', targets, N))
  const local = new Int32Array(N), inside = new Uint8Array(N)
  for (let n = 0; n < N; n++) {
    const t = y[n]
    if (t === ignoreIndex) { local[n] = -1; continue }
    if (!(t >= 0)) throw rangeError(op, `targets[${n}]`, `≥ 0 or equal to ignoreIndex (${ignoreIndex})`, t)
    inside[n] = t >= vocabStart && t < vocabStart + Vs ? 1 : 0
    local[n] = inside[n] ? t - vocabStart : 0
  }
  return { local, inside }
}

function shardOf(op: string, logits: unknown, vocabStart: unknown, ignoreIndex: unknown) {
  const m = floatMatrix(op, 'logits', logits)
  return { N: m.rows, Vs: m.cols, start: numberOption(op, 'vocabStart', vocabStart, 0, { integer: true, min: 0 }), ignore: numberOption(op, 'ignoreIndex', ignoreIndex, -100, INT32) }
}

const hostFloats = (x: Float32Array | Tensor | undefined): Float32Array => (x === undefined ? new Float32Array(0) : x instanceof Float32Array ? x : x.toFloat32Array())

/** The shards' partials: an array of one or more, each with these per-row fields as Float32Arrays of one length N. */
export function shardPartials<P>(op: string, partials: unknown, fields: readonly (keyof P & string)[]): { parts: P[]; N: number } {
  if (!Array.isArray(partials) || partials.length < 1) throw typeError(op, 'partials', 'an array of one or more shards\' partials', partials)
  const N = partials[0]?.[fields[0]]?.length ?? 0
  for (const [i, p] of partials.entries()) {
    for (const k of fields) {
      if (!(p?.[k] instanceof Float32Array) || p[k].length !== N) throw typeError(op, `partials[${i}].${k}`, `a Float32Array of ${N}`, p?.[k])
    }
  }
  return { parts: partials as P[], N }
}

/** The partials of one shard. */
export function logProbsPartial(options: LogProbsPartialOptions): VocabPartials {
  const op = 'logProbsPartial'
  const o = optionsObject(op, options)
  const { N, Vs, start, ignore } = shardOf(op, o.logits, o.vocabStart, o.ignoreIndex)
  const { local, inside } = shardTargets(op, o.targets, N, start, Vs, ignore)
  // the shard's max from its largest probability: max = lse + log max p, Σ exp(s − max) = 1 / max p
  const r = logProbs({ logits: o.logits, targets: local, temperature: o.temperature, ignoreIndex: -1, entropy: true, sumProbSq: true, maxProb: true })
  const lse = hostFloats(r.lse), logp = hostFloats(r.logp), H = hostFloats(r.entropy), Q = hostFloats(r.sumProbSq), P = hostFloats(r.maxProb)
  const out: VocabPartials = { max: new Float32Array(N), sumExp: new Float32Array(N), targetLogit: new Float32Array(N), sumPZ: new Float32Array(N), sumP2: new Float32Array(N) }
  for (let n = 0; n < N; n++) {
    if (local[n] < 0) continue
    const none = lse[n] === -Infinity  // a shard row without mass: it adds nothing
    out.max[n] = none ? -Infinity : lse[n] + Math.log(P[n])
    out.sumExp[n] = none ? 0 : 1 / P[n]
    out.targetLogit[n] = inside[n] ? logp[n] + lse[n] : 0
    out.sumPZ[n] = none ? 0 : lse[n] - H[n]
    out.sumP2[n] = Q[n]
  }
  return out
}

/**
 * The merged statistics of the shards' partials, combined in the order given (float64):
 *   M = max_s max_s, S = Σ_s sumExp_s·exp(max_s − M), lse = M + log S, w_s = sumExp_s·exp(max_s − M)/S
 *   logp = Σ_s targetLogit_s − lse, Σ p·s = Σ_s w_s·sumPZ_s, H = lse − Σ p·s, Σ p² = Σ_s w_s²·sumP2_s
 */
export function mergeVocabPartials(options: { partials: VocabPartials[]; targets: Int32Array; ignoreIndex?: number }): MergedVocabStats {
  const op = 'mergeVocabPartials'
  const o = optionsObject(op, options)
  const { N } = shardPartials<VocabPartials>(op, o.partials, ['max', 'sumExp', 'targetLogit', 'sumPZ', 'sumP2'])
  const ignore = numberOption(op, 'ignoreIndex', o.ignoreIndex, -100, INT32)
  const y = hostOnly(op, 'targets', intVector(op, 'targets', o.targets, N))
  const out = { logp: new Float32Array(N), lse: new Float32Array(N), entropy: new Float32Array(N), sumProbSq: new Float32Array(N) }
  let total = 0, count = 0
  for (let n = 0; n < N; n++) {
    if (y[n] === ignore) continue
    let M = -Infinity
    for (const p of o.partials) M = Math.max(M, p.max[n])
    let S = 0, target = 0
    for (const p of o.partials) {
      if (p.max[n] !== -Infinity) S += p.sumExp[n] * Math.exp(p.max[n] - M)
      target += p.targetLogit[n]
    }
    const lse = M === -Infinity ? -Infinity : M + Math.log(S)
    let pz = 0, q = 0
    for (const p of o.partials) {
      if (p.max[n] === -Infinity) continue
      const w = (p.sumExp[n] * Math.exp(p.max[n] - M)) / S
      pz += w * p.sumPZ[n]
      q += w * w * p.sumP2[n]
    }
    out.lse[n] = lse
    out.logp[n] = lse === -Infinity ? -Infinity : target - lse
    out.entropy[n] = lse === -Infinity ? 0 : lse - pz
    out.sumProbSq[n] = q
    total -= lse === -Infinity ? -Infinity : target - lse
    count++
  }
  return { ...out, loss: count > 0 ? Math.fround(total / count) : 0, count }
}

export interface LogProbsPartialBackwardOptions {
  logits: Tensor
  targets: Int32Array
  vocabStart: number
  /** the merged lse (mergeVocabPartials) */
  lse: Float32Array
  gradLogp?: Float32Array
  gradEntropy?: Float32Array
  /** the merged entropy, with gradEntropy */
  entropy?: Float32Array
  gradSumProbSq?: Float32Array
  /** the merged Σ p², with gradSumProbSq */
  sumProbSq?: Float32Array
  temperature?: number | Float32Array
  ignoreIndex?: number
}

/**
 * A shard's gradient given the merged statistics: d/dz_v = [g (onehot_y − p_v) − g_H p_v (log p_v + H) +
 * 2 g_Q p_v (p_v − Q)] / T with p = exp(s − lse) of the full row, onehot only in the shard holding y.
 */
export function logProbsPartialBackward(options: LogProbsPartialBackwardOptions): GradLogitsResult {
  const op = 'logProbsPartialBackward'
  const o = optionsObject(op, options)
  const { N, Vs, start, ignore } = shardOf(op, o.logits, o.vocabStart, o.ignoreIndex)
  const { local, inside } = shardTargets(op, o.targets, N, start, Vs, ignore)
  if (o.gradEntropy !== undefined && o.entropy === undefined) throw typeError(op, 'entropy', 'given with gradEntropy (the merged entropy)', undefined)
  if (o.gradSumProbSq !== undefined && o.sumProbSq === undefined) throw typeError(op, 'sumProbSq', 'given with gradSumProbSq (the merged Σ p²)', undefined)
  const r = logProbsBackward({
    logits: o.logits, targets: local, ignoreIndex: -1, temperature: o.temperature, lse: o.lse, gradLogp: o.gradLogp,
    gradEntropy: o.gradEntropy, entropy: o.entropy, gradSumProbSq: o.gradSumProbSq, sumProbSq: o.sumProbSq,
  })
  if (o.gradLogp === undefined) return r
  // rows whose target is in another shard took the placeholder target 0: remove its onehot term, g/T
  const g = r.gradLogits.toFloat32Array()
  for (let n = 0; n < N; n++) {
    if (local[n] < 0 || inside[n]) continue
    const invT = typeof o.temperature === 'object' ? 1 / o.temperature[n] : 1 / (o.temperature ?? 1)
    if (o.lse[n] !== -Infinity && o.gradLogp[n] !== 0) g[n * Vs] = Math.fround(g[n * Vs] - o.gradLogp[n] * invT)
  }
  return { gradLogits: new Tensor(g, r.gradLogits.shape, 'float32') }
}

// ---- vocab-sharded cross-entropy (Megatron's VocabParallelCrossEntropy, with label smoothing) --------------
// For a row at temperature T (one for every row, or row n's own) with s = z/T, lse = log Σ_v exp(s_v) over the
// full vocabulary, target y, class weights w (1 without classWeights; W = Σ_v w_v), smoothing ε, z-loss c,
// token weight τ, and V columns:
//   ℓ = τ [ (1 − ε) w_y (lse − s_y) + ε/V Σ_v w_v (lse − s_v) + c lse² ]
// The shard's partials (all of s, so the merge needs no T): max, sumExp (as logProbsPartial's), s_y where y is
// in the shard, and the smoothing piece relative to the shard's own lse_s = max + log sumExp:
// smooth_s = Σ_{v∈shard} w_v (lse_s − s_v), with the shard's weight sum W_s. Since lse − s_v = (lse_s − s_v) +
// (lse − lse_s), the merge recovers
//   Σ_v w_v (lse − s_v) = Σ_s [ smooth_s + W_s (lse − lse_s) ]
// with no large cancelling sums (a plain Σ w_v s_v would cancel against W·lse). The gradient of a shard's
// columns wrt the logits z, given the merged lse and each row's g = τ_n times the reduction's scale (the merge's
// gradRows; 1/Σ w_y for 'mean'), is g/T [ A p_v − (1 − ε) w_y onehot_y − ε/V w_v ] with A = (1 − ε) w_y + ε W/V
// + 2 c lse, p = exp(s − lse).

export interface CrossEntropyPartialOptions {
  /** one shard of the logits: [N, V_s] (or [..., V_s]) */
  logits: Tensor
  /** global token ids (in [0, vocabSize)) or ignoreIndex; host data */
  targets: Int32Array
  /** the shard's first column in the full vocabulary */
  vocabStart: number
  /** V, the full vocabulary */
  vocabSize: number
  /** all V class weights (host data): the shard reads its own columns */
  classWeights?: Float32Array | Float64Array
  /** ε: the smoothing piece is computed when ε > 0; default 0 */
  labelSmoothing?: number
  /** the loss of logits / T (> 0), as crossEntropy's: one number, or a Float32Array of N; default 1 */
  temperature?: number | Float32Array
  ignoreIndex?: number
}

/** A shard's cross-entropy partials (of s = z/T): per row, and two constants of the shard. */
export interface CrossEntropyPartials {
  /** max_v s_v over the shard */
  max: Float32Array
  /** Σ_v exp(s_v − max) */
  sumExp: Float32Array
  /** s_y where the target lies in this shard, else 0 */
  targetLogit: Float32Array
  /** Σ_v w_v (lse_s − s_v), lse_s = max + log sumExp (labelSmoothing > 0; else 0) */
  smooth: Float32Array
  /** Σ_v w_v over the shard's columns (its width without classWeights) */
  weightSum: number
  /** the shard's width V_s */
  width: number
}

export interface MergeCrossEntropyOptions {
  partials: CrossEntropyPartials[]
  targets: Int32Array
  /** all V class weights, as given to the partials */
  classWeights?: Float32Array | Float64Array
  labelSmoothing?: number
  zLoss?: number
  tokenWeights?: Float32Array | Float64Array
  /** 'mean' (default; over Σ w_y of the counted rows, as crossEntropy), 'sum' or 'none' */
  reduction?: Reduction
  ignoreIndex?: number
}

export interface MergedCrossEntropy {
  /** the reduced loss; Σ losses for 'none' */
  loss: number
  /** each row's loss ℓ_n (0 on ignored rows) */
  losses: Float32Array
  lse: Float32Array
  count: number
  /** d loss/d(row n's loss before its token weight): τ_n times the reduction's scale; 0 on ignored rows */
  gradRows: Float32Array
}

export interface CrossEntropyPartialBackwardOptions {
  logits: Tensor
  targets: Int32Array
  vocabStart: number
  vocabSize: number
  /** the merged lse */
  lse: Float32Array
  /** the merge's gradRows (times an upstream gradient of the loss, if any) */
  gradRows: Float32Array
  classWeights?: Float32Array | Float64Array
  labelSmoothing?: number
  zLoss?: number
  /** the partials' temperature */
  temperature?: number | Float32Array
  ignoreIndex?: number
}

/** The full-vocabulary class weights (V of them), or null. */
function allClassWeights(op: string, value: unknown, V: number): Float64Array | null {
  if (value === undefined) return null
  const w = floatVector(op, 'classWeights', value, V)
  return Float64Array.from(hostOnly(op, 'classWeights', w.data as Float32Array | Float64Array))
}

function shardInVocab(op: string, o: { logits: unknown; vocabStart: unknown; ignoreIndex?: unknown; vocabSize: unknown; targets: unknown; classWeights?: unknown; labelSmoothing?: unknown }) {
  const s = shardOf(op, o.logits, o.vocabStart, o.ignoreIndex)
  const V = numberOption(op, 'vocabSize', o.vocabSize, 0, { integer: true, min: 1 })
  if (s.start + s.Vs > V) throw rangeError(op, 'vocabStart', `≤ vocabSize − the shard's width (${V - s.Vs})`, s.start)
  // copied, then checked (an Int32Array or an int32 Tensor): the caller's array is not read again
  const y = Int32Array.from(hostOnly(op, 'targets', intVector(op, 'targets', o.targets, s.N)))
  for (let n = 0; n < s.N; n++) if (y[n] !== s.ignore && y[n] >= V) throw rangeError(op, `targets[${n}]`, `< vocabSize (${V}) or equal to ignoreIndex (${s.ignore})`, y[n])
  return Object.assign(s, { V, y, cw: allClassWeights(op, o.classWeights, V), eps: numberOption(op, 'labelSmoothing', o.labelSmoothing, 0, { min: 0, max: 1 }) })
}

/** The cross-entropy partials of one shard (computed by logProbs, and crossEntropy for the smoothing piece). */
export function crossEntropyPartial(options: CrossEntropyPartialOptions): CrossEntropyPartials {
  const op = 'crossEntropyPartial'
  const o = optionsObject(op, options)
  const { N, Vs, start, ignore, y, cw, eps } = shardInVocab(op, o)
  const { local, inside } = shardTargets(op, y, N, start, Vs, ignore)
  // copied and checked once here; logProbs and crossEntropy below read this copy
  const temperature = temperatureOption(op, o.temperature, N)
  const r = logProbs({ logits: o.logits, targets: local, ignoreIndex: -1, temperature, maxProb: true })
  const lse = hostFloats(r.lse), logp = hostFloats(r.logp), P = hostFloats(r.maxProb)
  const shardWeights = cw === null ? null : Float32Array.from(cw.subarray(start, start + Vs))
  let weightSum = Vs
  if (cw !== null) { weightSum = 0; for (let v = start; v < start + Vs; v++) weightSum += cw[v] }
  // ε = 1, reduction 'none': row loss = (1/V_s) Σ_v w_v (lse_s − s_v) + 0·w_t (lse_s − s_t) for the target t
  // given, so t is the shard's largest logit (finite where the row has mass), not the local target: 0·(+inf)
  // would make a row NaN whose target logit is −inf
  // (maxToken: an Int32Array from the host backends, a device tensor of token ids from cuda)
  const top: ArrayLike<number> | null = eps > 0 ? ((r.maxToken as unknown) instanceof Tensor ? (r.maxToken as unknown as Tensor).toFloat32Array() : r.maxToken!) : null
  const smoothTargets = top !== null ? Int32Array.from(local, (t, n) => (t < 0 ? -1 : Math.max(0, top[n]))) : null
  const smoothRows = smoothTargets !== null
    ? hostFloats(crossEntropy({ logits: o.logits, targets: smoothTargets, ignoreIndex: -1, temperature, labelSmoothing: 1, reduction: 'none', ...(shardWeights ? { classWeights: shardWeights } : {}) }).losses)
    : null
  const out: CrossEntropyPartials = {
    max: new Float32Array(N), sumExp: new Float32Array(N), targetLogit: new Float32Array(N), smooth: new Float32Array(N), weightSum, width: Vs,
  }
  for (let n = 0; n < N; n++) {
    if (local[n] < 0) continue
    const none = lse[n] === -Infinity
    out.max[n] = none ? -Infinity : lse[n] + Math.log(P[n])
    out.sumExp[n] = none ? 0 : 1 / P[n]
    out.targetLogit[n] = inside[n] ? logp[n] + lse[n] : 0
    if (smoothRows !== null) out.smooth[n] = Vs * smoothRows[n]
  }
  return out
}

/** The merged cross-entropy of the shards' partials, shard by shard in the order given, each row alone (float64). */
export function mergeCrossEntropyPartials(options: MergeCrossEntropyOptions): MergedCrossEntropy {
  const op = 'mergeCrossEntropyPartials'
  const o = optionsObject(op, options)
  const { parts, N } = shardPartials<CrossEntropyPartials>(op, o.partials, ['max', 'sumExp', 'targetLogit', 'smooth'])
  for (const [i, p] of parts.entries()) {
    for (const k of ['weightSum', 'width'] as const) if (typeof p[k] !== 'number' || !(p[k] >= 0)) throw typeError(op, `partials[${i}].${k}`, 'a number ≥ 0', p[k])
  }
  let V = 0
  for (const p of parts) V += p.width
  const ignore = numberOption(op, 'ignoreIndex', o.ignoreIndex, -100, INT32)
  const y = hostOnly(op, 'targets', intVector(op, 'targets', o.targets, N))
  const cw = allClassWeights(op, o.classWeights, V)
  const eps = numberOption(op, 'labelSmoothing', o.labelSmoothing, 0, { min: 0, max: 1 })
  const zLoss = numberOption(op, 'zLoss', o.zLoss, 0, { min: 0 })
  const tw = o.tokenWeights === undefined ? null : hostOnly(op, 'tokenWeights', floatVector(op, 'tokenWeights', o.tokenWeights, N).data as Float32Array | Float64Array)
  const reduction = choiceOption(op, 'reduction', o.reduction, REDUCTIONS, 'mean')
  const out = { losses: new Float32Array(N), lse: new Float32Array(N), gradRows: new Float32Array(N) }
  let total = 0, denom = 0, count = 0
  for (let n = 0; n < N; n++) {
    if (y[n] === ignore) continue
    if (!(y[n] >= 0 && y[n] < V)) throw rangeError(op, `targets[${n}]`, `in [0, ${V}) or equal to ignoreIndex (${ignore})`, y[n])
    let M = -Infinity
    for (const p of parts) M = Math.max(M, p.max[n])
    let S = 0, zy = 0
    for (const p of parts) {
      if (p.max[n] !== -Infinity) S += p.sumExp[n] * Math.exp(p.max[n] - M)
      zy += p.targetLogit[n]
    }
    const lse = M === -Infinity ? -Infinity : M + Math.log(S)
    const wy = cw === null ? 1 : cw[y[n]]
    count++
    denom += wy
    out.lse[n] = lse
    let loss = Infinity
    if (lse !== -Infinity) {
      loss = (1 - eps) * wy * (lse - zy)
      if (eps !== 0) {
        let smooth = 0
        for (const p of parts) smooth += p.smooth[n] + (p.max[n] === -Infinity ? 0 : p.weightSum * (lse - (p.max[n] + Math.log(p.sumExp[n]))))
        loss += (eps / V) * smooth
      }
      if (zLoss !== 0) loss += zLoss * lse * lse
      loss *= tw === null ? 1 : tw[n]
    }
    out.losses[n] = loss
    total += loss
  }
  const scale = reduction === 'mean' ? (denom > 0 ? 1 / denom : 0) : 1
  for (let n = 0; n < N; n++) if (y[n] !== ignore) out.gradRows[n] = scale * (tw === null ? 1 : tw[n])
  return { ...out, loss: Math.fround(total * scale), count }
}

/**
 * A shard's gradient of the merged cross-entropy: logProbsBackward (at T) with gradLogp = −g·A gives
 * g·A (p − onehot)/T at the shard's local target (column 0 standing in where y lies in another shard); the
 * onehot is then set right (+g·A/T − g(1 − ε) w_y/T at y, +g·A/T at the stand-in) and −g ε/V w_v/T added over
 * the columns.
 */
export function crossEntropyPartialBackward(options: CrossEntropyPartialBackwardOptions): GradLogitsResult {
  const op = 'crossEntropyPartialBackward'
  const o = optionsObject(op, options)
  const { N, Vs, start, ignore, V, y, cw, eps } = shardInVocab(op, o)
  const { local, inside } = shardTargets(op, y, N, start, Vs, ignore)
  const zLoss = numberOption(op, 'zLoss', o.zLoss, 0, { min: 0 })
  const temperature = temperatureOption(op, o.temperature, N)
  const lse = hostOnly(op, 'lse', floatVector(op, 'lse', o.lse, N).data as Float32Array | Float64Array)
  const g = hostOnly(op, 'gradRows', floatVector(op, 'gradRows', o.gradRows, N).data as Float32Array | Float64Array)
  let W = V
  if (cw !== null) { W = 0; for (let v = 0; v < V; v++) W += cw[v] }
  const A = new Float32Array(N), gradLogp = new Float32Array(N)
  for (let n = 0; n < N; n++) {
    if (local[n] < 0 || lse[n] === -Infinity) continue
    const wy = cw === null ? 1 : cw[y[n]]
    A[n] = (1 - eps) * wy + (eps * W) / V + 2 * zLoss * lse[n]
    gradLogp[n] = -g[n] * A[n]
  }
  const r = logProbsBackward({ logits: o.logits, targets: local, ignoreIndex: -1, temperature, lse: o.lse, gradLogp })
  const grad = r.gradLogits.toFloat32Array()
  for (let n = 0; n < N; n++) {
    if (local[n] < 0 || lse[n] === -Infinity || g[n] === 0) continue
    const wy = cw === null ? 1 : cw[y[n]]
    const gT = g[n] * invTemperature(temperature, n)
    const at = n * Vs + local[n]
    grad[at] = Math.fround(grad[at] + gT * A[n] - (inside[n] ? gT * (1 - eps) * wy : 0))
    if (eps === 0) continue
    for (let v = 0; v < Vs; v++) grad[n * Vs + v] = Math.fround(grad[n * Vs + v] - ((gT * eps) / V) * (cw === null ? 1 : cw[start + v]))
  }
  return { gradLogits: new Tensor(grad, r.gradLogits.shape, 'float32') }
}
