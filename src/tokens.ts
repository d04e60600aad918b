/**
 * The token layer of the per-token ops (policyLoss, klPenalty, valueLoss, ppoLoss, gae): token inputs are
 * [B, T] Tensors or flat vectors, optionally split into packed sequences by `seqLengths`; a TokenBatch is
 * their layout, mask and aggregation, validated once.
 */
import { type Aggregation, type AggregationOptions, aggregationOptions } from './aggregate.js'
import { arrayName, madeArray, plainView } from './arrays.js'
import { rangeError, typeError } from './errors.js'
import { type Tensor, isTensor } from './tensor.js'
import { hostOnly, intVector, maskVector } from './validate.js'

export type TokenFloats = Float32Array | Float64Array | Tensor
export type TokenMask = Uint8Array | Float32Array | Float64Array | Tensor

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
    const offsets = madeArray(Int32Array, lengths.length + 1)
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
    const offsets = madeArray(Int32Array, B + 1)
    for (let s = 0; s <= B; s++) offsets[s] = s * T
    return { tokens, offsets, width: T }
  }
  if (shape.length > 2) throw rangeError(op, `${name}.shape`, 'rank 1 [N] or rank 2 [B, T]', `[${shape.join(', ')}]`)
  const offsets = madeArray(Int32Array, 2)
  offsets[1] = tokens
  return { tokens, offsets, width: tokens }
}

export interface TokenBatch {
  layout: TokenLayout
  mask: Uint8Array | null
  agg: Aggregation
}

/** The layout, mask and aggregation of a per-token op whose leading input has this shape. */
export function tokenBatch(op: string, name: string, shape: readonly number[], o: AggregationOptions & { mask?: unknown }): TokenBatch {
  const layout = tokenLayout(op, name, shape, o.seqLengths)
  return { layout, mask: maskVector(op, 'mask', o.mask, layout.tokens), agg: aggregationOptions(op, o, layout.offsets.length - 1) }
}
