/**
 * Caller-provided outputs (`out`): every array an op returns can be written into a typed array the caller
 * passes, so a training loop or a service reuses its memory instead of a fresh, zero-filled array per call.
 *
 * One mechanism for every op. Each op declares its array outputs once, in `OUTPUTS` below (an `OutputSpec`:
 * for the validated arguments, each output's element count and dtype, or undefined when this call does not
 * return it). `readOut` checks the caller's `out` against that declaration: known names,
 * the class (Float32Array; Uint16Array for a 16-bit gradient), the length, and no memory shared with an input
 * or another output (an op never writes into its inputs). The checked arrays travel to the backend as
 * `args.out`: the native addon writes into them (native/addon/args.h `Outputs::make`); a backend that made its
 * own arrays (js, cuda) has its results copied in by `placeOut`, which also puts the caller's arrays in the
 * result, so `result.gradLogp === out.gradLogp` and a matrix result's `data` is the caller's array.
 *
 * An async call writes its outputs when it settles: the addon writes into its own block and copies it into
 * the caller's array on the JS thread, so an array detached, transferred or shrunk while the call runs is
 * never written; the promise then rejects with ERR_OUTPUT_CHANGED.
 */
import { arrayName, plainView } from './arrays.js'
import { RlhfKernelsError, rangeError, typeError } from './errors.js'
import type { ArgsOf, OpName } from './kernels.js'
import { Tensor } from './tensor.js'
import { unknownOption } from './validate.js'

/** The dtype of an output array: float32, or a logits gradient's 16-bit dtype (gradDtype 'input'). */
export type OutDType = 'float32' | 'bfloat16' | 'float16'

/** One declared output: its element count (float32), or count and dtype; undefined when the call does not return it. */
export type OutputDecl = number | { length: number; dtype: OutDType } | undefined

/**
 * An op's array outputs for given validated arguments, by result field. An op whose result is one array
 * (whiten, groupAdvantages) declares it as `out`, and its callers pass the array itself as `out`.
 */
export type OutputSpec<A> = (args: A) => Record<string, OutputDecl>

/** A logits gradient of `length` elements in the call's gradient dtype. */
const gradOut = (length: number, dtype: OutDType): OutputDecl => (dtype === 'float32' ? length : { length, dtype })

/**
 * Every op's array results, declared once: the `out` names it accepts and what each must be. A new op in
 * OpTypes (kernels.ts) does not compile until it has its line here; the names are the result's fields, and
 * the binding's `out.make(name, n)` uses the same ones.
 */
export const OUTPUTS: { readonly [N in OpName]: OutputSpec<ArgsOf<N>> } = {
  // maxToken (an Int32Array, formed from the kernel's float32 indices) is always allocated
  logProbs: (a) => ({ logp: a.N, lse: a.N, entropy: a.entropy ? a.N : undefined, sumProbSq: a.sumProbSq ? a.N : undefined, maxProb: a.maxProb ? a.N : undefined }),
  logProbsBackward: (a) => ({ gradLogits: a.N * a.V }),
  crossEntropy: (a) => ({ losses: a.reduction === 'none' ? a.N : undefined, lse: a.N, gradLogits: a.grad ? gradOut(a.N * a.V, a.gradDtype) : undefined }),
  rewardLoss: (a) => ({ probs: a.scores.data.length, gradScores: a.scores.data.length, losses: a.reduction === 'none' ? a.N : undefined }),
  policyLoss: (a) => ({ perToken: a.layout.tokens, gradLogp: a.layout.tokens }),
  klDivergence: (a) => ({ perRow: a.N, gradQ: a.gradQ ? gradOut(a.N * a.V, a.gradDtype) : undefined, gradP: a.gradP ? gradOut(a.N * a.V, a.gradDtype) : undefined }),
  klPenalty: (a) => ({ perToken: a.layout.tokens, gradLogp: a.layout.tokens }),
  valueLoss: (a) => ({ perToken: a.layout.tokens, gradValues: a.layout.tokens }),
  gae: (a) => ({ advantages: a.layout.tokens, returns: a.layout.tokens }),
  whiten: (a) => ({ out: a.values.data.length }),
  groupAdvantages: (a) => ({ out: a.scores.data.length }),
  keptLogProbs: (a) => ({ logp: a.N, lse: a.N, gradLogits: a.gradLogp !== null ? a.N * a.V : undefined }),
  sequenceLogProbs: (a) => ({ seqLogp: a.layout.offsets.length - 1, lengths: a.layout.offsets.length - 1, gradLogp: a.gradSeq !== null ? a.layout.tokens : undefined }),
  preferenceLoss: (a) => ({
    rewards: a.logp.data.length, gradLogp: a.logp.data.length, gradRefLogp: a.refGrad ? a.logp.data.length : undefined,
    losses: a.reduction === 'none' ? a.offsets.length - 1 : undefined,
  }),
  ppoLoss: (a) => ({ logp: a.layout.tokens, gradLogits: gradOut(a.layout.tokens * a.V, a.gradDtype), gradValues: a.values !== null && a.returns !== null ? a.layout.tokens : undefined }),
}

