/**
 * Vocabulary ops (DESIGN §1.1, §1.2): log-probabilities of the taken tokens (with entropy), their backward,
 * and cross-entropy. Logits are a [N, V] (or [..., V]) float Tensor; targets an Int32Array of N.
 */
import { type GradDTypeChoice, REDUCTIONS, type Reduction } from './choices.js'
import { rangeError, typeError } from './errors.js'
import { plainView } from './arrays.js'
import { defineOp } from './ops.js'
import { type Temperature, checkTargets, temperatureOption } from './options.js'
import type { Tensor } from './tensor.js'
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
  tokenWeights: true, grad: true, gradDtype: true,
}

function validateLogProbs(options: LogProbsOptions): LogProbsArgs {
  const op = 'logProbs'
  const o = optionsObject(op, options, LOG_PROBS_OPTIONS)
  const rows = vocabRows(op, o.logits, o.targets, o.ignoreIndex)
  return {
    ...rows,
    temperature: temperatureOption(op, o.temperature, rows.N),
    entropy: booleanOption(op, 'entropy', o.entropy, false),
    sumProbSq: booleanOption(op, 'sumProbSq', o.sumProbSq, false),
    maxProb: booleanOption(op, 'maxProb', o.maxProb, false),
  }
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
  return {
    ...rows,
    temperature: temperatureOption(op, o.temperature, rows.N),
    lse: floatVector(op, 'lse', o.lse, rows.N),
    gradLogp, gradEntropy,
    entropy: vec('entropy', o.entropy),
    gradSumProbSq, sumProbSq: vec('sumProbSq', o.sumProbSq),
  }
}

function validateCrossEntropy(options: CrossEntropyOptions): CrossEntropyArgs {
  const op = 'crossEntropy'
  const o = optionsObject(op, options, CROSS_ENTROPY_OPTIONS)
  const rows = vocabRows(op, o.logits, o.targets, o.ignoreIndex)
  return {
    ...rows,
    reduction: choiceOption(op, 'reduction', o.reduction, REDUCTIONS, 'mean'),
    labelSmoothing: numberOption(op, 'labelSmoothing', o.labelSmoothing, 0, { min: 0, max: 1 }),
    zLoss: numberOption(op, 'zLoss', o.zLoss, 0, { min: 0 }),
    classWeights: o.classWeights === undefined ? null : floatVector(op, 'classWeights', o.classWeights, rows.V),
    tokenWeights: o.tokenWeights === undefined ? null : floatVector(op, 'tokenWeights', o.tokenWeights, rows.N),
    grad: booleanOption(op, 'grad', o.grad, false),
    gradDtype: gradDTypeOption(op, o.gradDtype, rows.logits.dtype),
  }
}

export const [logProbs, logProbsAsync] = defineOp('logProbs', validateLogProbs)
export const [logProbsBackward, logProbsBackwardAsync] = defineOp('logProbsBackward', validateLogProbsBackward)
export const [crossEntropy, crossEntropyAsync] = defineOp('crossEntropy', validateCrossEntropy)

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
  return {
    ...rows,
    temperature: temperatureOption(op, o.temperature, N),
    keepOffsets, keepTokens,
    topK: sampling ? perRow(op, 'topK', o.topK ?? 0, N, (n) => new Int32Array(n), { min: 0, max: 2 ** 31 - 1, integer: true }) : null,
    topP: sampling ? perRow(op, 'topP', o.topP ?? 1, N, (n) => new Float32Array(n), { min: 0, max: 1, above: 0 }) : null,
    minP: sampling ? perRow(op, 'minP', o.minP ?? 0, N, (n) => new Float32Array(n), { min: 0, max: 1 }) : null,
    gradLogp: o.gradLogp === undefined ? null : floatVector(op, 'gradLogp', o.gradLogp, N),
  }
}

export const [keptLogProbs, keptLogProbsAsync] = defineOp('keptLogProbs', validateKeptLogProbs)
