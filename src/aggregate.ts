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
import { AGGREGATIONS, type AggregationMode } from './choices.js'
import type { Tensor } from './tensor.js'
import { type OptionNames, booleanOption, choiceOption, optionalNumber } from './validate.js'

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
  /**
   * The seq-mean modes divide by every sequence, fully masked ones too (TRL's `.mean()` over the batch),
   * not by the non-empty ones; globalSeqCount, when given, wins. Default false.
   */
  countEmptySequences?: boolean
}

/** The aggregation options' names, spread into the option names of every per-token op. */
export const AGGREGATION_OPTIONS: OptionNames<AggregationOptions> = {
  aggregation: true, seqLengths: true, globalTokenCount: true, globalSeqCount: true, normConst: true, countEmptySequences: true,
}

export interface Aggregation {
  mode: AggregationMode
  globalTokenCount: number | null
  globalSeqCount: number | null
  normConst: number | null
}

/** `sequences`: how many the batch holds, empty ones included (what countEmptySequences counts). */
export function aggregationOptions(op: string, o: AggregationOptions, sequences?: number): Aggregation {
  const countEmpty = booleanOption(op, 'countEmptySequences', o.countEmptySequences, false)
  return {
    mode: choiceOption(op, 'aggregation', o.aggregation, AGGREGATIONS, 'token-mean'),
    globalTokenCount: optionalNumber(op, 'globalTokenCount', o.globalTokenCount, { min: 0 }),
    globalSeqCount: optionalNumber(op, 'globalSeqCount', o.globalSeqCount, { min: 0 }) ?? (countEmpty && sequences !== undefined ? sequences : null),
    normConst: optionalNumber(op, 'normConst', o.normConst, { above: 0 }),
  }
}