/** A checked output: the caller's array, the plain view the backend writes, its length. */
interface GivenOut {
  given: Float32Array | Uint16Array
  view: Float32Array | Uint16Array
  length: number
}

/** The checked `out` of one call, by output name; what backends receive as `args.out` is `views`. */
export interface CheckedOut {
  readonly outputs: Record<string, GivenOut>
  readonly views: Record<string, Float32Array | Uint16Array>
  /** true when the op's result is one array (then `out` was that array) */
  readonly single: boolean
}

const OUT_TYPES = "output arrays by result name (e.g. { gradLogits: Float32Array })"

/** A value of validated arguments whose entries hold arrays an output is checked against: a plain object or an array. */
const holdsInputs = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !(value instanceof Tensor) && (Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype)

/**
 * The name of the first host typed array in validated arguments (plain objects and arrays one level deep and
 * below, in key order) that shares memory with `o`: the keys on its path joined by dots, a float input's `data`
 * left out (`logp`, `layout.offsets`); undefined when none does (readOut asks only after a hit).
 */
function sharedInput(value: unknown, o: ArrayBufferView): string | undefined {
  if (ArrayBuffer.isView(value)) return overlaps(o, value) ? '' : undefined
  if (!holdsInputs(value)) return undefined
  for (const k in value) {
    if (!Object.hasOwn(value, k)) continue
    const hit = sharedInput(value[k], o)
    if (hit === undefined) continue
    const key = k === 'data' ? '' : k
    return key === '' ? hit : hit === '' ? key : `${key}.${hit}`
  }
  return undefined
}

/** The host typed arrays of validated arguments, in sharedInput's order (what an output is checked against). */
function inputViews(value: unknown, into: ArrayBufferView[]): ArrayBufferView[] {
  if (ArrayBuffer.isView(value)) into.push(value)
  else if (holdsInputs(value)) for (const k in value) if (Object.hasOwn(value, k)) inputViews(value[k], into)
  return into
}

/** True when two views share at least one byte. */
function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  if (a.buffer !== b.buffer || a.byteLength === 0 || b.byteLength === 0) return false
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength
}

/**
 * The caller's `out` checked against the op's declared outputs for these arguments, or null when none was
 * given. TypeError: not an object, an unknown name, an output this call does not return, a wrong class;
 * RangeError: a wrong length, memory shared with an input or another output.
 */
