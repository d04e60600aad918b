/**
 * How every public op is put together: validate the options once, pick the backend's kernels, run.
 * Arguments that hold device tensors run on `cuda`, and their array results stay on the GPU as device
 * tensors; others run on the current host backend.
 * The async twin validates synchronously (a bad argument rejects the promise) and runs the work off the
 * caller's turn: on cpu in the libuv pool (a call whose input arrays hold at most 16 KiB runs its kernel on
 * this thread before it returns, and its promise is settled: the pool's round trip costs more), on cuda on the env's stream (the JS thread only enqueues), on `js`
 * in a later macrotask of this thread. Every backend reads the inputs' values at the call: the addon copies
 * them (cpu) or uploads them (cuda) before it returns, and `js` runs on copies made here, so a change, a
 * detach, a transfer or a resize of an input after the call returns does not reach the result.
 */
import { kernels } from './backend.js'
import { encodeFloats } from './dtypes.js'
import type { ArgsOf, Kernels, OpName, ResultOf } from './kernels.js'
import { type WithForeign, wrapForeign } from './interop.js'
import { type CheckedOut, OUTPUTS, type OutOf, type OutputSpec, placeOut, readOut } from './outputs.js'
import { applyPreset } from './presets.js'
import { type DeviceTensor, Tensor } from './tensor.js'
import { type GradDType, type OptionNames, onDevice, optionsAndOut } from './validate.js'

/** A result with its arrays on the GPU: what an op returns for device-tensor inputs. */
export type OnDevice<R> = R extends Float32Array | Tensor
  ? DeviceTensor
  : { [K in keyof R]: R[K] extends Float32Array | Tensor ? DeviceTensor : R[K] extends Float32Array | Tensor | undefined ? DeviceTensor | undefined : R[K] }

/** True when some option of X is typed as a DeviceTensor (options typed `any` do not count). */
type IsDevice<T> = 0 extends 1 & T ? false : [T] extends [DeviceTensor] ? true : false
type HasDeviceInput<X> = true extends { [K in keyof X]-?: IsDevice<X[K]> }[keyof X] ? true : false

/** X with every key that O lacks typed `never`: a misspelled option does not compile (X alone would allow it). */
export type Exact<O, X> = X & { [K in Exclude<keyof X, keyof O>]: never }

/** An op: its options may hold foreign tensors (onnxruntime, transformers.js) wherever they hold a Tensor. */
export type Op<O, R> = <X extends WithForeign<O> & WithOut<R>>(options: Exact<WithForeign<O> & WithOut<R>, X>) => HasDeviceInput<X> extends true ? OnDevice<R> : R
export type AsyncOp<O, R> = <X extends WithForeign<O> & WithOut<R>>(options: Exact<WithForeign<O> & WithOut<R>, X>) => Promise<HasDeviceInput<X> extends true ? OnDevice<R> : R>

/** Every op's `out` option: caller-provided arrays for its array results (src/outputs.ts). */
export interface WithOut<R> {
  /** arrays the results are written into (host backends): each of the result's length and dtype, sharing no memory with an input */
  out?: OutOf<R>
}

/** gradDtype 'input' on the js backend: the float32 logits gradients rounded (to nearest even) to 16 bits. */
function roundGradients<R>(result: R, dtype: 'bfloat16' | 'float16'): R {
  const out = { ...result } as Record<string, unknown>
  for (const [key, value] of Object.entries(out)) {
    if (key.startsWith('grad') && value instanceof Tensor && value.dtype === 'float32' && value.rank >= 2) {
      out[key] = new Tensor(encodeFloats(value.data as Float32Array, dtype), value.shape, dtype)
    }
  }
  return out as R
}

/** Validated arguments with every typed array copied (the `js` backend's async form reads these later); `out` stays. */
function copyArrays<T>(value: T): T {
  if (ArrayBuffer.isView(value)) return (value as unknown as Float32Array).slice() as T
  if (value === null || typeof value !== 'object' || Object.getPrototypeOf(value) !== Object.prototype) return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = k === 'out' ? v : copyArrays(v)
  return out as T
}

/** The bytes of validated arguments' arrays (typed arrays and float inputs `{ data }`, one level down). */
function inputBytes(args: object): number {
  let n = 0
  for (const key in args) {
    const v = (args as Record<string, unknown>)[key]
    const data = v !== null && typeof v === 'object' && !ArrayBuffer.isView(v) ? (v as { data?: unknown }).data : v
    if (ArrayBuffer.isView(data)) n += data.byteLength
  }
  return n
}

