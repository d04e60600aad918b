/**
 * Aggregation of per-token values into one loss (DESIGN §1.9), shared by policyLoss, klPenalty, valueLoss
 * and ppoLoss. Token data is either a [B, T] Tensor (B sequences of width T) or a flat vector, optionally
 * split into packed sequences by `seqLengths`.
 *
 *   token-mean               Σ x / N_tok
 *   seq-mean-token-mean      (1/S) Σ_s (Σ_t x / n_s)
 *   seq-mean-token-sum       (1/S) Σ_s Σ_t x
 *   seq-mean-token-sum-norm  (1/S) Σ_s Σ_t x / C        (Dr.GRPO; C defaults to the width T)
 *
 * N_tok and S count unmasked tokens and sequences with at least one unmasked token; `globalTokenCount` and
 * `globalSeqCount` replace them so that gradient accumulation and data-parallel shards give the full-batch
 * gradient. Denominators are clamped to ≥ 1. Masked values are selected out, never multiplied by 0.
 */
import { arrayName, plainView } from './arrays.js'
import { rangeError, typeError } from './errors.js'
import { type Tensor, isTensor } from './tensor.js'
import { type OptionNames, choiceOption, hostOnly, intVector, optionalNumber } from './validate.js'

export const AGGREGATIONS = ['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum', 'seq-mean-token-sum-norm'] as const
export type AggregationMode = (typeof AGGREGATIONS)[number]

export interface AggregationOptions {
  /** default 'token-mean' */
  aggregation?: AggregationMode
  /** Packed sequences in a flat token vector: their lengths, summing to the token count. */
  seqLengths?: Int32Array | Tensor
  /** Unmasked tokens in the whole (global) batch, for token-mean across shards / micro-batches. */
  globalTokenCount?: number
  /** Non-empty sequences in the whole (global) batch, for the seq-mean modes. */
  globalSeqCount?: number
  /** The constant C of seq-mean-token-sum-norm (default: the width T, i.e. the longest sequence). */
  normConst?: number
}

/** The aggregation options' names, spread into the option names of every per-token op. */
export const AGGREGATION_OPTIONS: OptionNames<AggregationOptions> = {
  aggregation: true, seqLengths: true, globalTokenCount: true, globalSeqCount: true, normConst: true,
}

export interface Aggregation {
  mode: AggregationMode
  globalTokenCount: number | null
  globalSeqCount: number | null
  normConst: number | null
}

/** How a flat token vector splits into sequences: offsets[s]..offsets[s+1] are sequence s. */
export interface TokenLayout {
  tokens: number
  offsets: Int32Array
  /** T of a [B, T] tensor, else the longest sequence */
  width: number
}

/** The shape of a token input: a Tensor's own, a typed array's [length]. */
export function tokenShape(op: string, name: string, value: unknown): readonly number[] {
  if (isTensor(value)) return value.shape
  const array = arrayName(value)
  if (array !== undefined) return [plainView(value, array)!.length]
  throw typeError(op, name, 'a typed array or a Tensor', value)
}

/** Layout of token data shaped [N] or [B, T], split by seqLengths when given. */
export function tokenLayout(op: string, name: string, shape: readonly number[], seqLengths: unknown): TokenLayout {
  const tokens = shape.reduce((a, b) => a * b, 1)
  // offsets are int32: more tokens than that cannot be laid out
  if (tokens > 0x7fffffff) throw rangeError(op, `${name}.length`, 'at most 2^31 - 1 tokens', tokens)
  if (seqLengths !== undefined) {
    const lengths = hostOnly(op, 'seqLengths', intVector(op, 'seqLengths', seqLengths))
    const offsets = new Int32Array(lengths.length + 1)
    let width = 0
    let sum = 0  // a double: an int32 running sum could wrap back to the token count
    for (let s = 0; s < lengths.length; s++) {
      if (lengths[s] < 0) throw rangeError(op, `seqLengths[${s}]`, '≥ 0', lengths[s])
      sum += lengths[s]
      if (sum > tokens) throw rangeError(op, 'the sum of seqLengths', `the ${name} length ${tokens}`, `more from seqLengths[${s}] on`)
      offsets[s + 1] = sum
      width = Math.max(width, lengths[s])
    }
    if (sum !== tokens) throw rangeError(op, 'the sum of seqLengths', `the ${name} length ${tokens}`, sum)
    return { tokens, offsets, width }
  }
  if (shape.length === 2) {
    const [B, T] = shape
    const offsets = new Int32Array(B + 1)
    for (let s = 0; s <= B; s++) offsets[s] = s * T
    return { tokens, offsets, width: T }
  }
  if (shape.length > 2) throw rangeError(op, `${name}.shape`, 'rank 1 [N] or rank 2 [B, T]', `[${shape.join(', ')}]`)
  return { tokens, offsets: Int32Array.of(0, tokens), width: tokens }
}

export function aggregationOptions(op: string, o: AggregationOptions): Aggregation {
  return {
    mode: choiceOption(op, 'aggregation', o.aggregation, AGGREGATIONS, 'token-mean'),
    globalTokenCount: optionalNumber(op, 'globalTokenCount', o.globalTokenCount, { min: 0 }),
    globalSeqCount: optionalNumber(op, 'globalSeqCount', o.globalSeqCount, { min: 0 }),
    normConst: optionalNumber(op, 'normConst', o.normConst, { above: 0 }),
  }
}