export function readOut(op: string, value: unknown, declared: Record<string, OutputDecl>, args: object): CheckedOut | null {
  if (value === undefined || value === null) return null
  const single = Object.hasOwn(declared, 'out') && Object.keys(declared).length === 1
  let entries: [string, unknown][]
  if (single) {
    entries = [['out', value]]
  } else {
    if (typeof value !== 'object' || ArrayBuffer.isView(value) || Array.isArray(value) || value instanceof Tensor) throw typeError(op, 'out', OUT_TYPES, value)
    const snapshot: Record<string, unknown> = {}
    for (const key in value) if (key !== '__proto__') snapshot[key] = (value as Record<string, unknown>)[key]
    entries = Object.entries(snapshot)
  }
  const outputs: Record<string, GivenOut> = {}
  const views: Record<string, Float32Array | Uint16Array> = {}
  const label = (name: string) => (single ? 'out' : `out.${name}`)
  for (const [name, given] of entries) {
    if (given === undefined || given === null) continue
    if (!Object.hasOwn(declared, name)) {
      const error = unknownOption(op, name, Object.keys(declared))
      throw new TypeError(error.message.replace('unknown option', 'out has no output').replace('the options are', 'the outputs are'))
    }
    const decl = declared[name]
    if (decl === undefined) throw typeError(op, label(name), `absent: this call returns no ${name}`, given)
    const length = typeof decl === 'number' ? decl : decl.length
    const cls = typeof decl === 'number' || decl.dtype === 'float32' ? 'Float32Array' : 'Uint16Array'
    const what = cls === 'Float32Array' ? 'a Float32Array' : `a Uint16Array (the ${(decl as { dtype: string }).dtype} bit patterns of gradDtype 'input')`
    if (arrayName(given) !== cls) throw typeError(op, label(name), what, given)
    const view = plainView(given, cls)!
    if (view.length !== length) throw rangeError(op, `${label(name)}.length`, String(length), view.length)
    outputs[name] = { given: given as Float32Array | Uint16Array, view, length }
    views[name] = view
  }
  const names = Object.keys(outputs)
  // the arguments' arrays gathered once for all outputs; an input's name is only made for a hit
  const inputs = names.length > 0 ? inputViews(args, []) : []
  for (let i = 0; i < names.length; i++) {
    const o = outputs[names[i]].view
    if (inputs.some((v) => overlaps(o, v))) {
      throw rangeError(op, label(names[i]), 'memory apart from every input', `an array sharing memory with ${sharedInput(args, o)}`)
    }
    for (let j = 0; j < i; j++) {
      if (overlaps(o, outputs[names[j]].view)) throw rangeError(op, label(names[i]), 'memory apart from every other output', `an array sharing memory with ${label(names[j])}`)
    }
  }
  return names.length === 0 ? null : { outputs, views, single }
}

/** The error of an output array that changed (detached, transferred, shrunk) before the call could write it. */
export function outputChanged(op: string, name: string): RlhfKernelsError {
  return new RlhfKernelsError('ERR_OUTPUT_CHANGED', `${op}: ${name} was detached or resized while the call ran; the result was not written into it`)
}

/**
 * The result with the caller's arrays in it: each given output that the backend did not write in place is
 * copied in (the caller's array must still have its length), and each result array (or a matrix result's
 * data) is replaced by the caller's array.
 */
export function placeOut<R>(op: string, result: R, out: CheckedOut | null): R {
  if (out === null) return result
  const swap = (name: string, made: unknown): unknown => {
    const o = out.outputs[name]
    const data = made instanceof Tensor ? made.data : made
    if (!ArrayBuffer.isView(data)) throw new RlhfKernelsError('ERR_NATIVE', `${op}: the backend returned no ${name} for out.${name}`)
    const inPlace = data.buffer === o.view.buffer && data.byteOffset === o.view.byteOffset
    if (!inPlace) {
      const now = plainView(o.given, arrayName(o.given)!)
      if (now === undefined || now.length !== o.length) throw outputChanged(op, out.single ? 'out' : `out.${name}`)
      now.set(data as unknown as ArrayLike<number>)
    }
    return made instanceof Tensor ? new Tensor(o.given, made.shape, made.dtype) : o.given
  }
  if (out.single) return swap('out', result) as R
  const copy = { ...(result as Record<string, unknown>) }
  for (const name of Object.keys(out.outputs)) copy[name] = swap(name, copy[name])
  return copy as R
}

/** What the `out` option of an op with result R accepts: its array fields (the array itself for an array result). */
export type OutOf<R> = R extends Float32Array
  ? Float32Array
  : { [K in keyof R as NonNullable<R[K]> extends Float32Array | Tensor ? K : never]?: NonNullable<R[K]> extends Tensor ? Float32Array | Uint16Array : Float32Array }