const defined = new Map<string, { validate: (options: never) => object; runOn: (k: Kernels, options: never) => unknown; names?: readonly string[] }>()

/** @internal an op's option names (the parity command reads the options a file holds by them) */
export function optionNamesOf(name: string): readonly string[] | undefined {
  return defined.get(name)?.names
}

/** @internal an op's validation, for the GPU benchmark (it times the kernels on validated arguments) */
export function validatorOf(name: string): ((options: object) => object) | undefined {
  return defined.get(name)?.validate as ((options: object) => object) | undefined
}

/** @internal op `name` on the given kernels instead of the current backend's (parity's float64 reference) */
export function runOn(name: OpName, k: Kernels, options: object): unknown {
  return (defined.get(name)!.runOn as (k: Kernels, options: object) => unknown)(k, options)
}

/** The public sync and async forms of the backends' op `name`, with its validation. */
export function defineOp<N extends OpName, O>(name: N, validate: (options: O) => ArgsOf<N>, names?: OptionNames<O>): [Op<O, ResultOf<N>>, AsyncOp<O, ResultOf<N>>] {
  type A = ArgsOf<N>
  type R = ResultOf<N>
  const outOf = (args: A) => (args as { out?: CheckedOut }).out ?? null
  const cast = (k: Kernels, args: A, result: R): R => {
    const dtype = (args as { gradDtype?: GradDType }).gradDtype
    const typed = dtype === undefined || dtype === 'float32' || k.nativeGradDtype ? result : roundGradients(result, dtype)
    return placeOut(name, typed, outOf(args))
  }
  // a backend that writes `out` gets the checked arrays (args.out, a CheckedOut: it passes on their views),
  // others no `out`; the result gets the caller's arrays (cast)
  const forKernel = (k: Kernels, args: A): A => {
    if (k.writesOut || outOf(args) === null) return args
    const { out: _, ...rest } = args as A & { out: unknown }
    return rest as unknown as A
  }
  const run = (k: Kernels, args: A): R => cast(k, args, (k[name] as unknown as (a: A) => R)(forKernel(k, args)))
  const runAsync = (k: Kernels, args: A): Promise<R> | undefined =>
    (k[`${name}Async` as keyof Kernels] as unknown as ((a: A) => Promise<R>) | undefined)?.(forKernel(k, args))?.then((r) => cast(k, args, r))
  // the caller's options are read once, into a snapshot; its preset is applied and foreign tensors are wrapped
  // in it; `out` is checked against the op's declared outputs once the other options are
  // (the validated arguments, and whether they hold device tensors: onDevice, asked once)
  const prepare = (options: O): [A, boolean] => {
    const { options: rest, out } = optionsAndOut(name, options)
    const args = validate(wrapForeign(name, applyPreset(name, rest) as O))
    const device = onDevice(args as object)
    if (out === undefined || out === null) return [args, device]
    if (device) throw new TypeError(`${name}: out is for host results; a call on cuda tensors returns cuda tensors`)
    const checked = readOut(name, out, (OUTPUTS[name] as OutputSpec<A>)(args), args)
    // added to the validated arguments (made for this call): a copy of them (a spread, Object.assign) costs ~1 µs
    if (checked !== null) (args as { out?: CheckedOut }).out = checked
    return [args, device]
  }
  defined.set(name, { validate, runOn: (k: Kernels, options: O) => run(k, prepare(options)[0]), names: names && Object.keys(names) })
  const sync = (options: O): R => {
    const [args, device] = prepare(options)
    return run(kernels(device), args)
  }
  const async = (options: O): Promise<R> => {
    let args: A
    let k: Kernels
    let native: Promise<R> | undefined
    try {
      let device: boolean
      ;[args, device] = prepare(options)
      k = kernels(device)
      if (k.inlineBytes !== undefined && inputBytes(args as object) <= k.inlineBytes) return Promise.resolve(run(k, args))
      native = runAsync(k, args)
    } catch (error) {
      return Promise.reject(error)
    }
    if (native !== undefined) return native
    args = copyArrays(args)
    return new Promise<R>((resolve, reject) => {
      setImmediate(() => {
        try {
          resolve(run(k, args))
        } catch (error) {
          reject(error)
        }
      })
    })
  }
  return [sync as Op<O, R>, async as AsyncOp<O, R>]
}
